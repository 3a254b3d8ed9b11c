"""Loss terms built from the plain loss functions, shared by the built-in and third-party plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .run import CLASSIFIER_ROLE, LossTerm, Step

if TYPE_CHECKING:
    from .run import Run


def classifier_term(name: str, plugin: str, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    weight: float = 1.0, role: str = CLASSIFIER_ROLE) -> LossTerm:
    """``loss(logits, targets)`` on the logits of the classifier view."""
    return LossTerm(name, lambda step: loss(step.logits[role], step.targets(role)), plugin,
                    weight, kind="classifier")


def logit_adjusted_term(run: Run, tau: float = 1.0, weight: float = 1.0,
                        plugin: str = "la") -> LossTerm:
    """Logit-adjusted cross-entropy (Menon et al. 2021), ``CE(logits + tau * log(pi), y)``, on
    the classifier view; evaluation logits stay raw."""
    from .losses.classification import logit_adjusted_cross_entropy

    prior = run.class_prior
    return classifier_term("la-ce", plugin,
                           lambda logits, y: logit_adjusted_cross_entropy(logits, y, prior, tau),
                           weight)


def supcon_term(name: str, plugin: str, temperature: float, weight: float = 1.0) -> LossTerm:
    """SupCon over the stacked contrastive views, rebalanceable through the bias hook."""
    from .losses.contrastive import supcon_loss

    def fn(step: Step) -> torch.Tensor:
        z, labels = step.stacked_embeddings()
        return supcon_loss(z, labels, temperature, logit_bias=step.contrastive_bias(labels, labels))

    return LossTerm(name, fn, plugin, weight, kind="contrastive", rebalanceable=True)
