"""The segmentation plots write valid PNGs and leave NaN points out."""

import math

import numpy as np
import pytest

from ltcore_seg import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) of a PNG file, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plots close, kept for inspection."""
    figures = []
    close = plots.plt.close

    def keep(fig):
        figures.append(fig)
        close(fig)
    monkeypatch.setattr(plots.plt, "close", keep)
    return figures


def test_per_class_iou_png_leaves_nan_and_classes_without_pixels_out(tmp_path, drawn):
    runs = {"ce": [0.9, 0.5, math.nan, 0.1, 0.0], "gml": [0.8, 0.6, 0.3, math.nan, 0.2]}
    counts = [5000, 800, 120, 9, 0]
    path = plots.per_class_iou_png(runs, counts, tmp_path / "figures" / "iou.png",
                                   classes=["wall", "sky", "lamp", "vase", "ghost"])
    assert path == tmp_path / "figures" / "iou.png"
    assert png_size(path) == (800, 500) and path.stat().st_size > 5000
    assert not list(path.parent.glob(".*.tmp"))
    ax = drawn[0].axes[0]
    assert ax.get_xscale() == "log"
    points = [collection.get_offsets() for collection in ax.collections]
    shares = np.array(counts[:4]) / sum(counts)
    # each run's points: classes with a defined IoU and training pixels, rarest first
    assert np.allclose(points[0][:, 1], [10.0, 50.0, 90.0])
    assert np.allclose(points[1][:, 1], [30.0, 60.0, 80.0])
    assert np.allclose(points[0][:, 0] / shares[[3, 1, 0]], points[0][0, 0] / shares[3])
    assert [text.get_text() for text in ax.texts] == ["wall", "sky", "lamp", "vase"]


def test_per_class_iou_png_with_every_value_nan_still_draws(tmp_path):
    path = plots.per_class_iou_png({"run": [math.nan, math.nan]}, [10, 1], tmp_path / "nan.png",
                                   title="nothing defined")
    assert png_size(path) == (800, 500)

