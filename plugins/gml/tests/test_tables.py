"""GML's paper tables: registered, every cell's configuration resolves, numbers as printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltcore import Plugins
from ltcore.testing import resolve_cell, table_runs

PAPER = Path("/work/shared/seeds/004_96c1efc5f8f86d42.txt")
NAMES = ("table1", "table2", "table3", "table4", "table5", "table6", "table7", "table8",
         "table-a1", "table-a2", "fig2", "fig3")


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def test_tables_are_registered(plugins):
    assert sorted(k for k in plugins.tables if k.startswith("gml:")) == sorted(
        f"gml:{name}" for name in NAMES)
    for name in NAMES:
        table = plugins.tables[f"gml:{name}"]
        assert table.name == name and table.source.startswith("GML (Suh & Seo, ICML 2023)")
        assert not table.waits
        # Figure 2 is drawn against alpha; no report plot draws Figure 3's single curve
        assert (table.kind, table.figure) == (("figure", "against-setting") if name == "fig2"
                                              else ("table", ""))


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_resolves(plugins, name):
    for selected, presets, settings, _ in table_runs(plugins.tables[f"gml:{name}"]):
        resolve_cell(plugins, selected, presets, settings)


def test_cells_get_the_papers_setups(plugins):
    def setup(name, row, column):
        table = plugins.tables[f"gml:{name}"]
        rows = {r.label: r for r in table.rows}
        columns = {c.label: c for c in table.columns}
        return resolve_cell(plugins, *table.cell_setup(rows[row], columns[column]))

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


def test_new_cells_get_the_papers_setups(plugins):
    def setup(name, row, column):
        table = plugins.tables[f"gml:{name}"]
        rows = {r.label: r for r in table.rows}
        columns = {c.label: c for c in table.columns}
        return resolve_cell(plugins, *table.cell_setup(rows[row], columns[column]))

    vit = setup("table4", "iNaturalist 2018, Proposed (ViT-B)", "Accuracy")
    assert (vit.run.dataset, vit.run.model.backbone, vit.run.views.image_size) == (
        "inaturalist2018", "clip:ViT-B-16", 384)
    assert vit.plugins["gml"].centres == "text"
    rn50 = setup("table4", "ImageNet-LT, Proposed (ResNet-50)", "Accuracy")
    assert (rn50.run.model.backbone, rn50.run.batch_size, rn50.run.epochs) == (
        "clip:RN50", 2048, 50)
    crt = setup("table4", "ImageNet-LT, cRT (ResNet-50)", "Accuracy")
    assert (crt.run.dataset, crt.run.model.backbone, crt.run.model.pretrained) == (
        "imagenet-lt", "clip:RN50", "hub")
    seg = setup("table8", "Proposed (alpha = 0.2)", "mIoU")
    gml = seg.plugins["gml"]
    assert (gml.gml_alpha, gml.queue_size, gml.queue_min, gml.temperature) == (
        0.2, 8192, 27, 0.07)
    assert gml.classifier_la_tau == 0.2 and set(seg.plugins) == {"seg", "gml"}
    assert (seg.run.model.cosine_scale, seg.run.model.classifier, seg.run.model.backbone) == (
        20.0, "cosine", "fcn-resnet50-d8")
    ce = setup("table8", "Cross-Entropy", "mAcc")
    assert (set(ce.plugins), ce.run.dataset, ce.run.model.backbone, ce.run.model.classifier) == (
        {"seg"}, "ade20k", "fcn-resnet50-d8", "linear")
    assert (ce.run.epochs, ce.plugins["seg"].interval_steps, ce.run.batch_size) == (
        10, 16000, 16)
    alphas = [setup("fig2", r.label, "mIoU").plugins["gml"].gml_alpha
              for r in plugins.tables["gml:fig2"].rows]
    assert alphas == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    fixed = setup("fig3", "fixed tau_g = 0.07", "Accuracy")
    assert (fixed.plugins["gml"].learn_temperature, fixed.plugins["gml"].temperature) == (
        False, 0.07)
    learned = setup("fig3", "learned tau_g", "tau_g")
    assert learned.plugins["gml"].learn_temperature and learned.run.dataset == "imagenet-lt"
    assert plugins.tables["gml:fig3"].columns[1].metric == "train/gml_temperature"


@pytest.mark.skipif(not PAPER.exists(), reason="the paper text is not here")
def test_new_numbers_are_the_papers(plugins):
    text = PAPER.read_text()
    table4 = plugins.tables["gml:table4"].numbers
    assert "LWS\tResNet-50\t51.5" in text
    assert table4[("ImageNet-LT, LWS (ResNet-50)", "Accuracy")] == 51.5
    assert "Proposed\tResNet-50\t70.9" in text and "Proposed\tViT-B\t82.1" in text
    assert table4[("ImageNet-LT, Proposed (ResNet-50)", "Accuracy")] == 70.9
    assert table4[("iNaturalist 2018, Proposed (ViT-B)", "Accuracy")] == 82.1
    assert len(table4) == 6
    table8 = plugins.tables["gml:table8"].numbers
    assert "Proposed ($\\alpha = 0.2$)\t38.1\t51.4" in text
    assert table8[("Proposed (alpha = 0.2)", "mAcc")] == 51.4
    assert "Cross-Entropy\t36.1\t45.4" in text and table8[("Cross-Entropy", "mIoU")] == 36.1
    assert "boosting the accuracy from 58.2 to 58.3" in text
    fig3 = plugins.tables["gml:fig3"].numbers
    assert fig3 == {("learned tau_g", "Accuracy"): 58.3, ("fixed tau_g = 0.07", "Accuracy"): 58.2}
    assert plugins.tables["gml:fig2"].numbers == {}


def test_reproduce_plans_the_tables_with_the_segmentation_task(ltrun):
    result = ltrun("reproduce", "gml:fig3", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "gml:fig3 learned tau_g / Accuracy; gml:fig3 learned tau_g / tau_g" in result.output
    result = ltrun("reproduce", "gml:table8,gml:fig2", "--dry-run", "--seeds", "0")
    assert result.exit_code == 0, result.stderr
    # Table 8's alpha 0.2 and 1.0 rows are Figure 2's points too: 1 + 6 distinct runs
    assert len([line for line in result.output.splitlines() if line.startswith("[")]) == 7
    assert "--plugin seg --plugin gml" in result.output
