"""CoGloAT's embedding-quality figures (Bach et al. 2023, sec. 4, eq. 9-13).

The paper writes every distance "||.||2" and eq. 9's sum "over v_j, v_k in F_i" without saying
whether a pair counts once or twice; three readings are implemented (``reading``):

* ``"euclidean-unordered"`` (default): Euclidean distances (TSC, Li et al. 2022, which eq. 9 and
  12 cite, uses the plain norm) and eq. 9 summing each unordered pair ``{j, k}`` once over
  ``|F_i|^2`` (the pairs ``torch.pdist`` enumerates). It is the only reading that can give
  Table 1's relation, Intra below Variance in every setting (ratio 0.65-0.68): per class,
  ``(n-1)/(2n) var_i <= intra_i < (n-1)/n var_i`` (Jensen's and the triangle inequality), about
  ``var_i / sqrt 2`` for a spread-out class in many dimensions.
* ``"euclidean"``: Euclidean distances, eq. 9 over all ordered pairs ``(j, k)``: twice the above,
  so Intra is between ``(n-1)/n`` and ``2 (n-1)/n`` times Variance, never below it for large
  classes.
* ``"squared"``: squared distances, ordered pairs: the exact identity Intra = 2 Variance, eq. 13
  then the ratio of squared centre distance to summed variances.

Embeddings are L2-normalised first (a no-op for normalised input); the classes are those present
in ``labels``; centres are means of the normalised embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEFAULT_READING", "READINGS", "class_variances", "improved_uniformity",
           "inter_class_uniformity", "intra_class_alignment"]

READINGS = ("euclidean-unordered", "euclidean", "squared")
DEFAULT_READING = "euclidean-unordered"


def _squared(reading: str) -> bool:
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; expected one of {', '.join(READINGS)}")
    return reading == "squared"


def _normalised_by_class(embeddings: Tensor, labels: Tensor):
    """Normalised embeddings, class index per sample (0..K-1 over present classes), counts."""
    embeddings = F.normalize(torch.as_tensor(embeddings), dim=1)
    labels = torch.as_tensor(labels).to(embeddings.device)
    _, class_index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return embeddings, class_index, counts


def _class_centres(embeddings: Tensor, class_index: Tensor, counts: Tensor) -> Tensor:
    sums = torch.zeros(counts.numel(), embeddings.shape[1], dtype=embeddings.dtype,
                       device=embeddings.device)
    return sums.index_add_(0, class_index, embeddings) / counts.unsqueeze(1).to(embeddings.dtype)


def _distance(difference_norm: Tensor, squared: bool) -> Tensor:
    return difference_norm.square() if squared else difference_norm


def _variances(embeddings: Tensor, class_index: Tensor, counts: Tensor, centres: Tensor,
               squared: bool) -> Tensor:
    deviation = _distance(torch.linalg.vector_norm(embeddings - centres[class_index], dim=1),
                          squared)
    totals = torch.zeros(counts.numel(), dtype=embeddings.dtype, device=embeddings.device)
    return totals.index_add_(0, class_index, deviation) / counts.to(embeddings.dtype)


def _centre_distances(embeddings: Tensor, labels: Tensor, squared: bool):
    embeddings, class_index, counts = _normalised_by_class(embeddings, labels)
    if counts.numel() < 2:
        raise ValueError("inter-class figures need at least two classes")
    centres = _class_centres(embeddings, class_index, counts)
    distances = _distance(torch.cdist(centres, centres,
                                      compute_mode="donot_use_mm_for_euclid_dist"), squared)
    off_diagonal = ~torch.eye(counts.numel(), dtype=torch.bool, device=embeddings.device)
    return distances, off_diagonal, _variances(embeddings, class_index, counts, centres, squared)


def class_variances(embeddings: Tensor, labels: Tensor,
                    reading: str = DEFAULT_READING) -> Tensor:
    """Per-class variance around the class centre (CoGloAT eq. 11):
    ``var_i = 1/|F_i| sum_{v in F_i} d(v, c_i)``, ``d`` the Euclidean distance (both Euclidean
    readings) or its square (``"squared"``). Its mean is the paper's eq. 10.

    Args:
        embeddings: ``[N, D]``; labels: ``[N]``.
        reading: one of :data:`READINGS` (see the module's note).

    Returns:
        ``[K]`` variances of the classes present in ``labels``, in ascending label order.
    """
    squared = _squared(reading)
    embeddings, class_index, counts = _normalised_by_class(embeddings, labels)
    centres = _class_centres(embeddings, class_index, counts)
    return _variances(embeddings, class_index, counts, centres, squared)


def intra_class_alignment(embeddings: Tensor, labels: Tensor,
                          reading: str = DEFAULT_READING) -> Tensor:
    """Intra-class alignment (CoGloAT eq. 9, after TSC):
    ``1/K sum_i 1/|F_i|^2 sum_{pairs of F_i} d(v_j, v_k)``. Lower is tighter.

    ``"euclidean-unordered"``: each unordered pair once, ``d`` Euclidean; ``"euclidean"``: all
    ordered pairs (``j = k`` included, at distance 0), ``d`` Euclidean (twice the former);
    ``"squared"``: all ordered pairs, ``d`` squared, computed in O(N) through the exact identity
    ``1/|F|^2 sum_{j,k} ||v_j - v_k||^2 = 2 var``. The Euclidean readings compute each class's
    pairwise distances (O(|F_i|^2) per class).

    Returns:
        0-dim tensor.
    """
    if _squared(reading):
        return 2.0 * class_variances(embeddings, labels, reading="squared").mean()
    embeddings, class_index, counts = _normalised_by_class(embeddings, labels)
    grouped = embeddings[torch.argsort(class_index, stable=True)]
    per_class = torch.stack([
        torch.pdist(members).sum() / members.shape[0] ** 2 if members.shape[0] > 1
        else members.new_zeros(())
        for members in torch.split(grouped, counts.tolist())
    ])
    pairs_counted = 1.0 if reading == "euclidean-unordered" else 2.0
    return pairs_counted * per_class.mean()


def inter_class_uniformity(embeddings: Tensor, labels: Tensor,
                           reading: str = DEFAULT_READING) -> Tensor:
    """Inter-class uniformity (CoGloAT eq. 12, after TSC):
    ``1/(K(K-1)) sum_{i != j} d(c_i, c_j)``, ``c_i`` the mean embedding of class ``i``, ``d``
    Euclidean or squared per ``reading``. Higher is more separable.

    Returns:
        0-dim tensor.
    """
    distances, off_diagonal, _ = _centre_distances(embeddings, labels, _squared(reading))
    num_classes = distances.shape[0]
    return distances[off_diagonal].sum() / (num_classes * (num_classes - 1))


def improved_uniformity(embeddings: Tensor, labels: Tensor,
                        reading: str = DEFAULT_READING) -> Tensor:
    """CoGloAT's improved inter-class uniformity (eq. 13):
    ``2/(K(K-1)) sum_{i != j} d(c_i, c_j) / |var_i + var_j|`` with ``var`` from eq. 11, ``d``
    Euclidean or squared per ``reading``.

    The sum runs over ordered pairs, as written in the paper. A pair of classes that both
    collapsed to single points has a zero denominator and yields ``inf``.

    Returns:
        0-dim tensor.
    """
    distances, off_diagonal, variances = _centre_distances(embeddings, labels, _squared(reading))
    num_classes = distances.shape[0]
    pair_variance = (variances.unsqueeze(0) + variances.unsqueeze(1)).abs()
    ratios = distances[off_diagonal] / pair_variance[off_diagonal]
    return 2.0 * ratios.sum() / (num_classes * (num_classes - 1))
