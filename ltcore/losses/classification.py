"""Classification losses and class re-weighting schemes for long-tailed training.

Every loss takes logits ``[B, C]`` and integer targets ``[B]`` and returns a scalar.
Where a per-class ``weight`` ``[C]`` is accepted, the reduction is the weighted mean used
by :func:`torch.nn.functional.cross_entropy`: ``sum_i w_{y_i} l_i / sum_i w_{y_i}``
(the plain batch mean when ``weight`` is ``None``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "balanced_softmax_loss",
    "class_balanced_weights",
    "distillation_kl",
    "drw_weights",
    "focal_loss",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_cross_entropy",
]


def _cast_weight(weight: Tensor | None, logits: Tensor) -> Tensor | None:
    return None if weight is None else weight.to(device=logits.device, dtype=logits.dtype)


def logit_adjusted_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    class_prior: Tensor,
    tau: float,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Logit-adjusted cross-entropy (Menon et al. 2021): ``CE(f(x) + tau * log(pi), y)``.

    Args:
        logits: ``[B, C]`` raw scores ``f(x)``.
        targets: ``[B]`` integer labels.
        class_prior: ``[C]`` training-set class prior ``pi`` (positive). Any positive
            rescaling of it gives the same loss, because adding a constant to every logit
            leaves the softmax unchanged, so raw class counts work too.
        tau: adjustment strength; ``tau = 1`` is Balanced Softmax.
        weight: optional ``[C]`` per-class weight (weighted mean, see module docstring).
        label_smoothing: ``e`` in [0, 1): the targets are ``(1 - e) one_hot(y) + e / C``
            (as :func:`torch.nn.functional.cross_entropy`).

    Returns:
        Scalar loss.
    """
    adjusted = logits + tau * torch.log(class_prior.to(device=logits.device, dtype=logits.dtype))
    return F.cross_entropy(adjusted, targets, weight=_cast_weight(weight, logits),
                           label_smoothing=label_smoothing)


def balanced_softmax_loss(
    logits: Tensor,
    targets: Tensor,
    class_counts: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Balanced Softmax (Ren et al. 2020): ``-log(n_y e^{f_y} / sum_j n_j e^{f_j})``.

    Equals ``CE(f + log n, y)``. Since ``log n_j = log pi_j + log N`` and a constant shift of
    every logit cancels in the softmax, this is exactly
    :func:`logit_adjusted_cross_entropy` with ``tau = 1``.

    Args:
        logits: ``[B, C]``.
        targets: ``[B]`` integer labels.
        class_counts: ``[C]`` training-set counts ``n_j`` (positive).
        weight: optional ``[C]`` per-class weight (weighted mean).
        label_smoothing: ``e`` in [0, 1): smoothed targets, as in
            :func:`logit_adjusted_cross_entropy`.

    Returns:
        Scalar loss.
    """
    log_counts = torch.log(class_counts.to(device=logits.device, dtype=logits.dtype))
    return F.cross_entropy(logits + log_counts, targets, weight=_cast_weight(weight, logits),
                           label_smoothing=label_smoothing)


def ldam_margins(class_counts: Tensor, max_margin: float = 0.5) -> Tensor:
    """Label-distribution-aware margins (Cao et al. 2019): ``m_j = K / n_j^(1/4)``.

    ``K`` is chosen so that the largest margin (the rarest class) equals ``max_margin``,
    as in the LDAM-DRW reference code.

    Args:
        class_counts: ``[C]`` training-set counts (positive).
        max_margin: the margin of the rarest class.

    Returns:
        ``[C]`` margins in the default floating dtype.
    """
    counts = class_counts.to(torch.float64)
    inverse_fourth_root = counts.pow(-0.25)
    margins = inverse_fourth_root * (max_margin / inverse_fourth_root.max())
    return margins.to(torch.get_default_dtype())


def ldam_loss(
    logits: Tensor,
    targets: Tensor,
    margins: Tensor,
    scale: float = 30.0,
    weight: Tensor | None = None,
) -> Tensor:
    """LDAM loss (Cao et al. 2019): ``CE(s * (z - m_y e_y), y)``.

    The target's margin ``m_y`` is subtracted from the target logit *before* scaling by
    ``s``, following the LDAM-DRW reference code, whose logits come from a cosine
    (normalised-linear) classifier in ``[-1, 1]``; ``scale = 30`` is that code's value.
    Pass ``scale = 1`` for unnormalised logits.

    Args:
        logits: ``[B, C]`` logits ``z`` (cosine similarities in the reference setting).
        targets: ``[B]`` integer labels.
        margins: ``[C]`` per-class margins, e.g. from :func:`ldam_margins`.
        scale: the factor ``s`` applied after the margin.
        weight: optional ``[C]`` per-class weight (weighted mean), e.g. DRW weights.

    Returns:
        Scalar loss.
    """
    target_margin = margins.to(device=logits.device, dtype=logits.dtype)[targets]
    target_mask = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    adjusted = logits - target_mask * target_margin.unsqueeze(1)
    return F.cross_entropy(scale * adjusted, targets, weight=_cast_weight(weight, logits))


def class_balanced_weights(class_counts: Tensor, beta: float) -> Tensor:
    """Class-balanced weights from the effective number of samples (Cui et al. 2019).

    ``w_j = (1 - beta) / (1 - beta^{n_j})``, then rescaled so that ``sum_j w_j = C``.
    ``beta = 0`` gives all ones.

    Args:
        class_counts: ``[C]`` training-set counts (positive).
        beta: in ``[0, 1)``.

    Returns:
        ``[C]`` weights in the default floating dtype (computed in float64).
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    counts = class_counts.to(torch.float64)
    weights = (1.0 - beta) / (1.0 - torch.pow(beta, counts))
    weights = weights * (counts.numel() / weights.sum())
    return weights.to(torch.get_default_dtype())


def drw_weights(class_counts: Tensor, epoch: int, start_epoch: int, beta: float = 0.9999) -> Tensor:
    """Deferred re-weighting (Cao et al. 2019): ones before ``start_epoch``, then
    :func:`class_balanced_weights` with ``beta``.

    Epochs count from 0; the switch happens at the first epoch with ``epoch >= start_epoch``
    (the reference code's ``epoch // 160`` with 0-based epochs).

    Args:
        class_counts: ``[C]`` training-set counts.
        epoch: current 0-based epoch.
        start_epoch: first re-weighted epoch.
        beta: effective-number hyper-parameter after the switch.

    Returns:
        ``[C]`` weights.
    """
    if epoch < start_epoch:
        return torch.ones(class_counts.shape, dtype=torch.get_default_dtype(), device=class_counts.device)
    return class_balanced_weights(class_counts, beta)


def focal_loss(logits: Tensor, targets: Tensor, gamma: float, weight: Tensor | None = None) -> Tensor:
    """Softmax focal loss (Lin et al. 2017): ``l_i = -w_{y_i} (1 - p_{i,y_i})^gamma log p_{i,y_i}``.

    ``p = softmax(logits)`` is the unweighted probability; the per-class weight multiplies the
    focal term, as in class-balanced focal loss. The reduction is
    ``sum_i l_i / sum_i w_{y_i}`` (the weighted mean of cross-entropy), so ``gamma = 0``
    equals :func:`torch.nn.functional.cross_entropy` with the same ``weight``. ``1 - p`` is
    floored at the dtype's smallest normal number so that ``gamma < 1`` keeps finite
    gradients on samples with ``p = 1`` in floating point.

    Args:
        logits: ``[B, C]``.
        targets: ``[B]`` integer labels.
        gamma: focusing parameter (>= 0).
        weight: optional ``[C]`` per-class weight.

    Returns:
        Scalar loss.
    """
    target_log_prob = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    one_minus_p = (-torch.expm1(target_log_prob)).clamp_min(torch.finfo(logits.dtype).tiny)
    modulating = one_minus_p.pow(gamma)
    per_sample = -modulating * target_log_prob
    if weight is None:
        return per_sample.mean()
    sample_weight = _cast_weight(weight, logits)[targets]
    return (sample_weight * per_sample).sum() / sample_weight.sum()


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Temperature-scaled distillation: ``T^2 KL(softmax(t / T) || softmax(s / T))``, batch mean.

    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et
    al. 2015). The teacher is not detached here; pass teacher logits computed without
    gradient when the teacher is frozen.

    Args:
        student_logits: ``[B, C]`` logits ``s``.
        teacher_logits: ``[B, C]`` logits ``t``.
        temperature: ``T > 0``.

    Returns:
        Scalar loss: ``T^2 / B * sum_i sum_c q_ic (log q_ic - log p_ic)``.
    """
    student_log_prob = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_prob = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(student_log_prob, teacher_log_prob, reduction="batchmean", log_target=True)
    return kl * temperature**2
