"""Segmentation datasets: the embedded digit scenes, ADE20K and image-and-mask folders.

Every mask holds one class id per pixel and :data:`IGNORE` (255) where no class is given. The
embedded ``digits-seg`` scenes are held in memory (images uint8 ``[N, 3, S, S]``, masks uint8
``[N, S, S]``); the file datasets keep image and mask paths, and their per-class pixel counts and
per-image labels come from :func:`pixel_statistics`, which reads (and checks) every mask once
and caches the result.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import attrs
import numpy as np
import torch
from PIL import Image

from ltcore import (IMAGENET_STATS, DataError, Dataset, Split, cache_dir, read_digits,
                    split_per_class)

from . import IGNORE


@attrs.define
class SegmentationDataset(Dataset):
    """A dataset with a label per pixel; ``reduce_zero_label``: its mask files hold 0 for
    "other" (read as :data:`IGNORE`) and class k as k + 1 (ADE20K's, mmsegmentation's
    ``reduce_zero_label``)."""

    reduce_zero_label: bool = False

    def read_mask(self, path: str):
        """The mask file ``path`` as class ids, uint8 ``[H, W]`` (:data:`IGNORE` ignored)."""
        with Image.open(path) as mask:
            ids = np.asarray(mask)
        return label_table(self.reduce_zero_label)[ids] if self.reduce_zero_label else ids
"""The ignore label of every mask: its pixels belong to no class and are not counted."""

NATURAL = "natural"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
FILE_VIEWS = {"eval_view": "seg-eval", "classifier_view": "seg-train",
              "contrastive_view": "seg-train"}
"""The views of the file datasets: random scale, crop and flip of image and mask together for
training, the whole image for evaluation."""

# -- the embedded digit scenes ---------------------------------------------------------------

DIGIT_SIZE = 20
"""Side of a pasted digit: the 8x8 digits are upsampled to it."""
STROKE_THRESHOLD = 102
"""A pasted digit labels the pixels where its intensity is above this (40% of 255)."""
NOISE = 6
"""Image noise: each channel's pixels move by a seeded integer in -NOISE..NOISE."""
SCENES = {"train": 400, "val": 60, "test": 60}


def digits_seg(imbalance_factor: float | str, image_size: int = 48, seed: int = 0) -> Dataset:
    """Long-tailed segmentation scenes made from scikit-learn's 1,797 real handwritten digits.

    The digits are split per class as ``digits-lt`` splits them (30 test, 20 validation, the
    rest the training pool), so each split's scenes use only its own digits. A scene is an
    ``image_size`` square canvas with 2 to 4 digits upsampled to 20x20, each in its own cell of
    a 2 x 2 grid at a random offset; its mask is the digit's class (digit d is class d + 1) where
    the digit's intensity is above 40% and background (0) elsewhere. Training digits are drawn
    with probability proportional to ``(1/IF) ** (d / 9)``; evaluation scenes hold each digit
    equally often. A scene's label is its most frequent class: background, which covers most
    pixels.
    """
    if image_size < DIGIT_SIZE:
        raise DataError(f"digits-seg needs image_size of at least {DIGIT_SIZE} (the pasted "
                        f"digits' size), not {image_size}")
    pixels, targets = read_digits()
    strokes = torch.from_numpy(pixels).float().mul_(255.0 / 16.0).unsqueeze(1)
    strokes = torch.nn.functional.interpolate(strokes, size=(DIGIT_SIZE, DIGIT_SIZE),
                                              mode="bilinear", align_corners=False)
    strokes = strokes.round_().clamp_(0, 255).squeeze(1).to(torch.uint8).numpy()
    test_idx, val_idx, pool_idx = split_per_class(torch.from_numpy(targets).long(), [30, 20, 1.0])
    rng = np.random.RandomState(seed)
    draw = {"train": digit_probabilities(imbalance_factor), "val": None, "test": None}
    splits = {}
    for part, idx in (("train", pool_idx), ("val", val_idx), ("test", test_idx)):
        images, masks = paste_scenes(rng, strokes, targets, idx.numpy(), SCENES[part],
                                     image_size, draw[part])
        splits[part] = Split(most_frequent_classes(masks, 11), torch.from_numpy(images),
                             masks=torch.from_numpy(masks))
    classes = ["background"] + [str(d) for d in range(10)]
    counts = torch.from_numpy(np.bincount(splits["train"].masks.numpy().ravel(),
                                          minlength=256)[:len(classes)].astype(np.int64))
    x = splits["train"].images.float().div_(255)
    mean, std = tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())
    share = counts.double() / counts.sum()
    rarest, commonest = int(share.argmin()), int(share.argmax())
    profile = ("uniform digits" if imbalance_factor in (NATURAL, 1) else
               f"digit d drawn with probability proportional to (1/{imbalance_factor:g})^(d/9)")
    note = (f"digits-seg: {SCENES['train']}/{SCENES['val']}/{SCENES['test']} train/val/test "
            f"scenes of {image_size}x{image_size} with 2-4 real handwritten digits "
            f"({DIGIT_SIZE}x{DIGIT_SIZE}) each; "
            f"training: {profile}, evaluation: each digit equally often; training pixels: "
            f"commonest class {classes[commonest]!r} {share[commonest]:.1%}, rarest "
            f"{classes[rarest]!r} {share[rarest]:.2%}")
    return SegmentationDataset(
        "digits-seg", classes, splits["train"], splits["val"], splits["test"], mean, std,
        image_size, source="sklearn.datasets.load_digits", eval_view="seg-eval",
        classifier_view="seg-flip", contrastive_view="seg-flip", task="segmentation",
        train_counts=counts, notes=[note])


def digit_probabilities(imbalance_factor: float | str) -> np.ndarray:
    """Probability of each digit 0..9 in training scenes: ``(1/IF) ** (d / 9)``, normalised."""
    if imbalance_factor == NATURAL:
        return np.full(10, 0.1)
    if not isinstance(imbalance_factor, (int, float)) or imbalance_factor < 1:
        raise DataError(f"digits-seg needs an imbalance factor of at least 1 or 'natural', "
                        f"not {imbalance_factor!r}")
    weights = (1.0 / imbalance_factor) ** (np.arange(10) / 9)
    return weights / weights.sum()


def paste_scenes(rng: np.random.RandomState, strokes: np.ndarray, targets: np.ndarray,
                 pool: np.ndarray, count: int, size: int,
                 probabilities: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes of 2 to 4 digits of ``pool``, drawn with ``probabilities`` or, for None,
    each digit equally often, each in its own cell of a 2 x 2 grid at a random offset inside
    it: images uint8 ``[count, 3, size, size]`` and masks uint8 ``[count, size, size]``."""
    by_digit = [pool[targets[pool] == d] for d in range(10)]
    per_scene = rng.randint(2, 5, size=count)
    if probabilities is None:
        digits = rng.permutation(np.resize(np.arange(10), per_scene.sum()))
    else:
        digits = rng.choice(10, size=per_scene.sum(), p=probabilities)
    cells = np.concatenate([rng.permutation(4)[:n] for n in per_scene])
    cell = size // 2
    canvas = np.zeros((count, size, size), dtype=np.uint8)
    masks = np.zeros((count, size, size), dtype=np.uint8)
    for scene, digit, place in zip(np.repeat(np.arange(count), per_scene), digits, cells):
        stroke = strokes[rng.choice(by_digit[digit])]
        free = max(cell - DIGIT_SIZE, 0)
        y, x = (place // 2) * cell + rng.randint(0, free + 1), (place % 2) * cell + rng.randint(
            0, free + 1)
        y, x = min(y, size - DIGIT_SIZE), min(x, size - DIGIT_SIZE)
        box = (scene, slice(y, y + DIGIT_SIZE), slice(x, x + DIGIT_SIZE))
        np.maximum(canvas[box], stroke, out=canvas[box])
        masks[box][stroke > STROKE_THRESHOLD] = digit + 1
    noise = rng.randint(-NOISE, NOISE + 1, size=(count, 3, size, size))
    images = np.clip(canvas[:, None].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return images, masks


def most_frequent_classes(masks: np.ndarray, num_classes: int) -> torch.Tensor:
    """Each mask's most frequent class, ignore excluded (0 for a mask without one)."""
    flat = masks.reshape(len(masks), -1).astype(np.int64)
    offsets = flat + 256 * np.arange(len(masks))[:, None]
    hist = np.bincount(offsets.ravel(), minlength=256 * len(masks)).reshape(len(masks), 256)
    return torch.from_numpy(hist[:, :num_classes].argmax(axis=1)).long()


# -- ADE20K ----------------------------------------------------------------------------------

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]
"""ADE20K's 150 SceneParsing classes, in annotation order (annotation id k is class k - 1)."""

ADE20K_LAYOUT = ("DIR/ADEChallengeData2016/images/{training,validation}/*.jpg and "
                 "DIR/ADEChallengeData2016/annotations/{training,validation}/*.png")


def ade20k(data_dir: str, protocol: str = "heldout", val_images: int = 500) -> Dataset:
    """ADE20K (SceneParsing, ``ADEChallengeData2016``): 20,210 training images, 150 classes.

    Annotation 0 ("other") is ignored and id k is class k - 1 (mmsegmentation's
    ``reduce_zero_label``). Training uses every training image: the long tail is ADE20K's own.
    ADE20K's validation images are its test set. ``protocol="paper"``: test = all of them and
    val = the first ``val_images`` (by name; at most a quarter of them), which are test images
    too; ``"heldout"``: val = those, test = the others.
    """
    check_protocol(protocol)
    root = Path(data_dir)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    train_paths, train_masks = ade20k_pairs(root, "training")
    eval_paths, eval_masks = ade20k_pairs(root, "validation")
    classes = list(ADE20K_CLASSES)
    counts, train_labels = pixel_statistics(train_paths, train_masks, len(classes), True)
    _, eval_labels = pixel_statistics(eval_paths, eval_masks, len(classes), True)
    evaluation = Split(eval_labels, paths=eval_paths, mask_paths=eval_masks)
    val_idx, test_idx, note = evaluation_indices(
        len(evaluation), protocol, min(val_images, max(1, len(evaluation) // 4)),
        "ADE20K's validation images")
    notes = [f"ade20k: training on all {len(train_paths):,} training images (ADE20K's natural "
             "long tail); annotation 0 ('other') is ignored", note]
    return SegmentationDataset(
        "ade20k", classes, Split(train_labels, paths=train_paths, mask_paths=train_masks),
        select(evaluation, val_idx) if val_idx else None, select(evaluation, test_idx),
        *IMAGENET_STATS, 512, source="ADEChallengeData2016 (MIT SceneParsing)",
        task="segmentation", train_counts=counts, notes=notes, reduce_zero_label=True,
        **FILE_VIEWS)


def ade20k_pairs(root: Path, split: str) -> tuple[list[str], list[str]]:
    """The images of one ADE20K split and their annotation files, sorted by name."""
    folder = root / "images" / split
    if not folder.is_dir():
        raise DataError(f"no ADE20K folder {str(folder)!r}; ADE20K is read from {ADE20K_LAYOUT} "
                        "(ADEChallengeData2016.zip of the SceneParsing benchmark)")
    images = sorted(folder.glob("*.jpg"))
    if not images:
        raise DataError(f"{str(folder)!r} holds no .jpg images; ADE20K is read from "
                        f"{ADE20K_LAYOUT}")
    masks = [root / "annotations" / split / f"{image.stem}.png" for image in images]
    for image, mask in zip(images, masks):
        if not mask.is_file():
            raise DataError(f"ADE20K image {str(image)!r} has no annotation {str(mask)!r}; "
                            "restore the file or remove the image")
    return [str(p) for p in images], [str(p) for p in masks]


def check_protocol(protocol: str) -> None:
    if protocol not in ("heldout", "paper"):
        raise DataError(f"unknown evaluation protocol {protocol!r}; use 'heldout' (validation "
                        "images held out of the test set) or 'paper' (test on all of them)")


def evaluation_indices(n: int, protocol: str, val_images: int,
                       what: str) -> tuple[list[int], list[int], str]:
    """Validation and test indices into a benchmark's ``n`` evaluation images (``what``, sorted
    by name): val = the first ``val_images``; test = all of them (``paper``) or the rest
    (``heldout``). Also the note that says so."""
    most = n if protocol == "paper" else n - 1
    if not 0 <= val_images <= most:
        raise DataError(f"{what}: {n} image(s), too few for a validation split of "
                        f"{val_images}{'' if protocol == 'paper' else ' and a test split'}; "
                        f"use a validation split of 0 to {max(most, 0)} images")
    if protocol == "paper":
        return (list(range(val_images)), list(range(n)),
                f"test: all {n:,} {what} (as published results); validation: the first "
                f"{val_images:,} of them by name, so they are among the test images")
    return (list(range(val_images)), list(range(val_images, n)),
            f"validation: the first {val_images:,} of {what} by name; test: the other "
            f"{n - val_images:,}")


def select(split: Split, idx: Sequence[int]) -> Split:
    """The images ``idx`` of a split of files."""
    return Split(split.labels[torch.as_tensor(idx, dtype=torch.long)],
                 paths=[split.paths[i] for i in idx],
                 mask_paths=[split.mask_paths[i] for i in idx])


# -- image-and-mask folders ------------------------------------------------------------------

FOLDER_LAYOUT = "DIR/train/images/<name>.jpg|.png|... and DIR/train/masks/<name>.png"
SPLIT_OFF_FRACTION = 0.1
Pairs = tuple[list[str], list[str]]
"""Image paths and their mask paths."""


def seg_folder(data_dir: str, protocol: str = "heldout") -> Dataset:
    """Images and masks in folders: ``DIR/{train,val,test}/images/<name>.<ext>`` with
    ``DIR/{train,val,test}/masks/<name>.png`` (val and test optional).

    Masks hold class ids 0..C-1 and 255 (ignore); classes are named by ``DIR/classes.txt``
    (one per line) or numbered up to the largest id found. Without ``val/`` and ``test/``, 10%
    of the training images (seeded) become the validation split and 10% the test split; with
    only ``test/``, the validation split is 10% of the training images; with only ``val/``,
    that folder is the test set and the first 10% of it by name the validation split, as
    :func:`ade20k` reads ADE20K with ``protocol``.
    """
    check_protocol(protocol)
    root = Path(data_dir)
    if not (root / "train" / "images").is_dir():
        raise DataError(f"no folder {str(root / 'train' / 'images')!r}; segmentation folders are "
                        f"read from {FOLDER_LAYOUT} (val/ and test/ likewise, optional)")
    pairs = {part: folder_pairs(root / part) for part in ("train", "val", "test")
             if part == "train" or (root / part / "images").is_dir()}
    notes = []
    if "val" not in pairs or "test" not in pairs:
        pairs, note = split_off(pairs, protocol)
        notes.append(note)
    names = read_class_names(root / "classes.txt")
    num_classes = len(names) if names else IGNORE
    stats = {part: pixel_statistics(*pairs[part], num_classes, False) for part in pairs}
    if not names:
        found = sum(counts for counts, _ in stats.values()).nonzero()
        if not len(found):
            raise DataError(f"the masks of {str(root)!r} have no labelled pixels (all 255); "
                            "masks hold class ids 0..C-1 and 255 for ignored pixels")
        names = [str(i) for i in range(int(found.max()) + 1)]
    splits = {part: Split(labels, paths=pairs[part][0], mask_paths=pairs[part][1])
              for part, (_, labels) in stats.items()}
    counts = stats["train"][0][:len(names)].clone()
    return SegmentationDataset("seg-folder", names, splits["train"], splits["val"], splits["test"],
                   *IMAGENET_STATS, 512, source=str(root), task="segmentation",
                   train_counts=counts, notes=notes, **FILE_VIEWS)


def folder_pairs(folder: Path) -> Pairs:
    """The images of ``folder/images`` and their masks ``folder/masks/<stem>.png``, by name."""
    images = sorted(p for p in (folder / "images").iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{str(folder / 'images')!r} holds no images ({', '.join(IMAGE_SUFFIXES)}"
                        f"); segmentation folders are read from {FOLDER_LAYOUT}")
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise DataError(f"images {str(stems[image.stem])!r} and {str(image)!r} share the "
                            "name their mask is found by; rename one")
        stems[image.stem] = image
    masks = [folder / "masks" / f"{image.stem}.png" for image in images]
    for image, mask in zip(images, masks):
        if not mask.is_file():
            raise DataError(f"image {str(image)!r} has no mask {str(mask)!r}; add the mask or "
                            "remove the image")
    return [str(p) for p in images], [str(p) for p in masks]


def read_class_names(path: Path) -> list[str]:
    """The class names of ``classes.txt``, one per line ([] without the file)."""
    if not path.is_file():
        return []
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise DataError(f"{str(path)!r} must name one class per line, without blank lines")
    return names


def split_off(pairs: dict[str, Pairs], protocol: str) -> tuple[dict[str, Pairs], str]:
    """A folder dataset's missing evaluation splits (see :func:`seg_folder`) and the note that
    says how they were made."""
    def take(part: Pairs, idx: Sequence[int]) -> Pairs:
        return [part[0][i] for i in idx], [part[1][i] for i in idx]

    if "val" in pairs:
        n = len(pairs["val"][0])
        val_idx, test_idx, note = evaluation_indices(
            n, protocol, max(1, round(SPLIT_OFF_FRACTION * n)), "the images of val/")
        return {**pairs, "val": take(pairs["val"], val_idx),
                "test": take(pairs["val"], test_idx)}, note
    missing = [part for part in ("val", "test") if part not in pairs]
    n = len(pairs["train"][0])
    n_each = max(1, round(SPLIT_OFF_FRACTION * n))
    if n <= n_each * len(missing):
        raise DataError(f"{n} training image(s) are too few to split off "
                        f"{' and '.join(missing)}; add images or give the folder "
                        f"{' and '.join(p + '/' for p in missing)}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    parts = {**pairs}
    for i, part in enumerate(missing):
        parts[part] = take(pairs["train"], sorted(order[i * n_each:(i + 1) * n_each]))
    parts["train"] = take(pairs["train"], sorted(order[len(missing) * n_each:]))
    note = (f"{' and '.join(missing)}: {n_each} training image(s) each (10%, seeded), split "
            f"off the {n} of train/ (no {' or '.join(p + '/' for p in missing)} folder)")
    return parts, note


# -- pixel statistics ------------------------------------------------------------------------


def pixel_statistics(image_paths: Sequence[str], mask_paths: Sequence[str], num_classes: int,
                     reduce_zero_label: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class pixel counts (int64 ``[C]``, ignore excluded) and each image's most frequent
    class (int64 ``[N]``, 0 without labelled pixels) of the masks ``mask_paths``.

    Each mask is read once and checked against its image (same size, ids in 0..C-1 or 255,
    after mapping 0 to 255 and k to k - 1 with ``reduce_zero_label``); the result is cached
    under ``cache_dir()/seg-stats``, keyed by the files' paths, sizes and times.
    """
    digest = hashlib.sha256(f"seg-stats-v1:{num_classes}:{bool(reduce_zero_label)}\n".encode())
    for image, mask in zip(image_paths, mask_paths, strict=True):
        for role, path in (("image", image), ("mask", mask)):
            try:
                st = os.stat(path)
            except OSError as exc:
                raise DataError(f"{role} file {str(path)!r} is missing or unreadable "
                                f"({exc.strerror}); restore it") from exc
            digest.update(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    target = cache_dir() / "seg-stats" / f"{digest.hexdigest()}.pt"
    cached = read_cached_statistics(target, num_classes, len(mask_paths))
    if cached is not None:
        return cached
    table = label_table(reduce_zero_label)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        histograms = list(pool.map(lambda pair: mask_histogram(*pair, table, num_classes,
                                                               reduce_zero_label),
                                   zip(image_paths, mask_paths)))
    hist = (np.stack(histograms) if histograms else np.zeros((0, num_classes), np.int64))
    counts = torch.from_numpy(hist.sum(axis=0))
    labels = torch.from_numpy(hist.argmax(axis=1) if len(hist) else np.zeros(0, np.int64))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    torch.save({"counts": counts, "labels": labels.long()}, tmp)
    os.replace(tmp, target)
    return counts, labels.long()


def read_cached_statistics(target: Path, num_classes: int,
                           n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached counts and labels, or None where the file is absent or broken."""
    if not target.exists():
        return None
    try:
        saved = torch.load(target, weights_only=True)
        counts, labels = saved["counts"], saved["labels"]
        if counts.shape == (num_classes,) and labels.shape == (n,):
            return counts, labels
    except Exception:
        pass
    target.unlink(missing_ok=True)
    return None


def label_table(reduce_zero_label: bool) -> np.ndarray:
    """Lookup table from a mask file's ids to class ids: 0 -> 255 and k -> k - 1 with
    ``reduce_zero_label`` (255 stays 255), else the identity."""
    table = np.arange(256, dtype=np.uint8)
    if reduce_zero_label:
        table = (table.astype(np.int16) - 1).astype(np.uint8)
        table[0] = table[255] = IGNORE
    return table


def mask_histogram(image_path: str, mask_path: str, table: np.ndarray, num_classes: int,
                   reduce_zero_label: bool) -> np.ndarray:
    """One mask's pixel count per class (int64 ``[C]``), after checking it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(mask_path) as mask:
            if mask.mode not in ("L", "P"):
                raise DataError(f"mask {mask_path!r} has mode {mask.mode}; masks are 8-bit "
                                "single-channel PNGs of class ids (mode L or P)")
            ids = np.asarray(mask, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode mask {mask_path!r}: {exc}; replace the file") from exc
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {image_path!r}: {exc}; replace the file") from exc
    if ids.shape != (height, width):
        raise DataError(f"mask {mask_path!r} is {ids.shape[1]}x{ids.shape[0]} but its image "
                        f"{image_path!r} is {width}x{height}; masks must match their images")
    hist = np.bincount(table[ids].ravel(), minlength=256)
    bad = np.nonzero(hist[num_classes:IGNORE])[0] + num_classes
    if len(bad):
        shown = ", ".join(str(i + 1 if reduce_zero_label else i) for i in bad[:10])
        valid = (f"0 (ignored) to {num_classes}" if reduce_zero_label
                 else f"0 to {num_classes - 1}")
        raise DataError(f"mask {mask_path!r} holds id(s) {shown} outside the valid range "
                        f"{valid} and 255 (ignore); fix the mask or the class list")
    return hist[:num_classes].astype(np.int64)
