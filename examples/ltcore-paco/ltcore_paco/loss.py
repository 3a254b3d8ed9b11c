"""The PaCo loss (Parametric Contrastive Learning, Cui et al., ICCV 2021, eq. 6 and its code)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ltcore.losses import compute_dtype, full_precision, masked_logsumexp

__all__ = ["PRIOR_EPSILON", "paco_loss"]

PRIOR_EPSILON = 1e-9
"""Added to the class prior before its log, as the reference's ``log(weight + 1e-9)``."""


def paco_loss(
    anchors: Tensor,
    labels: Tensor,
    centre_logits: Tensor,
    samples: Tensor,
    sample_labels: Tensor,
    *,
    alpha: float,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float | Tensor,
    centre_temperature: float = 1.0,
    class_prior: Tensor | None = None,
    sample_valid: Tensor | None = None,
    anchors_in_samples: bool = True,
    logit_bias: Tensor | None = None,
    centre_bias: Tensor | None = None,
) -> Tensor:
    """Parametric contrastive loss of ``N`` anchors against samples and ``C`` learnable centres.

    Notation: anchor ``i`` has the normalised embedding ``z_i`` (``anchors``) and label ``y``;
    the contrast samples ``v_k`` (``samples``: in PaCo the queries, the momentum keys and the
    queue) have labels ``y_k``; the parametric class centres ``c_j`` are the classifier, and
    ``u_ij`` (``centre_logits``) is the classifier's logit of class ``j`` for anchor ``i``.
    ``A(i)`` is every valid sample except the anchor itself, ``P(i) = {k in A(i): y_k = y}``.

    * centre logits ``a_ij = (u_ij + log(pi_j + 1e-9)) / tau_c`` (+ ``centre_bias``), the
      ``log pi_j`` term only with ``class_prior``;
    * sample logits ``s_ik = z_i . v_k / tau`` (+ ``logit_bias``);
    * ``D_i = sum_j exp(a_ij) + gamma * sum_{k in A(i)} exp(s_ik)``;
    * ``L_i = -(beta (a_iy - log D_i) + alpha sum_{p in P(i)} (s_ip - log D_i))
      / (beta + alpha |P(i)|)``, and ``L`` is the mean of ``L_i`` over the anchors whose weight
      ``beta + alpha |P(i)|`` is positive (all of them when ``beta > 0``; 0 if none).

    This is the paper's eq. 6, ``-sum_{z+ in P(i) + {c_y}} w(z+) log(exp(z+ . T(x_i)) / D_i)``
    with ``w = alpha`` on samples and ``beta`` on the centre, normalised by the total weight as
    the reference ``PaCoLoss`` does (``mean_log_prob_pos = (mask * log_prob).sum(1) /
    mask.sum(1)``). Which reference behaviour each option reproduces:

    * ``alpha``, ``beta``: the weights of the positive mask (``one_hot * beta``, ``mask *
      alpha``); ``gamma``: the weight of the sample terms in the denominator (``gamma *
      logits_mask``; not in the paper, 1 in every published recipe).
    * ``temperature``: ``--moco-t``; ``centre_temperature``: ``supt``, dividing the centre
      logits after the log prior is added (1 in every recipe).
    * ``class_prior``: the long-tailed rebalancing, ``sup_logits + log(weight + 1e-9)`` with
      ``weight`` the training-set class frequencies (``cal_weight_for_classes``); evaluation
      then uses the raw classifier logits.
    * ``anchors_in_samples``: rows ``0..N-1`` of ``samples`` are the anchors themselves, and
      anchor ``i``'s own column is left out of ``P(i)`` and ``D_i`` (the reference's
      ``logits_mask``: the features are ``cat(q, k, queue)`` and the anchors are ``q``).
    * ``sample_valid``: columns left out entirely; used for queue slots never written (the
      reference fills its queue with random vectors and labels instead).
    * ``logit_bias`` / ``centre_bias``: not in the reference; the rebalancing hook's bias for
      the sample and centre columns (RCL's ``log n_j``), added to the final logits.

    The reference's ``temperature / base_temperature`` factor is 1 in every recipe and is not
    reproduced, nor its ``1e-12`` inside the denominator's log.

    Args:
        anchors: ``[N, D]`` anchor embeddings, normally L2-normalised.
        labels: ``[N]`` int64 labels in ``[0, C)``.
        centre_logits: ``[N, C]`` classifier logits of the anchors.
        samples: ``[M, D]`` contrast samples, normally L2-normalised.
        sample_labels: ``[M]`` int64 labels of the samples.
        alpha: weight of each sample positive, ``>= 0``.
        beta: weight of the centre positive ``c_y``, ``>= 0``.
        gamma: weight of the sample terms in the denominator, ``>= 0``.
        temperature: ``tau > 0`` of the sample logits.
        centre_temperature: ``tau_c > 0`` of the centre logits.
        class_prior: optional ``[C]`` class frequencies ``pi``.
        sample_valid: optional ``[M]`` bool, False for columns to ignore.
        anchors_in_samples: the first ``N`` samples are the anchors (``M >= N``).
        logit_bias: optional, broadcastable to ``[N, M]``, added to the sample logits.
        centre_bias: optional, broadcastable to ``[N, C]``, added to the centre logits.

    Returns:
        Scalar loss in the compute dtype (at least float32).
    """
    if min(alpha, beta, gamma) < 0:
        raise ValueError(f"alpha, beta and gamma must be >= 0, got {alpha}, {beta}, {gamma}")
    num_anchors, num_samples = anchors.shape[0], samples.shape[0]
    if anchors_in_samples and num_samples < num_anchors:
        raise ValueError(f"anchors_in_samples: {num_samples} samples cannot start with the "
                         f"{num_anchors} anchors")
    with full_precision(anchors.device):
        dtype = compute_dtype(anchors.dtype, samples.dtype, centre_logits.dtype)
        sample_logits = anchors.to(dtype) @ samples.to(dtype).T / temperature
        if logit_bias is not None:
            sample_logits = sample_logits + logit_bias.to(dtype)
        centre = centre_logits.to(dtype)
        if class_prior is not None:
            centre = centre + torch.log(class_prior.to(dtype) + PRIOR_EPSILON)
        centre = centre / centre_temperature
        if centre_bias is not None:
            centre = centre + centre_bias.to(dtype)

        columns = torch.ones(num_anchors, num_samples, dtype=torch.bool, device=anchors.device)
        if sample_valid is not None:
            columns = columns & sample_valid.to(torch.bool)[None, :]
        if anchors_in_samples:
            rows = torch.arange(num_anchors, device=anchors.device)
            columns[rows, rows] = False
        positives = (labels[:, None] == sample_labels[None, :]) & columns

        if gamma > 0:
            denominator_terms = torch.cat([centre, sample_logits + math.log(gamma)], dim=1)
            denominator_mask = torch.cat([torch.ones_like(centre, dtype=torch.bool), columns],
                                         dim=1)
            log_denominator = masked_logsumexp(denominator_terms, denominator_mask)
        else:
            log_denominator = torch.logsumexp(centre, dim=1)

        centre_log_prob = centre.gather(1, labels[:, None]).squeeze(1) - log_denominator
        sample_log_prob = sample_logits - log_denominator[:, None]
        positive_sum = torch.where(positives, sample_log_prob,
                                   torch.zeros_like(sample_log_prob)).sum(dim=1)
        weighted = beta * centre_log_prob + alpha * positive_sum
        weight = beta + alpha * positives.sum(dim=1).to(dtype)
        counted = weight > 0
        per_anchor = -weighted / torch.where(counted, weight, torch.ones_like(weight))
        per_anchor = torch.where(counted, per_anchor, torch.zeros_like(per_anchor))
        return per_anchor.sum() / counted.sum().clamp(min=1).to(dtype)
