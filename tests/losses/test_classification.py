"""Classification losses against slow per-sample references and hand-computed cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from ltcore.losses.classification import (
    balanced_softmax_loss,
    class_balanced_weights,
    distillation_kl,
    drw_weights,
    focal_loss,
    ldam_loss,
    ldam_margins,
    logit_adjusted_cross_entropy,
)

RTOL = 1e-5
NUM_SAMPLES, NUM_CLASSES = 13, 7


def close(actual, expected, rtol=RTOL):
    return math.isclose(float(actual), float(expected), rel_tol=rtol, abs_tol=1e-12)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(NUM_SAMPLES, NUM_CLASSES, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=generator)
    counts = torch.randint(1, 500, (NUM_CLASSES,), generator=generator)
    weight = torch.rand(NUM_CLASSES, generator=generator, dtype=torch.float64) + 0.1
    return logits, targets, counts, weight


# ---------------------------------------------------------------- slow references


def slow_log_softmax_entry(row, index):
    """log(e^{row[index]} / sum_j e^{row[j]}) with explicit exp/log."""
    return row[index] - math.log(sum(math.exp(value) for value in row))


def slow_weighted_mean(per_sample, targets, weight):
    if weight is None:
        return sum(per_sample) / len(per_sample)
    numerator = sum(weight[y] * loss for loss, y in zip(per_sample, targets))
    return numerator / sum(weight[y] for y in targets)


def slow_adjusted_ce(logits, targets, offsets, weight):
    per_sample = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        adjusted = [value + offset for value, offset in zip(row, offsets)]
        per_sample.append(-slow_log_softmax_entry(adjusted, y))
    return slow_weighted_mean(per_sample, targets.tolist(), None if weight is None else weight.tolist())


def slow_balanced_softmax(logits, targets, counts, weight):
    """-log(n_y e^{f_y} / sum_j n_j e^{f_j}) written directly."""
    counts = counts.tolist()
    per_sample = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        numerator = counts[y] * math.exp(row[y])
        denominator = sum(n * math.exp(value) for n, value in zip(counts, row))
        per_sample.append(-math.log(numerator / denominator))
    return slow_weighted_mean(per_sample, targets.tolist(), None if weight is None else weight.tolist())


def slow_ldam(logits, targets, margins, scale, weight):
    margins = margins.tolist()
    per_sample = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        adjusted = [scale * (value - (margins[y] if j == y else 0.0)) for j, value in enumerate(row)]
        per_sample.append(-slow_log_softmax_entry(adjusted, y))
    return slow_weighted_mean(per_sample, targets.tolist(), None if weight is None else weight.tolist())


def slow_focal(logits, targets, gamma, weight):
    per_sample = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        probability = math.exp(row[y]) / sum(math.exp(value) for value in row)
        per_sample.append(-((1.0 - probability) ** gamma) * math.log(probability))
    return slow_weighted_mean(per_sample, targets.tolist(), None if weight is None else weight.tolist())


def slow_softmax(row):
    exps = [math.exp(value) for value in row]
    total = sum(exps)
    return [value / total for value in exps]


def slow_distillation(student, teacher, temperature):
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = slow_softmax([value / temperature for value in s_row])
        q = slow_softmax([value / temperature for value in t_row])
        total += sum(qc * math.log(qc / pc) for qc, pc in zip(q, p))
    return temperature**2 * total / len(student)


# ---------------------------------------------------------------- random inputs vs references


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("tau", [0.0, 1.0, 1.3])
def test_logit_adjusted_ce_matches_reference(batch, tau, use_weight):
    logits, targets, counts, weight = batch
    weight = weight if use_weight else None
    prior = counts.double() / counts.sum()
    offsets = [tau * math.log(p) for p in prior.tolist()]
    expected = slow_adjusted_ce(logits, targets, offsets, weight)
    assert close(logit_adjusted_cross_entropy(logits, targets, prior, tau, weight=weight), expected)


@pytest.mark.parametrize("use_weight", [False, True])
def test_balanced_softmax_matches_reference(batch, use_weight):
    logits, targets, counts, weight = batch
    weight = weight if use_weight else None
    expected = slow_balanced_softmax(logits, targets, counts, weight)
    assert close(balanced_softmax_loss(logits, targets, counts, weight=weight), expected)


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize("use_weight", [False, True])
def test_ldam_loss_matches_reference(batch, scale, use_weight):
    logits, targets, counts, weight = batch
    cosine_logits = torch.tanh(logits)
    weight = weight if use_weight else None
    margins = ldam_margins(counts).double()
    expected = slow_ldam(cosine_logits, targets, margins, scale, weight)
    assert close(ldam_loss(cosine_logits, targets, margins, scale=scale, weight=weight), expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("use_weight", [False, True])
def test_focal_loss_matches_reference(batch, gamma, use_weight):
    logits, targets, _, weight = batch
    weight = weight if use_weight else None
    expected = slow_focal(logits, targets, gamma, weight)
    assert close(focal_loss(logits, targets, gamma, weight=weight), expected)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
def test_distillation_kl_matches_reference(batch, temperature):
    logits, _, _, _ = batch
    teacher = 2.0 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = slow_distillation(logits, teacher, temperature)
    assert close(distillation_kl(logits, teacher, temperature), expected)


def test_float32_inputs_and_gradients_flow(batch):
    logits, targets, counts, weight = batch
    logits = logits.float().requires_grad_()
    margins = ldam_margins(counts)
    total = (
        logit_adjusted_cross_entropy(logits, targets, counts / counts.sum(), 1.0, weight=weight)
        + balanced_softmax_loss(logits, targets, counts, weight=weight)
        + ldam_loss(logits.tanh(), targets, margins, weight=weight)
        + focal_loss(logits, targets, 2.0, weight=weight)
        + distillation_kl(logits, logits.detach().flip(0), 4.0)
    )
    total.backward()
    assert total.dtype == torch.float32
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------- identities


def test_balanced_softmax_equals_logit_adjustment_with_tau_one(batch):
    # log n_j = log pi_j + log N: the constant log N shifts every logit and cancels in the softmax.
    logits, targets, counts, weight = batch
    prior = counts.double() / counts.sum()
    for w in (None, weight):
        assert close(
            balanced_softmax_loss(logits, targets, counts, weight=w),
            logit_adjusted_cross_entropy(logits, targets, prior, 1.0, weight=w),
        )
    # the prior's normalisation is irrelevant for the same reason
    assert close(
        logit_adjusted_cross_entropy(logits, targets, counts.double(), 1.3),
        logit_adjusted_cross_entropy(logits, targets, prior, 1.3),
    )


def test_focal_with_gamma_zero_is_cross_entropy(batch):
    logits, targets, _, weight = batch
    assert close(focal_loss(logits, targets, 0.0), F.cross_entropy(logits, targets))
    assert close(focal_loss(logits, targets, 0.0, weight=weight), F.cross_entropy(logits, targets, weight=weight))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradients_stay_finite_on_certain_samples(gamma):
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
    focal_loss(logits, torch.tensor([0, 2]), gamma).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0].abs().max() < 1e-30 and logits.grad[1].abs().sum() > 0


def test_ldam_with_zero_margins_is_scaled_cross_entropy(batch):
    logits, targets, _, _ = batch
    zero = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    assert close(ldam_loss(logits, targets, zero, scale=2.0), F.cross_entropy(2.0 * logits, targets))


def test_distillation_of_identical_logits_is_zero(batch):
    logits, _, _, _ = batch
    assert float(distillation_kl(logits, logits.clone(), 3.0)) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- hand-computed 2x3 cases


def test_logit_adjusted_ce_hand_case():
    # prior [1/2, 1/4, 1/4], tau 1:
    # row 0: logits 0 -> adjusted log-prior, p = [2, 1, 1] / 4, target 0 -> -log(1/2) = log 2
    # row 1: logits [log 2, 0, 0] -> p proportional to [4, 1, 1], target 2 -> log 6
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    prior = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert close(logit_adjusted_cross_entropy(logits, targets, prior, 1.0), (math.log(2) + math.log(6)) / 2)
    # with weight [1, 1, 3]: (1 * log 2 + 3 * log 6) / 4
    weight = torch.tensor([1.0, 1.0, 3.0])
    assert close(
        logit_adjusted_cross_entropy(logits, targets, prior, 1.0, weight=weight),
        (math.log(2) + 3 * math.log(6)) / 4,
    )
    # tau 0 is plain CE: row 0 -> log 3, row 1 -> p = [2, 1, 1] / 4 -> log 4
    assert close(logit_adjusted_cross_entropy(logits, targets, prior, 0.0), (math.log(3) + math.log(4)) / 2)


def test_balanced_softmax_hand_case():
    # counts [4, 1, 1], zero logits: p = [4, 1, 1] / 6; targets 0 and 1 -> (log(6/4) + log 6) / 2
    logits = torch.zeros(2, 3, dtype=torch.float64)
    targets = torch.tensor([0, 1])
    counts = torch.tensor([4, 1, 1])
    assert close(balanced_softmax_loss(logits, targets, counts), (math.log(1.5) + math.log(6)) / 2)


def test_ldam_margins_hand_case_and_fourth_root_law():
    # n^(1/4) = [10, 5, 2, 1] -> 1/n^(1/4) = [0.1, 0.2, 0.5, 1] -> scaled to max 0.5
    margins = ldam_margins(torch.tensor([10000, 625, 16, 1]))
    assert torch.allclose(margins, torch.tensor([0.05, 0.1, 0.25, 0.5]), rtol=1e-6)
    counts = torch.randint(1, 5000, (50,), generator=torch.Generator().manual_seed(3))
    margins = ldam_margins(counts, max_margin=0.7).double()
    constant = 0.7 * counts.min().item() ** 0.25
    for n, m in zip(counts.tolist(), margins.tolist()):
        assert close(m, constant / n**0.25)
    assert close(margins.max(), 0.7)


def test_ldam_loss_hand_case():
    # counts [16, 1, 1] -> margins [0.25, 0.5, 0.5]; scale 2.
    # row 0: [0.25 + log(2)/2, 0, 0], target 0 -> 2 * ([log(2)/2, 0, 0]) = [log 2, 0, 0] -> log 2
    # row 1: [0, 0.5, 0], target 1 -> all zeros after the margin -> log 3
    margins = ldam_margins(torch.tensor([16, 1, 1])).double()
    assert torch.allclose(margins, torch.tensor([0.25, 0.5, 0.5], dtype=torch.float64))
    logits = torch.tensor([[0.25 + math.log(2.0) / 2, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0, 1])
    assert close(ldam_loss(logits, targets, margins, scale=2.0), (math.log(2) + math.log(3)) / 2)


def test_class_balanced_weights_hand_case_and_formula():
    # beta 1/2, counts [1, 2, 3]: (1 - beta) / (1 - beta^n) = [1, 2/3, 4/7], sum 47/21 -> x 3 / (47/21)
    weights = class_balanced_weights(torch.tensor([1, 2, 3]), 0.5)
    assert torch.allclose(weights, torch.tensor([63.0, 42.0, 36.0]) / 47.0, rtol=1e-6)
    counts = torch.randint(1, 5000, (20,), generator=torch.Generator().manual_seed(4))
    for beta in (0.9, 0.99, 0.9999):
        raw = [(1 - beta) / (1 - beta**n) for n in counts.tolist()]
        expected = [w * len(raw) / sum(raw) for w in raw]
        weights = class_balanced_weights(counts, beta)
        assert all(close(a, b) for a, b in zip(weights.tolist(), expected))
        assert close(weights.sum(), 20.0)
    assert torch.equal(class_balanced_weights(counts, 0.0), torch.ones(20))
    with pytest.raises(ValueError):
        class_balanced_weights(counts, 1.0)


def test_drw_switches_exactly_at_start_epoch():
    counts = torch.tensor([5000, 500, 50])
    assert torch.equal(drw_weights(counts, 0, 160), torch.ones(3))
    assert torch.equal(drw_weights(counts, 159, 160), torch.ones(3))
    assert torch.equal(drw_weights(counts, 160, 160), class_balanced_weights(counts, 0.9999))
    assert torch.equal(drw_weights(counts, 199, 160, beta=0.99), class_balanced_weights(counts, 0.99))
    after = drw_weights(counts, 160, 160)
    assert after[2] > after[1] > after[0]


def test_focal_loss_hand_case():
    # row 0: logits [0, log 3, 0] -> p = [1, 3, 1] / 5, target 1 -> (2/5)^2 * log(5/3)
    # row 1: zeros -> p = 1/3, target 0 -> (2/3)^2 * log 3
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([1, 0])
    row0 = 0.16 * math.log(5 / 3)
    row1 = 4 / 9 * math.log(3)
    assert close(focal_loss(logits, targets, 2.0), (row0 + row1) / 2)
    # weights [1, 2, 3]: targets carry 2 and 1 -> (2 * row0 + 1 * row1) / 3
    weight = torch.tensor([1.0, 2.0, 3.0])
    assert close(focal_loss(logits, targets, 2.0, weight=weight), (2 * row0 + row1) / 3)


def test_distillation_kl_hand_case():
    # T = 2; teacher row 0 [0, 2 log 3, 0] / T -> q = [1, 3, 1] / 5; student zeros -> p = 1/3.
    # KL = 2/5 log(3/5) + 3/5 log(9/5); times T^2 = 4; row 1 identical logits -> 0; batch mean / 2.
    teacher = torch.tensor([[0.0, 2 * math.log(3.0), 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    kl = 0.4 * math.log(0.6) + 0.6 * math.log(1.8)
    assert close(distillation_kl(student, teacher, 2.0), 4 * kl / 2)
