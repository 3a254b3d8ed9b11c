"""Balanced contrastive loss against loop references of the BCL paper (eqs. 6-9) and its reference
code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ltcore_bcl.loss import balanced_contrastive_loss

from ltcore.losses import supcon_loss

RTOL = 1e-5
ABLATIONS = [
    pytest.param({"averaging": "L1"}, id="L1"),
    pytest.param({"averaging": "L2"}, id="L2"),
    pytest.param({"averaging": "L3"}, id="L3"),
    pytest.param({"class_complement": False}, id="no-complement"),
    pytest.param({"class_averaging": False}, id="no-averaging"),
    pytest.param({"class_complement": False, "class_averaging": False}, id="supcon"),
    pytest.param({"class_complement": False, "averaging": "L2"}, id="L2-no-complement"),
]


def assert_relative(actual: torch.Tensor, expected: float) -> None:
    value = float(actual.detach())
    assert math.isfinite(value)
    assert abs(value - expected) <= RTOL * abs(expected), (value, expected)


def dot(u, v) -> float:
    return sum(a * b for a, b in zip(u, v))


def slow_bcl(
    embeddings,
    labels,
    prototypes,
    temperature,
    *,
    logit_bias=None,
    prototype_bias=None,
    averaging="L1",
    class_complement=True,
    class_averaging=True,
) -> float:
    """Loop form of the paper's equations, one anchor and one contrast entry at a time.

    L1 is eq. 9 (eq. 6 without complement): ``sum_j 1/(|B_j|+1) sum_{k in B_j + c_j}``
    with ``|B_j|`` one less for the anchor's own class; L2 is eq. 7; L3 is eq. 8.
    """
    rows, protos, row_labels = embeddings.tolist(), prototypes.tolist(), labels.tolist()
    num_classes = len(protos)
    anchor_losses = []
    for i, y in enumerate(row_labels):
        # (logit, class) of every contrast entry of anchor i
        entries = []
        for k, label in enumerate(row_labels):
            if k != i:
                bias = float(logit_bias[i][k]) if logit_bias is not None else 0.0
                entries.append((dot(rows[i], rows[k]) / temperature + bias, label))
        prototype_logits = []
        for c in range(num_classes):
            bias = float(prototype_bias[i][c]) if prototype_bias is not None else 0.0
            prototype_logits.append(dot(rows[i], protos[c]) / temperature + bias)
        if averaging == "L3":
            denominator = sum(math.exp(s) for s in prototype_logits)
            anchor_losses.append(-math.log(math.exp(prototype_logits[y]) / denominator))
            continue
        if class_complement:
            entries += [(s, c) for c, s in enumerate(prototype_logits)]
        positives = [s for s, label in entries if label == y]
        if not positives:
            continue
        if not class_averaging:
            denominator = sum(math.exp(s) for s, _ in entries)
        else:
            denominator = 0.0
            for j in range(num_classes):
                members = [s for s, label in entries if label == j]
                if not members:
                    continue
                if averaging == "L1":
                    denominator += sum(math.exp(s) for s in members) / len(members)
                else:
                    denominator += math.exp(sum(members) / len(members))
        terms = [-math.log(math.exp(s) / denominator) for s in positives]
        anchor_losses.append(sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses) if anchor_losses else 0.0


def slow_bcl_reference_code_form(embeddings, labels, prototypes, temperature) -> float:
    """The public reference code's per-entry weighting, in loops.

    ``cnt(c) = (rows of class c) + 1`` (both views plus the prototype), an entry ``j`` of
    anchor ``i`` is divided by ``cnt(y_j) - [y_j = y_i]``, the denominator runs over every
    entry but the anchor, the numerator is not divided, and the loss is the mean over the
    rows of the per-anchor mean over positives.
    """
    rows, protos, row_labels = embeddings.tolist(), prototypes.tolist(), labels.tolist()
    contrast = [(row, label) for row, label in zip(rows, row_labels)] + [
        (p, c) for c, p in enumerate(protos)
    ]
    count = [row_labels.count(c) + 1 for c in range(len(protos))]
    total = 0.0
    for i, y in enumerate(row_labels):
        denominator, positive_logits = 0.0, []
        for j, (vector, label) in enumerate(contrast):
            if j == i:
                continue
            logit = dot(rows[i], vector) / temperature
            same = label == y
            denominator += math.exp(logit) / (count[label] - (1 if same else 0))
            if same:
                positive_logits.append(logit)
        total += -sum(s - math.log(denominator) for s in positive_logits) / len(positive_logits)
    return total / len(row_labels)


def long_tailed_two_view_batch(seed: int, num_classes: int = 7, dim: int = 6):
    """Two views of 8 images: one class with 4 images, one with 2, two singletons, 3 absent."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_classes, generator=generator)
    image_labels = torch.cat([order[0].repeat(4), order[1].repeat(2), order[2:4]])
    image_labels = image_labels[torch.randperm(len(image_labels), generator=generator)]
    labels = image_labels.repeat(2)
    embeddings = F.normalize(
        torch.randn(len(labels), dim, generator=generator, dtype=torch.float64), dim=1
    )
    prototypes = F.normalize(
        torch.randn(num_classes, dim, generator=generator, dtype=torch.float64), dim=1
    )
    return embeddings, labels, prototypes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_matches_slow_reference(seed, ablation):
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed)
    expected = slow_bcl(embeddings, labels, prototypes, 0.1, **ablation)
    assert_relative(
        balanced_contrastive_loss(embeddings, labels, prototypes, 0.1, **ablation), expected
    )


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_matches_slow_reference_with_biases(ablation):
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed=5)
    generator = torch.Generator().manual_seed(6)
    num_rows, num_classes = len(labels), len(prototypes)
    logit_bias = torch.randn(num_rows, num_rows, generator=generator, dtype=torch.float64)
    prototype_bias = torch.randn(num_rows, num_classes, generator=generator, dtype=torch.float64)
    expected = slow_bcl(
        embeddings,
        labels,
        prototypes,
        0.2,
        logit_bias=logit_bias.tolist(),
        prototype_bias=prototype_bias.tolist(),
        **ablation,
    )
    loss = balanced_contrastive_loss(
        embeddings,
        labels,
        prototypes,
        0.2,
        logit_bias=logit_bias,
        prototype_bias=prototype_bias,
        **ablation,
    )
    assert_relative(loss, expected)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_single_view_rows_with_singleton_class(ablation):
    # rows need not be views: class 3 has a single row, so without prototypes it has no positive.
    labels = torch.tensor([0, 0, 1, 3, 1, 1, 0, 2, 2, 4, 0])
    generator = torch.Generator().manual_seed(9)
    embeddings = F.normalize(
        torch.randn(len(labels), 5, generator=generator, dtype=torch.float64), dim=1
    )
    prototypes = F.normalize(torch.randn(6, 5, generator=generator, dtype=torch.float64), dim=1)
    expected = slow_bcl(embeddings, labels, prototypes, 0.3, **ablation)
    assert_relative(
        balanced_contrastive_loss(embeddings, labels, prototypes, 0.3, **ablation), expected
    )


@pytest.mark.parametrize("seed", [0, 3])
def test_default_matches_reference_code_weighting(seed):
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed)
    expected = slow_bcl_reference_code_form(embeddings, labels, prototypes, 0.1)
    assert_relative(balanced_contrastive_loss(embeddings, labels, prototypes, 0.1), expected)
    assert_relative(torch.tensor(slow_bcl(embeddings, labels, prototypes, 0.1)), expected)


def test_without_complement_and_averaging_is_supcon():
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed=4)
    loss = balanced_contrastive_loss(
        embeddings, labels, prototypes, 0.1, class_complement=False, class_averaging=False
    )
    torch.testing.assert_close(loss, supcon_loss(embeddings, labels, 0.1))


def simplex_vertices(num_classes: int) -> torch.Tensor:
    """Centred one-hot rows, normalised: pairwise inner products -1/(K-1)."""
    centred = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return F.normalize(centred, dim=1)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("averaging", ["L1", "L2"])
def test_simplex_attains_class_independent_bound(temperature, averaging):
    num_classes = 5
    vertices = simplex_vertices(num_classes)
    expected = math.log(
        1 + (num_classes - 1) * math.exp(-num_classes / ((num_classes - 1) * temperature))
    )
    generator = torch.Generator().manual_seed(0)
    profiles = [[6, 1, 0, 2, 0], [1, 1, 1, 1, 1], [0, 0, 9, 0, 1]]
    profiles += [
        torch.randint(0, 7, (num_classes,), generator=generator).tolist() for _ in range(4)
    ]
    supcon_values = []
    for profile in profiles:
        if sum(profile) == 0:
            continue
        image_labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(profile))
        labels = image_labels.repeat(2)
        embeddings = vertices[labels]
        loss = balanced_contrastive_loss(
            embeddings, labels, vertices, temperature, averaging=averaging
        )
        assert_relative(loss, expected)
        supcon_values.append(float(supcon_loss(embeddings, labels, temperature)))
    assert abs(supcon_values[0] - supcon_values[2]) > 1e-3


def test_gradcheck():
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed=8, num_classes=5, dim=4)
    embeddings.requires_grad_()
    prototypes.requires_grad_()
    for ablation in ABLATIONS:
        options = ablation.values[0]
        assert torch.autograd.gradcheck(
            lambda z, p: balanced_contrastive_loss(z, labels, p, 0.5, **options),
            (embeddings, prototypes),
        ), options


def test_hand_computed():
    # images a (class 0) and b (class 1), two views each, view-major: rows a1, b1, a2, b2.
    embeddings = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.6, 0.8]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 0, 1])
    prototypes = torch.tensor([[0.8, 0.6], [-0.8, 0.6]], dtype=torch.float64)
    t = 0.5
    e = lambda s: math.exp(s / t)  # noqa: E731
    # each class has 2 rows + 1 prototype = 3 entries; the anchor's own class has 2 left.
    # a1: own a2 (0.6), c0 (0.8); other b1 (0), b2 (-0.6), c1 (-0.8)
    d_a1 = (e(0.6) + e(0.8)) / 2 + (e(0.0) + e(-0.6) + e(-0.8)) / 3
    loss_a1 = -((0.6 / t - math.log(d_a1)) + (0.8 / t - math.log(d_a1))) / 2
    # b1: own b2 (0.8), c1 (0.6); other a1 (0), a2 (0.8), c0 (0.6)
    d_b1 = (e(0.8) + e(0.6)) / 2 + (e(0.0) + e(0.8) + e(0.6)) / 3
    loss_b1 = -((0.8 / t - math.log(d_b1)) + (0.6 / t - math.log(d_b1))) / 2
    # a2: own a1 (0.6), c0 (0.96); other b1 (0.8), b2 (0.28), c1 (0)
    d_a2 = (e(0.6) + e(0.96)) / 2 + (e(0.8) + e(0.28) + e(0.0)) / 3
    loss_a2 = -((0.6 / t - math.log(d_a2)) + (0.96 / t - math.log(d_a2))) / 2
    # b2: own b1 (0.8), c1 (0.96); other a1 (-0.6), a2 (0.28), c0 (0)
    d_b2 = (e(0.8) + e(0.96)) / 2 + (e(-0.6) + e(0.28) + e(0.0)) / 3
    loss_b2 = -((0.8 / t - math.log(d_b2)) + (0.96 / t - math.log(d_b2))) / 2
    expected = (loss_a1 + loss_b1 + loss_a2 + loss_b2) / 4
    assert_relative(balanced_contrastive_loss(embeddings, labels, prototypes, t), expected)


def test_half_inputs_compute_in_float32():
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed=1)
    loss = balanced_contrastive_loss(embeddings.bfloat16(), labels, prototypes.bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss,
        balanced_contrastive_loss(
            embeddings.bfloat16().float(), labels, prototypes.bfloat16().float(), 0.1
        ),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"averaging": "L4"},
        {"averaging": "L2", "class_averaging": False},
        {"averaging": "L3", "class_complement": False},
    ],
)
def test_rejects_inconsistent_options(options):
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed=0)
    with pytest.raises(ValueError):
        balanced_contrastive_loss(embeddings, labels, prototypes, 0.1, **options)


@pytest.mark.parametrize("averaging", ["L1", "L2"])
@pytest.mark.parametrize("class_complement", [True, False])
def test_many_classes_mostly_absent_match_slow_reference(averaging, class_complement):
    # 120 classes, 4 of them in the batch: the per-class counts and sums scale with the batch
    embeddings, labels, prototypes = long_tailed_two_view_batch(seed=11, num_classes=120, dim=8)
    options = {"averaging": averaging, "class_complement": class_complement}
    expected = slow_bcl(embeddings, labels, prototypes, 0.1, **options)
    assert_relative(balanced_contrastive_loss(embeddings, labels, prototypes, 0.1, **options),
                    expected)
