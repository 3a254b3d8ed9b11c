"""A tracking server that dies mid-run: the training finishes, its files are written, and the
output says what was not logged; resumed once the server is back, the run sends what it kept,
each metric point once."""

import re

import torch

from ltcore import cli, hookimpl
from ltcore.plugins import Plugins
from ltcore.testing import FAST, mlflow_client, repeated_points, run_folder


class ServerKiller:
    """A test plugin that kills the tracking server at the end of the first epoch."""

    def __init__(self, server):
        self.server = server

    @hookimpl
    def setup_run(self, run):
        """Nothing to add: this plugin only acts at the end of an epoch."""

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if epoch == 0:
            self.server.kill()


def test_training_survives_the_server_going_away(ltrun, mlflow_server, monkeypatch, tiny,
                                                 isolated):
    killer = ServerKiller(mlflow_server)
    monkeypatch.setattr(cli, "load_plugins", lambda ctx: Plugins(extra={"server-killer": killer}))
    result = ltrun("--plugin", "ce", "--plugin", "server-killer", "--tracking-uri",
                   mlflow_server.uri, *tiny, "--epochs", "2", *FAST)

    assert mlflow_server.proc.poll() is not None  # the server really went away
    assert result.exit_code == 0, result.stderr
    run_id = re.search(r"run (\w+) finished", result.output).group(1)
    assert "test:" in result.output  # the final figures are printed
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(f"tracking store at {mlflow_server.uri} stopped answering" in w for w in warnings)
    assert any("not logged" in w and "metric values" in w for w in warnings), result.stderr
    run_dir = run_folder(isolated / "runs", run_id)
    assert f"runs/{run_dir.name}" in result.stderr  # where the checkpoint and files are
    assert "Traceback" not in result.stderr

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["position"] == (1, 0)  # every stage finished
    steps = sorted({(m[1], m[4]) for m in checkpoint["pending_metrics"]})
    assert ("train/loss", 0) in steps and ("train/loss", 1) in steps  # kept for a resume
    saved = torch.load(run_dir / "model.pt", weights_only=False)
    assert saved["plugins"] == ["ce", "server-killer"]
    assert (run_dir / "artifacts" / "train" / "val_confusion_matrix.png").is_file()

    mlflow_server.restart()  # the same store: what was sent before the kill is there
    resumed = ltrun("--resume", run_id, "--no-progress")
    assert resumed.exit_code == 0, resumed.stderr
    client = mlflow_client(mlflow_server.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert repeated_points(client, run_id) == {}
    (stage,) = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert sorted(m.step for m in client.get_metric_history(stage.info.run_id,
                                                            "train/loss")) == [0, 1]
