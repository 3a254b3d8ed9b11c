"""Sweeps: every combination of plugin sets, seeds, imbalance factors and ``--grid`` values.

:func:`plan_sweep` expands the axes into :class:`Cell` s and :func:`run_sweep` trains each as
one ``ltrun`` call (a subprocess or in this process: :mod:`~ltcore.experiments.local`, or a
submitit job on this machine or a SLURM cluster: :mod:`~ltcore.experiments.cluster`), claimed
first so that it trains once (:mod:`~ltcore.experiments.claims`), tagged ``ltcore.sweep`` so that
:func:`~ltcore.experiments.compare.collect_runs` finds them again. A cell that fails is recorded
as a FAILED MLflow run (with its error and log) and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import itertools
import json
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import attrs

from ..errors import ConfigError, LtcoreError, RunStopped
from ..files import inside, write_csv
from ..tracking import connect, experiment_id, resolve_uri
from .compare import literal, search_all, text_table
from .tags import ATTEMPT_TAG, AXES_TAG, CELL_TAG, ERROR_TAG, INDEX_TAG, KIND_TAG, SWEEP_TAG


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
    """One point of a sweep: a plugin set, a seed, an imbalance factor, grid values and the
    presets of its runs."""

    index: int
    plugins: tuple[str, ...]
    seed: int | None = None
    imbalance_factor: float | None = None
    grid: dict[str, str] = attrs.Factory(dict)
    device: str | None = None
    presets: tuple[str, ...] = ()

    def axes(self) -> dict[str, str]:
        """The cell's coordinates, as the strings its tags carry."""
        out = {"plugins": "+".join(self.plugins)}
        if self.presets:
            out["presets"] = "+".join(self.presets)
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
        args += [a for name in self.presets for a in ("--preset", name)]
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


STATUSES = ("FINISHED", "SKIPPED", "FAILED", "NOT_RUN")
"""What can become of a cell, in the order a summary counts them."""


@attrs.define
class CellResult:
    """What became of one cell."""

    cell: Cell
    status: str  # one of STATUSES
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
    nproc: int = 1
    """Ranks per cell: above 1, a cell is ``ltrun --nproc N ...`` (torchrun inside the cell)."""
    tags: dict[str, str] = attrs.Factory(dict)
    """Further tags of the sweep's own MLflow run (``ltrun reproduce``: the table's id)."""

    @property
    def uri(self) -> str:
        return resolve_uri(self.tracking_uri or None)

    def folder(self) -> Path:
        """``OUTPUT/sweeps/ID``: the cells' logs, claims and the summary, never outside
        ``output``."""
        return inside(Path(self.output) / "sweeps" / self.id, self.output)

    def log_path(self, cell: Cell) -> Path:
        return self.folder() / f"cell-{cell.index:03d}.log"

    def tracking_args(self) -> list[str]:
        args = ["--experiment", self.experiment, "--output", self.output]
        if self.tracking_uri:
            args += ["--tracking-uri", self.tracking_uri]
        return args

    def cell_args(self, cell: Cell) -> list[str]:
        return cell.args([*self.common, *self.tracking_args()])

    def command_args(self, cell: Cell) -> list[str]:
        """The ``ltrun`` arguments a cell is started with: ``--nproc N`` then its arguments."""
        ranks = ["--nproc", str(self.nproc)] if self.nproc > 1 else []
        return [*ranks, *self.cell_args(cell)]

    def resume_args(self, run_id: str) -> list[str]:
        """The ``ltrun`` arguments that continue a cell's run from its checkpoint (the run
        records where it tracks)."""
        ranks = ["--nproc", str(self.nproc)] if self.nproc > 1 else []
        return [*ranks, "--resume", run_id, "--output", self.output, "--no-progress"]


def new_sweep_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def validate_cells(sweep: Sweep, plugins=None) -> None:
    """Resolve every cell's configuration as ``ltrun`` would, before anything trains.

    Raises :class:`ConfigError` naming the first cell whose options are invalid.
    """
    from ..cli import RUN_OPTIONS, cli
    from ..config import resolve
    from ..plugins import Plugins

    plugins = plugins or Plugins()
    for cell in sweep.cells:
        args = sweep.cell_args(cell)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ctx = cli.make_context("ltrun", list(args), resilient_parsing=False)
        except Exception as exc:  # click usage errors
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
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
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("$ ltrun ")]
    for line in reversed(lines):
        if line.startswith("Error:"):
            return line[len("Error:"):].strip()
    return lines[-1] if lines else "no output"


def _cell_tags(sweep: Sweep, cell: Cell, attempt: str) -> dict[str, str]:
    return {SWEEP_TAG: sweep.id, CELL_TAG: cell.key, INDEX_TAG: str(cell.index),
            ATTEMPT_TAG: attempt, AXES_TAG: json.dumps(cell.axes())}


def _find_attempt(client, exp_id: str, attempt: str):
    found = client.search_runs([exp_id], f"tags.`{ATTEMPT_TAG}` = {literal(attempt)}",
                               max_results=10)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    return parents[0] if parents else None


class _CellRecorder:
    """Records a finished cell process in MLflow: finds its run, or makes one for a failure."""

    def __init__(self, sweep: Sweep, client, exp_id: str):
        self.sweep, self.client, self.exp_id = sweep, client, exp_id

    def record(self, cell: Cell, attempt: str, code: int, seconds: float, log_path: Path,
               error: str = "") -> CellResult:
        """``error``: why the cell failed when its log does not say (a job the cluster ended)."""
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        try:
            run = _find_attempt(self.client, self.exp_id, attempt)
        except Exception:  # the store went away: keep the local outcome
            ok = code == 0 and not error
            return CellResult(cell, "FINISHED" if ok else "FAILED", None, code, seconds,
                              error="" if ok else error or _error_line(text), log=str(log_path))
        if code == 0 and run is not None and not error:
            self._log_axes(run.info.run_id, cell)
            return CellResult(cell, "FINISHED", run.info.run_id, code, seconds,
                              dict(run.data.metrics), log=str(log_path))
        error = error or (_error_line(text) if code != 0 else
                          "the run finished but was not recorded")
        try:
            if run is None:
                run_id = self._failed_run(cell, attempt, error, code)
            else:
                run_id = run.info.run_id
                self.client.set_tag(run_id, ERROR_TAG, error[:5000])
                self.client.set_tag(run_id, "ltcore.exit_code", str(code))
                if run.info.status == "RUNNING":  # the process died without closing its run
                    self.client.set_terminated(run_id, "FAILED")
            if log_path.exists():  # a job that never started has no log
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
        run = self.client.create_run(self.exp_id, tags=tags)
        # named as ltrun names its runs, from what the cell knows (its dataset may be unknown)
        name = "+".join(cell.plugins) + ("" if cell.seed is None else f"-s{cell.seed}")
        self.client.set_tag(run.info.run_id, "mlflow.runName", f"{name}-{run.info.run_id[:8]}")
        from mlflow.entities import Param

        args = self.sweep.command_args(cell)
        self.client.log_batch(run.info.run_id, params=[
            Param("ltrun.args", shlex.join(args)[:6000]),
            *(Param(k, v) for k, v in cell.grid.items())])
        self.client.set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id


def _sweep_record(client, exp_id: str, sweep: Sweep) -> str:
    """The sweep's own MLflow run (tag ltcore.kind = sweep), found again when reused; of two
    made at once by two launchers, both keep the first."""
    from mlflow.entities import Param

    query = f"tags.`{SWEEP_TAG}` = {literal(sweep.id)} and tags.`{KIND_TAG}` = 'sweep'"
    first = ["attributes.start_time ASC", "attributes.run_id ASC"]
    found = client.search_runs([exp_id], query, max_results=1, order_by=first)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(exp_id, run_name=f"sweep {sweep.id}",
                            tags={**sweep.tags, SWEEP_TAG: sweep.id, KIND_TAG: "sweep",
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
    kept = client.search_runs([exp_id], query, max_results=1, order_by=first)[0].info.run_id
    if kept != run.info.run_id:
        client.delete_run(run.info.run_id)
    return kept


def _done_cells(client, exp_id: str, sweep_id: str) -> dict[str, str]:
    """Cell key -> run id of the cells of ``sweep_id`` that already finished."""
    done = {}
    for run in search_all(client, [exp_id], f"tags.`{SWEEP_TAG}` = {literal(sweep_id)} and "
                           "attributes.status = 'FINISHED'"):
        key = run.data.tags.get(CELL_TAG)
        if key and "mlflow.parentRunId" not in run.data.tags:
            done[key] = run.info.run_id
    return done


class _Progress:
    """The lines a sweep prints as its cells start, wait for another launcher and end, and
    the results so far."""

    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.echo = total, echo
        self.results: dict[int, CellResult] = {}

    def _say(self, cell: Cell, what: str, text: str) -> None:
        self.echo(f"[{cell.index + 1}/{self.total}] {what:6} {cell.key}{text}")

    def started(self, cell: Cell, log_path: Path, grant) -> None:
        if grant.resume:
            self._say(cell, "resume", f": run {grant.resume} of the launcher ({grant.adopted}) "
                      f"that is gone, from its checkpoint  (log: {log_path})")
        else:
            gone = f"; the launcher ({grant.adopted}) that had it is gone" if grant.adopted else ""
            self._say(cell, "start", f"  (log: {log_path}){gone}")

    def held(self, cell: Cell, holder) -> None:
        self._say(cell, "held", f": trained by another launcher ({holder.by()}); waiting for it")

    def finished(self, result: CellResult) -> None:
        shown = "  ".join(f"{k} {result.metrics[k]:.2f}" for k in ("val/acc", "test/acc")
                          if k in result.metrics)
        if result.status == "FINISHED":
            text = f": run {result.run_id} in {result.seconds:.0f} s  {shown}"
            self._say(result.cell, "done", text)
        elif result.status == "SKIPPED":
            self._say(result.cell, "done", f": {result.error}: run {result.run_id}  {shown}")
        else:
            code = "" if result.exit_code is None else f" (exit {result.exit_code})"
            self._say(result.cell, result.status, f"{code} after {result.seconds:.0f} s: "
                      f"{result.error}")
        self.results[result.cell.index] = result


def run_sweep(sweep: Sweep, max_parallel: int = 1, in_process: bool = False,
              echo: Callable[[str], None] = print, poll_s: float = 0.5,
              launcher=None) -> list[CellResult]:
    """Train every cell (``max_parallel`` subprocesses at a time, sequentially in this process,
    or as submitit jobs: ``launcher``, a :class:`~ltcore.experiments.cluster.Launcher`) and
    record each in MLflow; a failed cell does not stop the others.

    Each cell is claimed before it trains (:mod:`~ltcore.experiments.claims`): cells FINISHED
    in a sweep of the same id are skipped, a cell another live launcher holds is waited for,
    and one a dead launcher left is adopted, so re-running a sweep command with ``--sweep-id``
    completes what failed or was interrupted and trains each cell once. SIGTERM, SIGINT or
    SIGHUP stop the running cells with a checkpoint and raise
    :class:`~ltcore.errors.RunStopped` once they are recorded.
    """
    from ..engine.interrupts import StopSignals
    from .claims import CLAIMS, CellQueue, ClaimBook, stopped_by
    from .cluster import Launcher, import_submitit, run_jobs
    from .local import run_in_process, run_processes

    launcher = launcher or Launcher()
    launcher.check(in_process, any(c.device for c in sweep.cells), sweep.nproc)
    literal(sweep.id, "sweep id ")  # refused before anything is written
    submitted = launcher.submitit
    if submitted:
        import_submitit()
    client = connect(sweep.tracking_uri or None)
    exp_id = experiment_id(client, sweep.experiment)
    folder = sweep.folder()
    folder.mkdir(parents=True, exist_ok=True)
    record_id = _sweep_record(client, exp_id, sweep)
    recorder = _CellRecorder(sweep, client, exp_id)
    done = _done_cells(client, exp_id, sweep.id)
    progress = _Progress(len(sweep.cells), echo)
    todo = []
    for cell in sweep.cells:
        if cell.key in done:
            progress.results[cell.index] = CellResult(cell, "SKIPPED", done[cell.key],
                                                      error="finished in an earlier call")
        else:
            todo.append(cell)
    how = ("in this process" if in_process else launcher.describe(max_parallel) if submitted
           else f"up to {max_parallel} at a time")
    echo(f"sweep {sweep.id}: {len(sweep.cells)} cells ({len(todo)} to run, "
         f"{len(sweep.cells) - len(todo)} already finished), {how}; logs in {folder}")
    book = ClaimBook(folder / CLAIMS, sweep, client, exp_id, echo)
    queue = CellQueue(sweep, todo, book, progress)
    with StopSignals() as stop:
        if in_process:
            run_in_process(sweep, queue, book, recorder, progress, poll_s, stop)
        elif submitted:
            run_jobs(sweep, queue, launcher, max(1, max_parallel), book, recorder, progress,
                     poll_s, stop)
        else:
            run_processes(sweep, queue, max(1, max_parallel), book, recorder, progress, poll_s,
                          stop)
    for cell in sweep.cells:
        why = ("held by another launcher" if cell in queue.held else
               f"the sweep was stopped by {stop.received}" if stop.received else "not started")
        progress.results.setdefault(cell.index, CellResult(cell, "NOT_RUN", error=why))
    ordered = [progress.results[c.index] for c in sweep.cells]
    _close_record(client, record_id, ordered, folder)
    if stop.received:
        echo("")
        echo(format_sweep_summary(sweep, ordered))
        stopped = sum(r.exit_code is not None and stopped_by(r.exit_code) is not None
                      for r in ordered)
        raise RunStopped(f"sweep {sweep.id} stopped by {stop.received} ({stopped} cell(s) "
                         "stopped); continue it with the same ltrun sweep "
                         f"command and --sweep-id {shlex.quote(sweep.id)}", stop.received,
                         "the sweep")
    return ordered


def _close_record(client, record_id: str | None, results: list[CellResult], folder: Path) -> None:
    from mlflow.entities import Metric

    path = write_csv(folder / "summary.csv",
                     ["index", "cell", "status", "run_id", "exit_code", "seconds", "val/acc",
                      "test/acc", "error"],
                     [[r.cell.index, r.cell.key, r.status, r.run_id or "",
                       "" if r.exit_code is None else r.exit_code, f"{r.seconds:.1f}",
                       r.metrics.get("val/acc", ""), r.metrics.get("test/acc", ""), r.error]
                      for r in results])
    if record_id is None:
        return
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    now = int(time.time() * 1000)
    try:
        client.log_batch(record_id, metrics=[Metric(f"cells/{k.lower()}", v, now, 0)
                                             for k, v in counts.items()])
        client.log_artifact(record_id, str(path))
        ok = counts["FAILED"] == 0 and counts["NOT_RUN"] == 0
        client.set_terminated(record_id, "FINISHED" if ok else "FAILED")
    except Exception:
        pass


SHOWN_SPLITS = ("val", "test")
"""The splits whose figures a sweep's summary shows."""


def format_sweep_summary(sweep: Sweep, results: list[CellResult], plugins=None) -> str:
    """The table printed at the end of a sweep: each cell's status, run and the headline
    figures (:attr:`ltcore.Task.headline`) of the tasks its runs recorded."""
    from ..plugins import Plugins
    from ..tasks import Task

    tasks = (plugins or Plugins()).components["task"].values()
    headlines = [h for h in dict.fromkeys(t.obj.headline for t in tasks)
                 if any(f"{split}/{h}" in r.metrics for r in results for split in SHOWN_SPLITS)]
    shown = [f"{split}/{h}" for h in headlines or [Task.headline] for split in SHOWN_SPLITS]
    header = ["#", "cell", "status", "run", *shown, "time (s)", "error"]
    rows = [[str(r.cell.index), r.cell.key, r.status, r.run_id or "-",
             *(f"{r.metrics[k]:.2f}" if k in r.metrics else "-" for k in shown),
             f"{r.seconds:.0f}" if r.seconds else "-", r.error[:80]] for r in results]
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    lines = [text_table(header, rows), "",
             f"sweep {sweep.id}: " + ", ".join(f"{n} {s.lower().replace('_', ' ')}"
                                               for s, n in counts.items() if n)]
    where = f" --experiment {shlex.quote(sweep.experiment)}"
    if sweep.tracking_uri:
        where += f" --tracking-uri {shlex.quote(sweep.tracking_uri)}"
    lines.append(f"compare: ltrun compare --sweep {shlex.quote(sweep.id)}{where}")
    lines.append(f"report:  ltrun report --sweep {shlex.quote(sweep.id)}{where}")
    return "\n".join(lines)
