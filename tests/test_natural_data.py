"""Data as it is: a tree's own long tail (imbalance factor natural), evaluation splits split off
the training images, manifests of path,label rows, and shot groups that fit the data (thirds;
an empty group shown as -)."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ltcore.data import imagefolder_lt, long_tail_counts
from ltcore.errors import DataError
from ltcore.evaluation import EvalOutputs, accuracy_figures
from ltcore.manifest import class_order, manifest_lt
from ltcore.metrics import shot_thirds
from ltcore.testing import FAST, FAST_SETTINGS, mlflow_client

LONG_TAILED = (200, 155, 119, 91, 70, 54, 42, 33, 28, 20)
"""An ImageFolder tree that is already long-tailed: 812 training images, 200 down to 20."""


def write_tree(root, train_counts, eval_per_class=0):
    """Tiny 8x8 PNGs in ``root/train/class<i>/`` (and ``val``/``test`` with ``eval_per_class``)."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", train_counts), ("val", [eval_per_class] * len(train_counts)),
                          ("test", [eval_per_class] * len(train_counts))):
        for c, n in enumerate(counts):
            if not n:
                continue
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (8, 8, 3)) + 19 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def long_tailed_tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("long-tailed"), LONG_TAILED, eval_per_class=2)


def test_natural_trains_on_every_image_and_an_empty_group_shows_a_dash(ltrun, long_tailed_tree):
    data = ["--dataset", "imagefolder-lt", "--data-dir", str(long_tailed_tree),
            "--imbalance-factor", "natural"]
    counted = ltrun("datasets", *data)
    assert counted.exit_code == 0, counted.stderr
    assert counted.output.startswith("imagefolder-lt: 812 training images in 10 classes, "
                                     "imbalance factor natural")

    result = ltrun(*data, "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.stderr
    lines = result.output.splitlines()
    assert "(812 training images, 10 classes)" in lines[1]
    assert lines[2] == ("data: the 812 training images as they are (imbalance factor natural), "
                        "200 to 20 per class")
    assert "  many    3 classes, 119-200 training images: class0, class1, class2" in lines
    assert "  few     -" in lines  # no class has fewer than 20 training images
    assert sum(line.startswith("hmean: the harmonic mean") for line in lines) == 1
    epoch = next(line for line in lines if line.startswith("train 1/1"))
    assert re.search(r"many \d+\.\d medium \d+\.\d few -  ", epoch), epoch
    assert re.search(r"^ +val: acc \S+  many \S+  medium \S+  few -  hmean ", result.output, re.M)

    run_id = re.search(r"run (\S+) finished", result.output).group(1)
    parent = mlflow_client().get_run(run_id)
    assert parent.data.tags["imbalance_factor"] == "natural"
    assert "val/many" in parent.data.metrics and "val/few" not in parent.data.metrics


def test_an_imposed_long_tail_says_what_it_dropped_and_thirds_fit_any_data(ltrun,
                                                                           long_tailed_tree):
    result = ltrun("datasets", "--dataset", "imagefolder-lt", "--data-dir",
                   str(long_tailed_tree), "--set", "eval.shot_groups=thirds")
    assert result.exit_code == 0, result.stderr
    kept = long_tail_counts(81, 10, 10)
    lines = result.output.splitlines()
    assert (f"data: imbalance factor 10 imposed on the training images (n_max 81, the mean class "
            f"size): {sum(kept)} of 812 kept, {812 - sum(kept)} dropped; --imbalance-factor "
            "natural keeps them all") in lines
    assert any(line.startswith("warning: the training images are already long-tailed (200 to 20 "
                               "per class)") for line in lines)
    assert lines[-3:] == [
        f"  many    4 classes, {kept[3]}-{kept[0]} training images: class0, class1, class2, class3",
        f"  medium  3 classes, {kept[6]}-{kept[4]} training images: class4, class5, class6",
        f"  few     3 classes, {kept[9]}-{kept[7]} training images: class7, class8, class9"]


def test_thirds_order_classes_by_count_and_an_empty_group_has_no_figure():
    groups = shot_thirds(torch.tensor([5, 9, 9, 1, 7, 3, 9, 2, 8, 4]))
    # by count, most first, ties by index: 1 2 6 8 | 4 0 9 | 5 7 3
    assert {k: v.tolist() for k, v in groups.items()} == {
        "many": [1, 2, 6, 8], "medium": [0, 4, 9], "few": [3, 5, 7]}
    assert [len(v) for v in shot_thirds(torch.tensor([3, 5])).values()] == [1, 1, 0]
    logits = torch.eye(2)
    for grouping in ("thirds", "counts"):  # counts: both classes are 'few'
        outputs = EvalOutputs("val", logits, torch.tensor([0, 1]), None, torch.tensor([3, 5]),
                              100, 20, grouping)
        figures = accuracy_figures(outputs)
        assert figures["acc"] == 100.0 and "hmean" in figures
        assert not any(np.isnan(v) for v in figures.values())
    assert "few" not in accuracy_figures(EvalOutputs("val", logits, torch.tensor([0, 1]), None,
                                                     torch.tensor([3, 5]), 100, 20, "thirds"))


def test_a_tree_without_val_and_test_gets_the_stated_split(isolated):
    from ltcore.config import resolve
    from ltcore.engine.console import Console
    from ltcore.engine.runs import prepare
    from ltcore.plugins import Plugins

    root = write_tree(isolated / "tree", (30, 20, 10, 5))
    ds = imagefolder_lt(str(root), "natural", 0.1, 0.2, split_seed=0)
    # per class round(fraction x n), at least one: val 3 2 1 1, test 6 4 2 1
    assert torch.bincount(ds.val.labels).tolist() == [3, 2, 1, 1]
    assert torch.bincount(ds.test.labels).tolist() == [6, 4, 2, 1]
    assert ds.class_counts.tolist() == [21, 14, 7, 3]
    again = imagefolder_lt(str(root), "natural", 0.1, 0.2, split_seed=0)
    other = imagefolder_lt(str(root), "natural", 0.1, 0.2, split_seed=1)
    assert torch.equal(again.test.images, ds.test.images)
    assert not torch.equal(other.test.images, ds.test.images)

    plugins = Plugins()
    settings = resolve(plugins, ["ce"], assignments=[
        *FAST_SETTINGS, "dataset=imagefolder-lt", f"data_dir={root}", "imbalance_factor=natural"])
    run = prepare(plugins, ["ce"], settings)
    plan = Console(run).plan(isolated / "runs", "sqlite:///mlflow.db")
    assert plan[1] == ("data: 7 val and 13 test images split off the training images per class "
                       "(val_fraction 0.1, test_fraction 0.2, split_seed 0; at least one image of "
                       "each class), 45 left for training")
    assert plan[2] == ("data: the 45 training images as they are (imbalance factor natural), "
                       "21 to 3 per class")

    write_tree(isolated / "small", (6, 2))
    with pytest.raises(DataError, match=r"class 'class1' has 2 training image\(s\): too few to "
                                        r"split off 1 val and 1 test"):
        imagefolder_lt(str(isolated / "small"), "natural", 0.1, 0.2)


def test_a_manifest_gives_the_images_it_lists(isolated):
    root = write_tree(isolated / "images", (6, 4, 3), eval_per_class=1)
    rows = [(f"{split}/class{c}/{i:03d}.png", f"class{c}", split)
            for split, counts in (("train", (6, 4, 3)), ("val", (1, 1, 1)))
            for c, n in enumerate(counts) for i in range(n)]
    (root / "manifest.csv").write_text("path,label,split\n" + "".join(
        f"{path},{label},{'' if split == 'train' else split}\n" for path, label, split in rows))
    (isolated / "list.jsonl").write_text("".join(json.dumps(
        {"path": str(root / path), "label": label, "split": split}) + "\n"
        for path, label, split in rows))
    from_csv = manifest_lt(str(root), "natural")  # the folder: its manifest.csv
    from_json = manifest_lt(str(isolated / "list.jsonl"), "natural")
    for ds in (from_csv, from_json):
        assert ds.classes == ["class0", "class1", "class2"]
        assert ds.class_counts.tolist() == [6, 4, 3] and len(ds.val) == 3 and ds.test is None
    assert torch.equal(from_csv.train.images, from_json.train.images)
    assert class_order({"10", "2", "1"}) == ["1", "2", "10"]


@pytest.mark.parametrize("row, message", [
    ("train/class0/missing.png,class0,", r"manifest\.csv:\d+: image 'train/class0/missing\.png' "
                                         r"does not exist \(1 of \d+ listed images are missing"),
    ("train/class0/000.png,zebra,val", r"manifest\.csv:\d+: label 'zebra' of a val row is not a "
                                       r"class of the training rows"),
])
def test_a_bad_manifest_is_refused_in_one_line_and_leaves_nothing(ltrun, isolated, row, message):
    root = write_tree(isolated / "images", (3, 3))
    listed = [f"train/class{c}/{i:03d}.png,class{c}," for c in range(2) for i in range(3)]
    (root / "manifest.csv").write_text("path,label,split\n" + "\n".join([*listed, row]) + "\n")
    result = ltrun("--dataset", "manifest-lt", "--data-dir", str(root / "manifest.csv"),
                   "--epochs", "1", *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr
    assert not (isolated / "runs").exists() and not (isolated / "cache").exists()
    client = mlflow_client()
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
