"""Datasets: the long-tailed profile, the embedded default, ImageFolder trees and data errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from ltcore.testing import SHARED_CIFAR, requires_shared_cifar
from ltcore.data import (digits_lt, imagefolder_lt, long_tail_counts, long_tail_indices,
                         read_digits)
from ltcore.errors import DataError

CIFAR10_IF100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_long_tail_counts_follow_the_profile():
    assert long_tail_counts(5000, 10, 100) == CIFAR10_IF100
    counts = long_tail_counts(500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 5 and sum(counts) == 10847


def test_long_tail_indices_are_a_seeded_subset_per_class():
    labels = np.repeat(np.arange(4), 50)
    a = long_tail_indices(labels, 4, 10)
    b = long_tail_indices(labels, 4, 10)
    assert torch.equal(a, b)
    assert torch.bincount(torch.as_tensor(labels)[a]).tolist() == long_tail_counts(50, 4, 10)
    with pytest.raises(DataError, match="class 0 has 50 images"):
        long_tail_indices(labels, 4, 10, n_max=60)


def test_digits_lt_is_long_tailed_with_balanced_eval_splits():
    ds = digits_lt(10)
    assert ds.class_counts.tolist() == long_tail_counts(124, 10, 10)
    assert ds.train.images.shape[1:] == (3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert torch.bincount(ds.val.labels).tolist() == [20] * 10
    assert torch.bincount(ds.test.labels).tolist() == [30] * 10


def test_digits_are_read_as_scikit_learn_loads_them():
    """The digits read from scikit-learn's file without importing it equal ``load_digits()``:
    same dtypes, same values, bit for bit."""
    from sklearn.datasets import load_digits

    images, targets = read_digits()
    reference = load_digits()
    assert images.dtype == reference.images.dtype and targets.dtype == reference.target.dtype
    assert np.array_equal(images, reference.images) and np.array_equal(targets, reference.target)


def test_reading_the_digits_leaves_scikit_learn_unimported():
    import subprocess
    import sys

    code = ("import sys; from ltcore.data import digits_lt; digits_lt(10); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def make_folder(root, per_class=(12, 8, 5), size=8, corrupt=None):
    for split, counts in (("train", per_class), ("val", (3, 3, 3))):
        for c, n in enumerate(counts):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.full((size, size, 3), 40 * c + i, dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{i:04d}.png")
    if corrupt:
        (root / "val" / "class0" / "0000.png").write_bytes(b"not an image")


def test_imagefolder_lt_builds_the_profile(tmp_path):
    make_folder(tmp_path / "d")
    ds = imagefolder_lt(str(tmp_path / "d"), imbalance_factor=4)
    assert ds.classes == ["class0", "class1", "class2"]
    assert ds.class_counts.tolist() == long_tail_counts(8, 3, 4)
    assert len(ds.val) == 9 and ds.test is None
    assert ds.train.images.shape[1:] == (3, 8, 8)


def test_missing_data_dir_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere.*train/<class>"):
        imagefolder_lt(str(tmp_path / "nowhere"), 10)


def test_corrupt_image_names_the_file(tmp_path):
    make_folder(tmp_path / "d", corrupt=True)
    with pytest.raises(DataError, match=r"val/class0/0000\.png"):
        imagefolder_lt(str(tmp_path / "d"), imbalance_factor=4)


def test_missing_data_dir_cli_error(ltrun, tmp_path):
    result = ltrun("--dataset", "imagefolder-lt", "--data-dir", str(tmp_path / "missing"),
                   "--epochs", "1", "--no-progress")
    assert result.exit_code == 2
    assert "missing" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_ltrun_datasets_lists_and_counts(ltrun):
    listing = ltrun("datasets")
    assert "digits-lt" in listing.output and "imagefolder-lt" in listing.output
    result = ltrun("datasets", "--dataset", "digits-lt", "--imbalance-factor", "10")
    assert result.exit_code == 0, result.stderr
    assert "124  many" in result.output and "12  few" in result.output


@requires_shared_cifar()
def test_shared_cifar10_jpeg_counts(ltrun):
    result = ltrun("datasets", "--dataset", "imagefolder-lt", "--data-dir", str(SHARED_CIFAR),
                   "--imbalance-factor", "100")
    assert result.exit_code == 0, result.stderr
    counts = [int(line.split()[2]) for line in result.output.splitlines()
              if line.strip()[:1].isdigit() and len(line.split()) >= 3]
    assert counts == CIFAR10_IF100
    assert "12406 training images" in result.output
    assert "val: 2000 images" in result.output
