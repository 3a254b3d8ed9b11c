"""Batched image primitives with explicit per-sample parameters.

Every function takes *pixel images*: float32 tensors ``[B, C, H, W]`` (C is 1 or 3) holding
integer values in ``[0, 255]``, and returns pixel images of the same kind. Keeping integer values
in float32 reproduces torchvision's uint8 tensor functional ops (``torchvision.transforms.
functional`` on uint8 tensors): each op rounds or truncates exactly where torchvision converts
back to uint8. Per-sample parameters are tensors with a leading batch dimension ``[B]`` on the
images' device. No function reads a tensor value on the host, loops over samples, or changes a
shape depending on data, so all of them can be captured by ``torch.compile`` or CUDA graphs.

The arithmetic avoids matmul / conv kernels on purpose: on GPUs those may run in TF32, which
would move results across uint8 rounding boundaries. Geometric ops use elementwise grid
arithmetic and ``grid_sample`` (nearest), resampling uses gathers with a static number of taps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PIXEL_MAX = 255.0

# torchvision's convert_image_dtype(float -> uint8) multiplies by 255 + 1 - 1e-3 and truncates.
_FLOAT_TO_UINT8_SCALE = PIXEL_MAX + 1.0 - 1e-3
DEGREES_PER_RADIAN = 180.0 / math.pi
RADIANS_PER_DEGREE = math.pi / 180.0


def _per_sample(values: Tensor) -> Tensor:
    """View a ``[B]`` tensor as ``[B, 1, 1, 1]`` for broadcasting over images."""
    return values.reshape(-1, 1, 1, 1)


def to_pixels(images: Tensor) -> Tensor:
    """uint8 images ``[B, C, H, W]`` -> pixel images (float32, integer values in [0, 255])."""
    return images.to(torch.float32)


def normalize(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(pixels / 255 - mean[c]) / std[c]``, as ``ToTensor`` followed by ``Normalize``.

    pixels ``[B, C, H, W]``; mean, std ``[C]`` float32 -> float32 ``[B, C, H, W]``.
    """
    return (pixels / PIXEL_MAX - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


# --------------------------------------------------------------------------- geometry


def pad_crop(pixels: Tensor, top: Tensor, left: Tensor, size: int, padding: int) -> Tensor:
    """Zero-pad by ``padding`` on every side, then crop ``size x size`` at ``(top, left)``.

    Equals ``F.crop(F.pad(img, padding, fill=0), top, left, size, size)`` per sample.
    ``top``, ``left``: ``[B]`` integer tensors in padded coordinates. -> ``[B, C, size, size]``.
    """
    batch, channels, height, width = pixels.shape
    offsets = torch.arange(size, device=pixels.device)
    rows = top.long().view(-1, 1) - padding + offsets  # [B, size]
    cols = left.long().view(-1, 1) - padding + offsets
    rows_valid = (rows >= 0) & (rows < height)
    cols_valid = (cols >= 0) & (cols < width)
    row_index = rows.clamp(0, height - 1).view(batch, 1, size, 1).expand(batch, channels, size, width)
    picked = pixels.gather(2, row_index)
    col_index = cols.clamp(0, width - 1).view(batch, 1, 1, size).expand(batch, channels, size, size)
    picked = picked.gather(3, col_index)
    inside = rows_valid.view(batch, 1, size, 1) & cols_valid.view(batch, 1, 1, size)
    return torch.where(inside, picked, torch.zeros((), dtype=pixels.dtype, device=pixels.device))


def hflip(pixels: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the samples where ``flip`` ``[B]`` (bool) is true."""
    return torch.where(_per_sample(flip), pixels.flip(-1), pixels)


def _antialiased_taps(
    start: Tensor, length: Tensor, out_size: int, max_length: int
) -> tuple[Tensor, Tensor]:
    """Gather indices and weights of torchvision's antialiased bilinear resampling along one axis.

    Resamples the ``length`` input pixels beginning at ``start`` (both ``[B]`` integer tensors)
    onto ``out_size`` pixels with the triangle filter of PIL / ``interpolate(antialias=True)``:
    ``scale = length / out_size``, ``support = max(scale, 1)``, output ``i`` has centre
    ``c = scale (i + 0.5)`` and weights ``max(0, 1 - |(j - c + 0.5) / max(scale, 1)|)`` over input
    pixels ``j`` in ``[trunc(c - support + 0.5), trunc(c + support + 0.5))`` clipped to the
    crop, normalised to sum 1. Returns ``index [B, K, out_size]`` (absolute input indices) and
    ``weight [B, K, out_size]`` float32 with ``K = 2 ceil(max(max_length / out_size, 1)) + 1``
    taps, enough for any ``length <= max_length``.
    """
    device = start.device
    taps = 2 * math.ceil(max(max_length / out_size, 1.0)) + 1
    length_f = length.to(torch.float32)
    scale = length_f / out_size  # [B]
    upsampling = scale < 1.0
    support = torch.where(upsampling, torch.ones_like(scale), scale)
    inverse_scale = torch.where(upsampling, torch.ones_like(scale), 1.0 / scale)
    centre = scale.view(-1, 1) * (torch.arange(out_size, device=device, dtype=torch.float32) + 0.5)
    # torch computes the window bounds in double precision from float centre and support.
    centre_minus_support = (centre - support.view(-1, 1)).to(torch.float64)
    centre_plus_support = (centre + support.view(-1, 1)).to(torch.float64)
    first = (centre_minus_support + 0.5).trunc().clamp(min=0.0)
    stop = torch.minimum((centre_plus_support + 0.5).trunc(), length.view(-1, 1).to(torch.float64))
    tap = torch.arange(taps, device=device, dtype=torch.float64).view(1, taps, 1)
    local = first.unsqueeze(1) + tap  # [B, K, out]
    distance = (local.to(torch.float32) - centre.unsqueeze(1)).to(torch.float64) + 0.5
    filter_input = (distance * inverse_scale.view(-1, 1, 1).to(torch.float64)).to(torch.float32)
    weight = (1.0 - filter_input.abs()).clamp(min=0.0)
    weight = torch.where(local < stop.unsqueeze(1), weight, torch.zeros((), device=device))
    total = weight[:, 0]
    for k in range(1, taps):
        total = total + weight[:, k]
    total = total.unsqueeze(1)
    weight = torch.where(total != 0, weight / torch.where(total != 0, total, 1.0), weight)
    last = (length.view(-1, 1, 1) - 1).to(torch.float64)
    index = start.long().view(-1, 1, 1) + torch.minimum(local, last).long()
    return index, weight


def _weighted_taps(gathered: Tensor, weight: Tensor, tap_dim: int) -> Tensor:
    """``sum_k gathered.select(tap_dim, k) * weight_k``, accumulated in tap order like torch's kernel."""
    taps = gathered.shape[tap_dim]
    out = gathered.select(tap_dim, 0) * weight.select(tap_dim, 0)
    for k in range(1, taps):
        out = out + gathered.select(tap_dim, k) * weight.select(tap_dim, k)
    return out


def resize_crop(
    pixels: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor, size: tuple[int, int]
) -> Tensor:
    """Crop ``[top:top+height, left:left+width]`` per sample and resize it to ``size = (h, w)``.

    Equals ``F.resized_crop(img, top, left, height, width, size, BILINEAR, antialias=True)`` on
    uint8 tensors (float resampling, columns then rows, then round). The crop must lie inside
    the image. top, left, height, width: ``[B]`` integer tensors. -> ``[B, C, size[0], size[1]]``.
    """
    batch, channels, in_height, in_width = pixels.shape
    out_height, out_width = size
    col_index, col_weight = _antialiased_taps(left, width, out_width, in_width)
    taps = col_index.shape[1]
    gathered = pixels.gather(
        3, col_index.view(batch, 1, 1, taps * out_width).expand(batch, channels, in_height, -1)
    ).view(batch, channels, in_height, taps, out_width)
    columns = _weighted_taps(gathered, col_weight.view(batch, 1, 1, taps, out_width), tap_dim=3)
    row_index, row_weight = _antialiased_taps(top, height, out_height, in_height)
    taps = row_index.shape[1]
    gathered = columns.gather(
        2, row_index.view(batch, 1, taps * out_height, 1).expand(batch, channels, -1, out_width)
    ).view(batch, channels, taps, out_height, out_width)
    out = _weighted_taps(gathered, row_weight.view(batch, 1, taps, out_height, 1), tap_dim=2)
    return out.round().clamp(0.0, PIXEL_MAX)


def inverse_affine_matrix(
    center_x: Tensor,
    center_y: Tensor,
    angle: Tensor,
    translate_x: Tensor,
    translate_y: Tensor,
    shear_x: Tensor,
    shear_y: Tensor,
) -> Tensor:
    """Per-sample inverse affine matrix of torchvision's ``_get_inverse_affine_matrix`` (scale 1).

    ``M = T C R S C^-1`` with rotation ``angle`` and shears ``shear_x``, ``shear_y`` in degrees
    (clockwise, as ``F.affine``), translation in pixels, centre in the tensor-path convention
    (offset from the image centre). All inputs ``[B]``; computed in float64 like torchvision's
    Python floats. Returns ``[B, 6]`` float64 ``(a, b, c, d, e, f)`` mapping output to input
    coordinates: ``x_in = a x + b y + c``, ``y_in = d x + e y + f``.
    """
    rotation = angle.to(torch.float64) * RADIANS_PER_DEGREE
    sx = shear_x.to(torch.float64) * RADIANS_PER_DEGREE
    sy = shear_y.to(torch.float64) * RADIANS_PER_DEGREE
    cx = center_x.to(torch.float64)
    cy = center_y.to(torch.float64)
    tx = translate_x.to(torch.float64)
    ty = translate_y.to(torch.float64)
    cos_sy = torch.cos(sy)
    a = torch.cos(rotation - sy) / cos_sy
    b = -torch.cos(rotation - sy) * torch.tan(sx) / cos_sy - torch.sin(rotation)
    c = torch.sin(rotation - sy) / cos_sy
    d = -torch.sin(rotation - sy) * torch.tan(sx) / cos_sy + torch.cos(rotation)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack((m0, m1, m2, m3, m4, m5), dim=1)


def warp_affine_nearest(pixels: Tensor, matrix: Tensor) -> Tensor:
    """Apply per-sample inverse affine ``matrix`` ``[B, 6]`` with nearest sampling and zero fill.

    Same grid as torchvision's tensor ``F.affine`` / ``F.rotate`` (pixel centres relative to the
    image centre, ``grid_sample(mode="nearest", align_corners=False)``), computed elementwise.
    """
    batch, _, height, width = pixels.shape
    device = pixels.device
    theta = matrix.to(torch.float32)
    theta = torch.cat((theta[:, :3] / (0.5 * width), theta[:, 3:] / (0.5 * height)), dim=1)
    xs = torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=device)
    ys = torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=device)
    xs = xs.view(1, 1, width)
    ys = ys.view(1, height, 1)
    t = theta.view(batch, 6, 1, 1)
    grid_x = xs * t[:, 0] + ys * t[:, 1] + t[:, 2]
    grid_y = xs * t[:, 3] + ys * t[:, 4] + t[:, 5]
    grid = torch.stack((grid_x, grid_y), dim=-1)
    return F.grid_sample(pixels, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _zeros_like_batch(values: Tensor) -> Tensor:
    """float64 zeros shaped like the per-sample parameter ``values``."""
    return torch.zeros_like(values, dtype=torch.float64)


def shear_x(pixels: Tensor, magnitude: Tensor) -> Tensor:
    """AutoAugment ShearX: ``F.affine(shear=[degrees(atan(m)), 0], center=[0, 0])``, nearest."""
    _, _, height, width = pixels.shape
    zero = _zeros_like_batch(magnitude)
    degrees = torch.atan(magnitude.to(torch.float64)) * DEGREES_PER_RADIAN
    matrix = inverse_affine_matrix(zero - 0.5 * width, zero - 0.5 * height, zero, zero, zero, degrees, zero)
    return warp_affine_nearest(pixels, matrix)


def shear_y(pixels: Tensor, magnitude: Tensor) -> Tensor:
    """AutoAugment ShearY: ``F.affine(shear=[0, degrees(atan(m))], center=[0, 0])``, nearest."""
    _, _, height, width = pixels.shape
    zero = _zeros_like_batch(magnitude)
    degrees = torch.atan(magnitude.to(torch.float64)) * DEGREES_PER_RADIAN
    matrix = inverse_affine_matrix(zero - 0.5 * width, zero - 0.5 * height, zero, zero, zero, zero, degrees)
    return warp_affine_nearest(pixels, matrix)


def translate(pixels: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """Shift by integer pixels ``(shift_x, shift_y)`` ``[B]`` with zero fill (``F.affine`` translate)."""
    zero = _zeros_like_batch(shift_x)
    matrix = inverse_affine_matrix(zero, zero, zero, shift_x, shift_y, zero, zero)
    return warp_affine_nearest(pixels, matrix)


def rotate(pixels: Tensor, degrees: Tensor) -> Tensor:
    """Rotate counter-clockwise by ``degrees`` ``[B]`` about the centre, nearest, zero fill (``F.rotate``)."""
    zero = _zeros_like_batch(degrees)
    matrix = inverse_affine_matrix(zero, zero, -degrees.to(torch.float64), zero, zero, zero, zero)
    return warp_affine_nearest(pixels, matrix)


# --------------------------------------------------------------------------- colour


def blend(pixels: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """torchvision ``_blend``: ``trunc(clamp(f * img + (1 - f) * degenerate, 0, 255))``.

    ``factor`` ``[B]``; ``f`` and ``1 - f`` are formed in float64 and rounded to float32 as
    torchvision does with its Python-float factor. ``degenerate`` broadcasts against pixels.
    """
    factor = factor.to(torch.float64)
    weight = _per_sample(factor.to(torch.float32))
    complement = _per_sample((1.0 - factor).to(torch.float32))
    return (weight * pixels + complement * degenerate).clamp(0.0, PIXEL_MAX).floor()


def rgb_to_grayscale(pixels: Tensor) -> Tensor:
    """Luma ``trunc(0.2989 R + 0.587 G + 0.114 B)`` -> ``[B, 1, H, W]``; C=1 input is returned as is."""
    if pixels.shape[1] == 1:
        return pixels
    red, green, blue = pixels.unbind(dim=1)
    return (0.2989 * red + 0.587 * green + 0.114 * blue).floor().unsqueeze(1)


def grayscale_mean(pixels: Tensor) -> Tensor:
    """Mean of the truncated luma over the image (``adjust_contrast``'s degenerate) -> ``[B, 1, 1, 1]``."""
    return rgb_to_grayscale(pixels).mean(dim=(-3, -2, -1), keepdim=True)


def sharpness_degenerate(pixels: Tensor) -> Tensor:
    """``adjust_sharpness``'s degenerate: interior pixels smoothed by ``[[1,1,1],[1,5,1],[1,1,1]] / 13``
    and rounded, the one-pixel border kept. Images need H, W > 2.

    The 3x3 sum is exact integer arithmetic and ``sum / 13`` is never within 1/26 of a
    rounding tie, so this equals torchvision's float convolution after rounding.
    """
    row_sums = pixels[..., :, :-2] + pixels[..., :, 1:-1] + pixels[..., :, 2:]
    window_sum = row_sums[..., :-2, :] + row_sums[..., 1:-1, :] + row_sums[..., 2:, :]
    smoothed = ((window_sum + 4.0 * pixels[..., 1:-1, 1:-1]) / 13.0).round()
    height, width = pixels.shape[-2:]
    rows = torch.arange(height, device=pixels.device).view(height, 1)
    cols = torch.arange(width, device=pixels.device).view(1, width)
    border = (rows == 0) | (rows == height - 1) | (cols == 0) | (cols == width - 1)
    return torch.where(border, pixels, F.pad(smoothed, (1, 1, 1, 1)))


def adjust_brightness(pixels: Tensor, factor: Tensor) -> Tensor:
    """``F.adjust_brightness``: blend with black, factor ``[B]``."""
    return blend(pixels, torch.zeros((), dtype=pixels.dtype, device=pixels.device), factor)


def adjust_contrast(pixels: Tensor, factor: Tensor) -> Tensor:
    """``F.adjust_contrast``: blend with the mean truncated luma, factor ``[B]``."""
    return blend(pixels, grayscale_mean(pixels), factor)


def adjust_saturation(pixels: Tensor, factor: Tensor) -> Tensor:
    """``F.adjust_saturation``: blend with the truncated luma image; a no-op for C=1 (as PIL)."""
    if pixels.shape[1] == 1:
        return pixels
    return blend(pixels, rgb_to_grayscale(pixels), factor)


def adjust_sharpness(pixels: Tensor, factor: Tensor) -> Tensor:
    """``F.adjust_sharpness``: blend with :func:`sharpness_degenerate`; a no-op for H or W <= 2."""
    if pixels.shape[-1] <= 2 or pixels.shape[-2] <= 2:
        return pixels
    return blend(pixels, sharpness_degenerate(pixels), factor)


def _rgb_to_hsv(rgb: Tensor) -> Tensor:
    """torchvision ``_rgb2hsv`` on ``[B, 3, H, W]`` floats in [0, 1] -> ``[B, 3, H, W]`` (h, s, v)."""
    red, green, blue = rgb.unbind(dim=1)
    max_c = torch.max(rgb, dim=1).values
    min_c = torch.min(rgb, dim=1).values
    equal = max_c == min_c
    chroma = max_c - min_c
    ones = torch.ones_like(max_c)
    saturation = chroma / torch.where(equal, ones, max_c)
    chroma_divisor = torch.where(equal, ones, chroma)
    red_c = (max_c - red) / chroma_divisor
    green_c = (max_c - green) / chroma_divisor
    blue_c = (max_c - blue) / chroma_divisor
    hue_r = (max_c == red) * (blue_c - green_c)
    hue_g = ((max_c == green) & (max_c != red)) * (2.0 + red_c - blue_c)
    hue_b = ((max_c != green) & (max_c != red)) * (4.0 + green_c - red_c)
    hue = torch.fmod((hue_r + hue_g + hue_b) / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, max_c), dim=1)


def _pick_by_sector(sector: Tensor, choices: tuple[Tensor, ...]) -> Tensor:
    """``choices[sector]`` elementwise, for ``sector`` in 0..5 (exact selection, like torchvision's mask-sum)."""
    out = choices[5]
    for index in range(4, -1, -1):
        out = torch.where(sector == index, choices[index], out)
    return out


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """torchvision ``_hsv2rgb`` on ``[B, 3, H, W]`` -> RGB in [0, 1]."""
    hue, saturation, value = hsv.unbind(dim=1)
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = sector.to(torch.int64) % 6
    p = torch.clamp(value * (1.0 - saturation), 0.0, 1.0)
    q = torch.clamp(value * (1.0 - saturation * fraction), 0.0, 1.0)
    t = torch.clamp(value * (1.0 - saturation * (1.0 - fraction)), 0.0, 1.0)
    red = _pick_by_sector(sector, (value, q, p, p, t, value))
    green = _pick_by_sector(sector, (t, value, value, q, p, p))
    blue = _pick_by_sector(sector, (p, p, t, value, value, q))
    return torch.stack((red, green, blue), dim=1)


def adjust_hue(pixels: Tensor, hue_factor: Tensor) -> Tensor:
    """``F.adjust_hue``: rotate hue by ``hue_factor`` ``[B]`` in [-0.5, 0.5]; a no-op for C=1.

    ``rgb = hsv2rgb((h + f) mod 1, s, v)`` of ``pixels / 255``, back with ``trunc(x * 255.999)``.
    """
    if pixels.shape[1] == 1:
        return pixels
    hsv = _rgb_to_hsv(pixels / PIXEL_MAX)
    shifted_hue = torch.remainder(hsv[:, :1] + _per_sample(hue_factor.to(torch.float32)), 1.0)
    rgb = _hsv_to_rgb(torch.cat((shifted_hue, hsv[:, 1:]), dim=1))
    return (rgb * _FLOAT_TO_UINT8_SCALE).floor()


def posterize(pixels: Tensor, bits: Tensor) -> Tensor:
    """``F.posterize``: keep the top ``bits`` ``[B]`` (integers 0..8) bits of each value."""
    step = _per_sample(torch.pow(2.0, 8 - bits.to(torch.float32)))
    return torch.floor(pixels / step) * step


def solarize(pixels: Tensor, threshold: Tensor) -> Tensor:
    """``F.solarize``: invert values ``>= threshold`` ``[B]``."""
    return torch.where(pixels >= _per_sample(threshold.to(torch.float32)), PIXEL_MAX - pixels, pixels)


def invert(pixels: Tensor) -> Tensor:
    """``F.invert``: ``255 - x``."""
    return PIXEL_MAX - pixels


def autocontrast(pixels: Tensor) -> Tensor:
    """``F.autocontrast``: per channel ``trunc(clamp((x - min) * 255 / (max - min)))``; flat channels kept."""
    minimum = pixels.amin(dim=(-2, -1), keepdim=True)
    maximum = pixels.amax(dim=(-2, -1), keepdim=True)
    flat = maximum == minimum
    scale = PIXEL_MAX / torch.where(flat, torch.ones_like(maximum), maximum - minimum)
    scale = torch.where(flat, torch.ones_like(scale), scale)
    minimum = torch.where(flat, torch.zeros_like(minimum), minimum)
    return ((pixels - minimum) * scale).clamp(0.0, PIXEL_MAX).floor()


def equalize(pixels: Tensor) -> Tensor:
    """``F.equalize`` per channel: histogram LUT ``lut[v] = (cdf[v-1] + step // 2) // step``.

    ``step = (n_pixels - hist[max value]) // 255``; channels with ``step == 0`` are unchanged.
    Histograms are per-sample ``scatter_add`` counts, so the whole batch is one kernel.
    """
    batch, channels, height, width = pixels.shape
    values = pixels.reshape(batch * channels, height * width).to(torch.int64)
    histogram = torch.zeros(batch * channels, 256, dtype=torch.int64, device=pixels.device)
    histogram.scatter_add_(1, values, torch.ones_like(values))
    top_count = histogram.gather(1, values.amax(dim=1, keepdim=True))
    step = torch.div(height * width - top_count, 255, rounding_mode="floor")
    safe_step = torch.where(step == 0, torch.ones_like(step), step)
    cumulative = torch.cumsum(histogram, dim=1)
    lut = torch.div(cumulative + torch.div(step, 2, rounding_mode="floor"), safe_step, rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    equalized = lut.gather(1, values).to(pixels.dtype)
    out = torch.where(step == 0, values.to(pixels.dtype), equalized)
    return out.view(batch, channels, height, width)


def cutout(pixels: Tensor, centre_y: Tensor, centre_x: Tensor, length: int, fill: float = 0.0) -> Tensor:
    """DeVries & Taylor Cutout: set rows ``[cy - L//2, cy + L//2)`` x cols ``[cx - L//2, cx + L//2)``,
    clipped to the image, to ``fill``. ``centre_y``, ``centre_x``: ``[B]`` integers.

    Works on any float image tensor ``[B, C, H, W]`` (pixels or normalised values).
    """
    _, _, height, width = pixels.shape
    half = length // 2
    rows = torch.arange(height, device=pixels.device).view(1, height)
    cols = torch.arange(width, device=pixels.device).view(1, width)
    cy = centre_y.long().view(-1, 1)
    cx = centre_x.long().view(-1, 1)
    in_rows = (rows >= cy - half) & (rows < cy + half)
    in_cols = (cols >= cx - half) & (cols < cx + half)
    hole = in_rows.unsqueeze(2) & in_cols.unsqueeze(1)  # [B, H, W]
    return torch.where(hole.unsqueeze(1), torch.full((), fill, dtype=pixels.dtype, device=pixels.device), pixels)
