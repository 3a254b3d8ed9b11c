"""CLIP backbones (ltcore.clip) and ``ltrun evaluate --zero-shot``, on tiny random CLIP models."""

import json

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from ltcore.clip import (ClipBackbone, cached_weights, clip_backbone,  # noqa: E402
                         prompt_templates, read_clip_config, weights_options)
from ltcore.errors import ConfigError  # noqa: E402

TEXT = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
TINY_VIT = dict(embed_dim=16, vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8,
                                              head_width=16), text_cfg=TEXT)
TINY_RN = dict(embed_dim=16, vision_cfg=dict(image_size=32, layers=[1, 1, 1, 1], width=8),
               text_cfg=TEXT)


@pytest.fixture(scope="module")
def vit() -> ClipBackbone:
    torch.manual_seed(0)
    return clip_backbone("tiny-vit", config=TINY_VIT)


def test_backbone_gives_image_features_and_keeps_the_rest_frozen_in_eval_mode(vit):
    images = torch.randn(3, 3, 32, 32)
    features = vit(images)
    assert features.shape == (3, vit.feature_dim) and vit.feature_dim == 16
    assert torch.allclose(features, vit.clip.encode_image(images))  # not normalised
    assert vit.pretrained_cfg["input_size"] == (3, 32, 32)
    assert vit.pretrained_cfg["mean"] == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert vit.pretrained_cfg["interpolation"] == "bicubic"
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("clip.visual.") for n in trainable)
    assert {n for n, _ in vit.named_parameters() if n.startswith("clip.visual.")} == trainable
    vit.train()
    assert vit.training and vit.clip.visual.training
    assert not any(m.training for n, m in vit.clip.named_modules()
                   if n and not n.startswith("visual"))
    vit.eval()
    assert not vit.clip.visual.training
    assert vit.logit_scale() == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial value
    with pytest.raises(ConfigError, match="3 channels"):
        clip_backbone("tiny", 1, config=TINY_VIT)


def test_class_text_features_are_each_prompt_encoded_and_normalised_then_cached(vit):
    names, templates = ["sea_lion", "cat"], ("simple", "a {} in the wild.")
    features = vit.class_text_features(names, templates)
    assert features.shape == (2, 2, 16)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2, 2), atol=1e-5)
    prompts = ["a photo of a sea lion.", "a sea lion in the wild.", "a photo of a cat.",
               "a cat in the wild."]
    with torch.no_grad():
        direct = [F.normalize(vit.clip.encode_text(vit.tokenize([p])), dim=-1)[0]
                  for p in prompts]
    assert torch.allclose(features.reshape(4, 16), torch.stack(direct), atol=1e-5)
    assert not features.requires_grad
    assert vit.class_text_features(names, templates) is features  # computed once
    expected = F.normalize(features.mean(dim=1), dim=-1)
    assert torch.allclose(vit.zero_shot_weights(names, templates), expected)
    vit.load_state_dict(vit.state_dict())  # new weights: the text features are recomputed
    assert vit.class_text_features(names, templates) is not features


def test_prompt_templates_expand_the_named_sets():
    imagenet = prompt_templates(["imagenet"])
    assert len(imagenet) == 80 and all("{}" in t for t in imagenet)
    assert imagenet[0] == open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES[0]("{}")
    assert prompt_templates(["simple", "a {}.", "simple"]) == ["a photo of a {}.", "a {}."]
    with pytest.raises(ConfigError, match="imagenet"):
        prompt_templates(["no placeholder"])


def test_group_matcher_orders_the_image_tower_of_a_vit_and_a_modified_resnet(vit):
    from timm.models import group_parameters

    layers = group_parameters(vit, vit.group_matcher(), reverse=True)
    assert layers["clip.visual.conv1.weight"] == layers["clip.visual.class_embedding"] == 0
    assert layers["clip.visual.transformer.resblocks.0.attn.in_proj_weight"] == 1
    assert layers["clip.visual.transformer.resblocks.1.mlp.c_fc.weight"] == 2
    assert layers["clip.visual.ln_post.weight"] == layers["clip.visual.proj"] == 2
    assert layers["clip.token_embedding.weight"] == 0  # frozen: adds no layer
    assert max(layers.values()) == 2

    rn = clip_backbone("tiny-rn", config=TINY_RN)
    assert rn(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    layers = group_parameters(rn, rn.group_matcher(), reverse=True)
    assert {layers[f"clip.visual.{k}.weight"] for k in ("conv1", "bn2", "conv3")} == {0}
    assert [layers[f"clip.visual.layer{i}.0.conv1.weight"] for i in range(1, 5)] == [1, 2, 3, 4]
    assert layers["clip.visual.attnpool.q_proj.weight"] == 5
    assert max(layers.values()) == 5
    coarse = group_parameters(rn, rn.group_matcher(coarse=True), reverse=True)
    assert coarse["clip.visual.layer3.0.conv2.weight"] == 3


def test_named_architectures_take_the_activation_of_their_published_weights():
    assert weights_options("RN50") == {"force_quick_gelu": True}  # OpenAI's, with or without
    assert weights_options("RN50-quickgelu") == {}
    assert weights_options("ViT-B-32", "laion2b_s34b_b79k") == {}


def test_unknown_architecture_names_close_matches():
    with pytest.raises(ConfigError, match=r"unknown CLIP architecture 'ViT-B-33'.*ViT-B-32"):
        clip_backbone("ViT-B-33")


def test_missing_weights_offline_name_the_cache_and_the_command(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(open_clip, "create_model", no_network)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as error:
        clip_backbone("RN50", pretrained=True)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "hf" / "hub") in message and "HF_HUB_OFFLINE" in message
    assert "open_clip.create_model('RN50', pretrained='openai')" in message
    assert "models--timm--resnet50_clip.openai" in message
    with pytest.raises(ConfigError, match="yfcc15m"):  # a tag it lacks lists those it has
        clip_backbone("RN50", pretrained="laion2b")

    from huggingface_hub import constants

    def unreachable(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no route to host")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(open_clip, "create_model", unreachable)  # what open_clip says offline
    with pytest.raises(ConfigError, match=r"cannot be downloaded \(Failed to download .*no route"):
        clip_backbone("RN50", pretrained="openai")


def test_cached_weights_are_found_in_the_cache_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--resnet50_clip.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert cached_weights("RN50", "openai") is None
    (snapshot / "open_clip_model.safetensors").write_bytes(b"")
    assert cached_weights("RN50", "openai") == str(snapshot / "open_clip_model.safetensors")


def test_read_clip_config_refuses_missing_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no CLIP model configuration file"):
        read_clip_config(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_clip_config(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text('{"embed_dim": 16}')
    with pytest.raises(ConfigError, match="lacks vision_cfg, text_cfg"):
        read_clip_config(tmp_path / "partial.json")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_VIT}))
    assert read_clip_config(tmp_path / "open_clip_config.json") == TINY_VIT


def test_zero_shot_evaluation_end_to_end_and_its_saved_model(ltrun, tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_VIT))
    torch.manual_seed(1)  # random weights in open_clip's own keys, as a weights file holds them
    written = {k: v.clone() for k, v in clip_backbone("tiny", config=TINY_VIT).clip.state_dict()
               .items()}
    torch.save(written, tmp_path / "tiny-weights.pt")
    args = ("evaluate", "--zero-shot", "--set", f"model.backbone=clip:{path}",
            "--set", f"model.pretrained={tmp_path / 'tiny-weights.pt'}",
            "--set", 'clip.templates=["a photo of the number {}.", "simple"]', "--json")
    result = ltrun(*args, "--save-model", "zs.pt", "--predictions", "zero-shot.csv")
    assert result.exit_code == 0, result.stderr
    assert "zero-shot: clip:" in result.stderr and "2 prompt template(s)" in result.stderr
    figures = json.loads(result.output)
    for split in ("val", "test"):
        for name in ("acc", "many", "medium", "few", "hmean"):
            assert 0 <= figures[f"{split}/{name}"] <= 100
        per_class = [row["accuracy"] for row in figures["per_class"][split]]
        assert len(per_class) == 10
        # balanced evaluation splits: overall accuracy is the mean of the per-class ones
        assert figures[f"{split}/acc"] == pytest.approx(sum(per_class) / 10, abs=0.01)
        hmean = 0 if min(per_class) == 0 else 10 / sum(1 / a for a in per_class)
        assert figures[f"{split}/hmean"] == pytest.approx(hmean, abs=0.01)

    again = ltrun("evaluate", "--checkpoint", "zs.pt", "--json", "--predictions", "saved.csv")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.output) == figures
    saved = (tmp_path / "saved.csv").read_text()
    assert saved == (tmp_path / "zero-shot.csv").read_text()  # probabilities too: same scale
    assert len(saved.splitlines()) == 301

    import ltcore

    model, _ = ltcore.load_model("zs.pt")
    backbone = model.backbone
    assert isinstance(backbone, ClipBackbone)
    loaded = backbone.clip.state_dict()
    assert loaded.keys() == written.keys()
    assert all(torch.equal(loaded[k], written[k]) for k in written)
    assert model.classifier.scale == pytest.approx(backbone.logit_scale())
    weights = backbone.zero_shot_weights([str(i) for i in range(10)],
                                         ("a photo of the number {}.", "simple"))
    assert torch.allclose(model.classifier.weight.detach(), weights, atol=1e-5)


def test_zero_shot_needs_a_clip_backbone(ltrun):
    result = ltrun("evaluate", "--zero-shot", "--set", "model.backbone=resnet8")
    assert result.exit_code == 2
    assert "clip:" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    neither = ltrun("evaluate")
    assert neither.exit_code == 2 and "--zero-shot" in neither.stderr
