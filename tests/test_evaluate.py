"""``ltrun evaluate`` on saved models: post-hoc logit adjustment and shifted test sets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ltcore.config import resolve
from ltcore.engine.runs import train
from ltcore.errors import ConfigError
from ltcore.evaluation import model_outputs
from ltcore.plugins import Plugins
from ltcore.shift import DEFAULT_RATIOS, parse_ratios, ratio_label, shift_table
from ltcore.testing import FAST_SETTINGS

# -- the shifted test sets, without a model -------------------------------------------------


def test_parse_ratios_accepts_decimals_and_fractions():
    assert parse_ratios("50,10,1,0.1,0.02") == DEFAULT_RATIOS
    assert parse_ratios("50, 1/10 ,1/50") == (50.0, 0.1, 0.02)
    for bad in ("", "a", "0", "-2", "1/0", "50,,1"):
        with pytest.raises(ConfigError):
            parse_ratios(bad)
    assert [ratio_label(r) for r in DEFAULT_RATIOS] == ["50", "10", "1", "1/10", "1/50"]


def sade_counts(n, classes, ratio):
    """SADE's per-class test counts: forward n (1/r)^(i/(C-1)), backward reversed."""
    if ratio >= 1:
        return [int(n * (1 / ratio) ** (i / (classes - 1))) for i in range(classes)]
    return [int(n * ratio ** ((classes - 1 - i) / (classes - 1))) for i in range(classes)]


def direct_figures(predictions, labels, class_counts, many=100, few=20):
    """Accuracy over images; group means and harmonic mean over the classes present."""
    per_class = {}
    for c in sorted(set(labels)):
        members = [p == c for p, y in zip(predictions, labels) if y == c]
        per_class[c] = sum(members) / len(members)
    groups = {"many": [c for c, n in enumerate(class_counts) if n > many],
              "medium": [c for c, n in enumerate(class_counts) if few <= n <= many],
              "few": [c for c, n in enumerate(class_counts) if n < few]}
    figures = {"acc": 100 * sum(p == y for p, y in zip(predictions, labels)) / len(labels)}
    for name, classes in groups.items():
        present = [per_class[c] for c in classes if c in per_class]
        figures[name] = 100 * sum(present) / len(present) if present else None
    figures["hmean"] = (0.0 if min(per_class.values()) == 0 else
                        100 * len(per_class) / sum(1 / a for a in per_class.values()))
    return figures


def assert_figures(actual, expected):
    for key, value in expected.items():
        if value is None:
            assert actual[key] is None, key
        else:
            assert math.isclose(actual[key], value, rel_tol=1e-6, abs_tol=1e-9), key


def synthetic_outputs(classes=10, per_class=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    logits = torch.randn(len(labels), classes, generator=generator)
    logits[torch.arange(len(labels)), labels] += 1.0
    return logits, labels


def test_shift_table_draws_sade_sets_and_computes_their_figures():
    logits, labels = synthetic_outputs()
    class_counts = torch.tensor([500, 300, 200, 120, 100, 60, 30, 20, 15, 5])
    rows = shift_table(logits, labels, class_counts, DEFAULT_RATIOS, seed=3)
    from ltcore.metrics import shifted_test_indices

    for row, ratio in zip(rows, DEFAULT_RATIOS):
        kept = shifted_test_indices(labels, ratio, torch.Generator().manual_seed(3))
        kept_labels = labels[kept].tolist()
        assert [kept_labels.count(c) for c in range(10)] == sade_counts(30, 10, ratio)
        assert row["images"] == len(kept) and row["ratio"] == ratio
        assert row["kind"] == ("forward" if ratio > 1 else "uniform" if ratio == 1 else "backward")
        predictions = logits[kept].argmax(dim=1).tolist()
        assert_figures(row, direct_figures(predictions, kept_labels, class_counts.tolist()))
    assert rows[2]["images"] == len(labels)  # ratio 1 keeps the balanced set
    assert rows[0]["few"] is None  # forward 50 keeps no image of the rarest classes
    assert rows[-1]["many"] is not None and rows[-1]["few"] is not None


def test_shift_table_is_seeded_and_averages_draws():
    logits, labels = synthetic_outputs(seed=1)
    counts = torch.tensor([300, 200, 150, 120, 90, 60, 40, 25, 15, 10])
    same = shift_table(logits, labels, counts, (10.0,), seed=5)
    assert same == shift_table(logits, labels, counts, (10.0,), seed=5)
    two = shift_table(logits, labels, counts, (10.0, 0.1), seed=5, draws=2)
    for row, ratio in zip(two, (10.0, 0.1)):
        draws = [shift_table(logits, labels, counts, (ratio,), seed=s)[0] for s in (5, 6)]
        assert draws[0]["acc"] != draws[1]["acc"] or draws[0]["hmean"] != draws[1]["hmean"]
        assert math.isclose(row["acc"], (draws[0]["acc"] + draws[1]["acc"]) / 2)


# -- a saved model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    plugins = Plugins()
    settings = resolve(plugins, ["la"], assignments=[
        *FAST_SETTINGS, f"tracking.uri=sqlite:///{root}/mlflow.db", f"output={root}/runs",
        "device=cpu"], overrides={"epochs": 1})
    result = train(plugins, ["la"], settings, progress=False)
    return result.run_dir / "model.pt"


@pytest.fixture(scope="module")
def test_outputs(saved_model):
    """The saved model's test logits and labels, and the training class counts."""
    from ltcore.engine.runs import load_saved_run

    run = load_saved_run(Plugins(), str(saved_model))
    logits, _ = model_outputs(run, run.stages[-1].model, run.dataset.test, keep_features=False)
    return logits, run.dataset.test.labels, run.dataset.class_counts


def test_test_shift_on_a_saved_model(ltrun, saved_model, test_outputs):
    from ltcore.metrics import shifted_test_indices

    result = ltrun("evaluate", "--checkpoint", str(saved_model), "--test-shift", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.output)
    assert report["split"] == "test" and report["seed"] == 0 and report["draws"] == 1
    assert [row["ratio"] for row in report["rows"]] == list(DEFAULT_RATIOS)
    logits, labels, counts = test_outputs
    for row in report["rows"]:
        kept = shifted_test_indices(labels, row["ratio"], torch.Generator().manual_seed(0))
        assert row["images"] == len(kept)
        expected = direct_figures(logits[kept].argmax(dim=1).tolist(), labels[kept].tolist(),
                                  counts.tolist())
        assert_figures(row, expected)

    table = ltrun("evaluate", "--checkpoint", str(saved_model), "--ratios", "1/50,50",
                  "--shift-seed", "4")
    assert table.exit_code == 0, table.stderr
    lines = table.output.strip().splitlines()
    assert "seed 4" in lines[0] and lines[1].split() == ["ratio", "kind", "images", "acc",
                                                         "many", "medium", "few", "hmean"]
    assert lines[2].split()[:2] == ["1/50", "backward"] and lines[3].split()[:2] == ["50", "forward"]

    bad = ltrun("evaluate", "--checkpoint", str(saved_model), "--ratios", "fifty")
    assert bad.exit_code == 2 and "--ratios" in bad.stderr


def test_posthoc_logit_adjustment_of_a_saved_model(ltrun, saved_model, test_outputs):
    logits, labels, counts = test_outputs
    raw = ltrun("evaluate", "--checkpoint", str(saved_model), "--json")
    adjusted = ltrun("evaluate", "--checkpoint", str(saved_model), "--json",
                     "--set", "eval.posthoc_la_tau=2")
    assert raw.exit_code == 0 and adjusted.exit_code == 0, adjusted.stderr
    raw, adjusted = json.loads(raw.output), json.loads(adjusted.output)
    prior = counts.double() / counts.sum()
    predictions = (logits.double() - 2 * torch.log(prior)).argmax(dim=1)
    expected = direct_figures(predictions.tolist(), labels.tolist(), counts.tolist())
    # the figures are rounded to FIGURE_DECIMALS (4): within half a unit of the last decimal
    assert math.isclose(adjusted["test/acc"], expected["acc"], abs_tol=0.5e-4)
    assert math.isclose(adjusted["test/few"], expected["few"], abs_tol=0.5e-4)
    assert not torch.equal(predictions, logits.argmax(dim=1))
    assert raw["test/acc"] != adjusted["test/acc"] or raw["test/few"] != adjusted["test/few"]

    shifted = ltrun("evaluate", "--checkpoint", str(saved_model), "--json", "--ratios", "1",
                    "--set", "eval.posthoc_la_tau=2")
    row = json.loads(shifted.output)["rows"][0]
    assert json.loads(shifted.output)["posthoc_la_tau"] == 2.0
    assert math.isclose(row["acc"], expected["acc"], rel_tol=1e-6)


def test_evaluate_reports_unknown_settings(ltrun, saved_model):
    result = ltrun("evaluate", "--checkpoint", str(saved_model), "--set", "eval.nope=1")
    assert result.exit_code == 2 and "eval.nope" in result.stderr
