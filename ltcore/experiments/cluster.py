"""Sweep cells as submitit jobs: ``ltrun sweep --launcher submitit-local`` (jobs on this machine)
and ``--launcher slurm`` (one SLURM job array).

The job of a cell runs a :class:`CellJob`: the cell's ``ltrun`` command and environment, exactly
as the local launcher starts them, as a subprocess writing to the cell's log
(``OUTPUT/sweeps/ID/cell-NNN.log``); it returns the exit code. The sweep waits for the jobs and
records every cell as the local launcher does; a job that submitit reports as failed (an
exception, a time-out, a cancellation) is a failed cell carrying submitit's error. submitit's
own files (submission scripts, pickles, job logs) go to ``OUTPUT/sweeps/ID/submitit/``.

Cells are claimed as the local launcher claims them (:mod:`~ltcore.experiments.claims`): the
sweep claims a cell before it submits its job, and the job takes the claim over when it starts
and keeps its heartbeat fresh, so a cell whose job runs, wherever it runs, is not trained again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError
from ..tracking import RUN_TAGS_ENV
from .claims import HEARTBEAT_S, CellQueue, ClaimBook, Grant, outcome_state, process_start
from .local import cell_args
from .sweep import Cell, Sweep, _cell_tags, _ltrun_command

LAUNCHERS = ("local", "submitit-local", "slurm")
CLUSTERS = {"submitit-local": "local", "slurm": "slurm"}
"""submitit's executor of each submitit launcher."""

SLURM_TIME_LIMIT_MIN = 24 * 60
"""The time limit of a cell's SLURM job without ``--time-limit`` (submitit's own is 5 minutes)."""

NO_TIME_LIMIT_MIN = 10 * 365 * 24 * 60
"""``submitit-local`` without ``--time-limit``: no limit to speak of (submitit's is 2 minutes)."""

JOB_FAILED_CODE = 1
"""The exit code recorded for a cell whose job submitit reports as failed."""

STOP_WAIT_S = 60
"""How long a job that is ending waits for its cell to save a checkpoint and stop (SIGTERM)."""

INTERRUPT_WAIT_S = 30
"""How long a stopped sweep waits for its cancelled jobs before recording them."""

SLURM_POLL_S = 2.0
"""The shortest interval between two looks at the jobs of a SLURM sweep (a shared file system)."""


def import_submitit():
    """The submitit module, or a :class:`ConfigError` saying how to install it."""
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError("--launcher submitit-local and --launcher slurm need submitit: "
                          "pip install ltcore[slurm]") from exc
    return submitit


@attrs.define
class Launcher:
    """How ``ltrun sweep`` starts its cells: ``local`` subprocesses (today's launcher; none of
    the options below apply), or submitit jobs on this machine or a SLURM cluster."""

    name: str = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_cell: int = 0
    cpus_per_cell: int | None = None
    time_limit: int | None = None
    """Minutes; default :data:`SLURM_TIME_LIMIT_MIN` on SLURM, none with submitit-local."""
    array_parallelism: int | None = None
    """Jobs running at once; default ``--max-parallel``."""

    @property
    def submitit(self) -> bool:
        return self.name != "local"

    def given_options(self, slurm_only: bool = False) -> list[str]:
        """The launcher options set (only the SLURM ones: ``slurm_only``), as flags."""
        values = {"--slurm-partition": self.partition, "--slurm-account": self.account,
                  "--slurm-qos": self.qos}
        if not slurm_only:
            values.update({"--gpus-per-cell": self.gpus_per_cell or None,
                           "--cpus-per-cell": self.cpus_per_cell,
                           "--time-limit": self.time_limit,
                           "--array-parallelism": self.array_parallelism})
        return [flag for flag, value in values.items() if value is not None]

    def check(self, in_process: bool = False, devices: bool = False, nproc: int = 1) -> None:
        """Raise :class:`ConfigError` for options that do not go together (``devices``: the
        cells are handed ``--device``s; ``nproc``: ranks per cell)."""
        if in_process and nproc > 1:
            raise ConfigError("--nproc-per-cell cannot be combined with --in-process: the ranks "
                              "of a cell are processes of their own")
        if self.name not in LAUNCHERS:
            raise ConfigError(f"unknown launcher {self.name!r}: one of {', '.join(LAUNCHERS)}")
        if not self.submitit:
            if self.given_options():
                raise ConfigError(f"{', '.join(self.given_options())} only apply to --launcher "
                                  "submitit-local or --launcher slurm")
            return
        if in_process:
            raise ConfigError(f"--in-process cannot be combined with --launcher {self.name}: "
                              "every cell runs in a job of its own")
        if devices:
            raise ConfigError(f"--devices does not apply to --launcher {self.name}: a cell uses "
                              "the GPUs of its job (--gpus-per-cell N)")

    def parallelism(self, max_parallel: int) -> int:
        return self.array_parallelism or max_parallel

    def describe(self, max_parallel: int) -> str:
        where = ("as one SLURM job array" if self.name == "slurm"
                 else "as submitit jobs on this machine")
        return f"{where}, up to {self.parallelism(max_parallel)} at a time"


@attrs.frozen
class CellJob:
    """What the job of one cell runs: ``command + args`` as a subprocess in ``cwd``, with ``env``
    on top of the job's environment (and ``env_defaults`` where the job has none), its output
    to ``log``. Returns the exit code. Picklable: submitit sends it to the job.

    With ``claim`` (the cell's claim file, made by the launcher), the job takes the claim over
    before the cell starts and refreshes its heartbeat while the cell runs, so the claim stays
    live while the job runs, wherever it runs; a job whose cell was claimed again since it was
    submitted does not train it."""

    command: list[str]
    args: list[str]
    """The ``ltrun`` arguments, as the local launcher passes them."""
    log: str
    cwd: str
    env: dict[str, str] = attrs.Factory(dict)
    env_defaults: dict[str, str] = attrs.Factory(dict)
    claim: str = ""
    append: bool = False
    """Write after the log there is (a cell that continues its run)."""

    def __call__(self) -> int:
        env = {**self.env_defaults, **os.environ, **self.env}
        book = ClaimBook(Path(self.claim).parent) if self.claim else None
        claim = book.hand_over(Path(self.claim)) if book else None
        if book and claim is None:
            print(f"{self.claim}: the cell was claimed again since this job was submitted; "
                  "this job does not train it", file=sys.stderr)
            return JOB_FAILED_CODE
        with open(self.log, "a" if self.append else "w") as fh:
            fh.write("$ ltrun " + shlex.join(self.args) + "\n")
            fh.flush()
            # a session of its own: the cell sees one stop signal (its job's), not the terminal's
            proc = subprocess.Popen([*self.command, *self.args], stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                    start_new_session=True)
            if claim:
                book.save(claim, child_pid=proc.pid, child_started=process_start(proc.pid))
            try:
                code = _wait(proc, book)
            except BaseException:  # submitit's time-out signal, a cancellation, a requeue
                _stop(proc)
                if claim:
                    book.finish(claim, "FINISHED" if proc.returncode == 0 else "KILLED")
                raise
        code = code if code >= 0 else 128 - code  # killed by a signal
        if claim:
            book.finish(claim, outcome_state(code))
        return code


def _wait(proc: subprocess.Popen, book: ClaimBook | None) -> int:
    """The exit code of ``proc``, refreshing the claims' heartbeat while it runs."""
    while True:
        try:
            return proc.wait(timeout=HEARTBEAT_S)
        except subprocess.TimeoutExpired:
            if book:
                book.beat(0)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM: the run saves a checkpoint of its epoch and stops; killed if it does not."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
    except BaseException:  # interrupted again: the cell stops at its next step on its own
        pass


def cell_job(sweep: Sweep, cell: Cell, grant: Grant, book: ClaimBook,
             threads: int | None = None, gpus: str | None = None) -> CellJob:
    """The job of a granted ``cell``: the command and variables of the local launcher, plus
    the GPUs (``CUDA_VISIBLE_DEVICES``) a ``submitit-local`` cell is given."""
    claim = grant.claim
    env = {RUN_TAGS_ENV: json.dumps(_cell_tags(sweep, cell, claim.attempt))}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    defaults = {"PYTHONUNBUFFERED": "1"}
    if threads:
        defaults["OMP_NUM_THREADS"] = str(threads)
    path = book.path(claim.index, claim.generation).resolve()
    return CellJob(_ltrun_command(), cell_args(sweep, cell, grant),
                   str(sweep.log_path(cell).resolve()), os.getcwd(), env, defaults, str(path),
                   bool(grant.resume))


def make_executor(sweep: Sweep, launcher: Launcher, parallelism: int):
    """The ``submitit.AutoExecutor`` of the sweep's jobs, in ``OUTPUT/sweeps/ID/submitit``."""
    submitit = import_submitit()
    folder = sweep.folder().resolve() / "submitit"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=CLUSTERS[launcher.name])
    except RuntimeError as exc:  # no srun on PATH
        raise ConfigError(f"--launcher {launcher.name}: {exc} Start ltrun sweep on a machine of "
                          "the cluster, or use --launcher submitit-local") from exc
    slurm = launcher.name == "slurm"
    limit = launcher.time_limit or (SLURM_TIME_LIMIT_MIN if slurm else NO_TIME_LIMIT_MIN)
    params: dict[str, Any] = {"name": f"ltcore-{sweep.id}", "nodes": 1, "tasks_per_node": 1,
                              "timeout_min": limit, "cpus_per_task": launcher.cpus_per_cell}
    if slurm:  # submitit-local hands out GPUs itself (cell_job), not through submitit
        params.update(gpus_per_node=launcher.gpus_per_cell or None,
                      slurm_partition=launcher.partition, slurm_account=launcher.account,
                      slurm_qos=launcher.qos, slurm_array_parallelism=parallelism)
    executor.update_parameters(**params)  # None is "not set"
    return executor


def gpu_blocks(per_cell: int) -> list[str]:
    """This machine's visible GPUs in blocks of ``per_cell``, as ``CUDA_VISIBLE_DEVICES``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    else:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    blocks = [",".join(ids[i:i + per_cell]) for i in range(0, len(ids) - per_cell + 1, per_cell)]
    if not blocks:
        raise ConfigError(f"--gpus-per-cell {per_cell}: this machine has {len(ids)} visible "
                          "GPU(s)")
    return blocks


def job_outcome(job) -> tuple[int, str]:
    """The cell's exit code, and submitit's error when the job failed ('' when it did not)."""
    try:
        error = job.exception()
        if error is None:
            return int(job.result()), ""
    except Exception as exc:  # the result could not be read
        error = exc
    return JOB_FAILED_CODE, job_error(job, error)


def job_error(job, error: BaseException) -> str:
    """One line: ``submitit job 12_3 ended TIMEOUT without a result (submitit log: ...)``."""
    text = str(error)
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    parts = text.split("-" * 22)  # submitit frames a job's traceback with dashes
    if state:
        what = f"ended {state.group(1)} without a result"
    else:
        lines = [line.strip() for line in (parts[1] if len(parts) >= 3 else text).splitlines()
                 if line.strip()]
        what = f"failed: {lines[-1] if len(parts) >= 3 else lines[0]}" if lines else "failed"
    return f"submitit job {job.job_id} {what} (submitit log: {job.paths.stderr})"


@attrs.define
class _Submitted:
    cell: Cell
    grant: Grant
    job: Any
    submitted: float
    gpus: str | None = None
    started: float | None = None


def _done(job) -> bool:
    try:
        return job.done()
    except Exception:  # the cluster could not be asked: look again later
        return False


def _handed_over(book: ClaimBook, item: _Submitted) -> bool:
    """Whether the job took the cell's claim over (its cell started)."""
    current = book.current(item.cell.index)
    return current is not None and current.generation > item.grant.claim.generation


def run_jobs(sweep: Sweep, queue: CellQueue, launcher: Launcher, max_parallel: int,
             book: ClaimBook, recorder, progress, poll_s: float, stop) -> None:
    """Submit the cells of ``queue`` (SLURM: those claimed at the start as one job array, the
    ones adopted later as jobs of their own; submitit-local: as many jobs at a time as the
    parallelism allows) and record each cell when its job ends. When ``stop`` receives a
    signal the jobs are cancelled: started cells stop with a checkpoint."""
    if not queue.pending:
        return
    parallel = launcher.parallelism(max_parallel)
    executor = make_executor(sweep, launcher, parallel)
    local = launcher.name == "submitit-local"
    blocks = gpu_blocks(launcher.gpus_per_cell) if local and launcher.gpus_per_cell else []
    if blocks:
        parallel = min(parallel, len(blocks))
    if local and launcher.given_options(slurm_only=True):
        progress.echo(f"submitit-local ignores "
                      f"{', '.join(launcher.given_options(slurm_only=True))}")
    if launcher.cpus_per_cell:
        threads = max(1, launcher.cpus_per_cell // sweep.nproc)
    elif local and parallel > 1:
        threads = max(1, (os.cpu_count() or 1) // (parallel * sweep.nproc))
    else:
        threads = None

    def job_of(cell: Cell, grant: Grant, gpus: str | None = None) -> CellJob:
        if not grant.resume:  # a log of an earlier call would read as this job's
            sweep.log_path(cell).unlink(missing_ok=True)
        return cell_job(sweep, cell, grant, book, threads, gpus)

    active: list[_Submitted] = []
    if not local:
        granted = list(iter(queue.next, None))
        if granted:
            jobs = executor.submit_array([job_of(c, g) for c, g in granted])
            now = time.time()
            active = [_Submitted(c, g, job, now) for (c, g), job in zip(granted, jobs)]
            progress.echo(f"submitted job {jobs[0].job_id.split('_')[0]} ({len(jobs)} cells); "
                          f"submitit files in {executor.folder}")
    free = list(blocks)
    poll = poll_s if local else max(poll_s, SLURM_POLL_S)
    while (queue.pending or active) and not stop.received:
        while not local or len(active) < parallel:
            item = queue.next()
            if item is None:
                break
            gpus = free.pop(0) if blocks else None
            active.append(_Submitted(*item, executor.submit(job_of(*item, gpus)), time.time(),
                                     gpus))
        time.sleep(poll)
        book.beat()
        queue.look_again()
        for item in list(active):
            if item.started is None and _handed_over(book, item):
                item.started = time.time()
                progress.started(item.cell, sweep.log_path(item.cell), item.grant)
            if not _done(item.job):
                continue
            active.remove(item)
            if item.gpus is not None:
                free.append(item.gpus)
            code, error = job_outcome(item.job)
            _record(sweep, item, code, error, book, recorder, progress)
    if not active:
        return
    stop.finishing = True  # from now on a signal waits for the cells to be recorded
    for item in active:
        with contextlib.suppress(Exception):
            item.job.cancel(check=False)
    deadline = time.time() + INTERRUPT_WAIT_S
    for item in active:
        while not _done(item.job) and time.time() < deadline:
            time.sleep(0.5)
        if item.started is not None or _handed_over(book, item):
            code = 128 + int(getattr(signal, stop.received))
            _record(sweep, item, code, "", book, recorder, progress)
        else:  # never started: NOT_RUN, and its claim is free for the next call
            book.finish(item.grant.claim, "NOT_RUN")


def _record(sweep: Sweep, item: _Submitted, code: int, error: str, book: ClaimBook, recorder,
            progress) -> None:
    seconds = time.time() - (item.started or item.submitted)
    result = recorder.record(item.cell, item.grant.claim.attempt, code, seconds,
                             sweep.log_path(item.cell), error)
    book.finish(item.grant.claim, outcome_state(code), result.run_id)
    progress.finished(result)
