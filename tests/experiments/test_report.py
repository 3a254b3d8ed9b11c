"""``ltrun report``: one page with the table and the plots, PNG files that open, artifacts logged
to the runs and to the sweep's record."""

import re

import numpy as np
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
    assert "<table>" in html and html.count("<img") == 5
    assert "Per-class accuracy vs class size" in html and "t-SNE" in html

    client = mlflow_client(f"sqlite:///{isolated / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ltcore").experiment_id
    tagged = client.search_runs([experiment], "tags.`ltcore.sweep` = 'r1'")
    (record,) = [r for r in tagged if r.data.tags.get("ltcore.kind") == "sweep"]
    runs = [r for r in tagged if "ltcore.plugins" in r.data.tags
            and "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 2

    images = sorted(re.findall(r"<img src='([^']+)'", html))
    for name in images:
        check_png(out / name)
    # every figure is as wide as the page and links to its full-size file
    assert "max-width:560px" not in html and "img{width:100%;height:auto}" in html
    assert sorted(re.findall(r"<a href='([^']+)'><img src='\1'", html)) == images
    per_class = check_png(out / "plots" / "per_class_accuracy_digits-lt-if100.png")
    # one colour per run: both runs' markers are drawn (tab10 blue and orange)
    assert pixels_near(per_class, TAB10_BLUE) > 50 and pixels_near(per_class, TAB10_ORANGE) > 50
    check_png(out / "plots" / "accuracy_vs_epoch_digits-lt-if100.png")
    check_png(out / "plots" / "confusion_matrices_digits-lt-if100.png")
    for run in runs:
        check_png(out / "plots" / f"tsne_{run.info.run_id}.png")
        logged = [a.path for a in client.list_artifacts(run.info.run_id, "report")]
        assert logged == [f"report/tsne_{run.info.run_id}.png"]
    logged = {a.path for a in client.list_artifacts(record.info.run_id, "report")}
    assert {"report/report.html", "report/comparison.csv",
            "report/per_class_accuracy_digits-lt-if100.png",
            "report/accuracy_vs_epoch_digits-lt-if100.png",
            "report/confusion_matrices_digits-lt-if100.png"} == logged

    markdown = ltrun("report", "--sweep", "r1", "--format", "markdown", "--no-tsne", "--no-log",
                     "--output", "md")
    assert markdown.exit_code == 0, markdown.stderr
    text = (isolated / "md" / "report.md").read_text()
    assert text.startswith("# ltcore report: sweep r1")
    assert "| plugins | runs |" in text and text.count("![") == 3 and "tsne" not in text
    links = re.findall(r"\[!\[[^]]*\]\(([^)]+)\)\]\(([^)]+)\)", text)
    assert len(links) == 3 and all(image == target for image, target in links)


def test_runs_that_differ_only_in_seed_share_a_curve_group():
    """The accuracy-vs-epoch figure averages a group's curves: its runs are those whose label
    without the seed is the same."""
    from types import SimpleNamespace

    from ltcore.experiments.report import run_label

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
