"""The PaCo loss against a direct computation of its formula, hand-computed cases and
properties (absent classes, single-class batches, gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from ltcore_paco import paco_loss
from ltcore_paco.loss import PRIOR_EPSILON

from ltcore.losses import logit_adjusted_cross_entropy
from ltcore.testing import assert_finite_with_gradients, label_batches


def slow_paco(anchors, labels, centre_logits, samples, sample_labels, *, alpha, beta, gamma,
              temperature, centre_temperature=1.0, class_prior=None, sample_valid=None,
              anchors_in_samples=True, logit_bias=None, centre_bias=None) -> float:
    """The formula of ``paco_loss``'s docstring, one anchor at a time, in Python floats."""
    z, v, u = anchors.tolist(), samples.tolist(), centre_logits.tolist()
    y, yk = labels.tolist(), sample_labels.tolist()
    n, m, c = len(z), len(v), len(u[0])
    valid = [True] * m if sample_valid is None else sample_valid.tolist()
    bias = (torch.zeros(n, m) if logit_bias is None
            else torch.broadcast_to(logit_bias, (n, m))).double().tolist()
    cbias = (torch.zeros(n, c) if centre_bias is None
             else torch.broadcast_to(centre_bias, (n, c))).double().tolist()
    prior = None if class_prior is None else class_prior.double().tolist()
    losses = []
    for i in range(n):
        centre = [(u[i][j] + (math.log(prior[j] + PRIOR_EPSILON) if prior else 0.0))
                  / centre_temperature + cbias[i][j] for j in range(c)]
        contrast = [k for k in range(m) if valid[k] and not (anchors_in_samples and k == i)]
        s = {k: sum(a * b for a, b in zip(z[i], v[k])) / temperature + bias[i][k]
             for k in contrast}
        denominator = sum(math.exp(a) for a in centre) + gamma * sum(math.exp(x)
                                                                     for x in s.values())
        positives = [k for k in contrast if yk[k] == y[i]]
        weight = beta + alpha * len(positives)
        if weight == 0:
            continue
        total = beta * (centre[y[i]] - math.log(denominator))
        total += alpha * sum(s[k] - math.log(denominator) for k in positives)
        losses.append(-total / weight)
    return sum(losses) / len(losses) if losses else 0.0


def random_case(seed, anchors=6, extra=5, classes=4, dim=8):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(anchors, dim, generator=g, dtype=torch.float64), dim=1)
    others = F.normalize(torch.randn(extra, dim, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, classes, (anchors,), generator=g)
    other_labels = torch.randint(0, classes, (extra,), generator=g)
    logits = torch.randn(anchors, classes, generator=g, dtype=torch.float64) * 2
    return (z, labels, logits, torch.cat([z, others]), torch.cat([labels, other_labels]), g)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("options", [
    {"alpha": 0.01, "beta": 1.0, "gamma": 1.0, "temperature": 0.05},
    {"alpha": 0.5, "beta": 0.7, "gamma": 0.3, "temperature": 0.2, "centre_temperature": 2.0},
    {"alpha": 1.0, "beta": 0.0, "gamma": 1.0, "temperature": 0.5},
    {"alpha": 0.2, "beta": 1.0, "gamma": 0.0, "temperature": 0.1},
])
@pytest.mark.parametrize("prior", [False, True])
def test_equals_the_formula(seed, options, prior):
    z, labels, logits, samples, sample_labels, g = random_case(seed)
    class_prior = torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64) if prior else None
    valid = torch.rand(len(samples), generator=g) > 0.3
    valid[: len(z)] = True
    kwargs = {**options, "class_prior": class_prior, "sample_valid": valid}
    value = paco_loss(z, labels, logits, samples, sample_labels, **kwargs)
    assert value.dtype == torch.float64
    expected = slow_paco(z, labels, logits, samples, sample_labels, **kwargs)
    assert float(value) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_biases_and_samples_without_the_anchors_equal_the_formula():
    z, labels, logits, samples, sample_labels, g = random_case(7)
    others, other_labels = samples[len(z):], sample_labels[len(z):]
    logit_bias = torch.randn(1, len(others), generator=g, dtype=torch.float64)
    centre_bias = torch.randn(len(z), 4, generator=g, dtype=torch.float64)
    kwargs = {"alpha": 0.3, "beta": 1.0, "gamma": 0.8, "temperature": 0.1,
              "anchors_in_samples": False, "logit_bias": logit_bias, "centre_bias": centre_bias}
    value = paco_loss(z, labels, logits, others, other_labels, **kwargs)
    assert float(value) == pytest.approx(slow_paco(z, labels, logits, others, other_labels,
                                                   **kwargs), rel=1e-10)


def test_two_anchors_two_classes_by_hand():
    # z1 = (1, 0), z2 = (0.6, 0.8), both of class 0; the samples are the two anchors, so each
    # anchor's contrast set is the other one: s_12 = s_21 = 0.6 / 0.5 = 1.2, a positive.
    # Centre logits u1 = (1, 0), u2 = (0, 1); alpha 0.5, beta 1, gamma 1, no prior.
    # D_1 = D_2 = e^1 + e^0 + e^1.2 = 7.038399, log D = 1.951381.
    # L_1 = -(1 (1 - 1.951381) + 0.5 (1.2 - 1.951381)) / 1.5 = 0.884714
    # L_2 = -(1 (0 - 1.951381) + 0.5 (1.2 - 1.951381)) / 1.5 = 1.551381
    # L = (0.884714 + 1.551381) / 2 = 1.218047
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    value = paco_loss(z, labels, logits, z, labels, alpha=0.5, beta=1.0, gamma=1.0,
                      temperature=0.5)
    assert float(value) == pytest.approx(1.218047, abs=1e-6)

    # With the class prior (0.75, 0.25) and gamma 0 the samples leave the denominator:
    # D_1 = 0.75 e + 0.25 = 2.288711, D_2 = 0.75 + 0.25 e = 1.429570 (pi_j e^{u_ij} summed).
    # L_1 = -(log(0.75 e / 2.288711) + 0.5 (1.2 - log 2.288711)) / 1.5 = -0.046890
    # L_2 = -(log(0.75 / 1.429570) + 0.5 (1.2 - log 1.429570)) / 1.5 = 0.149162
    # L = 0.051136
    prior = torch.tensor([0.75, 0.25], dtype=torch.float64)
    value = paco_loss(z, labels, logits, z, labels, alpha=0.5, beta=1.0, gamma=0.0,
                      temperature=0.5, class_prior=prior)
    assert float(value) == pytest.approx(0.051136, abs=2e-6)


def test_centres_alone_are_logit_adjusted_cross_entropy():
    z, labels, logits, samples, sample_labels, _ = random_case(3)
    prior = torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64)
    value = paco_loss(z, labels, logits, samples, sample_labels, alpha=0.0, beta=1.0,
                      gamma=0.0, temperature=0.1, class_prior=prior)
    expected = logit_adjusted_cross_entropy(logits, labels, prior + PRIOR_EPSILON, 1.0)
    torch.testing.assert_close(value, expected.to(value.dtype))


def test_invalid_columns_are_ignored():
    z, labels, logits, samples, sample_labels, g = random_case(4)
    valid = torch.ones(len(samples), dtype=torch.bool)
    valid[-2:] = False
    kwargs = {"alpha": 0.5, "beta": 1.0, "gamma": 1.0, "temperature": 0.2}
    masked = paco_loss(z, labels, logits, samples, sample_labels, sample_valid=valid, **kwargs)
    dropped = paco_loss(z, labels, logits, samples[:-2], sample_labels[:-2], **kwargs)
    torch.testing.assert_close(masked, dropped)


def test_half_precision_inputs_compute_in_float32():
    z, labels, logits, samples, sample_labels, _ = random_case(5)
    value = paco_loss(z.bfloat16(), labels, logits.bfloat16(), samples.bfloat16(),
                      sample_labels, alpha=0.1, temperature=0.1)
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_negative_weights_are_refused():
    z, labels, logits, samples, sample_labels, _ = random_case(0)
    with pytest.raises(ValueError, match="alpha, beta and gamma"):
        paco_loss(z, labels, logits, samples, sample_labels, alpha=-1.0, temperature=0.1)


@settings(max_examples=30, deadline=None)
@given(batch=label_batches(), queue=st.integers(0, 6), beta=st.sampled_from([0.0, 1.0]),
       seed=st.integers(0, 2 ** 16))
def test_finite_values_and_gradients(batch, queue, beta, seed):
    labels, classes = batch
    labels = torch.tensor(labels)
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(len(labels), 8, generator=g), dim=1).requires_grad_()
    keys = F.normalize(torch.randn(queue, 8, generator=g), dim=1)
    key_labels = torch.randint(0, classes, (queue,), generator=g)
    logits = (10 * torch.randn(len(labels), classes, generator=g)).requires_grad_()
    prior = torch.rand(classes, generator=g) + 0.01
    value = paco_loss(z, labels, logits, torch.cat([z, keys]), torch.cat([labels, key_labels]),
                      alpha=0.05, beta=beta, gamma=1.0, temperature=0.05,
                      class_prior=prior / prior.sum())
    assert_finite_with_gradients(value, z, logits)
