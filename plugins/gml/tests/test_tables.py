"""GML's paper tables: registered, every cell's configuration resolves, numbers as printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltcore import Plugins, resolve

PAPER = Path("/work/shared/seeds/004_96c1efc5f8f86d42.txt")
NAMES = ("table1", "table2", "table3", "table5", "table6", "table7", "table-a1", "table-a2")


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def cells(table):
    runs: dict[str, tuple] = {}
    for row in table.rows:
        for column in table.columns:
            selected, presets, settings = table.cell_setup(row, column)
            key = json.dumps([selected, presets, settings], sort_keys=True)
            runs.setdefault(key, (selected, presets, settings))
    return list(runs.values())


def resolved(plugins, selected, presets, settings):
    assignments = [f"{key}={json.dumps(value)}" for key, value in settings.items()]
    return resolve(plugins, list(selected), list(presets), None, assignments)


def test_tables_are_registered(plugins):
    assert sorted(k for k in plugins.tables if k.startswith("gml:")) == sorted(
        f"gml:{name}" for name in NAMES)
    for name in NAMES:
        table = plugins.tables[f"gml:{name}"]
        assert table.name == name and table.source.startswith("GML (Suh & Seo, ICML 2023)")
        assert bool(table.waits) == (name == "table6")


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_resolves(plugins, name):
    for selected, presets, settings in cells(plugins.tables[f"gml:{name}"]):
        resolved(plugins, selected, presets, settings)


def test_cells_get_the_papers_setups(plugins):
    def setup(name, row, column):
        table = plugins.tables[f"gml:{name}"]
        rows = {r.label: r for r in table.rows}
        columns = {c.label: c for c in table.columns}
        return resolved(plugins, *table.cell_setup(rows[row], columns[column]))

    ablation = setup("table5", "no teacher-student, proposed loss", "Accuracy")
    assert ablation.plugins["gml"].key_encoder == "momentum"
    assert setup("table5", "no teacher-student, no proposed loss",
                 "Accuracy").plugins["gml"].gml_weight == 0
    balanced = setup("table7", "CRD", "ImageNet")
    assert (balanced.run.dataset, balanced.run.imbalance_factor) == ("imagefolder-lt", "natural")
    assert (balanced.run.model.backbone, balanced.plugins["crd"].teacher_backbone) == (
        "resnet18", "resnet34")
    kd = setup("table7", "KD", "CIFAR-100-LT").plugins["crd"]
    assert (kd.weight, kd.ce_weight, kd.kd_weight) == (0.0, 0.1, 0.9)
    proposed = setup("table7", "Proposed", "CIFAR-100")
    assert (proposed.run.model.backbone, proposed.plugins["gml"].teacher_backbone,
            proposed.run.epochs) == ("resnet20", "resnet56", 240)
    assert setup("table-a2", "teacher ResNet-34",
                 "Student accuracy").plugins["gml"].teacher_backbone == "resnet34"
    assert setup("table6", "Proposed", "IF 1").run.model.backbone == "resnet50-cifar"


@pytest.mark.skipif(not PAPER.exists(), reason="the paper text is not here")
def test_numbers_are_the_papers(plugins):
    text = PAPER.read_text()
    assert "Proposed\t90\t58.3\t68.7\t55.7\t38.6" in text
    assert plugins.tables["gml:table1"].numbers[("Proposed (90)", "Few")] == 38.6
    assert "Proposed\t400\t54.0\t58.1\t67.0" in text
    assert plugins.tables["gml:table3"].numbers[("Proposed (400)", "IF 10")] == 67.0
    assert "\\checkmark\t\\checkmark\t58.3" in text and "\\times\t\\checkmark\t56.0" in text
    assert "100\t64.1\t82.7\t86.7" in text
    assert plugins.tables["gml:table6"].numbers[("SupCon", "IF 100")] == 82.7
    assert "CRD\t50.6\t57.2" in text and "CRD\t71.2\t71.2" in text
    assert plugins.tables["gml:table7"].numbers[("CRD", "ImageNet-LT")] == 57.2
    assert "ResNet-34\t50.3\tResNeXt-50\t58.0" in text
    assert plugins.tables["gml:table-a2"].numbers[("teacher ResNet-34", "Student accuracy")] == 58.0
