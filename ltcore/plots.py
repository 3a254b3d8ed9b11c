"""The plots people look at instead of tables (matplotlib's Agg backend).

Per stage (the engine, PNG): a confusion matrix and per-class accuracy vs class size. Across runs
(``ltrun report``, each figure as PNG, SVG and PDF): per-class accuracy vs class size and
many/medium/few bars with one colour per method (the mean over its seeds), accuracy and loss
per epoch, seed-averaged confusion matrices, and a t-SNE of features coloured by class with
shot-group markers; and the papers' figures (:mod:`ltcore.experiments.figures`): classifier
weight norms per class, a t-SNE of projections with class centroids, per-class temperatures
per epoch and 2-d projections on the unit circle with class prototypes.
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

FIGURE_FORMATS = ("png", "svg", "pdf")
"""The files of every ``ltrun report`` figure: PNG for the page, SVG and PDF for papers."""

MAX_LABELLED_CLASSES = 30
"""Confusion matrices name their classes on the axes up to this many classes."""

SHOT_GROUP_BARS = {"many": "many", "medium": "medium", "few": "few", "acc": "overall",
                   "hmean": "harmonic mean"}
"""The figures of the shot-group bar chart (table metric -> bar group), in their order."""


def run_colours(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced on turbo."""
    if n <= 10:
        return [plt.cm.tab10(i) for i in range(max(n, 1))]
    if n <= 20:
        return [plt.cm.tab20(i) for i in range(n)]
    return [plt.cm.turbo(x) for x in np.linspace(0.05, 0.95, n)]


def _legend_columns(n: int) -> int:
    return 1 if n <= 8 else 2


def save_formats(fig, path: Path, **options) -> Path:
    """Save ``fig`` as ``path`` (PNG) and as SVG and PDF beside it, their text kept as text
    (editable); returns the PNG's path."""
    path = Path(path)
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        for suffix in FIGURE_FORMATS:
            save_figure(fig, path.with_suffix(f".{suffix}"), **options)
    return path


def mean_and_std(runs) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the first axis (the runs) and the sample standard deviation (``ddof = 1``;
    0 for one run)."""
    values = np.asarray(runs, dtype=float)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(values[0])
    return values.mean(axis=0), std


def mean_confusion(matrices) -> np.ndarray:
    """The mean over runs of their row-normalised confusion matrices."""
    return np.mean([row_normalised(m) for m in matrices], axis=0)


def row_normalised(cm) -> np.ndarray:
    """Each row divided by its sum (rows without images stay 0)."""
    cm = np.asarray(cm, dtype=float)
    return cm / np.maximum(cm.sum(axis=1, keepdims=True), 1e-12)


def class_ticks(ax, classes: Sequence[str]) -> bool:
    """Name the classes on both axes of a confusion matrix: x labels at 45 degrees, the font
    shrinking from 10 to 6 points as classes grow, long names shortened; above
    :data:`MAX_LABELLED_CLASSES` no names (returns False)."""
    n = len(classes)
    if n > MAX_LABELLED_CLASSES:
        ax.set_xticks([])
        ax.set_yticks([])
        return False
    size = float(np.clip(12 - 0.2 * n, 6, 10))
    names = [c if len(c) <= 18 else c[:17] + "…" for c in map(str, classes)]
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=size)
    ax.set_yticks(range(n), labels=names, fontsize=size)
    return True


def _class_axis(ax, classes: Sequence[str], true_label: str = "true class") -> None:
    named = class_ticks(ax, classes)
    left_out = "" if named else f" ({len(classes)} classes, names left out)"
    ax.set_xlabel(f"predicted class{left_out}")
    ax.set_ylabel(f"{true_label}{left_out}")


def confusion_matrix_png(outputs, classes: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across)."""
    from .metrics import confusion_matrix

    cm = row_normalised(confusion_matrix(outputs.predictions, outputs.labels, len(classes)))
    size = min(14, 3 + 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, vmin=0, vmax=1, cmap="viridis")
    _class_axis(ax, classes, "true class (ordered by training-set size for LT datasets)")
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


def per_class_accuracy_by_method_png(methods: dict[str, Sequence[Sequence[float]]],
                                     class_counts: Sequence[int], path: Path,
                                     title: str = "per-class accuracy vs class size",
                                     figure: str = "accuracy",
                                     unit: str = "training images") -> Path:
    """Per-class ``figure`` (accuracy, or IoU for segmentation; percent, from fractions) against
    the class's training ``unit`` (images, or pixels), one line per method: the mean over its
    runs (seeds), with a band of +- one sample standard deviation where it has more than one.
    In the SVG each line has the id ``per-class-mean-<i>`` and each band
    ``per-class-band-<i>``."""
    counts = np.asarray(class_counts, dtype=float)
    order = np.argsort(counts, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (colour, (name, runs)) in enumerate(zip(run_colours(len(methods)), methods.items())):
        mean, std = mean_and_std(100 * np.asarray(runs, dtype=float))
        shown = f"{name} (mean of {len(runs)})" if len(runs) > 1 else name
        ax.plot(counts[order], mean[order], color=colour, marker=RUN_MARKERS[i % len(RUN_MARKERS)],
                markersize=4, linewidth=1.6, label=shown, gid=f"per-class-mean-{i}", zorder=3)
        if len(runs) > 1:
            ax.fill_between(counts[order], np.clip(mean - std, 0, 100)[order],
                            np.clip(mean + std, 0, 100)[order], color=colour, alpha=0.18,
                            linewidth=0, gid=f"per-class-band-{i}")
    ax.set_xscale("log")
    ax.set_xlabel(f"{unit} of the class (log scale)")
    ax.set_ylabel(f"{figure} (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncol=_legend_columns(len(methods)),
              title="method (band: +- 1 std over seeds)", title_fontsize="small")
    fig.tight_layout()
    save_formats(fig, path, dpi=100)
    plt.close(fig)
    return Path(path)


def shot_group_bars_png(methods: dict[str, dict[str, Sequence[float]]], path: Path,
                        title: str = "accuracy per shot group") -> Path:
    """Grouped bars, one group per figure of :data:`SHOT_GROUP_BARS` that some method has
    (many, medium, few, overall, harmonic mean), one bar per method: the mean over its runs
    (percent) with an error bar of one sample standard deviation, cut at 0 and 100, where it has
    more than one."""
    shown = [key for key in SHOT_GROUP_BARS if any(values.get(key) for values in methods.values())]
    n = max(len(methods), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 + len(shown) * (0.5 + 0.28 * n)), 4.6))
    for i, (colour, (name, values)) in enumerate(zip(run_colours(len(methods)), methods.items())):
        keys = [k for k in shown if values.get(k)]
        stats = [mean_and_std(values[k]) for k in keys]
        runs = max((len(values[k]) for k in keys), default=0)
        x = np.array([shown.index(k) for k in keys]) + (i - (n - 1) / 2) * width
        # the error bar is one standard deviation each way, cut at 0% and 100%
        spread = [[min(s, m) for m, s in stats], [min(s, 100 - m) for m, s in stats]]
        bars = ax.bar(x, [m for m, _ in stats], width, color=colour, capsize=3,
                      yerr=spread if runs > 1 else None,
                      label=f"{name} (mean of {runs})" if runs > 1 else name)
        for key, bar in zip(keys, bars):
            bar.set_gid(f"shot-group-bar-{i}-{key}")
    ax.set_xticks(range(len(shown)), labels=[SHOT_GROUP_BARS[k] for k in shown])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(n, 4), fontsize="small",
              title="method (error bar: +- 1 std over seeds)", title_fontsize="small")
    fig.tight_layout()
    save_formats(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


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
    save_formats(fig, path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrices_png(matrices: dict[str, np.ndarray], classes: Sequence[str], path: Path,
                           title: str = "confusion matrices (row-normalised)") -> Path:
    """Row-normalised confusion matrices (true class down, predicted across), one panel each,
    at most four across, on a shared colour scale; panels grow with the number of classes and
    name them up to :data:`MAX_LABELLED_CLASSES` (:func:`class_ticks`)."""
    n = len(matrices)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    panel = float(np.clip(2.5 + 0.2 * len(classes), 4.0, 9.0))
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 0.8, panel * rows + 0.6),
                             squeeze=False)
    im = None
    for ax, (name, cm) in zip(axes.flat, matrices.items()):
        im = ax.imshow(row_normalised(cm), vmin=0, vmax=1, cmap="viridis", interpolation="none")
        ax.set_title(name, fontsize="medium")
        _class_axis(ax, classes)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02,
                     label="fraction of the true class")
    save_formats(fig, path, dpi=100)
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
    save_formats(fig, path, dpi=100, bbox_inches="tight", bbox_extra_artists=legends)
    plt.close(fig)
    return path


# -- the papers' figures (``ltcore.experiments.figures``) ------------------------------------


def _class_legend(ax, classes: Sequence[str], shown: Sequence[int], colours, title="class"):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=colours[c], label=str(classes[c]))
               for c in list(shown)[:30]]
    return ax.legend(handles=handles, title=title, fontsize="x-small", loc="upper left",
                     bbox_to_anchor=(1.01, 1.0))


def weight_norms_png(methods: dict[str, Sequence[Sequence[float]]], class_counts: Sequence[int],
                     path: Path, title: str = "classifier weight norm per class") -> Path:
    """The L2 norm of each class's classifier weight row, classes along x ordered by training
    images (most first; their counts as grey bars on a log right axis), one line per method:
    the mean over its runs with a band of +- one sample standard deviation where it has more
    than one (ICCL Fig. 2). In the SVG each line has the id ``weight-norm-mean-<i>``."""
    counts = np.asarray(class_counts, dtype=float)
    order = np.argsort(-counts, kind="stable")
    x = np.arange(len(counts))
    fig, ax = plt.subplots(figsize=(8.5, 5))
    bars = ax.twinx()
    bars.bar(x, counts[order], width=0.9, color="grey", alpha=0.2, gid="weight-norm-counts")
    bars.set_yscale("log")
    bars.set_ylabel("training images of the class (grey bars, log scale)")
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    for i, (colour, (name, runs)) in enumerate(zip(run_colours(len(methods)), methods.items())):
        mean, std = mean_and_std(runs)
        shown = f"{name} (mean of {len(runs)})" if len(runs) > 1 else name
        ax.plot(x, mean[order], color=colour, marker=RUN_MARKERS[i % len(RUN_MARKERS)],
                markersize=3, linewidth=1.6, label=shown, gid=f"weight-norm-mean-{i}")
        if len(runs) > 1:
            ax.fill_between(x, (mean - std)[order], (mean + std)[order], color=colour,
                            alpha=0.18, linewidth=0)
    if len(x) <= MAX_LABELLED_CLASSES:
        ax.set_xticks(x, labels=[str(c) for c in order], fontsize="small")
    ax.set_xlabel("class index, ordered by training images (head left, tail right)")
    ax.set_ylabel("L2 norm of the class's classifier weight row")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncol=_legend_columns(len(methods)),
              title="method (band: +- 1 std over seeds)", title_fontsize="small")
    fig.tight_layout()
    save_formats(fig, path, dpi=100)
    plt.close(fig)
    return Path(path)


def temperatures_png(classes: dict[str, Sequence[Curve]], path: Path,
                     boundaries: Sequence[int] = (), title: str = "per-class temperature per epoch") -> Path:
    """One line per class (its label -> the runs' (epochs, temperatures)) against the epoch:
    the mean over the runs with a band of +- one standard deviation where there are several;
    dotted lines where a new stage starts (CoGloAT Fig. 2). SVG ids ``temperature-mean-<i>``."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    last = 0
    for i, (colour, (name, runs)) in enumerate(zip(run_colours(len(classes)), classes.items())):
        epochs, mean, std = mean_curve(runs)
        epochs = epochs + 1
        ax.plot(epochs, mean, color=colour, marker="o", markersize=3, linewidth=1.4,
                label=name, gid=f"temperature-mean-{i}")
        if len(runs) > 1:
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        last = max(last, int(epochs.max()) if len(epochs) else 0)
    for b in boundaries:
        ax.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0.5, last + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("temperature")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", title="class (training images)",
              title_fontsize="small", ncol=_legend_columns(len(classes)))
    fig.tight_layout()
    save_formats(fig, path, dpi=100)
    plt.close(fig)
    return Path(path)


def projection_tsne_png(points: np.ndarray, labels: Sequence[int], marks: np.ndarray,
                        mark_labels: Sequence[int], classes: Sequence[str], path: Path,
                        title: str = "t-SNE of projections", marks_name: str = "centroid") -> Path:
    """2-d t-SNE points coloured by class, with the classes' centroids (``marks``, embedded in
    the same t-SNE) as large stars of their class's colour (ICCL Fig. 3). SVG id of the stars:
    ``figure-marks``."""
    from matplotlib.lines import Line2D

    points, labels = np.asarray(points), np.asarray(labels)
    marks, mark_labels = np.asarray(marks).reshape(-1, 2), np.asarray(mark_labels, dtype=int)
    colours = run_colours(len(classes))
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    for c in range(len(classes)):
        mask = labels == c
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=12, color=colours[c], alpha=0.7,
                       edgecolors="none")
    ax.scatter(marks[:, 0], marks[:, 1], s=260, marker="*", linewidths=1.0, edgecolors="black",
               color=[colours[c] for c in mark_labels], zorder=4, gid="figure-marks")
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    ax.set_title(title, fontsize="medium")
    present = sorted({int(c) for c in labels} | {int(c) for c in mark_labels})
    first = _class_legend(ax, classes, present, colours)
    ax.add_artist(first)
    star = Line2D([], [], marker="*", linestyle="", markersize=12, color="grey",
                  markeredgecolor="black", label=marks_name)
    second = ax.legend(handles=[star], fontsize="x-small", loc="lower left",
                       bbox_to_anchor=(1.01, 0.0))
    fig.tight_layout()
    save_formats(fig, path, dpi=100, bbox_inches="tight", bbox_extra_artists=[first, second])
    plt.close(fig)
    return Path(path)


def features_2d_png(points: np.ndarray, labels: Sequence[int], prototypes: np.ndarray | None,
                    classes: Sequence[str], path: Path,
                    title: str = "2-d projections on the unit circle") -> Path:
    """L2-normalised 2-d projections on the unit circle, coloured by class (each class a little
    further out, so that overlapping classes stay visible), and the class prototypes
    (``prototypes[c]``, normalised) as spokes from the centre ending in a diamond, in their
    class's colour (BCL supp. Fig. 2). SVG ids: ``prototype-<c>``."""
    points, labels = np.asarray(points, dtype=float), np.asarray(labels)
    colours = run_colours(len(classes))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    angle = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(angle), np.sin(angle), color="grey", linewidth=0.8, alpha=0.6)
    for c in range(len(classes)):
        mask = labels == c
        if mask.any():
            radius = 1.0 + 0.015 * c
            ax.scatter(radius * points[mask, 0], radius * points[mask, 1], s=14, alpha=0.6,
                       color=colours[c], edgecolors="none")
    if prototypes is not None:
        for c, (px, py) in enumerate(np.asarray(prototypes, dtype=float)):
            ax.plot([0, px], [0, py], color=colours[c % len(colours)], linewidth=1.8,
                    marker="D", markevery=[1], markersize=6, markeredgecolor="black",
                    gid=f"prototype-{c}")
    limit = 1.1 + 0.015 * len(classes)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xlabel("projection dimension 1 (normalised)")
    ax.set_ylabel("projection dimension 2 (normalised)")
    ax.set_title(title, fontsize="medium")
    legend = _class_legend(ax, classes, sorted({int(c) for c in labels}), colours,
                           title="class (spoke: prototype)")
    fig.tight_layout()
    save_formats(fig, path, dpi=100, bbox_inches="tight", bbox_extra_artists=[legend])
    plt.close(fig)
    return Path(path)


def against_setting_png(points: dict[str, Sequence[tuple[float, float, float]]], path: Path,
                        setting: str, title: str = "") -> Path:
    """A line per figure (name -> ``(setting value, mean, std)`` points) against the numeric
    ``setting``, sorted by it, with an error bar of one standard deviation where it is above
    0; points without a finite mean are left out (GML Fig. 2: mIoU and mAcc against alpha)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    spread_shown = False
    for i, (colour, (name, rows)) in enumerate(zip(run_colours(len(points)), points.items())):
        values = np.asarray(rows, dtype=float).reshape(-1, 3)
        values = values[np.isfinite(values[:, :2]).all(axis=1)]
        x, mean, std = values[np.argsort(values[:, 0], kind="stable")].T
        ax.plot(x, mean, color=colour, marker=RUN_MARKERS[i % len(RUN_MARKERS)], markersize=5,
                linewidth=1.6, label=name)
        spread = np.nan_to_num(std) > 0
        if spread.any():
            spread_shown = True
            ax.errorbar(x[spread], mean[spread], yerr=std[spread], fmt="none", ecolor=colour,
                        capsize=3, linewidth=1)
    ax.set_xlabel(setting)
    ax.set_ylabel(" / ".join(points) if 0 < len(points) <= 3 else "figure")
    ax.set_title(title or f"figures against {setting}", fontsize="medium")
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(loc="best", fontsize="small",
                  title="error bar: +- 1 std" if spread_shown else None)
    fig.tight_layout()
    save_formats(fig, path)
    plt.close(fig)
    return Path(path)

