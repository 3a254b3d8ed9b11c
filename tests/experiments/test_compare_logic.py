"""Grouping, statistics, reference numbers and rendering of ``ltrun compare`` (no training)."""

import csv
import io
import json
import statistics
from types import SimpleNamespace

import pytest

from ltcore import experiments as ex
from ltcore.errors import DataError


def fake_run(run_id, plugins, seed, factor="100", dataset="cifar10-lt", metrics=None,
             seconds=60.0, params=None, status="FINISHED", extra_tags=None):
    tags = {"ltcore.plugins": plugins, "plugins": plugins, "seed": str(seed),
            "imbalance_factor": factor, "dataset": dataset, **(extra_tags or {})}
    info = SimpleNamespace(run_id=run_id, start_time=1_000_000, end_time=1_000_000 + seconds * 1000,
                           status=status, experiment_id="1")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, params=params or {},
                                                           metrics=metrics or {}))


def figures(acc, few):
    return {"test/acc": acc, "test/many": acc + 10, "test/medium": acc, "test/few": few,
            "test/hmean": few + 1, "val/acc": acc - 1}


@pytest.fixture
def runs():
    return [fake_run("a0", "bcl", 0, metrics=figures(80.0, 60.0), seconds=100),
            fake_run("a1", "bcl", 1, metrics=figures(82.0, 64.0), seconds=110),
            fake_run("a2", "bcl", 2, metrics=figures(84.5, 65.0), seconds=120),
            fake_run("b0", "bcl,rcl", 0, metrics=figures(85.0, 70.0), seconds=200),
            fake_run("c0", "bcl", 0, factor="10", metrics=figures(90.0, 88.0), seconds=90)]


def test_groups_hold_mean_sample_std_and_count(runs):
    comparison = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test", "val"])
    labels = [row.label() for row in comparison.rows]
    assert labels == ["plugins=bcl imbalance_factor=10", "plugins=bcl imbalance_factor=100",
                      "plugins=bcl,rcl imbalance_factor=100"]
    row = comparison.rows[1]
    assert row.n == 3 and row.run_ids == ["a0", "a1", "a2"] and row.seeds == ["0", "1", "2"]
    acc = row.stats["test/acc"]
    assert acc.mean == pytest.approx(statistics.mean([80.0, 82.0, 84.5]))
    assert acc.std == pytest.approx(statistics.stdev([80.0, 82.0, 84.5]))
    assert row.stats["val/acc"].mean == pytest.approx(acc.mean - 1)
    assert row.stats[ex.WALL_CLOCK].mean == pytest.approx(110.0)
    single = comparison.rows[2]
    assert single.n == 1 and single.stats["test/few"].std is None


def test_table_markdown_csv_and_json_agree(runs):
    comparison = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test"])
    table = ex.render(comparison, "table")
    mean, std = statistics.mean([80.0, 82.0, 84.5]), statistics.stdev([80.0, 82.0, 84.5])
    assert f"{mean:.2f} ± {std:.2f}" in table
    assert "85.00" in table and "85.00 ±" not in table  # one run: no std
    markdown = ex.render(comparison, "markdown").splitlines()
    assert markdown[0].startswith("| plugins | imbalance_factor | runs | test/acc |")
    assert len(markdown) == 2 + len(comparison.rows)
    rows = list(csv.DictReader(io.StringIO(ex.render(comparison, "csv"))))
    as_json = json.loads(ex.render(comparison, "json"))
    for row, item in zip(rows, as_json):
        assert float(row["test/acc mean"]) == item["metrics"]["test/acc"]["mean"]
        assert int(row["runs"]) == item["n"]
    assert as_json[1]["metrics"]["test/acc"]["values"] == [80.0, 82.0, 84.5]


def test_group_keys_come_from_tags_then_params(runs):
    runs[0].data.params["optim.lr"] = "0.1"
    runs[1].data.params["optim.lr"] = "0.2"
    assert ex.run_value(runs[0], "optim.lr") == "0.1"
    assert ex.run_value(runs[0], "params.optim.lr") == "0.1"
    assert ex.run_value(runs[0], "tags.seed") == "0"
    assert ex.run_value(runs[0], "status") == "FINISHED"
    comparison = ex.compare(None, runs[:2], ["optim.lr"], ["test"])
    assert [r.key["optim.lr"] for r in comparison.rows] == ["0.1", "0.2"]


def test_reference_rows_match_on_group_values_and_shared_values(runs, tmp_path):
    toml = tmp_path / "ref.toml"
    toml.write_text('[[reference]]\nplugins = "bcl"\ndataset = "cifar10-lt"\nimbalance_factor = 100\n'
                    '"test/acc" = 84.32\nsource = "BCL table 1"\n')
    comparison = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test"],
                            reference=ex.load_reference(str(toml)))
    row = comparison.rows[1]
    assert row.reference == {"test/acc": 84.32} and row.reference_source == "BCL table 1"
    assert not comparison.rows[0].reference and not comparison.rows[2].reference
    header, body = ex.table_rows(comparison)
    assert header[-2:] == ["ref test/acc", "Δ test/acc"]
    mean = statistics.mean([80.0, 82.0, 84.5])
    assert body[1][-2:] == ["84.32", f"{mean - 84.32:+.2f}"]
    assert json.loads(ex.render(comparison, "json"))[1]["difference"]["test/acc"] == \
        pytest.approx(mean - 84.32)
    assert "BCL table 1" in ex.comparison_note(comparison)


def test_reference_labels_in_csv_and_toml_mappings(runs, tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("group,test/acc,test/few\nplugins=bcl+rcl imbalance_factor=100,86.2,70.5\n")
    comparison = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test"],
                            reference=ex.load_reference(str(path)))
    assert comparison.rows[2].reference == {"test/acc": 86.2, "test/few": 70.5}  # order-free sets
    mapping = tmp_path / "map.toml"
    mapping.write_text('metric = "acc"\n[values]\n"plugins=bcl imbalance_factor=10" = 91.12\n')
    comparison = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test"],
                            reference=ex.load_reference(str(mapping)))
    assert comparison.rows[0].reference == {"test/acc": 91.12}


def test_bad_reference_files_are_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ex.load_reference(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[reference]\n")
    with pytest.raises(DataError, match="not valid TOML"):
        ex.load_reference(str(bad))


class FakeClient:
    """The two MLflow calls :func:`final_metrics` makes, over fixed histories."""

    def __init__(self, histories):
        self.histories = histories
        self.stage = SimpleNamespace(info=SimpleNamespace(run_id="stage"),
                                     data=SimpleNamespace(metrics={k: 0 for k in histories}))

    def search_runs(self, *args, **kwargs):
        return [self.stage]

    def get_metric_history(self, run_id, key):
        return [SimpleNamespace(step=s, value=v) for s, v in enumerate(self.histories[key])]


def test_best_val_takes_every_figure_at_the_best_validation_epoch():
    client = FakeClient({"val/acc": [50.0, 70.0, 70.0, 60.0], "test/acc": [49.0, 68.0, 71.0, 65.0],
                         "train/loss": [3.0, 2.0, 1.0, 0.5]})
    run = fake_run("r", "ce", 0, metrics={"test/acc": 65.0, "val/acc": 60.0})
    assert ex.final_metrics(client, run, "last") == {"test/acc": 65.0, "val/acc": 60.0}
    best = ex.final_metrics(client, run, "best-val")
    assert best == {"val/acc": 70.0, "test/acc": 68.0, "epoch": 1.0}  # the earliest best epoch
    lost = fake_run("r", "ce", 0, metrics={})  # final figures never reached the parent
    assert ex.final_metrics(client, lost, "last")["test/acc"] == 65.0


def test_best_val_reads_the_best_figures_a_run_recorded():
    """A run that recorded ``best/...`` (the stage model at its best validation epoch, on
    every split) is read from them, not from the history (which holds no per-epoch test)."""
    client = FakeClient({"val/acc": [50.0, 70.0, 60.0], "test/acc": [0.0, 0.0, 65.0]})
    run = fake_run("r", "ce", 0, metrics={
        "test/acc": 65.0, "val/acc": 60.0, "best/val/acc": 70.0, "best/test/acc": 69.0,
        "best/test/hmean": 0.0, "best/epoch": 2.0})
    assert ex.final_metrics(client, run, "best-val") == {
        "val/acc": 70.0, "test/acc": 69.0, "test/hmean": 0.0, "epoch": 1.0}
    assert ex.final_metrics(client, run, "last") == {"test/acc": 65.0, "val/acc": 60.0}


def test_the_note_says_the_protocol_and_warns_where_it_differs_from_the_papers(runs, tmp_path):
    toml = tmp_path / "ref.toml"
    toml.write_text('[[reference]]\nplugins = "bcl"\ndataset = "cifar10-lt"\nimbalance_factor = 100\n'
                    '"test/acc" = 84.32\nsource = "BCL table 1"\n')
    reference = ex.load_reference(str(toml))
    heldout = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test"],
                         reference=reference)
    note = ex.comparison_note(heldout)
    assert "eval.protocol heldout" in note  # runs recorded without the param: heldout
    assert "warning: 1 row(s) with reference numbers were not evaluated under eval.protocol " \
           "paper" in note and "plugins=bcl imbalance_factor=100" in note
    for run in runs:
        run.data.params["eval.protocol"] = "paper"
    paper = ex.compare(None, runs, ["plugins", "imbalance_factor"], ["test"], reference=reference)
    assert "warning" not in ex.comparison_note(paper)
    assert json.loads(ex.render(paper, "json"))[0]["protocols"] == ["paper"]
    runs[0].data.metrics.update({"best/epoch": 3, "best/test/acc": 70.0})
    best = ex.compare(None, runs[:1], ["plugins"], ["test"], select="best-val")
    assert "selected on test images" in ex.comparison_note(best)
