"""Fixtures of the cogloat/proco tests: a prepared (untrained) run on the embedded dataset."""

import pytest
import torch

from ltcore import Plugins, prepare, resolve
from ltcore.testing import FAST_SETTINGS


def prepared_run(selected, *assignments, epochs=1, plugins=None):
    """A run assembled by ``selected`` on digits-lt with the FAST settings (nothing trained)."""
    plugins = plugins or Plugins()
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, "device=cpu", *assignments],
                       overrides={"epochs": epochs})
    return prepare(plugins, selected, settings)


@pytest.fixture
def make_run():
    return prepared_run


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared two-core machine, two threads contend and a tiny
    ResNet step runs about ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_two_stage_run(client, contrastive_losses):
    """Assert one finished parent run with finished nested ``train`` and ``classifier`` runs
    that logged the expected losses and embedding metrics; returns the two stage runs."""
    from ltcore.testing import recorded_runs

    (parent,) = recorded_runs(client, nested=False)
    stages = {r.data.tags["ltcore.stage"]: r for r in recorded_runs(client, nested=True)}
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


@pytest.fixture
def check_two_stage_run():
    return _check_two_stage_run


TWO_STAGES = ["--epochs", "1", "--set", "cogloat.classifier_epochs=1", "--views", "batched"]
"""One pre-training epoch and one classifier epoch, views made batched (in memory)."""


@pytest.fixture
def two_stages():
    return TWO_STAGES
