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
        counts = torch.bincount(labels, minlength=self.num_classes)
        sums = torch.zeros_like(self.centroids).index_add_(0, labels, embeddings)
        batch_means = sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype)
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
