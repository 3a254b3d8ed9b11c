"""Supervised contrastive losses: SupCon (Khosla et al. 2020) and KCL (Kang et al. 2021).

Conventions shared by every contrastive loss in ltcore and its plugins:

* ``embeddings`` is ``[N, D]``: the contrastive views of a batch stacked view-major
  (rows ``0..B-1`` are view 1 of images ``0..B-1``, rows ``B..2B-1`` view 2, ...), so
  ``N = n_views * B``. Rows are used as given: L2-normalise them beforehand (a caller may
  also rescale them on purpose, e.g. RCL's feature compression).
* ``labels`` is ``[N]`` (int64), one label per row.
* Logits are ``s_ij = z_i . z_j / temperature``; an optional ``logit_bias`` is added to
  them before the softmax, in numerator and denominator alike. It is the hook through
  which rebalancing methods (RCL: ``log n_j``) adjust a contrastive loss.
* Every row is an anchor. Anchors without a positive contribute nothing and are left out
  of the mean; the loss is the mean over anchors that have at least one positive
  (zero, with a graph, if none has).
* The computation runs in at least float32 (bfloat16/float16 inputs are promoted, float64
  is kept) with autocast disabled, since logits divided by a small temperature lose too
  much precision in half types. The returned scalar has that compute dtype.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = [
    "compute_dtype",
    "full_precision",
    "kcl_loss",
    "kcl_positive_mask",
    "masked_logsumexp",
    "positive_mean_loss",
    "supcon_loss",
]


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype a contrastive loss computes in: the promotion of ``dtypes`` and float32."""
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def masked_logsumexp(values: Tensor, mask: Tensor, *, dim: int = -1, keepdim: bool = False) -> Tensor:
    """``log sum_{k: mask_k} exp(values_k)`` along ``dim``, stable (shifted by the detached max).

    ``values`` and ``mask`` (bool) broadcast to a common shape. A slice with no selected
    entry gives ``-inf`` with zero gradient instead of NaN.
    """
    masked = values.masked_fill(~mask, float("-inf"))
    shift = masked.detach().amax(dim=dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.exp(masked - shift).sum(dim=dim, keepdim=True)
    nonempty = total > 0
    log_total = torch.log(torch.where(nonempty, total, torch.ones_like(total))) + shift
    result = torch.where(nonempty, log_total, torch.full_like(log_total, float("-inf")))
    return result if keepdim else result.squeeze(dim)


def positive_mean_loss(log_prob: Tensor, positive_mask: Tensor) -> Tensor:
    """Mean over anchors with positives of ``-(1/|P_i|) sum_{p in P_i} log_prob[i, p]``.

    ``log_prob`` is ``[N, M]`` (anchor x contrast entry), ``positive_mask`` a bool ``[N, M]``
    with ``P_i`` the positives of anchor ``i``. Anchors with ``|P_i| = 0`` contribute 0 and
    do not count in the mean; if no anchor has a positive the result is 0.
    """
    positives_per_anchor = positive_mask.sum(dim=1)
    positive_log_prob = torch.where(positive_mask, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor_loss = -positive_log_prob / positives_per_anchor.clamp(min=1).to(log_prob.dtype)
    anchors_with_positives = (positives_per_anchor > 0).sum().clamp(min=1).to(log_prob.dtype)
    return per_anchor_loss.sum() / anchors_with_positives


def _contrastive_loss_over_other_rows(
    embeddings: Tensor, positive_mask: Tensor, temperature: float | Tensor, logit_bias: Tensor | None
) -> Tensor:
    """``-mean_i mean_{p in P_i} log(exp(s_ip) / sum_{a != i} exp(s_ia))`` with ``s = z z^T / t + bias``."""
    with full_precision(embeddings.device):
        features = embeddings.to(compute_dtype(embeddings.dtype))
        logits = features @ features.T / temperature
        if logit_bias is not None:
            logits = logits + logit_bias.to(logits.dtype)
        num_rows = features.shape[0]
        other_rows = ~torch.eye(num_rows, dtype=torch.bool, device=features.device)
        log_prob = logits - masked_logsumexp(logits, other_rows, keepdim=True)
        return positive_mean_loss(log_prob, positive_mask & other_rows)


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    temperature: float | Tensor,
    *,
    logit_bias: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss, the L_out form of Khosla et al. (2020), eq. 2.

    ``L = mean_{i: |P_i|>0} -(1/|P_i|) sum_{p in P_i} log(exp(s_ip) / sum_{a != i} exp(s_ia))``
    with ``s_ij = z_i . z_j / temperature (+ logit_bias_ij)`` and
    ``P_i = {p != i : y_p = y_i}`` (every other row of the anchor's class, its other
    views included).

    Args:
        embeddings: ``[N, D]`` rows, normally L2-normalised, views stacked view-major.
        labels: ``[N]`` int64 label of each row.
        temperature: ``tau > 0`` (float or 0-d tensor, e.g. a learnable one).
        logit_bias: optional tensor broadcastable to ``[N, N]`` added to every logit
            (positives and denominator alike) before the softmax.

    Returns:
        Scalar loss; anchors without positives contribute 0 and are excluded from the mean.
    """
    positive_mask = labels[:, None] == labels[None, :]
    return _contrastive_loss_over_other_rows(embeddings, positive_mask, temperature, logit_bias)


def kcl_positive_mask(
    labels: Tensor,
    k: int,
    *,
    n_views: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """KCL's positive set per anchor as a bool ``[N, N]`` mask.

    Rows are view-major, so row ``r`` shows image ``r mod (N / n_views)``. Anchor ``i``'s
    positives are the other views of its own image (always) plus ``min(k, m_i)`` entries
    drawn uniformly without replacement from the ``m_i`` rows of its class that show other
    images (any view).

    Args:
        labels: ``[N]`` int64 label of each row.
        k: number of extra same-class positives per anchor (``k >= 0``).
        n_views: views per image; ``N`` must be a multiple of it.
        generator: optional ``torch.Generator`` on ``labels.device`` for the draw.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    num_rows = labels.shape[0]
    if n_views < 1 or num_rows % n_views:
        raise ValueError(f"{num_rows} rows cannot be {n_views} views of the same images")
    image_of_row = torch.arange(num_rows, device=labels.device) % (num_rows // n_views)
    same_image = image_of_row[:, None] == image_of_row[None, :]
    self_mask = torch.eye(num_rows, dtype=torch.bool, device=labels.device)
    candidates = (labels[:, None] == labels[None, :]) & ~same_image
    drawn = torch.zeros_like(candidates)
    draws = min(k, num_rows)
    if draws > 0:
        keys = torch.rand((num_rows, num_rows), generator=generator, device=labels.device)
        keys = keys.masked_fill(~candidates, -1.0)
        chosen = keys.topk(draws, dim=1).indices
        drawn = drawn.scatter(1, chosen, True) & candidates
    return (same_image & ~self_mask) | drawn


def kcl_loss(
    embeddings: Tensor,
    labels: Tensor,
    temperature: float | Tensor,
    k: int,
    *,
    n_views: int = 2,
    generator: torch.Generator | None = None,
    logit_bias: Tensor | None = None,
) -> Tensor:
    """K-positive contrastive loss (KCL, Kang et al. 2021) on in-batch positives.

    ``L = mean_i -(1/|P_i|) sum_{p in P_i} log(exp(s_ip) / sum_{a != i} exp(s_ia))`` with
    ``s_ij = z_i . z_j / temperature (+ logit_bias_ij)``: SupCon's denominator over all
    other rows, but ``P_i`` = the anchor's other view(s) plus ``k`` same-class rows of other
    images drawn at random (fewer if the batch has fewer; see :func:`kcl_positive_mask`).
    With two views this is KCL's ``1/(k+1)`` average over the augmented view and ``k``
    positives; KCL draws them from a MoCo queue, here they come from the batch (a memory
    bank can stack its keys into ``embeddings``).

    Args:
        embeddings: ``[N, D]`` rows, view-major, ``N = n_views * B``.
        labels: ``[N]`` int64 label of each row.
        temperature: ``tau > 0``.
        k: extra positives per anchor besides its own other views.
        n_views: views per image (default 2, KCL's two augmentations).
        generator: optional ``torch.Generator`` on the embeddings' device for the draw.
        logit_bias: optional tensor broadcastable to ``[N, N]`` added to every logit.

    Returns:
        Scalar loss, mean over anchors that have positives.
    """
    positive_mask = kcl_positive_mask(labels, k, n_views=n_views, generator=generator)
    return _contrastive_loss_over_other_rows(embeddings, positive_mask, temperature, logit_bias)
