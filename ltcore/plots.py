"""The plots people look at instead of tables (PNG, matplotlib's Agg backend).

Per stage (the engine): a confusion matrix and per-class accuracy vs class size. Across runs
(``ltrun report``): per-class accuracy of several runs on one plot, accuracy and loss per epoch,
a grid of confusion matrices, and a t-SNE of features coloured by class with shot-group markers.
Every multi-run plot gives each run its own colour and a legend entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import save_figure  # noqa: E402

GROUP_MARKERS = {"many": "o", "medium": "s", "few": "^", "": "x"}
"""Marker of each shot group in t-SNE plots."""

RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
"""Markers cycled over the runs of a per-class accuracy plot (with the colours)."""


def run_colours(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced on turbo."""
    if n <= 10:
        return [plt.cm.tab10(i) for i in range(max(n, 1))]
    if n <= 20:
        return [plt.cm.tab20(i) for i in range(n)]
    return [plt.cm.turbo(x) for x in np.linspace(0.05, 0.95, n)]


def _legend_columns(n: int) -> int:
    return 1 if n <= 8 else 2


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
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def per_class_accuracy_png(runs: dict[str, Sequence[float]], class_counts: Sequence[int],
                           path: Path, title: str = "per-class accuracy vs class size") -> Path:
    """Per-class accuracy (percent) against training images per class, one colour per run."""
    counts = np.asarray(class_counts, dtype=float)
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = run_colours(len(runs))
    order = np.argsort(counts)
    step = min(0.04, 0.3 / max(1, len(runs)))
    for i, (colour, (label, accuracy)) in enumerate(zip(colours, runs.items())):
        acc = 100 * np.asarray(accuracy, dtype=float)
        # runs side by side around each class size (log axis), so equal values stay visible
        x = counts * (1.0 + step * (i - (len(runs) - 1) / 2))
        ax.scatter(x, acc, s=24, color=colour, marker=RUN_MARKERS[i % len(RUN_MARKERS)],
                   label=label, edgecolors="none", zorder=3)
        ax.plot(x[order], acc[order], color=colour, alpha=0.35, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncol=_legend_columns(len(runs)), title="run")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


Curve = tuple[Sequence[int], Sequence[float]]
"""One run's (0-based epochs, values)."""


def mean_curve(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and standard deviation (``ddof = 1``; 0 for one run) over the runs that have
    each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for epochs, values in curves:
        for epoch, value in zip(epochs, values):
            by_epoch.setdefault(int(epoch), []).append(float(value))
    epochs = np.array(sorted(by_epoch))
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
    return epochs, mean, std


def accuracy_curves_png(accuracy: dict[str, Sequence[Curve]], path: Path,
                        loss: dict[str, Sequence[Curve]] | None = None,
                        boundaries: Sequence[int] = (), ylabel: str = "validation accuracy (%)",
                        title: str = "accuracy per epoch") -> Path:
    """Accuracy (left) and, when given, training loss (right) against the epoch, one colour per
    group of runs (the same colour in both panels): the mean over the group's runs (its seeds),
    with a band of +- one standard deviation where it has more than one; dotted vertical lines
    where a new stage starts."""
    panels = [("accuracy", accuracy, ylabel)]
    if loss:
        panels.append(("loss", loss, "training loss (weighted sum of terms)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    labels = list(dict.fromkeys([*accuracy, *(loss or {})]))
    colour_of = dict(zip(labels, run_colours(len(labels))))
    for ax, (kind, groups, label) in zip(axes[0], panels):
        last = 0
        for name, runs in groups.items():
            epochs, mean, std = mean_curve(runs)
            epochs = epochs + 1
            shown = f"{name} (mean of {len(runs)})" if len(runs) > 1 else name
            ax.plot(epochs, mean, marker="o", markersize=3, linewidth=1.4,
                    color=colour_of[name], label=shown)
            if len(runs) > 1:
                ax.fill_between(epochs, mean - std, mean + std, color=colour_of[name],
                                alpha=0.2, linewidth=0)
            last = max(last, int(epochs.max()) if len(epochs) else 0)
        for b in boundaries:
            ax.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if kind == "accuracy":
            ax.set_ylim(bottom=0)
    axes[0][0].legend(loc="lower right", fontsize="small", ncol=_legend_columns(len(accuracy)),
                      title="runs (band: +- 1 std over seeds)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrices_png(matrices: dict[str, np.ndarray], classes: Sequence[str], path: Path,
                           title: str = "confusion matrices (row-normalised)") -> Path:
    """One row-normalised confusion matrix per run (true class down, predicted across), on a
    shared colour scale."""
    n = len(matrices)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.8, 3.6 * rows + 0.6),
                             squeeze=False)
    im = None
    ticks = len(classes) <= 20
    for ax, (name, cm) in zip(axes.flat, matrices.items()):
        cm = np.asarray(cm, dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(cm, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name, fontsize="small")
        if ticks:
            ax.set_xticks(range(len(classes)), labels=classes, rotation=90, fontsize=6)
            ax.set_yticks(range(len(classes)), labels=classes, fontsize=6)
        ax.set_xlabel("predicted class", fontsize="small")
        ax.set_ylabel("true class", fontsize="small")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02,
                     label="fraction of the true class")
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def tsne_png(points: np.ndarray, labels: Sequence[int], class_groups: Sequence[str],
             classes: Sequence[str], path: Path, title: str = "t-SNE of features") -> Path:
    """2-d embedding coloured by true class, marker by the class's shot group (many: circle,
    medium: square, few: triangle); two legends, classes and groups."""
    from matplotlib.lines import Line2D

    points = np.asarray(points)
    labels = np.asarray(labels)
    num = len(classes)
    colours = run_colours(num)
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    for c in range(num):
        mask = labels == c
        if not mask.any():
            continue
        group = class_groups[c] if class_groups else ""
        ax.scatter(points[mask, 0], points[mask, 1], s=16, color=colours[c],
                   marker=GROUP_MARKERS.get(group, "x"), alpha=0.8, linewidths=0.3,
                   edgecolors="black" if group == "few" else "none")
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    ax.set_title(title, fontsize="medium")
    class_handles = [Line2D([], [], marker="o", linestyle="", color=colours[c],
                            label=f"{classes[c]} ({class_groups[c]})" if class_groups else classes[c])
                     for c in range(num) if (labels == c).any()]
    first = ax.legend(handles=class_handles[:30], title="class (shot group)", fontsize="x-small",
                      loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    present = [g for g in ("many", "medium", "few") if class_groups and g in class_groups]
    group_handles = [Line2D([], [], marker=GROUP_MARKERS[g], linestyle="", color="grey",
                            label=g) for g in present]
    legends = [first]
    if group_handles:
        legends.append(ax.legend(handles=group_handles, title="shot group", fontsize="x-small",
                                 loc="lower left", bbox_to_anchor=(1.01, 0.0)))
    fig.tight_layout()
    save_figure(fig, path, dpi=100, bbox_inches="tight", bbox_extra_artists=legends)
    plt.close(fig)
    return path
