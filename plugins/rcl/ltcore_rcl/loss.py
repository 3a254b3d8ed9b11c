"""Rebalanced contrastive learning (RCL, eq. 4/5): the balanced-softmax prior inside a contrastive softmax."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ltcore.losses import supcon_loss

__all__ = ["class_prior_bias", "rebalanced_supcon_loss"]


def class_prior_bias(contrast_labels: Tensor, class_counts: Tensor | Sequence[int]) -> Tensor:
    """``log n_{y_k}`` for each contrast entry ``k``: the ``[M]`` row RCL adds to contrastive logits.

    Adding it to the logits of every anchor (it broadcasts as ``[1, M]`` over ``[N, M]``)
    multiplies each contrast term of class ``j``, positives included, by the training-set
    count ``n_j`` (RCL eq. 4/5). Pass the rows' labels for sample columns and
    ``torch.arange(C)`` for prototype columns (eq. 5 scales the whole class block,
    prototype ``c_j`` included).

    Args:
        contrast_labels: ``[M]`` int64 class of each contrast entry.
        class_counts: ``[C]`` training-set count per class (all > 0). Floating counts keep
            their dtype; integer counts give float32.
    """
    counts = torch.as_tensor(class_counts, device=contrast_labels.device)
    if not counts.is_floating_point():
        counts = counts.to(torch.float32)
    return torch.log(counts)[contrast_labels]


def rebalanced_supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    class_counts: Tensor | Sequence[int],
    temperature: float | Tensor,
) -> Tensor:
    """SupCon + RCL, eq. 4 of the RCL paper.

    ``L = mean_{i: |P_i|>0} -(1/|P_i|) sum_{p in P_i} log(n_y exp(s_ip) / sum_{k != i} n_{y_k} exp(s_ik))``
    with ``s_ik = z_i . z_k / temperature``, ``P_i`` the other rows of the anchor's class
    ``y`` and ``n`` the training-set class counts; equivalently SupCon with margins
    ``log(n_{y_k} / n_y)`` (eq. 7). The anchor is excluded from its own denominator as in
    SupCon, and the sum over positives is averaged by their number (eq. 4 writes
    ``1/|B_y|``, the positive count in its BCL origin, eq. 3, where ``c_y`` is one of them).
    Rows are used as given, so RCL's feature compression is applied by the caller.

    Args:
        embeddings: ``[N, D]`` rows, view-major.
        labels: ``[N]`` int64 labels in ``[0, C)``.
        class_counts: ``[C]`` training-set count per class.
        temperature: ``tau > 0``.
    """
    prior = class_prior_bias(labels, class_counts)
    return supcon_loss(embeddings, labels, temperature, logit_bias=prior[None, :])
