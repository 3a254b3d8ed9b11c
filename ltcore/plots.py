"""The plots people look at instead of tables (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrix_png(outputs, classes: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across)."""
    from .metrics import confusion_matrix

    cm = confusion_matrix(outputs.predictions, outputs.labels, len(classes)).float()
    cm = (cm / cm.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
    size = min(14, 3 + 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, vmin=0, vmax=1, cmap="viridis")
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), labels=classes, rotation=90)
        ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (ordered by training-set size for LT datasets)")
    ax.set_title(f"{outputs.split}: confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def per_class_accuracy_png(runs: dict[str, Sequence[float]], class_counts: Sequence[int],
                           path: Path, title: str = "per-class accuracy vs class size") -> Path:
    """Per-class accuracy (percent) against training images per class, one colour per run."""
    counts = np.asarray(class_counts)
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.cm.tab10(np.linspace(0, 1, max(10, len(runs))))
    for colour, (label, accuracy) in zip(colours, runs.items()):
        acc = 100 * np.asarray(accuracy, dtype=float)
        ax.scatter(counts, acc, s=18, color=colour, label=label, alpha=0.8)
        order = np.argsort(counts)
        ax.plot(counts[order], acc[order], color=colour, alpha=0.35, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
