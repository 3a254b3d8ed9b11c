"""Loss terms built from plain loss functions, shared by the built-in and third-party plugins."""

from __future__ import annotations

from typing import Callable

import torch

from .run import CLASSIFIER_ROLE, ContrastSet, LossTerm, Step


def classifier_term(name: str, plugin: str, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    weight: float = 1.0, role: str = CLASSIFIER_ROLE) -> LossTerm:
    """``loss(logits, targets)`` on the logits of the classifier view."""
    return LossTerm(name, lambda step: loss(step.logits[role], step.targets(role)), plugin,
                    weight, kind="classifier")


def contrast_set(step: Step, term: str, plugin: str, anchor_labels: torch.Tensor,
                 sample_labels: torch.Tensor,
                 prototype_labels: torch.Tensor | None = None) -> ContrastSet:
    """Describe a contrastive loss's columns (samples, then prototypes) for the bias hook."""
    columns = sample_labels if prototype_labels is None else torch.cat([sample_labels, prototype_labels])
    is_prototype = torch.zeros(len(columns), dtype=torch.bool, device=columns.device)
    if prototype_labels is not None:
        is_prototype[len(sample_labels):] = True
    return ContrastSet(step.run, term, plugin, anchor_labels, columns, is_prototype)


def supcon_term(name: str, plugin: str, temperature: float, weight: float = 1.0) -> LossTerm:
    """SupCon over the stacked contrastive views, rebalanceable through the bias hook."""
    from .losses.contrastive import supcon_loss

    def fn(step: Step) -> torch.Tensor:
        z, labels = step.stacked_embeddings()
        bias = step.run.contrastive_bias(contrast_set(step, name, plugin, labels, labels))
        return supcon_loss(z, labels, temperature, logit_bias=bias)

    return LossTerm(name, fn, plugin, weight, kind="contrastive", rebalanceable=True)
