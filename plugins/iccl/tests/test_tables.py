"""ICCL's tables and figures: registered, every cell's configuration resolves, paper numbers."""

import pytest
import torch
from ltcore_iccl.tables import TABLES

from ltcore import Evaluation, EvalOutputs, PaperTable, Plugins, resolve

NAMES = ["table1", "table2", "table3", "table4", "table5", "table6", "table7", "table8",
         "table9", "table10", "fig2", "fig3", "fig4"]


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def test_every_table_and_figure_is_registered(plugins):
    assert [t.name for t in TABLES] == NAMES
    for table in TABLES:
        registered = plugins.tables[f"iccl:{table.name}"]
        assert isinstance(registered, PaperTable) and registered == table
        assert not table.waits
    assert (plugins.tables["iccl:fig2"].kind, plugins.tables["iccl:fig2"].figure) == (
        "figure", "weight-norms")
    assert plugins.tables["iccl:fig3"].figure == "projection-tsne"


def cells(table):
    for row in table.rows:
        for column in table.columns:
            yield row, column, table.cell_setup(row, column)


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_resolves(plugins, name):
    table = plugins.tables[f"iccl:{name}"]
    for row, column, (selected, presets, settings) in cells(table):
        assert set(selected) <= set(plugins.available()), row.label
        resolved = resolve(plugins, list(selected), list(presets), None,
                           [f"{key}={value}" for key, value in settings.items()])
        if "dataset" in settings:
            assert resolved.run.dataset == settings["dataset"]
        if "imbalance_factor" in settings:
            assert resolved.run.imbalance_factor == settings["imbalance_factor"]


def resolved(plugins, name, row, column):
    table = plugins.tables[f"iccl:{name}"]
    (r,) = [r for r in table.rows if r.label == row]
    (c,) = [c for c in table.columns if c.label == column]
    selected, presets, settings = table.cell_setup(r, c)
    return resolve(plugins, list(selected), list(presets), None,
                   [f"{key}={value}" for key, value in settings.items()])


def test_cells_configure_the_ablations(plugins):
    # Table 4: the "L_ce^it only" row trains eq. 8 with w_u = 0, no L_cc^it and no warm-up
    options = resolved(plugins, "table4", "L_ce^it", "Tail").plugins["iccl"]
    assert (options.uniform_weight, options.warmup_epochs) == (0.0, 0)
    assert options.interpolative_weights() == (1.0, 0.0)
    full = resolved(plugins, "table4", "L_ce + L_ce^it + L_cc^it + warm-up", "Tail")
    assert full.plugins["iccl"].warmup_epochs == 40 and "iccl-tail" in full.run.eval.metrics
    # Table 5 and 6: Beta(a, b) and the uniform sampler
    assert resolved(plugins, "table5", "Beta(0.2, 1.0)",
                    "CIFAR-100-LT IF 100").plugins["iccl"].beta == (0.2, 1.0)
    uniform = resolved(plugins, "table6", "Uniform", "iNaturalist")
    assert uniform.plugins["iccl"].tail_sampler == "uniform"
    assert uniform.run.dataset == "inaturalist2018" and uniform.run.epochs == 90
    assert resolved(plugins, "table6", "gamma = 0.5", "CIFAR-10-LT").plugins["iccl"].gamma == 0.5
    # Table 1 per column: ICCL's T follows the dataset's preset
    assert resolved(plugins, "table1", "ICCL",
                    "CIFAR-10-LT IF 50").plugins["iccl"].warmup_epochs == 100
    assert resolved(plugins, "table1", "ICCL",
                    "CIFAR-100-LT IF 10").plugins["iccl"].warmup_epochs == 80
    assert resolved(plugins, "table1", "Mixup", "CIFAR-10-LT IF 10").run.mix.mixup_alpha == 0
    # Table 3: 200 epochs with T 100
    late = resolved(plugins, "table3", "ICCL", "200 epochs Few")
    assert (late.run.epochs, late.plugins["iccl"].warmup_epochs) == (200, 100)
    # Table 7: ICCL before rebalancing has no stage 2; cRT on the improved settings
    assert resolved(plugins, "table7", "ICCL", "Overall").plugins["iccl"].classifier_epochs == 0
    crt = resolved(plugins, "table7", "CE, rebalanced", "Few")
    assert (crt.run.batch_size, crt.run.optim.lr, crt.plugins["crt"].lr) == (256, 0.1, 0.01)
    ce = resolved(plugins, "table7", "CE", "Many").run
    assert (ce.dataset, ce.model.backbone, ce.batch_size, ce.epochs) == (
        "imagenet-lt", "resnext50", 256, 90)


def test_paper_numbers_as_printed():
    """Spot checks against the paper's text."""
    by_name = {t.name: t for t in TABLES}
    t1 = by_name["table1"].numbers
    assert t1[("ICCL", "CIFAR-100-LT IF 100")] == 46.6
    assert t1[("ICCL", "CIFAR-10-LT IF 10")] == 89.7
    assert t1[("Mixup", "CIFAR-10-LT IF 100")] == 73.1
    assert t1[("LDAM-DRW", "CIFAR-100-LT IF 50")] == 46.6
    assert len(t1) == 9 * 6
    t2 = by_name["table2"].numbers
    assert t2[("ICCL", "Few")] == 39.0 and t2[("cRT (improved)", "Overall")] == 52.4
    t3 = by_name["table3"].numbers
    assert t3[("ICCL", "90 epochs Overall")] == 70.5 and t3[("ICCL", "200 epochs Many")] == 72.1
    t4 = by_name["table4"].numbers
    assert t4[("L_ce + L_cc^it + warm-up", "Head")] == 59.9
    assert t4[("L_ce + L_ce^it + L_cc^it + warm-up", "Tail")] == 49.8
    assert by_name["table5"].numbers == {}  # not printed in the paper's text
    t6 = by_name["table6"].numbers
    assert t6[("Uniform", "CIFAR-10-LT")] == 79.9 and t6[("gamma = 0.5", "ImageNet-LT")] == 54.1
    t7 = by_name["table7"].numbers
    assert t7[("Mixup", "Few")] == 24.4 and t7[("Mixup, rebalanced", "Medium")] == 50.5
    # the rebalanced mixup of Table 7 is Table 4's L_ce^it row
    assert t7[("Mixup, rebalanced", "Overall")] == t4[("L_ce^it", "Overall")]
    assert by_name["fig2"].numbers == {} and by_name["fig3"].numbers == {}


def test_tail_metric_is_the_mean_over_medium_and_few_classes(plugins, make_run):
    counts = torch.tensor([150, 120, 60, 30, 10, 5])
    labels = torch.arange(6).repeat_interleave(4)
    predictions = labels.clone()
    predictions[[8, 9, 12, 16, 17, 18, 20]] = 0  # class 2: 2/4, 3: 3/4, 4: 1/4, 5: 3/4 right
    logits = torch.nn.functional.one_hot(predictions, 6).float()
    outputs = EvalOutputs("test", logits, labels, None, counts, 100, 20)
    figures = plugins.component("metric", "iccl-tail").obj(outputs)
    assert figures == {"iccl-tail": pytest.approx(100.0 * (0.5 + 0.75 + 0.25 + 0.75) / 4)}
    # through an evaluation, next to the core's figures
    run = make_run(["iccl"], "eval.metrics=[\"iccl-tail\"]", "iccl.classifier_epochs=0")
    evaluation = Evaluation(run, run.model, {"test": outputs}, final=True)
    assert evaluation.figures()["test/iccl-tail"] == pytest.approx(56.25)
    assert evaluation.figures()["test/few"] == pytest.approx(50.0)


def test_rebalancing_tables_set_stage_two(plugins):
    # Table 8: gamma' and w_d per row; the cRT column is CE then a re-initialised classifier
    options = resolved(plugins, "table8", "gamma' = 0, w_d = 0.5", "CIFAR-10-LT ICCL")
    assert (options.plugins["iccl"].classifier_gamma, options.plugins["iccl"].distill_weight,
            options.run.dataset) == (0.0, 0.5, "cifar10-lt")
    default = resolved(plugins, "table8", "gamma' = 1, w_d = 0.5", "iNaturalist ICCL")
    assert (default.plugins["iccl"].classifier_gamma, default.plugins["iccl"].distill_weight,
            default.run.dataset, default.run.epochs) == (1.0, 0.5, "inaturalist2018", 90)
    crt = resolved(plugins, "table8", "gamma' = 1, w_d = 0", "ImageNet-LT cRT")
    iccl = crt.plugins["iccl"]
    assert iccl.warmup_epochs >= crt.run.epochs == 90 and iccl.warmup_centroid_weight == 0.0
    assert iccl.reset_classifier and iccl.uniform_weight == 1.0
    assert (iccl.classifier_gamma, iccl.distill_weight, iccl.classifier_trainable) == (
        1.0, 0.0, "classifier")
    # stage 2 at x0.1 of ICCL's improved settings: cRT (improved)'s batch and learning rates
    assert (crt.run.batch_size, crt.run.optim.lr * iccl.classifier_lr_scale) == (
        256, pytest.approx(0.01))
    # Table 9: post-hoc logit adjustment replaces stage 2
    la = resolved(plugins, "table9", "Logit adjustment", "ImageNet-LT")
    assert (la.plugins["iccl"].classifier_epochs, la.run.eval.posthoc_la_tau) == (0, 1.0)
    balanced = resolved(plugins, "table9", "Balanced sampling", "CIFAR-100-LT").plugins["iccl"]
    assert (balanced.classifier_gamma, balanced.distill_weight) == (0.0, 0.0)
    # Table 10 and Fig. 4: distillation off, and its temperature
    off = resolved(plugins, "table10", "Without distillation", "iNaturalist Few")
    assert (off.plugins["iccl"].distill_weight, off.run.dataset) == (0.0, "inaturalist2018")
    assert [resolved(plugins, "fig4", f"tau_d = {t:g}", "Overall").plugins[
        "iccl"].distill_temperature for t in (1, 10, 20)] == [1.0, 10.0, 20.0]


def test_rebalancing_tables_share_their_runs(plugins):
    from ltcore.testing import table_plans

    plans = table_plans(plugins, ["iccl:table8", "iccl:table9", "iccl:table10"])
    table8, table9, table10 = (plan.positions for plan in plans)
    # "Balanced sampling" is Table 8's gamma' = 0, w_d = 0; ICCL's defaults are one run each
    assert table9[("Balanced sampling", "CIFAR-10-LT")] == table8[
        ("gamma' = 0, w_d = 0", "CIFAR-10-LT ICCL")]
    assert table9[("ICCL", "ImageNet-LT")] == table8[("gamma' = 1, w_d = 0.5", "ImageNet-LT ICCL")]
    assert table10[("With distillation", "iNaturalist Many")] == table9[("ICCL", "iNaturalist")]
    assert table10[("Without distillation", "ImageNet-LT Few")] == table8[
        ("gamma' = 1, w_d = 0", "ImageNet-LT ICCL")]
    assert len({*table8.values(), *table9.values(), *table10.values()}) == 20 + 4


PAPER = "/work/shared/seeds/000_3aa7e2d6b85768d4.txt"


@pytest.mark.skipif(not __import__("os").path.exists(PAPER), reason="no paper text here")
def test_rebalancing_numbers_are_the_papers_text():
    by_name = {t.name: t for t in TABLES}
    lines = [line.split("\t") for line in open(PAPER, encoding="utf-8").read().splitlines()]
    t8 = [line for line in lines
          if len(line) == 7 and line[0] in ("0", "1") and line[1] in ("0", "0.5")]
    assert len(t8) == 4
    for line in t8:
        row = f"gamma' = {line[0]}, w_d = {line[1]}"
        assert [by_name["table8"].numbers[(row, c.label)] for c in by_name["table8"].columns] == [
            float(v) for v in line[2:]], row
    labels = {"Balanced sampling [12]": "Balanced sampling", "Logit adjustment [10]":
              "Logit adjustment", "ICCL (ours)": "ICCL"}
    after = lines[lines.index(["#### Table 9"]):]
    t9 = [line for line in after if line[0] in labels and len(line) == 5]
    assert len(t9) == 3
    for line in t9:
        assert [by_name["table9"].numbers[(labels[line[0]], c.label)]
                for c in by_name["table9"].columns] == [float(v) for v in line[1:]]
    t10 = by_name["table10"].numbers
    assert (t10[("Without distillation", "ImageNet-LT Few")],
            t10[("Without distillation", "iNaturalist Medium")],
            t10[("With distillation", "iNaturalist Many")]) == (43.1, 70.7, 67.6)
    assert by_name["fig4"].numbers == {} and by_name["fig4"].kind == "table"


def test_reproduce_dry_run_of_the_new_tables(ltrun):
    result = ltrun("reproduce", "iccl:table8,iccl:table9,iccl:table10,iccl:fig4", "--seeds", "0",
                   "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "iccl:table8 gamma' = 1, w_d = 0 / ImageNet-LT cRT" in result.output
    assert "eval.posthoc_la_tau=1" in result.output
