"""Distributions of the per-sample draws over many samples (fixed seeds).

Tolerances are 5 binomial (or sample) standard errors, so each check fails by chance with
probability below 1e-6 for any seed; the seeds are fixed anyway.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import transforms as T

from ltcore.views import build_batched
from ltcore.views.augment import (
    AUTOAUGMENT_POLICIES,
    OP_INDEX,
    RANDAUGMENT_OPS,
    AutoAugment,
    RandAugment,
)
from ltcore.views.batched import (
    RandomColorJitter,
    RandomCutout,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomPadCrop,
    RandomResizedCrop,
)

DRAWS = 20_000
SIGMAS = 5.0


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_frequency(hits: torch.Tensor, probability: float) -> None:
    """``hits`` (bool) occur with ``probability``, within 5 binomial standard errors."""
    count = hits.numel()
    observed = float(hits.to(torch.float64).mean())
    tolerance = SIGMAS * math.sqrt(probability * (1 - probability) / count) + 1e-12
    assert abs(observed - probability) <= tolerance, (observed, probability, tolerance)


def assert_uniform_counts(values: torch.Tensor, categories: int) -> None:
    """Every category of ``values`` (integers in [0, categories)) has frequency 1/categories."""
    for category in range(categories):
        assert_frequency(values == category, 1.0 / categories)


def test_autoaugment_sub_policies_are_uniform():
    params = AutoAugment("cifar10", 32).sample(DRAWS, generator(30))
    assert_uniform_counts(params.policy, 25)


@pytest.mark.parametrize("policy", sorted(AUTOAUGMENT_POLICIES))
def test_autoaugment_op_probabilities_and_signs(policy):
    augment = AutoAugment(policy, 32)
    params = augment.sample(4 * DRAWS, generator(31))
    op_index, magnitude = params.op_index, params.magnitude
    for policy_index, pair in enumerate(AUTOAUGMENT_POLICIES[policy]):
        chosen = params.policy == policy_index
        for slot, (name, probability, bin_index) in enumerate(pair):
            applied = op_index[chosen, slot] == OP_INDEX[name]
            assert_frequency(applied, probability)
            if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                        "Contrast", "Sharpness") and bin_index:
                assert_frequency(magnitude[chosen, slot] < 0, 0.5)
            else:
                assert bool((magnitude[chosen, slot] >= 0).all())


def test_randaugment_ops_are_uniform_and_signs_fair():
    augment = RandAugment(32, num_ops=2, magnitude=10)
    params = augment.sample(DRAWS, generator(32))
    op_index, magnitude = params.op_index, params.magnitude
    for round_index in range(2):
        assert_uniform_counts(params.op[:, round_index], len(RANDAUGMENT_OPS))
        rotate = op_index[:, round_index] == OP_INDEX["Rotate"]
        assert_frequency(magnitude[rotate, round_index] < 0, 0.5)
        assert set(magnitude[rotate, round_index].abs().tolist()) == {10.0}
    # the two rounds are drawn independently
    assert_frequency(params.op[:, 0] == params.op[:, 1], 1.0 / len(RANDAUGMENT_OPS))


def _torchvision_resized_crops(count, height, width, scale, seed):
    torch.manual_seed(seed)
    image = torch.zeros(1, height, width)
    boxes = [T.RandomResizedCrop.get_params(image, list(scale), [3.0 / 4.0, 4.0 / 3.0]) for _ in range(count)]
    return torch.tensor(boxes, dtype=torch.float64)  # i, j, h, w


def _two_sample_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    standard_error = math.sqrt(float(ours.var()) / ours.numel() + float(theirs.var()) / theirs.numel())
    assert abs(float(ours.mean()) - float(theirs.mean())) <= SIGMAS * standard_error + 1e-12


def _histograms_close(ours: torch.Tensor, theirs: torch.Tensor, edges: torch.Tensor) -> None:
    for low, high in zip(edges[:-1], edges[1:]):
        p_ours = float(((ours >= low) & (ours < high)).to(torch.float64).mean())
        p_theirs = float(((theirs >= low) & (theirs < high)).to(torch.float64).mean())
        pooled = (p_ours + p_theirs) / 2
        standard_error = math.sqrt(pooled * (1 - pooled) * (1 / ours.numel() + 1 / theirs.numel()))
        assert abs(p_ours - p_theirs) <= SIGMAS * standard_error + 1e-12, (float(low), p_ours, p_theirs)


def _crop_statistics(boxes: torch.Tensor, height: int, width: int) -> dict[str, torch.Tensor]:
    """Area fraction, log aspect ratio and relative offsets (where the crop can move) of boxes (i, j, h, w)."""
    top, left, crop_h, crop_w = boxes.unbind(dim=1)
    movable_y, movable_x = crop_h < height, crop_w < width
    return {
        "area": crop_h * crop_w / (height * width),
        "log_ratio": torch.log(crop_w / crop_h),
        "top": top[movable_y] / (height - crop_h[movable_y]),
        "left": left[movable_x] / (width - crop_w[movable_x]),
    }


@pytest.mark.parametrize("height, width, scale", [(32, 32, (0.2, 1.0)), (40, 64, (0.08, 1.0))])
def test_resized_crop_matches_torchvision_sampler(height, width, scale):
    count = DRAWS // 2
    top, left, crop_h, crop_w = RandomResizedCrop(32, scale=scale).sample(count, height, width, generator(33))
    ours = torch.stack([top, left, crop_h, crop_w], dim=1).to(torch.float64)
    assert bool(((ours[:, 0] + ours[:, 2] <= height) & (ours[:, 1] + ours[:, 3] <= width)).all())
    assert bool((ours[:, 2:] >= 1).all())
    ours = _crop_statistics(ours, height, width)
    theirs = _crop_statistics(_torchvision_resized_crops(count, height, width, scale, seed=34), height, width)
    for key in ours:
        _two_sample_close(ours[key], theirs[key])
    _histograms_close(ours["area"], theirs["area"], torch.linspace(0.0, 1.0001, 11))
    _histograms_close(ours["log_ratio"], theirs["log_ratio"], torch.linspace(-0.4, 0.4, 9))
    _histograms_close(ours["top"], theirs["top"], torch.linspace(0.0, 1.0001, 5))


def test_flip_grayscale_and_jitter_application_rates():
    assert_frequency(RandomHorizontalFlip().sample(DRAWS, 32, 32, generator(35)), 0.5)
    assert_frequency(RandomGrayscale(0.2).sample(DRAWS, 32, 32, generator(36)), 0.2)
    params = RandomColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8).sample(DRAWS, 32, 32, generator(37))
    assert_frequency(params.applied, 0.8)


def test_color_jitter_orders_and_factors():
    params = RandomColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8).sample(DRAWS * 2, 32, 32, generator(38))
    assert bool((params.order.sort(dim=1).values == torch.arange(4)).all())
    codes = (params.order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
    permutations = sorted(set(codes.tolist()))
    assert len(permutations) == 24
    for code in permutations:
        assert_frequency(codes == code, 1.0 / 24)
    for column, (low, high) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        factor = params.factors[:, column]
        assert float(factor.min()) >= low and float(factor.max()) < high
        standard_error = (high - low) / math.sqrt(12 * factor.numel())
        assert abs(float(factor.mean()) - (low + high) / 2) <= SIGMAS * standard_error


def test_pad_crop_offsets_and_cutout_centres_are_uniform():
    top, left = RandomPadCrop(32, 4).sample(DRAWS, 32, 32, generator(39))
    assert_uniform_counts(top, 9)
    assert_uniform_counts(left, 9)
    centre_y, centre_x = RandomCutout(16).sample(DRAWS, 32, 32, generator(40))
    assert_uniform_counts(centre_y, 32)
    assert_uniform_counts(centre_x, 32)


def test_simaugment_outputs_grayscale_at_rate_two_tenths(helpers):
    # Saturation factors are >= 0.6, so a colour image comes out gray only through RandomGrayscale.
    colour = torch.randint(0, 256, (2000, 3, 8, 8), generator=generator(41), dtype=torch.uint8)
    views = build_batched("simaugment", 8, helpers.mean, helpers.std)(colour, generator(42))
    pixels = views * torch.tensor(helpers.std).view(1, 3, 1, 1) + torch.tensor(helpers.mean).view(1, 3, 1, 1)
    gray = (pixels.amax(dim=1) - pixels.amin(dim=1)).amax(dim=(-2, -1)) < 1e-4
    assert_frequency(gray, 0.2)
