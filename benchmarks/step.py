"""Training throughput of a composed method: samples per second of whole training steps.

Builds a run exactly as ``ltrun`` would (plugins, views, stacked forward, losses, optimiser),
on a CIFAR-10-LT-shaped dataset of random uint8 images held in memory (12,406 images with the
IF-100 class counts), and times full epochs after one warm-up epoch. No tracking store is used,
so it runs where MLflow is not installed.

    python benchmarks/step.py --plugin bcl --device cpu --epochs 1 --images 1024
    python benchmarks/step.py --plugin bcl --device cuda --views batched --batch-size 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
import types
from pathlib import Path

import torch

from ltcore import hookimpl
from ltcore.config import resolve
from ltcore.data import CIFAR10_STATS, Dataset, Split, long_tail_counts
from ltcore.engine.backends import batch_rows, stage_views, views_backend
from ltcore.engine.runs import prepare
from ltcore.engine.schedule import parameter_groups, trained_parameters
from ltcore.engine.updates import Updates
from ltcore.engine.step import distributed_step
from ltcore.engine.trainer import Trainer
from ltcore.plugins import Plugins
from ltcore.tracking import SilentTracker


def synthetic_cifar_lt(images: int) -> Dataset:
    counts = long_tail_counts(5000, 10, 100)
    labels = torch.repeat_interleave(torch.arange(10), torch.tensor(counts))[:images]
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=g)
    val = Split(torch.arange(10).repeat(20), data[:200])
    return Dataset("synthetic-cifar10-lt", [str(c) for c in range(10)], Split(labels, data),
                   val, None, *CIFAR10_STATS, image_size=32)


def bench_plugin(images: int):
    module = types.ModuleType("bench")
    module.register_datasets = hookimpl(
        lambda register: register("synthetic-cifar10-lt", lambda config: synthetic_cifar_lt(images)))
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin", action="append", default=None, help="repeatable; default bcl")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--views", default="auto", choices=("auto", "batched", "reference"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=12406)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs (after one warm-up)")
    parser.add_argument("--backbone", default="resnet32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    args = parser.parse_args()
    selected = args.plugin or ["bcl"]
    plugins = Plugins(extra={"bench": bench_plugin(args.images)})
    settings = resolve(plugins, selected, assignments=[
        "dataset=synthetic-cifar10-lt", f"model.backbone={args.backbone}", f"device={args.device}",
        f"views.backend={args.views}", f"views.workers={args.workers}",
        f"batch_size={args.batch_size}", *args.assignments])
    run = prepare(plugins, selected, settings)
    stage = run.main_stage
    backend = views_backend(run, stage)
    sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
    sources = tuple(getattr(sampler, "sources", ("sample",)))
    views = stage_views(run, stage, sources)
    trainer = Trainer(run, SilentTracker(), Path(tempfile.mkdtemp()), progress=False)
    groups = parameter_groups(run, stage)
    rates = []
    with trained_parameters(stage, groups):
        step_fn = distributed_step(run, stage, groups)
        updates = Updates(run, stage, groups)
        for epoch in range(args.epochs + 1):
            order = sampler.epoch_indices(epoch, torch.Generator().manual_seed(epoch))
            order = order.unsqueeze(1) if order.dim() == 1 else order
            if run.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            sums, seen, _ = trainer.train_epoch(0, stage, views, order, sources, updates,
                                                epoch, epoch, t0, None, step_fn)
            float(sums.sum())
            if run.device.type == "cuda":
                torch.cuda.synchronize()
            if epoch > 0:
                rates.append(seen / (time.perf_counter() - t0))
    steps = len(batch_rows(order, args.batch_size))
    name = "+".join(selected)
    print(f"{'method':14} {'device':8} {'views':10} {'batch':>6} {'steps/epoch':>12} {'samples/s':>12}")
    print(f"{name:14} {run.device.type:8} {backend:10} {args.batch_size:>6} {steps:>12} "
          f"{sum(rates) / len(rates):>12,.0f}")


if __name__ == "__main__":
    main()
