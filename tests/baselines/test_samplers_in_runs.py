"""The registered samplers drive real training runs when chosen with ``sampler=...``."""

from __future__ import annotations

import pytest
import torch

from ltcore import hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import train
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs


class LabelCounter:
    """Counts the training labels the engine feeds to each step (on the device, no sync)."""

    def __init__(self):
        self.counts = self.class_counts = None

    @hookimpl
    def step_end(self, step):
        self.class_counts = step.run.class_counts
        labels = step.labels["sample"]
        counts = torch.bincount(labels, minlength=step.run.dataset.num_classes)
        self.counts = counts if self.counts is None else self.counts + counts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("samplers")
    return root, [f"tracking.uri=sqlite:///{root}/mlflow.db", f"output={root}/runs",
                  "device=cpu"]


@pytest.mark.parametrize("sampler", ["instance-balanced", "class-balanced", "square-root",
                                     "progressively-balanced"])
def test_sampler_chosen_by_name_feeds_the_run(store, sampler):
    root, assignments = store
    counter = LabelCounter()
    plugins = Plugins(extra={"counter": counter})
    settings = resolve(plugins, ["ce", "counter"],
                       assignments=[*FAST_SETTINGS, *assignments, f"sampler={sampler}"],
                       overrides={"epochs": 1})
    result = train(plugins, ["ce", "counter"], settings, progress=False)
    client = mlflow_client(f"sqlite:///{root}/mlflow.db")
    stage = next(r for r in recorded_runs(client, nested=True)
                 if r.data.tags["mlflow.parentRunId"] == result.run_id)
    assert stage.data.params["stage.sampler"] == sampler

    class_counts = counter.class_counts.double()
    seen = counter.counts.double()
    total = class_counts.sum()
    assert seen.sum() == total  # one epoch draws as many samples as the training split has
    if sampler in ("instance-balanced", "progressively-balanced"):
        # every image once / epoch 0 of the progressive schedule is instance-balanced
        expected = class_counts
    elif sampler == "class-balanced":
        expected = torch.full_like(class_counts, total / len(class_counts))
    else:
        expected = total * class_counts.sqrt() / class_counts.sqrt().sum()
    if sampler == "instance-balanced":
        assert torch.equal(seen, class_counts)
    else:  # multinomial draws: within 4.5 standard deviations of the expected counts
        p = expected / total
        sd = (total * p * (1 - p)).sqrt()
        assert ((seen - expected).abs() <= 4.5 * sd).all(), (seen, expected)
