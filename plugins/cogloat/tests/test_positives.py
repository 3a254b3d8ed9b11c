import itertools
from collections import Counter

import pytest
import torch

from ltcore_cogloat.positives import GlobalPositiveSampler

# Class sizes 40, 12, 5, 3, 2, 1: head, medium, tail classes and a one-image class.
CLASS_SIZES = [40, 12, 5, 3, 2, 1]


def _labels(sizes=CLASS_SIZES, seed=0):
    labels = torch.cat([torch.full((size,), label) for label, size in enumerate(sizes)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


def _check_rule(labels, batch, positives, k):
    """Checks every anchor's positives against the documented rule, one anchor at a time."""
    batch_set = set(batch.tolist())
    for anchor, row in zip(batch.tolist(), positives.tolist()):
        label = int(labels[anchor])
        members = [index for index in range(labels.numel()) if int(labels[index]) == label]
        outside = [index for index in members if index not in batch_set]
        assert len(row) == k
        assert all(int(labels[index]) == label for index in row)
        if len(outside) >= k:
            assert all(index in outside for index in row)
            assert len(set(row)) == k
        elif len(members) >= 2:
            assert anchor not in row
            if len(members) - 1 >= k:
                assert len(set(row)) == k
        else:
            assert row == [anchor] * k


@pytest.mark.parametrize("k", [1, 3, 6])
def test_positives_follow_the_rule_on_random_batches(k):
    labels = _labels()
    sampler = GlobalPositiveSampler(labels)
    generator = torch.Generator().manual_seed(1)
    for _ in range(25):
        batch = torch.randperm(labels.numel(), generator=generator)[:16]
        positives = sampler.draw(batch, k, generator)
        assert positives.shape == (16, k)
        assert positives.dtype == torch.long
        _check_rule(labels, batch, positives, k)


def test_fallback_cases_by_hand():
    # class 0: indices 0..3 (4 images), class 1: 4..5 (2 images), class 2: 6 (1 image), class 3: 7..16.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2] + [3] * 10)
    sampler = GlobalPositiveSampler(labels)
    generator = torch.Generator().manual_seed(0)
    batch = torch.tensor([0, 1, 4, 6, 7])
    seen_batch_member = False
    for _ in range(200):
        positives = sampler.draw(batch, 3, generator)
        # Class 0 has 2 images outside the batch (< k = 3): fall back to the 3 other members, distinct.
        assert sorted(positives[0].tolist()) == [1, 2, 3]
        assert sorted(positives[1].tolist()) == [0, 2, 3]
        seen_batch_member |= 1 in positives[0].tolist()
        # Class 1 has one other image: it is repeated (with replacement).
        assert positives[2].tolist() == [5, 5, 5]
        # A one-image class gets the anchor itself.
        assert positives[3].tolist() == [6, 6, 6]
        # Class 3 has 9 images outside the batch: k distinct ones from outside.
        assert len(set(positives[4].tolist())) == 3
        assert set(positives[4].tolist()) <= set(range(8, 17))
    assert seen_batch_member


def test_draws_are_uniform_subsets_of_the_outside_members():
    # Class 0 has 8 images; 2 of them (anchor 0 and index 1) are in the batch, 6 are outside.
    labels = torch.tensor([0] * 8 + [1] * 4)
    sampler = GlobalPositiveSampler(labels)
    draws = 3000
    batch = torch.tensor([0] * draws + [1])
    positives = sampler.draw(batch, 3, torch.Generator().manual_seed(3))[:draws]
    subsets = Counter(tuple(sorted(row)) for row in positives.tolist())
    expected_subsets = list(itertools.combinations(range(2, 8), 3))
    assert set(subsets) == set(expected_subsets)
    expected = draws / len(expected_subsets)
    chi_square = sum((subsets[subset] - expected) ** 2 / expected for subset in expected_subsets)
    assert chi_square < 60.0  # 19 degrees of freedom: far beyond the 0.9999 quantile (~50)
    # Every position of the row is uniform over the 6 members, not only the set.
    for column in range(3):
        counts = torch.bincount(positives[:, column], minlength=8)[2:].double()
        assert torch.all((counts / draws - 1 / 6).abs() < 0.03)


def test_same_generator_seed_gives_same_draw_and_zero_k_is_empty():
    labels = _labels()
    sampler = GlobalPositiveSampler(labels)
    batch = torch.arange(10)
    first = sampler.draw(batch, 4, torch.Generator().manual_seed(7))
    second = sampler.draw(batch, 4, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    assert sampler.draw(batch, 0).shape == (10, 0)


def test_lookup_tables_and_label_validation():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    sampler = GlobalPositiveSampler(labels, num_classes=4)
    assert sampler.class_counts.tolist() == [2, 1, 3, 0]
    assert sampler.class_starts.tolist() == [0, 2, 3, 6]
    assert labels[sampler.sorted_indices].tolist() == [0, 0, 1, 2, 2, 2]
    for index in range(labels.numel()):
        position = sampler.class_starts[labels[index]] + sampler.position_in_class[index]
        assert sampler.sorted_indices[position] == index
    with pytest.raises(ValueError):
        GlobalPositiveSampler(torch.tensor([0, -1]))
    with pytest.raises(ValueError):
        GlobalPositiveSampler(torch.tensor([0, 3]), num_classes=3)
