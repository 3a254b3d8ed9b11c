"""Segmentation plots (matplotlib's Agg backend, PNG): per-class IoU against the class's share
of training pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ltcore import RUN_MARKERS, run_colours, save_figure  # noqa: E402

MAX_NAMED_CLASSES = 30
"""Per-class plots write the class names beside their points up to this many classes."""


def per_class_iou_png(iou_by_run: dict[str, Sequence[float]], pixel_counts: Sequence[int],
                      path: Path, classes: Sequence[str] | None = None, title: str = "") -> Path:
    """Per-class IoU (percent, from fractions) against the class's share of training pixels
    (log x axis), one marker series per run, side by side around each class's share; NaN IoUs
    (classes absent from the evaluated split) and classes without training pixels are left out.
    ``classes`` names the points up to :data:`MAX_NAMED_CLASSES` classes."""
    counts = np.asarray(pixel_counts, dtype=float)
    share = counts / max(counts.sum(), 1.0)
    order = np.argsort(share, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 5))
    step = min(0.04, 0.3 / max(1, len(iou_by_run)))
    highest = np.full(len(share), np.nan)
    for i, (colour, (label, iou)) in enumerate(zip(run_colours(len(iou_by_run)),
                                                   iou_by_run.items())):
        values = 100 * np.asarray(iou, dtype=float)
        shown = order[np.isfinite(values[order]) & (share[order] > 0)]
        x = share[shown] * (1.0 + step * (i - (len(iou_by_run) - 1) / 2))
        ax.scatter(x, values[shown], s=24, color=colour, label=label, zorder=3,
                   marker=RUN_MARKERS[i % len(RUN_MARKERS)], edgecolors="none")
        ax.plot(x, values[shown], color=colour, alpha=0.35, linewidth=1)
        highest[shown] = np.fmax(highest[shown], values[shown])
    if classes is not None and len(classes) <= MAX_NAMED_CLASSES:
        for c in np.flatnonzero(np.isfinite(highest)):
            ax.annotate(str(classes[c]), (share[c], highest[c]), xytext=(0, 5),
                        textcoords="offset points", ha="center", fontsize="x-small")
    ax.set_xscale("log")
    ax.set_xlabel("share of the training pixels (log scale)")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(-2, 105)
    ax.set_title(title or "per-class IoU vs share of training pixels", fontsize="medium")
    ax.grid(True, alpha=0.3)
    if iou_by_run:
        ax.legend(loc="best", fontsize="small", ncol=1 if len(iou_by_run) <= 8 else 2,
                  title="run")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)

