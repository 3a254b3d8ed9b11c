"""``ltrun report``: one page with the table and the plots, PNG files that open with SVG and PDF
beside them, one line per method on the table's split, artifacts logged to the runs and to the
sweep's record."""

import re

import numpy as np
import pytest
from PIL import Image

from ltcore.testing import FAST, mlflow_client

TAB10_BLUE, TAB10_ORANGE = (31, 119, 180), (255, 127, 14)


def pixels_near(image: Image.Image, colour, tolerance=12) -> int:
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(colour)).max(axis=2) <= tolerance).sum())


def check_png(path, min_size=(300, 200)):
    with Image.open(path) as image:
        image.verify()
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    return image


def check_formats(png):
    """The PNG opens; the SVG and PDF beside it are whole; returns the SVG's text."""
    check_png(png)
    assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    svg = png.with_suffix(".svg").read_text()
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    return svg


def method_lines(svg: str) -> int:
    """The per-class figure's mean lines (each carries the gid ``per-class-mean-<i>``)."""
    return len(re.findall(r'id="per-class-mean-\d+"', svg))


def test_report_page_plots_and_artifacts(ltrun, isolated, tiny):
    trained = ltrun("sweep", "--plugins", "ce", "--plugins", "la", "--seeds", "0", "--in-process",
                    "--sweep-id", "r1", *tiny, *FAST)
    assert trained.exit_code == 0, trained.output + trained.stderr
    result = ltrun("report", "--sweep", "r1", "--tsne-points", "150")
    assert result.exit_code == 0, result.stderr
    out = isolated / "reports" / "r1"
    page = out / "report.html"
    assert f"wrote {page.relative_to(isolated)}" in result.output
    html = page.read_text()
    # per-class accuracy, shot groups, accuracy vs epoch, confusion matrices, t-SNE per run,
    # and the classifier weight norms every run records
    assert "<table>" in html and html.count("<img") == 7
    assert "Classifier weight norms" in html
    assert "Per-class accuracy vs class size" in html and "t-SNE" in html
    assert "Many / medium / few accuracy" in html

    client = mlflow_client(f"sqlite:///{isolated / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ltcore").experiment_id
    tagged = client.search_runs([experiment], "tags.`ltcore.sweep` = 'r1'")
    (record,) = [r for r in tagged if r.data.tags.get("ltcore.kind") == "sweep"]
    runs = [r for r in tagged if "ltcore.plugins" in r.data.tags
            and "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 2

    images = sorted(re.findall(r"<img src='([^']+)'", html))
    for name in images:
        check_formats(out / name)
        for suffix in (".svg", ".pdf"):  # linked from the caption
            assert f"<a href='{name[:-4]}{suffix}'>" in html
    # every figure is as wide as the page and links to its full-size file
    assert "max-width:560px" not in html and "img{width:100%;height:auto}" in html
    assert sorted(re.findall(r"<a href='([^']+)'><img src='\1'", html)) == images
    per_class_png = out / "plots" / "per_class_accuracy_digits-lt-if100.png"
    per_class = check_png(per_class_png)
    # one colour per method: both methods' lines are drawn (tab10 blue and orange)
    assert pixels_near(per_class, TAB10_BLUE) > 50 and pixels_near(per_class, TAB10_ORANGE) > 50
    # one line per method, on the split of the table (both splits shown: test, as papers report)
    svg = check_formats(per_class_png)
    assert method_lines(svg) == 2 and "test split: per-class accuracy" in svg
    assert "digits-lt, imbalance factor 100, test split (the table&#x27;s)" in html
    bars = check_formats(out / "plots" / "shot_groups_digits-lt-if100.png")
    assert "test split: accuracy per shot group" in bars
    assert len(re.findall(r'id="shot-group-bar-\d+-many"', bars)) == 2
    figures = ["per_class_accuracy_digits-lt-if100", "shot_groups_digits-lt-if100",
               "accuracy_vs_epoch_digits-lt-if100", "confusion_matrices_digits-lt-if100",
               "weight_norms_digits-lt-if100"]
    check_formats(out / "plots" / f"{figures[2]}.png")
    assert "test split: confusion matrices" in check_formats(out / "plots" / f"{figures[3]}.png")
    for run in runs:
        check_formats(out / "plots" / f"tsne_{run.info.run_id}.png")
        logged = [a.path for a in client.list_artifacts(run.info.run_id, "report")]
        assert logged == [f"report/tsne_{run.info.run_id}.{s}" for s in ("pdf", "png", "svg")]
        # the engine records the training data as the run's dataset input
        (found,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert found.dataset.name == "digits-lt"
    logged = {a.path for a in client.list_artifacts(record.info.run_id, "report")}
    assert {"report/report.html", "report/comparison.csv",
            *(f"report/{name}.{s}" for name in figures for s in ("png", "svg", "pdf"))} == logged

    markdown = ltrun("report", "--sweep", "r1", "--format", "markdown", "--no-tsne", "--no-log",
                     "--output", "md", "--table-split", "val")
    assert markdown.exit_code == 0, markdown.stderr
    text = (isolated / "md" / "report.md").read_text()
    assert text.startswith("# ltcore report: sweep r1")
    assert "| plugins | runs |" in text and text.count("![") == 5 and "tsne" not in text
    links = re.findall(r"\[!\[[^]]*\]\(([^)]+)\)\]\(([^)]+)\)", text)
    assert len(links) == 5 and all(image == target for image, target in links)
    assert "(also as [SVG](plots/shot_groups_digits-lt-if100.svg) and [PDF](" in text
    # a table of the validation split: the per-method figures follow it
    svg = (isolated / "md" / "plots" / "per_class_accuracy_digits-lt-if100.svg").read_text()
    assert method_lines(svg) == 2 and "val split: per-class accuracy" in svg


def test_runs_that_differ_only_in_seed_share_a_curve_group():
    """The accuracy-vs-epoch figure averages a group's curves: its runs are those whose label
    without the seed is the same."""
    from types import SimpleNamespace

    from ltcore.experiments.report import label_keys, run_label

    def run(plugins, seed, factor="100"):
        tags = {"plugins": plugins, "seed": str(seed), "imbalance_factor": factor}
        return SimpleNamespace(data=SimpleNamespace(tags=tags, params={}),
                               info=SimpleNamespace(run_id=f"{plugins}{seed}", status="FINISHED",
                                                    run_name=""))

    group_by = ["plugins", "imbalance_factor"]
    runs = [run("bcl", 0), run("bcl", 1), run("bcl,rcl", 0), run("bcl", 0, "10")]
    groups = [run_label(r, group_by, seed=False) for r in runs]
    assert groups == ["bcl IF=100", "bcl IF=100", "bcl,rcl IF=100", "bcl IF=10"]
    assert [run_label(r, group_by) for r in runs[:2]] == ["bcl IF=100 seed=0",
                                                           "bcl IF=100 seed=1"]
    # legends name the settings that differ among the report's runs; the first when none does
    assert label_keys(runs, group_by) == group_by
    assert label_keys(runs[:3], group_by) == ["plugins"]
    assert label_keys(runs[:2], ["imbalance_factor", "plugins"]) == ["imbalance_factor"]


def test_per_class_figure_draws_one_line_per_method_on_the_tables_split(tmp_path):
    """A method's seeds make one mean line with a band of one standard deviation; the
    per-method figures take the split the table shows (test before val)."""
    from ltcore import plots
    from ltcore.experiments import WALL_CLOCK, Comparison, GroupRow, Stat
    from ltcore.experiments.report import RunDetail, figure_split, per_class_by_method

    counts = [50, 20, 5]

    def detail(group, seed, accuracy=None):
        return RunDetail(f"{group}{seed}", f"{group} seed={seed}", group, "digits-lt", "100",
                         counts=counts if accuracy else None, per_class=accuracy)

    details = [detail("bcl", 0, [1.0, 0.5, 0.0]), detail("bcl", 1, [0.8, 0.5, 0.2]),
               detail("ce", 0, [1.0, 0.2, 0.0]), detail("ce", 1)]  # a run without a model
    methods, shared = per_class_by_method(details)
    assert list(methods) == ["bcl", "ce"] and len(methods["bcl"]) == 2 and shared == counts
    mean, std = plots.mean_and_std(methods["bcl"])
    assert mean.tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert std.tolist() == pytest.approx([0.1414, 0.0, 0.1414], abs=1e-4)
    svg = check_formats(plots.per_class_accuracy_by_method_png(methods, shared,
                                                               tmp_path / "pc.png"))
    assert method_lines(svg) == 2 and len(re.findall(r'id="per-class-band-\d+"', svg)) == 1

    def table(shown, recorded):
        stats = {c: Stat.of([50.0]) if c in recorded else None for c in shown}
        return Comparison([GroupRow({"plugins": "ce"}, ["r"], ["0"], stats)], ["plugins"],
                          [*shown, WALL_CLOCK])

    assert figure_split(table(["val/acc", "test/acc"], {"val/acc", "test/acc"})) == "test"
    assert figure_split(table(["val/acc"], {"val/acc"})) == "val"
    assert figure_split(table(["val/acc", "test/acc"], {"val/acc"})) == "val"  # no test split
