"""``ltrun --nproc N``: the N ranks of a run on this machine, and one outcome for all of them.

The launcher runs torch's elastic agent in its own process, as ``torchrun --standalone
--nproc-per-node N`` would, with the ranks running ``python -m ltcore`` with the other options;
their output goes to the terminal as it comes. The agent's log lines are silenced, and the
launcher ends with one line and one exit code:

* **A stop.** SIGTERM, SIGINT or SIGHUP to the launcher (a terminal's Ctrl-C reaches the
  launcher only: each rank runs in a session of its own) is passed on to every rank once; the
  ranks stop together at one step with a checkpoint (``Trainer.stopping``), rank 0 prints the
  stop line, and the launcher exits with 128 + the signal. Further signals to the launcher wait
  for the ranks (the agent kills a rank still running after ``TORCHELASTIC_SHUTDOWN_TIMEOUT``,
  30 s). A signal to one rank stops them all the same way; the launcher exits alike. A rank
  that fails instead of stopping gets the failure's line (exit 2).
* **A failure.** A rank that dies or fails ends the others; the launcher prints one ``Error:``
  line naming the rank that failed first, how it ended (its exit code and the error it left, or
  the signal that killed it) and the resume command, writes that line into the run's MLflow tag
  ``ltcore.error`` (marking the runs FAILED when rank 0 could not) and exits 2
  (:class:`~ltcore.errors.RankFailure`). An error every rank ended with alike (a diverging
  loss), or one before the run began (an option the ranks refuse), is printed as one process
  prints it, with its exit code.

The ranks find the launch folder in ``LTCORE_LAUNCH``: rank 0 leaves there the run's id, folder,
tracking URI and resume command (:func:`note_run`), and a rank that fails leaves its error line
(:func:`note_error`) instead of printing it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

LAUNCH = "LTCORE_LAUNCH"
"""The variable that gives the ranks ``ltrun --nproc`` started the launch folder."""
RUN_FILE = "run.json"
ERROR_FILE = "error-rank{rank}.txt"
STOP_NAMES = ("SIGTERM", "SIGINT", "SIGHUP")
STOP_CODES = {128 + int(getattr(signal, name)) for name in STOP_NAMES if hasattr(signal, name)}
"""The exit codes of a rank that stopped at a step (:class:`~ltcore.errors.RunStopped`)."""
LOGGERS = ("torch.distributed.run", "torch.distributed.launcher", "torch.distributed.elastic")


def launch_folder() -> Path | None:
    """The folder of the ``ltrun --nproc`` that started this process (None under a plain
    torchrun or in one process)."""
    folder = os.environ.get(LAUNCH)
    return Path(folder) if folder else None


def note_run(run_id: str, run_dir: Path, tracking_uri: str, resume: str) -> None:
    """Tell the launcher (if any) which run the ranks train and how to resume it."""
    folder = launch_folder()
    if folder is None:
        return
    from .files import write_text

    write_text(folder / RUN_FILE, json.dumps({"run_id": run_id, "run_dir": str(run_dir),
                                              "tracking_uri": tracking_uri, "resume": resume}))


def note_error(rank: str, text: str) -> bool:
    """Leave a rank's error line for the launcher; False when there is no launcher (the rank
    prints it then)."""
    folder = launch_folder()
    if folder is None:
        return False
    try:
        (folder / ERROR_FILE.format(rank=rank)).write_text(text)
    except OSError:
        return False
    return True


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """Ignore SIGTERM, SIGINT and SIGHUP in this process: in a rank that is ending (a signal the
    agent sends now, because another rank ended first, no longer cuts short its last lines),
    and in DataLoader workers (:func:`worker_options`)."""
    for name in STOP_NAMES:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def worker_options() -> dict:
    """The DataLoader options of every loader with workers. A terminal's Ctrl-C, SLURM's
    ``scancel`` and torchrun's agent signal the whole process group, and a worker ended by the
    signal would fail the step instead of letting the run stop at it with a checkpoint: the
    workers ignore the stop signals, which are the training process's to honour. They end with
    it: torch's watchdog ends them when it dies, and at its exit, where multiprocessing
    terminates them, SIGTERM ends them."""
    global _EXITING
    if _EXITING is None:
        import atexit
        import multiprocessing

        _EXITING = multiprocessing.RawValue("b", 0)
        atexit.register(_exiting)  # registered after multiprocessing's: it runs first
    return {"worker_init_fn": functools.partial(_worker_start, _EXITING)}


_EXITING = None
"""Set (shared with the workers) once the training process exits."""


def _exiting() -> None:
    _EXITING.value = 1


def _worker_start(exiting, worker_id: int) -> None:
    """A DataLoader worker's start: SIGINT and SIGHUP ignored, SIGTERM too unless the training
    process is exiting (then it ends the worker, with exit code 0 as torch expects)."""
    ignore_stop_signals()
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0) if exiting.value else None)


class _FirstSignal:
    """The launcher's handler of SIGTERM, SIGINT and SIGHUP: the first raises torch's
    ``SignalException``, which makes the agent pass it on to the ranks and wait for them; later
    ones are ignored, so the wait is not cut short (torch's own handler raises every time)."""

    def __init__(self):
        self.received: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.received is None:
            from torch.distributed.elastic.multiprocessing.api import SignalException

            self.received = signum
            sig = signal.Signals(signum)
            raise SignalException(f"ltrun got {sig.name}", sigval=sig)


def run_ranks(torchrun_args: list[str]) -> int:
    """Start the ranks ``torchrun_args`` describe (the arguments of ``torchrun``, from
    ``--standalone`` to the module's options), wait for them and return the exit code."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(LOGGERS):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    ignore_keep_alive_self_join()
    args = torchrun.parse_args(torchrun_args)
    args.signals_to_handle = "SIGQUIT"  # the stop signals are ours (_FirstSignal)
    folder = Path(tempfile.mkdtemp(prefix="ltcore-launch-"))
    handler = _FirstSignal()
    previous = {name: signal.signal(getattr(signal, name), handler)
                for name in STOP_NAMES if hasattr(signal, name)}
    os.environ[LAUNCH] = str(folder)
    try:
        try:
            torchrun.run(args)
        finally:
            for name, old in previous.items():
                signal.signal(getattr(signal, name), old)
            os.environ.pop(LAUNCH, None)
        return 0
    except SignalException as exc:
        return stopped_by(exc.sigval, int(args.nproc_per_node), folder)
    except ChildFailedError as exc:
        code, line = outcome(exc, args.nproc_per_node, folder)
        if line is not None:
            print(f"Error: {line}", file=sys.stderr, flush=True)
        return code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ignore_keep_alive_self_join() -> None:
    """Leave out of the launcher's output the one error torch's agent may leave when it ends on
    a signal: its rendezvous keep-alive thread can hold the last reference to the rendezvous
    handler as the agent unwinds, and the timer's finalizer then runs in that thread and joins
    it (``RuntimeError: cannot join current thread``, printed as "Exception ignored in"). The
    thread's stop event was set just before, so it ends all the same. Every other unraisable
    error still goes to the hook that was in place; kept for the launcher's life (the finalizer
    may run as the process ends)."""
    global _PREVIOUS_UNRAISABLE_HOOK
    if _PREVIOUS_UNRAISABLE_HOOK is None:
        _PREVIOUS_UNRAISABLE_HOOK = sys.unraisablehook
        sys.unraisablehook = _unraisable


_PREVIOUS_UNRAISABLE_HOOK = None


def _unraisable(unraisable) -> None:
    if not _keep_alive_self_join(unraisable):
        _PREVIOUS_UNRAISABLE_HOOK(unraisable)


def _keep_alive_self_join(unraisable) -> bool:
    """Whether ``unraisable`` is the keep-alive timer's finalizer joining its own thread."""
    if unraisable.exc_type is not RuntimeError:
        return False
    tb = unraisable.exc_traceback
    while tb is not None:
        code = tb.tb_frame.f_code
        if (code.co_name == "_stop_thread"
                and Path(code.co_filename).parts[-4:] == ("distributed", "elastic", "rendezvous",
                                                          "utils.py")):
            return True
        tb = tb.tb_next
    return False


def stopped_by(sig: signal.Signals, size: int, folder: Path) -> int:
    """The exit code of ranks the launcher passed ``sig`` on to: 128 + ``sig`` when they
    stopped (rank 0 printed the line); 1 with the error line when a rank failed instead."""
    texts = {r: _read(folder / ERROR_FILE.format(rank=r)) for r in range(size)}
    failed = [r for r, text in texts.items() if text]
    if not failed:
        return 128 + int(sig)
    rank = failed[0]  # rank 0's line holds the errors the others left
    text = texts[rank] if rank == 0 else f"rank {rank} of {size} failed: {texts[rank]}"
    run = _read_run(folder)
    resume = f". Continue with: {run['resume']}" if run else ""
    print(f"Error: {text} (while the ranks stopped for {sig.name}){resume}", file=sys.stderr,
          flush=True)
    from .errors import RankFailure

    return RankFailure.exit_code


def outcome(error, size: int | str, folder: Path) -> tuple[int, str | None]:
    """The exit code and line (None: rank 0 printed the stop line) of ranks that ended with
    torch's ``ChildFailedError`` ``error``; a run that failed gets the line as its
    ``ltcore.error``."""
    size = int(size)
    failures = error.failures
    stopped = [f.exitcode for f in failures.values() if f.exitcode in STOP_CODES]
    if stopped and all(f.exitcode in STOP_CODES or 128 - f.exitcode in STOP_CODES
                       for f in failures.values()):  # some stopped at a step, the agent ended
        return stopped[0], None                        # any other rank with their signal
    rank, first = error.get_first_failure()
    if first.exitcode in STOP_CODES:  # it stopped, and another rank failed instead of stopping
        rank, first = next((r, f) for r, f in failures.items() if f.exitcode not in STOP_CODES)
    texts = {r: _read(folder / ERROR_FILE.format(rank=r)) for r in failures}
    codes = {f.exitcode for f in failures.values()}
    run = _read_run(folder)
    alike = len(failures) == size and len(codes) == 1 and len(set(texts.values())) == 1
    if texts[rank] and first.exitcode > 0 and (alike or run is None):
        return first.exitcode, texts[rank]  # every rank's error, or one before the run began
    line = failure_line(rank, size, first.exitcode, texts[rank],
                        run["resume"] if run else None)
    if run is not None:
        record_failure(run, line)
    from .errors import RankFailure

    return RankFailure.exit_code, line


def failure_line(rank: int, size: int, exitcode: int, text: str, resume: str | None) -> str:
    """How a distributed run ended when rank ``rank`` failed first, in one line."""
    if exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exited with code {exitcode}"
    own = text.split("; if it waited for another rank")[0]
    own = own.removeprefix(f"rank {rank} of {size} failed: ")
    others = ("the other rank was stopped" if size == 2
              else f"the other {size - 1} ranks were stopped")
    line = f"rank {rank} of {size} failed first: {how}" + (f": {own}" if own else "")
    return line + f"; {others}" + (f". Continue with: {resume}" if resume else "")


def record_failure(run: dict, line: str) -> None:
    """Write ``line`` into the run's ``ltcore.error`` (rank 0's own record cannot know which
    rank failed first); runs rank 0 left RUNNING (it died) are marked FAILED."""
    try:
        from .tracking import connect

        client = connect(run["tracking_uri"])
        parent = client.get_run(run["run_id"])
        client.set_tag(parent.info.run_id, "ltcore.error", line[:5000])
        if parent.info.status == "RUNNING":
            stages = client.search_runs(
                [parent.info.experiment_id],
                f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
            for stage in stages:
                if stage.info.status == "RUNNING":
                    client.set_terminated(stage.info.run_id, "FAILED")
            client.set_terminated(parent.info.run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001 - the line is printed all the same
        print(f"warning: the run's MLflow record could not be corrected: {exc}"[:1000],
              file=sys.stderr)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_run(folder: Path) -> dict | None:
    try:
        return json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
