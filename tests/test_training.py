"""Training end to end: MLflow records, artifacts, stages, NaN losses, resume, evaluate."""

import json

import pytest
import torch

from ltcore import __version__, hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import resume, train
from ltcore.errors import NonFiniteLossError
from ltcore.plugins import Plugins
from ltcore.testing import FAST, FAST_SETTINGS, mlflow_client, recorded_runs


def only_run(client, nested):
    return recorded_runs(client, nested=nested)


def test_main_job_records_a_finished_mlflow_run(ltrun, isolated):
    result = ltrun("--plugin", "la", "--epochs", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    (parent,) = only_run(client, nested=False)
    (stage,) = only_run(client, nested=True)
    assert parent.info.status == "FINISHED" and stage.info.status == "FINISHED"
    assert parent.data.tags["plugins"] == "la" and parent.data.tags["dataset"] == "digits-lt"
    assert parent.data.params["plugin.la.version"] == f"ltcore {__version__}"
    assert parent.data.params["la.tau"] == "1.0"
    for key in ("train/loss", "train/loss/la-ce", "train/lr", "train/epoch_time",
                "train/samples_per_s", "val/acc", "val/many", "val/medium", "val/few",
                "val/hmean"):
        assert len(client.get_metric_history(stage.info.run_id, key)) == 2, key
    # the test split is evaluated at the stage's end only: its figures and the best epoch's are
    # in the stage's figures table and on the parent; the stage run charts per-epoch figures
    assert not [k for k in stage.data.metrics if k.startswith(("test/", "best/"))]
    stage_artifacts = {a.path for a in client.list_artifacts(stage.info.run_id, "evaluation")}
    assert {"evaluation/val_per_class_accuracy.csv", "evaluation/val_confusion_matrix.png",
            "evaluation/val_per_class_accuracy.png", "evaluation/figures.csv"} <= stage_artifacts
    (table,) = isolated.glob("runs/*/artifacts/train/figures.csv")
    rows = dict(line.split(",") for line in table.read_text().splitlines()[1:])
    assert float(rows["test/acc"]) == parent.data.metrics["test/acc"]
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "config.toml" in parent_artifacts and "checkpoints" in parent_artifacts
    assert "val/acc" in parent.data.metrics


class NanAtEpoch:
    """A test plugin whose loss becomes NaN from a given epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    @hookimpl
    def setup_run(self, run):
        from ltcore.run import LossTerm

        def fn(step):
            value = step.logits["cls"].mean() * 0
            return value + float("nan") if step.epoch >= self.epoch else value

        run.main_stage.add_loss(LossTerm("exploding", fn, "nan-plugin"))


def settings_for(plugins, selected, *assignments, epochs=3):
    return resolve(plugins, selected, assignments=[*FAST_SETTINGS, *assignments],
                   overrides={"epochs": epochs})


def test_nan_loss_stops_naming_term_and_epoch_and_keeps_checkpoint(isolated):
    plugins = Plugins(extra={"nan-plugin": NanAtEpoch(1)})
    settings = settings_for(plugins, ["nan-plugin"])
    with pytest.raises(NonFiniteLossError) as info:
        train(plugins, ["nan-plugin"], settings, progress=False)
    message = str(info.value)
    assert "'exploding'" in message and "epoch 2" in message and "after epoch 1" in message
    checkpoint = next(isolated.glob("runs/*/checkpoint.pt"))
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["position"] == (0, 1)
    assert all(torch.isfinite(v).all() for v in saved["modules"].values() if v.is_floating_point())
    (parent,) = only_run(mlflow_client(), nested=False)
    assert parent.info.status == "FAILED"


class KillAfterEpoch:
    """A test plugin that interrupts training once, right after an epoch's checkpoint is
    written (at the start of the next epoch), as a killed process would."""

    def __init__(self, epoch):
        self.epoch = epoch
        self.armed = True

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if self.armed and epoch == self.epoch + 1:
            self.armed = False
            raise KeyboardInterrupt


def test_killed_run_resumes_to_identical_final_metrics(isolated):
    plugins = Plugins(extra={"killer": KillAfterEpoch(0)})
    killer = plugins.pm.get_plugin("killer")
    killer.armed = False
    full = train(plugins, ["la", "killer"], settings_for(plugins, ["la", "killer"]), progress=False)

    killer.armed = True
    with pytest.raises(KeyboardInterrupt):
        train(plugins, ["la", "killer"], settings_for(plugins, ["la", "killer"]), progress=False)
    run_id = next(ids for p in (isolated / "runs").iterdir()
                  if (ids := (p / "run_id").read_text().strip()) != full.run_id)
    assert mlflow_client().get_run(run_id).info.status == "KILLED"
    resumed = resume(plugins, run_id, progress=False)
    assert resumed.run_id == run_id
    assert resumed.metrics == full.metrics
    client = mlflow_client()
    assert client.get_run(run_id).info.status == "FINISHED"
    stage_id = next(r.info.run_id for r in only_run(client, nested=True)
                    if r.data.tags["mlflow.parentRunId"] == run_id)
    assert client.get_run(stage_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(stage_id, "train/loss")]
    assert sorted(steps) == [0, 1, 2]


def test_evaluate_saved_model(ltrun, isolated):
    assert ltrun("--epochs", "1", *FAST).exit_code == 0
    model = next(isolated.glob("runs/*/model.pt"))
    result = ltrun("evaluate", "--checkpoint", str(model), "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.output)
    assert {"val/acc", "val/many", "val/few", "val/hmean", "test/acc"} <= set(figures)
    missing = ltrun("evaluate", "--checkpoint", "nope.pt")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_cpu_training_is_reproducible(isolated):
    plugins = Plugins()
    a = train(plugins, ["ce"], settings_for(plugins, ["ce"], epochs=1), progress=False)
    b = train(plugins, ["ce"], settings_for(plugins, ["ce"], epochs=1), progress=False)
    assert a.metrics == b.metrics
