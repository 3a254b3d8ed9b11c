"""Segmentation datasets: the digit scenes, ADE20K, mask folders and the cached pixel counts."""

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ltcore import DataError, cache_dir
from ltcore_seg.data import (ADE20K_CLASSES, IGNORE, NOISE, STROKE_THRESHOLD, ade20k,
                             digit_probabilities, digits_seg, label_table,
                             most_frequent_classes, pixel_statistics, seg_folder)

# -- the digit scenes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes():
    return digits_seg(100)


def test_digit_scenes_have_the_documented_shapes_and_fields(scenes):
    assert scenes.classes == ["background"] + [str(d) for d in range(10)]
    assert (scenes.task, scenes.image_size, scenes.name) == ("segmentation", 48, "digits-seg")
    assert (scenes.eval_view, scenes.classifier_view, scenes.contrastive_view) == (
        "seg-eval", "seg-flip", "seg-flip")
    for split, n in ((scenes.train, 400), (scenes.val, 60), (scenes.test, 60)):
        assert split.images.shape == (n, 3, 48, 48) and split.images.dtype == torch.uint8
        assert split.masks.shape == (n, 48, 48) and split.masks.dtype == torch.uint8
        assert split.labels.shape == (n,) and split.labels.dtype == torch.long
        assert int(split.masks.max()) <= 10
    counts = scenes.train_counts
    assert counts.dtype == torch.int64
    assert torch.equal(counts, torch.bincount(scenes.train.masks.flatten().long(), minlength=11))
    x = scenes.train.images.float() / 255
    assert torch.allclose(torch.tensor(scenes.mean), x.mean(dim=(0, 2, 3)))
    assert "400/60/60" in scenes.notes[0] and "'9'" in scenes.notes[0]


def test_digit_scenes_are_identical_across_calls_and_change_with_the_seed(scenes):
    again = digits_seg(100)
    for a, b in ((scenes.train, again.train), (scenes.test, again.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
        assert torch.equal(a.labels, b.labels)
    other = digits_seg(100, image_size=32, seed=1)
    assert other.train.images.shape == (400, 3, 32, 32)
    assert not torch.equal(other.test.masks, digits_seg(100, image_size=32).test.masks)


def test_training_pixels_are_long_tailed_and_evaluation_pixels_balanced(scenes):
    digits = scenes.train_counts[1:].double()
    assert torch.all(digits[:-1] > digits[1:]), digits
    assert digits[0] / digits[-1] > 20
    for split in (scenes.val, scenes.test):
        evaluated = torch.bincount(split.masks.flatten().long(), minlength=11)[1:].double()
        assert evaluated.min() > 0.7 * evaluated.mean()
    uniform = digits_seg("natural").train_counts[1:].double()
    assert uniform.min() > 0.6 * uniform.max()


def test_digit_probabilities_follow_the_profile():
    p = digit_probabilities(100)
    assert p.sum() == pytest.approx(1) and p[0] / p[9] == pytest.approx(100)
    assert np.allclose(digit_probabilities("natural"), 0.1)
    assert np.allclose(digit_probabilities(1), 0.1)
    with pytest.raises(DataError, match="at least 1"):
        digit_probabilities(0.5)


def test_masks_label_exactly_the_strokes(scenes):
    gray = scenes.train.images.float().mean(dim=1)
    labelled = scenes.train.masks > 0
    clear = (gray - STROKE_THRESHOLD).abs() > NOISE
    assert torch.equal((gray > STROKE_THRESHOLD)[clear], labelled[clear])
    assert clear.float().mean() > 0.97
    assert float(gray[~labelled].max()) <= STROKE_THRESHOLD + NOISE


def test_scene_labels_are_each_scenes_most_frequent_class(scenes):
    for split in (scenes.train, scenes.val):
        expected = [int(torch.bincount(m.flatten().long(), minlength=11)[:11].argmax())
                    for m in split.masks]
        assert split.labels.tolist() == expected


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0, 1, 2, 3, IGNORE]), min_size=6, max_size=6),
                min_size=1, max_size=5))
def test_most_frequent_class_excludes_ignore(rows):
    masks = np.array(rows, dtype=np.uint8).reshape(len(rows), 2, 3)
    labels = most_frequent_classes(masks, 4)
    for mask, label in zip(masks, labels.tolist()):
        counts = np.bincount(mask[mask != IGNORE], minlength=4)
        assert label == (int(counts.argmax()) if counts.sum() else 0)


# -- ADE20K ----------------------------------------------------------------------------------


def write_pair(image_path, mask_path, ids, size=(40, 32)):
    """A random RGB image of ``size`` (width, height) and its mask of ``ids`` ([H, W])."""
    rng = np.random.default_rng(len(str(image_path)))
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image_path)
    Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="L").save(mask_path)


def ade_tree(root, train=6, validation=4, seed=0):
    """An ADE20K layout with random annotations 0..150; the raw annotations by split."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    raw = {}
    for split, n in (("training", train), ("validation", validation)):
        raw[split] = []
        for i in range(n):
            ids = rng.integers(0, 151, (32, 40))
            name = f"ADE_{split[:5]}_{i:08d}"
            write_pair(base / "images" / split / f"{name}.jpg",
                       base / "annotations" / split / f"{name}.png", ids)
            raw[split].append(ids)
    return raw


def test_ade20k_reads_the_layout_with_the_zero_label_ignored(tmp_path):
    raw = ade_tree(tmp_path)
    data = ade20k(str(tmp_path), val_images=1)
    assert len(ADE20K_CLASSES) == 150 and data.classes == ADE20K_CLASSES
    assert ADE20K_CLASSES[:3] == ["wall", "building", "sky"] and ADE20K_CLASSES[-1] == "flag"
    assert (data.task, data.image_size, data.eval_view, data.classifier_view) == (
        "segmentation", 512, "seg-eval", "seg-train")
    hist = np.stack([np.bincount(ids.ravel(), minlength=151) for ids in raw["training"]])
    assert data.train_counts.tolist() == hist.sum(axis=0)[1:].tolist()
    assert data.train.labels.tolist() == (hist[:, 1:].argmax(axis=1)).tolist()
    assert len(data.train) == 6 and data.train.mask_paths[0].endswith("00000000.png")
    assert len(data.val) == 1 and len(data.test) == 3
    assert not set(data.val.paths) & set(data.test.paths)
    paper = ade20k(str(tmp_path / "ADEChallengeData2016"), protocol="paper", val_images=1)
    assert len(paper.val) == 1 and len(paper.test) == 4 and paper.val.paths[0] in paper.test.paths
    assert "among the test images" in paper.notes[1]


def test_zero_label_reduction_maps_other_to_ignore():
    table = label_table(True)
    assert table[0] == IGNORE and table[255] == IGNORE
    assert table[1:151].tolist() == list(range(150))
    assert label_table(False).tolist() == list(range(256))


def test_ade20k_refuses_missing_files_naming_them(tmp_path):
    with pytest.raises(DataError, match="ADEChallengeData2016/images"):
        ade20k(str(tmp_path))
    ade_tree(tmp_path, train=2, validation=2)
    missing = tmp_path / "ADEChallengeData2016/annotations/validation/ADE_valid_00000001.png"
    missing.unlink()
    with pytest.raises(DataError, match="ADE_valid_00000001.png"):
        ade20k(str(tmp_path), val_images=1)
    with pytest.raises(DataError, match="protocol"):
        ade20k(str(tmp_path), protocol="other")


# -- cached statistics -----------------------------------------------------------------------


def folder_of_pairs(root, masks):
    paths, mask_paths = [], []
    for i, ids in enumerate(masks):
        image, mask = root / "images" / f"{i}.png", root / "masks" / f"{i}.png"
        write_pair(image, mask, ids, size=(ids.shape[1], ids.shape[0]))
        paths.append(str(image))
        mask_paths.append(str(mask))
    return paths, mask_paths


def test_statistics_are_cached_and_reused(tmp_path, monkeypatch):
    masks = [np.array([[0, 1, 1], [2, 255, 1]]), np.array([[2, 2, 2], [0, 255, 255]])]
    paths, mask_paths = folder_of_pairs(tmp_path, masks)
    counts, labels = pixel_statistics(paths, mask_paths, 3, False)
    assert counts.tolist() == [2, 3, 4] and labels.tolist() == [1, 2]
    (cached,) = (cache_dir() / "seg-stats").glob("*.pt")

    def no_reading(*args, **kwargs):
        raise AssertionError("a mask was read again")

    with monkeypatch.context() as patched:
        patched.setattr(Image, "open", no_reading)
        again = pixel_statistics(paths, mask_paths, 3, False)
    assert again[0].tolist() == [2, 3, 4] and again[1].tolist() == [1, 2]

    cached.write_bytes(b"not a tensor file")
    assert pixel_statistics(paths, mask_paths, 3, False)[0].tolist() == [2, 3, 4]
    assert torch.load(cached, weights_only=True)["counts"].tolist() == [2, 3, 4]

    Image.fromarray(np.zeros((2, 3), np.uint8), mode="L").save(mask_paths[1])
    os.utime(mask_paths[1], ns=(1, 1))
    assert pixel_statistics(paths, mask_paths, 3, False)[0].tolist() == [7, 3, 1]


def test_statistics_refuse_bad_masks_naming_the_file(tmp_path):
    paths, mask_paths = folder_of_pairs(tmp_path, [np.array([[0, 1], [1, 1]])])
    Image.fromarray(np.zeros((3, 2), np.uint8), mode="L").save(mask_paths[0])
    with pytest.raises(DataError, match=r"mask .*0\.png' is 2x3 but its image .*0\.png' is 2x2"):
        pixel_statistics(paths, mask_paths, 2, False)
    Image.fromarray(np.array([[0, 7], [9, 255]], np.uint8), mode="L").save(mask_paths[0])
    with pytest.raises(DataError, match=r"0\.png' holds id\(s\) 7, 9 outside .* 0 to 1"):
        pixel_statistics(paths, mask_paths, 2, False)
    with pytest.raises(DataError, match=r"holds id\(s\) 9 outside .* 0 \(ignored\) to 8"):
        pixel_statistics(paths, mask_paths, 8, True)
    with open(mask_paths[0], "wb") as broken:
        broken.write(b"no png")
    with pytest.raises(DataError, match="cannot decode mask .*0.png"):
        pixel_statistics(paths, mask_paths, 2, False)
    os.remove(mask_paths[0])
    with pytest.raises(DataError, match="mask file .*0.png' is missing"):
        pixel_statistics(paths, mask_paths, 2, False)


# -- mask folders ----------------------------------------------------------------------------


def mask_folder(root, parts, seed=0, top=3):
    """Image-and-mask folders: ``parts`` maps split -> image count; ids 0..top and 255."""
    rng = np.random.default_rng(seed)
    raw = {}
    for part, n in parts.items():
        raw[part] = [rng.choice([*range(top + 1), 255], size=(6, 5)) for _ in range(n)]
        for i, ids in enumerate(raw[part]):
            write_pair(root / part / "images" / f"img{i:02d}.jpg",
                       root / part / "masks" / f"img{i:02d}.png", ids, size=(5, 6))
    return raw


def test_folders_with_every_split_and_class_names(tmp_path):
    raw = mask_folder(tmp_path, {"train": 4, "val": 2, "test": 3})
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\nperson\ntree\n")
    data = seg_folder(str(tmp_path))
    assert data.classes == ["sky", "road", "car", "person", "tree"]
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
    expected = np.bincount(np.concatenate([m.ravel() for m in raw["train"]]), minlength=256)
    assert data.train_counts.tolist() == expected[:5].tolist()
    assert data.test.mask_paths[2].endswith("test/masks/img02.png")
    assert (data.task, data.eval_view, data.contrastive_view) == (
        "segmentation", "seg-eval", "seg-train")
    assert data.notes == []


def test_folders_without_evaluation_splits_split_off_the_training_images(tmp_path):
    raw = mask_folder(tmp_path, {"train": 10}, top=2)
    data = seg_folder(str(tmp_path))
    assert data.classes == ["0", "1", "2"]
    assert (len(data.train), len(data.val), len(data.test)) == (8, 1, 1)
    assert len({*data.train.paths, *data.val.paths, *data.test.paths}) == 10
    assert "10%, seeded" in data.notes[0]
    assert seg_folder(str(tmp_path)).test.paths == data.test.paths
    kept = [raw["train"][int(p[-6:-4])] for p in data.train.mask_paths]
    expected = np.bincount(np.concatenate([m.ravel() for m in kept]), minlength=256)
    assert data.train_counts.tolist() == expected[:3].tolist()


def test_a_folder_with_only_val_uses_it_as_the_test_set(tmp_path):
    mask_folder(tmp_path, {"train": 2, "val": 10})
    heldout = seg_folder(str(tmp_path))
    assert (len(heldout.val), len(heldout.test)) == (1, 9)
    paper = seg_folder(str(tmp_path), protocol="paper")
    assert len(paper.test) == 10 and paper.val.paths[0] in paper.test.paths


def test_folders_refuse_bad_masks_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="train/images"):
        seg_folder(str(tmp_path))
    mask_folder(tmp_path, {"train": 3, "val": 1, "test": 1}, top=4)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="img.*png' holds id.* outside the valid range 0 to 1"):
        seg_folder(str(tmp_path))
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "val" / "masks" / "img00.png").unlink()
    with pytest.raises(DataError, match="has no mask .*val/masks/img00.png"):
        seg_folder(str(tmp_path))
