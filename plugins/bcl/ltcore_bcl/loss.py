"""Balanced contrastive loss (BCL, Zhu et al. 2022, eq. 9) and its ablation forms."""

from __future__ import annotations

import torch
from torch import Tensor

from ltcore.losses import compute_dtype, full_precision, masked_logsumexp, positive_mean_loss

__all__ = ["AVERAGING_FORMS", "balanced_contrastive_loss"]

AVERAGING_FORMS = ("L1", "L2", "L3")
"""The class-averaging forms of the BCL paper, sec. 3.3 (eqs. 6-8)."""


def balanced_contrastive_loss(
    embeddings: Tensor,
    labels: Tensor,
    prototypes: Tensor,
    temperature: float | Tensor,
    *,
    logit_bias: Tensor | None = None,
    prototype_bias: Tensor | None = None,
    averaging: str = "L1",
    class_complement: bool = True,
    class_averaging: bool = True,
) -> Tensor:
    """Balanced contrastive loss, BCL paper eq. 9, with its ablations.

    Anchors are the ``N`` rows of ``embeddings`` (both views, ``N = 2B``); prototypes are
    never anchors. The contrast set ``A`` of anchor ``i`` is every other row plus, with
    ``class_complement``, the ``C`` prototypes. Logits are ``s_ik = z_i . a_k / temperature``
    plus ``logit_bias`` on sample columns and ``prototype_bias`` on prototype columns.
    Positives ``P_i`` are the entries of ``A`` with the anchor's class ``y`` (the other view,
    the other rows of ``y`` and the prototype ``c_y``), weighted equally;
    ``A_j`` is the part of ``A`` of class ``j`` (the anchor itself excluded, so ``|A_y|`` is
    one less than the class's count: the paper's "minus one when the positive class is
    averaged"; with two views and prototypes ``|A_j| = 2 n_j(batch) + 1 - [j = y]``).

    ``L = mean_{i: |P_i|>0} -(1/|P_i|) sum_{p in P_i} log(exp(s_ip) / D_i)`` where, by form:

    * ``L1`` (eq. 6/9, default): ``D_i = sum_{j: |A_j|>0} (1/|A_j|) sum_{k in A_j} exp(s_ik)``:
      average of exps per class; positives stay in ``D_i``, the numerator is not divided.
    * ``L2`` (eq. 7): ``D_i = sum_{j: |A_j|>0} exp((1/|A_j|) sum_{k in A_j} s_ik)``: average
      of logits inside the exp.
    * ``L3`` (eq. 8): ``-log(exp(s_{i,c_y}) / sum_j exp(s_{i,c_j}))``: softmax over the
      prototypes only (needs ``class_complement``; ``logit_bias`` has no column to act on).
    * ``class_averaging=False``: ``D_i = sum_{k in A} exp(s_ik)``, SupCon's denominator over
      the contrast set (with prototypes if ``class_complement``).

    With ``class_complement`` every anchor has positives (at least ``c_y``), so the mean is
    over all ``N`` anchors as in the reference code; without it an anchor alone in its class
    has none and is left out of the mean, as in SupCon.

    Args:
        embeddings: ``[N, D]`` contrastive rows (view-major), normally L2-normalised.
        labels: ``[N]`` int64 labels in ``[0, C)``.
        prototypes: ``[C, D]`` class prototypes, normally L2-normalised; ``C`` fixes the
            number of classes even when ``class_complement`` is off.
        temperature: ``tau > 0``.
        logit_bias: optional, broadcastable to ``[N, N]``, added to sample-column logits.
        prototype_bias: optional, broadcastable to ``[N, C]``, added to prototype-column
            logits. RCL (eq. 5) passes ``log n_j`` for both, which multiplies each
            class-averaged term by ``n_j``.
        averaging: ``"L1"``, ``"L2"`` or ``"L3"``; only with ``class_averaging``.
        class_complement: add the prototypes to the contrast set and the positives.
        class_averaging: divide each class's terms by its entry count (``averaging`` form).

    Returns:
        Scalar loss in the compute dtype (at least float32).
    """
    if averaging not in AVERAGING_FORMS:
        raise ValueError(f"averaging must be one of {AVERAGING_FORMS}, got {averaging!r}")
    if averaging != "L1" and not class_averaging:
        raise ValueError(f"averaging={averaging!r} is a class-averaging form; it needs "
                         "class_averaging=True")
    if averaging == "L3" and not class_complement:
        raise ValueError("averaging='L3' contrasts against the prototypes; it needs "
                         "class_complement=True")

    num_rows = embeddings.shape[0]
    num_classes = prototypes.shape[0]
    device = embeddings.device
    with full_precision(device):
        dtype = compute_dtype(embeddings.dtype, prototypes.dtype)
        features = embeddings.to(dtype)
        class_ids = torch.arange(num_classes, device=device)

        if class_complement:
            prototype_logits = features @ prototypes.to(dtype).T / temperature
            if prototype_bias is not None:
                prototype_logits = prototype_logits + prototype_bias.to(dtype)
            if averaging == "L3":
                log_prob = prototype_logits - torch.logsumexp(prototype_logits, dim=1, keepdim=True)
                return positive_mean_loss(log_prob, labels[:, None] == class_ids[None, :])

        logits = features @ features.T / temperature
        if logit_bias is not None:
            logits = logits + logit_bias.to(dtype)
        contrast_labels = labels
        if class_complement:
            logits = torch.cat([logits, prototype_logits], dim=1)
            contrast_labels = torch.cat([labels, class_ids])

        contrast_mask = ~torch.eye(num_rows, logits.shape[1], dtype=torch.bool, device=device)
        same_class = labels[:, None] == contrast_labels[None, :]
        positive_mask = same_class & contrast_mask

        if not class_averaging:
            log_denominator = masked_logsumexp(logits, contrast_mask, keepdim=True)
        else:
            # index_add_ counts without a host synchronisation (bincount sizes from the data)
            counts = torch.zeros(num_classes, dtype=dtype, device=device).index_add_(
                0, contrast_labels, torch.ones_like(contrast_labels, dtype=dtype))
            if averaging == "L1":
                entry_counts = counts[contrast_labels][None, :] - same_class.to(dtype)
                entry_class_sizes = entry_counts.clamp(min=1)
                log_denominator = masked_logsumexp(
                    logits - torch.log(entry_class_sizes), contrast_mask, keepdim=True
                )
            else:
                own_class = (labels[:, None] == class_ids[None, :]).to(dtype)
                class_sizes = counts[None, :] - own_class
                class_logit_sums = torch.zeros(
                    num_rows, num_classes, dtype=dtype, device=device).index_add(
                    1, contrast_labels, logits.masked_fill(~contrast_mask, 0.0))
                class_mean_logits = class_logit_sums / class_sizes.clamp(min=1)
                log_denominator = masked_logsumexp(class_mean_logits, class_sizes > 0, keepdim=True)

        return positive_mean_loss(logits - log_denominator, positive_mask)
