"""CoGloAT's embedding-quality figures (Bach et al. 2023, sec. 4, eq. 9-13).

In the paper's text every distance reads "||.||2", which may be the Euclidean norm or its square.
The default reads all of them as squared: eq. 11 is called a variance, eq. 10-11 are presented as
an O(n) replacement for eq. 9, which holds exactly only for squared distances (Intra = 2
Variance), and eq. 13 then is the scale-free ratio of squared centre distance to summed
variances. ``squared=False`` gives the plain Euclidean reading used by TSC (Li et al. 2022),
which eq. 9 and 12 cite. Embeddings are L2-normalised first (a no-op for normalised input); the
classes are those present in ``labels``; centres are means of the normalised embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_variances", "improved_uniformity", "inter_class_uniformity",
           "intra_class_alignment"]


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
