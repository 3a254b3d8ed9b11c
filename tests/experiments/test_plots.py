"""The report plots on synthetic data: valid PNGs, one colour per run, legends that fit."""

import numpy as np
import pytest
from PIL import Image

from ltcore import experiments as ex
from ltcore import plots

COUNTS = [124, 74, 44, 26, 15, 9, 5, 3, 1, 1]


def rgb(colour) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colour[:3])


def colour_pixels(path, colour, tolerance=3) -> int:
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(rgb(colour))).max(axis=2) <= tolerance).sum())


def opened(path):
    with Image.open(path) as image:
        image.verify()
    return Image.open(path)


@pytest.mark.parametrize("n", [1, 4, 10, 14, 25])
def test_run_colours_are_distinct(n):
    colours = [rgb(c) for c in plots.run_colours(n)]
    assert len(colours) == n and len(set(colours)) == n


def test_per_class_accuracy_draws_every_run_in_its_colour(tmp_path):
    rng = np.random.default_rng(0)
    runs = {f"run {i}": rng.uniform(0, 1, len(COUNTS)) for i in range(12)}
    runs["a copy of run 0"] = runs["run 0"]  # identical values stay visible side by side
    path = plots.per_class_accuracy_png(runs, COUNTS, tmp_path / "pc.png")
    assert opened(path).size == (800, 500)
    for colour in plots.run_colours(len(runs)):
        assert colour_pixels(path, colour) > 20, colour


def test_curves_confusion_grid_and_tsne(tmp_path):
    rng = np.random.default_rng(1)
    accuracy = {f"run {i}": [(list(range(6)), list(np.linspace(10, 60 + i, 6)))] for i in range(3)}
    loss = {name: [(runs[0][0], list(np.linspace(2.3, 0.5, 6)))] for name, runs in accuracy.items()}
    path = plots.accuracy_curves_png(accuracy, tmp_path / "curves.png", loss=loss, boundaries=[3])
    assert opened(path).size == (1300, 460)
    for colour in plots.run_colours(3):
        assert colour_pixels(path, colour) > 50

    classes = [str(c) for c in range(10)]
    matrices = {f"run {i}": rng.integers(0, 20, (10, 10)) for i in range(5)}
    path = plots.confusion_matrices_png(matrices, classes, tmp_path / "cm.png")
    width, height = opened(path).size
    assert width > height > 400  # 4 columns, 2 rows

    features = np.concatenate([rng.normal(0, 1, (30, 16)) + 5 * np.eye(16)[c] for c in range(10)])
    labels = np.repeat(np.arange(10), 30)
    points, keep = ex.tsne(features, max_points=200)
    assert points.shape == (200, 2) and len(set(keep.tolist())) == 200
    groups = ["many"] + ["medium"] * 4 + ["few"] * 5
    path = plots.tsne_png(points, labels[keep], groups, classes, tmp_path / "tsne.png")
    image = opened(path)
    assert image.size[0] > 850  # widened to fit the legends beside the axes
    for colour in plots.run_colours(10):
        assert colour_pixels(path, colour, tolerance=40) > 5


def test_curves_of_a_group_are_its_mean_with_a_band_of_one_standard_deviation(tmp_path):
    seeds = [([0, 1, 2], [10.0, 20.0, 30.0]), ([0, 1, 2], [14.0, 26.0, 30.0]),
             ([0, 1], [12.0, 23.0])]  # a run that stopped after two epochs
    epochs, mean, std = plots.mean_curve(seeds)
    assert epochs.tolist() == [0, 1, 2]
    assert mean.tolist() == [12.0, 23.0, 30.0]
    assert std[0] == pytest.approx(2.0) and std[1] == pytest.approx(3.0) and std[2] == 0.0
    banded = plots.accuracy_curves_png({"bcl": seeds}, tmp_path / "band.png")
    single = plots.accuracy_curves_png({"bcl": seeds[:1]}, tmp_path / "single.png")
    blue = plots.run_colours(1)[0]
    # the band is the line's colour at alpha 0.2 on white: pixels only the banded plot has
    pale = tuple(1 - 0.2 * (1 - c) for c in blue[:3])
    # (a single run's line has a few such pixels at its anti-aliased edges)
    assert colour_pixels(banded, pale) > 5000 > 50 * colour_pixels(single, pale)
