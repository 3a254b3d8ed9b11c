"""ICCL losses and interpolation (Interpolative Centroid Contrastive Learning).

Equation numbers refer to the ICCL paper: interpolation (3), centroid retrieval
probability (4), interpolative centroid contrastive loss (5), interpolative
cross-entropy (7) and the classifier-rebalancing distillation loss (9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _interpolated_nll(log_probs: Tensor, labels_a: Tensor, labels_b: Tensor, lam: Tensor | float) -> Tensor:
    """Batch mean of ``-lam log p[y_a] - (1 - lam) log p[y_b]`` for ``log_probs`` [B, C]."""
    log_prob_a = log_probs.gather(1, labels_a.unsqueeze(1)).squeeze(1)
    log_prob_b = log_probs.gather(1, labels_b.unsqueeze(1)).squeeze(1)
    return -(lam * log_prob_a + (1.0 - lam) * log_prob_b).mean()


def centroid_contrastive_loss(
    embeddings: Tensor,
    centroids: Tensor,
    labels_a: Tensor,
    labels_b: Tensor,
    lam: Tensor | float,
    temperature: float,
    *,
    logit_bias: Tensor | None = None,
    logit_bias_b: Tensor | None = None,
) -> Tensor:
    """Interpolative centroid contrastive loss (ICCL eq. 5).

    ``p(c^k | x) = softmax_k(z . c^k / tau)`` (eq. 4) and the loss is the batch mean of
    ``-lam log p(c^{y_a} | x) - (1 - lam) log p(c^{y_b} | x)``.

    Args:
        embeddings: [B, D] L2-normalised embeddings ``z^f`` of the interpolated images.
        centroids: [C, D] class centroids ``c^k`` (an EMA buffer; no gradient is expected).
        labels_a: [B] labels ``y^h`` of the class-agnostic (first) images.
        labels_b: [B] labels ``y^t`` of the class-aware (second) images.
        lam: interpolation weight of the first image, a float or a [B] tensor.
        temperature: ``tau``.
        logit_bias: optional tensor broadcastable to [B, C] added to ``z . c^k / tau`` before
            the softmax (the hook through which a rebalancing method such as RCL adds
            ``log n_k``), used for the ``y_a`` term.
        logit_bias_b: the bias of the ``y_b`` term, when it differs (a bias that depends on
            the anchor's class is computed once for ``y_a`` and once for ``y_b``); defaults to
            ``logit_bias``.

    With ``labels_b = labels_a`` and ``lam = 1`` this is the plain centroid loss
    ``-log p(c^y | x)`` used during the warm-up epochs.

    Returns:
        Scalar loss.
    """
    logits = embeddings @ centroids.T / temperature
    if logit_bias is None and logit_bias_b is None:
        return _interpolated_nll(F.log_softmax(logits, dim=1), labels_a, labels_b, lam)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    bias_a = zero if logit_bias is None else logit_bias.to(logits.dtype)
    bias_b = bias_a if logit_bias_b is None else logit_bias_b.to(logits.dtype)
    log_probs_a = F.log_softmax(logits + bias_a, dim=1)
    log_probs_b = log_probs_a if logit_bias_b is None else F.log_softmax(logits + bias_b, dim=1)
    log_prob_a = log_probs_a.gather(1, labels_a.unsqueeze(1)).squeeze(1)
    log_prob_b = log_probs_b.gather(1, labels_b.unsqueeze(1)).squeeze(1)
    return -(lam * log_prob_a + (1.0 - lam) * log_prob_b).mean()


def interpolative_cross_entropy(logits: Tensor, labels_a: Tensor, labels_b: Tensor, lam: Tensor | float) -> Tensor:
    """Interpolative cross-entropy (ICCL eq. 7).

    Batch mean of ``-lam log softmax(o)[y_a] - (1 - lam) log softmax(o)[y_b]``.

    Args:
        logits: [B, C] classifier logits ``o`` of the interpolated images.
        labels_a: [B] labels of the first images.
        labels_b: [B] labels of the second images.
        lam: interpolation weight of the first image, a float or a [B] tensor.

    Returns:
        Scalar loss.
    """
    return _interpolated_nll(F.log_softmax(logits, dim=1), labels_a, labels_b, lam)


def interpolate(x_a: Tensor, x_b: Tensor, lam: Tensor | float) -> Tensor:
    """Per-sample interpolation ``x^f = lam x_a + (1 - lam) x_b`` (ICCL eq. 3).

    Args:
        x_a: [B, ...] first inputs (class-agnostic sampler).
        x_b: [B, ...] second inputs (class-aware sampler), same shape as ``x_a``.
        lam: a float or a [B] tensor, broadcast over every non-batch dimension.

    Returns:
        [B, ...] interpolated inputs, in the dtype of ``x_a``.
    """
    if isinstance(lam, Tensor):
        lam = lam.to(x_a.dtype).reshape(-1, *([1] * (x_a.dim() - 1)))
    return lam * x_a + (1.0 - lam) * x_b


def sample_interpolation_weights(
    batch_size: int,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    beta: float | None = None,
) -> Tensor:
    """Draw ``lam ~ Beta(alpha, beta)`` independently for each sample (``beta`` defaults to
    ``alpha``).

    Uses ``Beta(a, b) = G_1 / (G_1 + G_2)`` with ``G_1 ~ Gamma(a, 1)``, ``G_2 ~ Gamma(b, 1)``,
    drawn from ``generator`` so the draw is reproducible. The gammas are drawn in float64, where
    a small parameter (0.2 in the paper's ablation) cannot underflow both to zero.
    ``alpha = beta = 1`` (the paper's default) is ``U(0, 1)``; ``Beta(0.2, 1.0)`` favours a small
    ``lam``, i.e. the second (class-aware) image.

    Args:
        batch_size: number of weights B.
        alpha: first Beta parameter (of ``lam``), > 0.
        generator: random generator on ``device``; the global one when None.
        device: device of the result (and of ``generator``).
        dtype: dtype of the result.
        beta: second Beta parameter (of ``1 - lam``), > 0; None = ``alpha``.

    Returns:
        [B] tensor of weights in [0, 1].
    """
    beta = alpha if beta is None else beta
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"Beta parameters must be positive, got ({alpha}, {beta})")
    if beta == alpha:
        concentration = torch.full((2, batch_size), alpha, dtype=torch.float64, device=device)
    else:
        concentration = torch.tensor([[alpha], [beta]], dtype=torch.float64,
                                     device=device).expand(2, batch_size).contiguous()
    gammas = torch._standard_gamma(concentration, generator=generator)
    return (gammas[0] / gammas.sum(0)).to(dtype)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    distill_weight: float = 0.5,
    temperature: float = 10.0,
) -> Tensor:
    """Classifier-rebalancing loss with distillation (ICCL eq. 9).

    ``(1 - w_d) CE(o^S, y) + w_d tau_d^2 KL(softmax(o^T / tau_d) || softmax(o^S / tau_d))``,
    both terms averaged over the batch (the KL is summed over classes, then averaged over
    samples). Defaults ``w_d = 0.5`` and ``tau_d = 10`` are the paper's. The teacher
    (stage-1 classifier) is a fixed target, so ``teacher_logits`` is detached.

    Args:
        student_logits: [B, C] logits ``o^S`` of the stage-2 classifier.
        teacher_logits: [B, C] logits ``o^T`` of the stage-1 classifier.
        labels: [B] class labels.
        distill_weight: ``w_d`` in [0, 1].
        temperature: ``tau_d``.

    Returns:
        Scalar loss.
    """
    cross_entropy = F.cross_entropy(student_logits, labels)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return (1.0 - distill_weight) * cross_entropy + distill_weight * temperature**2 * kl
