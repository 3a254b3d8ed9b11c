"""Segmentation view pipelines: augmentations that move an image and its label mask together.

The per-image form of each pipeline is ``transform(image, mask) -> (x, y)``:

* ``image``: a PIL image (converted to RGB) or a uint8 tensor ``[3, H, W]``;
* ``mask``: a PIL ``L`` / ``P`` image or a uint8 array / tensor ``[H, W]``, 255 = ignore;
* ``x``: float32 ``[3, h, w]`` normalised with ``mean`` / ``std``; ``y``: int64 ``[h, w]``.

Pipelines (``S`` = ``image_size``, the training crop):

* ``seg-train``: mmsegmentation's ADE20K training pipeline (``configs/_base_/datasets/
  ade20k.py``) with its crop ``(S, S)`` and the resize scale that goes with it, ``(4 S, S)``
  (``(2048, 512)`` for ``S = 512``): RandomResize (ratio uniform in ``[0.5, 2]``, keep ratio),
  RandomCrop (``cat_max_ratio`` 0.75), RandomFlip (p 0.5), PhotoMetricDistortion, Normalize and
  Pad to ``S x S``.
* ``seg-flip``: for small in-memory scenes: pad 4 pixels, random ``S x S`` crop, horizontal
  flip p 0.5, Normalize. No resize.
* ``seg-eval``: mmsegmentation's test Resize (keep ratio, fit ``(4 S, S)``) on the image only;
  the mask keeps its size, as metrics are computed at the original mask size (the caller
  upsamples the logits to it). Images stored at ``S x S`` are only normalised.

Masks are always resized with nearest neighbour, so class ids and the ignore label survive and
no new value appears. Every random draw comes from Python's ``random``, which
``ltcore.seed_image_randomness`` seeds per image. There is no batched form: the transforms run
per image in DataLoader workers.

Readings where this differs from mmsegmentation's code (OpenCV on BGR uint8 arrays):

* Pixel arithmetic is torch's: bilinear resizing uses half-pixel centres without antialiasing
  (as OpenCV's ``INTER_LINEAR``) and is rounded to whole grey levels as OpenCV's uint8 output
  is; nearest picks ``floor(i * in / out)`` (as ``INTER_NEAREST``). The HSV round trip of the
  saturation and hue steps is computed in floats with OpenCV's uint8 scales (hue 0..180,
  saturation 0..255), so pixels may differ from mmsegmentation's by a grey level.
* The hue shift is an integer uniform in ``[-18, 18]`` (mmsegmentation draws numpy's
  ``randint(-18, 18)``, which leaves out 18).
* Pad: bottom and right, as mmsegmentation's ``Pad`` / ``SegDataPreProcessor``; the image with
  0 after normalisation (the mean colour), the mask with 255.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import attrs

from . import IGNORE

if TYPE_CHECKING:
    import torch

RATIO_RANGE = (0.5, 2.0)
"""RandomResize's ``ratio_range``: the resize scale times a ratio uniform in this range."""
CAT_MAX_RATIO = 0.75
"""RandomCrop's ``cat_max_ratio``: the most of a crop's labelled pixels one class may hold."""
CROP_TRIES = 10
"""Crops RandomCrop checks against ``cat_max_ratio`` before it takes one more unchecked."""
FLIP_P = 0.5
FLIP_PADDING = 4
"""``seg-flip``'s padding on each side before its random crop."""
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18
"""Largest hue shift, on OpenCV's 0..180 hue scale (36 degrees)."""
INTERPOLATIONS = ("bilinear", "nearest")
"""Image interpolations: bilinear (mmsegmentation's) or nearest (to check alignment in tests)."""

# Which of (v, q, p, t) is red, green and blue in each sixth of the hue circle.
_HSV_SECTORS = ((0, 3, 2), (1, 0, 2), (2, 0, 3), (2, 1, 0), (3, 2, 0), (0, 2, 1))


def resize_scale(image_size: int) -> tuple[int, int]:
    """The resize scale ``(long side, short side)`` that goes with the crop ``image_size``:
    ``(4 S, S)``, mmsegmentation's ``(2048, 512)`` for 512 crops."""
    return 4 * image_size, image_size


def keep_ratio_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale rule: the ``(height, width)`` of the image scaled by the largest
    factor with long side ``<= max(scale)`` and short side ``<= min(scale)``, rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def as_image_tensor(image: Any) -> torch.Tensor:
    """A PIL image (converted to RGB) or a uint8 tensor ``[3, H, W]`` as a uint8 tensor
    ``[3, H, W]``."""
    import numpy as np
    import torch

    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be uint8 [3, H, W], got {image.dtype} "
                             f"{list(image.shape)}")
        return image
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def as_mask_tensor(mask: Any) -> torch.Tensor:
    """A PIL ``L`` / ``P`` image or a uint8 array / tensor ``[H, W]`` as a uint8 tensor
    ``[H, W]``."""
    import numpy as np
    import torch

    if not isinstance(mask, (torch.Tensor, np.ndarray)):
        if mask.mode not in ("L", "P"):
            raise ValueError(f"a mask image must have mode 'L' or 'P' (one class id per pixel), "
                             f"got {mask.mode!r}")
        mask = np.array(mask)
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.uint8 or mask.dim() != 2:
        raise ValueError(f"a mask must be uint8 [H, W], got {mask.dtype} {list(mask.shape)}")
    return mask


def _image_and_mask(image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = as_image_tensor(image), as_mask_tensor(mask)
    if image.shape[1:] != mask.shape:
        raise ValueError(f"image {image.shape[2]}x{image.shape[1]} and mask "
                         f"{mask.shape[1]}x{mask.shape[0]} (width x height) differ in size")
    return image, mask


def resize_image(image: torch.Tensor, size: tuple[int, int],
                 interpolation: str = "bilinear") -> torch.Tensor:
    """``image`` ``[3, H, W]`` resized to ``size`` ``(h, w)`` (bilinear: half-pixel centres, no
    antialiasing), as float32 rounded to whole grey levels in ``0..255``."""
    import torch.nn.functional as F

    image = image.float()
    if tuple(image.shape[1:]) == tuple(size):
        return image
    corners = {"align_corners": False} if interpolation == "bilinear" else {}
    resized = F.interpolate(image[None], size=size, mode=interpolation, antialias=False,
                            **corners)[0]
    return resized.round().clamp(0, 255)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``mask`` ``[H, W]`` resized to ``size`` ``(h, w)`` with nearest neighbour (pixel
    ``floor(i * H / h)``): every value of the result is a value of ``mask``."""
    import torch.nn.functional as F

    if tuple(mask.shape) == tuple(size):
        return mask
    return F.interpolate(mask[None, None], size=size, mode="nearest")[0, 0]


def resize_for_eval(image: Any, image_size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """mmsegmentation's test Resize: ``image`` (PIL or uint8 ``[3, H, W]``) rescaled, keeping
    its ratio, to fit :func:`resize_scale` ``(4 S, S)``; uint8 ``[3, h, w]``."""
    import torch

    image = as_image_tensor(image)
    size = keep_ratio_size(image.shape[1], image.shape[2], resize_scale(image_size))
    return resize_image(image, size, interpolation).to(torch.uint8)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image / 255 - mean) / std`` per channel, float32 ``[3, h, w]``."""
    import torch

    mean_ = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_ = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (image.float() / 255 - mean_) / std_


def _pad_bottom_right(tensor: torch.Tensor, size: int, value: float) -> torch.Tensor:
    import torch.nn.functional as F

    bottom, right = size - tensor.shape[-2], size - tensor.shape[-1]
    if bottom <= 0 and right <= 0:
        return tensor
    return F.pad(tensor, (0, max(right, 0), 0, max(bottom, 0)), value=value)


def _crop_offsets(mask: torch.Tensor, size: int, cat_max_ratio: float) -> tuple[int, int]:
    """mmsegmentation's RandomCrop: a random ``(top, left)``, redrawn up to :data:`CROP_TRIES`
    times until the crop has two or more labelled classes and none holds ``cat_max_ratio`` or
    more of its labelled pixels; after the last failed check, one more unchecked draw."""
    import torch

    def draw() -> tuple[int, int]:
        return (random.randint(0, max(mask.shape[0] - size, 0)),
                random.randint(0, max(mask.shape[1] - size, 0)))

    top, left = draw()
    if cat_max_ratio >= 1:
        return top, left
    for _ in range(CROP_TRIES):
        crop = mask[top:top + size, left:left + size]
        counts = torch.bincount(crop.flatten(), minlength=IGNORE + 1)[:IGNORE]
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max().item() / counts.sum().item() < cat_max_ratio:
            break
        top, left = draw()
    return top, left


def _coin() -> bool:
    return random.randint(0, 1) == 1


def _scale_levels(values: torch.Tensor, factor: float, shift: float = 0.0) -> torch.Tensor:
    """mmsegmentation's ``convert``: ``values * factor + shift`` clipped to ``0..255`` and cut to
    whole grey levels (its cast to uint8)."""
    return (values * factor + shift).clamp(0, 255).floor()


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """RGB ``0..255`` to HSV on OpenCV's uint8 scales: hue ``0..180``, saturation and value
    ``0..255``, hue and saturation rounded to whole levels."""
    import torch

    red, green, blue = image
    value = image.amax(0)
    spread = value - image.amin(0)
    safe_spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    sector = torch.where(value == red, ((green - blue) / safe_spread) % 6,
                         torch.where(value == green, (blue - red) / safe_spread + 2,
                                     (red - green) / safe_spread + 4))
    hue = torch.where(spread > 0, sector * 30, torch.zeros_like(sector)).round() % 180
    saturation = (255 * spread / torch.where(value > 0, value, torch.ones_like(value))).round()
    return torch.stack([hue, saturation, value])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_rgb_to_hsv`, rounded to whole grey levels."""
    import torch

    hue, saturation, value = hsv
    sector = hue / 30
    whole = sector.floor()
    fraction = sector - whole
    saturation = saturation / 255
    candidates = torch.stack([value, value * (1 - saturation * fraction),
                              value * (1 - saturation), value * (1 - saturation * (1 - fraction))])
    choice = torch.tensor(_HSV_SECTORS)[whole.long() % 6].permute(2, 0, 1)
    return candidates.gather(0, choice).round().clamp(0, 255)


def photometric_distortion(image: torch.Tensor) -> torch.Tensor:
    """mmsegmentation's PhotoMetricDistortion on ``image`` ``[3, h, w]`` (float, ``0..255``):
    brightness ``+U(-32, 32)``, contrast ``x U(0.5, 1.5)``, saturation ``x U(0.5, 1.5)`` and hue
    ``+randint(-18, 18)`` of 180, each with p 0.5; contrast first or last (p 0.5). Each step
    clips to ``0..255`` and keeps whole grey levels."""
    if _coin():
        image = _scale_levels(image, 1.0, random.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_first = _coin()
    if contrast_first:
        image = _contrast(image)
    if _coin():
        hsv = _rgb_to_hsv(image)
        hsv[1] = _scale_levels(hsv[1], random.uniform(*SATURATION_RANGE))
        image = _hsv_to_rgb(hsv)
    if _coin():
        hsv = _rgb_to_hsv(image)
        hsv[0] = (hsv[0] + random.randint(-HUE_DELTA, HUE_DELTA)) % 180
        image = _hsv_to_rgb(hsv)
    if not contrast_first:
        image = _contrast(image)
    return image


def _contrast(image: torch.Tensor) -> torch.Tensor:
    return _scale_levels(image, random.uniform(*CONTRAST_RANGE)) if _coin() else image


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"segmentation views take RGB images: mean and std need 3 values, "
                         f"got {values}")
    return values


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class TrainTransform:
    """``seg-train`` per image: RandomResize, RandomCrop with ``cat_max_ratio``, flip,
    PhotoMetricDistortion (unless ``photometric=False``), Normalize, Pad to ``S x S``.
    ``image_interpolation='nearest'`` resizes the image as the mask, to check alignment."""

    image_size: int
    mean: tuple[float, ...] = attrs.field(converter=_floats)
    std: tuple[float, ...] = attrs.field(converter=_floats)
    photometric: bool = True
    cat_max_ratio: float = attrs.field(default=CAT_MAX_RATIO, validator=_positive)
    image_interpolation: str = attrs.field(default="bilinear",
                                           validator=attrs.validators.in_(INTERPOLATIONS))

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [3, S, S] float32, y [S, S] int64)``; padding is 0 in ``x``, 255 in ``y``."""
        import torch

        image, mask = _image_and_mask(image, mask)
        ratio = random.uniform(*RATIO_RANGE)
        scale = [int(side * ratio) for side in resize_scale(self.image_size)]
        size = keep_ratio_size(mask.shape[0], mask.shape[1], scale)
        image = resize_image(image, size, self.image_interpolation)
        mask = resize_mask(mask, size)
        top, left = _crop_offsets(mask, self.image_size, self.cat_max_ratio)
        image = image[:, top:top + self.image_size, left:left + self.image_size]
        mask = mask[top:top + self.image_size, left:left + self.image_size]
        if random.random() < FLIP_P:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.photometric:
            image = photometric_distortion(image)
        x = _pad_bottom_right(normalize(image, self.mean, self.std), self.image_size, 0.0)
        y = _pad_bottom_right(mask, self.image_size, IGNORE)
        return x, y.to(torch.int64)


@attrs.frozen
class FlipTransform:
    """``seg-flip`` per image: pad 4 pixels (image 0, mask 255; more at the bottom and right if
    still smaller than ``S``), random ``S x S`` crop, horizontal flip p 0.5, Normalize."""

    image_size: int
    mean: tuple[float, ...] = attrs.field(converter=_floats)
    std: tuple[float, ...] = attrs.field(converter=_floats)

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [3, S, S] float32, y [S, S] int64)``."""
        import torch
        import torch.nn.functional as F

        image, mask = _image_and_mask(image, mask)
        sides = (FLIP_PADDING,) * 4
        image = _pad_bottom_right(F.pad(image, sides, value=0), self.image_size, 0)
        mask = _pad_bottom_right(F.pad(mask, sides, value=IGNORE), self.image_size, IGNORE)
        top = random.randint(0, mask.shape[0] - self.image_size)
        left = random.randint(0, mask.shape[1] - self.image_size)
        image = image[:, top:top + self.image_size, left:left + self.image_size]
        mask = mask[top:top + self.image_size, left:left + self.image_size]
        if random.random() < FLIP_P:
            image, mask = image.flip(-1), mask.flip(-1)
        return normalize(image, self.mean, self.std), mask.to(torch.int64)


@attrs.frozen
class EvalTransform:
    """``seg-eval`` per image: the image resized to fit ``(4 S, S)`` keeping its ratio
    (:func:`resize_for_eval`) and normalised; the mask as it is."""

    image_size: int
    mean: tuple[float, ...] = attrs.field(converter=_floats)
    std: tuple[float, ...] = attrs.field(converter=_floats)
    image_interpolation: str = attrs.field(default="bilinear",
                                           validator=attrs.validators.in_(INTERPOLATIONS))

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [3, h, w] float32, y [H, W] int64)``: ``y`` keeps the mask's original size."""
        import torch

        image, mask = _image_and_mask(image, mask)
        resized = resize_for_eval(image, self.image_size, self.image_interpolation)
        return normalize(resized, self.mean, self.std), mask.to(torch.int64)


@attrs.frozen
class JointPipeline:
    """A view pipeline that moves an image and its mask together (``ltcore.protocols.
    ViewPipeline`` with ``joint = True``): ``make_reference`` builds ``transform(image, mask)
    -> (x, y)``; there is no batched form."""

    name: str = attrs.field(metadata={"doc": "public id, as a dataset's views name it"})
    description: str = attrs.field(metadata={"doc": "the exact transforms and parameters"})
    transform: Callable = attrs.field(
        metadata={"doc": "called as transform(image_size, mean, std, **options)"})
    batched: bool = attrs.field(default=False, init=False)
    joint: bool = attrs.field(default=True, init=False)

    def make_reference(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                       **options: Any) -> Callable:
        """The per-image form ``(image, mask) -> (x, y)``; ``options`` are the transform's."""
        return self.transform(image_size, mean, std, **options)

    def make_batched(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                     **options: Any) -> Callable:
        """Not available: segmentation views run per image (``make_reference``)."""
        raise NotImplementedError(f"view pipeline {self.name!r} moves an image and its mask "
                                  "together and has only a per-image form; use make_reference")


PIPELINES = (
    JointPipeline(
        name="seg-train",
        description="mmsegmentation's ADE20K training pipeline, S = image_size: RandomResize(scale "
        "(4 S, S) x ratio U[0.5, 2], keep ratio; image bilinear, mask nearest) + RandomCrop(S x S, "
        "cat_max_ratio 0.75, 10 tries) + horizontal flip p 0.5 + PhotoMetricDistortion(brightness "
        "+-32, contrast 0.5-1.5, saturation 0.5-1.5, hue +-18 of 180, each p 0.5, contrast first "
        "or last) + Normalize(mean, std) + Pad(S x S, bottom right; image 0, mask 255). Options: "
        "photometric (True), cat_max_ratio (0.75), image_interpolation ('bilinear').",
        transform=TrainTransform,
    ),
    JointPipeline(
        name="seg-flip",
        description="Small in-memory scenes: pad 4 (image 0, mask 255) + RandomCrop(S x S) + "
        "horizontal flip p 0.5 + Normalize(mean, std). No resize.",
        transform=FlipTransform,
    ),
    JointPipeline(
        name="seg-eval",
        description="Evaluation: image Resize(keep ratio, fit (4 S, S), bilinear) + "
        "Normalize(mean, std); the mask keeps its original size (logits are upsampled to it). "
        "Option: image_interpolation ('bilinear').",
        transform=EvalTransform,
    ),
)
"""The segmentation view pipelines, by public id."""
