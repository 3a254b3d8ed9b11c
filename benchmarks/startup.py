"""Start-up of the inner loop: seconds from ``ltrun`` to its first training step, against the
seconds ``import torch`` takes in the same environment, each in fresh processes.

Times ``python -c "import torch"`` (``--torch-repeat`` times, the median), then the embedded-data
run ``ltrun --epochs 1 --no-progress`` (``ce`` on ``digits-lt``; arguments after ``--`` are
added) ``--repeat`` times in each of two states of its MLflow store ``sqlite:///mlflow.db``:

* **fresh**: a new folder, so the run creates and migrates the store;
* **existing**: the same folder again, the store already there (the everyday loop).

``LTCORE_STARTUP_TRACE`` makes each run write its phase marks (:mod:`ltcore.startup`); the first
printed line is timed as it arrives. The breakdown gives, per phase, the median seconds since
launch and spent in the phase. One more run (store existing) under ``python -X importtime``
attributes the import time spent before the first step to the outermost package that brought
each module in. The last line is the ratio for the existing store: time to the first step / time
to import torch, against the target of :data:`TARGET`.

    python benchmarks/startup.py
    python benchmarks/startup.py --repeat 5 --json startup.json
    python benchmarks/startup.py -- --plugin bcl --plugin rcl --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET = 3.0
"""The aim: the first training step within this many times the seconds ``import torch`` takes."""

TRACE_ENV = "LTCORE_STARTUP_TRACE"
"""Where ``ltrun`` writes its phase marks (:data:`ltcore.startup.TRACE_ENV`)."""

PHASES = (
    ("cli started", "interpreter, ltcore's CLI, click"),
    ("engine imported", "torch and the engine's modules"),
    ("plugins loaded", "plugins loaded"),
    ("settings resolved", "settings resolved"),
    ("store opened", "MLflow imported, store opened"),
    ("run prepared", "dataset and model built"),
    ("run recorded", "MLflow run created, run folder"),
    ("first line", "checkpoint 0, params; first line"),
    ("views built", "stage run, views built"),
    ("training starts", "loader started, first batch made"),
    ("first step", "first forward, backward and update"),
)
"""The marks a run reaches in order (``first line`` is timed here, the others by the run) and
what happens between the previous mark and each."""

NOTABLE = ("torch._dynamo", "torchvision", "sklearn", "scipy", "pandas", "matplotlib", "tqdm",
           "sqlalchemy", "alembic", "fastapi", "sympy")
"""Modules whose import the breakdown names when it happens before the first step."""


def ltrun_command() -> list[str]:
    """``ltrun`` beside this interpreter (as a user runs it), else ``python -m ltcore``."""
    script = Path(sys.executable).with_name("ltrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ltcore"]


def torch_import_seconds() -> float:
    """Wall-clock seconds of ``python -c "import torch"`` in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def read_lines(stream, into: list[tuple[float, str]]) -> threading.Thread:
    """Collect ``(arrival time, line)`` of ``stream`` in a thread."""
    def collect():
        for line in stream:
            into.append((time.time(), line))
    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    return thread


def timed_run(folder: Path, extra: list[str], importtime: bool = False) -> dict:
    """One ``ltrun --epochs 1`` in ``folder``: seconds from launch to each phase mark and to the
    first printed line, the whole run's seconds, and (``importtime``) its import lines up to
    the first step."""
    trace = folder / "startup-trace.txt"
    trace.unlink(missing_ok=True)
    env = {**os.environ, TRACE_ENV: str(trace), "PYTHONUNBUFFERED": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    if importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    command = [*ltrun_command(), "--epochs", "1", "--no-progress",
               "--tracking-uri", "sqlite:///mlflow.db", *extra]
    stdout: list[tuple[float, str]] = []
    stderr: list[tuple[float, str]] = []
    launched = time.time()
    child = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    readers = [read_lines(child.stdout, stdout), read_lines(child.stderr, stderr)]
    child.wait()
    ended = time.time()
    for reader in readers:
        reader.join()
    if child.returncode:
        errors = "".join(line for _, line in stderr if not line.startswith("import time:"))
        raise SystemExit(f"{' '.join(command)} failed in {folder}:\n{errors[-3000:]}")
    marks = {}
    for line in (trace.read_text().splitlines() if trace.exists() else []):
        phase, _, stamp = line.rpartition(" ")
        marks[phase] = float(stamp) - launched
    if stdout:
        marks["first line"] = stdout[0][0] - launched
    missing = [phase for phase, _ in PHASES if phase not in marks]
    if missing:
        raise SystemExit(f"the run wrote no mark for {missing}: is this ltcore's ltrun?")
    first_step = launched + marks["first step"]
    return {"marks": marks, "total": ended - launched,
            "imports": [line for arrived, line in stderr
                        if arrived <= first_step and line.startswith("import time:")]}


def import_groups(lines: list[str]) -> tuple[dict[str, float], dict[str, tuple[float, list]]]:
    """From ``-X importtime`` lines: seconds of import by the outermost package outside the
    standard library that brought each module in (``ltcore`` for ltcore's and the plugins' own
    modules, ``python`` for the standard library they import), and for each :data:`NOTABLE`
    module imported, the seconds its imports took with what they brought in (cumulative) and
    the groups that imported it."""
    nodes = []  # (depth, name, self seconds, cumulative seconds, children), children first
    for line in lines:
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if not match:
            continue
        depth = len(match[3]) // 2
        children = []
        while nodes and nodes[-1][0] > depth:
            children.append(nodes.pop())
        nodes.append((depth, match[4], int(match[1]) / 1e6, int(match[2]) / 1e6,
                      children[::-1]))
    groups: dict[str, float] = {}
    notable: dict[str, tuple[float, list]] = {}

    def visit(node, group: str | None, inside: frozenset) -> None:
        _, name, own, cumulative, children = node
        top = name.partition(".")[0]
        if group is None and not top.startswith("ltcore") and top not in sys.stdlib_module_names:
            group = top
        label = group or ("ltcore" if top.startswith("ltcore") else "python")
        groups[label] = groups.get(label, 0.0) + own
        for module in NOTABLE:
            if module not in inside and (name == module or name.startswith(module + ".")):
                seconds, by = notable.get(module, (0.0, []))
                by = by if label in by or label == module.partition(".")[0] else [*by, label]
                notable[module] = (seconds + cumulative, by)
                inside = inside | {module}
        for child in children:
            visit(child, group, inside)

    for node in nodes:
        visit(node, None, frozenset())
    return groups, notable


def median_marks(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Per phase: the median seconds since launch and the median seconds of the phase itself."""
    result, previous = {}, None
    for phase, _ in PHASES:
        at = statistics.median(run["marks"][phase] for run in runs)
        spent = statistics.median(run["marks"][phase] - (run["marks"][previous] if previous else 0)
                                  for run in runs)
        result[phase] = (at, spent)
        previous = phase
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per store state")
    parser.add_argument("--torch-repeat", type=int, default=5, help="timed torch imports")
    parser.add_argument("--scratch", help="folder for the runs' folders (default: a temporary one)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("ltrun_args", nargs="*", help="more ltrun arguments (after --)")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as temporary:
        scratch = Path(args.scratch or temporary)
        torch_s = statistics.median(torch_import_seconds() for _ in range(args.torch_repeat))
        fresh, existing = [], []
        for i in range(args.repeat):
            folder = scratch / f"startup-{i}"
            folder.mkdir(parents=True, exist_ok=False)
            fresh.append(timed_run(folder, args.ltrun_args))
            existing.append(timed_run(folder, args.ltrun_args))
        traced = timed_run(scratch / "startup-0", args.ltrun_args, importtime=True)
    groups, notable = import_groups(traced["imports"])
    states = {"fresh": median_marks(fresh), "existing": median_marks(existing)}
    totals = {"fresh": statistics.median(r["total"] for r in fresh),
              "existing": statistics.median(r["total"] for r in existing)}
    starts = states["existing"]["training starts"][0]
    first_step = states["existing"]["first step"][0]
    ratio = starts / torch_s

    command = " ".join(["ltrun", "--epochs", "1", "--no-progress", *args.ltrun_args])
    print(f"`{command}` in a scratch folder; {platform.machine()}, {os.cpu_count()} cores, load "
          f"average {', '.join(f'{value:.2f}' for value in load)} before; Python "
          f"{platform.python_version()}; medians of {args.repeat} runs per store state and of "
          f"{args.torch_repeat} torch imports")
    print(f"{'phase (what it spends)':<50} {'fresh store':>17} {'existing store':>17}")
    print(f"{'':<50} {'at s':>8} {'phase':>8} {'at s':>8} {'phase':>8}")
    for phase, what in PHASES:
        row = f"{phase + ': ' + what:<50}"
        for state in ("fresh", "existing"):
            at, spent = states[state][phase]
            row += f" {at:8.2f} {spent:8.2f}"
        print(row)
    print(f"{'whole 1-epoch run':<50} {totals['fresh']:8.2f} {'':8} {totals['existing']:8.2f}")
    imported = sum(groups.values())
    print(f"imports before the first step (-X importtime, one run, store existing; "
          f"{imported:.2f} s of its {traced['marks']['first step']:.2f} s), by the package "
          "that brought them in:")
    listed = {name: seconds for name, seconds in groups.items() if seconds >= 0.05}
    rest = imported - sum(listed.values())
    print("  " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in
                           sorted(listed.items(), key=lambda item: -item[1]))
          + f", the rest {rest:.2f} s")
    if notable:
        print("  among them: " + ", ".join(
            f"{name} {seconds:.2f} s" + (f" (by {', '.join(by)})" if by else "")
            for name, (seconds, by) in sorted(notable.items(), key=lambda item: -item[1][0])))
    print(f"import torch: {torch_s:.2f} s")
    print(f"training starts (the first batch in hand): {starts:.2f} s (store existing), "
          f"{states['fresh']['training starts'][0]:.2f} s (fresh store); the first step has "
          f"updated the weights at {first_step:.2f} s ({first_step / torch_s:.2f}x)")
    verdict = "met" if ratio <= TARGET else "not met"
    print(f"ratio: {ratio:.2f}x import torch to the start of training, store existing "
          f"(target {TARGET:g}x: {verdict})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command, "torch_import_s": torch_s, "ratio": ratio, "target": TARGET,
            "first_step_ratio": first_step / torch_s,
            "cores": os.cpu_count(), "load_average_before": load,
            "phases": {state: {phase: {"at_s": at, "phase_s": spent}
                               for phase, (at, spent) in marks.items()}
                       for state, marks in states.items()},
            "run_s": totals, "imports_s": groups,
            "notable_imports_s": {name: seconds for name, (seconds, _) in notable.items()},
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
