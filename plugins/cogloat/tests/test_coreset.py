import itertools
import math

import pytest
import torch

from ltcore_cogloat.coreset import coverage_radius, k_center_greedy, select_coreset


def _brute_force_k_center(points, budget, start=None):
    """Farthest-point selection with explicit loops over points (lowest index on ties)."""
    n, dim = len(points), len(points[0])

    def squared(a, b):
        return sum((a[d] - b[d]) ** 2 for d in range(dim))

    if start is None:
        mean = [sum(point[d] for point in points) / n for d in range(dim)]
        start = min(range(n), key=lambda index: (squared(points[index], mean), index))
    selected = [start]
    while len(selected) < min(budget, n):
        best, best_distance = None, -1.0
        for index in range(n):
            if index in selected:
                continue
            distance = min(squared(points[index], points[chosen]) for chosen in selected)
            if distance > best_distance:
                best, best_distance = index, distance
        selected.append(best)
    return selected


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", [1, 4, 9])
def test_k_center_greedy_matches_brute_force(seed, budget):
    features = torch.randn(25, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    selected = k_center_greedy(features, budget)
    assert selected.tolist() == _brute_force_k_center(features.tolist(), budget)


def test_k_center_greedy_random_start_then_farthest_points():
    features = torch.randn(20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    selected = k_center_greedy(features, 6, generator=torch.Generator().manual_seed(9))
    expected_start = int(torch.randint(20, (), generator=torch.Generator().manual_seed(9)))
    assert selected.tolist() == _brute_force_k_center(features.tolist(), 6, start=expected_start)


def test_k_center_greedy_with_duplicates_and_oversized_budget():
    features = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    selected = k_center_greedy(features, 10)
    assert sorted(selected.tolist()) == [0, 1, 2, 3]
    assert k_center_greedy(features, 0).numel() == 0


@pytest.mark.parametrize("seed", range(5))
def test_k_center_greedy_radius_is_within_twice_the_optimum(seed):
    points = torch.rand(9, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    budget = 3
    optimal = min(
        float(coverage_radius(points, points[list(subset)]))
        for subset in itertools.combinations(range(9), budget)
    )
    greedy = float(coverage_radius(points, points[k_center_greedy(points, budget)]))
    assert greedy <= 2 * optimal + 1e-12


def test_coverage_radius_by_hand():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    assert float(coverage_radius(points, points[[0]])) == pytest.approx(5.0)
    assert float(coverage_radius(points, points[[0, 1]])) == pytest.approx(1.0)


def _per_class_reference(features, labels, budgets):
    selected = []
    for label, budget in enumerate(budgets):
        rows = torch.nonzero(labels == label).squeeze(1)
        selected += rows[k_center_greedy(features[rows], budget)].tolist()
    return sorted(selected)


def test_select_coreset_equals_per_class_k_center_greedy():
    generator = torch.Generator().manual_seed(0)
    sizes = [30, 14, 6, 2, 1]
    labels = torch.cat([torch.full((size,), label) for label, size in enumerate(sizes)])
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    features = torch.randn(labels.numel(), 4, generator=generator, dtype=torch.float64)

    by_fraction = select_coreset(features, labels, per_class_fraction=0.25)
    fraction_budgets = [min(max(math.ceil(0.25 * size), 1), size) for size in sizes]
    assert by_fraction.tolist() == _per_class_reference(features, labels, fraction_budgets)
    assert torch.bincount(labels[by_fraction], minlength=5).tolist() == [8, 4, 2, 1, 1]

    by_budget = select_coreset(features, labels, per_class_budget=5)
    assert by_budget.tolist() == _per_class_reference(features, labels, [5, 5, 5, 2, 1])


def test_select_coreset_skips_empty_classes_and_validates_arguments():
    features = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 0, 2, 2, 2])
    selected = select_coreset(features, labels, per_class_budget=2, num_classes=4)
    assert torch.bincount(labels[selected], minlength=4).tolist() == [2, 0, 2, 0]
    with pytest.raises(ValueError):
        select_coreset(features, labels)
    with pytest.raises(ValueError):
        select_coreset(features, labels, per_class_fraction=0.5, per_class_budget=2)
    with pytest.raises(ValueError):
        select_coreset(features, labels, per_class_fraction=1.5)
