"""The baselines train end to end through ``ltrun`` on the embedded dataset (FAST options).

The runs share one MLflow store and output folder (created once for the module).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from ltcore.testing import FAST, mlflow_client, run_folder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline-runs")
    return root


@pytest.fixture
def train_run(ltrun, store):
    """``train_run(*args)`` -> (client, parent run, {stage name: stage run}, run folder)."""

    def call(*args):
        result = ltrun(*args, *FAST, "--tracking-uri", f"sqlite:///{store}/mlflow.db",
                       "--output", str(store / "runs"))
        assert result.exit_code == 0, result.stderr
        run_id = re.search(r"run ([0-9a-f]+) finished", result.output).group(1)
        client = mlflow_client(f"sqlite:///{store}/mlflow.db")
        parent = client.get_run(run_id)
        assert parent.info.status == "FINISHED"
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{run_id}'")
        stages = {r.data.tags["ltcore.stage"]: r for r in children}
        return client, parent, stages, run_folder(store / "runs", run_id)

    return call


def test_ce_with_crt_retrains_the_classifier_in_a_second_stage(train_run):
    _, parent, stages, _ = train_run("--plugin", "ce", "--plugin", "crt", "--epochs", "1",
                                     "--set", "crt.epochs=1")
    assert parent.data.tags["plugins"] == "ce,crt"
    assert set(stages) == {"train", "classifier"}
    retrain = stages["classifier"].data
    assert retrain.params["stage.trainable"] == "classifier"
    assert retrain.params["stage.sampler"] == "class-balanced"
    assert retrain.params["stage.losses"] == "1*crt-ce"
    assert retrain.params["stage.lr"] == "0.2"
    assert "train/loss/crt-ce" in retrain.metrics and "val/acc" in retrain.metrics
    assert parent.data.metrics["val/acc"] == retrain.metrics["val/acc"]


def test_ldam_drw_runs_with_the_normalised_classifier(train_run):
    client, parent, stages, folder = train_run("--plugin", "ldam-drw", "--epochs", "1",
                                               "--set", "ldam-drw.drw_epoch=0")
    params = parent.data.params
    assert params["model.classifier"] == "cosine" and params["ldam-drw.drw_epoch"] == "0"
    assert params["ldam-drw.scale"] == "30.0" and params["ldam-drw.max_margin"] == "0.5"
    train = stages["train"]
    assert train.data.params["stage.losses"] == "1*ldam-drw"
    history = client.get_metric_history(train.info.run_id, "train/loss/ldam-drw")
    assert len(history) == 1 and all(math.isfinite(m.value) for m in history)
    model = torch.load(folder / "model.pt", weights_only=False)
    assert "model.classifier.bias" not in model["modules"]  # the cosine classifier


def test_kcl_runs_with_a_contrastive_and_a_classifier_term(train_run):
    _, parent, stages, _ = train_run("--plugin", "kcl", "--epochs", "1", "--set", "kcl.k=2")
    assert parent.data.params["kcl.k"] == "2"
    train = stages["train"].data
    assert train.params["stage.losses"] == "1*kcl, 1*ce"
    assert "con0=standard" in train.params["stage.views"]  # digits-lt declares its views
    assert train.metrics["train/loss/kcl"] > 0 and train.metrics["train/loss/ce"] > 0


def direct_ece(probabilities, labels, bins=15):
    """sum_b |B_b| / N * |acc(B_b) - conf(B_b)|, bin b holding confidences in (b/15, (b+1)/15]."""
    members = [[] for _ in range(bins)]
    for row, y in zip(probabilities.tolist(), labels.tolist()):
        confidence = max(row)
        index = max(0, math.ceil(confidence * bins) - 1)
        members[index].append((confidence, row.index(confidence) == y))
    total = 0.0
    for entries in members:
        if entries:
            accuracy = sum(hit for _, hit in entries) / len(entries)
            confidence = sum(c for c, _ in entries) / len(entries)
            total += len(entries) / len(labels) * abs(accuracy - confidence)
    return total


def test_class_balanced_focal_runs_and_reports_calibration(train_run):
    from ltcore.engine.runs import load_saved_run
    from ltcore.evaluation import model_outputs
    from ltcore.plugins import Plugins

    _, parent, stages, folder = train_run("--plugin", "cb", "--epochs", "1",
                                          "--set", "cb.loss=focal", "--set", "cb.beta=0.999",
                                          "--set", 'eval.metrics=["ece"]')
    assert parent.data.params["cb.loss"] == "focal" and parent.data.params["cb.beta"] == "0.999"
    train = stages["train"].data
    assert train.params["stage.losses"] == "1*cb-focal"
    assert math.isfinite(train.metrics["train/loss/cb-focal"])
    # expected calibration error, selected with --set eval.metrics=["ece"]
    assert "val/ece" in train.metrics and "test/ece" in parent.data.metrics
    run = load_saved_run(Plugins(), str(folder / "model.pt"))
    for split in ("val", "test"):
        logits, _ = model_outputs(run, run.model, getattr(run.dataset, split), keep_features=False)
        labels = getattr(run.dataset, split).labels
        expected = 100.0 * direct_ece(logits.double().softmax(dim=1), labels)
        assert math.isclose(parent.data.metrics[f"{split}/ece"], expected, rel_tol=1e-4,
                            abs_tol=1e-4)
        assert 0.0 <= expected <= 100.0
