"""Batched view pipelines: per-sample random augmentation of uint8 batches on any device.

A pipeline maps uint8 images ``[B, C, H, W]`` and a ``torch.Generator`` on the images' device to
normalised float32 ``[B, C, S, S]``. Every random choice is drawn per sample from that generator
(one draw per sample per decision, as torchvision draws per image); every candidate result is
computed for the whole batch and picked with ``torch.where``, so shapes are static and nothing
synchronises with the host.

Each step (and the whole pipeline) splits into ``sample(batch, height, width, generator)``,
which draws the per-sample parameters (small tensors), and ``apply(pixels, params)``, a pure
function of tensors. ``apply`` is what to hand to ``torch.compile(fullgraph=True)`` or a CUDA
graph: TorchDynamo does not trace ``torch.Generator`` arguments, and the draws are cheap.
Steps are ``nn.Module``s whose constant tables are buffers; ``sample`` moves them to the
generator's device on first use (or call ``.to(device)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ltcore.views import ops
from ltcore.views.augment import AutoAugment, RandAugment

CIFAR_CROP_FRACTION = 8
"""RandomCrop padding is ``image_size // 8`` (4 for 32x32)."""


def imagenet_resize_size(image_size: int) -> int:
    """Shorter-side size before the evaluation centre crop: ``round(S * 256 / 224)`` (256 for 224)."""
    return int(math.floor(image_size * 256 / 224 + 0.5))


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator) -> Tensor:
    """float32 draws on ``[low, high)``, as ``torch.empty(...).uniform_(low, high)``."""
    return low + (high - low) * torch.rand(*shape, generator=generator, device=generator.device)


def _uniform_index(upper: Tensor, generator: torch.Generator) -> Tensor:
    """One integer uniform on ``[0, upper[b])`` per sample (``upper`` ``[B]`` integer, >= 1)."""
    draw = torch.rand(upper.shape, generator=generator, device=upper.device)
    return torch.minimum((draw * upper).long(), upper - 1)


def _bernoulli(batch: int, probability: float, generator: torch.Generator) -> Tensor:
    """``[B]`` bool, true with ``probability`` (torchvision's ``torch.rand(1) < p``)."""
    return torch.rand(batch, generator=generator, device=generator.device) < probability


class BatchedStep(nn.Module):
    """One pipeline step: ``sample`` per-sample parameters, ``apply`` them to pixel images."""

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the step's output for an ``height x width`` input."""
        return height, width

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Any:
        """Per-sample parameters for a batch of ``height x width`` images (None if deterministic)."""
        return None

    def apply(self, pixels: Tensor, params: Any) -> Tensor:
        raise NotImplementedError


class PadCropParams(NamedTuple):
    """Crop offsets ``top, left`` ``[B]`` int64 in padded coordinates."""

    top: Tensor
    left: Tensor


class RandomPadCrop(BatchedStep):
    """``RandomCrop(size, padding)``: zero-pad by ``padding``, crop ``size x size`` at a uniform offset."""

    def __init__(self, size: int, padding: int) -> None:
        super().__init__()
        self.size = size
        self.padding = padding

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size, self.size

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> PadCropParams:
        """Offsets uniform on ``[0, H + 2 padding - size]`` (and likewise for W)."""
        row_choices = height + 2 * self.padding - self.size + 1
        col_choices = width + 2 * self.padding - self.size + 1
        if row_choices < 1 or col_choices < 1:
            raise ValueError(f"crop {self.size} larger than the padded {height}x{width} image")
        device = generator.device
        rows = torch.full((batch,), row_choices, device=device)
        cols = torch.full((batch,), col_choices, device=device)
        return PadCropParams(_uniform_index(rows, generator), _uniform_index(cols, generator))

    def apply(self, pixels: Tensor, params: PadCropParams) -> Tensor:
        return ops.pad_crop(pixels, params.top, params.left, self.size, self.padding)


class RandomHorizontalFlip(BatchedStep):
    """Mirror each sample with probability ``p``; parameters: ``[B]`` bool."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(batch, self.p, generator)

    def apply(self, pixels: Tensor, params: Tensor) -> Tensor:
        return ops.hflip(pixels, params)


class CropBoxParams(NamedTuple):
    """Crop boxes: ``top, left, height, width``, each ``[B]`` int64."""

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor


class RandomResizedCrop(BatchedStep):
    """torchvision ``RandomResizedCrop(size, scale, ratio)`` (bilinear, antialias), drawn per sample.

    Per sample, up to 10 attempts draw ``area ~ U(scale) * H * W`` and ``log r ~ U(log ratio)``,
    ``w = round(sqrt(area r))``, ``h = round(sqrt(area / r))``; the first attempt that fits is
    kept with a uniform offset, else the centre crop with the ratio clamped into ``ratio``.
    All attempts are drawn at once (``[B, 10]``) and the first fit is picked by ``argmax``.
    """

    attempts = 10

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)) -> None:
        super().__init__()
        self.size = size
        self.scale = scale
        self.ratio = ratio
        # torchvision takes the log of the ratio bounds in float32
        self.log_ratio = tuple(float(value) for value in torch.log(torch.tensor(ratio)))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size, self.size

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> CropBoxParams:
        device = generator.device
        heights = torch.full((batch,), height, dtype=torch.int64, device=device)
        widths = torch.full((batch,), width, dtype=torch.int64, device=device)
        return self.sample_sizes(heights, widths, generator)

    def sample_sizes(self, heights: Tensor, widths: Tensor, generator: torch.Generator) -> CropBoxParams:
        """Crop boxes for images of per-sample sizes ``heights``, ``widths`` (``[B]`` int64 on the
        generator's device): the draws of :meth:`sample`, for a batch of images of any sizes."""
        shape = (heights.shape[0], self.attempts)
        area_fraction = _uniform(shape, self.scale[0], self.scale[1], generator)
        log_aspect = _uniform(shape, self.log_ratio[0], self.log_ratio[1], generator)
        target_area = (heights * widths).to(torch.float64).unsqueeze(1) * area_fraction.to(torch.float64)
        aspect = torch.exp(log_aspect).to(torch.float64)
        crop_w = torch.round(torch.sqrt(target_area * aspect))
        crop_h = torch.round(torch.sqrt(target_area / aspect))
        fits = (crop_w > 0) & (crop_w <= widths.unsqueeze(1)) & (crop_h > 0) & (crop_h <= heights.unsqueeze(1))
        first_fit = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
        any_fit = fits.any(dim=1)
        # no attempt fits: the centre crop with the aspect ratio clamped into ``ratio``
        low, high = min(self.ratio), max(self.ratio)
        in_ratio = widths.to(torch.float64) / heights.to(torch.float64)
        fallback_w = torch.where(in_ratio > high, torch.round(heights * high), widths.to(torch.float64))
        fallback_h = torch.where(in_ratio < low, torch.round(widths / low), heights.to(torch.float64))
        crop_h = torch.where(any_fit, crop_h.gather(1, first_fit).squeeze(1), fallback_h).long()
        crop_w = torch.where(any_fit, crop_w.gather(1, first_fit).squeeze(1), fallback_w).long()
        fallback_top = torch.div(heights - crop_h, 2, rounding_mode="floor")
        fallback_left = torch.div(widths - crop_w, 2, rounding_mode="floor")
        top = torch.where(any_fit, _uniform_index(heights - crop_h + 1, generator), fallback_top)
        left = torch.where(any_fit, _uniform_index(widths - crop_w + 1, generator), fallback_left)
        return CropBoxParams(top, left, crop_h, crop_w)

    def apply(self, pixels: Tensor, params: CropBoxParams) -> Tensor:
        return ops.resize_crop(pixels, *params, (self.size, self.size))


class ColorJitterParams(NamedTuple):
    """Per-sample jitter draws: ``order [B, 4]`` a permutation of (brightness, contrast, saturation,
    hue) = (0, 1, 2, 3), ``factors [B, 4]`` float64 in that op order, ``applied [B]`` bool."""

    order: Tensor
    factors: Tensor
    applied: Tensor


class RandomColorJitter(BatchedStep):
    """``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`` per sample.

    A jittered sample applies the four adjustments in its own random order (a uniform
    permutation per sample, as torchvision's ``randperm(4)`` per image), with factors
    ``U(max(0, 1 - b), 1 + b)`` (brightness, contrast, saturation) and ``U(-h, h)`` (hue).
    Static shapes: four rounds, each computes one shared blend (brightness, contrast and
    saturation blend with black, the mean luma and the luma image) plus the hue rotation, and
    every sample keeps the op its permutation names for that round. A zero strength disables
    that op, as in torchvision. Saturation and hue are no-ops on single-channel images.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue strength {hue} outside [0, 0.5]")
        self.ranges = (
            (max(0.0, 1.0 - brightness), 1.0 + brightness),
            (max(0.0, 1.0 - contrast), 1.0 + contrast),
            (max(0.0, 1.0 - saturation), 1.0 + saturation),
            (-hue, hue),
        )
        self.enabled = (brightness > 0, contrast > 0, saturation > 0, hue > 0)
        self.p = p

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> ColorJitterParams:
        order = torch.rand(batch, 4, generator=generator, device=generator.device).argsort(dim=1)
        factors = torch.stack([_uniform((batch,), low, high, generator) for low, high in self.ranges], dim=1)
        applied = _bernoulli(batch, self.p, generator)
        return ColorJitterParams(order, factors.to(torch.float64), applied)

    def _round(self, pixels: Tensor, op: Tensor, factors: Tensor) -> Tensor:
        channels = pixels.shape[1]
        brightness, contrast, saturation, hue = self.enabled
        saturation = saturation and channels == 3
        hue = hue and channels == 3
        out = pixels
        op = op.view(-1, 1, 1, 1)
        if brightness or contrast or saturation:
            degenerate = torch.zeros_like(pixels)
            if contrast:
                degenerate = torch.where(op == 1, ops.grayscale_mean(pixels), degenerate)
            if saturation:
                degenerate = torch.where(op == 2, ops.rgb_to_grayscale(pixels), degenerate)
            factor = factors.gather(1, op.view(-1, 1)).squeeze(1)
            blended = ops.blend(pixels, degenerate, factor)
            is_blend = ((op == 0) & brightness) | ((op == 1) & contrast) | ((op == 2) & saturation)
            out = torch.where(is_blend, blended, out)
        if hue:
            out = torch.where(op == 3, ops.adjust_hue(pixels, factors[:, 3]), out)
        return out

    def apply(self, pixels: Tensor, params: ColorJitterParams) -> Tensor:
        jittered = pixels
        for round_index in range(4):
            jittered = self._round(jittered, params.order[:, round_index], params.factors)
        return torch.where(params.applied.view(-1, 1, 1, 1), jittered, pixels)


class RandomGrayscale(BatchedStep):
    """``RandomGrayscale(p)``: a sample becomes its truncated luma in every channel (no-op for C=1)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        return _bernoulli(batch, self.p, generator)

    def apply(self, pixels: Tensor, params: Tensor) -> Tensor:
        if pixels.shape[1] == 1:
            return pixels
        return torch.where(params.view(-1, 1, 1, 1), ops.rgb_to_grayscale(pixels).expand_as(pixels), pixels)


class CutoutParams(NamedTuple):
    """Hole centres ``row, col`` ``[B]`` int64."""

    row: Tensor
    col: Tensor


class RandomCutout(BatchedStep):
    """One ``length x length`` hole per sample set to ``fill``, centre uniform over the pixels, clipped."""

    def __init__(self, length: int, fill: float = 0.0) -> None:
        super().__init__()
        self.length = length
        self.fill = fill

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> CutoutParams:
        device = generator.device
        rows = torch.full((batch,), height, device=device)
        cols = torch.full((batch,), width, device=device)
        return CutoutParams(_uniform_index(rows, generator), _uniform_index(cols, generator))

    def apply(self, images: Tensor, params: CutoutParams) -> Tensor:
        return ops.cutout(images, params.row, params.col, self.length, self.fill)


class ResizeCenterCrop(BatchedStep):
    """``Resize(resize_size)`` (shorter side, bilinear antialias, round) then ``CenterCrop(crop_size)``."""

    def __init__(self, resize_size: int, crop_size: int) -> None:
        super().__init__()
        self.resize_size = resize_size
        self.crop_size = crop_size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.crop_size, self.crop_size

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        short, long = (height, width) if height <= width else (width, height)
        new_long = int(self.resize_size * long / short)
        return (self.resize_size, new_long) if height <= width else (new_long, self.resize_size)

    def apply(self, pixels: Tensor, params: None) -> Tensor:
        batch, _, height, width = pixels.shape
        new_h, new_w = self._resized_size(height, width)
        zeros = torch.zeros(batch, dtype=torch.int64, device=pixels.device)
        resized = ops.resize_crop(pixels, zeros, zeros, zeros + height, zeros + width, (new_h, new_w))
        top = int(round((new_h - self.crop_size) / 2.0))
        left = int(round((new_w - self.crop_size) / 2.0))
        return resized[..., top:top + self.crop_size, left:left + self.crop_size]


class Normalize(BatchedStep):
    """``(pixels / 255 - mean) / std`` per channel (``ToTensor`` + ``Normalize``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def apply(self, pixels: Tensor, params: None) -> Tensor:
        return ops.normalize(pixels, self.mean, self.std)


class _AugmentStep(BatchedStep):
    """Adapts :class:`AutoAugment` / :class:`RandAugment` to the step interface."""

    def __init__(self, augment: nn.Module) -> None:
        super().__init__()
        self.augment = augment

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Any:
        return self.augment.sample(batch, generator)

    def apply(self, pixels: Tensor, params: Any) -> Tensor:
        return self.augment.apply(pixels, params)


class BatchedViewPipeline(nn.Module):
    """Steps from uint8 ``[B, C, H, W]`` to normalised float32 ``[B, C, S, S]``.

    ``pipeline(images, generator)`` = ``pipeline.apply(images, pipeline.sample(images.shape, generator))``.
    ``input_size`` (``(H, W)``, or None for any size) and the channel count (that of ``mean``)
    are checked in ``apply``.
    """

    def __init__(self, name: str, steps: Sequence[BatchedStep], channels: int,
                 input_size: tuple[int, int] | None) -> None:
        super().__init__()
        self.name = name
        self.steps = nn.ModuleList(steps)
        self.channels = channels
        self.input_size = input_size

    def sample(self, shape: Sequence[int], generator: torch.Generator) -> tuple:
        """Per-step parameters for images of ``shape`` ``(B, C, H, W)``, drawn on the generator's device.

        Moves the pipeline's constant buffers to that device first if they are elsewhere.
        """
        if any(buffer.device != generator.device for buffer in self.buffers()):
            self.to(generator.device)
        batch, _, height, width = shape
        params = []
        for step in self.steps:
            params.append(step.sample(batch, height, width, generator))
            height, width = step.output_size(height, width)
        return tuple(params)

    def apply(self, images: Tensor, params: tuple) -> Tensor:
        """Run the steps with the given parameters: a pure tensor function, safe to compile."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"{self.name}: expected uint8 images [B, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] != self.channels:
            raise ValueError(f"{self.name}: images have {images.shape[1]} channels, mean/std have {self.channels}")
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.name}: expects {self.input_size} images, got {tuple(images.shape[-2:])}")
        pixels = ops.to_pixels(images)
        for step, step_params in zip(self.steps, params):
            pixels = step.apply(pixels, step_params)
        return pixels

    @property
    def any_size(self) -> bool:
        """Whether the pipeline takes images of any size (its first step crops or resizes every
        image to the view size): then :meth:`from_images` makes views of image files."""
        return bool(self.steps) and isinstance(self.steps[0], (RandomResizedCrop, ResizeCenterCrop))

    def from_images(self, images: Sequence[Tensor], generator: torch.Generator) -> Tensor:
        """Views of uint8 images ``[C, H_i, W_i]`` of different sizes (decoded files), on the
        generator's device: the first step draws per-image parameters for each image's own size
        and brings every image to the view size, the other steps run on the whole batch."""
        if not self.any_size:
            raise ValueError(f"{self.name}: starts with {type(self.steps[0]).__name__}, which needs "
                             "images of one size; it cannot make views of image files")
        for image in images:
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != self.channels:
                raise ValueError(f"{self.name}: expected uint8 images [{self.channels}, H, W], got "
                                 f"{image.dtype} {tuple(image.shape)}")
        if any(buffer.device != generator.device for buffer in self.buffers()):
            self.to(generator.device)
        first, device = self.steps[0], generator.device
        if isinstance(first, RandomResizedCrop):
            heights = torch.tensor([image.shape[1] for image in images], device=device)
            widths = torch.tensor([image.shape[2] for image in images], device=device)
            boxes = first.sample_sizes(heights, widths, generator)
            sized = [first.apply(ops.to_pixels(image[None]), CropBoxParams(*(b[i:i + 1] for b in boxes)))
                     for i, image in enumerate(images)]
        else:
            sized = [first.apply(ops.to_pixels(image[None]), None) for image in images]
        pixels = torch.cat(sized)
        batch, _, height, width = pixels.shape
        for step in self.steps[1:]:
            pixels = step.apply(pixels, step.sample(batch, height, width, generator))
            height, width = step.output_size(height, width)
        return pixels

    def forward(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if generator.device.type != images.device.type:
            raise ValueError(f"{self.name}: generator on {generator.device}, images on {images.device}")
        return self.apply(images, self.sample(images.shape, generator))


def build(name: str, image_size: int, mean: Sequence[float], std: Sequence[float],
          cutout_after_normalize: bool = False) -> BatchedViewPipeline:
    """Batched form of the view pipeline ``name`` (see ``ltcore.views.VIEW_PIPELINES``)."""
    normalize = Normalize(mean, std)
    crop_flip = [RandomPadCrop(image_size, image_size // CIFAR_CROP_FRACTION), RandomHorizontalFlip()]
    jitter_gray = [RandomColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), RandomGrayscale(0.2)]
    input_size = None
    if name == "standard":
        steps = crop_flip + [normalize]
    elif name == "autoaugment-cutout":
        cutout = RandomCutout(image_size // 2)
        tail = [normalize, cutout] if cutout_after_normalize else [cutout, normalize]
        steps = crop_flip + [_AugmentStep(AutoAugment("cifar10", image_size))] + tail
    elif name == "simaugment":
        steps = [RandomResizedCrop(image_size, scale=(0.2, 1.0)), RandomHorizontalFlip()] + jitter_gray + [normalize]
    elif name == "randaugment":
        steps = crop_flip + [_AugmentStep(RandAugment(image_size, num_ops=2, magnitude=10)), normalize]
    elif name == "imagenet-standard":
        steps = [RandomResizedCrop(image_size), RandomHorizontalFlip(), normalize]
    elif name == "imagenet-simaugment":
        steps = [RandomResizedCrop(image_size), RandomHorizontalFlip()] + jitter_gray + [normalize]
    elif name == "imagenet-autoaugment":
        steps = [RandomResizedCrop(image_size), RandomHorizontalFlip(),
                 _AugmentStep(AutoAugment("imagenet", image_size)), normalize]
    elif name == "eval":
        steps, input_size = [normalize], (image_size, image_size)
    elif name == "imagenet-eval":
        steps = [ResizeCenterCrop(imagenet_resize_size(image_size), image_size), normalize]
    else:
        raise ValueError(f"unknown view pipeline {name!r}")
    return BatchedViewPipeline(name, steps, len(mean), input_size)
