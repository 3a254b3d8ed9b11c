"""Continuing a run: which checkpoint it continues from, whether it may, and one process at a time.

A run's folder keeps its last two checkpoints (``checkpoint.pt`` and, as a hard link to the one
it replaced, ``checkpoint-previous.pt``), so a latest checkpoint that is damaged leaves a way
on: :func:`checkpoint_to_resume` says which checkpoints are readable and how to continue from
the previous one or start over. :func:`hold_run` keeps a second process from training a run
that one already trains (a fresh run, a resume or a restart).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, DataError, RunBusy
from ..launch import launch_folder
from ..tracking import connect
from . import checkpoints

if TYPE_CHECKING:
    from .trainer import Trainer

LOCK = "ltrun.lock"
"""The file in a run's folder that the process training the run holds locked."""
START_FROM = ("previous", "start")
"""What ``ltrun --resume RUN --from`` takes: the previous checkpoint, or the start."""
DAMAGED = "checkpoint-damaged.pt"
"""Where a damaged latest checkpoint is moved when the run goes on without it."""


def resume_command(run_id: str, output, ranks: int = 1) -> str:
    """``ltrun --resume <id>`` (with ``--output`` unless it is ``runs``), with ``--nproc N`` for
    the ``ranks`` that ``ltrun --nproc N`` started."""
    nproc = f"--nproc {ranks} " if ranks > 1 and launch_folder() else ""
    return (f"ltrun {nproc}--resume {run_id}"
            + ("" if str(output) == "runs" else f" --output {output}"))


class RunLock:
    """An exclusive lock on a run's folder, held while this process trains the run (released
    when it ends or dies: the operating system drops the lock with the process)."""

    def __init__(self, handle):
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold_run(folder: Path, run_id: str) -> RunLock:
    """Lock ``folder`` for this process, writing who holds it; :class:`RunBusy` names the
    process that trains the run already. (Without ``fcntl``, on Windows, nothing is locked.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return RunLock(None)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        try:
            who = json.loads(holder)
            said = (f"process {who['pid']} on {who['host']} since {who['since']} "
                    f"({who['command']})")
            stop = f"stop it (kill -TERM {who['pid']} on {who['host']})"
        except (ValueError, KeyError, TypeError):
            said, stop = "another process", "stop it"
        raise RunBusy(f"run {run_id} is being trained by {said}; two processes training one run "
                      f"would write over each other's checkpoints and record its metrics "
                      f"twice: wait for it to end, or {stop} and resume it then") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": _dt.datetime.now().isoformat(timespec="seconds"),
                             "command": shlex.join(["ltrun", *sys.argv[1:]])[:500]}))
    handle.flush()
    return RunLock(handle)


def checkpoint_to_resume(folder: Path, run_id: str, resume_command: str,
                         start_from: str | None, startable: bool) -> dict | None:
    """The checkpoint ``ltrun --resume`` continues from: the latest, or with ``start_from``
    the previous one (``previous``) or none (``start``: the run starts over from its
    ``config.toml``, which ``startable`` says exists). A damaged latest checkpoint raises a
    :class:`DataError` that offers both; going on without it moves it aside
    (``checkpoint-damaged.pt``)."""
    latest, previous = folder / checkpoints.CHECKPOINT, folder / checkpoints.PREVIOUS
    if start_from not in (None, *START_FROM):
        raise ConfigError(f"--from takes {' or '.join(START_FROM)}, got {start_from!r}")
    if start_from is None:
        try:
            return checkpoints.read(latest)
        except DataError as exc:
            if not latest.is_file():
                raise
            ways = []
            try:
                ways.append(f"continue from the previous checkpoint, saved "
                            f"{checkpoints.read(previous)['saved']}: "
                            f"{resume_command} --from previous")
            except DataError:
                pass
            if startable:
                ways.append(f"start the run over (in its MLflow run): {resume_command} "
                            "--from start")
            raise DataError("; ".join([str(exc), "; or ".join(ways)] if ways else [str(exc)])
                            ) from exc
    chosen = checkpoints.read(previous) if start_from == "previous" else None
    if latest.is_file():
        try:
            checkpoints.read(latest)
        except DataError:
            os.replace(latest, folder / DAMAGED)
    return chosen


def finished(checkpoint: dict, folder: Path, run_id: str) -> bool:
    """Whether the run of ``checkpoint`` finished: past its last stage, its model written,
    every record sent and its MLflow run closed as FINISHED (a process stopped while it logged
    the model or closed the run is not finished; a store that does not answer leaves it to the
    resume, which says why)."""
    past_last = checkpoint.get("finished", checkpoint["saved"].startswith("after the last stage"))
    unsent = checkpoint.get("pending_metrics") or (checkpoint.get("tracking_journal") or {}).get(
        "queue")
    if not past_last or unsent or not (folder / checkpoints.MODEL).is_file():
        return False
    try:
        client = connect(checkpoint["settings"]["tracking"]["uri"])
        return client.get_run(run_id).info.status == "FINISHED"
    except Exception:  # noqa: BLE001 - unreachable or unknown: resume as usual
        return False


def extend(trainer: Trainer, recorded: int) -> str:
    """Move a resumed run back into its main stage for the epochs it now has (``epochs`` was
    changed from ``recorded``), or refuse saying why; returns what changed, in words."""
    run = trainer.run
    main = run.main_stage
    index = run.stages.index(main)
    trained = sum(1 for row in trainer.history if row["stage"] == main.name)
    later = [s.name for s in run.stages[index + 1:] if s.name in trainer.stage_runs]
    if later:
        raise ConfigError(f"--epochs {main.epochs}: stage {later[0]!r} has already trained "
                          f"on the model that stage {main.name!r} ended with, so extending "
                          f"{main.name!r} would leave it stale; start a new run with --epochs "
                          f"{main.epochs}")
    if main.epochs < trained:
        raise ConfigError(f"--epochs {main.epochs}: stage {main.name!r} has trained {trained} "
                          f"epochs already; give at least {trained}")
    if trained and trainer.stopped_early(main, trained - 1):
        raise ConfigError(f"--epochs {main.epochs}: stage {main.name!r} stopped early after "
                          f"epoch {trained} (early_stop.patience), so more epochs would stop at "
                          "once")
    if trainer.position[0] > index:
        trainer.position = (index, trained)
    trainer.tracker.set_tags(run.run_id, {"ltcore.epochs": main.epochs,
                                          "ltcore.extended": f"{recorded} -> {main.epochs} "
                                                             f"epochs after epoch {trained}"})
    return (f"--epochs {main.epochs} (was {recorded}): stage {main.name!r} goes on from epoch "
            f"{trained + 1} with its {main.schedule.kind} schedule recomputed for "
            f"{main.epochs} epochs")


def close_unstarted(run_id: str, folder: Path) -> str:
    """For a run stopped before its configuration was written: mark its MLflow run FAILED
    (it trained nothing) and say so."""
    try:
        client = connect()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "ltcore.error", "stopped before its first checkpoint")
            client.set_terminated(run_id, "FAILED")
        closed = "its MLflow run is marked FAILED"
    except Exception:
        closed = "its MLflow run could not be reached to mark it FAILED"
    return (f"the run stopped before its first checkpoint was written, so it trained nothing; "
            f"{closed}. Start it again with the same options")


