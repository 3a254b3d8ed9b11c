"""Class centroids kept as an exponential moving average of embeddings (ICCL eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CENTROID_INITS = ("first_batch", "random")
CENTROID_UPDATES = ("per-sample", "batch-mean")


class EMACentroids(torch.nn.Module):
    """Per-class EMA centroids ``c^k`` in the embedding space, a [C, D] buffer.

    ``update="per-sample"`` (default, MoPro's loop, which ICCL follows): every sample of the
    batch in batch order, ``c^{y_i} <- m c^{y_i} + (1 - m) z_i``. Vectorised: a class k with
    ``n_k`` samples, sample j of class rank ``r_j`` weighted ``w_j = (1 - m) m^(n_k - 1 - r_j)``,
    ``c^k <- m^(n_k) c^k + sum_j w_j z_j``. ``update="batch-mean"``: one step per batch,
    ``c^k <- m c^k + (1 - m) mean_{i: y_i = k} z_i`` (the decay counts batches in which a class
    appears, not samples). Absent classes are left untouched either way.

    Args:
        num_classes: C.
        dim: embedding size D.
        momentum: ``m``; 0.99 is the paper's value.
        normalize: re-project each updated centroid onto the unit sphere once per batch, after
            the update (default True, MoPro's ``F.normalize(prototypes)``, so ``z . c / tau`` is
            a cosine similarity). False keeps eq. 1 as written, whose centroid norms the paper
            plots as "intrinsically balanced".
        init: ``"first_batch"`` (default) starts from zeros and sets each centroid to its
            class's (weighted) mean of the batch in which the class is first seen (per-sample:
            ``sum_j w_j z_j / sum_j w_j``, which after normalisation is MoPro's zero start), so
            rarely sampled classes do not spend hundreds of updates with a near-zero centroid;
            ``"random"`` starts from random unit vectors drawn from ``generator`` and applies
            the EMA from the first update.
        update: ``"per-sample"`` or ``"batch-mean"`` (above).
        generator: random generator for ``init="random"``.
    """

    centroids: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        momentum: float = 0.99,
        normalize: bool = True,
        init: str = "first_batch",
        update: str = "per-sample",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if init not in CENTROID_INITS:
            raise ValueError(f"init must be one of {CENTROID_INITS}, got {init!r}")
        if update not in CENTROID_UPDATES:
            raise ValueError(f"update must be one of {CENTROID_UPDATES}, got {update!r}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.normalize = normalize
        self.update_rule = update
        if init == "random":
            centroids = F.normalize(torch.randn(num_classes, dim, generator=generator), dim=1)
            initialized = torch.ones(num_classes, dtype=torch.bool)
        else:
            centroids = torch.zeros(num_classes, dim)
            initialized = torch.zeros(num_classes, dtype=torch.bool)
        self.register_buffer("centroids", centroids)
        self.register_buffer("initialized", initialized)

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Fold a batch into the centroids.

        Args:
            embeddings: [N, D] embeddings (detached here; gather across ranks first under DDP
                so every rank keeps the same centroids).
            labels: [N] class labels in [0, C).
        """
        embeddings = embeddings.detach().to(self.centroids.dtype)
        # index_add_ rather than bincount: bincount sizes its output from the data, which
        # costs a device-to-host synchronisation on CUDA every step.
        counts = torch.zeros(self.num_classes, dtype=self.centroids.dtype, device=labels.device)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=counts.dtype))
        if self.update_rule == "per-sample":
            averaged, first_means = self._per_sample(embeddings, labels, counts)
        else:
            sums = torch.zeros_like(self.centroids).index_add_(0, labels, embeddings)
            first_means = sums / counts.clamp_min(1).unsqueeze(1)
            averaged = self.momentum * self.centroids + (1.0 - self.momentum) * first_means
        updated = torch.where(self.initialized.unsqueeze(1), averaged, first_means)
        if self.normalize:
            updated = F.normalize(updated, dim=1)
        present = (counts > 0).unsqueeze(1)
        self.centroids.copy_(torch.where(present, updated, self.centroids))
        self.initialized.logical_or_(present.squeeze(1))

    def _per_sample(self, embeddings: Tensor, labels: Tensor,
                    counts: Tensor) -> tuple[Tensor, Tensor]:
        """The per-sample EMA of every class and, for classes seen for the first time, the
        weighted mean of their samples (weights of the EMA)."""
        order = torch.sort(labels, stable=True).indices
        class_starts = (torch.cumsum(counts, 0) - counts).long()
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(len(labels), device=labels.device) - class_starts[labels[order]]
        later_samples = counts[labels] - 1 - rank.to(counts.dtype)
        weights = (1.0 - self.momentum) * self.momentum ** later_samples
        weighted_sums = torch.zeros_like(self.centroids).index_add_(
            0, labels, weights.unsqueeze(1) * embeddings)
        weight_totals = torch.zeros_like(counts).index_add_(0, labels, weights)
        averaged = (self.momentum ** counts).unsqueeze(1) * self.centroids + weighted_sums
        first_means = weighted_sums / torch.where(weight_totals > 0, weight_totals,
                                                  torch.ones_like(weight_totals)).unsqueeze(1)
        return averaged, first_means

    def forward(self) -> Tensor:
        """Return the [C, D] centroids."""
        return self.centroids


def centroid_bank(
    run,
    momentum: float = 0.99,
    normalize: bool = True,
    init: str = "first_batch",
    update: str = "per-sample",
    dim: int | None = None,
) -> EMACentroids:
    """Memory bank ``iccl-centroids``: a fresh :class:`EMACentroids` for ``run``'s classes.

    ``dim`` defaults to the projection width (``model.projection_dim``). The caller attaches
    the module with ``run.add_module`` so that it is checkpointed; ``init="random"`` draws the
    starting centroids from the run seed.
    """
    generator = torch.Generator().manual_seed(run.config.seed)
    return EMACentroids(run.dataset.num_classes, dim or run.config.model.projection_dim,
                        momentum=momentum, normalize=normalize, init=init, update=update,
                        generator=generator)


class CentroidPrototypes:
    """Prototype provider ``iccl-centroids``: a run's EMA class centroids as prototypes.

    The centroids are the :class:`EMACentroids` module attached to the run as ``module``
    (reused when the run already has it, as with ``--plugin iccl``; created and attached
    otherwise, so they are checkpointed either way). With ``--plugin iccl`` the centroids are
    updated after every step from the uniform branch's embeddings. A plugin that uses the
    provider in a run without ICCL feeds it itself, by calling :meth:`update` (for instance
    from its ``step_end`` hook with the step's projection embeddings).

    Args:
        run: the run being assembled.
        module: name of the centroid module in ``run.modules``.
        **bank_options: options of :func:`centroid_bank` when the module is created here.
    """

    def __init__(self, run, module: str = "iccl_centroids", **bank_options) -> None:
        if module in run.modules:
            self.bank = run.modules[module]
        else:
            self.bank = run.add_module(module, centroid_bank(run, **bank_options))

    @property
    def centroids(self) -> Tensor:
        """The [C, D] centroids as the bank keeps them (unit rows only with ``normalize``), as
        ICCL's loss uses them."""
        return self.bank.centroids

    def prototypes(self, step=None) -> Tensor:
        """[C, D] L2-normalised centroids; a class not seen yet has a zero row."""
        return F.normalize(self.bank.centroids.float(), dim=1)

    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Fold a batch of (detached) embeddings with their labels into the centroids."""
        self.bank.update(embeddings, labels)
