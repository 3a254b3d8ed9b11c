"""BCL's prototype providers (supplementary Table 1): ``classifier-mlp`` (the paper's),
``ema`` (moving class means of the contrastive embeddings) and ``learnable`` (free
parameters). Each gives ``[C, D]`` L2-normalised prototypes; building one again in the same run
returns the same prototypes (its head, module or object is reused).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltcore import MLPHead, PluginError, hookimpl

from .plugin import EMA_MODULE, LEARNABLE_HEAD, PROTOTYPE_HEAD


class ClassifierPrototypes:
    """Prototype provider ``classifier-mlp``: classifier weight rows through an MLP (head
    ``bcl_prototypes``, the projection head's shape), L2-normalised (BCL paper, sec. 3.4)."""

    def __init__(self, run, model=None):
        self.model = model or run.model
        if PROTOTYPE_HEAD not in self.model.heads:
            cfg = run.config.model
            self.model.heads[PROTOTYPE_HEAD] = MLPHead(
                self.model.feature_dim, cfg.projection_dim, cfg.projection_hidden).to(run.device)

    def prototypes(self, step=None) -> Tensor:
        weight = self.model.classifier.weight
        return F.normalize(self.model.heads[PROTOTYPE_HEAD](weight).float(), dim=1)


class FreePrototypes(nn.Module):
    """``C x D`` free parameters; ``forward`` gives them L2-normalised."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self) -> Tensor:
        return F.normalize(self.weight.float(), dim=1)


class LearnablePrototypes:
    """Prototype provider ``learnable``: a free ``[C, model.projection_dim]`` parameter
    (standard normal start, head ``bcl_learnable_prototypes``), L2-normalised at use; the stage's
    optimiser trains it with the model, and only L_BCL's gradient reaches it."""

    def __init__(self, run, model=None):
        self.model = model or run.model
        if LEARNABLE_HEAD not in self.model.heads:
            self.model.heads[LEARNABLE_HEAD] = FreePrototypes(
                run.dataset.num_classes, run.config.model.projection_dim).to(run.device)

    def prototypes(self, step=None) -> Tensor:
        return self.model.heads[LEARNABLE_HEAD]()


class ClassMeans(nn.Module):
    """Moving class means ``[C, D]`` and which classes have been seen (buffers)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor, momentum: float) -> None:
        """Fold one batch in: for each class ``j`` in it, with ``b_j`` the mean of its rows,
        ``m_j <- momentum * m_j + (1 - momentum) * b_j``, or ``m_j <- b_j`` the first time."""
        num_classes = self.means.shape[0]
        rows = embeddings.detach().to(self.means.dtype)
        sums = torch.zeros_like(self.means).index_add_(0, labels, rows)
        counts = torch.zeros(num_classes, dtype=self.means.dtype,
                             device=self.means.device).index_add_(
            0, labels, torch.ones_like(labels, dtype=self.means.dtype))
        present = counts > 0
        batch_means = sums / counts.clamp(min=1)[:, None]
        keep = torch.where(self.seen, momentum, 0.0).to(self.means.dtype)[:, None]
        updated = keep * self.means + (1 - keep) * batch_means
        self.means.copy_(torch.where(present[:, None], updated, self.means))
        self.seen |= present


class EMAPrototypes:
    """Prototype provider ``ema``: an exponential moving average of the class means of the
    contrastive embeddings, L2-normalised.

    The means are taken per class over the step's stacked contrastive embeddings (both views,
    the L2-normalised projections L_BCL sees, the global batch in a distributed run), detached,
    after the optimiser step (``step_end``): a class present in the batch moves its mean by
    ``momentum``, its first batch sets it. The loss of a step therefore sees the means of the
    steps before it; a class not seen yet has a zero prototype (logit 0 for every anchor). The
    means live in the run module ``bcl_ema_prototypes`` and are checkpointed with the run.
    """

    def __init__(self, run, momentum: float = 0.9):
        if not 0 <= momentum < 1:
            raise PluginError(f"ema prototypes: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = momentum
        if EMA_MODULE in run.modules:
            self.bank = run.modules[EMA_MODULE]
        else:
            self.bank = run.add_module(EMA_MODULE, ClassMeans(
                run.dataset.num_classes, run.config.model.projection_dim))

    def prototypes(self, step=None) -> Tensor:
        return F.normalize(self.bank.means.float(), dim=1)

    @hookimpl
    def step_end(self, step) -> None:
        if not step.embedding_roles():
            return
        embeddings, labels = step.stacked_embeddings()
        self.bank.update(embeddings, labels, self.momentum)


def ema_prototypes(run, momentum: float = 0.9) -> EMAPrototypes:
    """The run's ``ema`` provider (registered for its ``step_end`` once per run)."""
    try:
        return run.plugin_object(EMA_MODULE)
    except PluginError:
        return run.register(EMAPrototypes(run, momentum), EMA_MODULE)
