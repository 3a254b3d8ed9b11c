"""Plain loss functions, checked against direct computations of the papers' formulas.

Classification losses (:mod:`~ltcore.losses.classification`) act on logits and targets;
supervised contrastive losses (:mod:`~ltcore.losses.contrastive`) on stacked, L2-normalised
embeddings, with an optional logit bias through which rebalancing plugins compose. Both are
part of the public API; plugins build their own losses from these pieces.
"""

from .classification import (balanced_softmax_loss, class_balanced_weights, distillation_kl,
                             drw_weights, focal_loss, ldam_loss, ldam_margins,
                             logit_adjusted_cross_entropy)
from .contrastive import (compute_dtype, full_precision, kcl_loss, kcl_positive_mask,
                          masked_logsumexp, positive_mean_loss, supcon_loss)

__all__ = [
    "balanced_softmax_loss", "class_balanced_weights", "compute_dtype", "distillation_kl",
    "drw_weights", "focal_loss", "full_precision", "kcl_loss", "kcl_positive_mask", "ldam_loss",
    "ldam_margins", "logit_adjusted_cross_entropy", "masked_logsumexp", "positive_mean_loss",
    "supcon_loss",
]
