"""Sweep cells trained exactly once: a launcher claims a cell before it trains it.

A claim is the file ``OUTPUT/sweeps/ID/claims/cell-NNN.G.json``, made with an atomic hard link
so that exactly one launcher makes generation ``G`` of a cell's claim; the highest generation is
the cell's current claim. It names its owner (host, pid and process start time: the launcher,
or the submitit job running the cell), the launcher that started the attempt, the cell's
process, the attempt id, the MLflow run once the cell's log names it, a heartbeat the owner
refreshes while the cell runs, and the state (``RUNNING``, then the cell's outcome).

A claim is live while it is ``RUNNING`` and its owner runs: on this host, the owner process
(same pid and start time) is alive; from another host, its heartbeat is younger than
:data:`STALE_S`. :meth:`ClaimBook.claim` says what a launcher does with a cell: wait for the
launcher that holds a live claim, or take the claim over (the next generation) and adopt the
cell: the cell process a dead launcher left is stopped, and its run continues from its
checkpoint (``ltrun --resume``), or the cell trains anew with the dead attempt's run closed
FAILED. A cell that FINISHED is never trained again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import attrs

from ..errors import LtcoreError
from ..files import write_text
from .sweep import Cell, CellResult, Sweep, _done_cells, _find_attempt
from .tags import ERROR_TAG

CLAIMS = "claims"
"""The folder of the claims, in the sweep's folder."""

HEARTBEAT_S = 10.0
"""How often the owner of a running cell's claim refreshes its heartbeat."""

STALE_S = 120.0
"""A claim of another host whose heartbeat is older than this is dead."""

STOP_GRACE_S = 60.0
"""How long a cell process told to stop (SIGTERM: by its launcher, or by the launcher adopting
the cell of a dead one) has to save a checkpoint and stop before it is killed."""

RUNNING = "RUNNING"
ENDED = ("FINISHED", "FAILED")
"""Claim states of a cell its launcher trained to the end."""
INTERRUPTED = (RUNNING, "KILLED")
"""Claim states of a cell stopped part-way: its run continues from its checkpoint."""

HOST = socket.gethostname()

_RUN_LINE = re.compile(r"^run ([0-9a-f]{32}) ", re.M)


def process_start(pid: int | None) -> str | None:
    """When process ``pid`` started (``/proc``, else ``ps``), to tell it from a later process
    with the same pid; None when it does not run (a zombie neither) or cannot be told."""
    if not pid or pid < 0:
        return None
    if Path("/proc/self/stat").exists():
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text[text.rindex(")") + 2:].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


@attrs.define
class Claim:
    """Who trains a sweep cell: the owner process, the cell's process, the attempt and its run."""

    index: int
    cell: str
    attempt: str
    generation: int
    host: str
    pid: int
    started: str | None
    heartbeat: float
    launcher: str
    """``pid N on HOST``: the launcher that started the attempt."""
    log: str = ""
    state: str = RUNNING
    child_pid: int | None = None
    child_started: str | None = None
    run_id: str | None = None
    job_of: int | None = None
    """Taken over by the job submitted with generation ``job_of`` of the claim."""

    def live(self) -> bool:
        if self.state != RUNNING:
            return False
        if self.host == HOST and self.started is not None:
            return process_start(self.pid) == self.started
        return time.time() - self.heartbeat < STALE_S

    def by(self) -> str:
        """The launcher that started the attempt: ``pid N`` (``pid N on HOST`` elsewhere)."""
        return self.launcher.removesuffix(f" on {HOST}")


def stop_process(pid: int | None, started: str | None, grace_s: float = STOP_GRACE_S) -> bool:
    """SIGTERM process ``pid`` (if it is the one that started at ``started``) so that it stops
    with a checkpoint, SIGKILL after ``grace_s``; whether it was running."""
    if started is None or process_start(pid) != started:
        return False
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while process_start(pid) == started and time.monotonic() < deadline:
            time.sleep(0.2)
        if process_start(pid) != started:
            break
    return True


@attrs.define
class Grant:
    """What a launcher does with a cell: train it under ``claim`` (continuing the run
    ``resume`` from its checkpoint when set), wait for the launcher that holds it
    (``holder``), or record ``result`` (it finished, or the launcher that held it ended it)."""

    claim: Claim | None = None
    resume: str | None = None
    holder: Claim | None = None
    result: CellResult | None = None
    adopted: str = ""
    """The launcher whose dead claim was taken over."""


class ClaimBook:
    """The claims of one sweep's cells (``folder``), and those this process holds; with the
    sweep and its store it decides who trains a cell (:meth:`claim`)."""

    def __init__(self, folder: Path, sweep: Sweep | None = None, client=None,
                 exp_id: str | None = None, echo: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.sweep, self.client, self.exp_id, self.echo = sweep, client, exp_id, echo
        self.mine: dict[int, Claim] = {}
        self._lock = threading.Lock()
        self._beaten = 0.0

    def path(self, index: int, generation: int) -> Path:
        return self.folder / f"cell-{index:03d}.{generation}.json"

    def current(self, index: int) -> Claim | None:
        """The cell's claim of the highest generation (None before any)."""
        generations = []
        for path in self.folder.glob(f"cell-{index:03d}.*.json"):
            with contextlib.suppress(ValueError):
                generations.append(int(path.name.split(".")[1]))
        return self._read(index, max(generations)) if generations else None

    def _read(self, index: int, generation: int) -> Claim:
        path = self.path(index, generation)
        for _ in range(10):  # a claim made without hard links is written after it appears
            try:
                return Claim(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                time.sleep(0.1)
        return Claim(index, "", "", generation, "", 0, None, 0.0, "unknown", state="UNREADABLE")

    def take(self, index: int, key: str, attempt: str, after: Claim | None,
             **fields) -> Claim | None:
        """Make the claim of the generation after ``after`` (the first without); None when
        another process made it first."""
        claim = Claim(index, key, attempt, 0 if after is None else after.generation + 1, HOST,
                      os.getpid(), process_start(os.getpid()), time.time(),
                      **{"launcher": f"pid {os.getpid()} on {HOST}", **fields})
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(index, claim.generation)
        text = json.dumps(attrs.asdict(claim))
        tmp = self.folder / f".{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_text(text)
            os.link(tmp, target)
        except FileExistsError:
            return None
        except OSError:  # a file system without hard links
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return None
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        finally:
            tmp.unlink(missing_ok=True)
        self.mine[index] = claim
        return claim

    def save(self, claim: Claim, **changes) -> None:
        """Write this process's ``claim`` again with ``changes`` and a fresh heartbeat."""
        with self._lock:
            for key, value in changes.items():
                setattr(claim, key, value)
            claim.heartbeat = time.time()
            write_text(self.path(claim.index, claim.generation), json.dumps(attrs.asdict(claim)))

    def finish(self, claim: Claim, state: str, run_id: str | None = None) -> None:
        """The cell of ``claim`` ended: record its outcome, and no longer refresh it."""
        with self._lock:
            self.mine.pop(claim.index, None)
        self.save(claim, state=state, run_id=run_id or claim.run_id)

    def beat(self, every_s: float = HEARTBEAT_S) -> None:
        """Refresh the heartbeat of this process's claims (at most every ``every_s``), with
        each cell's run id once its log names it."""
        if time.monotonic() - self._beaten < every_s:
            return
        self._beaten = time.monotonic()
        for claim in list(self.mine.values()):
            self.save(claim, run_id=claim.run_id or logged_run_id(claim.log))

    @contextlib.contextmanager
    def beating(self) -> Iterator[None]:
        """Refresh the heartbeats from a thread (while this process trains a cell itself)."""
        done = threading.Event()

        def beat_until_done() -> None:
            while not done.wait(HEARTBEAT_S):
                self.beat(0)

        thread = threading.Thread(target=beat_until_done, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def hand_over(self, given: Path) -> Claim | None:
        """Take the claim ``given`` over for this process (a job running the cell its launcher
        claimed, or the same job requeued); None when the cell was claimed again since."""
        submitted = json.loads(given.read_text())
        generation = submitted["generation"]
        current = self.current(submitted["index"])
        if current is None or not (current.generation == generation or (
                current.job_of == generation and not current.live())):
            return None
        return self.take(current.index, current.cell, current.attempt, current,
                         launcher=current.launcher, log=current.log, run_id=current.run_id,
                         job_of=generation)

    # -- who trains a cell ------------------------------------------------------------------

    def claim(self, cell: Cell, log: Path, waited: bool = False) -> Grant:
        """Claim ``cell`` for this launcher, or say who holds it. ``waited``: this launcher
        waited for the cell's holder, so a cell it ended (finished or failed) is reported
        from the store rather than trained again."""
        while True:
            held = self.current(cell.index)
            if held is not None and held.live():
                return Grant(holder=held)
            if waited and held is not None and held.state in ENDED:
                return Grant(result=self._outcome(cell, held))
            mine = self.take(cell.index, cell.key, uuid.uuid4().hex, held, log=str(log))
            if mine is not None:
                return self._adopt(cell, mine, held)

    def _adopt(self, cell: Cell, mine: Claim, held: Claim | None) -> Grant:
        if held is None:
            return Grant(mine)
        gone = held.by()
        if held.host == HOST and stop_process(held.child_pid, held.child_started):
            self.echo(f"stopped the process {held.child_pid} of cell {cell.key}, left by the "
                      f"launcher ({gone}) that is gone")
        finished = self._finished(cell)
        if finished:
            self.finish(mine, "FINISHED", finished)
            return Grant(result=CellResult(cell, "SKIPPED", finished,
                                           error=f"trained by another launcher ({gone})"))
        run = self._run_of(held) if held.state in INTERRUPTED else None
        if run is not None and self._has_checkpoint(run.info.run_id):
            self.save(mine, attempt=held.attempt, run_id=run.info.run_id)
            return Grant(mine, resume=run.info.run_id, adopted=gone)
        if run is not None and run.info.status == RUNNING:
            with contextlib.suppress(Exception):
                self.client.set_tag(run.info.run_id, ERROR_TAG, f"its launcher ({gone}) ended "
                                    "before it had a checkpoint; the cell was trained anew")
                self.client.set_terminated(run.info.run_id, "FAILED")
        return Grant(mine, adopted=gone if held.state in INTERRUPTED else "")

    def _outcome(self, cell: Cell, held: Claim) -> CellResult:
        """What became of a cell another launcher trained, from the store."""
        note = f"trained by another launcher ({held.by()})"
        run = self._run_of(held)
        if run is None:
            return CellResult(cell, "FAILED", error=f"{note}, which recorded no run")
        if run.info.status == "FINISHED":
            return CellResult(cell, "SKIPPED", run.info.run_id, metrics=dict(run.data.metrics),
                              error=note)
        error = run.data.tags.get(ERROR_TAG, "")
        return CellResult(cell, "FAILED", run.info.run_id, error=f"{note}: {error}" if error
                          else note)

    def _finished(self, cell: Cell) -> str | None:
        try:
            return _done_cells(self.client, self.exp_id, self.sweep.id).get(cell.key)
        except Exception:  # the store went away: its record is looked at when it is back
            return None

    def _run_of(self, held: Claim):
        try:
            if held.run_id:
                return self.client.get_run(held.run_id)
            return _find_attempt(self.client, self.exp_id, held.attempt) if held.attempt else None
        except Exception:
            return None

    def _has_checkpoint(self, run_id: str) -> bool:
        from ..engine.checkpoints import CHECKPOINT
        from ..engine.runs import find_run_folder

        try:
            folder, _ = find_run_folder(self.sweep.output, run_id)
        except LtcoreError:
            return False
        return (folder / CHECKPOINT).is_file()


def logged_run_id(log: str) -> str | None:
    """The run id a cell's log names (``run ID started...``), None before it does."""
    try:
        with open(log, errors="replace") as fh:
            found = _RUN_LINE.search(fh.read(200_000))
    except OSError:
        return None
    return found.group(1) if found else None


def stopped_by(code: int) -> str | None:
    """The stop signal (``SIGTERM``, ``SIGINT``, ``SIGHUP``) an exit code ``128 + N`` stands
    for, else None."""
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name) and code == 128 + int(getattr(signal, name)):
            return name
    return None


def outcome_state(code: int) -> str:
    """A claim's state from its cell's exit code (a stop signal: KILLED)."""
    return "FINISHED" if code == 0 else "KILLED" if stopped_by(code) else "FAILED"


class CellQueue:
    """The cells a launcher has left, each claimed when it is about to start; a cell another
    launcher holds waits until that claim ends (:meth:`look_again`), then is reported or
    adopted."""

    def __init__(self, sweep: Sweep, cells: list[Cell], book: ClaimBook, progress):
        self.sweep, self.book, self.progress = sweep, book, progress
        self.todo = list(cells)
        self.held: list[Cell] = []
        self.ready: list[tuple[Cell, Grant]] = []

    @property
    def pending(self) -> bool:
        return bool(self.todo or self.held or self.ready)

    def next(self) -> tuple[Cell, Grant] | None:
        """The next cell to train, claimed; None when none can start now."""
        while self.ready or self.todo:
            if self.ready:
                return self.ready.pop(0)
            cell = self.todo.pop(0)
            grant = self._claim(cell, waited=False)
            if grant is not None:
                return cell, grant
        return None

    def look_again(self) -> None:
        """Claim again the held cells whose claim ended."""
        for cell in list(self.held):
            current = self.book.current(cell.index)
            if current is None or not current.live():
                self.held.remove(cell)
                grant = self._claim(cell, waited=True)
                if grant is not None:
                    self.ready.append((cell, grant))

    def _claim(self, cell: Cell, waited: bool) -> Grant | None:
        grant = self.book.claim(cell, self.sweep.log_path(cell), waited)
        if grant.holder is not None:
            if cell not in self.held:
                self.held.append(cell)
                if not waited:
                    self.progress.held(cell, grant.holder)
            return None
        if grant.result is not None:
            self.progress.finished(grant.result)
            return None
        return grant
