"""Per-pixel figures: the confusion matrix, per-class IoU and accuracy, aAcc/mIoU/mAcc and the
frequent/common/rare groups, against a direct computation and a case worked by hand."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from ltcore_seg.metrics import (SegmentationOutputs, class_accuracy, class_iou, confusion_matrix,
                                pixel_groups, segmentation_figures)

IGNORE = 255


def loop_confusion(predictions, targets, num_classes):
    """The confusion matrix counted pixel by pixel."""
    cm = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(predictions.reshape(-1).tolist(), targets.reshape(-1).tolist()):
        if t != IGNORE:
            cm[t][p] += 1
    return cm


def direct_figures(cm, counts):
    """IoU, accuracy and every figure from a confusion matrix given as lists."""
    n = len(cm)
    iou, acc = [], []
    for c in range(n):
        tp = cm[c][c]
        actual = sum(cm[c])
        predicted = sum(cm[r][c] for r in range(n))
        iou.append(tp / (actual + predicted - tp) if actual else math.nan)
        acc.append(tp / actual if actual else math.nan)

    def mean(values):
        defined = [v for v in values if not math.isnan(v)]
        return round(100 * sum(defined) / len(defined), 4) if defined else None

    labelled = sum(map(sum, cm))
    figures = {"aAcc": round(100 * sum(cm[c][c] for c in range(n)) / labelled, 4)
               if labelled else None, "mIoU": mean(iou), "mAcc": mean(acc)}
    order = sorted(range(n), key=lambda c: (-counts[c], c))
    sizes = [n // 3 + (i < n % 3) for i in range(3)]
    start = 0
    for name, size in zip(("frequent", "common", "rare"), sizes):
        members = order[start:start + size]
        start += size
        figures[f"{name}_mIoU"] = mean([iou[c] for c in members])
        figures[f"{name}_mAcc"] = mean([acc[c] for c in members])
    return iou, acc, {k: v for k, v in figures.items() if v is not None}


def assert_same_with_nan(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert (math.isnan(a) and math.isnan(e)) or a == pytest.approx(e, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(num_classes=st.integers(2, 7), seed=st.integers(0, 2**31 - 1),
       shape=st.sampled_from([(3, 5), (2, 4, 6), (1, 1, 9, 7)]),
       ignored=st.floats(0, 1), absent=st.integers(0, 2))
def test_figures_match_a_direct_computation(num_classes, seed, shape, ignored, absent):
    generator = torch.Generator().manual_seed(seed)
    predictions = torch.randint(num_classes, shape, generator=generator)
    # the last ``absent`` classes never appear in the targets, only (maybe) in the predictions
    present = max(1, num_classes - absent)
    targets = torch.randint(present, shape, generator=generator).to(torch.uint8)
    targets[torch.rand(shape, generator=generator) < ignored] = IGNORE
    counts = torch.randint(0, 1000, (num_classes,), generator=generator)

    cm = confusion_matrix(predictions, targets, num_classes)
    expected_cm = loop_confusion(predictions, targets, num_classes)
    assert cm.dtype == torch.long and cm.tolist() == expected_cm

    iou, acc, figures = direct_figures(expected_cm, counts.tolist())
    assert class_iou(cm).dtype == class_accuracy(cm).dtype == torch.float64
    assert_same_with_nan(class_iou(cm).tolist(), iou)
    assert_same_with_nan(class_accuracy(cm).tolist(), acc)
    assert segmentation_figures(cm, counts) == pytest.approx(figures, abs=1e-9)


def test_a_small_image_worked_by_hand():
    # class 3 is predicted once but has no ground-truth pixel; one pixel is ignored
    targets = torch.tensor([[0, 0, 1], [1, 2, IGNORE]], dtype=torch.uint8)
    predictions = torch.tensor([[0, 1, 1], [1, 3, 0]])
    cm = confusion_matrix(predictions, targets, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert_same_with_nan(class_iou(cm).tolist(), [0.5, 2 / 3, 0.0, math.nan])
    assert_same_with_nan(class_accuracy(cm).tolist(), [0.5, 1.0, 0.0, math.nan])
    # training pixels: classes 0 and 1 frequent, 3 common (absent here: no figure), 2 rare
    figures = segmentation_figures(cm, torch.tensor([10, 5, 1, 3]))
    assert figures == {"aAcc": 60.0, "mIoU": 38.8889, "mAcc": 50.0,
                       "frequent_mIoU": 58.3333, "frequent_mAcc": 75.0,
                       "rare_mIoU": 0.0, "rare_mAcc": 0.0}


def test_all_pixels_ignored_gives_no_figure():
    targets = torch.full((2, 4, 4), IGNORE, dtype=torch.uint8)
    cm = confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), targets, 3)
    assert cm.sum() == 0 and cm.shape == (3, 3)
    assert class_iou(cm).isnan().all() and class_accuracy(cm).isnan().all()
    assert segmentation_figures(cm, torch.tensor([3, 2, 1])) == {}


def test_confusion_matrix_rejects_shapes_and_classes_that_do_not_fit():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="targets hold classes outside 0..1"):
        confusion_matrix(torch.zeros(4), torch.tensor([0, 1, 2, IGNORE]), 2)
    with pytest.raises(ValueError, match="predictions hold classes outside 0..1"):
        confusion_matrix(torch.tensor([0, 5, 1, 1]), torch.tensor([0, 1, 1, IGNORE]), 2)
    # a prediction out of range on an ignored pixel does not count
    assert confusion_matrix(torch.tensor([9, 1]), torch.tensor([IGNORE, 1]), 2).tolist() == \
        [[0, 0], [0, 1]]


@pytest.mark.parametrize("counts, expected", [
    ([5, 50, 500], {"frequent": [2], "common": [1], "rare": [0]}),
    ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], {"frequent": [0, 1, 2, 3], "common": [4, 5, 6],
                                      "rare": [7, 8, 9]}),
    ([1, 7, 7, 3, 2], {"frequent": [1, 2], "common": [3, 4], "rare": [0]}),
    ([4, 4], {"frequent": [0], "common": [1], "rare": []}),
])
def test_groups_are_thirds_by_training_pixels_most_first(counts, expected):
    groups = pixel_groups(torch.tensor(counts))
    assert {name: indices.tolist() for name, indices in groups.items()} == expected


def test_segmentation_outputs_gives_the_same_numbers():
    cm = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 4]])
    counts = torch.tensor([100, 10, 1])
    outputs = SegmentationOutputs(split="val", confusion=cm, class_counts=counts)
    assert outputs.num_classes == 3
    assert_same_with_nan(outputs.per_class_iou().tolist(), [0.5, math.nan, 4 / 6])
    assert_same_with_nan(outputs.per_class_accuracy().tolist(), [0.75, math.nan, 4 / 6])
    assert {k: v.tolist() for k, v in outputs.groups().items()} == \
        {"frequent": [0], "common": [1], "rare": [2]}
    assert outputs.figures() == segmentation_figures(cm, counts)
    assert set(outputs.figures()) == {"aAcc", "mIoU", "mAcc", "frequent_mIoU", "frequent_mAcc",
                                      "rare_mIoU", "rare_mAcc"}
