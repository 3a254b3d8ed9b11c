"""The local launcher: sweep cells as ``ltrun`` subprocesses of ``ltrun sweep``, or one after
another inside it (``--in-process``), each claimed before it trains
(:mod:`~ltcore.experiments.claims`).

A cell process dies with its launcher: on Linux it gets SIGTERM when the launcher ends
(``PR_SET_PDEATHSIG``), so it stops with a checkpoint. It runs in a session of its own, so a
stop signal (SIGTERM, SIGINT, SIGHUP) reaches it once: the launcher passes on the one it gets,
waits for its cells to stop with a checkpoint and records them.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import attrs

from ..tracking import RUN_TAGS_ENV, extra_tags
from .claims import (STOP_GRACE_S, Claim, ClaimBook, Grant, outcome_state, process_start,
                     stopped_by)
from .sweep import Cell, Sweep, _cell_tags, _ltrun_command

PR_SET_PDEATHSIG = 1


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _die_with(parent: int):
    """What a cell process runs before ``ltrun``: SIGTERM when ``parent`` (the launcher) ends."""
    def preexec() -> None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher ended before the call
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec if _PRCTL is not None else None


@attrs.define
class _Running:
    cell: Cell
    claim: Claim
    proc: subprocess.Popen
    started: float
    log: Path
    fh: io.TextIOBase


def cell_args(sweep: Sweep, cell: Cell, grant: Grant) -> list[str]:
    """The ``ltrun`` arguments of a granted cell: its own, or ``--resume RUN`` of the run it
    continues."""
    return sweep.resume_args(grant.resume) if grant.resume else sweep.command_args(cell)


def _start(sweep: Sweep, cell: Cell, grant: Grant, book: ClaimBook, progress,
           threads: int | None) -> _Running:
    claim = grant.claim
    log = Path(claim.log)
    args = cell_args(sweep, cell, grant)
    env = dict(os.environ)
    env[RUN_TAGS_ENV] = json.dumps(_cell_tags(sweep, cell, claim.attempt))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    fh = open(log, "a" if grant.resume else "w")
    fh.write("$ ltrun " + shlex.join(args) + "\n")
    fh.flush()
    proc = subprocess.Popen([*_ltrun_command(), *args], stdout=fh, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, preexec_fn=_die_with(os.getpid()))
    book.save(claim, child_pid=proc.pid, child_started=process_start(proc.pid))
    progress.started(cell, log, grant)
    return _Running(cell, claim, proc, time.time(), log, fh)


def _record(item: _Running, book: ClaimBook, recorder, progress) -> None:
    item.fh.close()
    code = item.proc.returncode
    code = code if code >= 0 else 128 - code  # killed by a signal
    result = recorder.record(item.cell, item.claim.attempt, code, time.time() - item.started,
                             item.log)
    book.finish(item.claim, outcome_state(code), result.run_id)
    progress.finished(result)


def run_processes(sweep: Sweep, queue, max_parallel: int, book: ClaimBook, recorder, progress,
                  poll_s: float, stop) -> None:
    """Train the cells of ``queue`` as subprocesses, ``max_parallel`` at a time, until none is
    left or ``stop`` received a signal: then pass it on to the running cells and record them
    when they have stopped."""
    running: list[_Running] = []
    threads = max(1, (os.cpu_count() or 1) // max_parallel) if max_parallel > 1 else None
    while (queue.pending or running) and not stop.received:
        while len(running) < max_parallel and not stop.received:
            item = queue.next()
            if item is None:
                break
            running.append(_start(sweep, *item, book, progress, threads))
        time.sleep(poll_s)
        book.beat()
        queue.look_again()
        for item in [r for r in running if r.proc.poll() is not None]:
            running.remove(item)
            _record(item, book, recorder, progress)
    if not running:
        return
    stop.finishing = True  # from now on a signal waits for the cells to be recorded
    for item in running:
        with contextlib.suppress(ProcessLookupError):
            item.proc.send_signal(getattr(signal, stop.received))
    deadline = time.monotonic() + STOP_GRACE_S
    for item in running:
        try:
            item.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            item.proc.kill()
            item.proc.wait()
        _record(item, book, recorder, progress)


def _in_process(args: list[str], log_path: Path, append: bool = False) -> int:
    """Run ``ltrun args`` in this process, its output to ``log_path``; the exit code."""
    from ..cli import main

    with (open(log_path, "a" if append else "w") as fh, contextlib.redirect_stdout(fh),
          contextlib.redirect_stderr(fh)):
        fh.write("$ ltrun " + shlex.join(args) + "\n")
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


def run_in_process(sweep: Sweep, queue, book: ClaimBook, recorder, progress, poll_s: float,
                   stop) -> None:
    """Train the cells of ``queue`` one after another in this process; a cell stopped by a
    signal stops the sweep."""
    while queue.pending and not stop.received:
        item = queue.next()
        if item is None:
            time.sleep(poll_s)
            queue.look_again()
            continue
        cell, grant = item
        claim = grant.claim
        progress.started(cell, Path(claim.log), grant)
        t0 = time.time()
        with extra_tags(_cell_tags(sweep, cell, claim.attempt)), book.beating():
            code = _in_process(cell_args(sweep, cell, grant), Path(claim.log),
                               append=bool(grant.resume))
        result = recorder.record(cell, claim.attempt, code, time.time() - t0, Path(claim.log))
        book.finish(claim, outcome_state(code), result.run_id)
        progress.finished(result)
        stop.received = stop.received or stopped_by(code)
