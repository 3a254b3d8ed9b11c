"""Coreset selection for ProCo's prototypes: per-class k-center greedy (farthest-point) selection.

ProCo averages the embeddings of a coreset per class, so the coreset should cover each class's
region of the embedding space. Per class, k-center greedy (Sener & Savarese, 2018) adds the
point farthest from the points chosen so far; its coverage radius
``max_x min_{s in S} ||x - s||`` is at most twice the optimal radius of any subset of that size.

Why not GLISTER, the paper's choice (Killamsetty et al., 2021): GLISTER picks the subset that
maximises the log-likelihood on a held-out validation set after one gradient step on the subset,
a bi-level problem solved greedily with a Taylor approximation and re-run every few epochs. It
needs a labelled validation split (CIFAR-LT has none to spare in its tail classes), per-sample
gradients of a supervised loss (the contrastive pre-training stage has no classifier), and an
inner learning rate, selection interval and budget that the paper does not give. That is
expensive and underspecified; k-center greedy needs only the embeddings and the class partition,
is deterministic, and costs ``O(budget * n * D)`` per class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def k_center_greedy(features: Tensor, budget: int, generator: torch.Generator | None = None) -> Tensor:
    """Farthest-point selection: ``LongTensor[min(budget, n)]`` row indices of ``features [n, D]``
    in selection order.

    Start: without ``generator``, the point nearest the mean of ``features`` (deterministic, and a
    central start keeps the first centre representative of the class); with ``generator``, a
    uniformly random point. Then repeatedly the point with the largest squared Euclidean distance to
    its nearest selected point (lowest index on ties; already selected points are never repeated,
    so duplicates are picked only when nothing else is left).
    """
    num_points = features.shape[0]
    budget = min(budget, num_points)
    selected = torch.empty(max(budget, 0), dtype=torch.long, device=features.device)
    if budget <= 0:
        return selected
    if generator is None:
        centre_distances = (features - features.mean(dim=0)).pow(2).sum(dim=1)
        current = centre_distances.argmin()
    else:
        current = torch.randint(num_points, (), generator=generator, device=features.device)
    nearest = torch.full((num_points,), float("inf"), dtype=features.dtype, device=features.device)
    for step in range(budget):
        if step > 0:
            current = nearest.argmax()
        selected[step] = current
        nearest = torch.minimum(nearest, (features - features[current]).pow(2).sum(dim=1))
        nearest[current] = float("-inf")
    return selected


def select_coreset(
    features: Tensor,
    labels: Tensor,
    *,
    per_class_fraction: float | None = None,
    per_class_budget: int | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """Per-class k-center greedy coreset: sorted ``LongTensor`` of selected row indices.

    ``features [n, D]``, ``labels [n]``. Give exactly one size rule:
    ``per_class_fraction`` f keeps ``clamp(ceil(f * n_c), 1, n_c)`` points of class c (every
    present class keeps at least one, so each gets a prototype); ``per_class_budget`` b keeps
    ``min(b, n_c)`` (a balanced coreset, tail classes kept whole).

    Runs every class at once (segment arg-max over the class partition), one step per selected
    point of the largest class; the selection equals ``k_center_greedy`` (mean start) applied to
    each class's rows.
    """
    if (per_class_fraction is None) == (per_class_budget is None):
        raise ValueError("give exactly one of per_class_fraction and per_class_budget")
    num_points = features.shape[0]
    device = features.device
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if num_points else 0
    counts = torch.bincount(labels, minlength=num_classes)
    if per_class_fraction is not None:
        if not 0.0 < per_class_fraction <= 1.0:
            raise ValueError(f"per_class_fraction must be in (0, 1], got {per_class_fraction}")
        budgets = torch.minimum(torch.ceil(counts * per_class_fraction).long().clamp_min(1), counts)
    else:
        if per_class_budget < 0:
            raise ValueError(f"per_class_budget must be non-negative, got {per_class_budget}")
        budgets = counts.clamp_max(per_class_budget)
    num_steps = int(budgets.max()) if num_classes else 0

    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    means = sums / counts.clamp_min(1).to(features.dtype).unsqueeze(1)
    centre_distances = (features - means[labels]).pow(2).sum(dim=1)
    current = _segment_argmax(-centre_distances, labels, num_classes)

    selected = torch.zeros(num_points + 1, dtype=torch.bool, device=device)
    nearest = torch.full((num_points,), float("inf"), dtype=features.dtype, device=device)
    for step in range(num_steps):
        if step > 0:
            current = _segment_argmax(nearest, labels, num_classes)
        active = budgets > step
        selected[torch.where(active, current, num_points)] = True
        centres = features[current.clamp_max(num_points - 1)]
        distances = (features - centres[labels]).pow(2).sum(dim=1)
        nearest = torch.where(active[labels], torch.minimum(nearest, distances), nearest)
        nearest = nearest.masked_fill(selected[:num_points], float("-inf"))
    return selected[:num_points].nonzero().squeeze(1)


def coverage_radius(features: Tensor, centres: Tensor) -> Tensor:
    """``max_x min_{s in centres} ||x - s||`` for ``features [n, D]`` and ``centres [m, D]`` (0-d)."""
    return torch.cdist(features, centres).min(dim=1).values.max()


def _segment_argmax(values: Tensor, segments: Tensor, num_segments: int) -> Tensor:
    """``[num_segments]``: per segment, the lowest index attaining the segment's maximum of
    ``values [n]`` (``n`` for an empty segment)."""
    num_points = values.shape[0]
    segment_max = values.new_full((num_segments,), -math.inf).scatter_reduce(
        0, segments, values, reduce="amax", include_self=True
    )
    positions = torch.arange(num_points, device=values.device)
    at_max = torch.where(values == segment_max[segments], positions, num_points)
    return positions.new_full((num_segments,), num_points).scatter_reduce(
        0, segments, at_max, reduce="amin", include_self=True
    )
