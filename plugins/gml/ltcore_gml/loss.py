"""Gaussian Mixture Likelihood loss (GML paper, eq. 3, 4 and 10) and its temperature loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_log_mean_exp(logits: Tensor, entry_labels: Tensor, usable: Tensor,
                       num_classes: int) -> Tensor:
    """Per-class log-mean-exp
    ``s[b, c] = log mean_{j: label_j = c, usable[b, j]} exp(logits[b, j])``.

    Computed with a per-(row, class) maximum shift, so it is stable for any temperature.
    A class with no usable entry in a row gets ``-inf`` (and no NaN in the gradient).

    Args:
        logits: [B, K] scores of every bank entry.
        entry_labels: [K] class of each entry.
        usable: [B, K] bool, which entries count for which row.
        num_classes: C.

    Returns:
        [B, C] scores.
    """
    batch = logits.shape[0]
    column_class = entry_labels.unsqueeze(0).expand(batch, -1)
    masked = torch.where(usable, logits, torch.full_like(logits, float("-inf")))
    row_class_max = torch.full((batch, num_classes), float("-inf"), dtype=logits.dtype,
                               device=logits.device)
    row_class_max = row_class_max.scatter_reduce(1, column_class, masked.detach(), reduce="amax")
    has_entry = torch.isfinite(row_class_max)
    shift = torch.where(has_entry, row_class_max, torch.zeros_like(row_class_max))
    shifted_exp = torch.exp(masked - shift.gather(1, column_class))
    sum_exp = torch.zeros_like(shift).scatter_add(1, column_class, shifted_exp)
    counts = torch.zeros_like(shift).scatter_add(1, column_class, usable.to(logits.dtype))
    one = torch.ones_like(sum_exp)
    log_mean = (torch.log(torch.where(has_entry, sum_exp, one))
                - torch.log(torch.where(has_entry, counts, one)) + shift)
    return torch.where(has_entry, log_mean, torch.full_like(log_mean, float("-inf")))


def gml_loss(
    query: Tensor,
    labels: Tensor,
    bank_features: Tensor,
    bank_labels: Tensor,
    class_prior: Tensor,
    temperature: Tensor | float,
    alpha: float = 1.0,
    *,
    bank_valid: Tensor | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """GML loss (eq. 4; eq. 10 with the logit-adjustment strength ``alpha``).

    For each query ``z_x`` and class c, ``s_c = log mean_{z in Z_c} exp(z_x . z / tau_g)``
    over the class's usable bank entries; the loss is the batch mean of the cross-entropy
    of the logits ``s_c + alpha log pi_c`` with the query's label.

    A class with no usable entry for a query is dropped from that query's softmax (logit
    ``-inf``: its likelihood is undefined, not zero-valued). A query whose own class has no
    usable entry has no defined loss and is left out of the batch mean; the mean is over
    the remaining queries (0 when none remains). With queues of length >= 1 that already
    hold the current batch, the own class always has an entry.

    Args:
        query: [B, D] L2-normalised query embeddings.
        labels: [B] query labels.
        bank_features: [K, D] L2-normalised contrast features.
        bank_labels: [K] class of each contrast feature.
        class_prior: [C] training-set class prior ``pi``.
        temperature: ``tau_g``, a float or a scalar tensor. Pass a detached tensor when
            ``tau_g`` is learned: it is trained by ``temperature_loss`` only.
        alpha: logit-adjustment strength; 1.0 is eq. 4.
        bank_valid: [K] bool, False for entries never written (all usable when None).
        exclude: [B, K] bool, entries to drop per query.

    Returns:
        Scalar loss.
    """
    return gml_loss_from_similarities(query @ bank_features.T, labels, bank_labels, class_prior,
                                      temperature, alpha, bank_valid=bank_valid, exclude=exclude)


def similarities_to_keys(query: Tensor, keys: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """``query @ normalize(keys).T`` [B, K] with the normalisation applied to the product's
    columns instead of the keys' rows, and the normalised keys [K, D].

    The same values as ``query @ F.normalize(keys).T`` up to rounding; the division of
    the K x D keys and its backward become a scaling of the B x K product (K = 16,384 queue
    entries against B = 128 queries at the ImageNet-LT size). ``keys`` are cast to float32;
    the normalised keys are for inspection, the loss does not go through them.
    """
    keys = keys.float()
    inverse_norms = keys.square().sum(dim=1).clamp_min(eps * eps).rsqrt()
    return (query @ keys.T) * inverse_norms, keys * inverse_norms.unsqueeze(1)


def gml_loss_from_similarities(
    similarities: Tensor,
    labels: Tensor,
    bank_labels: Tensor,
    class_prior: Tensor,
    temperature: Tensor | float,
    alpha: float = 1.0,
    *,
    bank_valid: Tensor | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """``gml_loss`` from the similarities ``query @ bank_features.T`` [B, K], computed once
    and shared with ``temperature_loss_from_similarities``; the other arguments as there."""
    usable = _usable_entries(similarities.shape[0], bank_labels, bank_valid, exclude)
    return _mixture_cross_entropy(similarities, labels, bank_labels, usable, class_prior,
                                  temperature, alpha)


def temperature_loss(
    query: Tensor,
    labels: Tensor,
    bank_features: Tensor,
    bank_labels: Tensor,
    bank_indices: Tensor,
    query_indices: Tensor,
    class_prior: Tensor,
    log_temperature: Tensor,
    alpha: float = 1.0,
    *,
    bank_valid: Tensor | None = None,
) -> Tensor:
    """The GML loss as a function of the temperature only, used to learn ``tau_g``.

    Same formula as ``gml_loss`` with ``tau_g = exp(log_temperature)`` (the log
    parameterisation of the reference code, which keeps ``tau_g`` positive; that parameter
    should get no weight decay), but the similarities ``z_x . z`` are detached, so only
    ``log_temperature`` receives gradient, and bank entries written by the query's own
    image (``bank_indices == query_indices``) are excluded. With those entries the optimal
    ``tau_g`` collapses towards zero (a spiky mixture centred on the query itself).

    Args:
        query: [B, D] L2-normalised query embeddings.
        labels: [B] query labels.
        bank_features: [K, D] L2-normalised contrast features.
        bank_labels: [K] class of each contrast feature.
        bank_indices: [K] dataset index of the image behind each entry.
        query_indices: [B] dataset index of each query's image.
        class_prior: [C] training-set class prior ``pi``.
        log_temperature: scalar tensor ``log tau_g`` (trainable).
        alpha: logit-adjustment strength, as in ``gml_loss``.
        bank_valid: [K] bool, False for entries never written.

    Returns:
        Scalar loss.
    """
    return temperature_loss_from_similarities(
        query @ bank_features.T, labels, bank_labels, bank_indices, query_indices, class_prior,
        log_temperature, alpha, bank_valid=bank_valid)


def temperature_loss_from_similarities(
    similarities: Tensor,
    labels: Tensor,
    bank_labels: Tensor,
    bank_indices: Tensor,
    query_indices: Tensor,
    class_prior: Tensor,
    log_temperature: Tensor,
    alpha: float = 1.0,
    *,
    bank_valid: Tensor | None = None,
) -> Tensor:
    """``temperature_loss`` from the similarities ``query @ bank_features.T`` [B, K] (detached
    here, so the same tensor can feed ``gml_loss_from_similarities``)."""
    own_image = query_indices.unsqueeze(1) == bank_indices.unsqueeze(0)
    usable = _usable_entries(similarities.shape[0], bank_labels, bank_valid, own_image)
    return _mixture_cross_entropy(similarities.detach(), labels, bank_labels, usable, class_prior,
                                  torch.exp(log_temperature), alpha)


def _mixture_cross_entropy(
    similarities: Tensor,
    labels: Tensor,
    bank_labels: Tensor,
    usable: Tensor,
    class_prior: Tensor,
    temperature: Tensor | float,
    alpha: float,
) -> Tensor:
    num_classes = class_prior.shape[0]
    scores = class_log_mean_exp(similarities / temperature, bank_labels, usable, num_classes)
    logits = scores + alpha * torch.log(class_prior).to(scores.dtype)
    has_target = torch.isfinite(scores.gather(1, labels.unsqueeze(1)).squeeze(1))
    safe_logits = torch.where(has_target.unsqueeze(1), logits, torch.zeros_like(logits))
    per_query = F.cross_entropy(safe_logits, labels, reduction="none")
    per_query = torch.where(has_target, per_query, torch.zeros_like(per_query))
    return per_query.sum() / has_target.sum().clamp_min(1).to(per_query.dtype)


def _usable_entries(batch: int, bank_labels: Tensor, bank_valid: Tensor | None,
                    exclude: Tensor | None) -> Tensor:
    usable = torch.ones(batch, bank_labels.shape[0], dtype=torch.bool, device=bank_labels.device)
    if bank_valid is not None:
        usable = usable & bank_valid.unsqueeze(0)
    if exclude is not None:
        usable = usable & ~exclude
    return usable
