"""Evaluation figures for long-tailed recognition: accuracy by class and shot group,
calibration, shifted test sets, and clustering indices of embeddings.

Inputs may be torch tensors or numpy arrays. Results are torch tensors (0-dim for a single
figure, on the input's device) except the scikit-learn wrappers, which return floats.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "calinski_harabasz",
    "confusion_matrix",
    "davies_bouldin",
    "expected_calibration_error",
    "group_accuracy",
    "harmonic_mean_accuracy",
    "per_class_accuracy",
    "shifted_test_indices",
    "shot_groups",
    "shot_thirds",
]

SHOT_GROUP_NAMES = ("many", "medium", "few")


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``LongTensor [C, C]`` whose entry ``[i, j]`` counts samples of true class ``i``
    predicted as ``j`` (rows: truth, columns: prediction, as in scikit-learn)."""
    predictions = torch.as_tensor(predictions).long()
    labels = torch.as_tensor(labels).long().to(predictions.device)
    flat = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int,
                       dtype: torch.dtype | None = None) -> Tensor:
    """``[C]`` accuracy of each class: correct predictions / samples of that class, in
    ``dtype`` (default: torch's default dtype).

    Classes with no sample in ``labels`` get NaN (their accuracy is undefined).
    """
    predictions = torch.as_tensor(predictions).long()
    labels = torch.as_tensor(labels).long().to(predictions.device)
    totals = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels[predictions == labels], minlength=num_classes)
    return correct.to(dtype or torch.get_default_dtype()) / totals


def shot_groups(class_counts: Tensor, many: int = 100, few: int = 20) -> dict[str, Tensor]:
    """Split classes by training-set count: ``many`` (n > many), ``few`` (n < few) and
    ``medium`` (the rest, so exactly ``many`` and exactly ``few`` are medium).

    Returns:
        ``{"many": LongTensor, "medium": LongTensor, "few": LongTensor}`` of class indices;
        a group may be empty.
    """
    counts = torch.as_tensor(class_counts)
    is_many = counts > many
    is_few = counts < few
    is_medium = ~(is_many | is_few)
    masks = (is_many, is_medium, is_few)
    return {name: mask.nonzero().squeeze(1) for name, mask in zip(SHOT_GROUP_NAMES, masks)}


def shot_thirds(class_counts: Tensor) -> dict[str, Tensor]:
    """Split classes into three groups of equal size by training-set count: ``many`` the third
    with the most images, ``medium`` the next, ``few`` the rest. Classes are ordered by count,
    most first, ties by class index; when their number is not a multiple of 3 the first groups
    are one class larger (``numpy.array_split``'s rule: 10 classes give 4, 3 and 3).

    Returns:
        ``{"many": LongTensor, "medium": LongTensor, "few": LongTensor}`` of class indices in
        ascending order; with fewer than 3 classes the last groups are empty.
    """
    counts = torch.as_tensor(class_counts)
    order = sorted(range(counts.numel()), key=lambda c: (-int(counts[c]), c))
    base, larger = divmod(len(order), 3)
    groups, start = {}, 0
    for position, name in enumerate(SHOT_GROUP_NAMES):
        size = base + (position < larger)
        groups[name] = torch.tensor(sorted(order[start:start + size]), dtype=torch.long,
                                    device=counts.device)
        start += size
    return groups


def group_accuracy(per_class_acc: Tensor, groups: dict[str, Tensor]) -> dict[str, Tensor]:
    """Unweighted mean of the per-class accuracies in each group; empty groups are omitted.

    Args:
        per_class_acc: ``[C]`` accuracies.
        groups: name -> class indices, e.g. from :func:`shot_groups`.

    Returns:
        name -> 0-dim tensor, for each non-empty group.
    """
    per_class_acc = torch.as_tensor(per_class_acc)
    return {
        name: per_class_acc[torch.as_tensor(indices, device=per_class_acc.device)].mean()
        for name, indices in groups.items()
        if len(indices) > 0
    }


def harmonic_mean_accuracy(per_class_acc: Tensor) -> Tensor:
    """Harmonic mean of per-class accuracies: ``C / sum_c 1 / a_c``, exactly 0 when a class is
    at accuracy 0 (the limit of the formula). It exposes the worst classes, as reported by RCL.
    """
    per_class_acc = torch.as_tensor(per_class_acc)
    if bool((per_class_acc == 0).any()):
        return torch.zeros((), dtype=per_class_acc.dtype, device=per_class_acc.device)
    return per_class_acc.numel() / torch.reciprocal(per_class_acc).sum()


def expected_calibration_error(probabilities: Tensor, labels: Tensor, bins: int = 15) -> Tensor:
    """Expected calibration error (Guo et al. 2017) with equal-width confidence bins.

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``, confidence = max probability,
    prediction = its arg-max. Bin ``b`` holds confidences in ``(b / bins, (b + 1) / bins]``
    (a confidence of exactly 0 joins the first bin).

    Args:
        probabilities: ``[N, C]`` predicted class probabilities.
        labels: ``[N]`` true labels.
        bins: number of bins.

    Returns:
        0-dim tensor.
    """
    probabilities = torch.as_tensor(probabilities)
    labels = torch.as_tensor(labels).long().to(probabilities.device)
    confidence, prediction = probabilities.max(dim=1)
    boundaries = torch.linspace(0.0, 1.0, bins + 1, dtype=confidence.dtype, device=confidence.device)
    bin_index = torch.bucketize(confidence, boundaries[1:-1], right=False)
    gap = (prediction == labels).to(confidence.dtype) - confidence
    gap_per_bin = torch.zeros(bins, dtype=confidence.dtype, device=confidence.device).index_add_(0, bin_index, gap)
    return gap_per_bin.abs().sum() / labels.numel()


def shifted_test_indices(labels: Tensor, imbalance_ratio: float, generator: torch.Generator) -> Tensor:
    """Indices of a long-tailed subset of a balanced test set, as in SADE (Zhang et al. 2022).

    With ``n_max`` the smallest per-class count (the common count of a balanced set) and
    ``C`` classes in natural label order, class ``i`` keeps
    ``int(n_max * (1 / ratio) ** (i / (C - 1)))`` images for a forward ratio (``ratio > 1``)
    and ``int(n_max * ratio ** ((C - 1 - i) / (C - 1)))`` for a backward ratio
    (``ratio < 1``, i.e. ``1 / ratio`` with the class order reversed). ``ratio = 1`` keeps
    ``n_max`` per class, i.e. all images of a balanced set. The kept images of each class
    are a uniformly random subset drawn with ``generator``.

    Args:
        labels: ``[N]`` test labels, classes ``0 .. C-1`` all present.
        imbalance_ratio: forward (> 1), uniform (1) or backward (< 1) ratio.
        generator: source of randomness (on the labels' device).

    Returns:
        Ascending ``LongTensor`` of kept indices.
    """
    labels = torch.as_tensor(labels).long()
    num_classes = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    n_max = int(counts.min())
    if imbalance_ratio <= 0 or n_max == 0:
        raise ValueError("imbalance_ratio must be positive and every class must be present")
    factor = imbalance_ratio if imbalance_ratio < 1 else 1.0 / imbalance_ratio
    positions = range(num_classes - 1, -1, -1) if imbalance_ratio < 1 else range(num_classes)
    kept_per_class = torch.tensor(
        [int(n_max * factor ** (position / (num_classes - 1))) for position in positions],
        device=labels.device,
    )
    random_order = torch.argsort(torch.rand(labels.numel(), generator=generator, device=labels.device))
    grouped = random_order[torch.argsort(labels[random_order], stable=True)]
    grouped_labels = labels[grouped]
    class_starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(labels.numel(), device=labels.device) - class_starts[grouped_labels]
    return grouped[rank_in_class < kept_per_class[grouped_labels]].sort().values


def _sklearn_inputs(embeddings: Tensor, labels: Tensor):
    embeddings = torch.as_tensor(embeddings).detach().to("cpu", torch.float64).numpy()
    labels = torch.as_tensor(labels).detach().cpu().numpy()
    return embeddings, labels


def calinski_harabasz(embeddings: Tensor, labels: Tensor) -> float:
    """Calinski-Harabasz index of ``[N, D]`` embeddings grouped by ``[N]`` labels
    (scikit-learn): ``[tr(B) / (K - 1)] / [tr(W) / (N - K)]``, higher is better."""
    from sklearn.metrics import calinski_harabasz_score

    return float(calinski_harabasz_score(*_sklearn_inputs(embeddings, labels)))


def davies_bouldin(embeddings: Tensor, labels: Tensor) -> float:
    """Davies-Bouldin index of ``[N, D]`` embeddings grouped by ``[N]`` labels
    (scikit-learn): ``1/K sum_i max_{j != i} (s_i + s_j) / ||c_i - c_j||``, lower is better."""
    from sklearn.metrics import davies_bouldin_score

    return float(davies_bouldin_score(*_sklearn_inputs(embeddings, labels)))
