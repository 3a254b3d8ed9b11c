"""ICCL's samplers: class frequencies against eq. 2, pairing, registration."""

import math
import types

import pytest
import torch
from ltcore_iccl.samplers import ClassAwareSampler, PairedSampler

from ltcore import PluginError, Plugins

COUNTS = [300, 90, 30, 9, 3]
DRAWS = 200_000


def long_tailed_labels(counts=COUNTS, seed=0):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


def eq2(gamma, counts=COUNTS):
    """p(k) = (1/n_k)^gamma / sum_j (1/n_j)^gamma, written as in the paper."""
    weights = [(1.0 / n) ** gamma for n in counts]
    return [w / sum(weights) for w in weights]


def assert_binomial(observed, probabilities, draws, sigmas=5.0):
    for count, p in zip(observed.tolist(), probabilities):
        mean, std = draws * p, math.sqrt(draws * p * (1.0 - p))
        assert abs(count - mean) <= sigmas * std + 1e-9, (count, mean, std)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_class_aware_frequencies_follow_eq2(gamma):
    labels = long_tailed_labels()
    sampler = ClassAwareSampler(labels, gamma, num_samples=DRAWS)
    indices = sampler.epoch_indices(0, torch.Generator().manual_seed(1))
    assert indices.shape == (DRAWS,) and indices.dtype == torch.long
    assert_binomial(torch.bincount(labels[indices], minlength=len(COUNTS)), eq2(gamma), DRAWS)


def test_class_aware_picks_images_uniformly_within_a_class():
    labels = long_tailed_labels()
    sampler = ClassAwareSampler(labels, 0.0, num_samples=DRAWS)
    indices = sampler.epoch_indices(0, torch.Generator().manual_seed(2))
    members = (labels == 2).nonzero().squeeze(1)
    chosen = indices[labels[indices] == 2]
    per_image = torch.bincount(chosen, minlength=labels.numel())[members]
    assert_binomial(per_image, [1.0 / len(members)] * len(members), len(chosen))


def test_class_aware_defaults_and_reproducibility():
    labels = long_tailed_labels()
    sampler = ClassAwareSampler(labels, 1.0)
    assert len(sampler) == labels.numel() and sampler.gamma == 1.0 and sampler.power == -1.0
    first = sampler.epoch_indices(0, torch.Generator().manual_seed(3))
    again = sampler.epoch_indices(0, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_paired_rows_are_a_permutation_and_a_class_aware_draw():
    labels = long_tailed_labels()
    sampler = PairedSampler(labels, gamma=0.5)
    assert sampler.sources == ("sample", "paired") and len(sampler) == labels.numel()
    generator = torch.Generator().manual_seed(4)
    aware_counts = torch.zeros(len(COUNTS), dtype=torch.long)
    epochs = 300
    for epoch in range(epochs):
        rows = sampler.epoch_indices(epoch, generator)
        assert rows.shape == (labels.numel(), 2) and rows.dtype == torch.long
        assert torch.equal(rows[:, 0].sort().values, torch.arange(labels.numel()))
        aware_counts += torch.bincount(labels[rows[:, 1]], minlength=len(COUNTS))
    assert_binomial(aware_counts, eq2(0.5), epochs * labels.numel())


def test_paired_columns_are_independent():
    # Given the class of the class-agnostic sample, the class-aware class still follows eq. 2.
    labels = long_tailed_labels()
    sampler = PairedSampler(labels, gamma=1.0)
    generator = torch.Generator().manual_seed(5)
    rows = torch.cat([sampler.epoch_indices(e, generator) for e in range(200)])
    for head_class in (0, 4):
        partner = labels[rows[labels[rows[:, 0]] == head_class, 1]]
        assert_binomial(torch.bincount(partner, minlength=len(COUNTS)), eq2(1.0), len(partner))


def _fake_run(labels, sampler="instance-balanced"):
    plugins = Plugins()
    run = types.SimpleNamespace(
        dataset=types.SimpleNamespace(train=types.SimpleNamespace(labels=labels),
                                      num_classes=int(labels.max()) + 1),
        config=types.SimpleNamespace(sampler=sampler))
    run.build = lambda kind, name, **options: plugins.component(kind, name).obj(run, **options)
    return plugins, run


def test_registered_samplers_are_usable_by_name():
    labels = long_tailed_labels()
    plugins, run = _fake_run(labels)
    assert plugins.component("sampler", "class-aware").plugin == "iccl"
    aware = run.build("sampler", "class-aware", gamma=1.0, num_samples=DRAWS)
    indices = aware.epoch_indices(0, torch.Generator().manual_seed(6))
    assert_binomial(torch.bincount(labels[indices], minlength=len(COUNTS)), eq2(1.0), DRAWS)

    paired = run.build("sampler", "iccl-paired", gamma=0.0)
    assert paired.sources == ("sample", "paired") and paired.gamma == 0.0
    assert run.build("sampler", "iccl-paired", agnostic="class-balanced").epoch_indices(
        0, torch.Generator().manual_seed(7)).shape == (labels.numel(), 2)


def test_paired_sampler_rejects_a_paired_class_agnostic_sampler():
    _, run = _fake_run(long_tailed_labels())
    with pytest.raises(PluginError, match="itself"):
        run.build("sampler", "iccl-paired", agnostic="iccl-paired")
