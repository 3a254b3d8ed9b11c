"""Loss terms built from the plain loss functions, shared by the built-in and third-party plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .run import CLASSIFIER_ROLE, LossTerm, Step

if TYPE_CHECKING:
    from .run import Run


def classifier_term(name: str, plugin: str, loss: Callable[..., torch.Tensor],
                    weight: float = 1.0, role: str = CLASSIFIER_ROLE, *,
                    label_smoothing: bool = False) -> LossTerm:
    """``loss(logits, targets)`` on the logits of the classifier view. With ``label_smoothing``
    the loss is of the cross-entropy family and takes a ``label_smoothing`` keyword, which gets
    the run's ``loss.label_smoothing`` when it is set."""
    def fn(step: Step) -> torch.Tensor:
        smoothing = step.run.config.loss.label_smoothing if label_smoothing else 0.0
        extra = {"label_smoothing": smoothing} if smoothing else {}
        return loss(step.logits[role], step.targets(role), **extra)

    return LossTerm(name, fn, plugin, weight, kind="classifier", label_smoothing=label_smoothing)


def cross_entropy_term(name: str, plugin: str, weight: float = 1.0,
                       role: str = CLASSIFIER_ROLE) -> LossTerm:
    """Cross-entropy on the classifier view's logits (with ``loss.label_smoothing``)."""
    import torch.nn.functional as F

    return classifier_term(name, plugin, F.cross_entropy, weight, role, label_smoothing=True)


def logit_adjusted_term(run: Run, tau: float = 1.0, weight: float = 1.0,
                        plugin: str = "la") -> LossTerm:
    """Logit-adjusted cross-entropy (Menon et al. 2021), ``CE(logits + tau * log(pi), y)``, on
    the classifier view (with ``loss.label_smoothing``); evaluation logits stay raw."""
    from .losses.classification import logit_adjusted_cross_entropy

    prior = run.class_prior
    return classifier_term("la-ce", plugin,
                           lambda logits, y, **smoothing: logit_adjusted_cross_entropy(
                               logits, y, prior, tau, **smoothing),
                           weight, label_smoothing=True)


def supcon_term(name: str, plugin: str, temperature: float, weight: float = 1.0) -> LossTerm:
    """SupCon over the stacked contrastive views, rebalanceable through the bias hook."""
    from .losses.contrastive import supcon_loss

    def fn(step: Step) -> torch.Tensor:
        z, labels = step.stacked_embeddings()
        return supcon_loss(z, labels, temperature, logit_bias=step.contrastive_bias(labels, labels))

    return LossTerm(name, fn, plugin, weight, kind="contrastive", rebalanceable=True)
