"""Training samplers: per-epoch index orders drawn from a :class:`torch.Generator`.

A sampler sees the training labels once and then produces, for each epoch, a
``LongTensor [num_samples]`` of dataset indices. Every epoch has the same length, so the
number of optimisation steps per epoch is fixed. Index tensors live on the labels'
device; the generator must live there too.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "ClassPowerSampler",
    "InstanceBalancedSampler",
    "ProgressivelyBalancedSampler",
    "Sampler",
    "class_counts",
]


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """Number of samples of each class: ``LongTensor [num_classes]`` from labels ``[N]``."""
    return torch.bincount(labels.long(), minlength=num_classes)


class Sampler:
    """Protocol of every sampler: ``epoch_indices(epoch, generator) -> LongTensor [num_samples]``.

    Args:
        labels: ``[N]`` integer training labels.
        num_samples: indices per epoch; defaults to the dataset size ``N``.
        num_classes: number of classes ``C``; defaults to ``max(labels) + 1``.
    """

    def __init__(self, labels: Tensor, num_samples: int | None = None, num_classes: int | None = None):
        self.labels = torch.as_tensor(labels).long()
        self.num_classes = int(self.labels.max()) + 1 if num_classes is None else num_classes
        self.num_samples = self.labels.numel() if num_samples is None else num_samples
        self.class_counts = class_counts(self.labels, self.num_classes)

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        """Dataset indices for ``epoch`` (0-based), drawn with ``generator``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_samples


class InstanceBalancedSampler(Sampler):
    """Every sample once per epoch in random order: a permutation of ``range(N)``."""

    def __init__(self, labels: Tensor):
        super().__init__(labels)

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        return torch.randperm(self.num_samples, generator=generator, device=self.labels.device)


class _ClassThenInstanceSampler(Sampler):
    """Draws a class ``k ~ p(k)`` per slot, then a sample of class ``k`` uniformly, all with
    replacement. Subclasses define ``class_probabilities(epoch)``."""

    def __init__(self, labels: Tensor, num_samples: int | None = None, num_classes: int | None = None):
        super().__init__(labels, num_samples, num_classes)
        self._indices_by_class = torch.argsort(self.labels, stable=True)
        self._class_offsets = torch.cumsum(self.class_counts, 0) - self.class_counts

    def class_probabilities(self, epoch: int) -> Tensor:
        """``[C]`` float64 probability of drawing each class at ``epoch`` (sums to 1)."""
        raise NotImplementedError

    def epoch_indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        device = self.labels.device
        probabilities = self.class_probabilities(epoch).to(device)
        classes = torch.multinomial(probabilities, self.num_samples, replacement=True, generator=generator)
        counts = self.class_counts[classes]
        uniform = torch.rand(self.num_samples, generator=generator, dtype=torch.float64, device=device)
        within_class = torch.minimum((uniform * counts).long(), counts - 1)
        return self._indices_by_class[self._class_offsets[classes] + within_class]


class ClassPowerSampler(_ClassThenInstanceSampler):
    """Class-aware sampling with ``p(k) proportional to n_k^power``, then a uniform sample of class k.

    ``power = 1``: instance-balanced in expectation; ``0.5``: square-root; ``0``:
    class-balanced; negative: reverse. ICCL's class-aware sampler
    ``p(k) proportional to (1 / n_k)^gamma`` is ``power = -gamma``. Classes without samples
    get probability 0.

    Args:
        labels: ``[N]`` integer training labels.
        power: exponent on the class counts.
        num_samples: indices per epoch (default ``N``).
        num_classes: ``C`` (default ``max(labels) + 1``).
    """

    def __init__(
        self,
        labels: Tensor,
        power: float,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ):
        super().__init__(labels, num_samples, num_classes)
        self.power = power
        counts = self.class_counts.to(torch.float64)
        present = self.class_counts > 0
        unnormalised = torch.where(present, counts.clamp_min(1.0).pow(power), torch.zeros_like(counts))
        self._probabilities = unnormalised / unnormalised.sum()

    def class_probabilities(self, epoch: int) -> Tensor:
        return self._probabilities


class ProgressivelyBalancedSampler(_ClassThenInstanceSampler):
    """Progressively-balanced sampling (Kang et al. 2020):
    ``p_k(t) = (1 - t/T) p_k^IB + (t/T) p_k^CB`` with ``p_k^IB = n_k / N`` and
    ``p_k^CB = 1 / C`` over the classes that have samples.

    ``t`` is the 0-based epoch clamped to ``[0, T]``: epoch 0 is instance-balanced and the
    schedule reaches class-balanced at ``t = T``, so with epochs ``0 .. T-1`` the last epoch
    is at ``(T-1)/T``, as in the paper's formula.

    Args:
        labels: ``[N]`` integer training labels.
        total_epochs: ``T``.
        num_samples: indices per epoch (default ``N``).
        num_classes: ``C`` (default ``max(labels) + 1``).
    """

    def __init__(
        self,
        labels: Tensor,
        total_epochs: int,
        num_samples: int | None = None,
        num_classes: int | None = None,
    ):
        super().__init__(labels, num_samples, num_classes)
        self.total_epochs = total_epochs
        counts = self.class_counts.to(torch.float64)
        present = (self.class_counts > 0).to(torch.float64)
        self._instance_balanced = counts / counts.sum()
        self._class_balanced = present / present.sum()

    def class_probabilities(self, epoch: int) -> Tensor:
        progress = min(max(epoch, 0), self.total_epochs) / self.total_epochs
        return (1.0 - progress) * self._instance_balanced + progress * self._class_balanced
