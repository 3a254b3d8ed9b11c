"""Samplers: empirical class frequencies, within-class uniformity, determinism."""

import math

import pytest
import torch

from ltcore.samplers import (
    ClassPowerSampler,
    InstanceBalancedSampler,
    ProgressivelyBalancedSampler,
    Sampler,
    class_counts,
)

COUNTS = [400, 120, 40, 10, 3]
DRAWS = 200_000


def long_tailed_labels(counts=COUNTS, seed=0):
    """Labels with the given class counts, shuffled so classes are interleaved."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


def assert_binomial(observed, probabilities, draws, sigmas=5.0):
    """Each observed count lies within `sigmas` binomial standard deviations of draws * p."""
    for count, p in zip(observed.tolist(), probabilities):
        mean = draws * p
        std = math.sqrt(draws * p * (1.0 - p))
        assert abs(count - mean) <= sigmas * std + 1e-9, (count, mean, std)


def class_frequencies(sampler, epoch, seed=0):
    indices = sampler.epoch_indices(epoch, torch.Generator().manual_seed(seed))
    return class_counts(sampler.labels[indices], len(COUNTS))


def test_class_counts():
    assert class_counts(torch.tensor([0, 2, 2, 4]), 6).tolist() == [1, 0, 2, 0, 1, 0]
    assert class_counts(long_tailed_labels(), 5).tolist() == COUNTS


def test_instance_balanced_is_a_permutation_each_epoch():
    labels = long_tailed_labels()
    sampler = InstanceBalancedSampler(labels)
    generator = torch.Generator().manual_seed(0)
    first = sampler.epoch_indices(0, generator)
    second = sampler.epoch_indices(1, generator)
    for order in (first, second):
        assert order.dtype == torch.long
        assert torch.equal(order.sort().values, torch.arange(labels.numel()))
    assert not torch.equal(first, second)
    assert len(sampler) == labels.numel()


@pytest.mark.parametrize("power", [1.0, 0.5, 0.0, -0.5, -1.0])
def test_class_power_frequencies_match_power_law(power):
    sampler = ClassPowerSampler(long_tailed_labels(), power, num_samples=DRAWS)
    raw = [n**power for n in COUNTS]
    expected = [value / sum(raw) for value in raw]
    assert torch.allclose(sampler.class_probabilities(0), torch.tensor(expected, dtype=torch.float64))
    assert_binomial(class_frequencies(sampler, 0), expected, DRAWS)


def test_class_power_special_cases():
    labels = long_tailed_labels()
    total = sum(COUNTS)
    assert torch.allclose(
        ClassPowerSampler(labels, 1.0).class_probabilities(0),
        torch.tensor([n / total for n in COUNTS], dtype=torch.float64),
    )
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    assert torch.allclose(ClassPowerSampler(labels, 0.0).class_probabilities(0), uniform)
    # reverse: class with 3 samples is the most likely, ICCL's (1/n)^gamma with gamma = 1
    reverse = ClassPowerSampler(labels, -1.0).class_probabilities(0)
    assert int(reverse.argmax()) == 4


def test_empty_classes_are_never_drawn():
    labels = torch.tensor([0, 0, 0, 2, 2, 4])
    for power in (1.0, 0.0, -1.0):
        sampler = ClassPowerSampler(labels, power, num_samples=5_000, num_classes=6)
        drawn = labels[sampler.epoch_indices(0, torch.Generator().manual_seed(1))]
        counts = class_counts(drawn, 6)
        assert counts[1] == 0 and counts[3] == 0 and counts[5] == 0
        assert sampler.class_probabilities(0)[[1, 3, 5]].sum() == 0
    progressive = ProgressivelyBalancedSampler(labels, total_epochs=4, num_classes=6)
    assert torch.allclose(
        progressive.class_probabilities(4),
        torch.tensor([1 / 3, 0, 1 / 3, 0, 1 / 3, 0], dtype=torch.float64),
    )


@pytest.mark.parametrize("epoch", [0, 50, 100])
def test_progressive_schedule_frequencies(epoch):
    total_epochs = 100
    sampler = ProgressivelyBalancedSampler(long_tailed_labels(), total_epochs, num_samples=DRAWS)
    progress = epoch / total_epochs
    total = sum(COUNTS)
    expected = [(1 - progress) * n / total + progress / len(COUNTS) for n in COUNTS]
    assert torch.allclose(sampler.class_probabilities(epoch), torch.tensor(expected, dtype=torch.float64))
    assert_binomial(class_frequencies(sampler, epoch), expected, DRAWS)


def test_progressive_schedule_endpoints_and_clamping():
    labels = long_tailed_labels()
    sampler = ProgressivelyBalancedSampler(labels, total_epochs=10)
    assert torch.allclose(sampler.class_probabilities(0), ClassPowerSampler(labels, 1.0).class_probabilities(0))
    assert torch.allclose(sampler.class_probabilities(10), ClassPowerSampler(labels, 0.0).class_probabilities(0))
    assert torch.equal(sampler.class_probabilities(25), sampler.class_probabilities(10))
    assert torch.equal(sampler.class_probabilities(-3), sampler.class_probabilities(0))


@pytest.mark.parametrize("sampler_factory", [
    lambda labels: ClassPowerSampler(labels, 0.0, num_samples=DRAWS),
    lambda labels: ProgressivelyBalancedSampler(labels, 10, num_samples=DRAWS),
])
def test_within_class_draws_are_uniform(sampler_factory):
    labels = long_tailed_labels()
    sampler = sampler_factory(labels)
    indices = sampler.epoch_indices(5, torch.Generator().manual_seed(2))
    probabilities = sampler.class_probabilities(5).tolist()
    per_index = torch.bincount(indices, minlength=labels.numel())
    for k, n_k in enumerate(COUNTS):
        members = (labels == k).nonzero().squeeze(1)
        # every member of class k is drawn with probability p(k) / n_k per slot
        assert_binomial(per_index[members], [probabilities[k] / n_k] * n_k, DRAWS)
    assert torch.equal(labels[indices].unique(), torch.arange(len(COUNTS)))


@pytest.mark.parametrize("sampler_factory", [
    InstanceBalancedSampler,
    lambda labels: ClassPowerSampler(labels, 0.5),
    lambda labels: ProgressivelyBalancedSampler(labels, 10),
])
def test_determinism_given_seed(sampler_factory):
    sampler = sampler_factory(long_tailed_labels())
    first = sampler.epoch_indices(3, torch.Generator().manual_seed(7))
    again = sampler.epoch_indices(3, torch.Generator().manual_seed(7))
    other = sampler.epoch_indices(3, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.dtype == torch.long and first.numel() == len(sampler) == sum(COUNTS)
    assert 0 <= int(first.min()) and int(first.max()) < sum(COUNTS)


def test_fixed_epoch_length():
    labels = long_tailed_labels()
    sampler = ProgressivelyBalancedSampler(labels, 10, num_samples=256)
    generator = torch.Generator().manual_seed(0)
    assert [sampler.epoch_indices(epoch, generator).numel() for epoch in range(12)] == [256] * 12


def test_protocol_is_abstract():
    with pytest.raises(NotImplementedError):
        Sampler(torch.tensor([0, 1])).epoch_indices(0, torch.Generator())
