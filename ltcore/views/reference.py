"""Reference view pipelines: torchvision (v1 API) transforms on one PIL image at a time.

These are the pipelines the papers' code runs in DataLoader workers; the batched pipelines in
:mod:`ltcore.views.batched` are validated against them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision import transforms as T

from ltcore.views.batched import CIFAR_CROP_FRACTION, imagenet_resize_size


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
    crop_flip = [T.RandomCrop(image_size, padding=image_size // CIFAR_CROP_FRACTION), T.RandomHorizontalFlip()]
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
                 T.RandAugment(num_ops=2, magnitude=10)] + to_normalised
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
