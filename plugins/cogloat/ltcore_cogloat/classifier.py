"""CoGloAT's second stage: a linear classifier on the frozen pre-trained encoder, trained with a
re-weighted LDAM loss (CIFAR-10-LT) or a re-weighted cross-entropy (CIFAR-100-LT).

The paper's re-weighting ("Reweight (Wang et al., 2017)") sets each class's weight inversely
proportional to its training-set frequency; ``effective-number`` (Cui et al., 2019) is offered as
the smoother alternative and ``none`` switches re-weighting off. Weights are normalised to sum to
the number of classes, and the loss is the weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ltcore import CLASSIFIER_ROLE, LossTerm
from ltcore.losses import class_balanced_weights, ldam_loss, ldam_margins

REWEIGHTING = ("inverse-frequency", "effective-number", "none")
CLASSIFIER_LOSSES = ("ce", "ldam")


def inverse_frequency_weights(class_counts: Tensor) -> Tensor:
    """``w_c = (1 / n_c) * C / sum_j (1 / n_j)``: inverse class frequency, summing to ``C``."""
    inverse = 1.0 / class_counts.to(torch.float64)
    return (inverse * (class_counts.numel() / inverse.sum())).to(torch.get_default_dtype())


def class_weights(class_counts: Tensor, scheme: str, beta: float = 0.9999) -> Tensor | None:
    """The per-class weights ``[C]`` of a re-weighting ``scheme`` (None for ``none``)."""
    if scheme == "inverse-frequency":
        return inverse_frequency_weights(class_counts)
    if scheme == "effective-number":
        return class_balanced_weights(class_counts, beta)
    if scheme == "none":
        return None
    raise ValueError(f"unknown re-weighting {scheme!r}; expected one of {REWEIGHTING}")


class ReweightedClassifierLoss:
    """``loss(logits, targets, epoch)``: re-weighted CE or LDAM, weights switched on at
    ``start_epoch`` (0: from the first epoch; later: deferred re-weighting as in LDAM-DRW).

    LDAM subtracts the class margin ``m_y = K / n_y^(1/4)`` (largest ``max_margin``) from the
    target's cosine before scaling by ``scale``: with a cosine classifier the logits are
    ``s_c cos``, so ``cos = logits / s_c`` (``classifier_scale``); with a linear classifier
    (``classifier_scale=None``) the margin is applied to the raw logits and ``scale`` is 1.
    """

    def __init__(self, class_counts: Tensor, loss: str = "ce", reweighting: str = "inverse-frequency",
                 beta: float = 0.9999, start_epoch: int = 0, max_margin: float = 0.5,
                 scale: float = 30.0, classifier_scale: float | None = None):
        if loss not in CLASSIFIER_LOSSES:
            raise ValueError(f"unknown classifier loss {loss!r}; expected one of {CLASSIFIER_LOSSES}")
        self.loss = loss
        self.weights = class_weights(class_counts, reweighting, beta)
        if self.weights is not None:
            self.weights = self.weights.to(class_counts.device)
        self.start_epoch = start_epoch
        self.margins = ldam_margins(class_counts, max_margin).to(class_counts.device)
        self.scale = scale
        self.classifier_scale = classifier_scale

    def __call__(self, logits: Tensor, targets: Tensor, epoch: int) -> Tensor:
        weight = self.weights if epoch >= self.start_epoch else None
        if self.loss == "ce":
            if weight is not None:
                weight = weight.to(logits.dtype)
            return torch.nn.functional.cross_entropy(logits, targets, weight=weight)
        if self.classifier_scale is None:
            return ldam_loss(logits, targets, self.margins, scale=1.0, weight=weight)
        return ldam_loss(logits / self.classifier_scale, targets, self.margins, scale=self.scale,
                         weight=weight)


def reweighted_classifier_term(run, *, loss: str = "ce", reweighting: str = "inverse-frequency",
                               beta: float = 0.9999, start_epoch: int = 0, max_margin: float = 0.5,
                               scale: float = 30.0, model=None, weight: float = 1.0,
                               role: str = CLASSIFIER_ROLE, plugin: str = "cogloat",
                               name: str = "reweighted-classifier") -> LossTerm:
    """``reweighted-classifier`` loss component: CE or LDAM with class re-weighting on the
    classifier view of ``model`` (default: the run's model)."""
    from ltcore import CosineClassifier

    model = model or run.model
    classifier = model.classifier
    fn = ReweightedClassifierLoss(
        run.class_counts, loss, reweighting, beta, start_epoch, max_margin, scale,
        classifier.scale if isinstance(classifier, CosineClassifier) else None)

    def term(step):
        return fn(step.logits[role], step.targets(role), step.epoch)

    term.loss = fn
    return LossTerm(name, term, plugin, weight, kind="classifier")
