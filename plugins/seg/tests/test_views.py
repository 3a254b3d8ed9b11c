"""Segmentation views move an image and its mask together: alignment, ignore label, shapes,
determinism, mmsegmentation's cat_max_ratio crop and the evaluation resize."""

import pickle
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ltcore_seg.views import (PIPELINES, keep_ratio_size, photometric_distortion,
                              resize_for_eval, resize_scale)
from PIL import Image

from ltcore import seed_image_randomness
from ltcore.protocols import ViewPipeline

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)
PIPELINE = {pipeline.name: pipeline for pipeline in PIPELINES}
PAD_LEVELS = {"seg-train": [255 * m for m in MEAN], "seg-flip": [0.0, 0.0, 0.0]}
"""The grey levels of padded image pixels: 0 after Normalize (seg-train), black (seg-flip)."""
IGNORE_LEVEL = 250


def encode(mask: torch.Tensor) -> torch.Tensor:
    """An image that spells its mask: grey level 10 id + 10 for ids 0..5, 250 for ignore."""
    levels = torch.where(mask == 255, IGNORE_LEVEL, mask.int() * 10 + 10)
    return levels.to(torch.uint8).expand(3, -1, -1).clone()


def decode(levels: torch.Tensor) -> torch.Tensor:
    return torch.where(levels == IGNORE_LEVEL, 255, (levels - 10) / 10).long()


def denormalize(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]) * 255


def random_mask(seed: int, height: int, width: int) -> torch.Tensor:
    """Blocks of random ids 0..5, about a fifth of them ignore (255)."""
    rng = np.random.default_rng(seed)
    block = int(rng.integers(1, 9))
    grid = rng.integers(0, 6, size=(height // block + 1, width // block + 1))
    grid[rng.random(grid.shape) < 0.2] = 255
    mask = grid.repeat(block, 0).repeat(block, 1)[:height, :width]
    return torch.from_numpy(mask.astype(np.uint8))


def run(name: str, image, mask, seed: int, size: int = 24, **options):
    transform = PIPELINE[name].make_reference(size, MEAN, STD, **options)
    seed_image_randomness(seed)
    return transform(image, mask)


ALIGNMENT_OPTIONS = {"seg-train": {"photometric": False, "image_interpolation": "nearest"},
                     "seg-flip": {}}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), height=st.integers(20, 64), width=st.integers(20, 64),
       size=st.integers(16, 32), name=st.sampled_from(sorted(ALIGNMENT_OPTIONS)))
def test_the_image_still_spells_the_mask_after_every_random_transform(seed, height, width, size,
                                                                      name):
    mask = random_mask(seed, height, width)
    x, y = run(name, encode(mask), mask, seed, size, **ALIGNMENT_OPTIONS[name])
    assert x.shape == (3, size, size) and y.shape == (size, size)
    levels = denormalize(x)
    padded = torch.isclose(levels, torch.tensor(PAD_LEVELS[name])[:, None, None], atol=1e-3).all(0)
    assert (y[padded] == 255).all()
    kept = levels[:, ~padded].round()
    assert (kept == kept[0]).all()
    assert torch.equal(decode(kept[0]), y[~padded])
    assert set(y.unique().tolist()) <= set(mask.unique().tolist()) | {255}


@pytest.mark.parametrize("height, width", [(12, 20), (20, 12), (64, 48), (40, 64)])
def test_seg_train_always_gives_an_s_by_s_crop(height, width):
    mask = random_mask(height * width, height, width)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    for seed in range(4):
        x, y = run("seg-train", image, mask, seed, size=24)
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32
        assert y.shape == (24, 24) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= set(mask.unique().tolist()) | {255}
        assert denormalize(x).min() > -1e-3 and denormalize(x).max() < 255 + 1e-3


@pytest.mark.parametrize("name", ["seg-train", "seg-flip", "seg-eval"])
def test_the_same_seed_gives_the_same_views_and_another_seed_others(name):
    mask = random_mask(0, 40, 48)
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    first, again = run(name, image, mask, 7), run(name, image, mask, 7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    if name != "seg-eval":
        others = [run(name, image, mask, seed) for seed in range(8, 12)]
        assert any(not torch.equal(first[0], x) for x, _ in others)


def test_photometric_distortion_changes_the_image_only():
    mask = random_mask(1, 48, 40)
    image = torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8)
    changed = 0
    for seed in range(6):
        (x, y), (plain_x, plain_y) = (run("seg-train", image, mask, seed),
                                      run("seg-train", image, mask, seed, photometric=False))
        assert torch.equal(y, plain_y)
        changed += not torch.allclose(x, plain_x)
    assert changed >= 3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_photometric_distortion_keeps_whole_grey_levels_and_grey_stays_grey(seed):
    generator = torch.Generator().manual_seed(seed)
    colour = torch.randint(0, 256, (3, 6, 6), generator=generator).float()
    grey = torch.randint(0, 256, (1, 6, 6), generator=generator).float().expand(3, -1, -1)
    random.seed(seed)
    out = photometric_distortion(colour)
    assert out.min() >= 0 and out.max() <= 255 and torch.equal(out, out.round())
    out = photometric_distortion(grey)
    assert (out == out[0]).all()


def test_seg_train_crops_avoid_one_dominant_class_when_they_can():
    """A mask 89% class 0 with a stripe of class 1: mmsegmentation's cat_max_ratio 0.75 redraws
    crops until class 0 holds under 75% of the labelled pixels."""
    mask = torch.zeros(16, 64, dtype=torch.uint8)
    mask[:, 20:27] = 1
    image = encode(mask)

    def balanced_crops(cat_max_ratio):
        count = 0
        for seed in range(20):
            _, y = run("seg-train", image, mask, seed, size=16, photometric=False,
                       cat_max_ratio=cat_max_ratio)
            pixels = torch.bincount(y[y != 255], minlength=2).float()
            count += bool(pixels.max() / pixels.sum() <= 0.75)
        return count

    assert balanced_crops(0.75) >= 15
    assert balanced_crops(1.0) <= 10


def test_seg_eval_resizes_the_image_to_fit_and_keeps_the_mask():
    mask = random_mask(3, 40, 60)
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    x, y = run("seg-eval", image, mask, 0, size=16)
    assert resize_scale(16) == (64, 16)
    assert x.shape == (3, 16, 24) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, mask.long())
    small = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert resize_for_eval(small, 16).shape == (3, 16, 16)
    assert resize_for_eval(small, 16).dtype == torch.uint8


def test_seg_eval_of_an_s_by_s_scene_only_normalises():
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    x, _ = run("seg-eval", image, random_mask(4, 16, 16), 0, size=16)
    assert torch.allclose(denormalize(x), image.float(), atol=1e-3)


def test_keep_ratio_size_is_mmcvs_rescale_rule():
    assert keep_ratio_size(512, 683, (2048, 512)) == (512, 683)
    assert keep_ratio_size(256, 256, (2048, 512)) == (512, 512)
    assert keep_ratio_size(300, 3000, (2048, 512)) == (205, 2048)
    assert keep_ratio_size(1000, 500, (512, 2048)) == (1024, 512)


def test_pil_inputs_give_the_same_views_as_tensors():
    mask = random_mask(5, 30, 36)
    image = torch.randint(0, 256, (3, 30, 36), dtype=torch.uint8)
    pil_image = Image.fromarray(image.permute(1, 2, 0).numpy())
    pil_mask = Image.fromarray(mask.numpy(), mode="L")
    for name in PIPELINE:
        from_tensors, from_pil = run(name, image, mask, 3), run(name, pil_image, pil_mask, 3)
        assert all(torch.equal(a, b) for a, b in zip(from_tensors, from_pil))
    from_array = run("seg-train", image, mask.numpy(), 3)
    assert torch.equal(from_array[1], run("seg-train", image, mask, 3)[1])


def test_transforms_survive_pickling_for_dataloader_workers():
    transform = PIPELINE["seg-train"].make_reference(16, MEAN, STD)
    copy = pickle.loads(pickle.dumps(transform))
    mask = random_mask(6, 24, 24)
    image = encode(mask)
    seed_image_randomness(1)
    first = transform(image, mask)
    seed_image_randomness(1)
    assert all(torch.equal(a, b) for a, b in zip(first, copy(image, mask)))


def test_pipelines_are_joint_view_pipelines_without_a_batched_form():
    assert [p.name for p in PIPELINES] == ["seg-train", "seg-flip", "seg-eval"]
    for pipeline in PIPELINES:
        assert isinstance(pipeline, ViewPipeline)
        assert pipeline.joint and not pipeline.batched and pipeline.description
        with pytest.raises(NotImplementedError, match=pipeline.name):
            pipeline.make_batched(16, MEAN, STD)


def test_bad_inputs_and_options_are_refused():
    mask = random_mask(0, 20, 20)
    transform = PIPELINE["seg-flip"].make_reference(16, MEAN, STD)
    with pytest.raises(ValueError, match="differ in size"):
        transform(torch.zeros(3, 20, 24, dtype=torch.uint8), mask)
    with pytest.raises(ValueError, match="mode 'L' or 'P'"):
        transform(torch.zeros(3, 20, 20, dtype=torch.uint8), Image.new("RGB", (20, 20)))
    with pytest.raises(ValueError, match="image_interpolation"):
        PIPELINE["seg-train"].make_reference(16, MEAN, STD, image_interpolation="bicubic")
    with pytest.raises(TypeError):
        PIPELINE["seg-flip"].make_reference(16, MEAN, STD, photometric=False)
