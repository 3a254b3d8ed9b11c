"""Per-pixel evaluation figures of semantic segmentation (mmsegmentation's definitions).

From a confusion matrix over the labelled pixels of a split (rows: true class, columns:
predicted; pixels labelled ``ignore_index`` left out): per class ``IoU = TP / (TP + FP + FN)``
and ``Acc = TP / (TP + FN)``; ``aAcc`` is all correct pixels over all labelled pixels, ``mIoU``
and ``mAcc`` the means over classes that skip NaN.

A class without a ground-truth pixel in the split (``TP + FN == 0``) has no IoU and no accuracy
there: both are NaN and left out of every mean. (mmsegmentation gives such a class an IoU of 0
when it is predicted somewhere; here a false positive of an absent class counts only against
the classes whose pixels it took.) A figure with no class to average is left out.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor

from ltcore.metrics import shot_thirds

from . import IGNORE

PIXEL_GROUPS = {"many": "frequent", "medium": "common", "few": "rare"}
""":func:`ltcore.metrics.shot_thirds`'s groups -> their names here (by training pixels)."""


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int,
                     ignore_index: int = IGNORE) -> Tensor:
    """``LongTensor [C, C]`` whose entry ``[i, j]`` counts pixels of true class ``i`` predicted
    as ``j``; pixels whose target is ``ignore_index`` are left out. ``predictions`` and
    ``targets`` have the same shape (any); the result is on ``predictions``' device."""
    predictions = torch.as_tensor(predictions)
    targets = torch.as_tensor(targets).to(predictions.device)
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape")
    targets = targets.reshape(-1).long()
    labelled = targets != ignore_index
    targets, predictions = targets[labelled], predictions.reshape(-1).long()[labelled]
    for name, values in (("targets", targets), ("predictions", predictions)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} hold classes outside 0..{num_classes - 1} (ignore index "
                             f"{ignore_index} aside): {values.min()}..{values.max()}")
    flat = torch.bincount(targets * num_classes + predictions,
                          minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def class_iou(confusion: Tensor) -> Tensor:
    """``float64 [C]``: TP / (TP + FP + FN) of each class; NaN for a class without a
    ground-truth pixel (TP + FN == 0)."""
    confusion = torch.as_tensor(confusion).double()
    true_positives = confusion.diagonal()
    actual, predicted = confusion.sum(dim=1), confusion.sum(dim=0)
    iou = true_positives / (actual + predicted - true_positives)
    return torch.where(actual > 0, iou, torch.full_like(iou, math.nan))


def class_accuracy(confusion: Tensor) -> Tensor:
    """``float64 [C]``: TP / (TP + FN) of each class; NaN for a class without a ground-truth
    pixel."""
    confusion = torch.as_tensor(confusion).double()
    return confusion.diagonal() / confusion.sum(dim=1)


def pixel_groups(class_counts: Tensor) -> dict[str, Tensor]:
    """``frequent``, ``common`` and ``rare``: thirds of the classes by training pixel count,
    most first, the first groups a class larger when the classes do not divide by 3
    (:func:`ltcore.metrics.shot_thirds`); class indices in ascending order."""
    return {PIXEL_GROUPS[name]: indices for name, indices in shot_thirds(class_counts).items()}


def _percent_mean(values: Tensor) -> float | None:
    """The mean of the values that are not NaN, in percent rounded to 4 decimals; None when
    there is none."""
    defined = values[~values.isnan()]
    return round(100 * defined.mean().item(), 4) if defined.numel() else None


def segmentation_figures(confusion: Tensor, class_counts: Tensor) -> dict[str, float]:
    """Percentages rounded to 4 decimals: ``aAcc``, ``mIoU`` and ``mAcc``, then
    ``<group>_mIoU`` and ``<group>_mAcc`` for the ``frequent``, ``common`` and ``rare`` thirds of
    the classes by training pixels ``class_counts`` (:func:`pixel_groups`). Means skip classes
    without ground-truth pixels; a figure with no class (or pixel) to count is left out."""
    confusion = torch.as_tensor(confusion)
    iou, accuracy = class_iou(confusion), class_accuracy(confusion)
    labelled = int(confusion.sum())
    figures = {}
    if labelled:
        figures["aAcc"] = round(100 * int(confusion.diagonal().sum()) / labelled, 4)
    means = {"mIoU": _percent_mean(iou), "mAcc": _percent_mean(accuracy)}
    for group, indices in pixel_groups(class_counts).items():
        indices = indices.to(iou.device)
        means[f"{group}_mIoU"] = _percent_mean(iou[indices])
        means[f"{group}_mAcc"] = _percent_mean(accuracy[indices])
    figures.update({name: value for name, value in means.items() if value is not None})
    return figures


@attrs.define(eq=False)
class SegmentationOutputs:
    """What a segmentation metric receives about one split: the pixel confusion matrix
    (rows: true class, columns: predicted; ignore pixels left out) and the training pixel
    count of each class."""

    split: str
    confusion: Tensor
    class_counts: Tensor

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[0])

    def per_class_iou(self) -> Tensor:
        """``float64 [C]`` IoU fractions (0..1), NaN for a class absent from the split."""
        return class_iou(self.confusion)

    def per_class_accuracy(self) -> Tensor:
        """``float64 [C]`` accuracy fractions (0..1), NaN for a class absent from the split."""
        return class_accuracy(self.confusion)

    def groups(self) -> dict[str, Tensor]:
        """``frequent``/``common``/``rare`` -> class indices (:func:`pixel_groups`)."""
        return pixel_groups(self.class_counts)

    def figures(self) -> dict[str, float]:
        """:func:`segmentation_figures` of this split."""
        return segmentation_figures(self.confusion, self.class_counts)


def write_per_class(path, classes, counts, outputs: SegmentationOutputs, table):
    """The per-class figures of one split as CSV: class, training pixels, their share, IoU and
    accuracy (percent, empty where the class has no pixel in the split), the pixels and IoU in
    the columns ``table`` (the task's :class:`ltcore.PerClassTable`) names; returns the path."""
    import csv
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = max(1, sum(counts))
    iou, accuracy = outputs.per_class_iou().tolist(), outputs.per_class_accuracy().tolist()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_index", "class", table.count, "train_share", table.figure,
                         "accuracy"])
        for i, (name, n) in enumerate(zip(classes, counts)):
            writer.writerow([i, name, n, f"{n / total:.6f}",
                             *("" if math.isnan(v) else f"{100 * v:.4f}"
                               for v in (iou[i], accuracy[i]))])
    return path

SHOWN_CLASSES = 8
"""Class names a pixel-group line of the plan shows before saying how many more there are."""


def pixel_group_lines(class_counts: Tensor, classes) -> list[str]:
    """The plan's lines on the figures' groups: thirds of the classes by training pixels."""
    total = max(1, int(class_counts.sum()))
    lines = ["pixel-frequency groups (thirds of the classes by training pixels, most first; "
             "mIoU and mAcc per group):"]
    for name, members in pixel_groups(class_counts).items():
        members = members.tolist()
        if not members:
            lines.append(f"  {name:<8} -")
            continue
        shares = [100 * int(class_counts[i]) / total for i in members]
        shown = ", ".join(classes[i] for i in members[:SHOWN_CLASSES])
        if len(members) > SHOWN_CLASSES:
            shown += f", ... ({len(members) - SHOWN_CLASSES} more)"
        lines.append(f"  {name:<8} {len(members)} classes, {min(shares):.2f}-{max(shares):.2f}% "
                     f"of the training pixels each: {shown}")
    lines.append("mIoU: mean over classes of TP / (TP + FP + FN); mAcc: of TP / (TP + FN); aAcc: "
                 "correct pixels / labelled pixels (a class without pixels in a split is left "
                 "out of its means)")
    return lines
