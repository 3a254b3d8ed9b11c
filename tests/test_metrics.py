"""Evaluation metrics against hand-computed cases and direct computations."""

import math

import numpy as np
import pytest
import torch

from ltcore.metrics import (
    calinski_harabasz,
    confusion_matrix,
    davies_bouldin,
    expected_calibration_error,
    group_accuracy,
    harmonic_mean_accuracy,
    per_class_accuracy,
    shifted_test_indices,
    shot_groups,
)

PREDICTIONS = torch.tensor([0, 1, 1, 2, 2, 2])
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def close(actual, expected, rtol=1e-5):
    return math.isclose(float(actual), float(expected), rel_tol=rtol, abs_tol=1e-12)


# ---------------------------------------------------------------- accuracy


def test_per_class_accuracy_hand_case():
    # class 0: 1 of 2, class 1: 1 of 2, class 2: 2 of 2, class 3: no samples -> NaN
    accuracy = per_class_accuracy(PREDICTIONS, LABELS, 4)
    assert accuracy[:3].tolist() == [0.5, 0.5, 1.0]
    assert math.isnan(accuracy[3])
    assert torch.equal(per_class_accuracy(PREDICTIONS.numpy(), LABELS.numpy(), 4)[:3], accuracy[:3])


def test_confusion_matrix_hand_case():
    expected = [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    matrix = confusion_matrix(PREDICTIONS, LABELS, 4)
    assert matrix.tolist() == expected
    assert matrix.dtype == torch.long
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=generator)
    predictions = torch.randint(0, 6, (300,), generator=generator)
    reference = sk_confusion_matrix(labels.numpy(), predictions.numpy(), labels=list(range(6)))
    assert confusion_matrix(predictions, labels, 6).tolist() == reference.tolist()
    diagonal_accuracy = confusion_matrix(predictions, labels, 6).diag() / torch.bincount(labels, minlength=6)
    assert torch.allclose(per_class_accuracy(predictions, labels, 6), diagonal_accuracy.float())


def test_shot_group_boundaries():
    counts = torch.tensor([500, 101, 100, 50, 20, 19, 1])
    groups = shot_groups(counts)
    assert groups["many"].tolist() == [0, 1]
    assert groups["medium"].tolist() == [2, 3, 4]  # exactly 100 and exactly 20 are medium
    assert groups["few"].tolist() == [5, 6]
    custom = shot_groups(counts, many=50, few=100)
    assert custom["many"].tolist() == [0, 1, 2] and custom["few"].tolist() == [3, 4, 5, 6]
    assert custom["medium"].numel() == 0


def test_group_accuracy_hand_case_and_empty_groups():
    counts = torch.tensor([500, 101, 100, 50, 20, 19, 1])
    accuracy = torch.tensor([0.9, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0])
    figures = group_accuracy(accuracy, shot_groups(counts))
    assert close(figures["many"], 0.85)  # (0.9 + 0.8) / 2
    assert close(figures["medium"], 0.5)  # (0.6 + 0.5 + 0.4) / 3
    assert close(figures["few"], 0.1)  # (0.2 + 0.0) / 2
    only_many = group_accuracy(torch.tensor([0.7, 0.9]), shot_groups(torch.tensor([300, 200])))
    assert set(only_many) == {"many"} and close(only_many["many"], 0.8)


def test_harmonic_mean_hand_case():
    # 3 / (1/0.5 + 1/1 + 1/0.25) = 3 / 7
    assert close(harmonic_mean_accuracy(torch.tensor([0.5, 1.0, 0.25], dtype=torch.float64)), 3 / 7)
    assert close(harmonic_mean_accuracy(torch.full((4,), 0.6)), 0.6)
    # a class at 0: the formula's limit, exactly 0
    assert float(harmonic_mean_accuracy(torch.tensor([0.0, 0.9, 0.8], dtype=torch.float64))) == 0.0
    assert float(harmonic_mean_accuracy(torch.zeros(3, dtype=torch.float64))) == 0.0


# ---------------------------------------------------------------- calibration


def slow_ece(probabilities, labels, bins):
    total = len(labels)
    buckets = [[] for _ in range(bins)]
    for row, label in zip(probabilities.tolist(), labels.tolist()):
        confidence = max(row)
        prediction = row.index(confidence)
        bucket = max(0, math.ceil(confidence * bins) - 1)  # (b/bins, (b+1)/bins]
        buckets[bucket].append((confidence, float(prediction == label)))
    ece = 0.0
    for members in buckets:
        if members:
            accuracy = sum(correct for _, correct in members) / len(members)
            confidence = sum(conf for conf, _ in members) / len(members)
            ece += len(members) / total * abs(accuracy - confidence)
    return ece


def test_ece_constructed_case():
    # bin (0.8, 0.9]: two samples at 0.85, one correct -> |0.5 - 0.85| * 2/4 = 0.175
    # bin (0.5, 0.6]: two samples at 0.55, both correct -> |1 - 0.55| * 2/4 = 0.225
    probabilities = torch.tensor(
        [[0.85, 0.10, 0.05], [0.85, 0.05, 0.10], [0.30, 0.55, 0.15], [0.15, 0.30, 0.55]],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 1, 2])
    assert close(expected_calibration_error(probabilities, labels, bins=10), 0.4)
    # calibrated: confidence 0.75 everywhere and 3 of 4 correct -> 0
    calibrated = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    calibrated_ece = expected_calibration_error(calibrated, torch.tensor([0, 0, 0, 1]), bins=10)
    assert float(calibrated_ece) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("bins", [5, 15])
def test_ece_matches_slow_reference(bins):
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.softmax(3 * torch.randn(500, 7, generator=generator, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 7, (500,), generator=generator)
    assert close(expected_calibration_error(probabilities, labels, bins=bins), slow_ece(probabilities, labels, bins))


# ---------------------------------------------------------------- shifted test sets

FORWARD_50 = [200, 129, 83, 54, 35, 22, 14, 9, 6, 4]
FORWARD_10 = [200, 154, 119, 92, 71, 55, 43, 33, 25, 20]


@pytest.mark.parametrize(
    "ratio, expected",
    [
        (50, FORWARD_50),
        (10, FORWARD_10),
        (1, [200] * 10),
        (1 / 10, FORWARD_10[::-1]),
        (1 / 50, FORWARD_50[::-1]),
    ],
)
def test_shifted_test_set_class_counts(ratio, expected):
    labels = torch.arange(10).repeat(200)[torch.randperm(2000, generator=torch.Generator().manual_seed(0))]
    indices = shifted_test_indices(labels, ratio, torch.Generator().manual_seed(1))
    assert torch.bincount(labels[indices], minlength=10).tolist() == expected
    assert torch.equal(indices, indices.unique())  # ascending, no repeats


def test_shifted_test_set_is_random_and_deterministic():
    labels = torch.arange(10).repeat(200)
    first = shifted_test_indices(labels, 50, torch.Generator().manual_seed(3))
    again = shifted_test_indices(labels, 50, torch.Generator().manual_seed(3))
    other = shifted_test_indices(labels, 50, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(shifted_test_indices(labels, 1, torch.Generator()), torch.arange(2000))


# ---------------------------------------------------------------- cluster indices


def clustered_embeddings(seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9 + [3] * 4)
    centres = 2.0 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
    embeddings = centres[labels] + torch.randn(labels.numel(), 5, generator=generator, dtype=torch.float64)
    return embeddings, labels


def test_calinski_harabasz_matches_direct_computation():
    embeddings, labels = clustered_embeddings()
    x, y = embeddings.numpy(), labels.numpy()
    classes = np.unique(y)
    overall = x.mean(axis=0)
    between = sum((y == k).sum() * np.sum((x[y == k].mean(axis=0) - overall) ** 2) for k in classes)
    within = sum(np.sum((x[y == k] - x[y == k].mean(axis=0)) ** 2) for k in classes)
    expected = (between / (len(classes) - 1)) / (within / (len(y) - len(classes)))
    assert close(calinski_harabasz(embeddings, labels), expected)
    assert close(calinski_harabasz(x, y), expected)


def test_davies_bouldin_matches_direct_computation():
    embeddings, labels = clustered_embeddings(1)
    x, y = embeddings.numpy(), labels.numpy()
    classes = np.unique(y)
    centres = [x[y == k].mean(axis=0) for k in classes]
    scatter = [np.linalg.norm(x[y == k] - c, axis=1).mean() for k, c in zip(classes, centres)]
    worst = [
        max((scatter[i] + scatter[j]) / np.linalg.norm(centres[i] - centres[j]) for j in range(len(classes)) if j != i)
        for i in range(len(classes))
    ]
    assert close(davies_bouldin(embeddings, labels), sum(worst) / len(classes))
