"""``ltrun --resume RUN --epochs N`` extends a run; a finished run resumed says so at once."""

import math

import pytest

from ltcore.engine import runs
from ltcore.testing import FAST, mlflow_client, recorded_runs


@pytest.fixture
def finished_run(ltrun, isolated):
    """A finished two-epoch run of ce: its id."""
    result = ltrun("--epochs", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    (parent,) = recorded_runs(mlflow_client(), nested=False)
    return parent.info.run_id


def test_a_finished_run_resumed_says_it_is_finished_without_building_it(finished_run, ltrun,
                                                                        monkeypatch):
    def build(*args, **kwargs):
        raise AssertionError("a finished run was built again")

    monkeypatch.setattr(runs, "prepare", build)
    result = ltrun("--resume", finished_run, "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert f"run {finished_run} finished earlier" in result.output
    assert f"ltrun --resume {finished_run} --epochs N" in result.output
    (stage,) = recorded_runs(mlflow_client(), nested=True)
    assert len(mlflow_client().get_metric_history(stage.info.run_id, "val/acc")) == 2


def test_resume_with_epochs_extends_a_finished_run(finished_run, ltrun, isolated):
    result = ltrun("--resume", finished_run, "--epochs", "3", "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert ("--epochs 3 (was 2): stage 'train' goes on from epoch 3 with its cosine schedule "
            "recomputed for 3 epochs") in result.output
    assert "plan: 1 stage, 3 epochs in all" in result.output
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    (stage,) = recorded_runs(client, nested=True)
    assert parent.info.status == "FINISHED" and stage.info.status == "FINISHED"
    history = client.get_metric_history(stage.info.run_id, "val/acc")
    assert sorted(m.step for m in history) == [0, 1, 2]  # one point per epoch
    rates = sorted((m.step, m.value) for m in client.get_metric_history(stage.info.run_id,
                                                                         "train/lr"))
    assert rates[2][1] == pytest.approx(0.5 * 0.1 * (1 + math.cos(math.pi * 2 / 3)))
    assert parent.data.tags["ltcore.epochs"] == "3"
    (folder,) = isolated.glob("runs/*")
    assert "epochs = 3" in (folder / "config.toml").read_text()
    assert len((folder / "metrics.csv").read_text().splitlines()) == 1 + 3

    shorter = ltrun("--resume", finished_run, "--epochs", "1")
    assert shorter.exit_code == 2 and "has trained 3 epochs already" in shorter.stderr
    other = ltrun("--resume", finished_run, "--batch-size", "8")
    assert other.exit_code == 2 and "--batch-size cannot be given with it" in other.stderr


def test_extending_the_main_stage_after_a_later_stage_began_is_refused(ltrun):
    result = ltrun("--plugin", "ce", "--plugin", "crt", "--epochs", "1", "--set", "crt.epochs=1",
                   *FAST)
    assert result.exit_code == 0, result.stderr
    (parent,) = recorded_runs(mlflow_client(), nested=False)
    refused = ltrun("--resume", parent.info.run_id, "--epochs", "2", "--no-progress")
    assert refused.exit_code == 2
    assert ("stage 'classifier' has already trained on the model that stage 'train' ended with"
            in refused.stderr)
