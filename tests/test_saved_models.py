"""A saved model on its own: ltcore.load_model, ltrun predict, ltrun export and the MLflow Model,
checked against ltrun evaluate on a small tree of JPEGs of varied sizes."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import ltcore
from ltcore import DataError, Plugins, hookimpl, resolve, train
from ltcore.testing import make_benchmark_tree, mlflow_client

REGISTERED = "ltcore-saved-model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_store_template, one_torch_thread):
    """One epoch of a ResNet-8 on an ImageNet-LT-style tree (32 px views: resize 37, crop 32),
    its MLflow Model logged and registered; the test JPEGs copied to ``unlabelled/``."""
    root = tmp_path_factory.mktemp("saved-models")
    tree = make_benchmark_tree(root / "data", train_counts=(8, 5, 3, 2), per_class_eval=3)
    unlabelled = root / "unlabelled"
    unlabelled.mkdir()
    for image in (tree / "test").rglob("*.jpg"):
        shutil.copyfile(image, unlabelled / image.name)
    shutil.copyfile(mlflow_store_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    plugins = Plugins()
    settings = resolve(plugins, ["ce"], assignments=[
        "dataset=imagenet-lt", f"data_dir={tree}", "model.backbone=resnet8",
        "views.image_size=32", "views.workers=0", "batch_size=8", "eval.batch_size=16",
        "device=cpu", f"tracking.uri={uri}", f"output={root / 'runs'}",
        f"tracking.register_model={REGISTERED}"], overrides={"epochs": 1})
    result = train(plugins, ["ce"], settings, progress=False)
    assert not result.warnings
    return SimpleNamespace(root=root, tree=tree, unlabelled=unlabelled, uri=uri,
                           run_id=result.run_id, model=result.run_dir / "model.pt")


def top1_by_name(predicted: str) -> dict[str, str]:
    """File name -> top-1 class of ``ltrun predict --json`` output."""
    return {Path(p["path"]).name: p["top"][0]["class"]
            for p in json.loads(predicted)["predictions"]}


def older(model: Path, target: Path) -> Path:
    """``model`` as ltcore 1.0 saved it: no standalone record."""
    saved = torch.load(model, weights_only=True)
    del saved["standalone"]
    saved["ltcore_version"] = "1.0.0"
    torch.save(saved, target)
    return target


def test_predict_gives_the_top1_of_evaluate_once_the_training_data_is_gone(ltrun, trained):
    old = older(trained.model, trained.root / "old.pt")
    table, upgraded = trained.root / "test.csv", trained.root / "upgraded.pt"
    evaluated = ltrun("evaluate", "--checkpoint", str(old), "--json", "--predictions",
                      str(table), "--save-model", str(upgraded))
    assert evaluated.exit_code == 0, evaluated.stderr
    per_class = json.loads(evaluated.output)["per_class"]["test"]
    assert [row["class"] for row in per_class] == ["0", "1", "2", "3"]
    assert [row["train_images"] for row in per_class] == [8, 5, 3, 2]
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    expected = {Path(row["path"]).name: row["prediction_name"] for row in rows}

    shutil.rmtree(trained.tree)
    broken = trained.root / "broken"
    shutil.copytree(trained.unlabelled, broken)
    (broken / "not-an-image.jpg").write_bytes(b"\xff\xd8 truncated")
    for model in (trained.model, upgraded):
        predicted = ltrun("predict", "--checkpoint", str(model), "--json", str(broken))
        assert predicted.exit_code == 0, predicted.stderr
        assert top1_by_name(predicted.output) == expected
        assert "not-an-image.jpg" in predicted.stderr
        assert [s["path"] for s in json.loads(predicted.output)["skipped"]] == [
            str(broken / "not-an-image.jpg")]
    table = ltrun("predict", "--checkpoint", str(trained.model), "--top-k", "2",
                  str(next(trained.unlabelled.iterdir())))
    assert table.exit_code == 0 and len(table.output.split()) == 5  # path, 2 x (class, p)


def test_the_logged_mlflow_model_predicts_as_ltrun_predict(ltrun, trained, monkeypatch):
    import mlflow
    from torchvision.transforms import Resize

    predicted = ltrun("predict", "--checkpoint", str(trained.model), "--json",
                      str(trained.unlabelled))
    expected = top1_by_name(predicted.output)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    logged = mlflow.pyfunc.load_model(f"runs:/{trained.run_id}/model")
    _, preprocessing = ltcore.load_model(trained.model)
    classes = ["0", "1", "2", "3"]
    for path in sorted(trained.unlabelled.iterdir()):
        image = Image.open(path).convert("RGB")
        assert logged.predict(np.array(image)[None]).shape == (1, 4)  # raw, of any size
        # at the shorter side the preprocessing resizes to, the resampling is PIL's in both
        resized = np.array(Resize(preprocessing.resize_size)(image))[None]
        assert classes[int(logged.predict(resized).argmax())] == expected[path.name], path.name
    version = mlflow_client(trained.uri).get_model_version(REGISTERED, "1")
    assert version.run_id == trained.run_id


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "safetensors"])
def test_every_export_format_reproduces_the_logits(ltrun, trained, fmt):
    target = trained.root / f"export-{fmt}" / {"torchscript": "model.pt", "onnx": "model.onnx",
                                               "safetensors": "model.safetensors"}[fmt]
    exported = ltrun("export", "--checkpoint", str(trained.model), "--format", fmt,
                     "--output", str(target))
    assert exported.exit_code == 0, exported.stderr
    assert float(re.search(r"images = (\S+)", exported.output).group(1)) <= 1e-4
    model, preprocessing = ltcore.load_model(trained.model)
    images = torch.stack([preprocessing(Image.open(p)) for p in
                          sorted(trained.unlabelled.iterdir())])
    with torch.no_grad():
        expected = model(images)
    if fmt == "torchscript":
        logits = torch.jit.load(str(target))(images)
    elif fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        logits = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    else:
        logits = ltcore.load_model(target)[0](images).detach()
    assert (logits - expected).abs().max() <= 1e-4
    config = json.loads(Path(f"{target}.json").read_text())
    assert config["label_names"] == model.classes and config["format"] == fmt
    assert config["pretrained_cfg"] == preprocessing.to_dict()
    assert config["pretrained_cfg"]["resize_size"] == 37 and preprocessing.crop_size == 32


def test_load_model_in_a_fresh_process_with_the_file_alone(trained, tmp_path):
    shutil.copyfile(trained.model, tmp_path / "model.pt")
    script = ("import json, sys, torch, ltcore\n"
              "model, preprocess = ltcore.load_model('model.pt')\n"
              "pixels = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8,\n"
              "                       generator=torch.Generator().manual_seed(0))\n"
              "with torch.no_grad():\n"
              "    logits = model(preprocess(pixels))\n"
              "plugins = sorted(m for m in sys.modules if m.startswith('ltcore_'))\n"
              "print(json.dumps({'logits': logits.tolist(), 'training': model.training,\n"
              "                  'classes': model.classes, 'plugins': plugins}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = json.loads(done.stdout)
    assert fresh["plugins"] == [] and fresh["training"] is False
    assert fresh["classes"] == ["0", "1", "2", "3"]
    model, preprocess = ltcore.load_model(trained.model)
    pixels = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(torch.tensor(fresh["logits"]), model(preprocess(pixels)))


def test_an_older_model_and_a_missing_export_package_are_refused_in_one_line(
        ltrun, trained, monkeypatch):
    old = older(trained.model, trained.root / "older.pt")
    out = trained.root / "refused"
    for args in (["predict", "--checkpoint", str(old), str(trained.unlabelled)],
                 ["export", "--checkpoint", str(old), "--format", "safetensors", "--output",
                  str(out / "model.safetensors")]):
        result = ltrun(*args)
        assert result.exit_code == 2 and result.output == ""
        assert result.stderr.count("\n") == 1 and "ltcore 1.0.0" in result.stderr
        assert "--save-model" in result.stderr
    with pytest.raises(DataError, match="without the class names"):
        ltcore.load_model(old)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    missing = ltrun("export", "--checkpoint", str(trained.model), "--format", "onnx",
                    "--output", str(out / "model.onnx"))
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    assert "needs onnxscript, which is not installed: pip install onnxscript" in missing.stderr
    assert not out.exists()


class UnsaidAdjustment:
    """Changes evaluation logits without saying what that does to a saved model."""

    @hookimpl
    def adjust_eval_logits(self, evaluation):
        pass


def test_lws_scales_apply_and_an_unsaid_adjustment_is_refused(make_run, isolated):
    from ltcore.engine import checkpoints

    run = make_run(["ce", "lws"])
    scale = run.plugin_object("lws").scale
    with torch.no_grad():
        scale.copy_(torch.linspace(0.5, 2.0, scale.numel()))
    checkpoints.write(isolated / "lws.pt", checkpoints.model_state(run))
    model, preprocessing = ltcore.load_model(isolated / "lws.pt")
    evaluation = run.evaluate(run.stages[-1].model, ["test"], final=True)
    images = preprocessing(run.dataset.test.images)
    expected = evaluation.outputs["test"].logits
    with torch.no_grad():
        assert torch.allclose(model(images), expected, atol=1e-5)
        adjusted = ltcore.load_model(isolated / "lws.pt", posthoc_la_tau=1.0)[0](images)
    counts = run.dataset.class_counts
    assert torch.allclose(adjusted, ltcore.posthoc_logit_adjustment(expected, counts, 1.0),
                          atol=1e-5)

    run.register(UnsaidAdjustment(), "unsaid")
    checkpoints.write(isolated / "unsaid.pt", checkpoints.model_state(run))
    with pytest.raises(DataError, match="adjust_eval_logits of plugin.s. 'unsaid'"):
        ltcore.load_model(isolated / "unsaid.pt")
