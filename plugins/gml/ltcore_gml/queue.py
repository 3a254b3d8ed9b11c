"""Class-wise queues of contrast features for the GML loss (GML paper, eq. 5)."""

from __future__ import annotations

import torch
from torch import Tensor


def class_queue_sizes(class_counts: Tensor, total_size: int, min_size: int) -> Tensor:
    """Per-class queue lengths ``|Z_c| = k_m + (k - k_m C) pi_c`` (eq. 5), summing to ``k``.

    The real-valued lengths are floored and the remaining ``k - sum(floor)`` entries go
    one each to the classes with the largest fractional parts (ties to the lower class
    index), so every class keeps at least ``k_m`` entries and the total is exactly ``k``.

    Args:
        class_counts: [C] training-set counts ``n_c`` (``pi_c = n_c / sum n``).
        total_size: ``k``, the total number of queue entries.
        min_size: ``k_m``, the minimum length of every class's queue.

    Returns:
        [C] int64 queue lengths.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).cpu()
    num_classes = counts.numel()
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    if total_size < min_size * num_classes:
        raise ValueError(f"total_size {total_size} is smaller than min_size * num_classes = "
                         f"{min_size * num_classes}")
    prior = counts / counts.sum()
    exact = min_size + (total_size - min_size * num_classes) * prior
    sizes = exact.floor()
    remainder = total_size - int(sizes.sum())
    by_fraction = torch.sort(exact - sizes, descending=True, stable=True).indices
    sizes[by_fraction[:remainder]] += 1
    return sizes.long()


OVERFLOWS = ("first", "last")
"""What :class:`ClassWiseQueue` keeps of a class that gets more samples in one batch than slots."""


class ClassWiseQueue(torch.nn.Module):
    """Per-class ring buffers of contrast features in one flat [k, D] buffer.

    Class c owns the slots ``offsets[c] .. offsets[c] + sizes[c] - 1`` and writes them in
    ring order from its own pointer, so the oldest entry of a class is overwritten first.
    Each slot also keeps its class label, the dataset index of the sample that wrote it
    (-1 before the first write) and a validity flag (False until first written).
    Everything is a buffer, so ``state_dict`` saves and restores the whole queue.

    Args:
        sizes: [C] queue length of each class, all >= 1 (see ``class_queue_sizes``).
        dim: feature size D.
        dtype: dtype of the stored features.
        overflow: a class with ``n_c`` samples in one batch and ``K_c = sizes[c] < n_c`` slots
            keeps its ``"first"`` ``K_c`` samples (batch order) and its pointer stays where it
            was (it advances by ``min(n_c, K_c)``, modulo ``K_c``): the reference code's
            ``_dequeue_and_enqueue_w_base``. ``"last"`` keeps its last ``K_c`` samples and
            advances by ``n_c``, as if the samples were written one after another.
    """

    queue_features: Tensor
    queue_labels: Tensor
    queue_indices: Tensor
    queue_valid: Tensor
    offsets: Tensor
    sizes: Tensor
    pointers: Tensor

    def __init__(self, sizes: Tensor, dim: int, dtype: torch.dtype = torch.float32,
                 overflow: str = "first") -> None:
        super().__init__()
        sizes = torch.as_tensor(sizes, dtype=torch.long).cpu()
        if bool((sizes < 1).any()):
            raise ValueError("every class needs a queue of length at least 1")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}")
        self.overflow = overflow
        total = int(sizes.sum())
        self.num_classes = sizes.numel()
        self.register_buffer("queue_features", torch.zeros(total, dim, dtype=dtype))
        self.register_buffer("queue_labels",
                             torch.repeat_interleave(torch.arange(self.num_classes), sizes))
        self.register_buffer("queue_indices", torch.full((total,), -1, dtype=torch.long))
        self.register_buffer("queue_valid", torch.zeros(total, dtype=torch.bool))
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes)
        self.register_buffer("sizes", sizes)
        self.register_buffer("pointers", torch.zeros(self.num_classes, dtype=torch.long))

    @classmethod
    def from_class_counts(
        cls, class_counts: Tensor, total_size: int, min_size: int, dim: int,
        dtype: torch.dtype = torch.float32, overflow: str = "first",
    ) -> ClassWiseQueue:
        """Queue whose lengths follow eq. 5 for the given training-set class counts."""
        return cls(class_queue_sizes(class_counts, total_size, min_size), dim, dtype, overflow)

    @torch.no_grad()
    def slots(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where the next :meth:`enqueue` of a batch with ``labels`` [N] writes each sample.

        Returns ``(slot, writer, counts)``: sample ``i`` goes to ``slot[i]``; the sample whose
        entry remains in that slot after the call is ``writer[i]`` (``i`` itself unless its
        class overflows the queue in this batch: then, with ``overflow="first"``, the sample
        of its class whose rank is ``rank % K_c``, with ``"last"`` the last sample sent to that
        slot); ``counts`` [C] are the per-class batch counts. Computed from the current
        pointers without a host synchronisation.
        """
        batch = labels.shape[0]
        order = torch.sort(labels, stable=True).indices
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=labels.device).scatter_add_(
            0, labels, torch.ones_like(labels))
        class_starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(batch, device=labels.device) - class_starts[labels[order]]
        capacity = self.sizes[labels]
        slot = self.offsets[labels] + (self.pointers[labels] + rank) % capacity
        if self.overflow == "first":
            writer_rank = rank % capacity
        else:
            laps_left = torch.div(counts[labels] - 1 - rank, capacity, rounding_mode="floor")
            writer_rank = rank + capacity * laps_left
        writer = order[class_starts[labels] + writer_rank]
        return slot, writer, counts

    def enqueue(self, features: Tensor, labels: Tensor, indices: Tensor) -> None:
        """Write a batch into its classes' ring buffers.

        Samples of one class are written in batch order; a class that receives more samples
        than its capacity keeps its first or last ``sizes[c]`` of them (``overflow``).
        Vectorised: each sample computes its slot and the batch sample that finally occupies
        that slot, so slots written more than once receive identical values and the scatter
        is deterministic.

        Args:
            features: [N, D] features (detached here; gather across ranks first under DDP).
            labels: [N] class labels in [0, C).
            indices: [N] dataset indices of the samples.
        """
        slot, writer, counts = self.slots(labels)
        self.queue_features[slot] = features.detach()[writer].to(self.queue_features.dtype)
        self.queue_indices[slot] = indices[writer].to(torch.long)
        self.queue_valid[slot] = True
        written = torch.minimum(counts, self.sizes) if self.overflow == "first" else counts
        self.pointers.copy_((self.pointers + written) % self.sizes)

    def features(self) -> Tensor:
        """[k, D] stored features (rows with ``valid() == False`` were never written)."""
        return self.queue_features

    def labels(self) -> Tensor:
        """[k] class label of each slot."""
        return self.queue_labels

    def indices(self) -> Tensor:
        """[k] dataset index of the sample in each slot, -1 where never written."""
        return self.queue_indices

    def valid(self) -> Tensor:
        """[k] True where the slot holds a written sample."""
        return self.queue_valid
