"""Each batched primitive against torchvision's functional op on the same images and parameters.

Two references per op:

* torchvision on uint8 *tensors*: the batched ops follow these formulas step by step, so they
  must agree exactly (max error 0) on CPU.
* torchvision on *PIL images* (what the reference pipelines run): PIL rounds differently, so
  each bound below states why it holds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as tv_autoaugment

from ltcore.views import ops

NEAREST = InterpolationMode.NEAREST


def per_sample(images, function, params):
    """torchvision's op applied image by image (the slow, obviously-correct reference)."""
    return torch.stack([function(images[b], params[b]) for b in range(images.shape[0])])


def per_sample_pil(images, function, params, helpers):
    return torch.stack(
        [helpers.from_pil(function(helpers.to_pil(images[b]), params[b])) for b in range(images.shape[0])]
    )


def _factors(count, seed):
    return 0.1 + 1.8 * torch.rand(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _apply_op(name):
    return lambda image, magnitude: tv_autoaugment._apply_op(image, name, float(magnitude), NEAREST, None)


# name, batched op(pixels, params), torchvision op(image, param), params(count), PIL (max, mean) bound.
# PIL bounds: blend ops differ by < 1 in the degenerate image (PIL rounds luma / the mean, torchvision
# truncates) scaled by |1 - f| <= 0.9, plus truncation: at most 1 level. Integer ops (posterize,
# solarize, invert, equalize's integer LUT) and integer-shift / shear warps agree exactly.
COLOUR_CASES = [
    ("brightness", ops.adjust_brightness, lambda im, f: TF.adjust_brightness(im, float(f)), _factors, (1, 1.0)),
    ("contrast", ops.adjust_contrast, lambda im, f: TF.adjust_contrast(im, float(f)), _factors, (1, 1.0)),
    ("saturation", ops.adjust_saturation, lambda im, f: TF.adjust_saturation(im, float(f)), _factors, (1, 1.0)),
    ("sharpness", ops.adjust_sharpness, lambda im, f: TF.adjust_sharpness(im, float(f)), _factors, (1, 1.0)),
    ("posterize", ops.posterize, lambda im, b: TF.posterize(im, int(b)),
     lambda n, s: torch.randint(1, 9, (n,), generator=torch.Generator().manual_seed(s)), (0, 0.0)),
    ("solarize", ops.solarize, lambda im, t: TF.solarize(im, float(t)),
     lambda n, s: torch.linspace(0.0, 255.0, n)[torch.randperm(n, generator=torch.Generator().manual_seed(s))],
     (0, 0.0)),
]


@pytest.mark.parametrize("name, batched, reference, make_params, pil_bound", COLOUR_CASES,
                         ids=[case[0] for case in COLOUR_CASES])
def test_parametrised_colour_op_matches_torchvision(images, helpers, name, batched, reference, make_params,
                                                    pil_bound):
    params = make_params(images.shape[0], 3)
    ours = batched(ops.to_pixels(images), params)
    assert helpers.pixel_errors(ours, per_sample(images, reference, params))[0] == 0
    max_error, mean_error, _ = helpers.pixel_errors(ours, per_sample_pil(images, reference, params, helpers))
    assert max_error <= pil_bound[0] and mean_error <= pil_bound[1]


@pytest.mark.parametrize(
    "batched, reference, pil_max",
    [
        (ops.autocontrast, TF.autocontrast, 1),  # PIL builds its LUT in double, torchvision in float32
        (ops.equalize, TF.equalize, 0),
        (ops.invert, TF.invert, 0),
        (lambda x: ops.rgb_to_grayscale(x).expand_as(x), lambda im: TF.rgb_to_grayscale(im, 3), 1),  # PIL rounds luma
    ],
    ids=["autocontrast", "equalize", "invert", "grayscale"],
)
def test_parameter_free_op_matches_torchvision(images, helpers, batched, reference, pil_max):
    ours = batched(ops.to_pixels(images))
    theirs = torch.stack([reference(image) for image in images])
    assert helpers.pixel_errors(ours, theirs)[0] == 0
    theirs_pil = torch.stack([helpers.from_pil(reference(helpers.to_pil(image))) for image in images])
    assert helpers.pixel_errors(ours, theirs_pil)[0] <= pil_max


def test_hue_matches_torchvision(images, helpers):
    hue = torch.rand(images.shape[0], generator=torch.Generator().manual_seed(4)) - 0.5
    ours = ops.adjust_hue(ops.to_pixels(images), hue)
    assert helpers.pixel_errors(ours, per_sample(images, lambda im, h: TF.adjust_hue(im, float(h)), hue))[0] == 0
    # PIL shifts hue in 8-bit HSV: one hue step (1/256 turn) moves a saturated channel by about
    # 6 levels, and PIL loses up to ~3 steps (quantised conversion, truncated shift, 8-bit s and v).
    max_error, mean_error, _ = helpers.pixel_errors(
        ours, per_sample_pil(images, lambda im, h: TF.adjust_hue(im, float(h)), hue, helpers))
    assert max_error <= 24 and mean_error <= 1.5


def test_single_channel_colour_ops_follow_torchvision(helpers):
    gray = helpers.make_test_images(16, seed=7)[:, :1]
    pixels = ops.to_pixels(gray)
    factor = _factors(16, 8)
    assert torch.equal(ops.adjust_saturation(pixels, factor), pixels)
    assert torch.equal(ops.adjust_hue(pixels, factor - 1.0), pixels)
    assert torch.equal(ops.rgb_to_grayscale(pixels), pixels)
    contrast = per_sample(gray, lambda im, f: TF.adjust_contrast(im, float(f)), factor)
    assert helpers.pixel_errors(ops.adjust_contrast(pixels, factor), contrast)[0] == 0


def test_hand_computed_blend_and_equalize():
    pixels = torch.tensor([[[[10.0, 200.0], [0.0, 255.0]]]])
    # brightness 1.5: trunc(clamp(1.5 x)) = 15, 255 (300 clamped), 0, 255
    assert ops.adjust_brightness(pixels, torch.tensor([1.5])).flatten().tolist() == [15, 255, 0, 255]
    # contrast 0.5 on one channel: mean 116.25, trunc(0.5 x + 58.125) = 63, 158, 58, 185
    assert ops.adjust_contrast(pixels, torch.tensor([0.5])).flatten().tolist() == [63, 158, 58, 185]
    # equalize on 4 distinct values: step = (4 - 1) // 255 = 0 -> unchanged
    assert torch.equal(ops.equalize(pixels), pixels)
    values = torch.tensor([0.0] * 300 + [100.0] * 300 + [200.0] * 424).view(1, 1, 32, 32)
    # step = (1024 - 424) // 255 = 2; lut[100] = (300 + 1) // 2 = 150, lut[200] = (600 + 1) // 2 = 300 -> 255
    assert ops.equalize(values).unique().tolist() == [0, 150, 255]


def test_geometric_ops_match_torchvision(images, helpers):
    generator = torch.Generator().manual_seed(5)
    count = images.shape[0]
    pixels = ops.to_pixels(images)
    shear = 0.6 * torch.rand(count, generator=generator) - 0.3
    degrees = 60 * torch.rand(count, generator=generator) - 30
    shift = torch.randint(-14, 15, (count,), generator=generator)
    zero = torch.zeros_like(shift)
    cases = [
        (ops.shear_x(pixels, shear), _apply_op("ShearX"), shear),
        (ops.shear_y(pixels, shear), _apply_op("ShearY"), shear),
        (ops.translate(pixels, shift, zero), _apply_op("TranslateX"), shift),
        (ops.translate(pixels, zero, shift), _apply_op("TranslateY"), shift),
        (ops.rotate(pixels, degrees), _apply_op("Rotate"), degrees),
    ]
    for ours, reference, params in cases:
        assert helpers.pixel_errors(ours, per_sample(images, reference, params))[0] == 0
    # Nearest sampling: PIL takes floor(x) of the sample point x in 16.16 fixed point, torch takes
    # round-half-even(x - 0.5) in float. Integer translations never sit near a pixel boundary.
    for ours, reference, params in cases[2:4]:
        assert helpers.pixel_errors(ours, per_sample_pil(images, reference, params, helpers))[0] == 0
    # Rotations by irrational angles put a few sample points within rounding error of a boundary.
    fraction = helpers.pixel_errors(cases[4][0], per_sample_pil(images, cases[4][1], degrees, helpers))[2]
    assert fraction <= 0.005


@pytest.mark.parametrize("name", ["ShearX", "ShearY"])
def test_shear_magnitudes_in_use_agree_with_pil(images, helpers, name):
    # Shearing about the corner samples x + m (y + 1/2); for m = k/30 the fraction hits exactly 1/2
    # when k (2j + 1) = 30 (mod 60), e.g. k = 2 or 6, where PIL (floor) and torch (half-to-even)
    # pick neighbouring pixels. The magnitudes the pipelines use (AutoAugment CIFAR10 bins 7 and
    # 8, ImageNet bin 5, RandAugment magnitude 10 of 31 -> 0.1) never tie, so they agree exactly.
    from ltcore.views.augment import magnitude_bins

    used = [magnitude_bins(name, 10, 32, 32)[k] for k in (5, 7, 8)] + [magnitude_bins(name, 31, 32, 32)[10]]
    batched = ops.shear_x if name == "ShearX" else ops.shear_y
    pixels = ops.to_pixels(images)
    for magnitude in used:
        for signed in (float(magnitude), -float(magnitude)):
            params = torch.full((images.shape[0],), signed)
            theirs = per_sample_pil(images, _apply_op(name), params, helpers)
            assert helpers.pixel_errors(batched(pixels, params), theirs)[0] == 0


def test_hand_computed_translate_and_rotate():
    pixels = torch.arange(16.0).view(1, 1, 4, 4)
    shifted = ops.translate(pixels, torch.tensor([1]), torch.tensor([0]))
    assert shifted[0, 0].tolist() == [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14]]
    turned = ops.rotate(pixels, torch.tensor([90.0]))  # counter-clockwise
    assert torch.equal(turned[0, 0], torch.rot90(pixels[0, 0], 1))


def test_inverse_affine_matrix_matches_torchvision():
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    generator = torch.Generator().manual_seed(6)
    values = (torch.rand(6, 20, generator=generator, dtype=torch.float64) - 0.5) * 40
    ours = ops.inverse_affine_matrix(*values[:5], values[5] * 0.5, -values[5])
    for index in range(20):
        cx, cy, angle, tx, ty, sx = values[:, index].tolist()
        expected = _get_inverse_affine_matrix([cx, cy], angle, [tx, ty], 1.0, [sx * 0.5, -sx])
        assert torch.allclose(ours[index], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_pad_crop_and_flip_match_torchvision(images, helpers):
    generator = torch.Generator().manual_seed(9)
    count = images.shape[0]
    top = torch.randint(0, 9, (count,), generator=generator)
    left = torch.randint(0, 9, (count,), generator=generator)
    flip = torch.rand(count, generator=generator) < 0.5
    ours = ops.hflip(ops.pad_crop(ops.to_pixels(images), top, left, 32, 4), flip)
    expected = []
    for b in range(count):
        cropped = TF.crop(TF.pad(images[b], [4], fill=0), int(top[b]), int(left[b]), 32, 32)
        expected.append(TF.hflip(cropped) if flip[b] else cropped)
    assert helpers.pixel_errors(ours, torch.stack(expected))[0] == 0


def test_resize_crop_matches_torchvision(images, helpers):
    generator = torch.Generator().manual_seed(10)
    count = images.shape[0]
    height = torch.randint(3, 33, (count,), generator=generator)
    width = torch.randint(3, 33, (count,), generator=generator)
    top = (torch.rand(count, generator=generator) * (33 - height)).long()
    left = (torch.rand(count, generator=generator) * (33 - width)).long()
    ours = ops.resize_crop(ops.to_pixels(images), top, left, height, width, (32, 32))
    params = torch.stack([top, left, height, width], dim=1)

    def crop(image, box):
        return TF.resized_crop(image, *[int(v) for v in box], [32, 32], antialias=True)

    assert helpers.pixel_errors(ours, per_sample(images, crop, params))[0] == 0
    # PIL resamples in 8-bit fixed point (22 fractional bits, rounded): at most 1 level apart.
    assert helpers.pixel_errors(ours, per_sample_pil(images, crop, params, helpers))[0] <= 1


def test_resize_crop_downscales_with_antialias(helpers):
    large = helpers.make_test_images(8, size=64, seed=11)
    count = large.shape[0]
    top, left = torch.full((count,), 3), torch.full((count,), 5)
    height, width = torch.full((count,), 60), torch.full((count,), 41)
    ours = ops.resize_crop(ops.to_pixels(large), top, left, height, width, (24, 17))
    expected = torch.stack([TF.resized_crop(image, 3, 5, 60, 41, [24, 17], antialias=True) for image in large])
    assert helpers.pixel_errors(ours, expected)[0] == 0


def test_hand_computed_upscale():
    # 2 -> 4 pixels: centres at 0.25, 0.75, 1.25, 1.75 of the input -> weights (1), (.75,.25), (.25,.75), (1)
    pixels = torch.tensor([0.0, 100.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2).contiguous()
    zero, two = torch.tensor([0]), torch.tensor([2])
    out = ops.resize_crop(pixels, zero, zero, two, two, (2, 4))
    assert out[0, 0, 0].tolist() == [0, 25, 75, 100]


def test_cutout_against_explicit_loops():
    generator = torch.Generator().manual_seed(12)
    pixels = torch.rand(40, 3, 32, 32, generator=generator) + 1.0
    centre_y = torch.randint(0, 32, (40,), generator=generator)
    centre_x = torch.randint(0, 32, (40,), generator=generator)
    ours = ops.cutout(pixels, centre_y, centre_x, 16, fill=0.0)
    for b in range(40):
        for y in range(32):
            for x in range(32):
                inside = (max(int(centre_y[b]) - 8, 0) <= y < min(int(centre_y[b]) + 8, 32)
                          and max(int(centre_x[b]) - 8, 0) <= x < min(int(centre_x[b]) + 8, 32))
                expected = torch.zeros(3) if inside else pixels[b, :, y, x]
                assert torch.equal(ours[b, :, y, x], expected)


def test_normalize_matches_to_tensor_and_normalize(images, helpers):
    ours = ops.normalize(ops.to_pixels(images), torch.tensor(helpers.mean), torch.tensor(helpers.std))
    expected = torch.stack(
        [TF.normalize(TF.to_tensor(helpers.to_pil(image)), helpers.mean, helpers.std) for image in images]
    )
    assert torch.equal(ours, expected)


def test_posterize_bits_hand_computed():
    pixels = torch.tensor([255.0, 130.0, 7.0]).view(1, 1, 1, 3)
    assert ops.posterize(pixels, torch.tensor([3])).flatten().tolist() == [224, 128, 0]
    assert ops.solarize(pixels, torch.tensor([130.0])).flatten().tolist() == [0, 125, 7]
    assert math.isclose(float(ops.invert(pixels)[0, 0, 0, 2]), 248.0)
