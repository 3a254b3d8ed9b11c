"""Several runs on one device: aggregate training samples/s of N runs packed on it by
``ltrun sweep --max-parallel N --devices DEVICE``.

For each N, one sweep of N cells (BCL's cifar10-lt recipe, seeds 0..N-1, ``--epochs`` epochs,
each cell an ``ltrun`` subprocess on the same device, its own MLflow store in a scratch folder)
is timed from start to end. Printed per N: the sweep's wall-clock, the aggregate samples/s
(every cell's training samples over the wall-clock, start-up included), the sum of the cells'
own training samples/s (their ``train/samples_per_s`` after the first epoch: the rate while
they share the device) and that sum against N = 1's.

    python benchmarks/sharing.py --device cuda:0 --counts 1,2,4,8 --data-dir DIR
    python benchmarks/sharing.py --tiny --device cpu      # digits-lt, ResNet-8, N = 1, 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(count: int, args, scratch: Path) -> dict:
    folder = scratch / f"n{count}"
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    recipe = (["--dataset", "digits-lt", "--set", "model.backbone=resnet8", "--batch-size", "64"]
              if args.tiny else
              ["--preset", "cifar10-lt", "--dataset", "imagefolder-lt", "--data-dir",
               args.data_dir])
    command = [sys.executable, "-m", "ltcore", "sweep", "--plugins", "bcl",
               "--seeds", f"0-{count - 1}" if count > 1 else "0", "--max-parallel", str(count),
               "--devices", args.device, "--tracking-uri", uri, "--epochs", str(args.epochs),
               "--output", str(folder / "runs"), *recipe]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sweep of {count} failed ({done.returncode}):\n{done.stdout[-3000:]}"
                 f"\n{done.stderr[-3000:]}")
    return {"count": count, "wall_s": wall, **cell_rates(uri)}


def cell_rates(uri: str) -> dict:
    """Training samples and the mean samples/s after the first epoch of every stage run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ltcore")
    samples, rates = 0.0, []
    for run in client.search_runs([experiment.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            continue
        history = client.get_metric_history(run.info.run_id, "train/samples_per_s")
        times = client.get_metric_history(run.info.run_id, "train/epoch_time")
        by_step = {m.step: m.value for m in times}
        samples += sum(m.value * by_step[m.step] for m in history)
        later = [m.value for m in history if m.step > 0] or [m.value for m in history]
        rates.append(sum(later) / len(later))
    return {"samples": samples, "cells": len(rates), "sum_of_cell_rates": sum(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--counts", default="1,2,4,8", help="runs packed at once, e.g. 1,2,4,8")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                                  / "data" / "cifar10-jpeg"))
    parser.add_argument("--tiny", action="store_true", help="digits-lt, ResNet-8, N = 1, 2")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    counts = [1, 2] if args.tiny else [int(c) for c in args.counts.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="ltcore-sharing-"))
    print(f"# {len(counts)} sweeps on {args.device}: {args.epochs} epochs per cell", flush=True)
    rows = []
    try:
        for count in counts:
            rows.append(sweep(count, args, scratch))
            print(f"  N={count}: {rows[-1]['wall_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("|  N | wall s | aggregate samples/s | sum of cell samples/s | x N=1 |")
    print("|---:|-------:|--------------------:|----------------------:|------:|")
    for row in rows:
        row["aggregate_samples_per_s"] = row["samples"] / row["wall_s"]
        row["x_one"] = row["sum_of_cell_rates"] / rows[0]["sum_of_cell_rates"]
        print(f"| {row['count']:2d} | {row['wall_s']:6.1f} "
              f"| {row['aggregate_samples_per_s']:19.0f} "
              f"| {row['sum_of_cell_rates']:21.0f} | {row['x_one']:5.2f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": args.device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
