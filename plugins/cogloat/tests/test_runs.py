"""``ltrun --plugin cogloat [--plugin proco]`` end to end: both stages, one nested MLflow run each."""

import pytest

from ltcore.testing import FAST, mlflow_client, recorded_runs

TWO_STAGES = ["--epochs", "1", "--set", "cogloat.classifier_epochs=1", "--views", "batched"]


def _stage_runs(client):
    return {r.data.tags["ltcore.stage"]: r for r in recorded_runs(client, nested=True)}


def _check_two_stage_run(client, contrastive_losses):
    (parent,) = recorded_runs(client, nested=False)
    stages = _stage_runs(client)
    assert set(stages) == {"train", "classifier"}
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in stages.values())
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in stages.values())
    train, classifier = stages["train"], stages["classifier"]
    assert train.data.params["stage.sampler"] == "k-global"
    assert classifier.data.params["stage.trainable"] == "classifier"
    assert classifier.data.params["stage.lr"] == "0.1"
    for name in contrastive_losses:
        assert f"train/loss/{name}" in train.data.metrics
    assert "train/loss/ce-reweighted" in classifier.data.metrics
    for run in (train, classifier):
        for metric in ("alignment", "variance", "uniformity", "improved-uniformity", "acc"):
            assert f"val/{metric}" in run.data.metrics, metric
    return train, classifier


def test_cogloat_runs_pretraining_and_classifier_stages(ltrun):
    result = ltrun("--plugin", "cogloat", *TWO_STAGES, *FAST)
    assert result.exit_code == 0, result.stderr
    train, _ = _check_two_stage_run(mlflow_client(), ["cogloat"])
    assert train.data.params["stage.losses"] == "1*cogloat, 0*pretrain-ce"
    assert train.data.params["stage.views"] == ("con0=simaugment, key=simaugment, pos1=simaugment, "
                                                "pos2=simaugment, pos3=simaugment")


def test_cogloat_with_proco_runs_both_stages(ltrun):
    result = ltrun("--plugin", "cogloat", "--plugin", "proco", *TWO_STAGES, *FAST)
    assert result.exit_code == 0, result.stderr
    train, _ = _check_two_stage_run(mlflow_client(), ["cogloat", "proco"])
    assert train.data.params["stage.losses"] == "0.5*cogloat, 0*pretrain-ce, 0.5*proco"


def test_proco_alone_fails_with_a_message_naming_it(ltrun):
    result = ltrun("--plugin", "proco", "--epochs", "1", *FAST)
    assert result.exit_code == 2
    assert "'proco'" in result.stderr and "contrastive" in result.stderr
