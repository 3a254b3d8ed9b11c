"""CoGloAT's embedding metrics against hand-computed cases and direct computations."""

import itertools
import math

import pytest
import torch
from ltcore_cogloat.embedding_metrics import (
    DEFAULT_READING,
    READINGS,
    class_variances,
    improved_uniformity,
    inter_class_uniformity,
    intra_class_alignment,
)


def close(actual, expected, rtol=1e-5):
    return math.isclose(float(actual), float(expected), rel_tol=rtol, abs_tol=1e-12)


def clustered_embeddings(seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9 + [3] * 4)
    centres = 2.0 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
    embeddings = centres[labels] + torch.randn(labels.numel(), 5, generator=generator,
                                               dtype=torch.float64)
    return embeddings, labels


def unit_circle_case():
    # class 0: (1, 0), (0, 1); class 1: (-1, 0), (0, -1); centres (1/2, 1/2) and (-1/2, -1/2)
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]],
                              dtype=torch.float64)
    return embeddings, torch.tensor([0, 0, 1, 1])


def test_cogloat_metrics_hand_case_squared():
    embeddings, labels = unit_circle_case()
    sq = "squared"
    # each point is at squared distance 1/4 + 1/4 = 1/2 from its centre
    assert torch.allclose(class_variances(embeddings, labels, sq),
                          torch.tensor([0.5, 0.5], dtype=torch.float64))
    # ordered pairs per class: two at squared distance 2, two at 0 -> 4 / 2^2 = 1
    assert close(intra_class_alignment(embeddings, labels, sq), 1.0)
    # ||c_0 - c_1||^2 = 2, two ordered pairs / (2 * 1) -> 2
    assert close(inter_class_uniformity(embeddings, labels, sq), 2.0)
    # 2 / (2 * 1) * (2 / (1/2 + 1/2) + 2 / (1/2 + 1/2)) = 4
    assert close(improved_uniformity(embeddings, labels, sq), 4.0)


def test_cogloat_metrics_hand_case_euclidean():
    embeddings, labels = unit_circle_case()
    half_root = math.sqrt(0.5)
    expected_variances = torch.tensor([half_root] * 2, dtype=torch.float64)
    assert torch.allclose(class_variances(embeddings, labels, reading="euclidean"),
                          expected_variances)
    # two ordered pairs at distance sqrt 2 out of 4 -> sqrt(2) / 2
    assert close(intra_class_alignment(embeddings, labels, reading="euclidean"), math.sqrt(2) / 2)
    assert close(inter_class_uniformity(embeddings, labels, reading="euclidean"), math.sqrt(2))
    # each ordered pair: sqrt 2 / (2 sqrt(1/2)) = 1 -> 2 / 2 * 2 = 2
    assert close(improved_uniformity(embeddings, labels, reading="euclidean"), 2.0)


def slow_cogloat(embeddings, labels, reading):
    """Direct loops over classes, samples and pairs; returns (variances, intra, inter, improved).

    ``reading``: squared (squared distances, ordered pairs), euclidean (Euclidean distances,
    ordered pairs) or euclidean-unordered (Euclidean distances, each pair j < k once)."""
    power = 2 if reading == "squared" else 1
    vectors = []
    for row in embeddings.tolist():
        norm = math.sqrt(sum(value * value for value in row))
        vectors.append([value / norm for value in row])
    members = {}
    for vector, label in zip(vectors, labels.tolist()):
        members.setdefault(label, []).append(vector)
    classes = sorted(members)

    def distance(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))) ** power

    def pairs(vectors):
        if reading == "euclidean-unordered":
            return itertools.combinations(vectors, 2)
        return itertools.product(vectors, repeat=2)

    centres = {k: [sum(column) / len(members[k]) for column in zip(*members[k])] for k in classes}
    variances = {k: sum(distance(v, centres[k]) for v in members[k]) / len(members[k])
                 for k in classes}
    intra = sum(
        sum(distance(a, b) for a, b in pairs(members[k])) / len(members[k]) ** 2
        for k in classes
    ) / len(classes)
    ordered = [(i, j) for i in classes for j in classes if i != j]
    count = len(classes)
    inter = sum(distance(centres[i], centres[j]) for i, j in ordered) / (count * (count - 1))
    improved = 2 / (count * (count - 1)) * sum(
        distance(centres[i], centres[j]) / abs(variances[i] + variances[j]) for i, j in ordered
    )
    return [variances[k] for k in classes], intra, inter, improved


@pytest.mark.parametrize("reading", READINGS)
def test_cogloat_metrics_match_slow_reference(reading):
    embeddings, labels = clustered_embeddings(2)
    labels = labels * 3  # non-contiguous label values: only present classes count
    variances, intra, inter, improved = slow_cogloat(embeddings, labels, reading)
    expected_variances = torch.tensor(variances, dtype=torch.float64)
    assert torch.allclose(class_variances(embeddings, labels, reading=reading),
                          expected_variances)
    assert close(intra_class_alignment(embeddings, labels, reading=reading), intra)
    assert close(inter_class_uniformity(embeddings, labels, reading=reading), inter)
    assert close(improved_uniformity(embeddings, labels, reading=reading), improved)


def test_cogloat_metrics_are_scale_invariant_and_need_two_classes():
    embeddings, labels = clustered_embeddings(3)
    assert close(intra_class_alignment(5.0 * embeddings, labels),
                 intra_class_alignment(embeddings, labels))
    with pytest.raises(ValueError):
        inter_class_uniformity(embeddings, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="reading"):
        class_variances(embeddings, labels, reading="cosine")


def test_default_reading_hand_case():
    # unit circle case, Euclidean: each point at sqrt(1/2) from its centre; one unordered pair
    # per class at distance sqrt 2, over 2^2 -> sqrt(2) / 4
    embeddings, labels = unit_circle_case()
    assert DEFAULT_READING == "euclidean-unordered"
    half_root = math.sqrt(0.5)
    assert torch.allclose(class_variances(embeddings, labels),
                          torch.tensor([half_root] * 2, dtype=torch.float64))
    assert close(intra_class_alignment(embeddings, labels), math.sqrt(2) / 4)
    assert close(inter_class_uniformity(embeddings, labels), math.sqrt(2))
    assert close(improved_uniformity(embeddings, labels), 2.0)


def test_default_reading_three_points_by_hand():
    # one class: (1, 0), (0, 1), (-1, 0); centre (0, 1/3)
    # distances to the centre: sqrt(1 + 1/9) = sqrt(10)/3 twice, 2/3 once
    # unordered pairs: sqrt 2, 2, sqrt 2 -> (2 + 2 sqrt 2) / 9
    # second class: the single point (0, -1): variance 0, intra 0
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]],
                              dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    variance = (2 * math.sqrt(10) / 3 + 2 / 3) / 3
    assert torch.allclose(class_variances(embeddings, labels),
                          torch.tensor([variance, 0.0], dtype=torch.float64))
    intra = (2 + 2 * math.sqrt(2)) / 9
    assert close(intra_class_alignment(embeddings, labels), intra / 2)
    assert close(intra_class_alignment(embeddings, labels, reading="euclidean"), intra)
    assert intra / 2 < variance  # Table 1's relation, per class


@pytest.mark.parametrize("seed", range(3))
def test_only_the_default_reading_puts_intra_below_variance(seed):
    # spread-out classes in many dimensions, as trained features are (Table 1: Intra is
    # 0.65-0.68 times Variance); per class (n-1)/(2n) var <= intra < (n-1)/n var
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(5).repeat_interleave(40)
    centres = torch.randn(5, 64, generator=generator, dtype=torch.float64)
    embeddings = centres[labels] + 0.2 * torch.randn(200, 64, generator=generator,
                                                      dtype=torch.float64)
    ratio = {reading: float(intra_class_alignment(embeddings, labels, reading=reading)
                            / class_variances(embeddings, labels, reading=reading).mean())
             for reading in READINGS}
    assert 39 / 80 <= ratio["euclidean-unordered"] < 39 / 40
    assert abs(ratio["euclidean-unordered"] - 0.5 ** 0.5) < 0.03  # about 1/sqrt 2
    assert ratio["euclidean"] > 1.0
    assert close(ratio["squared"], 2.0)
