"""The embedding-metric components a cogloat run computes, on hand-computed small cases."""

import math

import pytest
import torch

from ltcore import EvalOutputs, Plugins

NAMES = ("alignment", "variance", "uniformity", "improved-uniformity")


def _outputs(features, labels):
    counts = torch.bincount(labels)
    logits = torch.zeros(len(labels), len(counts))
    return EvalOutputs("val", logits, labels, features, counts, 100, 20)


def _figures(features, labels, suffix="-squared"):
    """The four figures of the metrics ``<name><suffix>`` (the squared reading by default),
    under their plain names."""
    plugins = Plugins()
    out = _outputs(features, labels)
    figures = {}
    for name in NAMES:
        metric = plugins.component("metric", name + suffix).obj
        assert metric.when == "final" and metric.needs_features
        figures[name] = metric(out)[name + suffix]
    return figures


def test_variance_is_registered_by_cogloat():
    component = Plugins().component("metric", "variance")
    assert component.plugin == "cogloat" and "eq. 10" in component.doc


def test_unit_circle_by_hand():
    # class 0: (1, 0), (0, 1); class 1: (-1, 0), (0, -1); centres (1/2, 1/2), (-1/2, -1/2);
    # every point at squared distance 1/2 from its centre
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    figures = _figures(features, torch.tensor([0, 0, 1, 1]))
    assert figures["variance"] == pytest.approx(0.5)  # eq. 10: mean of 1/2 and 1/2
    assert figures["alignment"] == pytest.approx(1.0)  # eq. 9: (2 + 2) / 2^2 per class
    assert figures["uniformity"] == pytest.approx(2.0)  # eq. 12: ||c0 - c1||^2 = 2
    assert figures["improved-uniformity"] == pytest.approx(4.0)  # eq. 13: 2/2 * (2/1 + 2/1)


def test_unequal_classes_and_unnormalised_features_by_hand():
    # features are L2-normalised first: scaling a feature changes nothing
    features = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, -5.0]])
    labels = torch.tensor([0, 0, 0, 1])
    # class 0: (1,0), (0,1), (0,1) -> centre (1/3, 2/3); squared distances 4/9+4/9, 1/9+1/9 twice
    var0 = (8 / 9 + 2 / 9 + 2 / 9) / 3
    # class 1: one point, variance 0, centre (0, -1)
    figures = _figures(features, labels)
    assert figures["variance"] == pytest.approx(var0 / 2)
    assert figures["alignment"] == pytest.approx(var0)  # 2 var averaged over the two classes
    centre_distance = (1 / 3) ** 2 + (2 / 3 + 1) ** 2
    assert figures["uniformity"] == pytest.approx(centre_distance)
    assert figures["improved-uniformity"] == pytest.approx(2 * centre_distance / var0)
    assert math.isfinite(figures["improved-uniformity"])


def test_default_metrics_read_euclidean_unordered_by_hand():
    # the unit-circle case: Euclidean distance sqrt(1/2) to the centres; one pair per class at
    # distance sqrt 2 counted once over 2^2; centres sqrt 2 apart
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    figures = _figures(features, torch.tensor([0, 0, 1, 1]), suffix="")
    assert figures["variance"] == pytest.approx(math.sqrt(0.5))
    assert figures["alignment"] == pytest.approx(math.sqrt(2) / 4)
    assert figures["alignment"] < figures["variance"]
    assert figures["uniformity"] == pytest.approx(math.sqrt(2))
    assert figures["improved-uniformity"] == pytest.approx(2.0)  # 2/2 * 2 sqrt2 / (2 sqrt .5)
    euclidean = _figures(features, torch.tensor([0, 0, 1, 1]), suffix="-euclidean")
    assert euclidean["alignment"] == pytest.approx(math.sqrt(2) / 2)
    assert euclidean["variance"] == pytest.approx(figures["variance"])


def test_embedding_reading_option_picks_the_metric_names(make_run):
    from ltcore_cogloat.embedding_metrics import READINGS
    from ltcore_cogloat.plugin import EMBEDDING_READINGS

    assert EMBEDDING_READINGS == READINGS
    run = make_run(["cogloat"], "cogloat.classifier_epochs=0")
    assert {"alignment", "variance", "uniformity", "improved-uniformity"} <= set(run.metrics)
    run = make_run(["cogloat"], "cogloat.classifier_epochs=0",
                   "cogloat.embedding_reading=squared")
    assert {"alignment-squared", "variance-squared"} <= set(run.metrics)
    assert "alignment" not in run.metrics
