"""RCL's paper tables: registered, every cell's configuration resolves, numbers as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ltcore import Plugins
from ltcore.testing import resolve_cell, table_runs

PAPER = Path("/work/shared/seeds/001_b33b95ba6459ef08.txt")
NAMES = ("table1", "table2", "table3", "table4", "table5")
FIGURES = ("fig3",)


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def test_tables_are_registered(plugins):
    assert sorted(k for k in plugins.tables if k.startswith("rcl:")) == sorted(
        f"rcl:{name}" for name in NAMES + FIGURES)
    for name in NAMES:
        table = plugins.tables[f"rcl:{name}"]
        assert table.name == name and not table.waits and table.kind == "table"
        assert table.source.startswith("RCL") and name[-1] in table.source


@pytest.mark.parametrize("name", NAMES + FIGURES)
def test_every_cell_resolves(plugins, name):
    table = plugins.tables[f"rcl:{name}"]
    runs = table_runs(table)
    for selected, presets, settings, where in runs:
        result = resolve_cell(plugins, selected, presets, settings)
        config = result.run
        for key, value in settings.items():
            head, _, tail = key.partition(".")
            if head in result.plugins:
                assert getattr(result.plugins[head], tail) == value, (where, key)
            elif key in ("dataset", "imbalance_factor", "epochs", "batch_size"):
                assert getattr(config, key) == value, (where, key)
    # the metric columns of one dataset train once
    assert len(runs) == len(table.rows) * len({json.dumps(dict(c.settings), sort_keys=True)
                                               for c in table.columns})


def test_ablation_rows_switch_the_parts(plugins):
    table = plugins.tables["rcl:table1"]
    rows = {row.label: row for row in table.rows}

    def setup(label):
        selected, presets, settings = table.cell_setup(rows[label], table.columns[0])
        return resolve_cell(plugins, selected, presets, settings)

    lc = setup("LC")
    assert list(lc.plugins) == ["la"] and (lc.plugins["la"].tau, lc.plugins["la"].weight) == (
        1.3, 2.0)
    scl = setup("LC+SCL")
    assert scl.plugins["la"].weight == 2.0 and scl.plugins["supcon"].weight == 1.0
    for label in ("LC", "LC+SCL", "LC+SCL+BCL", "LC+SCL+RCL", "LC+SCL+BCL+RCL"):
        config = setup(label).run
        assert (config.dataset, config.imbalance_factor, config.epochs) == (
            "cifar100-lt", 100.0, 200)
        assert (config.optim.lr, config.batch_size, config.model.backbone) == (
            0.2, 256, "resnet32")
        assert (config.views.classifier, config.views.contrastive) == (
            "autoaugment-cutout", "simaugment")
    bcl = setup("LC+SCL+BCL").plugins["bcl"]
    assert (bcl.la_tau, bcl.classifier_weight, bcl.contrastive_weight) == (1.3, 2.0, 1.0)
    rcl = setup("LC+SCL+BCL+RCL").plugins["rcl"]
    assert rcl.prior and rcl.compression and rcl.compression_factor_others == 0.005
    assert not setup("LC+SCL+RCL, prior off").plugins["rcl"].prior
    assert not setup("LC+SCL+RCL, compression off").plugins["rcl"].compression


def test_comparison_rows_take_their_recipes(plugins):
    table = plugins.tables["rcl:table3"]
    rows = {row.label: row for row in table.rows}
    column = next(c for c in table.columns if c.label == "CIFAR-100-LT IF 50")

    def setup(label):
        return resolve_cell(plugins, *table.cell_setup(rows[label], column))

    for label, lr in (("CE", 0.1), ("BCL", 0.15), ("RCL", 0.2), ("BCL+RCL", 0.2)):
        config = setup(label).run
        assert (config.dataset, config.imbalance_factor, config.optim.lr) == (
            "cifar100-lt", 50.0, lr), label
    assert setup("CB+Focal").plugins["cb"].loss == "focal"
    assert setup("Decoupled").plugins["crt"].epochs == 10
    assert setup("BCL").plugins["bcl"].la_tau == 1.0
    assert setup("BCL+RCL").plugins["bcl"].la_tau == 1.3
    imagenet = plugins.tables["rcl:table4"]
    rows = {row.label: row for row in imagenet.rows}
    for column, backbone in zip(imagenet.columns, ("resnet50", "resnext50")):
        for label in rows:
            config = resolve_cell(plugins, *imagenet.cell_setup(rows[label], column)).run
            assert (config.dataset, config.model.backbone) == ("imagenet-lt", backbone)
    embedding = plugins.tables["rcl:table5"]
    assert {c.metric for c in embedding.columns} == {"test/calinski-harabasz",
                                                     "test/davies-bouldin"}
    first = embedding.cell_setup(embedding.rows[0], embedding.columns[0])
    config = resolve_cell(plugins, *first).run
    assert set(config.eval.metrics) == {"calinski-harabasz", "davies-bouldin"}


def test_spot_checked_numbers(plugins):
    tables = {name: plugins.tables[f"rcl:{name}"].numbers for name in NAMES}
    assert tables["table1"][("LC+SCL+RCL", "Harmonic")] == 42.4
    assert tables["table1"][("LC", "Arithmetic")] == 44.0
    assert tables["table2"][("LC+SCL+BCL+RCL", "Harmonic")] == 85.7
    assert tables["table3"][("RCL", "CIFAR-100-LT IF 10")] == 65.6
    assert tables["table3"][("BCL+RCL", "CIFAR-10-LT IF 100")] == 86.2
    assert ("LogitAdjust", "CIFAR-10-LT IF 50") not in tables["table3"]  # '-' in the paper
    assert tables["table4"][("BCL+RCL", "ResNext50")] == 57.5
    assert ("BalSoftMax", "ResNet50") not in tables["table4"]
    assert tables["table5"][("BCL+RCL", "CIFAR100.Lt CHI")] == 4091.8
    assert tables["table5"][("BCL", "CIFAR10.Lt DBI")] == 4.1
    # the extra ablation rows have no paper number
    assert not any("off" in row for row, _ in tables["table1"])


PAPER_LINES = {
    "table1": {"LC": "✓\t-\t-\t-", "LC+SCL": "✓\t✓\t-\t-", "LC+SCL+BCL": "✓\t✓\t✓\t-",
               "LC+SCL+RCL": "✓\t✓\t-\t✓", "LC+SCL+BCL+RCL": "✓\t✓\t✓\t✓"},
    "table3": {"CE": "Cross Entropy (CE)", "LDAM+DRW": "LDAM+DRW", "LogitAdjust": "LogitAdjust",
               "CB+Focal": "CB+Focal", "BALMS": "BALMS", "Decoupled": "Decoupled",
               "BCL": "BCL", "RCL": "RCL (ours)", "BCL+RCL": "BCL+RCL (ours)"},
    "table4": {"CE": "CE", "LDAM+DR": "LDAM+DR", "LogitAdjust": "LogitAdjust",
               "CB+Focal": "CB+Focal", "BalSoftMax": "BalSoftMax", "Decoupled": "Decoupled",
               "BCL": "BCL", "BCL+RCL": "BCL+RCL (ours)"},
}
PAPER_LINES["table2"] = PAPER_LINES["table1"]


def paper_block(text: str, number: int) -> list[str]:
    start = text.index(f"Table {number}:")
    end = text.find("Table ", start + 8)
    return text[start:end if end > 0 else None].splitlines()


def printed(cell: str) -> float | None:
    cell = re.sub(r"</?b>", "", cell).replace(",", "").strip()
    return None if cell == "-" else float(cell)


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not on this machine")
@pytest.mark.parametrize("name", ["table1", "table2", "table3", "table4"])
def test_numbers_are_the_papers_text(plugins, name):
    table = plugins.tables[f"rcl:{name}"]
    block = paper_block(PAPER.read_text(encoding="utf-8"), int(name[-1]))
    for label, prefix in PAPER_LINES[name].items():
        (line,) = [line for line in block if line.startswith(prefix + "\t")
                   or line.split("\t")[0].startswith(prefix + " (")]
        values = [printed(cell) for cell in line.split("\t")[len(prefix.split("\t")):]]
        expected = [table.numbers.get((label, column.label)) for column in table.columns]
        assert values == expected, label


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not on this machine")
def test_table5_numbers_are_the_papers_text(plugins):
    table = plugins.tables["rcl:table5"]
    block = paper_block(PAPER.read_text(encoding="utf-8"), 5)
    for dataset in ("CIFAR100.Lt", "CIFAR10.Lt"):
        (line,) = [line for line in block if line.startswith(dataset + "\t")]
        values = [printed(cell) for cell in line.split("\t")[1:]]
        assert values == [table.numbers[(row, f"{dataset} {index}")]
                          for row in ("BCL", "BCL+RCL") for index in ("CHI", "DBI")]


def test_fig3_draws_the_runs_of_table5(plugins):
    from ltcore.testing import table_plans

    figure = plugins.tables["rcl:fig3"]
    assert (figure.kind, figure.figure, dict(figure.numbers), figure.waits) == (
        "figure", "projection-tsne", {}, "")
    assert figure.source == "RCL (De Alvis et al.), Fig. 3"
    table5, fig3 = table_plans(plugins, ["rcl:table5", "rcl:fig3"])
    assert len(fig3.cells) == 4 and set(fig3.positions.values()) == set(table5.positions.values())
    for row in figure.rows:
        for column in figure.columns:
            config = resolve_cell(plugins, *figure.cell_setup(row, column)).run
            assert (config.dataset, config.imbalance_factor, config.epochs) == (
                column.settings["dataset"], 100.0, 200)
            assert config.model.projection_dim > 0  # the t-SNE is of the projection head


def test_reproduce_dry_run_of_the_figure(ltrun):
    result = ltrun("reproduce", "rcl:fig3", "--seeds", "0", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.output.count("ltrun --plugin bcl") == 4
    assert "rcl:fig3 BCL+RCL / CIFAR100.Lt" in result.output
