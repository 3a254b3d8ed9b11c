"""Evaluation under shifted test class distributions (the protocol of SADE, Zhang et al. 2022).

From the balanced test split, long-tailed test sets are drawn per imbalance ratio ``r``: a
forward set (``r > 1``) keeps ``int(n * (1/r)^(i/(C-1)))`` images of class ``i`` (head classes of
the training split stay frequent), a backward set (``r < 1``, written ``1/50`` or ``0.02``)
reverses the class order, and ``r = 1`` keeps the whole balanced split (see
:func:`ltcore.metrics.shifted_test_indices`). Each set is drawn with a generator seeded by
``seed + d`` for draw ``d``; with several draws the figures are averaged. Overall accuracy is over
the drawn images; many/medium/few (groups by training-set count) and the harmonic mean are over
the per-class accuracies of the classes that kept at least one image (a class with none has no
accuracy); a group with no such class is reported as ``None``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .errors import ConfigError, DataError

DEFAULT_RATIOS = (50.0, 10.0, 1.0, 0.1, 0.02)
"""Forward 50 and 10, the balanced set, backward 10 and 50."""

FIGURES = ("acc", "many", "medium", "few", "hmean")


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"50,10,1,1/10,0.02"`` -> ``(50.0, 10.0, 1.0, 0.1, 0.02)``; every ratio must be > 0."""
    ratios = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "/" in part:
                numerator, denominator = part.split("/")
                value = float(numerator) / float(denominator)
            else:
                value = float(part)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--ratios expects numbers separated by commas (e.g. "
                              f"50,10,1,0.1,0.02 or 1/50), got {part!r}") from None
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"imbalance ratios must be positive, got {part!r}")
        ratios.append(value)
    if not ratios:
        raise ConfigError("--ratios is empty")
    return tuple(ratios)


def ratio_label(ratio: float) -> str:
    """``50`` -> ``"50"``, ``0.02`` -> ``"1/50"``."""
    return f"{ratio:g}" if ratio >= 1 else f"1/{1 / ratio:.4g}"


def ratio_kind(ratio: float) -> str:
    return "forward" if ratio > 1 else "uniform" if ratio == 1 else "backward"


def shifted_figures(logits: torch.Tensor, labels: torch.Tensor, class_counts: torch.Tensor,
                    many_threshold: int, few_threshold: int,
                    shot_groups: str = "counts") -> dict[str, float | None]:
    """Accuracy figures (percent) of one drawn test set; classes without images are left out."""
    from .evaluation import class_groups
    from .metrics import per_class_accuracy

    num_classes = int(class_counts.numel())
    predictions = logits.argmax(dim=1)
    per_class = per_class_accuracy(predictions, labels, num_classes)
    present = ~torch.isnan(per_class)
    figures: dict[str, float | None] = {
        "acc": 100.0 * float((predictions == labels).float().mean())}
    for group, indices in class_groups(class_counts, shot_groups, many_threshold,
                                       few_threshold).items():
        values = per_class[indices][present[indices]]
        figures[group] = 100.0 * float(values.mean()) if len(values) else None
    kept = per_class[present].clamp_min(1e-12)
    figures["hmean"] = 100.0 * float(len(kept) / kept.reciprocal().sum())
    return figures


def shift_table(logits: torch.Tensor, labels: torch.Tensor, class_counts: torch.Tensor,
                ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0, draws: int = 1,
                many_threshold: int = 100, few_threshold: int = 20,
                shot_groups: str = "counts") -> list[dict]:
    """One row per ratio: ratio, label, kind, images per draw and the mean figures over draws."""
    from .metrics import shifted_test_indices

    if draws < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")
    labels = labels.long()
    rows = []
    for ratio in ratios:
        per_draw = []
        for draw in range(draws):
            generator = torch.Generator().manual_seed(seed + draw)
            kept = shifted_test_indices(labels, ratio, generator)
            per_draw.append(shifted_figures(logits[kept], labels[kept], class_counts,
                                            many_threshold, few_threshold, shot_groups))
        row = {"ratio": ratio, "label": ratio_label(ratio), "kind": ratio_kind(ratio),
               "images": int(kept.numel())}
        for key in FIGURES:
            values = [f[key] for f in per_draw if f[key] is not None]
            row[key] = sum(values) / len(values) if values else None
        rows.append(row)
    return rows


def evaluate_shifted(run, model, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0,
                     draws: int = 1) -> dict:
    """Shifted-test figures of ``model`` on the run's balanced test split.

    The logits come from the run's evaluation path, so they carry every adjustment an
    evaluation makes (the plugins' and post-hoc logit adjustment, ``eval.posthoc_la_tau``).
    """
    split = run.dataset.test
    if split is None:
        raise DataError(f"dataset {run.dataset.name!r} has no test split to resample")
    logits = run.evaluate(model, ["test"]).outputs["test"].logits
    cfg = run.config.eval
    rows = shift_table(logits, split.labels, run.dataset.class_counts, ratios, seed, draws,
                       cfg.many_threshold, cfg.few_threshold, cfg.shot_groups)
    return {"dataset": run.dataset.name, "split": "test", "test_images": len(split),
            "seed": seed, "draws": draws, "posthoc_la_tau": cfg.posthoc_la_tau, "rows": rows}


def format_shift_table(result: dict) -> str:
    """The rows of :func:`evaluate_shifted` as a text table (figures in percent)."""
    head = (f"{result['dataset']} test split ({result['test_images']} images) resampled per "
            f"imbalance ratio; seed {result['seed']}, {result['draws']} draw(s)")
    if result["posthoc_la_tau"]:
        head += f"; post-hoc logit adjustment tau {result['posthoc_la_tau']:g}"
    lines = [head, f"{'ratio':>7} {'kind':>9} {'images':>7} " +
             " ".join(f"{k:>7}" for k in FIGURES)]
    for row in result["rows"]:
        cells = " ".join(f"{row[k]:7.2f}" if row[k] is not None else f"{'-':>7}" for k in FIGURES)
        lines.append(f"{row['label']:>7} {row['kind']:>9} {row['images']:>7} {cells}")
    return "\n".join(lines)
