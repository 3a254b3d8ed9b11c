"""Class centroids kept as an exponential moving average of embeddings (ICCL eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CENTROID_INITS = ("first_batch", "random")


class EMACentroids(torch.nn.Module):
    """Per-class EMA centroids ``c^k`` in the embedding space, a [C, D] buffer.

    One update per batch: for every class k present in the batch,
    ``c^k <- m c^k + (1 - m) mean_{i: y_i = k} z_i``; absent classes are left untouched.
    The decay therefore counts batches in which a class appears, not samples.

    Args:
        num_classes: C.
        dim: embedding size D.
        momentum: ``m``; 0.99 is the paper's value.
        normalize: re-project each updated centroid onto the unit sphere. Default False:
            eq. 1 has no normalisation, and the paper plots the centroids' norms as
            "intrinsically balanced" across classes, which only carries meaning for
            centroids that are not re-normalised. True gives the MoPro-style variant
            (unit centroids, so ``z . c / tau`` is a cosine similarity).
        init: ``"first_batch"`` (default) starts from zeros and sets each centroid to its
            class's batch mean the first time the class is seen, so rarely sampled classes
            do not spend hundreds of updates with a near-zero centroid; ``"random"`` starts
            from random unit vectors drawn from ``generator`` and applies the EMA from the
            first update.
        generator: random generator for ``init="random"``.
    """

    centroids: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        momentum: float = 0.99,
        normalize: bool = False,
        init: str = "first_batch",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if init not in CENTROID_INITS:
            raise ValueError(f"init must be one of {CENTROID_INITS}, got {init!r}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.normalize = normalize
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
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, embeddings)
        batch_means = sums / counts.clamp_min(1).unsqueeze(1)
        averaged = self.momentum * self.centroids + (1.0 - self.momentum) * batch_means
        updated = torch.where(self.initialized.unsqueeze(1), averaged, batch_means)
        if self.normalize:
            updated = F.normalize(updated, dim=1)
        present = (counts > 0).unsqueeze(1)
        self.centroids.copy_(torch.where(present, updated, self.centroids))
        self.initialized.logical_or_(present.squeeze(1))

    def forward(self) -> Tensor:
        """Return the [C, D] centroids."""
        return self.centroids


def centroid_bank(
    run,
    momentum: float = 0.99,
    normalize: bool = False,
    init: str = "first_batch",
    dim: int | None = None,
) -> EMACentroids:
    """Memory bank ``iccl-centroids``: a fresh :class:`EMACentroids` for ``run``'s classes.

    ``dim`` defaults to the projection width (``model.projection_dim``). The caller attaches
    the module with ``run.add_module`` so that it is checkpointed; ``init="random"`` draws the
    starting centroids from the run seed.
    """
    generator = torch.Generator().manual_seed(run.config.seed)
    return EMACentroids(run.dataset.num_classes, dim or run.config.model.projection_dim,
                        momentum=momentum, normalize=normalize, init=init, generator=generator)


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
        """The raw [C, D] centroids (not re-normalised), as ICCL's loss uses them."""
        return self.bank.centroids

    def prototypes(self, step=None) -> Tensor:
        """[C, D] L2-normalised centroids; a class not seen yet has a zero row."""
        return F.normalize(self.bank.centroids.float(), dim=1)

    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Fold a batch of (detached) embeddings with their labels into the centroids."""
        self.bank.update(embeddings, labels)
