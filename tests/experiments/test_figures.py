"""The papers' figures: ``record_figure`` writes and logs a figure's data, the core records the
classifier's weight norms at a run's end, and the report draws each figure from what one tiny
trained run recorded (weight norms, t-SNE of projections with centroids, per-class
temperatures, 2-d projections with prototypes)."""

from __future__ import annotations

import json
import math
import shutil
import types
import warnings

import attrs
import numpy as np
import pytest
import torch

from ltcore import PluginError, record_figure
from ltcore.testing import FAST_SETTINGS, mlflow_client

NUM_CLASSES = 10
ANGLES = [2 * math.pi * c / NUM_CLASSES for c in range(NUM_CLASSES)]
PROTOTYPES = [[2 * math.cos(a), 2 * math.sin(a)] for a in ANGLES]
"""Prototypes the test plugin records (not unit vectors: the plot normalises them)."""
CENTROIDS = [[math.cos(a + 0.1), math.sin(a + 0.1)] for a in ANGLES]


def temperature(c: int, epoch: int) -> float:
    return 0.1 + 0.01 * c + 0.001 * epoch


PLUGIN = f"""
\"\"\"Logs a temperature per class and epoch and records prototypes and centroids, as CoGloAT,
BCL and ICCL do.\"\"\"

import numpy as np
import torch

from ltcore import hookimpl, record_figure


@hookimpl
def epoch_end(run, stage, epoch, metrics):
    for c in range(run.dataset.num_classes):
        metrics[f"temperature/class-{{c}}"] = 0.1 + 0.01 * c + 0.001 * epoch


@hookimpl
def run_end(run):
    record_figure(run, "prototypes", {{"prototypes": torch.tensor({PROTOTYPES!r})}})
    record_figure(run, "centroids", {{"centroids": np.asarray({CENTROIDS!r})}})
"""
"""A plugin module (``LTCORE_PLUGINS``), so that the report can rebuild the run."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_store_template, one_torch_thread):
    """One run of SupCon with a 2-d projection head, one epoch on the tiny data, that records
    every figure's data; the tests share it (training is the expensive part)."""
    from ltcore import Plugins, resolve, train

    folder = tmp_path_factory.mktemp("figures")
    shutil.copyfile(mlflow_store_template, folder / "mlflow.db")
    (folder / "figuredata.py").write_text(PLUGIN)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("LTCORE_CACHE", str(folder / "cache"))
        patch.setenv("LTCORE_DISABLE_PLUGINS", "")
        patch.setenv("LTCORE_PLUGINS", str(folder / "figuredata.py"))
        plugins = Plugins()
        selected = ["supcon", "figuredata"]
        settings = resolve(plugins, selected, assignments=[
            *FAST_SETTINGS, "device=cpu", "imbalance_factor=100", "optim.lr=0.02",
            "model.projection_dim=2", "model.projection_hidden=16"], overrides={"epochs": 1})
        result = train(plugins, selected, settings, progress=False)
        client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
        run = client.get_run(result.run_id)
        # every test runs in its own folder (``isolated``): the trained run's files by full path
        yield types.SimpleNamespace(result=result, client=client, run=run, plugins=plugins,
                                    run_dir=folder / result.run_dir, runs=str(folder / "runs"))


@pytest.fixture(scope="module")
def detail(trained):
    """The report's view of the trained run: recorded figures, curves, projections of the val
    images."""
    from ltcore.experiments.figures import add_figure_data
    from ltcore.experiments.report import RunDetail, model_details

    d = RunDetail(trained.run.info.run_id, "supcon", "supcon", "digits-lt", "100")
    add_figure_data(trained.client, trained.run, d, runs_dir=trained.runs)
    found = model_details(trained.run_dir / "model.pt", "val", trained.plugins,
                          feature_split="val")
    for key, value in found.items():
        setattr(d, key, value)
    return d


def options(**changes):
    from ltcore.experiments.report import ReportOptions

    return ReportOptions(tsne_points=60, **changes)


def check_formats(png):
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
    assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    svg = png.with_suffix(".svg").read_text()
    assert svg.rstrip().endswith("</svg>")
    return svg


# -- record_figure ---------------------------------------------------------------------------


class LoggedArtifacts:
    def __init__(self):
        self.calls = []

    def log_artifact(self, run_id, path, folder=None):
        self.calls.append((run_id, path, folder))
        return True


def test_record_figure_writes_json_and_logs_it_as_an_artifact(make_run, tmp_path):
    run = make_run(["ce"])
    tracker = LoggedArtifacts()
    run.recorder.attach(tracker, "parent-id", tmp_path)
    path = record_figure(run, "prototypes", {"prototypes": torch.tensor([[1.0, 0.5]]),
                                             "nan": float("nan"), "n": np.int64(3)})
    assert path == tmp_path / "figures" / "prototypes.json"
    assert json.loads(path.read_text()) == {"prototypes": [[1.0, 0.5]], "nan": None, "n": 3}
    assert tracker.calls == [("parent-id", str(path), "figures")]
    with pytest.raises(PluginError, match="figure name"):
        record_figure(run, "../escape", {})
    with pytest.raises(PluginError, match="not a JSON value|JSON"):
        record_figure(run, "odd", {"x": object()})
    run.world = types.SimpleNamespace(is_main=False)  # another rank under torchrun
    assert record_figure(run, "prototypes", {"prototypes": []}) is None
    assert len(tracker.calls) == 1


def test_record_figure_on_an_untracked_run_warns_and_writes_nothing(make_run, isolated):
    run = make_run(["ce"])
    with pytest.warns(UserWarning, match="'centroids' is not recorded"):
        assert record_figure(run, "centroids", {"centroids": [[0.0]]}) is None
    assert not list(isolated.rglob("centroids.json"))


def test_weight_norms_of_a_hand_set_classifier(make_run, tmp_path):
    from ltcore.figures import record_weight_norms

    run = make_run(["ce"])
    classifier = run.stages[-1].model.classifier
    rows = torch.zeros_like(classifier.weight)
    rows[0, :2] = torch.tensor([3.0, 4.0])  # 5
    rows[1, 0] = -2.0  # 2
    rows[2] = 1.0  # sqrt(D)
    with torch.no_grad():
        classifier.weight.copy_(rows)
    tracker = LoggedArtifacts()
    run.recorder.attach(tracker, "parent-id", tmp_path)
    path = record_weight_norms(run)
    data = json.loads(path.read_text())
    dim = rows.shape[1]
    assert data["norms"][:3] == pytest.approx([5.0, 2.0, math.sqrt(dim)])
    assert data["norms"][3:] == [0.0] * (NUM_CLASSES - 3)
    assert data["counts"] == run.dataset.class_counts.tolist()
    assert tracker.calls == [("parent-id", str(path), "figures")]


# -- one trained run -------------------------------------------------------------------------


def test_a_trained_run_records_its_figures(trained, tmp_path):
    from ltcore.experiments.figures import recorded_figures

    run_dir = trained.run_dir
    logged = {a.path for a in trained.client.list_artifacts(trained.run.info.run_id, "figures")}
    assert logged == {"figures/weight-norms.json", "figures/prototypes.json",
                      "figures/centroids.json"}
    norms = json.loads((run_dir / "figures" / "weight-norms.json").read_text())
    saved = torch.load(run_dir / "model.pt", weights_only=False)["modules"]
    weight = saved["model.classifier.weight"]
    assert norms["norms"] == pytest.approx([float(torch.linalg.vector_norm(row))
                                           for row in weight.float()], rel=1e-6)
    assert norms["counts"] == [int(c) for c in np.sort(norms["counts"])[::-1]]
    prototypes = json.loads((run_dir / "figures" / "prototypes.json").read_text())
    np.testing.assert_allclose(prototypes.pop("prototypes"), PROTOTYPES, rtol=1e-6)
    assert prototypes == {}
    # the report reads them from the run folder, else from the artifacts (another machine)
    local = recorded_figures(trained.client, trained.run, trained.runs)
    assert local["weight-norms"] == norms and set(local) == {"weight-norms", "prototypes",
                                                              "centroids"}
    assert recorded_figures(trained.client, trained.run, None, tmp_path) == local


def test_weight_norms_plot_shows_the_recorded_norms(trained, detail, tmp_path):
    from ltcore.experiments.figures import draw

    (figure,) = draw([detail], ("weight-norms",), tmp_path, options(), "t", "digits-lt")
    recorded = detail.recorded["weight-norms"]
    assert figure.data["methods"] == {"supcon": [recorded["norms"]]}
    assert figure.data["counts"] == recorded["counts"]
    svg = check_formats(figure.path)
    assert svg.count('id="weight-norm-mean-') == 1


def test_temperatures_plot_shows_the_four_smallest_classes(detail, tmp_path):
    from ltcore.experiments.figures import draw

    (figure,) = draw([detail], ("temperatures",), tmp_path, options(), "t", "digits-lt")
    # digits-lt orders the classes by training images, most first: 6-9 are the smallest
    assert figure.data["classes"] == [6, 7, 8, 9]
    counts = detail.recorded["weight-norms"]["counts"]
    for c, (label, runs) in zip([6, 7, 8, 9], figure.data["curves"].items()):
        assert label == f"{detail.classes[c]} ({counts[c]})"
        ((epochs, values),) = runs
        assert epochs == [0]
        assert values == pytest.approx([temperature(c, 0)])
    assert check_formats(figure.path).count('id="temperature-mean-') == 4
    (every,) = draw([detail], ("temperatures",), tmp_path, options(temperature_classes=0),
                    "all", "digits-lt")
    assert every.data["classes"] == list(range(NUM_CLASSES))


def test_projection_tsne_marks_the_recorded_centroids_or_the_class_means(detail, tmp_path):
    from ltcore.experiments.figures import class_centroids, draw

    (figure,) = draw([detail], ("projection-tsne",), tmp_path, options(), "t", "digits-lt")
    assert figure.run_id == detail.run_id and figure.data["source"] == "recorded centroids"
    np.testing.assert_allclose(figure.data["centroids"], CENTROIDS)
    assert figure.data["centroid_points"].shape == (NUM_CLASSES, 2)
    assert len(figure.data["points"]) == min(60, len(detail.labels))
    check_formats(figure.path)

    # ICCL's form: a class never seen keeps a zero row and is not marked
    rows = np.asarray(CENTROIDS)
    rows[3] = 0.0
    iccl = attrs.evolve(detail, recorded={"centroids": {
        "centroids": rows.tolist(), "seen": [c != 7 for c in range(NUM_CLASSES)]}})
    marks, classes, source = class_centroids(iccl, detail.projections, detail.labels)
    assert source == "recorded centroids" and classes == [0, 1, 2, 4, 5, 6, 8, 9]
    np.testing.assert_allclose(marks, rows[classes])

    without = attrs.evolve(detail, recorded={})
    means, classes, source = class_centroids(without, detail.projections, detail.labels)
    assert source == "class means of the projections"
    unit = detail.projections / np.linalg.norm(detail.projections, axis=1, keepdims=True)
    labels = np.asarray(detail.labels)
    assert classes == sorted(set(labels.tolist()))
    np.testing.assert_allclose(means, [unit[labels == c].mean(0) for c in classes], rtol=1e-6)


def test_features_2d_shows_normalised_projections_and_the_prototypes(trained, detail, tmp_path):
    from ltcore import load_saved_run
    from ltcore.experiments.figures import draw

    (figure,) = draw([detail], ("features-2d",), tmp_path, options(), "t", "digits-lt")
    np.testing.assert_allclose(np.linalg.norm(figure.data["points"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(figure.data["prototypes"], np.asarray(PROTOTYPES) / 2, atol=1e-12)
    # the points are the projections the training's embed gives the val images' features
    saved = load_saved_run(trained.plugins, str(trained.run_dir / "model.pt"),
                           {"device": "cpu", "views.workers": 0})
    model = saved.stages[-1].model.eval()
    with torch.no_grad():
        embedded = saved.embed(model, torch.as_tensor(detail.features)).numpy()
    np.testing.assert_allclose(figure.data["points"], embedded, atol=1e-5)
    assert check_formats(figure.path).count('id="prototype-') == NUM_CLASSES


def test_figure_plots_draws_each_kind_for_runs(trained, tmp_path):
    from ltcore.experiments.figures import figure_plots
    from ltcore.tables import RUN_FIGURE_KINDS

    drawn = {}
    for kind in RUN_FIGURE_KINDS:
        if kind == "projection-tsne":  # drawn from the same projections as features-2d
            continue
        drawn[kind] = figure_plots(trained.client, [trained.run], kind, tmp_path / kind,
                                   options=options(runs_dir=trained.runs),
                                   plugins=trained.plugins, echo=print)
    assert [p.name for p in drawn["weight-norms"]] == ["weight_norms_digits-lt-if100.png"]
    assert [p.name for p in drawn["temperatures"]] == [
        "temperatures_digits-lt-if100_supcon-figuredata.png"]
    assert [p.name for p in drawn["features-2d"]] == [
        f"features_2d_{trained.run.info.run_id}.png"]
    for paths in drawn.values():
        check_formats(paths[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert figure_plots(trained.client, [], "temperatures", tmp_path / "none") == []
    with pytest.raises(Exception, match="one of weight-norms"):
        figure_plots(trained.client, [trained.run], "losses", tmp_path)


def test_report_page_draws_the_figures_and_logs_the_per_run_ones(trained, ltrun, isolated):
    """``ltrun report`` draws what the run holds (``--no-tsne``: no t-SNE of projections; the
    t-SNE is drawn above, and costs seconds)."""
    run_id = trained.run.info.run_id
    result = ltrun("report", "--tracking-uri", trained.client.tracking_uri, "--run", run_id,
                   "--runs-dir", trained.runs, "--no-tsne", "--table-split", "val",
                   "--output", "rep")
    assert result.exit_code == 0, result.output + result.stderr
    html = (isolated / "rep" / "report.html").read_text()
    for section in ("Classifier weight norms", "Per-class temperatures",
                    "2-d projections with class prototypes"):
        assert f"<h2>{section}</h2>" in html
    assert "t-SNE" not in html and "<h2>Notes</h2>" not in html
    plots = isolated / "rep" / "plots"
    check_formats(plots / "weight_norms_digits-lt-if100.png")
    check_formats(plots / f"features_2d_{run_id}.png")
    (temperatures,) = plots.glob("temperatures_digits-lt-if100_*.png")  # _<method>
    check_formats(temperatures)
    logged = {a.path for a in trained.client.list_artifacts(run_id, "report")}
    assert f"report/features_2d_{run_id}.png" in logged
