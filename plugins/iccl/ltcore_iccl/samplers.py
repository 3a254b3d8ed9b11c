"""ICCL's samplers (paper sec. 3.2): the class-aware sampler and the paired sampler.

``class-aware`` draws a class with ``p(k) = (1/n_k)^gamma / sum_j (1/n_j)^gamma`` (eq. 2), then
one of its images uniformly, with replacement: ``gamma = 0`` is class-balanced, ``gamma = 1``
reverse. ``iccl-paired`` gives every row two indices: the class-agnostic sample ``(x^h, y^h)``
(instance-balanced by default) and an independent class-aware sample ``(x^t, y^t)``, in the
sources ``sample`` and ``paired``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ltcore import ClassPowerSampler, InstanceBalancedSampler

__all__ = ["ClassAwareSampler", "PairedSampler"]


class ClassAwareSampler(ClassPowerSampler):
    """ICCL's class-aware sampler: ``p(k) proportional to (1 / n_k)^gamma`` (eq. 2).

    The core's :class:`~ltcore.samplers.ClassPowerSampler` with ``power = -gamma``: a class is
    drawn from ``p(k)``, then one of its images uniformly, both with replacement.

    Args:
        labels: ``[N]`` integer training labels.
        gamma: adjustment parameter (0 class-balanced, 1 reverse).
        num_samples: indices per epoch (default ``N``).
        num_classes: ``C`` (default ``max(labels) + 1``).
    """

    def __init__(self, labels: Tensor, gamma: float = 0.0, num_samples: int | None = None,
                 num_classes: int | None = None):
        super().__init__(labels, -float(gamma), num_samples=num_samples, num_classes=num_classes)
        self.gamma = float(gamma)


class PairedSampler:
    """Rows of (class-agnostic sample, class-aware sample) for ICCL's interpolative branch.

    ``epoch_indices`` returns ``LongTensor [N, 2]``: column 0 (source ``sample``) is the
    class-agnostic sampler's epoch order, column 1 (source ``paired``) is drawn independently
    from a :class:`ClassAwareSampler` with the same number of rows, or, with ``uniform``, from
    an independent random order of the training images (the class-agnostic uniform sampler of
    the paper's Table 6; random permutations laid end to end when more rows are needed).

    Args:
        labels: ``[N]`` integer training labels.
        gamma: adjustment parameter of the class-aware column.
        agnostic: the class-agnostic sampler (any single-source sampler); default
            instance-balanced, as in the paper.
        uniform: draw column 1 uniformly over the images (``gamma`` must then be 0).
    """

    sources = ("sample", "paired")

    def __init__(self, labels: Tensor, gamma: float = 0.0, agnostic=None, uniform: bool = False):
        self.labels = torch.as_tensor(labels).long()
        self.agnostic = agnostic if agnostic is not None else InstanceBalancedSampler(self.labels)
        self.num_samples = len(self.agnostic) if hasattr(self.agnostic, "__len__") else self.labels.numel()
        if uniform and gamma != 0:
            raise ValueError(f"a uniform paired column has no gamma, got {gamma}")
        self.uniform = uniform
        self.aware = (InstanceBalancedSampler(self.labels) if uniform else
                      ClassAwareSampler(self.labels, gamma, num_samples=self.num_samples))

    @property
    def gamma(self) -> float:
        return 0.0 if self.uniform else self.aware.gamma

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        """``[num_samples, 2]`` dataset indices: (class-agnostic, class-aware) per row."""
        first = self.agnostic.epoch_indices(epoch, generator)
        if first.dim() != 1:
            raise ValueError("the class-agnostic sampler of iccl-paired must give one index per "
                             f"row, got shape {tuple(first.shape)}")
        second = self.aware.epoch_indices(epoch, generator)
        while len(second) < len(first):
            second = torch.cat([second, self.aware.epoch_indices(epoch, generator)])
        second = second[: len(first)]
        return torch.stack([first, second.to(first.device)], dim=1)

    def __len__(self) -> int:
        return self.num_samples
