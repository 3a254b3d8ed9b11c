"""Experiments over many runs: sweeps, comparison tables and reports.

:func:`plan_sweep` expands plugin sets x seeds x imbalance factors x ``--grid`` values into
:class:`Cell` s and :func:`run_sweep` trains each as one ``ltrun`` call (a subprocess, or in this
process), tagged ``ltcore.sweep`` so that :func:`collect_runs` finds them again. A cell that fails
is recorded as a FAILED MLflow run (with its error and log) and the sweep goes on.

:func:`compare` groups recorded parent runs (by tags, then params: ``plugins``,
``imbalance_factor``, ``optim.lr``...) and gives mean, sample standard deviation and count of the
final accuracy figures and the wall-clock per group, optionally beside reference numbers (a
TOML/CSV file, or the papers' numbers built in here). :func:`build_report` writes an HTML or
markdown page with that table and the plots of :mod:`ltcore.plots`, recomputing what needs the
model (confusion matrices, t-SNE of backbone features) from each run's saved ``model.pt``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import html
import io
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
import tomllib
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import attrs

from .config import doc
from .errors import ConfigError, DataError, LtcoreError
from .tracking import RUN_TAGS_ENV, connect, experiment_id, extra_tags, resolve_uri

SWEEP_TAG = "ltcore.sweep"
CELL_TAG = "ltcore.sweep.cell"
INDEX_TAG = "ltcore.sweep.index"
ATTEMPT_TAG = "ltcore.sweep.attempt"
AXES_TAG = "ltcore.sweep.axes"
KIND_TAG = "ltcore.kind"
ERROR_TAG = "ltcore.error"

METRICS = ("acc", "many", "medium", "few", "hmean")
"""The accuracy figures a comparison shows per split (percent)."""

WALL_CLOCK = "wall_clock_s"

DEFAULT_GROUP_BY = ("plugins", "dataset", "imbalance_factor")

PAPER_SOURCE = "ResNet-32, 200 epochs, top-1 on the balanced test set (docs/comparing.md)"
PAPER_NUMBERS: list[dict[str, Any]] = [
    *({"plugins": "bcl", "dataset": d, "imbalance_factor": f, "test/acc": v,
       "source": "BCL (Zhu et al. 2022), " + PAPER_SOURCE}
      for d, vals in (("cifar10-lt", (84.32, 87.24, 91.12)), ("cifar100-lt", (51.93, 56.59, 64.87)))
      for f, v in zip((100, 50, 10), vals)),
    *({"plugins": p, "dataset": d, "imbalance_factor": f, "test/acc": v,
       "source": "RCL, " + PAPER_SOURCE}
      for p, d, vals in (("rcl", "cifar10-lt", (86.0, 88.5, 91.7)),
                         ("bcl,rcl", "cifar10-lt", (86.2, 88.4, 92.0)),
                         ("rcl", "cifar100-lt", (52.2, 56.8, 65.6)),
                         ("bcl,rcl", "cifar100-lt", (52.1, 56.0, 65.4)))
      for f, v in zip((100, 50, 10), vals)),
    *({"plugins": "iccl", "dataset": d, "imbalance_factor": f, "test/acc": v,
       "source": "ICCL, " + PAPER_SOURCE}
      for d, vals in (("cifar100-lt", (46.6, 51.6, 62.1)), ("cifar10-lt", (82.1, 84.7, 89.7)))
      for f, v in zip((100, 50, 10), vals)),
    *({"plugins": p, "dataset": d, "imbalance_factor": f, "test/acc": v,
       "source": "CoGloAT/ProCo, " + PAPER_SOURCE}
      for p, d, vals in (("cogloat,proco", "cifar10-lt", (81.6, 85.5, 89.4)),
                         ("cogloat,proco", "cifar100-lt", (46.0, 50.4, 60.8)),
                         ("cogloat", "cifar10-lt", (81.4, 84.5, 88.9)),
                         ("cogloat", "cifar100-lt", (45.4, 49.5, 60.7)))
      for f, v in zip((100, 50, 10), vals)),
    *({"plugins": "gml", "dataset": "cifar100-lt", "imbalance_factor": f, "test/acc": v,
       "source": "GML, " + PAPER_SOURCE}
      for f, v in zip((100, 50, 10), (53.0, 57.6, 65.7))),
    *({"plugins": p, "dataset": "cifar10-lt", "imbalance_factor": 100, "test/acc": v,
       "source": "baseline as quoted by the papers, " + PAPER_SOURCE}
      for p, v in (("ce", 70.4), ("ldam-drw", 77.0), ("balanced-softmax", 84.9), ("kcl", 77.6))),
    {"plugins": "bcl", "dataset": "cifar100-lt", "imbalance_factor": 100, "test/many": 67.2,
     "test/medium": 53.1, "test/few": 32.9, "source": "BCL shot groups, " + PAPER_SOURCE},
    {"plugins": "rcl", "dataset": "cifar100-lt", "imbalance_factor": 100, "test/hmean": 42.4,
     "source": "RCL harmonic mean (SCL+RCL), " + PAPER_SOURCE},
    {"plugins": "bcl,rcl", "dataset": "cifar100-lt", "imbalance_factor": 100, "test/hmean": 41.1,
     "source": "RCL harmonic mean, " + PAPER_SOURCE},
    {"plugins": "rcl", "dataset": "cifar10-lt", "imbalance_factor": 100, "test/hmean": 85.3,
     "source": "RCL harmonic mean (SCL+RCL), " + PAPER_SOURCE},
    {"plugins": "bcl,rcl", "dataset": "cifar10-lt", "imbalance_factor": 100, "test/hmean": 85.7,
     "source": "RCL harmonic mean, " + PAPER_SOURCE},
]
"""Top-1 test accuracies the papers report (``--reference papers``), from docs/comparing.md."""


# ==========================================================================================
# sweeps
# ==========================================================================================


def split_values(text: str) -> list[str]:
    """Split ``a,b,[1,2],"x,y"`` at the commas outside brackets and quotes."""
    out, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    out.append("".join(current).strip())
    if any(not v for v in out):
        raise ConfigError(f"empty value in list {text!r}")
    return out


def parse_seeds(texts: Iterable[str]) -> list[int]:
    """Seeds from ``0,1,2`` or ranges ``0-4`` (inclusive); repeated options add up."""
    seeds: list[int] = []
    for text in texts:
        for part in split_values(text):
            lo, sep, hi = part.partition("-")
            try:
                seeds.extend(range(int(lo), int(hi) + 1) if sep and lo else [int(part)])
            except ValueError as exc:
                raise ConfigError(f"--seeds expects integers or ranges like 0-4, got {part!r}") from exc
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"a seed is given twice in --seeds: {seeds}")
    return seeds


def parse_floats(texts: Iterable[str], option: str) -> list[float]:
    values = []
    for text in texts:
        for part in split_values(text):
            try:
                value = float(part)
            except ValueError as exc:
                raise ConfigError(f"{option} expects numbers, got {part!r}") from exc
            if value <= 0:
                raise ConfigError(f"{option} values must be > 0, got {part!r}")
            values.append(value)
    return values


def parse_grid(items: Iterable[str]) -> dict[str, list[str]]:
    """``["optim.lr=0.1,0.2", "bcl.temperature=0.07,0.1"]`` -> key -> value texts."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise ConfigError(f"--grid key {key!r} is given twice")
        if key in ("seed", "imbalance_factor"):
            raise ConfigError(f"sweep {key} with --{key.replace('_', '-')}s, not --grid")
        grid[key] = split_values(raw)
    return grid


def parse_plugin_sets(items: Iterable[str]) -> list[tuple[str, ...]]:
    """``["bcl", "bcl+rcl"]`` -> ``[("bcl",), ("bcl", "rcl")]``."""
    sets = []
    for item in items:
        names = tuple(n.strip() for n in item.replace(",", "+").split("+") if n.strip())
        if not names:
            raise ConfigError(f"empty plugin set in --plugins {item!r}")
        sets.append(names)
    return sets


def fmt_number(value: float) -> str:
    return f"{value:g}"


@attrs.define
class Cell:
    """One point of a sweep: a plugin set, a seed, an imbalance factor and grid values."""

    index: int
    plugins: tuple[str, ...]
    seed: int | None = None
    imbalance_factor: float | None = None
    grid: dict[str, str] = attrs.Factory(dict)
    device: str | None = None

    def axes(self) -> dict[str, str]:
        """The cell's coordinates, as the strings its tags carry."""
        out = {"plugins": "+".join(self.plugins)}
        if self.imbalance_factor is not None:
            out["imbalance_factor"] = fmt_number(self.imbalance_factor)
        out.update(self.grid)
        if self.seed is not None:
            out["seed"] = str(self.seed)
        return out

    @property
    def key(self) -> str:
        """``plugins=bcl+rcl seed=0 imbalance_factor=100 optim.lr=0.1``."""
        return " ".join(f"{k}={v}" for k, v in self.axes().items())

    def args(self, common: Sequence[str]) -> list[str]:
        """The ``ltrun`` arguments of this cell: its axes after the common options."""
        args = [a for name in self.plugins for a in ("--plugin", name)]
        args += list(common)
        for key, value in self.grid.items():
            args += ["--set", f"{key}={value}"]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        if self.imbalance_factor is not None:
            args += ["--imbalance-factor", fmt_number(self.imbalance_factor)]
        if self.device:
            args += ["--device", self.device]
        if "--no-progress" not in args:
            args.append("--no-progress")
        return args


def plan_sweep(plugin_sets: Sequence[tuple[str, ...]], seeds: Sequence[int] = (),
               imbalance_factors: Sequence[float] = (), grid: dict[str, list[str]] | None = None,
               devices: Sequence[str] = ()) -> list[Cell]:
    """Every combination, plugin sets outermost and seeds innermost (seeds of one setting run
    next to each other); devices are handed out round-robin."""
    grid = grid or {}
    keys = list(grid)
    cells = []
    combos = itertools.product(plugin_sets or [("ce",)], imbalance_factors or [None],
                               itertools.product(*(grid[k] for k in keys)), seeds or [None])
    for i, (plugins, factor, values, seed) in enumerate(combos):
        cells.append(Cell(i, tuple(plugins), seed, factor, dict(zip(keys, values)),
                          devices[i % len(devices)] if devices else None))
    return cells


@attrs.define
class CellResult:
    """What became of one cell."""

    cell: Cell
    status: str  # FINISHED | FAILED | SKIPPED | NOT_RUN
    run_id: str | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    metrics: dict[str, float] = attrs.Factory(dict)
    error: str = ""
    log: str = ""


@attrs.define
class Sweep:
    """A planned sweep: its id, where it records, the common ``ltrun`` options and the cells."""

    id: str
    cells: list[Cell]
    common: list[str]
    experiment: str = "ltcore"
    tracking_uri: str = ""
    output: str = "runs"

    @property
    def uri(self) -> str:
        return resolve_uri(self.tracking_uri or None)

    def folder(self) -> Path:
        return Path(self.output) / "sweeps" / self.id

    def tracking_args(self) -> list[str]:
        args = ["--experiment", self.experiment, "--output", self.output]
        if self.tracking_uri:
            args += ["--tracking-uri", self.tracking_uri]
        return args

    def cell_args(self, cell: Cell) -> list[str]:
        return cell.args([*self.common, *self.tracking_args()])


def new_sweep_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def validate_cells(sweep: Sweep, plugins=None) -> None:
    """Resolve every cell's configuration as ``ltrun`` would, before anything trains.

    Raises :class:`ConfigError` naming the first cell whose options are invalid.
    """
    from .cli import RUN_OPTIONS, cli
    from .config import resolve
    from .plugins import Plugins

    plugins = plugins or Plugins()
    for cell in sweep.cells:
        args = sweep.cell_args(cell)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ctx = cli.make_context("ltrun", list(args), resilient_parsing=False)
        except Exception as exc:  # click usage errors
            message = getattr(exc, "format_message", lambda: str(exc))()
            raise ConfigError(f"sweep cell {cell.index} ({cell.key}): {message}") from exc
        leftover = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if leftover:
            raise ConfigError(f"sweep cell {cell.index}: unexpected argument(s) "
                              f"{' '.join(leftover)!r} for ltrun")
        p = ctx.params
        for flag, name in (("resume", "--resume"), ("print_config", "--print-config")):
            if p.get(flag):
                raise ConfigError(f"{name} cannot be given to ltrun sweep")
        try:
            selected = plugins.select(list(p["plugin_names"]))
            overrides = {RUN_OPTIONS[k]: v for k, v in p.items() if k in RUN_OPTIONS and v is not None}
            resolve(plugins, selected, p["presets"], p["config_file"], p["assignments"], overrides)
        except LtcoreError as exc:
            raise ConfigError(f"sweep cell {cell.index} ({cell.key}): {exc}") from exc


def _ltrun_command() -> list[str]:
    return [sys.executable, "-c", "from ltcore.cli import main; main()"]


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Error:"):
            return line[len("Error:"):].strip()
    return lines[-1] if lines else "no output"


def _cell_tags(sweep: Sweep, cell: Cell, attempt: str) -> dict[str, str]:
    return {SWEEP_TAG: sweep.id, CELL_TAG: cell.key, INDEX_TAG: str(cell.index),
            ATTEMPT_TAG: attempt, AXES_TAG: json.dumps(cell.axes())}


def _find_attempt(client, exp_id: str, attempt: str):
    found = client.search_runs([exp_id], f"tags.`{ATTEMPT_TAG}` = '{attempt}'", max_results=10)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    return parents[0] if parents else None


class _CellRecorder:
    """Records a finished cell process in MLflow: finds its run, or makes one for a failure."""

    def __init__(self, sweep: Sweep, client, exp_id: str):
        self.sweep, self.client, self.exp_id = sweep, client, exp_id

    def record(self, cell: Cell, attempt: str, code: int, seconds: float, log_path: Path) -> CellResult:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        try:
            run = _find_attempt(self.client, self.exp_id, attempt)
        except Exception:  # the store went away: keep the local outcome
            return CellResult(cell, "FINISHED" if code == 0 else "FAILED", None, code, seconds,
                              error="" if code == 0 else _error_line(text), log=str(log_path))
        if code == 0 and run is not None:
            self._log_axes(run.info.run_id, cell)
            return CellResult(cell, "FINISHED", run.info.run_id, code, seconds,
                              dict(run.data.metrics), log=str(log_path))
        error = _error_line(text) if code != 0 else "the run finished but was not recorded"
        try:
            if run is None:
                run_id = self._failed_run(cell, attempt, error, code)
            else:
                run_id = run.info.run_id
                self.client.set_tag(run_id, ERROR_TAG, error[:5000])
                self.client.set_tag(run_id, "ltcore.exit_code", str(code))
                if run.info.status == "RUNNING":  # the process died without closing its run
                    self.client.set_terminated(run_id, "FAILED")
            self.client.log_artifact(run_id, str(log_path), "sweep")
        except Exception:
            run_id = run.info.run_id if run is not None else None
        return CellResult(cell, "FAILED", run_id, code, seconds, error=error, log=str(log_path))

    def _log_axes(self, run_id: str, cell: Cell) -> None:
        """Numeric axes as metrics ``axis/<key>``, so that filters can compare numbers."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for key, value in cell.axes().items():
            try:
                metrics.append(Metric(f"axis/{key}", float(value), now, 0))
            except ValueError:
                continue
        try:
            self.client.log_batch(run_id, metrics=metrics)
        except Exception:
            pass

    def _failed_run(self, cell: Cell, attempt: str, error: str, code: int) -> str:
        tags = {**_cell_tags(self.sweep, cell, attempt), "plugins": ",".join(cell.plugins),
                "ltcore.plugins": ",".join(cell.plugins), ERROR_TAG: error[:5000],
                "ltcore.exit_code": str(code)}
        for key, value in (("seed", cell.seed), ("imbalance_factor", cell.imbalance_factor)):
            if value is not None:
                tags[key] = fmt_number(value) if isinstance(value, float) else str(value)
        run = self.client.create_run(self.exp_id, run_name="+".join(cell.plugins), tags=tags)
        from mlflow.entities import Param

        args = self.sweep.cell_args(cell)
        self.client.log_batch(run.info.run_id, params=[
            Param("ltrun.args", shlex.join(args)[:6000]),
            *(Param(k, v) for k, v in cell.grid.items())])
        self.client.set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id


def _in_process(args: list[str], log_path: Path) -> int:
    """Run ``ltrun args`` in this process, its output to ``log_path``; the exit code."""
    from .cli import main

    with open(log_path, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        try:
            main(list(args))
            return 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            return 130
        except Exception:
            traceback.print_exc(file=fh)
            return 1


def _sweep_record(client, exp_id: str, sweep: Sweep) -> str:
    """The sweep's own MLflow run (tag ltcore.kind = sweep), found again when reused."""
    from mlflow.entities import Param

    found = client.search_runs([exp_id], f"tags.`{SWEEP_TAG}` = '{sweep.id}' and "
                               f"tags.`{KIND_TAG}` = 'sweep'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(exp_id, run_name=f"sweep {sweep.id}",
                            tags={SWEEP_TAG: sweep.id, KIND_TAG: "sweep",
                                  AXES_TAG: json.dumps(sorted({k for c in sweep.cells
                                                               for k in c.axes()}))})
    params = [Param("sweep.cells", str(len(sweep.cells))),
              Param("sweep.common_args", shlex.join(sweep.common)[:6000] or "-")]
    axes: dict[str, list[str]] = {}
    for cell in sweep.cells:
        for k, v in cell.axes().items():
            if v not in axes.setdefault(k, []):
                axes[k].append(v)
    params += [Param(f"sweep.axis.{k}", ",".join(v)[:6000]) for k, v in axes.items()]
    client.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def _done_cells(client, exp_id: str, sweep_id: str) -> dict[str, str]:
    """Cell key -> run id of the cells of ``sweep_id`` that already finished."""
    done = {}
    for run in _search_all(client, [exp_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}' and "
                           "attributes.status = 'FINISHED'"):
        key = run.data.tags.get(CELL_TAG)
        if key and "mlflow.parentRunId" not in run.data.tags:
            done[key] = run.info.run_id
    return done


def run_sweep(sweep: Sweep, max_parallel: int = 1, in_process: bool = False,
              echo: Callable[[str], None] = print, poll_s: float = 0.5) -> list[CellResult]:
    """Train every cell (``max_parallel`` subprocesses at a time, or sequentially in this
    process) and record each in MLflow; a failed cell does not stop the others.

    Cells already FINISHED in a sweep of the same id are skipped, so re-running a sweep command
    with ``--sweep-id`` completes what failed or was interrupted.
    """
    client = connect(sweep.tracking_uri or None)
    exp_id = experiment_id(client, sweep.experiment)
    folder = sweep.folder()
    folder.mkdir(parents=True, exist_ok=True)
    record_id = _sweep_record(client, exp_id, sweep)
    recorder = _CellRecorder(sweep, client, exp_id)
    done = _done_cells(client, exp_id, sweep.id)
    results: dict[int, CellResult] = {}
    todo = []
    for cell in sweep.cells:
        if cell.key in done:
            results[cell.index] = CellResult(cell, "SKIPPED", done[cell.key],
                                             error="finished in an earlier call")
        else:
            todo.append(cell)
    total = len(sweep.cells)
    echo(f"sweep {sweep.id}: {len(sweep.cells)} cells ({len(todo)} to run, "
         f"{total - len(todo)} already finished), "
         f"{'in this process' if in_process else f'up to {max_parallel} at a time'}; "
         f"logs in {folder}")
    interrupted = False

    def started(cell: Cell, log_path: Path) -> None:
        echo(f"[{cell.index + 1}/{total}] start  {cell.key}  (log: {log_path})")

    def finished(result: CellResult) -> None:
        cell = result.cell
        if result.status == "FINISHED":
            shown = "  ".join(f"{k} {result.metrics[k]:.2f}" for k in ("val/acc", "test/acc")
                              if k in result.metrics)
            echo(f"[{cell.index + 1}/{total}] done   {cell.key}: run {result.run_id} in "
                 f"{result.seconds:.0f} s  {shown}")
        else:
            echo(f"[{cell.index + 1}/{total}] FAILED {cell.key} (exit {result.exit_code}) "
                 f"after {result.seconds:.0f} s: {result.error}")
        results[cell.index] = result

    if in_process:
        for cell in todo:
            if interrupted:
                break
            attempt = uuid.uuid4().hex
            log_path = folder / f"cell-{cell.index:03d}.log"
            started(cell, log_path)
            t0 = time.time()
            with extra_tags(_cell_tags(sweep, cell, attempt)):
                code = _in_process(sweep.cell_args(cell), log_path)
            finished(recorder.record(cell, attempt, code, time.time() - t0, log_path))
            interrupted = code == 130
    else:
        interrupted = _run_processes(sweep, todo, max(1, max_parallel), recorder, started,
                                     finished, poll_s)
    for cell in sweep.cells:
        results.setdefault(cell.index, CellResult(cell, "NOT_RUN", error="the sweep was interrupted"))
    ordered = [results[c.index] for c in sweep.cells]
    _close_record(client, record_id, ordered, folder)
    if interrupted:
        raise KeyboardInterrupt
    return ordered


def _run_processes(sweep, todo, max_parallel, recorder, started, finished, poll_s) -> bool:
    queue = list(todo)
    running: list[tuple[Cell, str, subprocess.Popen, float, Path, Any]] = []
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                cell = queue.pop(0)
                attempt = uuid.uuid4().hex
                log_path = sweep.folder() / f"cell-{cell.index:03d}.log"
                env = dict(os.environ)
                env[RUN_TAGS_ENV] = json.dumps(_cell_tags(sweep, cell, attempt))
                env.setdefault("PYTHONUNBUFFERED", "1")
                if max_parallel > 1:
                    env.setdefault("OMP_NUM_THREADS", str(threads))
                fh = open(log_path, "w")
                fh.write("$ ltrun " + shlex.join(sweep.cell_args(cell)) + "\n")
                fh.flush()
                proc = subprocess.Popen([*_ltrun_command(), *sweep.cell_args(cell)], stdout=fh,
                                        stderr=subprocess.STDOUT, env=env)
                started(cell, log_path)
                running.append((cell, attempt, proc, time.time(), log_path, fh))
            time.sleep(poll_s)
            for item in list(running):
                cell, attempt, proc, t0, log_path, fh = item
                code = proc.poll()
                if code is None:
                    continue
                fh.close()
                running.remove(item)
                code = code if code >= 0 else 128 - code  # killed by a signal
                finished(recorder.record(cell, attempt, code, time.time() - t0, log_path))
    except KeyboardInterrupt:
        for cell, attempt, proc, t0, log_path, fh in running:
            try:
                proc.wait(timeout=30)  # the cells got the same SIGINT and close their runs
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            fh.close()
            finished(recorder.record(cell, attempt, 130, time.time() - t0, log_path))
        return True
    return False


def _close_record(client, record_id: str | None, results: list[CellResult], folder: Path) -> None:
    from mlflow.entities import Metric

    path = folder / "summary.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "cell", "status", "run_id", "exit_code", "seconds", "val/acc",
                         "test/acc", "error"])
        for r in results:
            writer.writerow([r.cell.index, r.cell.key, r.status, r.run_id or "",
                             "" if r.exit_code is None else r.exit_code, f"{r.seconds:.1f}",
                             r.metrics.get("val/acc", ""), r.metrics.get("test/acc", ""), r.error])
    if record_id is None:
        return
    counts = {s: sum(r.status == s for r in results) for s in ("FINISHED", "FAILED", "SKIPPED",
                                                                "NOT_RUN")}
    now = int(time.time() * 1000)
    try:
        client.log_batch(record_id, metrics=[Metric(f"cells/{k.lower()}", v, now, 0)
                                             for k, v in counts.items()])
        client.log_artifact(record_id, str(path))
        ok = counts["FAILED"] == 0 and counts["NOT_RUN"] == 0
        client.set_terminated(record_id, "FINISHED" if ok else "FAILED")
    except Exception:
        pass


def format_sweep_summary(sweep: Sweep, results: list[CellResult]) -> str:
    """The table printed at the end of a sweep."""
    header = ["#", "cell", "status", "run", "val/acc", "test/acc", "time (s)", "error"]
    rows = [[str(r.cell.index), r.cell.key, r.status, r.run_id or "-",
             f"{r.metrics['val/acc']:.2f}" if "val/acc" in r.metrics else "-",
             f"{r.metrics['test/acc']:.2f}" if "test/acc" in r.metrics else "-",
             f"{r.seconds:.0f}" if r.seconds else "-", r.error[:80]] for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("FINISHED", "SKIPPED", "FAILED",
                                                                "NOT_RUN")}
    lines = [_text_table(header, rows), "",
             f"sweep {sweep.id}: " + ", ".join(f"{n} {s.lower().replace('_', ' ')}"
                                               for s, n in counts.items() if n)]
    where = f" --experiment {shlex.quote(sweep.experiment)}"
    if sweep.tracking_uri:
        where += f" --tracking-uri {shlex.quote(sweep.tracking_uri)}"
    lines.append(f"compare: ltrun compare --sweep {sweep.id}{where}")
    lines.append(f"report:  ltrun report --sweep {sweep.id}{where}")
    return "\n".join(lines)


# ==========================================================================================
# finding runs and comparing them
# ==========================================================================================


def _search_all(client, experiment_ids: list[str], filter_string: str = "",
                order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000,
                                  order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def collect_runs(client, experiment: str = "ltcore", filter_string: str = "",
                 sweep: str | None = None, status: str | None = "FINISHED",
                 run_ids: Sequence[str] = ()) -> tuple[list, list]:
    """The parent runs of ltcore trainings that match; returns (kept, left out by status).

    Stage runs (nested), sweep records and runs that ltcore did not make are never returned.
    """
    if run_ids:
        runs = [client.get_run(r) for r in run_ids]
    else:
        exp_id = experiment_id(client, experiment, create=False)
        if exp_id is None:
            raise DataError(f"no MLflow experiment named {experiment!r} at "
                            f"{client.tracking_uri}; give --experiment (ltrun --experiment "
                            "names it when training) or --tracking-uri")
        clauses = [filter_string.strip()]
        if sweep:
            clauses.append(f"tags.`{SWEEP_TAG}` = '{sweep}'")
        query = " and ".join(c for c in clauses if c)
        try:
            runs = _search_all(client, [exp_id], query, order_by=["attributes.start_time ASC"])
        except Exception as exc:
            if "filter" in str(exc).lower() or "invalid" in str(exc).lower():
                raise ConfigError(f"invalid --filter {filter_string!r}: {exc}") from exc
            raise
    kept, left_out = [], []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or tags.get(KIND_TAG) == "sweep" or "ltcore.plugins" not in tags:
            continue
        (kept if status in (None, "all") or run.info.status == status else left_out).append(run)
    kept.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return kept, left_out


def run_value(run, key: str) -> str:
    """A run's value for a grouping or matching key: ``tags.K``/``params.K`` explicitly, else
    the tag, then the param, then the run attributes ``status``/``run_name``/``run_id``."""
    tags, params = run.data.tags, run.data.params
    if key.startswith("tags."):
        return tags.get(key[5:], "")
    if key.startswith("params."):
        return params.get(key[7:], "")
    if key in tags:
        return tags[key]
    if key in params:
        return params[key]
    if key == "plugins":
        return tags.get("ltcore.plugins", "")
    return str(getattr(run.info, key, "") or "")


def _normal(key: str, value: Any) -> Any:
    """Comparable form: plugin sets as sorted tuples, numbers as floats, else stripped text."""
    text = str(value).strip()
    if key.split(".")[-1] == "plugins":
        return tuple(sorted(p for p in text.replace("+", ",").split(",") if p))
    try:
        return float(text)
    except ValueError:
        return text


def default_group_by(runs: Sequence, sweep: str | None) -> list[str]:
    """The sweep's axes without ``seed`` (when a sweep is asked for), else plugins, dataset and
    imbalance factor."""
    if sweep:
        axes = []
        for run in runs:
            for key in json.loads(run.data.tags.get(AXES_TAG, "{}")):
                if key != "seed" and key not in axes:
                    axes.append(key)
        for key in ("dataset", "imbalance_factor"):
            if key not in axes and len({run_value(r, key) for r in runs}) > 1:
                axes.append(key)
        if axes:
            return axes
    return list(DEFAULT_GROUP_BY)


def final_metrics(client, run, select: str = "last") -> dict[str, float]:
    """The accuracy figures of a parent run.

    ``last``: the parent's final figures (the last stage's last epoch), falling back to the last
    stage run's last logged step. ``best-val``: every figure at the epoch of the last stage with
    the highest ``val/acc`` (the earliest such epoch), the reading the papers' reference code
    does not use on the test set and we do on the validation split.
    """
    figures = {k: v for k, v in run.data.metrics.items() if "/" in k and k.split("/")[0] in
               ("val", "test")}
    if select == "last" and figures:
        return figures
    stage = _last_stage_run(client, run)
    if stage is None:
        return figures
    keys = [k for k in stage.data.metrics if k.split("/")[0] in ("val", "test")]
    history = {k: {m.step: m.value for m in client.get_metric_history(stage.info.run_id, k)}
               for k in keys}
    if not history.get("val/acc"):
        return figures
    steps = history["val/acc"]
    step = (max(steps) if select == "last"
            else min((s for s in steps if steps[s] == max(steps.values()))))
    out = {k: h[step] for k, h in history.items() if step in h}
    out["epoch"] = float(step)
    return out


def _last_stage_run(client, run):
    stages = client.search_runs([run.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
                                order_by=["attributes.start_time DESC"], max_results=50)
    return stages[0] if stages else None


def wall_clock(run) -> float | None:
    """Seconds from the parent run's start to its end (resumed runs include the pause)."""
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000.0
    return None


@attrs.define
class Stat:
    """Mean, sample standard deviation (None for a single value) and count of a figure."""

    mean: float
    std: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat | None":
        values = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not values:
            return None
        mean = sum(values) / len(values)
        std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
               if len(values) > 1 else None)
        return cls(mean, std, len(values), values)


@attrs.define
class GroupRow:
    """One row of a comparison: a group's key values, its runs and its statistics."""

    key: dict[str, str]
    run_ids: list[str]
    seeds: list[str]
    stats: dict[str, Stat | None]
    reference: dict[str, float] = attrs.Factory(dict)
    reference_source: str = ""

    @property
    def n(self) -> int:
        return len(self.run_ids)

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.key.items())


@attrs.define
class Comparison:
    """A comparison table: the rows and how it was made."""

    rows: list[GroupRow]
    group_by: list[str]
    columns: list[str]
    left_out: int = 0
    select: str = "last"
    reference_name: str = ""


def metric_columns(splits: Sequence[str], metrics: Sequence[str] = METRICS) -> list[str]:
    return [f"{s}/{m}" for s in splits for m in metrics] + [WALL_CLOCK]


def compare(client, runs: Sequence, group_by: Sequence[str], splits: Sequence[str] = ("test",),
            metrics: Sequence[str] = METRICS, select: str = "last",
            reference: list[dict] | None = None, left_out: int = 0) -> Comparison:
    """Group ``runs`` and compute mean ± std over each group's runs (its seeds)."""
    columns = metric_columns(splits, metrics)
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault(tuple(run_value(run, k) for k in group_by), []).append(run)
    rows = []
    for key, members in groups.items():
        figures = [final_metrics(client, r, select) for r in members]
        stats: dict[str, Stat | None] = {}
        for column in columns:
            if column == WALL_CLOCK:
                stats[column] = Stat.of([w for w in map(wall_clock, members) if w is not None])
            else:
                stats[column] = Stat.of([f[column] for f in figures if column in f])
        rows.append(GroupRow(dict(zip(group_by, key)), [r.info.run_id for r in members],
                             [run_value(r, "seed") for r in members], stats))
    rows.sort(key=lambda row: tuple(_sort_key(v) for v in row.key.values()))
    comparison = Comparison(rows, list(group_by), columns, left_out, select)
    if reference:
        attach_reference(comparison, reference, groups)
    return comparison


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# -- reference numbers ----------------------------------------------------------------------


def load_reference(source: str) -> list[dict[str, Any]]:
    """Reference rows from ``papers`` (built in), a TOML file or a CSV file.

    A row maps matching keys (``plugins``, ``dataset``, ``imbalance_factor``, any tag or param,
    or ``group = "plugins=bcl imbalance_factor=100"``) and metric columns (``test/acc``...) to
    values; ``source``/``note`` are carried along. TOML gives rows as ``[[reference]]`` tables,
    or ``metric = "test/acc"`` with a ``[values]`` table of group label -> number.
    """
    if source == "papers":
        return [dict(row) for row in PAPER_NUMBERS]
    path = Path(source)
    if not path.is_file():
        raise DataError(f"reference file {source!r} does not exist (or use --reference papers)")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = [{k.strip(): v.strip() for k, v in row.items() if k and v not in (None, "")}
                    for row in csv.DictReader(fh)]
    else:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"reference file {source!r} is not valid TOML: {exc}") from exc
        rows = [dict(r) for r in data.get("reference", [])]
        if "values" in data:
            metric = data.get("metric", "test/acc")
            rows += [{"group": label, metric: value} for label, value in data["values"].items()]
    out = []
    for row in rows:
        if "group" in row:
            for part in str(row.pop("group")).split():
                key, sep, value = part.partition("=")
                if not sep:
                    raise DataError(f"reference group label part {part!r} is not KEY=VALUE")
                row[key] = value
        out.append(row)
    if not out:
        raise DataError(f"reference file {source!r} holds no rows")
    return out


def _is_metric_key(key: str) -> bool:
    return "/" in key or key in METRICS or key == WALL_CLOCK


def attach_reference(comparison: Comparison, reference: list[dict], groups: dict) -> None:
    """Give each row the reference numbers of the first reference row that matches it.

    A reference row matches when each of its keys equals the group's value: a group-by key's
    value, or a value every run of the group shares (so ``--group-by plugins`` on runs of one
    dataset still matches rows that name the dataset).
    """
    splits = [c.split("/")[0] for c in comparison.columns if "/" in c]
    by_label = {tuple(row.key.values()): row for row in comparison.rows}
    for key, members in groups.items():
        row = by_label[key]
        for ref in reference:
            keys = [k for k in ref if not _is_metric_key(k) and k not in ("source", "note")]
            if not keys:
                continue
            if all(_group_value(row, members, k) == _normal(k, ref[k]) for k in keys):
                for k, v in ref.items():
                    if not _is_metric_key(k):
                        continue
                    column = k if "/" in k else f"{splits[0] if splits else 'test'}/{k}"
                    try:
                        row.reference.setdefault(column, float(v))
                    except (TypeError, ValueError):
                        raise DataError(f"reference value {v!r} of {k} is not a number")
                if "source" in ref and not row.reference_source:
                    row.reference_source = str(ref["source"])


def _group_value(row: GroupRow, members: Sequence, key: str):
    if key in row.key:
        return _normal(key, row.key[key])
    values = {_normal(key, run_value(r, key)) for r in members}
    return values.pop() if len(values) == 1 else None


# -- rendering ------------------------------------------------------------------------------


def _fmt_stat(stat: Stat | None, column: str) -> str:
    if stat is None:
        return "-"
    digits = 0 if column == WALL_CLOCK else 2
    text = f"{stat.mean:.{digits}f}"
    if stat.std is not None:
        text += f" ± {stat.std:.{digits}f}"
    return text


def _header(column: str) -> str:
    return "wall-clock (s)" if column == WALL_CLOCK else column


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human-readable table (mean ± std)."""
    ref_columns = [c for c in comparison.columns if any(c in r.reference for r in comparison.rows)]
    header = [*comparison.group_by, "runs"] + [_header(c) for c in comparison.columns]
    for c in ref_columns:
        header += [f"ref {c}", f"Δ {c}"]
    rows = []
    for row in comparison.rows:
        cells = [v or "-" for v in row.key.values()] + [str(row.n)]
        cells += [_fmt_stat(row.stats.get(c), c) for c in comparison.columns]
        for c in ref_columns:
            ref = row.reference.get(c)
            stat = row.stats.get(c)
            cells.append("-" if ref is None else f"{ref:.2f}")
            cells.append("-" if ref is None or stat is None else f"{stat.mean - ref:+.2f}")
        rows.append(cells)
    return header, rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
           + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    out.append("</tbody></table>")
    return "\n".join(out)


def to_json(comparison: Comparison) -> list[dict[str, Any]]:
    """Rows as dicts: group values, n, run ids, seeds and mean/std/n/values per column."""
    out = []
    for row in comparison.rows:
        item: dict[str, Any] = {"group": row.key, "n": row.n, "run_ids": row.run_ids,
                                "seeds": row.seeds, "metrics": {}}
        for column in comparison.columns:
            stat = row.stats.get(column)
            item["metrics"][column] = None if stat is None else attrs.asdict(stat)
        if row.reference:
            item["reference"] = row.reference
            item["reference_source"] = row.reference_source
            item["difference"] = {c: row.stats[c].mean - v for c, v in row.reference.items()
                                  if row.stats.get(c) is not None}
        out.append(item)
    return out


def render(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison as ``table`` (aligned text), ``markdown``, ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps(to_json(comparison), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        ref_columns = [c for c in comparison.columns
                       if any(c in r.reference for r in comparison.rows)]
        header = [*comparison.group_by, "runs"]
        for c in comparison.columns:
            header += [f"{c} mean", f"{c} std"]
        header += [f"{c} reference" for c in ref_columns]
        writer.writerow(header)
        for row in comparison.rows:
            cells: list[Any] = [*row.key.values(), row.n]
            for c in comparison.columns:
                stat = row.stats.get(c)
                cells += ["" if stat is None else repr(stat.mean),
                          "" if stat is None or stat.std is None else repr(stat.std)]
            cells += [row.reference.get(c, "") for c in ref_columns]
            writer.writerow(cells)
        return buf.getvalue()
    header, rows = table_rows(comparison)
    if fmt == "markdown":
        return markdown_table(header, rows)
    if fmt == "table":
        return _text_table(header, rows)
    raise ConfigError(f"unknown format {fmt!r}; use table, csv, markdown or json")


def comparison_note(comparison: Comparison) -> str:
    """The line under a table: what the numbers are."""
    note = (f"mean ± sample std over each group's runs (seeds); figures are "
            f"{'the last epoch' if comparison.select == 'last' else 'at the best val/acc epoch'} "
            "in percent; wall-clock is the parent run's end - start")
    if comparison.left_out:
        note += f"; {comparison.left_out} runs that did not finish are left out (--status all)"
    sources = sorted({r.reference_source for r in comparison.rows if r.reference_source})
    if sources:
        note += "; reference: " + "; ".join(sources)
    return note


# ==========================================================================================
# reports
# ==========================================================================================


@attrs.define
class RunDetail:
    """What a report shows about one run (None where it could not be computed)."""

    run_id: str
    label: str
    dataset: str
    imbalance_factor: str
    classes: list[str] | None = None
    counts: list[int] | None = None
    per_class: list[float] | None = None
    confusion: Any = None
    features: Any = None
    labels: Any = None
    class_groups: list[str] | None = None
    curves: dict[str, tuple[list[int], list[float]]] = attrs.Factory(dict)
    boundaries: list[int] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)


def run_label(run, group_by: Sequence[str]) -> str:
    """``bcl,rcl IF=100 seed=0``: the group values of the run plus its seed."""
    parts = []
    for key in group_by:
        value = run_value(run, key)
        if key == "imbalance_factor":
            parts.append(f"IF={value}")
        elif key == "plugins":
            parts.append(value)
        elif value:
            parts.append(f"{key.split('.')[-1]}={value}")
    parts.append(f"seed={run_value(run, 'seed')}")
    return " ".join(p for p in parts if p)


def stage_curves(client, run, keys: Sequence[str] = ("val/acc", "train/loss")):
    """Per-epoch histories of the run's stages, end to end: key -> (epochs, values) and the
    epochs where a new stage starts."""
    stages = client.search_runs([run.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
                                order_by=["attributes.start_time ASC"], max_results=50)
    curves: dict[str, tuple[list[int], list[float]]] = {k: ([], []) for k in keys}
    boundaries, offset = [], 0
    for i, stage in enumerate(stages):
        last = -1
        for key in keys:
            history = sorted({m.step: m.value for m in
                              client.get_metric_history(stage.info.run_id, key)}.items())
            for step, value in history:
                curves[key][0].append(offset + step)
                curves[key][1].append(value)
                last = max(last, step)
        if i > 0:
            boundaries.append(offset)
        offset += last + 1
    return {k: v for k, v in curves.items() if v[0]}, boundaries


def model_file(client, run, runs_dir: str | None, scratch: Path) -> Path | None:
    """The run's ``model.pt``: under ``runs_dir`` (or the run's ``output`` param), else the
    ``checkpoints/model.pt`` artifact downloaded to ``scratch``."""
    candidates = []
    if runs_dir:
        candidates.append(Path(runs_dir) / run.info.run_id / "model.pt")
    candidates.append(Path(run.data.params.get("output", "runs")) / run.info.run_id / "model.pt")
    for path in candidates:
        if path.is_file():
            return path
    try:
        target = scratch / run.info.run_id
        target.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run.info.run_id, "checkpoints/model.pt", str(target)))
    except Exception:
        return None


def model_details(path: Path, split: str, plugins=None, device: str = "cpu",
                  data_dir: str | None = None) -> dict[str, Any]:
    """Rebuild the saved run and compute, on ``split``: logits, backbone features, labels,
    per-class accuracy, the confusion matrix, class counts and shot groups."""
    import torch

    from . import engine
    from .evaluate_saved import load_saved_run
    from .metrics import confusion_matrix, per_class_accuracy, shot_groups
    from .plugins import Plugins

    overrides: dict[str, Any] = {"device": device, "views.workers": 0}
    if data_dir:
        overrides["data_dir"] = data_dir
    run, model = load_saved_run(plugins or Plugins(), str(path), overrides)
    splits = run.dataset.eval_splits()
    if split not in splits:
        raise DataError(f"dataset {run.dataset.name!r} has no {split!r} split "
                        f"(it has {', '.join(splits)})")
    logits, features = engine.model_outputs(run, model, splits[split], True)
    counts = run.dataset.class_counts
    tau = run.config.eval.posthoc_la_tau
    if tau:
        logits = logits - tau * torch.log(counts.float() / counts.sum())
    labels = splits[split].labels.cpu()
    predictions = logits.argmax(dim=1)
    num = run.dataset.num_classes
    groups = shot_groups(counts, run.config.eval.many_threshold, run.config.eval.few_threshold)
    group_of = ["" for _ in range(num)]
    for name, idx in groups.items():
        for i in idx.tolist():
            group_of[i] = name
    return {"classes": list(run.dataset.classes), "counts": counts.tolist(),
            "per_class": per_class_accuracy(predictions, labels, num).tolist(),
            "confusion": confusion_matrix(predictions, labels, num).numpy(),
            "features": features.numpy(), "labels": labels.numpy(), "class_groups": group_of}


def per_class_from_artifact(client, run, split: str, scratch: Path) -> tuple | None:
    """(counts, per-class accuracy in [0, 1], classes) from the last stage's CSV artifact."""
    stage = _last_stage_run(client, run)
    if stage is None:
        return None
    try:
        target = scratch / f"{run.info.run_id}-csv"
        target.mkdir(parents=True, exist_ok=True)
        path = client.download_artifacts(stage.info.run_id,
                                         f"evaluation/{split}_per_class_accuracy.csv", str(target))
    except Exception:
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return ([int(r["train_count"]) for r in rows], [float(r["accuracy"]) / 100 for r in rows],
            [r["class"] for r in rows])


def tsne(features, seed: int = 0, normalise: str = "l2", max_points: int = 2000):
    """2-d t-SNE (scikit-learn, single-threaded) of features; returns (points, index of the
    rows kept)."""
    import numpy as np
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64)
    keep = np.arange(len(x))
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x = x[keep]
    if normalise == "l2":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif normalise == "standard":
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # one thread: OpenMP workers busy-wait, and on a shared machine a few thousand points take
    # ten times longer with them than without
    with threadpool_limits(limits=1):
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                      learning_rate="auto").fit_transform(x)
    return points, keep


SCALING = {"l2": "L2-normalised first", "standard": "each dimension standardised first",
           "none": "as they are"}


@attrs.define(kw_only=True)
class ReportOptions:
    """Choices of ``ltrun report`` (the command's options of the same names)."""

    split: str = doc("evaluation split of the model-based plots", default="val")
    format: str = doc("html | markdown page", default="html",
                      validator=attrs.validators.in_(("html", "markdown")))
    tsne: bool = doc("draw a t-SNE of each run's backbone features", default=True)
    tsne_normalise: str = doc("feature scaling before t-SNE: l2 (unit norm), standard (z-score "
                              "per dimension) or none", default="l2",
                              validator=attrs.validators.in_(("l2", "standard", "none")))
    tsne_points: int = doc("at most this many points per t-SNE (random subset, seed 0)",
                           default=2000, validator=attrs.validators.gt(10))
    max_runs: int = doc("runs shown in per-run panels (confusion matrices, t-SNE)", default=12,
                        validator=attrs.validators.gt(0))
    log: bool = doc("log the plots as MLflow artifacts", default=True)
    device: str = doc("device the model outputs are recomputed on", default="cpu")
    runs_dir: str | None = doc("folder holding runs/<id>/model.pt (default: each run's output "
                               "setting)", default=None)
    data_dir: str | None = doc("dataset folder, when it moved since training", default=None)


def build_report(client, runs: Sequence, comparison: Comparison, output: Path,
                 options: ReportOptions, title: str, sweep: str | None = None,
                 echo: Callable[[str], None] = print) -> Path:
    """Write the page, its table and plots under ``output``; log the plots to MLflow.

    Per run: t-SNE of the backbone features (logged to that run under ``report/``). Across
    runs, one figure per dataset and imbalance factor: per-class accuracy vs class size,
    accuracy (and training loss) vs epoch, confusion matrices (logged to the sweep's record).
    """
    import tempfile

    import numpy as np

    from . import plots
    from .plugins import Plugins

    output = Path(output)
    plot_dir = output / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plugins = Plugins()
    details: list[RunDetail] = []
    split = options.split
    with tempfile.TemporaryDirectory(prefix="ltcore-report-") as tmp:
        scratch = Path(tmp)
        for run in runs:
            detail = RunDetail(run.info.run_id, run_label(run, comparison.group_by),
                               run_value(run, "dataset"), run_value(run, "imbalance_factor"))
            try:
                detail.curves, detail.boundaries = stage_curves(client, run)
            except Exception as exc:
                detail.notes.append(f"no curves: {exc}")
            path = model_file(client, run, options.runs_dir, scratch)
            if path is not None:
                try:
                    d = model_details(path, split, plugins, options.device, options.data_dir)
                    for key, value in d.items():
                        setattr(detail, key, value)
                except Exception as exc:
                    detail.notes.append(f"model not evaluated: {type(exc).__name__}: {exc}")
            else:
                detail.notes.append("no model.pt (locally or as an artifact)")
            if detail.per_class is None:
                found = per_class_from_artifact(client, run, split, scratch)
                if found:
                    detail.counts, detail.per_class, detail.classes = found
            if any(d.label == detail.label for d in details):  # one legend entry per run
                detail.label += f" ({run.info.run_id[:8]})"
            details.append(detail)
            echo(f"report: {detail.label} ({run.info.run_id})"
                 + (f" - {'; '.join(detail.notes)}" if detail.notes else ""))

    figures: list[tuple[str, Path, str]] = []  # (section, path, caption)
    per_run_logged: list[tuple[str, Path]] = []
    by_setting: dict[tuple[str, str], list[RunDetail]] = {}
    for d in details:
        by_setting.setdefault((d.dataset, d.imbalance_factor), []).append(d)
    for (dataset, factor), group in by_setting.items():
        tag = _slug(f"{dataset}-if{factor}")
        where = f"{dataset}, imbalance factor {factor}"
        with_acc = [d for d in group if d.per_class is not None and d.counts is not None]
        if with_acc:
            path = plots.per_class_accuracy_png(
                {d.label: d.per_class for d in with_acc}, with_acc[0].counts,
                plot_dir / f"per_class_accuracy_{tag}.png",
                title=f"{split}: per-class accuracy vs class size ({where})")
            figures.append(("Per-class accuracy vs class size", path,
                            f"{where}: accuracy of each class on the {split} split against its "
                            "number of training images (log scale), one colour per run. Head "
                            "classes are on the right; a method that helps the tail lifts the "
                            "left end."))
        with_curves = [d for d in group if d.curves.get("val/acc")]
        if with_curves:
            path = plots.accuracy_curves_png(
                {d.label: d.curves["val/acc"] for d in with_curves},
                plot_dir / f"accuracy_vs_epoch_{tag}.png",
                loss={d.label: d.curves["train/loss"] for d in with_curves
                      if "train/loss" in d.curves},
                boundaries=sorted({b for d in with_curves for b in d.boundaries}),
                title=f"accuracy and training loss per epoch ({where})")
            figures.append(("Accuracy vs epoch", path,
                            f"{where}: validation accuracy (left) and training loss (right) after "
                            "each epoch, all stages end to end (dotted lines: a new stage), one "
                            "colour per run."))
        with_cm = [d for d in group if d.confusion is not None][:options.max_runs]
        if with_cm:
            path = plots.confusion_matrices_png(
                {d.label: d.confusion for d in with_cm}, with_cm[0].classes,
                plot_dir / f"confusion_matrices_{tag}.png",
                title=f"{split}: confusion matrices, row-normalised ({where})")
            figures.append(("Confusion matrices", path,
                            f"{where}: one panel per run; rows are true classes ordered by "
                            "training-set size (head first), columns predictions, each row "
                            "normalised. Mass left of the diagonal in the lower rows means tail "
                            "images predicted as head classes."))
        if options.tsne:
            for d in [d for d in group if d.features is not None][:options.max_runs]:
                try:
                    points, keep = tsne(d.features, normalise=options.tsne_normalise,
                                        max_points=options.tsne_points)
                except ValueError as exc:  # e.g. non-finite features of a diverged model
                    d.notes.append(f"no t-SNE: {exc}")
                    continue
                path = plots.tsne_png(points, np.asarray(d.labels)[keep], d.class_groups,
                                      d.classes, plot_dir / f"tsne_{d.run_id}.png",
                                      title=f"{split}: t-SNE of backbone features - {d.label}")
                figures.append((f"t-SNE of {split} features", path,
                                f"{d.label}: 2-d t-SNE of the backbone features of the {split} "
                                f"images ({SCALING[options.tsne_normalise]}), colour = true class, "
                                "marker = "
                                "shot group of the class (many / medium / few). Tight, separated "
                                "clusters for the few-shot markers mean the tail is well "
                                "represented."))
                per_run_logged.append((d.run_id, path))

    table_header, table_body = table_rows(comparison)
    csv_path = output / "comparison.csv"
    csv_path.write_text(render(comparison, "csv"))
    page = output / ("report.html" if options.format == "html" else "report.md")
    notes = [f"{d.label} ({d.run_id}): {'; '.join(d.notes)}" for d in details if d.notes]
    page.write_text(_page(options.format, title, comparison, table_header, table_body, figures,
                          notes, output))

    if options.log:
        for run_id, path in per_run_logged:
            try:
                client.log_artifact(run_id, str(path), "report")
            except Exception as exc:
                echo(f"warning: could not log {path.name} to run {run_id}: {exc}")
        record = _sweep_record_id(client, runs, sweep) if sweep else None
        if record:
            try:
                for _, path, _ in figures:
                    if path.name.startswith("tsne_"):
                        continue
                    client.log_artifact(record, str(path), "report")
                client.log_artifact(record, str(page), "report")
                client.log_artifact(record, str(csv_path), "report")
            except Exception as exc:
                echo(f"warning: could not log the report to the sweep run {record}: {exc}")
    return page


def _sweep_record_id(client, runs: Sequence, sweep: str) -> str | None:
    if not runs:
        return None
    found = client.search_runs([runs[0].info.experiment_id],
                               f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{KIND_TAG}` = 'sweep'",
                               max_results=1)
    return found[0].info.run_id if found else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _page(fmt: str, title: str, comparison: Comparison, header, body, figures, notes,
          output: Path) -> str:
    note = comparison_note(comparison)
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections: dict[str, list[tuple[Path, str]]] = {}
    for section, path, caption in figures:
        sections.setdefault(section, []).append((path, caption))
    if fmt == "markdown":
        out = [f"# {title}", "", f"{len({r for row in comparison.rows for r in row.run_ids})} "
               f"runs, made {when}.", "", markdown_table(header, body), "", f"*{note}*", ""]
        for section, items in sections.items():
            out += [f"## {section}", ""]
            for path, caption in items:
                out += [f"![{caption}]({path.relative_to(output).as_posix()})", "", caption, ""]
        if notes:
            out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        return "\n".join(out)
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
           "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
           "padding:3px 8px;text-align:right}th{background:#eee}figure{display:inline-block;"
           "margin:1em;max-width:560px;vertical-align:top}img{max-width:100%}"
           "figcaption{font-size:85%;color:#333}</style></head><body>",
           f"<h1>{esc(title)}</h1>",
           f"<p>{len({r for row in comparison.rows for r in row.run_ids})} runs, made {when}.</p>",
           html_table(header, body), f"<p><em>{esc(note)}</em></p>"]
    for section, items in sections.items():
        out.append(f"<h2>{esc(section)}</h2>")
        for path, caption in items:
            out.append(f"<figure><img src='{esc(path.relative_to(output).as_posix())}' "
                       f"alt='{esc(caption)}'><figcaption>{esc(caption)}</figcaption></figure>")
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)
