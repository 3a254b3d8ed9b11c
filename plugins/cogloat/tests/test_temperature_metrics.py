"""Each class's pre-training temperature in the epoch records (``temperature/class-<index>``)."""

import pytest

from ltcore import ConfigError


def _epoch_record(run, stage):
    metrics = {"train/loss": 0.0}
    run.hooks.epoch_end(run=run, stage=stage, epoch=0, metrics=metrics)
    return metrics


def _temperatures(metrics):
    return {int(k.rsplit("-", 1)[1]): v for k, v in metrics.items()
            if k.startswith("temperature/class-")}


def test_adaptive_temperatures_by_hand(make_run):
    run = make_run(["cogloat"], "cogloat.gamma=0.2")
    counts = run.class_counts.tolist()
    largest = max(counts)
    recorded = _temperatures(_epoch_record(run, run.main_stage))
    assert sorted(recorded) == list(range(len(counts)))
    for index, count in enumerate(counts):  # eq. 8: 0.2 + 0.8 n_c / n_max
        assert recorded[index] == pytest.approx(0.2 + 0.8 * count / largest)
    assert recorded[counts.index(largest)] == pytest.approx(1.0)


def test_constant_temperature_and_other_stages(make_run):
    run = make_run(["cogloat"], "cogloat.adaptive_temperature=false", "cogloat.temperature=0.3")
    recorded = _temperatures(_epoch_record(run, run.main_stage))
    assert len(recorded) == len(run.class_counts)
    assert list(recorded.values()) == pytest.approx([0.3] * len(recorded))
    classifier = next(s for s in run.stages if s.name == "classifier")
    assert _temperatures(_epoch_record(run, classifier)) == {}


def test_temperature_metrics_can_be_switched_off(make_run):
    run = make_run(["cogloat"], "cogloat.temperature_metrics=false")
    assert _temperatures(_epoch_record(run, run.main_stage)) == {}


def test_bad_embedding_reading_is_a_config_error(make_run):
    with pytest.raises(ConfigError, match="embedding_reading"):
        make_run(["cogloat"], "cogloat.embedding_reading=cosine")
