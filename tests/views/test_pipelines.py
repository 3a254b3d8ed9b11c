"""Whole pipelines: registry, shapes, normalisation, determinism, and reference/batched agreement."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torchvision.transforms.functional as TF

from ltcore.views import (
    VIEW_PIPELINES,
    ViewPipeline,
    build_batched,
    build_reference,
    view_pipeline,
)

CIFAR_PIPELINES = ["standard", "autoaugment-cutout", "simaugment", "randaugment"]
IMAGENET_PIPELINES = ["imagenet-standard", "imagenet-simaugment", "imagenet-randaugment", "imagenet-autoaugment"]
IMAGENET_BATCHED = [name for name in IMAGENET_PIPELINES if view_pipeline(name).batched]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def input_for(name: str, helpers, count: int = 16) -> torch.Tensor:
    """CIFAR-sized pipelines take 32x32 images; ImageNet-style ones any same-size batch (here 40x48)."""
    if name.startswith("imagenet"):
        return helpers.make_test_images(count, size=48, seed=50)[..., 4:44, :]
    return helpers.make_test_images(count, seed=50)


def test_registry_is_complete_and_unique():
    names = [pipeline.name for pipeline in VIEW_PIPELINES]
    assert len(names) == len(set(names))
    assert set(names) == set(CIFAR_PIPELINES + IMAGENET_PIPELINES + ["eval", "imagenet-eval"])
    assert view_pipeline("simaugment").papers[0].startswith("BCL")
    with pytest.raises(ValueError, match="known: standard"):
        view_pipeline("nope")
    with pytest.raises(ValueError, match="one value per channel"):
        build_batched("standard", 32, (0.5, 0.5), (0.2, 0.2))
    with pytest.raises(ValueError, match="positive"):
        build_reference("standard", 32, (0.5,), (0.0,))


def test_view_pipeline_factories(helpers):
    builtin = view_pipeline("eval")
    images = helpers.make_test_images(4)
    expected = build_batched("eval", 32, helpers.mean, helpers.std)(images, generator(0))
    assert torch.equal(builtin.make_batched(32, helpers.mean, helpers.std)(images, generator(0)), expected)
    assert builtin.make_reference(32, helpers.mean, helpers.std)(helpers.to_pil(images[0])).shape == (3, 32, 32)
    calls = []
    custom = ViewPipeline(
        name="plugin-view", description="test", papers=(), batched=False,
        reference_factory=lambda size, mean, std, **options: calls.append((size, mean, std, options)) or len,
    )
    assert custom.make_reference(16, (0.5,), (0.25,), flag=True) is len
    assert calls == [(16, (0.5,), (0.25,), {"flag": True})]
    with pytest.raises(ValueError, match="no batched form"):
        custom.make_batched(16, (0.5,), (0.25,))


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, ltcore; before = 'torch' in sys.modules; import ltcore.views; "
            "print(before or 'torch' not in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


@pytest.mark.parametrize("pipeline", VIEW_PIPELINES, ids=lambda pipeline: pipeline.name)
def test_batched_and_reference_shapes_and_values(pipeline, helpers):
    images = input_for(pipeline.name, helpers)
    outputs = []
    if pipeline.batched:
        batched = build_batched(pipeline.name, 32, helpers.mean, helpers.std)(images, generator(51))
        assert batched.shape == (images.shape[0], 3, 32, 32) and batched.dtype == torch.float32
        outputs.append(batched)
    reference = build_reference(pipeline.name, 32, helpers.mean, helpers.std)
    single = reference(helpers.to_pil(images[0]))
    assert single.shape == (3, 32, 32) and single.dtype == torch.float32
    # every output value is a normalised uint8 level: (v / 255 - mean) / std for an integer v in [0, 255]
    for output in (*outputs, single.unsqueeze(0)):
        std = torch.tensor(helpers.std).view(1, 3, 1, 1)
        mean = torch.tensor(helpers.mean).view(1, 3, 1, 1)
        levels = (output * std + mean) * 255
        assert float((levels - levels.round()).abs().max()) < 1e-3
        assert float(levels.min()) > -1e-3 and float(levels.max()) < 255 + 1e-3


@pytest.mark.parametrize("name", CIFAR_PIPELINES + IMAGENET_BATCHED)
def test_batched_is_deterministic_given_the_generator_seed(name, helpers):
    images = input_for(name, helpers)
    pipeline = build_batched(name, 32, helpers.mean, helpers.std)
    first = pipeline(images, generator(52))
    assert torch.equal(first, pipeline(images, generator(52)))
    assert not torch.equal(first, pipeline(images, generator(53)))


@pytest.mark.parametrize("name", ["eval", "imagenet-eval"])
def test_eval_batched_equals_reference(name, helpers):
    images = input_for(name, helpers)
    batched = build_batched(name, 32, helpers.mean, helpers.std)(images, generator(54))
    reference = build_reference(name, 32, helpers.mean, helpers.std)
    expected_pil = torch.stack([reference(helpers.to_pil(image)) for image in images])
    # Resize on PIL rounds in 8-bit fixed point: at most one level (1 / (255 std)) apart.
    assert float((batched - expected_pil).abs().max()) <= 1.0 / (255 * min(helpers.std)) + 1e-5
    if name == "imagenet-eval":  # torchvision's tensor path: exact
        resized = [TF.center_crop(TF.resize(image, 37, antialias=True), 32) for image in images]
        expected = torch.stack([TF.normalize(image.float() / 255, helpers.mean, helpers.std) for image in resized])
        assert torch.equal(batched, expected)
    else:
        assert torch.equal(batched, expected_pil)


@pytest.mark.parametrize("after_normalize", [False, True])
def test_cutout_hole_is_black_or_mean(helpers, after_normalize):
    images = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)
    views = build_batched("autoaugment-cutout", 32, helpers.mean, helpers.std,
                          cutout_after_normalize=after_normalize)(images, generator(55))
    mean, std = torch.tensor(helpers.mean), torch.tensor(helpers.std)
    fill = torch.zeros(3) if after_normalize else -mean / std
    hole = (views - fill.view(1, 3, 1, 1)).abs().amax(dim=1) < 1e-6  # [B, H, W]
    # A hole is 16x16 clipped at the border: at least 8x8 pixels. Black pixels also come from the
    # crop padding and from AutoAugment (Invert, Solarize), a mean-coloured one only from Cutout.
    area = hole.sum(dim=(-2, -1))
    assert bool((area >= 64).all())
    if after_normalize:
        assert bool((area <= 256).all())
    reference = build_reference("autoaugment-cutout", 32, helpers.mean, helpers.std,
                                cutout_after_normalize=after_normalize)
    torch.manual_seed(56)
    single = reference(helpers.to_pil(images[0]))
    single_area = int(((single - fill.view(3, 1, 1)).abs().amax(dim=0) < 1e-6).sum())
    assert single_area >= 64 and (single_area <= 256 or not after_normalize)


@pytest.mark.parametrize("name", CIFAR_PIPELINES)
def test_single_channel_images(name, helpers):
    gray = helpers.make_test_images(16, seed=57)[:, :1]
    views = build_batched(name, 32, (0.5,), (0.25,))(gray, generator(58))
    assert views.shape == (16, 1, 32, 32)
    single = build_reference(name, 32, (0.5,), (0.25,))(helpers.to_pil(gray[0]))
    assert single.shape == (1, 32, 32)


def test_batched_rejects_bad_inputs(helpers):
    pipeline = build_batched("standard", 32, helpers.mean, helpers.std)
    images = helpers.make_test_images(4)
    with pytest.raises(ValueError, match="uint8"):
        pipeline(images.float(), generator(59))
    with pytest.raises(ValueError, match="channels"):
        pipeline(images[:, :1], generator(59))
    with pytest.raises(ValueError, match="expects"):
        build_batched("eval", 32, helpers.mean, helpers.std)(images[..., :30, :30], generator(59))


@pytest.mark.parametrize("name", CIFAR_PIPELINES)
def test_reference_and_batched_agree_in_distribution(name, helpers):
    """Per-image mean and spread of the views, reference vs batched, over the same images.

    The two forms draw different random numbers, so only their distributions can agree; PIL's
    rounding differences are below one level, far under these standard errors.
    """
    images = helpers.make_test_images(64, seed=60).repeat(8, 1, 1, 1)
    batched = build_batched(name, 32, helpers.mean, helpers.std)(images, generator(61))
    reference = build_reference(name, 32, helpers.mean, helpers.std)
    torch.manual_seed(62)
    expected = torch.stack([reference(helpers.to_pil(image)) for image in images])
    for statistic in (lambda views: views.mean(dim=(1, 2, 3)), lambda views: views.std(dim=(1, 2, 3))):
        ours, theirs = statistic(batched).double(), statistic(expected).double()
        standard_error = math.sqrt(float(ours.var()) / ours.numel() + float(theirs.var()) / theirs.numel())
        assert abs(float(ours.mean()) - float(theirs.mean())) <= 5 * standard_error
