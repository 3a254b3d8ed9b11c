"""Datasets: the long-tailed construction, the embedded default and the standard benchmarks.

Small-image datasets (digits, CIFAR, ImageFolder trees of small images) are held in memory as
uint8 tensors ``[N, C, H, W]`` so the batched view pipelines can run on the training device;
large-image datasets (ImageNet-LT, iNaturalist, Places-LT) keep file paths and are decoded by
DataLoader workers.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Sequence

import attrs
import numpy as np
import torch

from .config_text import NATURAL
from .errors import DataError

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INATURALIST_STATS = ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192))
"""iNaturalist 2018's own channel statistics, as the BCL and GML reference code normalise it."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
SMALL_IMAGE_MAX_SIDE = 64
"""ImageFolder trees whose images are at most this large are decoded into memory."""


@attrs.define
class Split:
    """One split: labels and either in-memory uint8 images or image file paths.

    A segmentation split also has a label per pixel: ``masks`` (uint8 ``[N, H, W]``, in memory
    beside ``images``) or ``mask_paths`` (one mask file per image path). Its ``labels`` are
    then one class per image (the class of most of its labelled pixels), for the samplers.
    """

    labels: torch.Tensor
    images: torch.Tensor | None = None
    paths: list[str] | None = None
    masks: torch.Tensor | None = None
    mask_paths: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    def head(self, n: int) -> "Split":
        """The split's first ``n`` images."""
        return Split(*(None if part is None else part[:n] for part in
                       (self.labels, self.images, self.paths, self.masks, self.mask_paths)))


@attrs.define
class Dataset:
    """A long-tailed training split with balanced evaluation splits."""

    name: str
    classes: list[str]
    train: Split
    val: Split | None
    test: Split | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    channels: int = 3
    source: str = ""
    eval_view: str = "eval"
    """The evaluation transform: ``eval`` (normalise only) for images stored at ``image_size``,
    ``imagenet-eval`` (resize the shorter side, centre crop) for images of any size."""
    classifier_view: str = "standard"
    """The classifier branch's view when ``views.classifier`` is ``auto``."""
    contrastive_view: str = "simaugment"
    """The contrastive branches' view when ``views.contrastive`` is ``auto``."""
    task: str = "classification"
    """The registered task (``register_tasks``) its runs train: ``classification`` (a label
    per image) or another, such as ``segmentation`` (a label per pixel)."""
    train_counts: torch.Tensor | None = None
    """Per-class training counts where a class is counted other than once per image (pixels,
    for segmentation); None: :attr:`class_counts` counts the training labels."""
    notes: list[str] = attrs.Factory(list)
    """How the splits were made where the plan should say so: images dropped by an imposed long
    tail, evaluation splits split off the training images."""
    warnings: list[str] = attrs.Factory(list)
    """What the plan warns about the data (a long tail imposed on data that already has one)."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_counts(self) -> torch.Tensor:
        """The training split's count of each class: :attr:`train_counts`, else its images
        per label."""
        if self.train_counts is not None:
            return self.train_counts
        return torch.bincount(self.train.labels, minlength=self.num_classes)

    @property
    def in_memory(self) -> bool:
        return self.train.images is not None

    def eval_splits(self) -> dict[str, Split]:
        return {name: split for name, split in (("val", self.val), ("test", self.test))
                if split is not None}


FILE_IMAGE_VIEWS = {"eval_view": "imagenet-eval", "classifier_view": "imagenet-standard",
                    "contrastive_view": "imagenet-simaugment"}
"""The views of datasets of image files of any size (ImageNet-LT, iNaturalist, Places-LT, large
ImageFolder trees): evaluation resizes and centre-crops, training crops at random scales."""


# -- the long-tailed profile ---------------------------------------------------------------


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Images kept per class: ``int(n_max * (1/IF) ** (i / (C - 1)))`` (Cao et al. 2019)."""
    if num_classes == 1:
        return [n_max]
    return [int(n_max * (1.0 / imbalance_factor) ** (i / (num_classes - 1)))
            for i in range(num_classes)]


def long_tail_indices(labels: Sequence[int], num_classes: int, imbalance_factor: float,
                      n_max: int | None = None, seed: int = 0,
                      class_names: Sequence[str] = ()) -> torch.Tensor:
    """Indices of the long-tailed subset, exactly as the LDAM-DRW reference builds CIFAR-LT.

    numpy is seeded once with ``seed``; classes are visited in label order; each class's indices
    are shuffled and the first ``n_i`` kept. ``n_max`` defaults to the mean class size. Errors
    name classes by ``class_names`` when given.
    """
    labels_np = np.asarray(labels)
    n_max = n_max if n_max is not None else len(labels_np) // num_classes
    counts = long_tail_counts(n_max, num_classes, imbalance_factor)
    empty = [cls for cls, n in enumerate(counts) if n < 1]
    if empty:
        raise DataError(f"with {n_max} images in the largest class, imbalance factor "
                        f"{imbalance_factor:g} leaves class(es) {named(empty, class_names)} "
                        f"without a training image; use an imbalance factor of at most "
                        f"{max(n_max, 1)} or more images")
    rng = np.random.RandomState(seed)
    keep = []
    for cls, n in enumerate(counts):
        idx = np.where(labels_np == cls)[0]
        if len(idx) < n:
            raise DataError(f"class {named([cls], class_names)} has {len(idx)} images, fewer "
                            f"than the {n} the long-tailed profile with imbalance factor "
                            f"{imbalance_factor} needs")
        rng.shuffle(idx)
        keep.append(idx[:n])
    return torch.from_numpy(np.concatenate(keep)).long()


def named(indices: Sequence[int], class_names: Sequence[str]) -> str:
    """Classes as errors name them: ``'cat' (3), 'dog' (4)`` (the first ten), or by index
    without names."""
    shown = [f"{class_names[i]!r} ({i})" if class_names else str(i) for i in indices[:10]]
    return ", ".join(shown) + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")


def imbalance_factor_text(value: float | str) -> str:
    """``10``, ``100``, ``2.5`` or ``natural``: an imbalance factor as tags and lines show it."""
    return value if value == NATURAL else f"{value:g}"


def training_subset(labels: Sequence[int], class_names: Sequence[str],
                    imbalance_factor: float | str, n_max: int | None = None) -> torch.Tensor:
    """Indices of the training images kept: every one with ``natural``, else the long-tailed
    subset of :func:`long_tail_indices`."""
    if imbalance_factor == NATURAL:
        return torch.arange(len(labels))
    return long_tail_indices(labels, len(class_names), imbalance_factor, n_max,
                             class_names=class_names)


def split_per_class(labels: torch.Tensor, fractions_or_counts: Sequence[float | int],
                    seed: int = 0) -> list[torch.Tensor]:
    """Split indices per class into consecutive parts (counts, or fractions of each class)."""
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions_or_counts]
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for p, amount in enumerate(fractions_or_counts):
            n = int(round(amount * len(idx))) if isinstance(amount, float) else amount
            parts[p].append(idx[start:start + n])
            start += n
    return [torch.cat(p).sort().values for p in parts]


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = images.float().div_(255)
    return (tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist()))


# -- the embedded default ------------------------------------------------------------------


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``sklearn.datasets.load_digits()`` returns them (``images``: float64
    ``[1797, 8, 8]`` of 0..16, ``target``: int), read from the file scikit-learn ships with the
    same parser, without importing scikit-learn (whose import costs a second of start-up)."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits-lt dataset is read from the file scikit-learn ships; "
                        "install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, mode="rt", encoding="utf-8") as rows:
        data = np.loadtxt(rows, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def digits_lt(imbalance_factor: float | str, image_size: int = 32) -> Dataset:
    """scikit-learn's handwritten digits (1,797 real 8x8 images shipped with the package).

    Per class (seeded): 30 images for test, 20 for validation, the rest is the training pool
    (124 to 133 per class) made long-tailed with the standard profile and n_max = 124, so IF 10
    gives 124 ... 12 images (``natural``: the whole pool). Images are upsampled to
    ``image_size`` and replicated to 3 channels so every CIFAR pipeline and model applies
    unchanged. Both training branches use the
    ``standard`` view (random crop and flip): AutoAugment's and SimAugment's colour and
    geometric changes erase the strokes of digits upsampled from 8 x 8.
    """
    pixels, targets = read_digits()
    images = torch.from_numpy(pixels).float().mul_(255.0 / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size),
                                             mode="bilinear", align_corners=False)
    images = images.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(targets).long()
    test_idx, val_idx, pool_idx = split_per_class(labels, [30, 20, 1.0])
    pool_labels = labels[pool_idx]
    n_max = int(torch.bincount(pool_labels).min())
    classes = [str(d) for d in range(10)]
    keep = pool_idx[training_subset(pool_labels.tolist(), classes, imbalance_factor, n_max)]
    train = Split(labels[keep], images[keep])
    mean, std = channel_stats(train.images)
    return Dataset("digits-lt", classes, train,
                   Split(labels[val_idx], images[val_idx]), Split(labels[test_idx], images[test_idx]),
                   mean, std, image_size, source="sklearn.datasets.load_digits",
                   classifier_view="standard", contrastive_view="standard")


# -- CIFAR ---------------------------------------------------------------------------------


def default_data_dir(name: str) -> Path:
    root = os.environ.get("LTCORE_DATA", os.path.join(Path.home(), ".cache", "ltcore", "data"))
    return Path(root) / name


def cifar_lt(num_classes: int, data_dir: str, imbalance_factor: float | str,
             val_per_class: int | None = None, protocol: str = "heldout") -> Dataset:
    """CIFAR-10-LT / CIFAR-100-LT built as in the LDAM-DRW reference.

    Reads torchvision's CIFAR from ``data_dir``: the extracted python batches or the
    ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` archive (no network needed), and
    downloads it otherwise. The training split is made long-tailed (``natural``: all of it). The
    official test split is the test set; the validation split is 20% of it per class (seeded).
    ``protocol`` (``eval.protocol``): ``heldout`` leaves the validation images out of the test
    figures; ``paper`` reports on the whole official test split, as the papers do, the
    validation images among them.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    root = Path(data_dir) if data_dir else default_data_dir(f"cifar{num_classes}")
    cls = CIFAR10 if num_classes == 10 else CIFAR100
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as exc:
        raise DataError(f"CIFAR-{num_classes} is not readable under {str(root)!r} and could not "
                        f"be downloaded ({exc}); put the python archive "
                        f"({cls.filename}) or its extracted folder ({cls.base_folder}) there") from exc
    train_images = torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous()
    train_labels = torch.tensor(train.targets).long()
    keep = training_subset(train.targets, train.classes, imbalance_factor)
    test_images = torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous()
    test_labels = torch.tensor(test.targets).long()
    per_class = val_per_class if val_per_class is not None else len(test_labels) // num_classes // 5
    val_idx, test_idx = split_per_class(test_labels, [per_class, 1.0])
    notes = []
    if protocol == "paper":
        test_idx = torch.arange(len(test_labels))
        notes.append(f"eval.protocol paper: test figures on all {len(test_labels):,} official "
                     f"test images at the last epoch; the {len(val_idx):,} validation images "
                     f"({per_class} per class) are among them and serve only what needs a "
                     "validation figure (checkpoint.monitor's best epoch, early stopping, RCL's "
                     "compression decision)")
    mean, std = CIFAR10_STATS if num_classes == 10 else CIFAR100_STATS
    return Dataset(f"cifar{num_classes}-lt", list(train.classes),
                   Split(train_labels[keep], train_images[keep]),
                   Split(test_labels[val_idx], test_images[val_idx]),
                   Split(test_labels[test_idx], test_images[test_idx]),
                   mean, std, 32, source=str(root), notes=notes)


# -- ImageFolder trees ---------------------------------------------------------------------


def _list_folder(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is not a directory; expected an ImageFolder tree "
                        f"{root}/<class>/<image>")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not found:
        raise DataError(f"{str(root)!r} has no class sub-folders; expected {root}/<class>/<image>")
    classes = classes or found
    unknown = set(found) - set(classes)
    if unknown:
        raise DataError(f"{str(root)!r} has classes not in the training split: {sorted(unknown)}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
        paths.extend(str(folder / f) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(f"{str(root)!r} has class folders but no images ({', '.join(IMAGE_SUFFIXES)})")
    return classes, paths, labels


def load_image(path: str):
    """Open one image as RGB, with an error naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {path!r}: {exc}; remove or replace the file") from exc


def decode_images(paths: list[str]) -> torch.Tensor:
    """Decode same-sized images into one uint8 tensor [N, 3, H, W]."""
    first = np.asarray(load_image(paths[0]))
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        arr = np.asarray(load_image(path))
        if arr.shape != first.shape:
            raise DataError(f"image {path!r} is {arr.shape[1]}x{arr.shape[0]}, but "
                            f"{paths[0]!r} is {first.shape[1]}x{first.shape[0]}; small-image "
                            "folders must hold images of one size")
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def cache_dir() -> Path:
    return Path(os.environ.get("LTCORE_CACHE", os.path.join(Path.home(), ".cache", "ltcore")))


def cached_decode(paths: list[str], key: str) -> torch.Tensor:
    """Decode ``paths`` once and reuse a uint8 tensor file keyed by the file list and ``key``."""
    digest = hashlib.sha256()
    digest.update(key.encode())
    for p in paths:
        st = os.stat(p)
        digest.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    target = cache_dir() / "decoded" / f"{digest.hexdigest()[:32]}.pt"
    if target.exists():
        try:
            return torch.load(target, weights_only=True)
        except Exception:
            target.unlink(missing_ok=True)
    images = decode_images(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    torch.save(images, tmp)
    os.replace(tmp, target)
    return images


def stratified_split(labels: torch.Tensor, fractions: dict[str, float], seed: int,
                     classes: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Split each class's images into parts: ``round(fraction * n)`` of them, at least one, for
    each named part, the images of each class drawn in a random order from ``seed`` (classes in
    label order). Returns the parts' indices and the indices left, of which every class keeps at
    least one (a class too small for that is refused)."""
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {part: [] for part in fractions}
    rest = []
    for label, name in enumerate(classes):
        idx = torch.nonzero(labels == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        sizes = {part: max(1, math.floor(fraction * len(idx) + 0.5))
                 for part, fraction in fractions.items()}
        if sum(sizes.values()) >= len(idx):
            wanted = " and ".join(f"{size} {part}" for part, size in sizes.items())
            settings = " or ".join(f"{part}_fraction" for part in sizes)
            raise DataError(f"class {name!r} has {len(idx)} training image(s): too few to split "
                            f"off {wanted} and keep one for training; add images, give the data "
                            f"its own {' and '.join(sizes)} split, or set {settings} to 0 (no "
                            f"such split)")
        start = 0
        for part, size in sizes.items():
            parts[part].append(idx[start:start + size])
            start += size
        rest.append(idx[start:])
    return ({part: torch.cat(found).sort().values for part, found in parts.items()},
            torch.cat(rest).sort().values)


def image_files_dataset(name: str, classes: list[str], paths: list[str], labels: list[int],
                        evals: dict[str, tuple[list[str], torch.Tensor]], source: str,
                        imbalance_factor: float | str, val_fraction: float = 0.0,
                        test_fraction: float = 0.0, split_seed: int = 0) -> Dataset:
    """A dataset of image files: ``paths`` and ``labels`` are its training images, ``evals`` its
    evaluation splits (split -> paths, labels).

    Data without an evaluation split gets ``val`` and ``test`` (those with a fraction above 0)
    split off its training images per class (:func:`stratified_split`); data with one or both
    keeps them as they are. The training images left are then made long-tailed with the
    standard profile (seed 0, n_max = the mean class size) or kept as they are (``natural``).
    The dataset's notes say both, and it warns when the long tail is imposed on images that are
    already at least as imbalanced. Images of at most 64 px are decoded into memory (and
    cached); larger ones stay on disk.
    """
    all_labels = torch.tensor(labels).long()
    counts = torch.bincount(all_labels, minlength=len(classes))
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise DataError(f"{name}: class(es) {named(empty, classes)} have no training image; "
                        f"every class needs at least one")
    notes, warnings, evals = [], [], dict(evals)
    fractions = {split: fraction for split, fraction in (("val", val_fraction),
                                                          ("test", test_fraction))
                 if fraction > 0 and not evals}
    pool = torch.arange(len(labels))
    if fractions:
        split_off, pool = stratified_split(all_labels, fractions, split_seed, classes)
        for split, idx in split_off.items():
            evals[split] = ([paths[i] for i in idx.tolist()], all_labels[idx])
        shares = ", ".join(f"{split}_fraction {fraction:g}"
                           for split, fraction in fractions.items())
        sizes = " and ".join(f"{len(idx)} {split}" for split, idx in split_off.items())
        notes.append(f"{sizes} images split off the training images per class ({shares}, "
                     f"split_seed {split_seed}; at least one image of each class), "
                     f"{len(pool)} left for training")
    pool_labels = all_labels[pool]
    keep = pool[training_subset(pool_labels.tolist(), classes, imbalance_factor)]
    pool_counts = torch.bincount(pool_labels, minlength=len(classes))
    spread = f"{int(pool_counts.max())} to {int(pool_counts.min())} per class"
    if imbalance_factor == NATURAL:
        notes.append(f"the {len(pool)} training images as they are (imbalance factor "
                     f"natural), {spread}")
    else:
        dropped = len(pool) - len(keep)
        notes.append(f"imbalance factor {imbalance_factor_text(imbalance_factor)} imposed "
                     f"on the training images (n_max {len(pool) // len(classes)}, the mean class "
                     f"size): {len(keep)} of {len(pool)} kept, {dropped} dropped; "
                     f"--imbalance-factor natural keeps them all")
        if 1 < imbalance_factor <= int(pool_counts.max()) / int(pool_counts.min()):
            warnings.append(f"the training images are already long-tailed ({spread}), "
                            f"yet imbalance factor {imbalance_factor_text(imbalance_factor)} "
                            f"was imposed on them and dropped {dropped} of {len(pool)}; "
                            f"--imbalance-factor natural trains on them as they are")
    train_paths = [paths[i] for i in keep.tolist()]
    train_labels = all_labels[keep]
    probe = load_image(train_paths[0])
    small = max(probe.size) <= SMALL_IMAGE_MAX_SIDE
    if small:
        train = Split(train_labels, cached_decode(train_paths, f"train-if{imbalance_factor}"))
        splits = {k: Split(lab, cached_decode(p, k)) for k, (p, lab) in evals.items()}
        mean, std = channel_stats(train.images)
        size = probe.size[0]
    else:
        train = Split(train_labels, paths=train_paths)
        splits = {k: Split(lab, paths=p) for k, (p, lab) in evals.items()}
        mean, std = IMAGENET_STATS
        size = 224
    views = {} if small else FILE_IMAGE_VIEWS
    return Dataset(name, classes, train, splits.get("val"), splits.get("test"), mean, std, size,
                   source=source, notes=notes, warnings=warnings, **views)


def imagefolder_lt(data_dir: str, imbalance_factor: float | str, val_fraction: float = 0.0,
                   test_fraction: float = 0.0, split_seed: int = 0) -> Dataset:
    """An ImageFolder tree (:func:`image_files_dataset`).

    ``DIR/train/<class>/...`` holds the training images (classes in sorted order); ``DIR/val``
    and ``DIR/test``, when present, are the evaluation splits; a tree with neither gets them
    split off its training images by ``val_fraction`` / ``test_fraction``.
    """
    if not data_dir:
        raise DataError("imagefolder-lt needs --data-dir DIR with DIR/train/<class>/<image>")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} does not exist; imagefolder-lt expects "
                        f"{root}/train/<class>/<image> (and optionally val/ and test/)")
    classes, paths, labels = _list_folder(root / "train")
    evals = {}
    for split in ("val", "test"):
        if (root / split).is_dir():
            _, p, lab = _list_folder(root / split, classes)
            evals[split] = (p, torch.tensor(lab).long())
    return image_files_dataset("imagefolder-lt", classes, paths, labels, evals, str(root),
                               imbalance_factor, val_fraction, test_fraction, split_seed)


# -- split-list benchmarks (ImageNet-LT, iNaturalist 2018, Places-LT) -----------------------

SPLIT_LISTS = {
    "imagenet-lt": ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"),
    "places-lt": ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"),
    "inaturalist2018": ("iNaturalist18_train.txt", None, "iNaturalist18_val.txt"),
}
"""Split list files (``relative/path label`` per line) of the standard long-tailed benchmarks."""


def _read_split_list(root: Path, filename: str) -> tuple[list[str], torch.Tensor]:
    path = root / filename
    if not path.is_file():
        raise DataError(f"split list {str(path)!r} is missing; put the standard split files "
                        f"and the images under --data-dir {root}")
    paths, labels = [], []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rel, label = line.split()
                labels.append(int(label))
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: expected 'relative/path label', got "
                                f"{line.strip()!r}") from exc
            paths.append(str(root / rel))
    return paths, torch.tensor(labels).long()


def split_list_dataset(name: str, data_dir: str) -> Dataset:
    """A benchmark whose splits are given by the standard list files under ``data_dir``."""
    root = Path(data_dir) if data_dir else default_data_dir(name)
    train_file, val_file, test_file = SPLIT_LISTS[name]
    train_paths, train_labels = _read_split_list(root, train_file)
    splits = {}
    for split, filename in (("val", val_file), ("test", test_file)):
        if filename:
            p, lab = _read_split_list(root, filename)
            splits[split] = Split(lab, paths=p)
    num_classes = int(train_labels.max()) + 1
    missing = [p for p in train_paths[:1] if not os.path.exists(p)]
    if missing:
        raise DataError(f"image {missing[0]!r} listed in {train_file} does not exist under "
                        f"--data-dir {root}")
    return Dataset(name, split_list_class_names(name, root, num_classes),
                   Split(train_labels, paths=train_paths), splits.get("val"), splits.get("test"),
                   *(INATURALIST_STATS if name == "inaturalist2018" else IMAGENET_STATS),
                   image_size=224, source=str(root), **FILE_IMAGE_VIEWS)


def split_list_class_names(name: str, root: Path, num_classes: int) -> list[str]:
    """The class names of a split-list benchmark in label order: ImageNet's (torchvision's
    list) for ImageNet-LT's 1,000 classes; iNaturalist's from the release's
    ``categories.json`` and Places' from ``categories_places365.txt`` under ``root`` when
    there; else the label numbers."""
    names: dict[int, str] = {}
    if name == "imagenet-lt" and num_classes == 1000:
        from torchvision.models import ResNet50_Weights

        names = dict(enumerate(ResNet50_Weights.IMAGENET1K_V1.meta["categories"]))
    elif name == "inaturalist2018" and (root / "categories.json").is_file():
        import json

        names = {int(c["id"]): c["name"] for c in
                 json.loads((root / "categories.json").read_text(encoding="utf-8"))}
    elif name == "places-lt" and (root / "categories_places365.txt").is_file():
        for line in (root / "categories_places365.txt").read_text().splitlines():
            if line.strip():
                path, label = line.rsplit(maxsplit=1)
                names[int(label)] = path.strip("/").split("/", 1)[-1].replace("/", " ")
    return [names.get(c, str(c)) for c in range(num_classes)]
