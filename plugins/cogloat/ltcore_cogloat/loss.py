"""CoGloAT and ProCo losses.

* ``adaptive_temperatures``: per-class temperature of eq. 8.
* ``global_contrastive_loss``: the k-global contrastive loss of eq. 1 on a MoCo queue, with the
  three loss types compared in Table 6.
* ``prototype_loss`` and ``class_prototypes``: ProCo's symmetric prototype loss and its prototypes.

Embeddings are expected L2-normalised; no function here normalises its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GLOBAL_LOSS_VARIANTS = ("unsupervised+kglobal", "supervised+kglobal", "kcl+kglobal")


def adaptive_temperatures(class_counts: Tensor, gamma: float) -> Tensor:
    """Per-class temperatures of eq. 8: ``tau_c = gamma + (1 - gamma) * n_c / n_max``.

    ``class_counts``: ``[C]`` training-set counts ``n_c``. ``gamma``: the minimum temperature, in
    (0, 1]; the largest class gets ``tau = 1`` and the temperature shrinks linearly with class size.
    Returns ``[C]`` (the default float dtype for integer counts, else the counts' dtype). An
    anchor of class ``y`` uses ``tau[y]``.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    counts = class_counts if class_counts.is_floating_point() else class_counts.to(torch.get_default_dtype())
    return gamma + (1.0 - gamma) * counts / counts.max()


def global_contrastive_loss(
    queries: Tensor,
    keys: Tensor,
    positive_keys: Tensor,
    negatives: Tensor,
    labels: Tensor,
    negative_labels: Tensor,
    temperature: float | Tensor,
    *,
    variant: str = "unsupervised+kglobal",
    negatives_valid: Tensor | None = None,
    include_batch_keys: bool = True,
    kcl_positives: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """k-global contrastive loss (eq. 1) against a memory bank, per Table 6 loss type.

    Shapes: ``queries`` q_i ``[B, D]`` (query encoder, first view), ``keys`` k_i ``[B, D]`` (key
    encoder, second view), ``positive_keys`` ``[B, k, D]`` (key-encoder embeddings of the k-global
    positives P_i, see ``GlobalPositiveSampler``), ``negatives`` ``[K, D]`` (the MoCo queue) with
    ``negative_labels [K]`` and optional ``negatives_valid [K]`` bool (never-filled slots False),
    ``labels [B]``, ``temperature`` a float or ``[B]`` (per anchor: adaptive temperature of the
    anchor's class). Keys and queue entries are used as given (the caller detaches them).

    With ``s_ij = q_i . z_j / tau_i``, each positive ``j`` of anchor ``i`` contributes
    ``l(i, j) = -log( e^{s_ij} / (e^{s_ij} + sum_{v in V_i} e^{s_iv}) )`` and

        ``L = 1/B sum_i 1/|J_i| sum_{j in J_i} l(i, j)``.

    The bank ``M_i`` is the valid queue entries plus, when ``include_batch_keys`` (default), the
    other anchors' keys ``k_m, m != i``: eq. 1 defines V_i as "the current batch excluding v_i"
    and MoCo v2 adds its queue; ``False`` gives the queue-only MoCo v2 bank. Per ``variant``:

    * ``"unsupervised+kglobal"`` (default, best in Table 6): ``J_i = {k_i} ∪ P_i``, ``V_i = M_i``.
      This is eq. 1 exactly (``|J_i| = k + 1``): the ``k_i`` term is the unsupervised MoCo
      instance loss, the ``P_i`` terms the k-global term. Same-class bank entries stay negatives
      (the "false negatives" that adaptive temperature compensates for, sec. 3.3).
    * ``"supervised+kglobal"``: SupCon-style; every same-label bank entry is also a positive:
      ``J_i = {k_i} ∪ P_i ∪ {b in M_i : y_b = y_i}``, ``V_i = {b in M_i : y_b != y_i}``.
    * ``"kcl+kglobal"``: KCL-style; ``J_i = {k_i} ∪ P_i ∪ K_i`` where ``K_i`` holds
      ``min(kcl_positives, #same-label entries)`` same-label bank entries drawn uniformly without
      replacement (``sample_bank_positives`` on the ``[B, M]`` bank mask, columns ordered as
      batch keys then queue slots, with ``generator`` on the queries' device),
      ``V_i = M_i minus K_i``.
      ``kcl_positives`` defaults to ``k``, the number of k-global positives, so that the in-bank
      and global positive sets are the same size (the paper gives no separate value).

    Rows with no negatives contribute ``l = 0`` per positive (and zero gradients).
    """
    if variant not in GLOBAL_LOSS_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {GLOBAL_LOSS_VARIANTS}")
    batch, num_global = positive_keys.shape[:2]
    temperatures = _per_anchor_column(temperature, batch)

    own_and_global = torch.cat([keys.unsqueeze(1), positive_keys], dim=1)
    target_logits = torch.einsum("bd,bjd->bj", queries, own_and_global) / temperatures

    queue_valid = (
        torch.ones(negatives.shape[0], dtype=torch.bool, device=negatives.device)
        if negatives_valid is None
        else negatives_valid
    )
    if include_batch_keys:
        bank = torch.cat([keys, negatives], dim=0)
        bank_labels = torch.cat([labels, negative_labels], dim=0)
        other_anchor = ~torch.eye(batch, dtype=torch.bool, device=queries.device)
        in_bank = torch.cat([other_anchor, queue_valid.unsqueeze(0).expand(batch, -1)], dim=1)
    else:
        bank = negatives
        bank_labels = negative_labels
        in_bank = queue_valid.unsqueeze(0).expand(batch, -1)
    bank_logits = queries @ bank.T / temperatures

    if variant == "unsupervised+kglobal":
        bank_positive = None
        negative_mask = in_bank
    else:
        same_label = in_bank & (labels.unsqueeze(1) == bank_labels.unsqueeze(0))
        if variant == "supervised+kglobal":
            bank_positive = same_label
        else:
            count = num_global if kcl_positives is None else kcl_positives
            bank_positive = sample_bank_positives(same_label, count, generator)
        negative_mask = in_bank & ~bank_positive

    log_negatives = _masked_logsumexp(bank_logits, negative_mask).unsqueeze(1)
    loss_sum = (torch.logaddexp(target_logits, log_negatives) - target_logits).sum(dim=1)
    num_positives = torch.full_like(loss_sum, 1 + num_global)
    if bank_positive is not None:
        bank_terms = torch.logaddexp(bank_logits, log_negatives) - bank_logits
        loss_sum = loss_sum + bank_terms.masked_fill(~bank_positive, 0.0).sum(dim=1)
        num_positives = num_positives + bank_positive.sum(dim=1)
    return (loss_sum / num_positives).mean()


def sample_bank_positives(candidates: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Per row of ``candidates [B, M]`` (bool), keeps ``min(count, row's candidates)`` of them,
    a uniform subset drawn without replacement (top-``count`` of i.i.d. uniform scores).
    Returns a ``[B, M]`` bool mask."""
    chosen = torch.zeros_like(candidates)
    count = min(count, candidates.shape[1])
    if count <= 0:
        return chosen
    scores = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    top = scores.masked_fill(~candidates, -1.0).topk(count, dim=1)
    return chosen.scatter_(1, top.indices, top.values >= 0)


def prototype_loss(
    embeddings_views: Tensor,
    labels: Tensor,
    prototypes_1: Tensor,
    prototypes_2: Tensor,
    temperature: float | Tensor,
    *,
    class_mask: Tensor | None = None,
) -> Tensor:
    """Symmetric ProCo loss between two views of each sample and two prototype sets.

    ``L = -1/(4N) sum_i sum_{v in {v_i1, v_i2}} sum_{q in {1, 2}}
    log( e^{v.c_{y_i,q}/tau} / (e^{v.c_{y_i,q}/tau} + sum_{c in C_q^-} e^{v.c/tau}) )``,
    ``C_q^-`` the prototypes of set ``q`` of the other classes: a cross-entropy of the logits
    ``v . C_q^T / tau`` with target ``y_i``, for each of the four (view, set) pairs.

    ``embeddings_views [2, N, D]``, ``labels [N]``, ``prototypes_1``/``prototypes_2 [C, D]``
    (from two augmented views of the coreset, see ``class_prototypes``), ``temperature`` a float or
    ``[N]``. ``class_mask [C]`` (optional, bool): True for the classes present in the coreset; the
    prototypes of absent classes leave every ``C_q^-`` and their samples leave the average
    (``N`` then counts the samples of present classes).
    """
    prototypes = torch.stack([prototypes_1, prototypes_2])
    temperatures = _per_anchor_column(temperature, labels.shape[0])
    logits = torch.einsum("vnd,qcd->vqnc", embeddings_views, prototypes) / temperatures
    target_logits = logits.gather(-1, labels.view(1, 1, -1, 1).expand(2, 2, -1, 1)).squeeze(-1)
    if class_mask is None:
        return (torch.logsumexp(logits, dim=-1) - target_logits).mean()
    own_class = labels.unsqueeze(1) == torch.arange(prototypes.shape[1], device=labels.device)
    in_denominator = class_mask.unsqueeze(0) | own_class
    terms = torch.logsumexp(logits.masked_fill(~in_denominator, float("-inf")), dim=-1) - target_logits
    anchor_weights = class_mask[labels].to(terms.dtype)
    return (terms * anchor_weights).sum() / (4.0 * anchor_weights.sum().clamp_min(1.0))


def class_prototypes(embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class mean of ``embeddings [n, D]`` over ``labels [n]``, L2-normalised: ``[C, D]``.

    Classes without samples get a zero row (their presence mask is
    ``torch.bincount(labels, minlength=C) > 0``, to pass as ``prototype_loss``'s ``class_mask``).
    Differentiable; ProCo computes the prototypes under ``torch.no_grad()`` at epoch start.
    """
    sums = embeddings.new_zeros(num_classes, embeddings.shape[1]).index_add_(0, labels, embeddings)
    counts = embeddings.new_zeros(num_classes).index_add_(0, labels, embeddings.new_ones(labels.shape[0]))
    return F.normalize(sums / counts.clamp_min(1.0).unsqueeze(1), dim=1)


def _per_anchor_column(temperature: float | Tensor, batch: int) -> float | Tensor:
    """A float unchanged, or a ``[batch]`` / 0-d tensor as a ``[batch, 1]`` / 0-d tensor."""
    if not isinstance(temperature, Tensor) or temperature.ndim == 0:
        return temperature
    if temperature.shape != (batch,):
        raise ValueError(f"temperature must be a float or a [{batch}] tensor, got {tuple(temperature.shape)}")
    return temperature.unsqueeze(1)


def _masked_logsumexp(logits: Tensor, mask: Tensor) -> Tensor:
    """``log sum_{j: mask_ij} exp(logits_ij)`` per row ``[B]``; ``-inf`` with zero gradient for
    rows with an empty mask (every row, for an empty bank)."""
    if logits.shape[1] == 0:
        return logits.sum(dim=1) + float("-inf")
    masked = logits.masked_fill(~mask, float("-inf"))
    row_max = masked.amax(dim=1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    sums = torch.exp(masked - row_max).sum(dim=1)
    log_sums = torch.log(sums.clamp_min(torch.finfo(sums.dtype).tiny)) + row_max.squeeze(1)
    return torch.where(mask.any(dim=1), log_sums, torch.full_like(log_sums, float("-inf")))
