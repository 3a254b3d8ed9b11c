"""SIGTERM, SIGINT and SIGHUP: the run stops at the next step boundary with a checkpoint, its MLflow runs
are marked KILLED with where it stopped, and it says its id and the exact resume command. Every
run says its id before it trains."""

import os
import signal
import time

import pytest
import torch

from ltcore import RunStopped, hookimpl, resolve, train
from ltcore.testing import (FAST, FAST_SETTINGS, mlflow_client, plugins_holding, recorded_runs,
                            run_folder)

LONG = ["--plugin", "kcl", "--epochs", "30", *FAST]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143),
                                       pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),
                                       pytest.param(signal.SIGHUP, 129, marks=pytest.mark.slow)])
def test_a_signal_stops_at_a_step_with_a_checkpoint_and_the_resume_command(ltrun_process, sig,
                                                                           code):
    process = ltrun_process.start(*LONG)
    run_id = process.run_id()
    assert process.out.splitlines()[0].startswith(f"run {run_id} started")  # before training
    assert f"ltrun --resume {run_id}" in process.out.splitlines()[0]
    time.sleep(3)
    process.signal(sig)
    assert process.wait() == code, process.err
    last = process.err.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {sig.name} in stage 'train'"), process.err
    assert last.endswith(f"Continue with: ltrun --resume {run_id}")
    assert "Traceback" not in process.err

    client = ltrun_process.client()
    parent = client.get_run(run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["ltcore.stopped"].startswith(f"{sig.name} in stage 'train'")
    (stage,) = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert stage.info.status == "KILLED"
    checkpoint = torch.load(run_folder(ltrun_process.folder / "runs", run_id) / "checkpoint.pt",
                            weights_only=True)
    epoch = checkpoint["position"][1]
    progress = checkpoint["epoch_progress"]
    if progress is not None:  # stopped inside an epoch: it continues at the next step
        assert f"epoch {epoch + 1}/30 after step {progress['step']}/" in last
    else:
        assert f"after epoch {epoch}/30" in last
    logged = client.get_metric_history(stage.info.run_id, "train/loss")
    assert sorted(m.step for m in logged) == list(range(epoch))


def test_resuming_a_run_stopped_before_its_first_checkpoint_closes_it(ltrun_process):
    """The moment between creating the MLflow run and writing its configuration: the run cannot
    continue, and ``--resume`` says so and closes it instead of leaving it RUNNING."""
    from ltcore.tracking import Tracker

    tracker = Tracker(ltrun_process.uri, "ltcore")
    run_id = tracker.start("ce", {"ltcore.plugins": "ce"})
    (ltrun_process.folder / "runs" / f"ce-digits-lt-s0-{run_id[:8]}").mkdir(parents=True)
    resumed = ltrun_process("--resume", run_id)
    assert resumed.code == 2
    (error,) = [line for line in resumed.err.splitlines() if line.startswith("Error:")]
    assert "before its first checkpoint" in error and "marked FAILED" in error
    run = ltrun_process.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["ltcore.error"] == "stopped before its first checkpoint"


class SignalsInAStep:
    """Sends ``signals`` to its own process after step 2, and one more while the stop is being
    recorded (``run_failed``)."""

    def __init__(self, *signals):
        self.signals = signals
        self.sent_while_recording = False

    @hookimpl
    def step_end(self, step):
        if step.iteration == 2:
            for sig in self.signals:
                os.kill(os.getpid(), sig)

    @hookimpl
    def run_failed(self, run, error):
        self.sent_while_recording = True
        os.kill(os.getpid(), self.signals[-1])


@pytest.mark.parametrize("signals, code, line", [
    ((signal.SIGHUP,), 129, "stopped by SIGHUP in stage 'train', epoch 1/3 after step 3/"),
    ((signal.SIGINT, signal.SIGINT), 130, "stopped at once by a second SIGINT; the last "
                                          "checkpoint (")])
def test_sighup_stops_and_a_second_signal_stops_at_once_both_killed_with_the_resume_line(
        isolated, signals, code, line):
    """SIGHUP (a closed terminal) stops like SIGTERM; a second Ctrl-C stops inside the step; a
    signal while the stop is recorded waits for it: the runs end KILLED either way."""
    sender = SignalsInAStep(*signals)
    plugins = plugins_holding("ce", extra={"signals": sender})
    settings = resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, "device=cpu",
                                                     "batch_size=32"], overrides={"epochs": 3})
    with pytest.raises(RunStopped) as stopped:
        train(plugins, ["ce", "signals"], settings, progress=False)
    assert stopped.value.exit_code == code and str(stopped.value).startswith(line)
    (run,) = recorded_runs(mlflow_client(), nested=False)
    assert str(stopped.value).endswith(f"Continue with: ltrun --resume {run.info.run_id}")
    assert sender.sent_while_recording and run.info.status == "KILLED"
    assert all(r.info.status == "KILLED" for r in recorded_runs(mlflow_client(), nested=True))


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_a_signal_to_the_process_group_stops_a_run_with_dataloader_workers(ltrun_process):
    """A terminal's Ctrl-C and SLURM's scancel signal every process of the group, DataLoader
    workers included: the workers ignore it and the run stops at its step as usual."""
    import subprocess

    from .conftest import LTRUN

    log = ltrun_process.folder / "group.err"
    with open(log, "w") as err:
        process = subprocess.Popen([*LTRUN, *LONG, "--set", "views.workers=2"],
                                   cwd=ltrun_process.folder, env=ltrun_process.env,
                                   stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            runs = ltrun_process.folder / "runs"
            while not list(runs.glob("*/checkpoint.pt")) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # inside the first epochs, the workers running
            os.killpg(process.pid, signal.SIGTERM)
            assert process.wait(timeout=120) == 143, log.read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert text.strip().splitlines()[-1].startswith("stopped by SIGTERM in stage 'train'"), text
    assert "Traceback" not in text and "DataLoader worker" not in text


ORPHAN = """
import os, signal, sys, time
from ltcore.engine.interrupts import StopSignals
out = sys.argv[1]


def write(path, text):  # whole or not at all: the test reads as soon as the file is there
    open(path + ".tmp", "w").write(text)
    os.replace(path + ".tmp", path)


if os.fork():  # the parent that starts the process ends first
    os._exit(0)
with StopSignals() as stop:
    while not stop.orphaned:
        time.sleep(0.01)
    write(out + ".ready", str(os.getpid()))
    try:
        while stop.received is None:
            time.sleep(0.01)
        time.sleep(0.5)  # the second signal comes meanwhile
        result = "patient"
    except KeyboardInterrupt:
        result = "stopped at once"
write(out, f"{result} {stop.received}")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_whose_parent_ended_takes_repeated_signals_as_one_stop(tmp_path):
    """A parent's death signal (PR_SET_PDEATHSIG) comes once per thread it had: an orphaned run
    stops at its next step rather than at once."""
    import subprocess
    import sys

    out = tmp_path / "result"
    subprocess.run([sys.executable, "-c", ORPHAN, str(out)], check=True, timeout=60)
    deadline = time.monotonic() + 60
    while not out.with_suffix(".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = int(out.with_suffix(".ready").read_text())
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.1)  # two signals, not one pending twice
    os.kill(pid, signal.SIGTERM)
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.read_text() == "patient SIGTERM"
