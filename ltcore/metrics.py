"""Evaluation figures for long-tailed recognition: accuracy by class and shot group,
calibration, shifted test sets, and embedding-quality measures.

Inputs may be torch tensors or numpy arrays. Results are torch tensors (0-dim for a single
figure, on the input's device) except the scikit-learn wrappers, which return floats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "calinski_harabasz",
    "class_variances",
    "confusion_matrix",
    "davies_bouldin",
    "expected_calibration_error",
    "group_accuracy",
    "harmonic_mean_accuracy",
    "improved_uniformity",
    "inter_class_uniformity",
    "intra_class_alignment",
    "per_class_accuracy",
    "shifted_test_indices",
    "shot_groups",
]

SHOT_GROUP_NAMES = ("many", "medium", "few")


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``LongTensor [C, C]`` whose entry ``[i, j]`` counts samples of true class ``i``
    predicted as ``j`` (rows: truth, columns: prediction, as in scikit-learn)."""
    predictions = torch.as_tensor(predictions).long()
    labels = torch.as_tensor(labels).long().to(predictions.device)
    flat = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``[C]`` float accuracy of each class: correct predictions / samples of that class.

    Classes with no sample in ``labels`` get NaN (their accuracy is undefined).
    """
    predictions = torch.as_tensor(predictions).long()
    labels = torch.as_tensor(labels).long().to(predictions.device)
    totals = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels[predictions == labels], minlength=num_classes)
    return correct.to(torch.get_default_dtype()) / totals


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


def harmonic_mean_accuracy(per_class_acc: Tensor, eps: float = 1e-12) -> Tensor:
    """Harmonic mean of per-class accuracies: ``C / sum_c 1 / max(a_c, eps)``.

    The ``eps`` floor keeps the result finite: a class at accuracy 0 contributes ``1/eps``,
    so the harmonic mean is at most ``C * eps`` (0 at any reporting precision). It exposes
    the worst classes, as reported by RCL.
    """
    per_class_acc = torch.as_tensor(per_class_acc)
    return per_class_acc.numel() / torch.reciprocal(per_class_acc.clamp_min(eps)).sum()


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


# CoGloAT embedding metrics (seed 002, sec. 4, eq. 9-13). In the paper's text every distance
# reads "||.||2", which may be the Euclidean norm or its square. The default
# reads all of them as squared: eq. 11 is called a variance, eq. 10-11 are presented as an O(n)
# replacement for eq. 9, which holds exactly only for squared distances (Intra = 2 Variance),
# and eq. 13 then is the scale-free ratio of squared centre distance to summed variances.
# `squared=False` gives the plain Euclidean reading used by TSC (Li et al. 2022), which eq. 9
# and 12 cite. Embeddings are L2-normalised first (a no-op for normalised input); the classes
# are those present in `labels`; centres are means of the normalised embeddings.


def _normalised_by_class(embeddings: Tensor, labels: Tensor):
    """Normalised embeddings, class index per sample (0..K-1 over present classes), counts."""
    embeddings = F.normalize(torch.as_tensor(embeddings), dim=1)
    labels = torch.as_tensor(labels).to(embeddings.device)
    _, class_index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return embeddings, class_index, counts


def _class_centres(embeddings: Tensor, class_index: Tensor, counts: Tensor) -> Tensor:
    sums = torch.zeros(counts.numel(), embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    return sums.index_add_(0, class_index, embeddings) / counts.unsqueeze(1).to(embeddings.dtype)


def _distance(difference_norm: Tensor, squared: bool) -> Tensor:
    return difference_norm.square() if squared else difference_norm


def _variances(embeddings: Tensor, class_index: Tensor, counts: Tensor, centres: Tensor, squared: bool) -> Tensor:
    deviation = _distance(torch.linalg.vector_norm(embeddings - centres[class_index], dim=1), squared)
    totals = torch.zeros(counts.numel(), dtype=embeddings.dtype, device=embeddings.device)
    return totals.index_add_(0, class_index, deviation) / counts.to(embeddings.dtype)


def _centre_distances(embeddings: Tensor, labels: Tensor, squared: bool):
    embeddings, class_index, counts = _normalised_by_class(embeddings, labels)
    if counts.numel() < 2:
        raise ValueError("inter-class figures need at least two classes")
    centres = _class_centres(embeddings, class_index, counts)
    distances = _distance(torch.cdist(centres, centres, compute_mode="donot_use_mm_for_euclid_dist"), squared)
    off_diagonal = ~torch.eye(counts.numel(), dtype=torch.bool, device=embeddings.device)
    return distances, off_diagonal, _variances(embeddings, class_index, counts, centres, squared)


def class_variances(embeddings: Tensor, labels: Tensor, squared: bool = True) -> Tensor:
    """Per-class variance around the class centre (CoGloAT eq. 11):
    ``var_i = 1/|F_i| sum_{v in F_i} ||v - c_i||^2``. Its mean is the paper's eq. 10.

    Args:
        embeddings: ``[N, D]``; labels: ``[N]``.
        squared: squared distance (default, see the note above) or plain Euclidean.

    Returns:
        ``[K]`` variances of the classes present in ``labels``, in ascending label order.
    """
    embeddings, class_index, counts = _normalised_by_class(embeddings, labels)
    centres = _class_centres(embeddings, class_index, counts)
    return _variances(embeddings, class_index, counts, centres, squared)


def intra_class_alignment(embeddings: Tensor, labels: Tensor, squared: bool = True) -> Tensor:
    """Intra-class alignment (CoGloAT eq. 9, after TSC):
    ``1/K sum_i 1/|F_i|^2 sum_{v_j, v_k in F_i} ||v_j - v_k||^2`` over all ordered pairs
    (including ``j = k``). Lower is tighter.

    With ``squared=True`` it is computed in O(N) through the exact identity
    ``1/|F|^2 sum_{j,k} ||v_j - v_k||^2 = 2 var``; with ``squared=False`` each class's
    pairwise distances are computed (O(|F_i|^2) per class).

    Returns:
        0-dim tensor.
    """
    if squared:
        return 2.0 * class_variances(embeddings, labels, squared=True).mean()
    embeddings, class_index, counts = _normalised_by_class(embeddings, labels)
    grouped = embeddings[torch.argsort(class_index, stable=True)]
    per_class = [
        torch.cdist(members, members, compute_mode="donot_use_mm_for_euclid_dist").mean()
        for members in torch.split(grouped, counts.tolist())
    ]
    return torch.stack(per_class).mean()


def inter_class_uniformity(embeddings: Tensor, labels: Tensor, squared: bool = True) -> Tensor:
    """Inter-class uniformity (CoGloAT eq. 12, after TSC):
    ``1/(K(K-1)) sum_{i != j} ||c_i - c_j||^2``, ``c_i`` the mean embedding of class ``i``.
    Higher is more separable.

    Returns:
        0-dim tensor.
    """
    distances, off_diagonal, _ = _centre_distances(embeddings, labels, squared)
    num_classes = distances.shape[0]
    return distances[off_diagonal].sum() / (num_classes * (num_classes - 1))


def improved_uniformity(embeddings: Tensor, labels: Tensor, squared: bool = True) -> Tensor:
    """CoGloAT's improved inter-class uniformity (eq. 13):
    ``2/(K(K-1)) sum_{i != j} ||c_i - c_j||^2 / |var_i + var_j|`` with ``var`` from eq. 11.

    The sum runs over ordered pairs, as written in the paper. A pair of classes that both
    collapsed to single points has a zero denominator and yields ``inf``.

    Returns:
        0-dim tensor.
    """
    distances, off_diagonal, variances = _centre_distances(embeddings, labels, squared)
    num_classes = distances.shape[0]
    pair_variance = (variances.unsqueeze(0) + variances.unsqueeze(1)).abs()
    ratios = distances[off_diagonal] / pair_variance[off_diagonal]
    return 2.0 * ratios.sum() / (num_classes * (num_classes - 1))
