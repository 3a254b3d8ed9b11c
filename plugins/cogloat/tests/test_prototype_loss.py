import math

import pytest
import torch
import torch.nn.functional as F

from ltcore_cogloat.loss import class_prototypes, prototype_loss


def _reference_prototype_loss(views, labels, prototype_sets, temperatures, present=None):
    """-1/(4N) sum_i sum_v sum_q log e^{v.c_iq/tau} / (e^{v.c_iq/tau} + sum_{c in C_q^-} e^{v.c/tau})."""
    classes = prototype_sets[0].shape[0]
    present = [True] * classes if present is None else present
    total, anchors = 0.0, 0
    for i in range(labels.shape[0]):
        own = int(labels[i])
        if not present[own]:
            continue
        anchors += 1
        tau = temperatures[i]
        for view in range(2):
            v = views[view, i]
            for prototypes in prototype_sets:
                positive = math.exp(float(v @ prototypes[own]) / tau)
                others = sum(
                    math.exp(float(v @ prototypes[c]) / tau) for c in range(classes) if c != own and present[c]
                )
                total += math.log(positive / (positive + others))
    return -total / (4 * anchors)


def _random_case(seed, samples=7, classes=4, dim=5):
    generator = torch.Generator().manual_seed(seed)
    views = F.normalize(torch.randn(2, samples, dim, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.randint(classes, (samples,), generator=generator)
    prototypes_1 = F.normalize(torch.randn(classes, dim, generator=generator, dtype=torch.float64), dim=-1)
    prototypes_2 = F.normalize(torch.randn(classes, dim, generator=generator, dtype=torch.float64), dim=-1)
    return views, labels, prototypes_1, prototypes_2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_anchor", [False, True])
def test_prototype_loss_matches_loop_reference(seed, per_anchor):
    views, labels, prototypes_1, prototypes_2 = _random_case(seed)
    if per_anchor:
        generator = torch.Generator().manual_seed(seed)
        temperature = 0.1 + 0.9 * torch.rand(labels.shape[0], generator=generator, dtype=torch.float64)
        temperatures = temperature.tolist()
    else:
        temperature = 0.2
        temperatures = [0.2] * labels.shape[0]
    loss = prototype_loss(views, labels, prototypes_1, prototypes_2, temperature)
    expected = _reference_prototype_loss(views, labels, (prototypes_1, prototypes_2), temperatures)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_prototype_loss_with_absent_classes_matches_reference():
    views, labels, prototypes_1, prototypes_2 = _random_case(3, samples=9)
    present = [True, False, True, True]
    loss = prototype_loss(views, labels, prototypes_1, prototypes_2, 0.3, class_mask=torch.tensor(present))
    expected = _reference_prototype_loss(views, labels, (prototypes_1, prototypes_2), [0.3] * 9, present)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    all_present = torch.ones(4, dtype=torch.bool)
    everything = prototype_loss(views, labels, prototypes_1, prototypes_2, 0.3, class_mask=all_present)
    unmasked = prototype_loss(views, labels, prototypes_1, prototypes_2, 0.3)
    assert float(everything) == pytest.approx(float(unmasked), rel=1e-12)


def test_prototype_loss_hand_computed():
    # One sample of class 0, both views (1, 0); set 1 prototypes (1, 0), (0, 1); set 2 prototypes
    # (0, 1), (-1, 0); tau = 1. Set 1: -log(e / (e + 1)); set 2: -log(1 / (1 + e^-1)); each twice.
    views = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([0])
    prototypes_1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    prototypes_2 = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    e = math.e
    expected = (2 * -math.log(e / (e + 1)) + 2 * -math.log(1 / (1 + 1 / e))) / 4
    loss = prototype_loss(views, labels, prototypes_1, prototypes_2, 1.0)
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_class_prototypes_are_normalised_class_means():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(12, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 2, 2, 0, 0, 2, 2, 0, 2, 0, 0, 2])
    prototypes = class_prototypes(embeddings, labels, num_classes=4)
    assert prototypes.shape == (4, 3)
    for label in range(4):
        rows = [embeddings[i] for i in range(12) if int(labels[i]) == label]
        if not rows:
            assert torch.equal(prototypes[label], torch.zeros(3, dtype=torch.float64))
            continue
        mean = [sum(float(row[d]) for row in rows) / len(rows) for d in range(3)]
        norm = math.sqrt(sum(value * value for value in mean))
        assert prototypes[label].tolist() == pytest.approx([value / norm for value in mean], rel=1e-10)
    # Hand case: mean of (2, 0) and (0, 2) is (1, 1), normalised (1/sqrt 2, 1/sqrt 2).
    hand = class_prototypes(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]), num_classes=1)
    torch.testing.assert_close(hand, torch.full((1, 2), 1 / math.sqrt(2)))
