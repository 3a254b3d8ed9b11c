"""Backbones by specification (timm:, torchvision:), model.backbone_options, model.pretrained
(a weights file, an earlier run, hub through the libraries' caches), model.freeze and the
layer-wise learning rates, on the embedded digits."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ltcore import ConfigError, load_model
from ltcore.engine.checkpoints import read
from ltcore.engine.schedule import parameter_groups
from ltcore.pretrained import align

TIMM_VIT = ["--set", "model.backbone=timm:test_vit",
            "--set", "model.backbone_options={img_size = 32, drop_path_rate = 0.1}"]


def backbone_tensors(path) -> dict[str, torch.Tensor]:
    prefix = "model.backbone."
    return {k[len(prefix):]: v for k, v in read(path)["modules"].items() if k.startswith(prefix)}


def test_timm_and_torchvision_models_train_by_name_with_their_options(one_epoch_run, tmp_path):
    vit = one_epoch_run("--plugin", "ce", *TIMM_VIT)
    assert "model timm:test_vit (img_size = 32, drop_path_rate = 0.1)" in vit.output
    assert vit.folder.name.startswith("ce-digits-lt-timm.test_vit-s0-")
    model, preprocessing = load_model(vit.folder / "model.pt")
    assert model.backbone.patch_embed.img_size == (32, 32)
    assert model.backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert preprocessing.crop_size == 32

    mobile = one_epoch_run("--plugin", "ce",
                           "--set", "model.backbone=torchvision:mobilenet_v3_small",
                           "--set", "model.backbone_options={dropout = 0.5}")
    model, _ = load_model(mobile.folder / "model.pt")
    assert model.backbone.feature_dim == 1024 and model.backbone.classifier[2].p == 0.5
    assert isinstance(model.backbone.classifier[3], torch.nn.Identity)

    # the model file alone, in a fresh process, rebuilds and evaluates the timm model
    alone = tmp_path / "alone" / "model.pt"
    alone.parent.mkdir()
    alone.write_bytes((vit.folder / "model.pt").read_bytes())
    done = subprocess.run([sys.executable, "-m", "ltcore", "evaluate", "--checkpoint", str(alone),
                           "--json"], capture_output=True, text=True, cwd=tmp_path / "alone",
                          env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["test/acc"] == pytest.approx(vit.metrics["test/acc"])


def save_resnet_weights(path, **changes):
    """The state dict of a fresh timm test_resnet with a 5-class head, under a ``module.``
    prefix inside ``state_dict`` (as a DDP training script saves it)."""
    import timm

    state = timm.create_model("test_resnet", num_classes=5).state_dict()
    state.update(changes)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return state


def test_a_weights_file_is_loaded_exactly_and_mismatches_are_reported(make_run, tmp_path):
    path = tmp_path / "weights.pth"
    state = save_resnet_weights(path)
    run = make_run(["ce"], "model.backbone=timm:test_resnet", f"model.pretrained={path}")
    loaded = run.model.backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert run.model_notes == [f"pretrained: file {path}: {len(loaded)} of {len(loaded)} "
                               "tensors loaded"]

    stem = state["conv1.0.weight"]
    odd = tmp_path / "odd.pth"
    save_resnet_weights(odd, **{"conv1.0.weight": stem[:, :, :2], "extra.weight": stem})
    with pytest.raises(ConfigError, match=r"1 unexpected \(extra.weight\); 1 of another shape "
                                          r"\(conv1.0.weight: file \[\d+, 3, 2, 3\]"):
        make_run(["ce"], "model.backbone=timm:test_resnet", f"model.pretrained={odd}")
    run = make_run(["ce"], "model.backbone=timm:test_resnet", f"model.pretrained={odd}",
                   "model.pretrained_strict=false")
    assert f"{len(loaded) - 1} of {len(loaded)} tensors loaded; not loaded" in run.model_notes[0]


def test_keys_are_matched_through_the_common_prefixes():
    own = {"clip.visual.conv1.weight": 0, "clip.logit_scale": 0}
    mapped = align({"module.visual.conv1.weight": torch.ones(1), "module.logit_scale":
                    torch.zeros(1)}, own)
    assert set(mapped) == set(own)


def test_a_frozen_backbone_stays_bit_identical_through_training(one_epoch_run, tmp_path):
    path = tmp_path / "weights.pth"
    state = save_resnet_weights(path)
    done = one_epoch_run("--plugin", "ce", "--set", "model.backbone=timm:test_resnet",
                         "--set", f"model.pretrained={path}", "--set", "model.freeze=backbone")
    trained = backbone_tensors(done.folder / "model.pt")
    assert all(torch.equal(trained[k], state[k]) for k in trained)  # BatchNorm statistics too
    assert "timm:test_resnet, backbone frozen" in done.output


def test_fine_tuning_from_an_earlier_run_composes_with_bcl(one_epoch_run, make_run):
    first = one_epoch_run("--plugin", "ce", "--set", "model.backbone=resnet8")
    run = make_run(["bcl"], f"model.pretrained={first.run_id}", "optim.backbone_lr_scale=0.1")
    earlier = backbone_tensors(first.folder / "model.pt")
    now = run.model.backbone.state_dict()
    assert all(torch.equal(now[k], earlier[k]) for k in earlier)
    assert run.model_notes[0].startswith(f"pretrained: run {first.folder}")
    assert run.config.views.mean == pytest.approx(tuple(read(first.folder / "model.pt")
                                                         ["standalone"]["preprocessing"]["mean"]))
    groups = parameter_groups(run, run.main_stage)
    assert [g["name"] for g in groups] == ["backbone", "classifier+heads"]
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]
    assert sum(len(g["params"]) for g in groups) == len(list(run.model.parameters()))


def test_layer_decay_follows_the_backbone_layers_and_leaves_frozen_parts_out(make_run, tmp_path):
    run = make_run(["ce"], "model.backbone=timm:test_vit", "model.backbone_options={img_size=32}",
                   "optim.layer_decay=0.5", "optim.backbone_lr_scale=0.2")
    groups = parameter_groups(run, run.main_stage)
    layers = len(groups) - 1  # the embedding, then each block (the last with the final norm)
    assert layers == len(run.model.backbone.blocks) + 1
    assert [g["lr_scale"] for g in groups] == pytest.approx(
        [0.2 * 0.5 ** (layers - i) for i in range(layers)] + [1.0])
    embedding = {id(p) for p in run.model.backbone.patch_embed.parameters()}
    assert embedding <= {id(p) for p in groups[0]["params"]}

    path = tmp_path / "weights.pth"
    save_resnet_weights(path)
    frozen = make_run(["ce"], "model.backbone=timm:test_resnet", f"model.pretrained={path}",
                      "model.freeze=backbone-except-norm")
    trained = {id(p) for g in parameter_groups(frozen, frozen.main_stage) for p in g["params"]}
    norms = [m for m in frozen.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(p) for m in norms for p in m.parameters()} <= trained
    assert not trained & {id(p) for m in frozen.model.backbone.modules()
                          if isinstance(m, torch.nn.Conv2d) for p in m.parameters()}
    frozen.model.train()
    assert all(m.training for m in norms) and not frozen.model.backbone.training


@pytest.mark.parametrize("assignments, message", [
    (["model.backbone=timm:test_vitt"], "timm has no model 'test_vitt'; did you mean test_vit"),
    (["model.backbone=resnet33"], "unknown backbone 'resnet33'; did you mean resnet34, resnet32"),
    (["model.backbone=torchvision:resnet19"], "torchvision has no model 'resnet19'"),
    (["model.freeze=backbone"], "would keep a randomly initialised backbone fixed"),
    (["model.backbone_options={depth = 3}"], "takes no option 'depth'"),
    (["model.pretrained=hub"], "backbone 'resnet8' (plugin 'core') has no published weights"),
    (["model.backbone=torchvision:mobilenet_v3_small", "optim.layer_decay=0.8"],
     "optim.layer_decay needs a backbone that names its layers"),
    (["model.pretrained=no-such-run"], "is neither none, hub, a weights file"),
])
def test_bad_backbone_settings_are_one_line_and_exit_2(ltrun, assignments, message):
    sets = [arg for a in assignments for arg in ("--set", a)]
    result = ltrun("--plugin", "ce", "--epochs", "1", "--set", "views.workers=0",
                   "--set", "model.backbone=resnet8", *sets, "--no-progress")
    assert result.exit_code == 2, result.output + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_hub_weights_missing_offline_name_the_cache(ltrun, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = ltrun("--plugin", "ce", "--epochs", "1", "--set", "views.workers=0",
                   "--set", "model.backbone=timm:test_resnet", "--set", "model.pretrained=hub",
                   "--no-progress")
    assert result.exit_code == 2
    assert f"are not in the cache {tmp_path / 'hub'}" in result.stderr
    assert "timm.create_model('test_resnet', pretrained=True)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name, torchvision_name, dim", [
    ("resnet18", "resnet18", 512), ("resnet34", "resnet34", 512)])
def test_imagenet_resnet18_and_34_are_torchvisions(name, torchvision_name, dim):
    import torchvision

    from ltcore import Plugins
    from ltcore.backbones import resolve

    backbone = resolve(Plugins(), name).build(3)
    reference = torchvision.models.get_model(torchvision_name)
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in backbone.state_dict().items()} == expected
    # known counts: 11,689,512 / 21,797,672 with the 1000-class fc (513,000)
    total = {"resnet18": 11_689_512, "resnet34": 21_797_672}[name] - 513_000
    assert sum(p.numel() for p in backbone.parameters()) == total
    assert backbone.feature_dim == dim
    assert backbone(torch.zeros(2, 3, 64, 64)).shape == (2, dim)


def test_cifar_resnet50_is_supcons():
    import torchvision

    from ltcore import Plugins
    from ltcore.backbones import resolve

    backbone = resolve(Plugins(), "resnet50-cifar").build(3)
    # torchvision's ResNet-50 body; the stem a 3x3 stride-1 conv, no max-pool (SupCon's
    # resnet_big.py): 23,508,032 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 = 23,500,352 parameters
    # (23,520,842 with SupCon's 10-class linear head)
    reference = torchvision.models.resnet50().state_dict()
    shapes = {k: v.shape for k, v in backbone.state_dict().items()}
    assert shapes == {k: (v.shape if k != "conv1.weight" else (64, 3, 3, 3))
                      for k, v in reference.items() if not k.startswith("fc.")}
    assert sum(p.numel() for p in backbone.parameters()) == 23_500_352
    assert sum(p.numel() for p in backbone.parameters()) + 2048 * 10 + 10 == 23_520_842
    conv1 = backbone.conv1
    assert (conv1.stride, conv1.padding, conv1.bias) == ((1, 1), (1, 1), None)
    assert isinstance(backbone.maxpool, torch.nn.Identity)
    assert backbone.feature_dim == 2048
    x = torch.zeros(2, 3, 32, 32)
    stem = backbone.relu(backbone.bn1(backbone.conv1(x)))
    assert backbone.maxpool(stem).shape == (2, 64, 32, 32)  # full resolution into layer1
    assert backbone.layer4(backbone.layer3(backbone.layer2(backbone.layer1(stem)))).shape == (
        2, 2048, 4, 4)
    assert backbone(x).shape == (2, 2048)
    one_channel = resolve(Plugins(), "resnet50-cifar").build(1)
    assert one_channel(torch.zeros(2, 1, 8, 8)).shape == (2, 2048)
    with pytest.raises(ConfigError, match="has no published weights"):
        resolve(Plugins(), "resnet50-cifar").build(3, pretrained=True)
