"""Per-pixel losses: cross-entropy, logit-adjusted cross-entropy (eq. 10's ``alpha log pi`` on a
classifier) and GML on pixel features (GML paper, sec. 4.7 and eq. 10).

Pixel GML: the pixels of a step are sampled per class from the segmentation head's features
(labels taken at the feature map's resolution, nearest), L2-normalised; they are written to the
class-wise queues (``ltcore_gml.ClassWiseQueue``, ``|Z_c| = k_m + (k - k_m C) pi_c`` with
``pi`` the training pixel prior) and then contrasted with them through ``ltcore_gml``'s loss,
``CE_c(log mean_{z in Z_c} exp(z_x . z / tau_g) + alpha log pi_c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import IGNORE


def pixel_cross_entropy(logits: Tensor, masks: Tensor, log_prior: Tensor | None = None,
                        tau: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits`` ``[B, C, h, w]`` against ``masks`` ``[B, H, W]``, the
    logits upsampled bilinearly to the masks' size when theirs differs (as mmsegmentation's
    decode heads do in their loss) and shifted by ``tau * log_prior`` first (logit adjustment;
    ``tau`` 0: plain CE).

    Averaged over every pixel, the ignored ones counting zero, as mmsegmentation's
    ``CrossEntropyLoss`` does by default (``avg_non_ignore=False``).
    """
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=tuple(masks.shape[-2:]), mode="bilinear",
                               align_corners=False)
    if tau:
        logits = logits + tau * log_prior.to(logits.dtype).view(1, -1, 1, 1)
    per_pixel = F.cross_entropy(logits, masks.long(), ignore_index=IGNORE, reduction="none")
    return per_pixel.mean()


def sample_pixels(features: Tensor, masks: Tensor, per_class: int,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Up to ``per_class`` random labelled pixels of each class present in ``masks``.

    ``features`` ``[B, D, h, w]``; ``masks`` ``[B, H, W]`` are taken at ``h x w`` (nearest).
    Returns the pixels' features ``[P, D]`` (not normalised), labels ``[P]`` and the batch
    position of their image ``[P]``, classes in increasing order.
    """
    b, d, h, w = features.shape
    small = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    labels = small.reshape(-1)
    images = torch.arange(b, device=masks.device).repeat_interleave(h * w)
    flat = features.permute(0, 2, 3, 1).reshape(-1, d)
    keys = torch.rand(labels.shape, generator=generator, device=labels.device)
    keys = torch.where(labels == IGNORE, torch.full_like(keys, 2.0), keys)
    # rank pixels within their class by a random key: sort by (label, key)
    order = torch.argsort(labels.double() * 4 + keys.double())
    sorted_labels = labels[order]
    present, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=order.device) - starts.repeat_interleave(counts)
    keep = (rank < per_class) & (sorted_labels != IGNORE)
    chosen = order[keep]
    return flat[chosen], labels[chosen], images[chosen]


def pixel_similarities(query: Tensor, queue) -> Tensor:
    """``query @ queue.features().T`` ``[P, K]``: computed once a step for L_GML and its
    temperature loss."""
    return query @ queue.features().to(query.dtype).T


def pixel_gml_loss(query: Tensor, labels: Tensor, queue, class_prior: Tensor,
                   temperature: Tensor | float, alpha: float, *,
                   similarities: Tensor | None = None) -> Tensor:
    """GML (eq. 10) of the normalised pixel features ``query`` ``[P, D]`` against the
    class-wise ``queue`` (its written entries); ``similarities``: their
    :func:`pixel_similarities` when already computed."""
    from ltcore_gml import gml_loss_from_similarities

    if similarities is None:
        similarities = pixel_similarities(query, queue)
    return gml_loss_from_similarities(similarities, labels, queue.labels(), class_prior,
                                      temperature, alpha, bank_valid=queue.valid())
