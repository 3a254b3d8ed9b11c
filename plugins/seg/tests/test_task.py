"""Segmentation runs end to end: the embedded demo with CE and with GML, an ADE20K tree through
the preset's pipeline, bad data, the plugins a segmentation run refuses, compare and report."""

import re
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from ltcore.testing import mlflow_client

QUICK = ["--no-progress", "--set", "tracking.log_model=false", "--set", "views.workers=0",
         "--set", "limit.plots=false"]


def finished(result):
    assert result.exit_code == 0, result.output + result.stderr
    run_id = re.search(r"run (\S+) finished", result.output).group(1)
    return run_id, mlflow_client().get_run(run_id).data


def stage_run(run_id):
    client = mlflow_client()
    parent = client.get_run(run_id)
    (stage,) = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run_id}'")
    return stage.info.run_id


@pytest.mark.parametrize("plugins", [["seg"], ["seg", "gml"]])
def test_the_demo_trains_and_records_the_segmentation_figures(ltrun, plugins):
    args = [a for p in plugins for a in ("--plugin", p)]
    result = ltrun(*args, *QUICK, "--epochs", "2", "--set", "limit.steps=3")
    run_id, data = finished(result)
    for split in ("val", "test"):
        for name in ("mIoU", "mAcc", "aAcc", "frequent_mIoU", "rare_mAcc"):
            assert 0 <= data.metrics[f"{split}/{name}"] <= 100
    assert data.tags["ltcore.task"] == "segmentation"
    if "gml" in plugins:
        assert data.params["model.classifier"] == "cosine"
        assert ("losses: 1 x pixel-la-ce, 0.4 x aux-pixel-la-ce, 1 x pixel-gml, "
                "1 x pixel-gml-temperature") in result.output
        history = mlflow_client().get_metric_history(
            stage_run(run_id), "train/gml_temperature")
        assert len(history) == 2 and all(0 < m.value < 1 for m in history)
    else:
        assert "losses: 1 x pixel-ce, 0.4 x aux-pixel-ce" in result.output


def test_compare_and_report_show_segmentation_figures(ltrun, tmp_path):
    finished(ltrun("--plugin", "seg", *QUICK, "--epochs", "1", "--set", "limit.steps=2",
                   "--set", "limit.plots=true"))
    compared = ltrun("compare", "--format", "csv")
    assert compared.exit_code == 0, compared.stderr
    header = compared.output.splitlines()[0]
    assert "test/mIoU" in header and "test/mAcc" in header and "test/acc" not in header
    report = ltrun("report", "--no-tsne", "--output", str(tmp_path / "report"))
    assert report.exit_code == 0, report.stderr
    assert (tmp_path / "report" / "plots" / "per_class_iou_digits-seg-if10.png").is_file()
    (model,) = Path("runs").glob("*/model.pt")
    evaluated = ltrun("evaluate", "--checkpoint", str(model))
    assert evaluated.exit_code == 0 and "mIoU" in evaluated.output, evaluated.stderr
    exported = ltrun("export", "--checkpoint", str(model), "--format", "onnx")
    assert exported.exit_code == 2 and "it is a segmentation model" in exported.stderr


@pytest.mark.slow
@pytest.mark.parametrize("plugins, least", [(["seg"], 30.0), (["seg", "gml"], 25.0)])
def test_the_demo_reaches_a_miou_well_above_chance(ltrun, plugins, least):
    """The README's demo as it is (30 epochs, about a minute on two cores): an all-background
    prediction scores about 7.4 mIoU."""
    args = [a for p in plugins for a in ("--plugin", p)]
    _, data = finished(ltrun(*args, "--no-progress", "--set", "tracking.log_model=false"))
    assert data.metrics["test/mIoU"] > least


def ade20k_tree(root, *, train=4, val=3, size=(40, 32), break_one=None):
    """``ADEChallengeData2016`` with random images and masks of ids 0..150 (0 ignored)."""
    rng = np.random.default_rng(0)
    base = root / "ADEChallengeData2016"
    for split, count in (("training", train), ("validation", val)):
        for i in range(count):
            stem = f"ADE_{split[:5]}_{i:08d}"
            (base / "images" / split).mkdir(parents=True, exist_ok=True)
            (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(image).save(base / "images" / split / f"{stem}.jpg")
            mask = rng.integers(0, 151, (size[1], size[0]), dtype=np.uint8)
            Image.fromarray(mask).save(base / "annotations" / split / f"{stem}.png")
    return base


PRESET_SMALL = ["--preset", "ade20k-fcn-r50", *QUICK, "--epochs", "1", "--batch-size", "2",
                "--set", "views.image_size=32", "--set", "model.pretrained=none",
                "--set", "seg.interval_steps=1"]


@pytest.mark.parametrize("plugins, backbone", [
    (["seg"], "fcn-small"), (["seg", "gml"], "fcn-small"),
    pytest.param(["seg"], "fcn-resnet50-d8", marks=pytest.mark.slow)])
def test_an_ade20k_tree_trains_a_step_with_the_preset_and_evaluates(ltrun, tmp_path, plugins,
                                                                     backbone):
    ade20k_tree(tmp_path)
    args = [a for p in plugins for a in ("--plugin", p)]
    slide = ["--set", "seg.eval_mode=slide"] if "gml" in plugins else []  # both inferences
    run_id, data = finished(ltrun(*args, *PRESET_SMALL, "--data-dir", str(tmp_path),
                                  "--set", f"model.backbone={backbone}", *slide))
    assert data.params["dataset"] == "ade20k" and data.params["seg.aux_weight"] == "0.4"
    assert 0 <= data.metrics["test/mIoU"] <= 100 and 0 <= data.metrics["val/aAcc"] <= 100


@pytest.mark.parametrize("damage, named", [
    ("size", "annotations/training/ADE_train_00000001.png"),
    ("ids", "annotations/training/ADE_train_00000002.png"),
    ("missing", "ADE_train_00000003.png")])
def test_bad_ade20k_data_is_one_line_naming_the_file(ltrun, tmp_path, damage, named):
    base = ade20k_tree(tmp_path)
    annotations = base / "annotations" / "training"
    if damage == "size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(annotations / "ADE_train_00000001.png")
    elif damage == "ids":
        Image.fromarray(np.full((32, 40), 200, np.uint8)).save(
            annotations / "ADE_train_00000002.png")
    else:
        (annotations / "ADE_train_00000003.png").unlink()
    result = ltrun("--plugin", "seg", *PRESET_SMALL, "--data-dir", str(tmp_path),
                   "--set", "model.backbone=fcn-small")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], result.stderr


@pytest.mark.parametrize("args, message", [
    (["--plugin", "seg", "--plugin", "bcl"], "bcl train image classification"),
    (["--plugin", "seg", "--set", "dataset=digits-lt"], "has one label per image"),
    (["--plugin", "ce", "--set", "dataset=digits-seg"], "select --plugin seg")])
def test_a_segmentation_run_refuses_what_cannot_train_it(ltrun, args, message):
    result = ltrun(*args, *QUICK, "--epochs", "1")
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_a_segmentation_run_logs_no_mlflow_model_and_refuses_registering_one(ltrun):
    refused = ltrun("--plugin", "seg", "--register-model", "segnet", "--epochs", "1")
    assert refused.exit_code == 2, refused.stderr
    assert "a segmentation model is not logged as one" in refused.stderr
    done = ltrun("--plugin", "seg", "--epochs", "1", "--set", "limit.steps=2", "--set",
                 "views.workers=0", "--set", "limit.plots=false", "--no-progress")
    assert done.exit_code == 0, done.stderr
    assert "MLflow Model" not in done.output + done.stderr  # neither logged nor warned about


def test_table_8_is_the_reference_of_ade20k_runs():
    from ltcore import Plugins

    rows = [r for r in Plugins().reference_results if r.get("dataset") == "ade20k"]
    numbers = {(r["plugins"], r.get("gml.gml_alpha")): (r["test/mIoU"], r["test/mAcc"])
               for r in rows}
    assert numbers == {("seg", None): (36.1, 45.4), ("seg,gml", 0.2): (38.1, 51.4),
                       ("seg,gml", 1.0): (31.7, 59.8)}


class PixelwiseModel:
    """A network whose logits at a pixel depend on that pixel alone: sliding windows must give
    its whole-image logits."""

    def __init__(self):
        import torch

        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 5, 1)
        self.classifier = torch.nn.Linear(5, 4)

    def backbone(self, x):
        return self.conv(x), None


@pytest.mark.parametrize("size, stride", [((20, 27), 5), ((8, 8), 0), ((16, 40), 8)])
def test_sliding_windows_cover_the_image_and_average_to_the_whole_image_logits(size, stride):
    import torch

    from ltcore_seg.task import pixel_logits, slide_logits

    model = PixelwiseModel()
    image = torch.randn(1, 3, *size)
    with torch.no_grad():
        whole = pixel_logits(model.classifier, model.backbone(image)[0], size)
        slid = slide_logits(model, image, 8, stride, 4)
    assert slid.shape == (1, 4, *size) and torch.allclose(slid, whole, atol=1e-5)


def test_sliding_windows_wider_apart_than_the_crop_are_refused(ltrun):
    result = ltrun("--plugin", "seg", *QUICK, "--epochs", "1", "--set", "seg.eval_mode=slide",
                   "--set", "seg.slide_stride=64")
    assert result.exit_code == 2 and "seg.slide_stride = 64" in result.stderr, result.stderr


def test_figure_2_is_drawn_against_alpha_in_the_sweeps_report(ltrun, tmp_path):
    result = ltrun("reproduce", "gml:fig2", "--smoke", "--sweep-id", "fig2")
    assert result.exit_code == 0, result.stderr
    report = ltrun("report", "--sweep", "fig2", "--no-tsne", "--output", str(tmp_path / "r"))
    assert report.exit_code == 0, report.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "gml-fig2.png" in page and (tmp_path / "r" / "plots" / "gml-fig2.png").is_file()


def test_the_joint_views_workers_leave_stop_signals_to_the_run_and_end_with_the_stage():
    """As the core's views: the workers ignore SIGTERM, SIGINT and SIGHUP (the run stops at a
    step with a checkpoint), and close() ends them."""
    from ltcore import worker_options
    from ltcore.testing import assemble_run

    run = assemble_run(["seg"], "dataset=digits-seg", "model.backbone=fcn-small",
                       "model.pretrained=none", "seg.interval_steps=0", "views.image_size=0",
                       "views.workers=1")
    views = run.task.views(run, run.main_stage, ("sample",))
    assert views.loader.worker_init_fn.func is worker_options()["worker_init_fn"].func
    order = torch.arange(8).unsqueeze(1)
    assert len(list(views.epoch(order, ("sample",), 4, seed=0))) == 2
    workers = list(views.loader._iterator._workers)
    views.close()
    assert not any(worker.is_alive() for worker in workers)
