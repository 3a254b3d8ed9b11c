"""k-global positive selection (CoGloAT, sec. 3.2): same-label positives drawn from the whole training set.

The sampler keeps the training set sorted by label, so each class is one contiguous block
``sorted_indices[class_starts[c] : class_starts[c] + class_counts[c]]``. Drawing a positive is
then "pick a random offset inside the anchor's block" and is done for the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class GlobalPositiveSampler:
    """Draws, for each anchor of a batch, ``k`` training indices with the anchor's label.

    Built once from the training labels ``[N]``. ``draw(indices, k)`` returns ``[B, k]`` indices
    following this rule, per anchor ``i`` of class ``c`` (``n_c`` training images, ``m_c`` of
    them not in the current batch ``indices``):

    1. ``m_c >= k``: ``k`` distinct images drawn uniformly from the class members outside the
       batch (never the anchor, never another batch member).
    2. otherwise, ``n_c >= 2``: drawn uniformly from the class members other than the anchor
       (batch members allowed), ``k`` distinct ones when ``n_c - 1 >= k``, else with replacement.
    3. ``n_c == 1``: the anchor itself, ``k`` times (its only positive is its own other view).

    "Enough outside members" means at least ``k``, so that rule 1 never has to repeat an image;
    keeping batch members out matters because their keys are negatives of the same loss.
    """

    def __init__(self, labels: Tensor | Sequence[int], num_classes: int | None = None) -> None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.ndim != 1 or labels.numel() == 0:
            raise ValueError("labels must be a non-empty 1-d sequence of class ids")
        if bool((labels < 0).any()):
            raise ValueError("labels must be non-negative class ids")
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        elif int(labels.max()) >= num_classes:
            raise ValueError(f"a label is >= num_classes={num_classes}")
        self.num_classes = num_classes
        self.labels = labels
        self.sorted_indices = torch.sort(labels, stable=True).indices
        self.class_counts = torch.bincount(labels, minlength=num_classes)
        self.class_starts = torch.cumsum(self.class_counts, 0) - self.class_counts
        rank = torch.empty_like(self.sorted_indices)
        rank[self.sorted_indices] = torch.arange(labels.numel())
        self.position_in_class = rank - self.class_starts[labels]

    @property
    def num_samples(self) -> int:
        return self.labels.numel()

    def to(self, device: torch.device | str) -> GlobalPositiveSampler:
        """Moves the lookup tables to ``device`` (in place) and returns ``self``."""
        for name in ("labels", "sorted_indices", "class_counts", "class_starts", "position_in_class"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def draw(self, indices: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Returns ``LongTensor[B, k]`` of training indices sharing the label of each ``indices[b]``.

        ``indices``: ``[B]`` training indices of the current batch (on the sampler's device).
        ``generator``: optional, on the same device. Rules: see the class docstring.
        """
        indices = indices.to(self.labels.device)
        batch = indices.numel()
        if k == 0:
            return indices.new_empty((batch, 0))
        labels = self.labels[indices]
        starts = self.class_starts[labels]
        counts = self.class_counts[labels]

        in_batch = torch.zeros(self.num_samples, dtype=torch.bool, device=indices.device)
        in_batch.index_fill_(0, indices, True)
        outside_sorted = ~in_batch[self.sorted_indices]
        # outside_before[p]: number of non-batch images among sorted positions [0, p).
        outside_before = torch.cat([outside_sorted.new_zeros(1, dtype=torch.long), torch.cumsum(outside_sorted, 0)])
        outside_in_class = outside_before[starts + counts] - outside_before[starts]

        use_outside = outside_in_class >= k
        pool_sizes = torch.where(use_outside, outside_in_class, counts - 1)
        offsets = _uniform_offsets(pool_sizes, k, generator)

        # Rule 1: the offset-th non-batch member of the block, i.e. the position where the
        # running count of non-batch images reaches (count before the block) + offset + 1.
        targets = outside_before[starts].unsqueeze(1) + offsets + 1
        outside_positions = torch.searchsorted(outside_before, targets) - 1
        # Rule 2: the offset-th member of the block once the anchor's own slot is skipped.
        self_positions = self.position_in_class[indices].unsqueeze(1)
        other_positions = starts.unsqueeze(1) + offsets + (offsets >= self_positions).long()
        # Rule 3: the anchor itself (a one-image class has it at the block start).
        singleton = (counts == 1).unsqueeze(1)
        sorted_positions = torch.where(
            use_outside.unsqueeze(1),
            outside_positions,
            torch.where(singleton, starts.unsqueeze(1).expand(-1, k), other_positions),
        )
        return self.sorted_indices[sorted_positions]


def _uniform_offsets(pool_sizes: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """``[B, k]`` offsets in ``[0, pool_sizes[b])``: a uniform k-subset (in random order) where
    ``pool_sizes[b] >= k``, uniform with replacement where ``1 <= pool_sizes[b] < k``, zeros
    where the pool is empty. Loops over the k draws only; each draw is vectorised over B.

    Without replacement, draw ``j`` picks a uniform rank among the ``pool - j`` unused offsets and
    turns it into an offset by stepping over the already used offsets in ascending order.
    """
    batch = pool_sizes.numel()
    uniforms = torch.rand((batch, k), generator=generator, device=pool_sizes.device, dtype=torch.float64)
    distinct = pool_sizes >= k
    offsets = pool_sizes.new_zeros((batch, k))
    for draw_index in range(k):
        remaining = torch.where(distinct, pool_sizes - draw_index, pool_sizes).clamp_min(1)
        offset = (uniforms[:, draw_index] * remaining).long().minimum(remaining - 1)
        used_ascending = offsets[:, :draw_index].sort(dim=1).values
        for column in range(draw_index):
            offset = offset + (distinct & (offset >= used_ascending[:, column])).long()
        offsets[:, draw_index] = offset
    return offsets
