"""A training process killed with SIGKILL resumes, in another process, into the same MLflow run
(``-m slow``: ``tests/reliability/test_kills.py`` kills and resumes real processes by default)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ltcore.testing import FAST, mlflow_client, recorded_runs, run_folder

EPOCHS = 2


@pytest.mark.slow
def test_killed_process_resumes_into_the_same_mlflow_run(ltrun, isolated):
    log = open(isolated / "first.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ltcore.cli import main; main()", "--epochs", str(EPOCHS),
         "--imbalance-factor", "100", *FAST],
        cwd=isolated, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180

    def after_an_epoch():
        """A checkpoint written after the first epoch (there is one from before training)."""
        found = list(isolated.glob("runs/*/checkpoint.pt"))
        return found and torch.load(found[0], weights_only=True)["position"][1] >= 1

    try:
        while not after_an_epoch():
            assert proc.poll() is None, (isolated / "first.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    (checkpoint,) = isolated.glob("runs/*/checkpoint.pt")
    run_id = (checkpoint.parent / "run_id").read_text().strip()
    stage_index, next_epoch = torch.load(checkpoint, weights_only=True)["position"]
    assert stage_index == 0 and 1 <= next_epoch < EPOCHS  # killed mid-training
    client = mlflow_client(f"sqlite:///{isolated / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody closed it

    result = ltrun("--resume", run_id, "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert f"run {run_id} finished" in result.output

    (parent,) = recorded_runs(client, nested=False)
    (stage,) = recorded_runs(client, nested=True)
    assert parent.info.run_id == run_id and parent.info.status == "FINISHED"
    assert stage.info.status == "FINISHED"
    for key in ("train/loss", "train/lr", "val/acc"):
        steps = [m.step for m in client.get_metric_history(stage.info.run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), (key, steps)
    # the test split at the stage's end only, on the parent with the final figures, once
    assert client.get_metric_history(stage.info.run_id, "test/acc") == []
    assert [m.step for m in client.get_metric_history(run_id, "test/acc")] == [EPOCHS]
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [EPOCHS]
    assert os.path.isfile(run_folder(isolated / "runs", run_id) / "model.pt")
