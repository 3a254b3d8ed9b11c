"""Shared fixtures for the view-pipeline tests: test images and comparison helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def make_test_images(count: int = 64, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 ``[count, 3, size, size]``: half smooth images with noise (photo-like histograms),
    a quarter uniform noise, an eighth low-contrast, the rest flat or with one flat channel
    (the edge cases of autocontrast, equalize and hue)."""
    generator = torch.Generator().manual_seed(seed)
    n_smooth, n_noise, n_low = count // 2, count // 4, count // 8
    n_flat = count - n_smooth - n_noise - n_low
    coarse = torch.rand(n_smooth, 3, 4, 4, generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    smooth = (smooth + torch.randn(smooth.shape, generator=generator) * 8).clamp(0, 255).round()
    noise = torch.randint(0, 256, (n_noise, 3, size, size), generator=generator).float()
    low = 100 + torch.randint(0, 30, (n_low, 3, size, size), generator=generator).float()
    flat = torch.full((n_flat, 3, size, size), 77.0)
    flat[1::2, 0] = 200.0
    flat[1::2, 1] = torch.randint(0, 256, (size, size), generator=generator).float()
    return torch.cat([smooth, noise, low, flat]).to(torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 ``[C, H, W]`` -> PIL image (mode RGB or L)."""
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def from_pil(image: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 ``[C, H, W]``."""
    array = np.array(image)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pixel_errors(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float, float]:
    """(max abs error, mean abs error, fraction of differing values) between pixel tensors."""
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = (ours.to(torch.float64) - theirs.to(torch.float64)).abs()
    return float(diff.max()), float(diff.mean()), float((diff > 0).to(torch.float64).mean())


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    return make_test_images()


@pytest.fixture(scope="session")
def helpers():
    """The module-level helpers, for test files (pytest's importlib mode cannot import conftest)."""

    class Helpers:
        make_test_images = staticmethod(make_test_images)
        to_pil = staticmethod(to_pil)
        from_pil = staticmethod(from_pil)
        pixel_errors = staticmethod(pixel_errors)
        mean = CIFAR_MEAN
        std = CIFAR_STD

    return Helpers
