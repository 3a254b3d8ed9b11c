import math

import pytest
import torch
import torch.nn.functional as F

from ltcore_cogloat.loss import (
    GLOBAL_LOSS_VARIANTS,
    adaptive_temperatures,
    global_contrastive_loss,
    sample_bank_positives,
)


def test_adaptive_temperatures_by_hand_and_against_the_formula():
    taus = adaptive_temperatures(torch.tensor([100, 10, 1]), gamma=0.1)
    torch.testing.assert_close(taus, torch.tensor([1.0, 0.19, 0.109]))
    counts = torch.tensor([500.0, 321.0, 77.0, 5.0], dtype=torch.float64)
    gamma = 0.07
    expected = [gamma + (1 - gamma) * float(count) / 500.0 for count in counts]
    assert adaptive_temperatures(counts, gamma).tolist() == pytest.approx(expected, rel=1e-12)
    assert adaptive_temperatures(counts, gamma).dtype == torch.float64
    for bad_gamma in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            adaptive_temperatures(counts, bad_gamma)


def _unit(generator, *shape):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def _inputs(seed, batch=6, k=3, dim=5, queue=9, classes=3):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        queries=_unit(generator, batch, dim),
        keys=_unit(generator, batch, dim),
        positive_keys=_unit(generator, batch, k, dim),
        negatives=_unit(generator, queue, dim),
        labels=torch.randint(classes, (batch,), generator=generator),
        negative_labels=torch.randint(classes, (queue,), generator=generator),
    )


def _bank_entries(inputs, anchor, negatives_valid, include_batch_keys):
    """(column, vector, label) of anchor's bank, columns laid out as [batch keys, queue]."""
    batch = inputs["keys"].shape[0]
    entries = []
    if include_batch_keys:
        for other in range(batch):
            if other != anchor:
                entries.append((other, inputs["keys"][other], int(inputs["labels"][other])))
    offset = batch if include_batch_keys else 0
    for slot in range(inputs["negatives"].shape[0]):
        if negatives_valid is None or bool(negatives_valid[slot]):
            entries.append((offset + slot, inputs["negatives"][slot], int(inputs["negative_labels"][slot])))
    return entries


def _reference_global_loss(inputs, temperatures, variant, negatives_valid, include_batch_keys, kcl_chosen=None):
    """Loops over anchors, positives and negatives: 1/B sum_i 1/|J_i| sum_{j in J_i} l(i, j)."""
    queries, keys, positive_keys, labels = (inputs[name] for name in ("queries", "keys", "positive_keys", "labels"))
    total = 0.0
    for anchor in range(queries.shape[0]):
        tau = temperatures[anchor]
        query = queries[anchor]
        bank = _bank_entries(inputs, anchor, negatives_valid, include_batch_keys)
        positives = [keys[anchor]] + [positive_keys[anchor, j] for j in range(positive_keys.shape[1])]
        own_label = int(labels[anchor])
        if variant == "unsupervised+kglobal":
            negatives = [vector for _, vector, _ in bank]
        elif variant == "supervised+kglobal":
            positives += [vector for _, vector, label in bank if label == own_label]
            negatives = [vector for _, vector, label in bank if label != own_label]
        else:
            positives += [vector for column, vector, _ in bank if kcl_chosen[anchor][column]]
            negatives = [vector for column, vector, _ in bank if not kcl_chosen[anchor][column]]
        negative_sum = sum(math.exp(float(query @ vector) / tau) for vector in negatives)
        anchor_loss = 0.0
        for positive in positives:
            numerator = math.exp(float(query @ positive) / tau)
            anchor_loss += -math.log(numerator / (numerator + negative_sum))
        total += anchor_loss / len(positives)
    return total / queries.shape[0]


def _kcl_candidates(inputs, negatives_valid, include_batch_keys):
    batch = inputs["keys"].shape[0]
    columns = (batch if include_batch_keys else 0) + inputs["negatives"].shape[0]
    candidates = torch.zeros(batch, columns, dtype=torch.bool)
    for anchor in range(batch):
        for column, _, label in _bank_entries(inputs, anchor, negatives_valid, include_batch_keys):
            candidates[anchor, column] = label == int(inputs["labels"][anchor])
    return candidates


@pytest.mark.parametrize("variant", GLOBAL_LOSS_VARIANTS)
@pytest.mark.parametrize("include_batch_keys", [True, False])
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_global_loss_matches_loop_reference(variant, include_batch_keys, adaptive, seed):
    inputs = _inputs(seed)
    negatives_valid = torch.tensor([True] * 6 + [False] * 3)
    if adaptive:
        class_taus = adaptive_temperatures(torch.tensor([50.0, 9.0, 2.0], dtype=torch.float64), gamma=0.1)
        temperature = class_taus[inputs["labels"]]
        temperatures = [float(class_taus[label]) for label in inputs["labels"]]
    else:
        temperature = 0.2
        temperatures = [0.2] * inputs["queries"].shape[0]
    kcl_positives = 2
    kcl_chosen = None
    if variant == "kcl+kglobal":
        candidates = _kcl_candidates(inputs, negatives_valid, include_batch_keys)
        kcl_chosen = sample_bank_positives(candidates, kcl_positives, torch.Generator().manual_seed(11)).tolist()
    loss = global_contrastive_loss(
        **inputs,
        temperature=temperature,
        variant=variant,
        negatives_valid=negatives_valid,
        include_batch_keys=include_batch_keys,
        kcl_positives=kcl_positives,
        generator=torch.Generator().manual_seed(11),
    )
    expected = _reference_global_loss(inputs, temperatures, variant, negatives_valid, include_batch_keys, kcl_chosen)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_kcl_with_a_large_budget_takes_every_same_label_entry():
    inputs = _inputs(5)
    candidates = _kcl_candidates(inputs, None, True)
    every = [[bool(value) for value in row] for row in candidates]
    loss = global_contrastive_loss(**inputs, temperature=0.3, variant="kcl+kglobal", kcl_positives=100)
    expected = _reference_global_loss(inputs, [0.3] * 6, "kcl+kglobal", None, True, every)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_default_is_eq1_with_the_unsupervised_instance_term():
    inputs = _inputs(2)
    loss = global_contrastive_loss(**inputs, temperature=0.5)
    expected = _reference_global_loss(inputs, [0.5] * 6, "unsupervised+kglobal", None, True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_global_loss_hand_computed():
    # One anchor, tau = 1: q = (1, 0), own key (1, 0), one global positive (0, 1),
    # queue (-1, 0) and (0, 1), so s(own) = 1, s(global) = 0 and the negatives give e^-1 + e^0.
    queries = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    keys = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    positive_keys = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    negatives = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0])
    negative_labels = torch.tensor([1, 0])
    e = math.e
    own_term = -math.log(e / (e + 1 / e + 1))
    global_term = -math.log(1 / (1 + 1 / e + 1))
    loss = global_contrastive_loss(queries, keys, positive_keys, negatives, labels, negative_labels, 1.0)
    assert float(loss) == pytest.approx((own_term + global_term) / 2, rel=1e-12)
    # Supervised: the same-label queue entry (0, 1) becomes a third positive, (-1, 0) the only negative.
    supervised = global_contrastive_loss(
        queries, keys, positive_keys, negatives, labels, negative_labels, 1.0, variant="supervised+kglobal"
    )
    expected = (-math.log(e / (e + 1 / e)) - 2 * math.log(1 / (1 + 1 / e))) / 3
    assert float(supervised) == pytest.approx(expected, rel=1e-12)


def test_rows_without_negatives_give_zero_loss_and_finite_gradients():
    inputs = _inputs(3)
    inputs["queries"].requires_grad_(True)
    loss = global_contrastive_loss(
        **inputs, temperature=0.2, negatives_valid=torch.zeros(9, dtype=torch.bool), include_batch_keys=False
    )
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.all(torch.isfinite(inputs["queries"].grad))


@pytest.mark.parametrize("variant", GLOBAL_LOSS_VARIANTS)
def test_global_loss_gradients(variant):
    inputs = _inputs(4, batch=3, k=2, dim=3, queue=4)
    queries = inputs.pop("queries").requires_grad_(True)

    def loss_of(queries):
        return global_contrastive_loss(
            queries, **inputs, temperature=0.4, variant=variant, generator=torch.Generator().manual_seed(0)
        )

    assert torch.autograd.gradcheck(loss_of, (queries,))


def test_sample_bank_positives_count_membership_and_uniformity():
    candidates = torch.tensor([[True, False, True, True, False, True], [False, True, False, False, False, False]])
    chosen = sample_bank_positives(candidates, 2, torch.Generator().manual_seed(0))
    assert chosen.sum(dim=1).tolist() == [2, 1]
    assert not bool((chosen & ~candidates).any())
    draws = 4000
    many = sample_bank_positives(candidates[:1].expand(draws, -1), 2, torch.Generator().manual_seed(1))
    frequencies = many.double().mean(dim=0)
    expected = torch.full((4,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(frequencies[candidates[0]], expected, atol=0.03, rtol=0)
    assert not bool(sample_bank_positives(candidates, 0).any())


def test_global_loss_rejects_unknown_variant_and_bad_temperature_shape():
    inputs = _inputs(0)
    with pytest.raises(ValueError):
        global_contrastive_loss(**inputs, temperature=0.2, variant="supcon")
    with pytest.raises(ValueError):
        global_contrastive_loss(**inputs, temperature=torch.ones(4))
