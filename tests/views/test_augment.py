"""AutoAugment, RandAugment and colour jitter: tables and per-sample application vs torchvision.

The batched ``apply`` methods take the per-sample draws explicitly; here the same draws are
replayed image by image through torchvision's own op tables and functional tensor ops.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as tv_autoaugment

from ltcore.views import ops
from ltcore.views.augment import (
    AUTOAUGMENT_POLICIES,
    OP_INDEX,
    OP_NAMES,
    RANDAUGMENT_OPS,
    AutoAugment,
    RandAugment,
    apply_augment_ops,
    is_signed,
    magnitude_bins,
)
from ltcore.views.batched import RandomColorJitter

TV_POLICIES = {"cifar10": T.AutoAugmentPolicy.CIFAR10, "imagenet": T.AutoAugmentPolicy.IMAGENET}


def tv_apply(image, name, magnitude):
    return tv_autoaugment._apply_op(image, name, float(magnitude), InterpolationMode.NEAREST, None)


@pytest.mark.parametrize("policy", sorted(AUTOAUGMENT_POLICIES))
def test_policy_tables_equal_torchvision(policy):
    assert [tuple(pair) for pair in T.AutoAugment(TV_POLICIES[policy]).policies] == list(AUTOAUGMENT_POLICIES[policy])


@pytest.mark.parametrize("num_bins, space", [(10, T.AutoAugment()), (31, T.RandAugment())])
def test_magnitude_bins_equal_torchvision(num_bins, space):
    for name, (magnitudes, signed) in space._augmentation_space(num_bins, (24, 40)).items():
        ours = magnitude_bins(name, num_bins, 24, 40)
        if magnitudes.ndim == 0:
            assert torch.equal(ours, torch.zeros(num_bins))
        else:
            assert torch.equal(ours, magnitudes.to(torch.float32))
        assert is_signed(name) == signed


def test_randaugment_op_order_equals_torchvision():
    assert list(RANDAUGMENT_OPS) == list(T.RandAugment()._augmentation_space(31, (32, 32)).keys())


def test_apply_augment_ops_matches_apply_op(images, helpers):
    generator = torch.Generator().manual_seed(20)
    count = images.shape[0]
    pixels = ops.to_pixels(images)
    for repeat in range(3):
        op_index = torch.randint(0, len(OP_NAMES), (count,), generator=generator)
        bin_index = torch.randint(0, 10, (count,), generator=generator)
        sign = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
        magnitude = torch.stack([
            magnitude_bins(OP_NAMES[o], 10, 32, 32)[k].to(torch.float64) * (s if is_signed(OP_NAMES[o]) else 1.0)
            for o, k, s in zip(op_index.tolist(), bin_index.tolist(), sign.tolist())
        ])
        ours = apply_augment_ops(pixels, op_index, magnitude)
        expected = torch.stack([tv_apply(images[b], OP_NAMES[int(op_index[b])], magnitude[b]) for b in range(count)])
        assert helpers.pixel_errors(ours, expected)[0] == 0


def test_apply_augment_ops_single_channel(helpers):
    gray = helpers.make_test_images(30, seed=21)[:, :1]
    op_index = torch.arange(30) % len(OP_NAMES)
    magnitude = torch.full((30,), 0.2, dtype=torch.float64)
    magnitude[op_index == OP_INDEX["Posterize"]] = 5.0
    magnitude[op_index == OP_INDEX["Solarize"]] = 128.0
    magnitude[op_index == OP_INDEX["TranslateX"]] = -3.0
    ours = apply_augment_ops(ops.to_pixels(gray), op_index, magnitude)
    expected = torch.stack([tv_apply(gray[b], OP_NAMES[int(op_index[b])], magnitude[b]) for b in range(30)])
    assert helpers.pixel_errors(ours, expected)[0] == 0


@pytest.mark.parametrize("policy", sorted(AUTOAUGMENT_POLICIES))
def test_autoaugment_apply_replays_torchvision_forward(images, helpers, policy):
    augment = AutoAugment(policy, 32)
    params = augment.sample(images.shape[0], torch.Generator().manual_seed(22))
    ours = augment.apply(ops.to_pixels(images), params)
    reference = T.AutoAugment(TV_POLICIES[policy])
    space = reference._augmentation_space(10, (32, 32))
    for b in range(images.shape[0]):
        image = images[b]
        # torchvision AutoAugment.forward with this sample's draws
        for slot, (name, probability, bin_index) in enumerate(reference.policies[int(params.policy[b])]):
            if params.uniform[b, slot] <= probability:
                magnitudes, signed = space[name]
                magnitude = float(magnitudes[bin_index].item()) if bin_index is not None else 0.0
                if signed and params.negate[b, slot]:
                    magnitude *= -1.0
                image = tv_apply(image, name, magnitude)
        assert torch.equal(ours[b], image.float()), (b, int(params.policy[b]))


def test_randaugment_apply_replays_torchvision_forward(images):
    augment = RandAugment(32, num_ops=2, magnitude=10)
    params = augment.sample(images.shape[0], torch.Generator().manual_seed(23))
    ours = augment.apply(ops.to_pixels(images), params)
    space = T.RandAugment(num_ops=2, magnitude=10)._augmentation_space(31, (32, 32))
    names = list(space.keys())
    for b in range(images.shape[0]):
        image = images[b]
        for round_index in range(2):
            name = names[int(params.op[b, round_index])]
            magnitudes, signed = space[name]
            magnitude = float(magnitudes[10].item()) if magnitudes.ndim > 0 else 0.0
            if signed and params.negate[b, round_index]:
                magnitude *= -1.0
            image = tv_apply(image, name, magnitude)
        assert torch.equal(ours[b], image.float()), b


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_apply_replays_torchvision(helpers, channels):
    images = helpers.make_test_images(48, seed=24)[:, :channels]
    jitter = RandomColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    params = jitter.sample(images.shape[0], 32, 32, torch.Generator().manual_seed(25))
    ours = jitter.apply(ops.to_pixels(images), params)
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for b in range(images.shape[0]):
        image = images[b]
        if params.applied[b]:
            for op in params.order[b].tolist():
                image = adjust[op](image, float(params.factors[b, op]))
        assert torch.equal(ours[b], image.float()), b


def test_color_jitter_zero_strength_disables_op(images):
    jitter = RandomColorJitter(0.0, 0.5, 0.0, 0.0, p=1.0)
    params = jitter.sample(images.shape[0], 32, 32, torch.Generator().manual_seed(26))
    ours = jitter.apply(ops.to_pixels(images), params)
    expected = torch.stack([TF.adjust_contrast(images[b], float(params.factors[b, 1]))
                            for b in range(images.shape[0])])
    assert torch.equal(ours, expected.float())
