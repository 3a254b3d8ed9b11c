"""Reference view pipelines: torchvision (v1 API) transforms on one PIL image at a time.

These are the pipelines the papers' code runs in DataLoader workers; the batched pipelines in
:mod:`ltcore.views.batched` are validated against them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import random

import torch
from torch import Tensor
from torchvision import transforms as T

from ltcore.views.batched import CIFAR_CROP_FRACTION, imagenet_resize_size

TIMM_RANDAUGMENT = "rand-n2-m10-mstd0.5"
"""timm's RandAugment policy of the BCL ImageNet recipe: 2 ops, magnitude 10 of timm's 0..10
scale (the maximum of each op's range) with Gaussian noise of std 0.5, each op applied with
probability 0.5."""


def seed_image_randomness(seed: int) -> None:
    """Seed what a per-image transform draws from: torch's CPU generator, ``random`` and numpy
    (timm's RandAugment picks its ops with numpy). Cheaper than ``torch.manual_seed``, which
    also seeds every accelerator."""
    import numpy as np

    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)


def timm_randaugment(image_size: int, mean: Sequence[float]) -> Callable:
    """timm's ``rand_augment_transform`` with :data:`TIMM_RANDAUGMENT` and the hyper-parameters
    of the reference code (``translate_const`` 45% of the view, the mean colour as fill). Its
    translations are timm's relative ones, up to 45% of the image side."""
    from timm.data.auto_augment import rand_augment_transform

    fill = tuple(round(255 * value) for value in mean)
    if len(fill) == 1:
        fill = fill * 3
    return rand_augment_transform(TIMM_RANDAUGMENT, {"translate_const": int(image_size * 0.45),
                                                     "img_mean": fill})


class Cutout:
    """DeVries & Taylor Cutout on a tensor ``[C, H, W]``: one ``length x length`` hole, centre
    uniform over the pixels (global torch RNG), clipped at the borders, set to ``fill``."""

    def __init__(self, length: int, fill: float = 0.0) -> None:
        self.length = length
        self.fill = fill

    def __call__(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        centre_y = int(torch.randint(height, (1,)))
        centre_x = int(torch.randint(width, (1,)))
        half = self.length // 2
        out = image.clone()
        out[..., max(centre_y - half, 0):min(centre_y + half, height),
            max(centre_x - half, 0):min(centre_x + half, width)] = self.fill
        return out

    def __repr__(self) -> str:
        return f"Cutout(length={self.length}, fill={self.fill})"


def build(name: str, image_size: int, mean: Sequence[float], std: Sequence[float],
          cutout_after_normalize: bool = False) -> Callable:
    """Per-image form of the view pipeline ``name``: PIL image -> normalised float tensor ``[C, S, S]``."""
    to_normalised = [T.ToTensor(), T.Normalize(mean, std)]
    # pad_if_needed: an image smaller than the crop (a file of any size) is padded, not refused
    crop_flip = [T.RandomCrop(image_size, padding=image_size // CIFAR_CROP_FRACTION, pad_if_needed=True),
                 T.RandomHorizontalFlip()]
    jitter_gray = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    if name == "standard":
        steps = crop_flip + to_normalised
    elif name == "autoaugment-cutout":
        cutout = Cutout(image_size // 2)
        tail = to_normalised + [cutout] if cutout_after_normalize else [T.ToTensor(), cutout, T.Normalize(mean, std)]
        steps = crop_flip + [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] + tail
    elif name == "simaugment":
        steps = [T.RandomResizedCrop(image_size, scale=(0.2, 1.0)), T.RandomHorizontalFlip()] + jitter_gray + \
            to_normalised
    elif name == "randaugment":
        steps = crop_flip + [T.RandAugment(num_ops=2, magnitude=10)] + to_normalised
    elif name == "imagenet-standard":
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()] + to_normalised
    elif name == "imagenet-simaugment":
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()] + jitter_gray + to_normalised
    elif name == "imagenet-randaugment":
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
                 timm_randaugment(image_size, mean)] + to_normalised
    elif name == "imagenet-autoaugment":
        steps = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
                 T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)] + to_normalised
    elif name == "eval":
        steps = to_normalised
    elif name == "imagenet-eval":
        steps = [T.Resize(imagenet_resize_size(image_size)), T.CenterCrop(image_size)] + to_normalised
    else:
        raise ValueError(f"unknown view pipeline {name!r}")
    return T.Compose(steps)
