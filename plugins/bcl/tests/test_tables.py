"""BCL's paper tables: registered, every cell's configuration resolves, numbers as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ltcore import Plugins
from ltcore.testing import resolve_cell, table_runs

PAPER = Path("/work/shared/seeds/003_3ad9a8d16e6bea65.txt")
NAMES = ("table1", "table2", "table3", "table4", "table5", "table6", "supp-table1",
         "supp-table2", "supp-fig1", "supp-fig2")


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def setup(plugins, name, row, column=0):
    table = plugins.tables[f"bcl:{name}"]
    rows = {r.label: r for r in table.rows}
    return resolve_cell(plugins, *table.cell_setup(rows[row], table.columns[column]))


def test_tables_are_registered(plugins):
    assert sorted(k for k in plugins.tables if k.startswith("bcl:")) == sorted(
        f"bcl:{name}" for name in NAMES)
    for name in NAMES:
        table = plugins.tables[f"bcl:{name}"]
        assert table.name == name and not table.waits
        assert table.source.startswith("BCL (Zhu et al. 2022)")
    figure = plugins.tables["bcl:supp-fig2"]
    assert (figure.kind, figure.figure, dict(figure.numbers)) == ("figure", "features-2d", {})


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_resolves_with_its_settings(plugins, name):
    table = plugins.tables[f"bcl:{name}"]
    runs = table_runs(table)
    for selected, presets, settings, where in runs:
        result = resolve_cell(plugins, selected, presets, settings)
        flat = result.flat() if hasattr(result, "flat") else {}
        for key, value in settings.items():
            head, _, tail = key.partition(".")
            if head in result.plugins:
                assert getattr(result.plugins[head], tail) == value, (where, key)
            elif key in flat:
                expected = tuple(value) if isinstance(value, list) else value
                got = flat[key]
                assert (tuple(got) if isinstance(got, list) else got) == expected, (where, key)
    # the metric columns of one dataset train once
    assert len(runs) == len(table.rows) * len({json.dumps(dict(c.settings), sort_keys=True)
                                               for c in table.columns})


def test_rows_take_their_recipes(plugins):
    bcl = setup(plugins, "table3", "BCL", 4).run  # CIFAR-10-LT IF 50
    assert (bcl.dataset, bcl.imbalance_factor, bcl.optim.lr, bcl.epochs) == (
        "cifar10-lt", 50.0, 0.15, 200)
    assert setup(plugins, "table3", "CB-Focal").plugins["cb"].loss == "focal"
    assert setup(plugins, "table4", "BCL (400 epochs)").run.schedule.milestones == (360, 380)
    inat = setup(plugins, "table5", "BCL", 1)
    assert (inat.run.dataset, inat.run.epochs, inat.run.optim.lr, inat.run.optim.weight_decay,
            inat.run.model.backbone) == ("inaturalist2018", 100, 0.2, 1e-4, "resnet50")
    assert inat.run.schedule.cosine_offset == 1 and inat.plugins["bcl"].temperature == 0.07
    crt = setup(plugins, "table5", "cRT", 1).run
    assert (crt.dataset, crt.epochs, crt.optim.lr, crt.batch_size, crt.model.backbone) == (
        "inaturalist2018", 90, 0.2, 512, "resnet50")
    long = setup(plugins, "table6", "BCL (180 epochs)").run
    assert (long.epochs, long.model.backbone, long.schedule.kind) == (180, "resnext50", "cosine")
    assert setup(plugins, "table6", "Focal Loss (90 epochs)").run.views.classifier == (
        "imagenet-randaugment")
    assert setup(plugins, "supp-table1", "Exponential Moving Average").plugins[
        "bcl"].prototypes == "ema"
    assert setup(plugins, "supp-table1", "Ours").run.epochs == 400
    views = [setup(plugins, "supp-table2", row).run.views for row in (
        "SimAug.&SimAug.", "RandAug.&SimAug.", "RandAug.&RandAug.")]
    assert [(v.contrastive, v.contrastive_second) for v in views] == [
        ("imagenet-simaugment", ""), ("imagenet-randaugment", "imagenet-simaugment"),
        ("imagenet-randaugment", "")]
    for row in ("SCL", "BCL"):
        config = setup(plugins, "supp-fig2", row).run
        assert (config.model.projection_dim, config.dataset, config.views.contrastive) == (
            2, "cifar10-lt", "simaugment")


def test_spot_checked_numbers(plugins):
    numbers = {name: plugins.tables[f"bcl:{name}"].numbers for name in NAMES}
    assert numbers["table3"][("BCL", "CIFAR-100-LT IF 100")] == 51.93
    assert numbers["table3"][("LDAM-DRW", "CIFAR-10-LT IF 10")] == 88.16
    assert numbers["table4"][("BCL (400 epochs)", "Few")] == 35.5
    assert ("PaCo (400 epochs)", "Many") not in numbers["table4"]  # '-' in the paper
    assert numbers["table5"][("BCL", "iNaturalist 2018")] == 71.8
    assert numbers["table6"][("BCL (180 epochs)", "All")] == 57.1
    assert numbers["supp-table1"][("Learnable Parameters", "Few")] == 34.3
    assert numbers["supp-table2"][("RandAug.&RandAug.", "All")] == 57.3


def printed(cell: str) -> float | None:
    cell = re.sub(r"</?b>", "", cell).strip()
    return None if cell == "-" else float(cell)


def paper_lines(caption: str, count: int) -> list[list[str]]:
    """The ``count`` rows of tab-separated numbers printed before ``caption``."""
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(caption))
    table = [line.split("\t") for line in lines[:end] if "\t" in line]
    return table[-count:]


# the paper's line of each row (its first cell, as printed) and, where the line holds other
# settings too, which one
PRINTED = {
    "table3": ("Table 3.", 12, {"Focal loss": "Focal loss", "CB-Focal": "CB-Focal",
                            "LDAM-DRW": "LDAM-DRW", "BCL": "BCL(ours)"}),
    "table5": ("Table 5.", 12, {"tau-norm": "$\\tau$ -norm [23]", "cRT": "cRT [23]",
                            "LWS": "LWS [23]", "BCL": "BCL(Ours)"}),
    "supp-table1": ("Table 1. Ablation study for different implementations", 4, {
        "Exponential Moving Average": "Exponential Moving Average",
        "Learnable Parameters": "Learnable Parameters", "Ours": "Ours"}),
    "supp-table2": ("Table 2. Ablation study for different configurations", 4, {
        row: row for row in ("SimAug.&SimAug.", "RandAug.&SimAug.", "RandAug.&RandAug.")}),
}


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not on this machine")
@pytest.mark.parametrize("name", sorted(PRINTED))
def test_numbers_are_the_papers_text(plugins, name):
    table = plugins.tables[f"bcl:{name}"]
    caption, count, rows = PRINTED[name]
    lines = paper_lines(caption, count)
    for label, first in rows.items():
        (line,) = [cells for cells in lines if cells[0].split(" <sup>")[0].startswith(first)]
        values = [printed(cell) for cell in line[1:] if cell.strip()]
        assert values == [table.numbers.get((label, c.label)) for c in table.columns], label


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not on this machine")
@pytest.mark.parametrize("name, caption, rows", [
    ("table4", "Table 4.", {"tau-norm (200 epochs)": 0, "BCL (200 epochs)": 5,
                            "Balanced Softmax (400 epochs)": 7, "PaCo (400 epochs)": 8,
                            "BCL (400 epochs)": 9}),
    ("table6", "Table 6.", {"Focal Loss (90 epochs)": 0, "tau-norm (90 epochs)": 1,
                            "Balanced Softmax (90 epochs)": 2, "LWS (90 epochs)": 3,
                            "BCL (90 epochs)": 8, "Balanced Softmax (180 epochs)": 11,
                            "BCL (180 epochs)": 13})])
def test_shot_group_numbers_are_the_papers_text(plugins, name, caption, rows):
    table = plugins.tables[f"bcl:{name}"]
    lines = [cells for cells in paper_lines(caption, 16) if len(cells) == 5]
    lines = lines[-(max(rows.values()) + 1):]
    for label, index in rows.items():
        values = [printed(cell) for cell in lines[index][1:]]
        expected = [table.numbers.get((label, c.label)) for c in table.columns]
        assert [v for v, e in zip(values, expected) if e is not None] == [
            e for e in expected if e is not None], label
        assert all(v is None for v, e in zip(values, expected) if e is None), label


def test_reproduce_dry_run_lays_out_every_table(ltrun):
    result = ltrun("reproduce", "bcl", "--dry-run")
    assert result.exit_code == 0, result.stderr
    for name in NAMES:
        assert f"bcl:{name} " in result.output
    assert "--preset imagenet-lt-resnext50-180" in result.output
    assert "--set views.contrastive_second=imagenet-simaugment" in result.output


def test_ablation_rows_switch_the_loss_parts(plugins):
    forms = [setup(plugins, "table1", f"L_{i}") for i in (1, 2, 3)]
    assert [f.plugins["bcl"].averaging for f in forms] == ["L1", "L2", "L3"]
    assert {(f.run.dataset, f.run.imbalance_factor, f.run.epochs) for f in forms} == {
        ("cifar100-lt", 100.0, 200)}
    parts = {row: setup(plugins, "table2", row) for row in (
        "LC", "LC+SC", "LC+SC+Complement", "LC+SC+Averaging", "LC+SC+Complement+Averaging")}
    for row, result in parts.items():
        config = result.run
        assert (config.dataset, config.imbalance_factor, config.epochs, config.optim.lr,
                config.schedule.milestones, config.views.classifier, config.model.classifier) == (
            "cifar100-lt", 100.0, 400, 0.15, (360, 380), "autoaugment-cutout", "cosine"), row
    assert list(parts["LC"].plugins) == ["la"]
    assert (parts["LC"].plugins["la"].tau, parts["LC"].plugins["la"].weight) == (1.0, 2.0)
    switches = {row: (r.plugins["bcl"].class_complement, r.plugins["bcl"].class_averaging)
                for row, r in parts.items() if row != "LC"}
    assert switches == {"LC+SC": (False, False), "LC+SC+Complement": (True, False),
                        "LC+SC+Averaging": (False, True),
                        "LC+SC+Complement+Averaging": (True, True)}
    figure = {row: setup(plugins, "supp-fig1", row) for row in ("CE", "LC", "BCL")}
    assert figure["CE"].plugins["la"].tau == 0.0 and figure["LC"].plugins["la"].tau == 1.0
    assert {(r.run.dataset, r.run.epochs, r.run.schedule.milestones) for r in figure.values()} == {
        ("cifar10-lt", 200, (160, 180))}


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not on this machine")
def test_ablation_numbers_are_the_papers_text(plugins):
    forms = paper_lines("Table 1. Ablation study for different class-averaging", 3)
    table1 = plugins.tables["bcl:table1"].numbers
    assert [float(line[1]) for line in forms] == [
        table1[(f"L_{i}", "Top-1 Acc.")] for i in (1, 2, 3)]
    parts = paper_lines("Table 2. Ablation study for the primary components", 5)
    table2 = plugins.tables["bcl:table2"].numbers
    for line in parts:
        used = [name for name, mark in zip(("LC", "SC", "Complement", "Averaging"), line)
                if mark == "\u2713"]
        assert table2[("+".join(used), "Top-1 Acc.")] == float(line[4]), line
    assert dict(plugins.tables["bcl:supp-fig1"].numbers) == {}  # a figure: no numbers
