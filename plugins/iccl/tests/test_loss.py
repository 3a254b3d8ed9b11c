import math

import pytest
import torch
import torch.nn.functional as F

from ltcore_iccl.loss import (
    centroid_contrastive_loss,
    distillation_loss,
    interpolate,
    interpolative_cross_entropy,
    sample_interpolation_weights,
)

DTYPE = torch.float64


def _random_problem(seed, batch=7, classes=5, dim=6):
    gen = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(batch, dim, generator=gen, dtype=DTYPE), dim=1)
    centroids = torch.randn(classes, dim, generator=gen, dtype=DTYPE) * 0.7
    labels_a = torch.randint(0, classes, (batch,), generator=gen)
    labels_b = torch.randint(0, classes, (batch,), generator=gen)
    lam = torch.rand(batch, generator=gen, dtype=DTYPE)
    return embeddings, centroids, labels_a, labels_b, lam


def _reference_centroid_loss(embeddings, centroids, labels_a, labels_b, lam, temperature):
    """Eq. 4/5 written entry by entry."""
    total = 0.0
    for i in range(embeddings.shape[0]):
        scores = [math.exp(float(embeddings[i] @ centroids[k]) / temperature) for k in range(centroids.shape[0])]
        denominator = sum(scores)
        lam_i = float(lam[i]) if torch.is_tensor(lam) else lam
        p_a = scores[int(labels_a[i])] / denominator
        p_b = scores[int(labels_b[i])] / denominator
        total += -lam_i * math.log(p_a) - (1.0 - lam_i) * math.log(p_b)
    return total / embeddings.shape[0]


def _reference_interpolative_ce(logits, labels_a, labels_b, lam):
    total = 0.0
    for i in range(logits.shape[0]):
        exps = [math.exp(float(v)) for v in logits[i]]
        denominator = sum(exps)
        lam_i = float(lam[i]) if torch.is_tensor(lam) else lam
        total += -lam_i * math.log(exps[int(labels_a[i])] / denominator)
        total -= (1.0 - lam_i) * math.log(exps[int(labels_b[i])] / denominator)
    return total / logits.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.07, 0.3, 1.0])
def test_centroid_loss_matches_reference_with_tensor_lambda(seed, temperature):
    embeddings, centroids, labels_a, labels_b, lam = _random_problem(seed)
    loss = centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, temperature)
    expected = _reference_centroid_loss(embeddings, centroids, labels_a, labels_b, lam, temperature)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0])
def test_centroid_loss_matches_reference_with_float_lambda(lam):
    embeddings, centroids, labels_a, labels_b, _ = _random_problem(3)
    loss = centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, 0.3)
    expected = _reference_centroid_loss(embeddings, centroids, labels_a, labels_b, lam, 0.3)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_centroid_loss_float32_matches_float64_reference():
    embeddings, centroids, labels_a, labels_b, lam = _random_problem(4, batch=32, classes=10, dim=16)
    loss = centroid_contrastive_loss(embeddings.float(), centroids.float(), labels_a, labels_b, lam.float(), 0.3)
    expected = _reference_centroid_loss(embeddings, centroids, labels_a, labels_b, lam, 0.3)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=0)


def test_plain_centroid_loss_is_the_lambda_one_case():
    embeddings, centroids, labels, _, _ = _random_problem(5)
    loss = centroid_contrastive_loss(embeddings, centroids, labels, labels, 1.0, 0.5)
    expected = 0.0
    for i in range(embeddings.shape[0]):
        logits = [float(embeddings[i] @ centroids[k]) / 0.5 for k in range(centroids.shape[0])]
        expected -= logits[int(labels[i])] - math.log(sum(math.exp(v) for v in logits))
    expected /= embeddings.shape[0]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_centroid_loss_hand_computed():
    # z = (1, 0), c^0 = (1, 0), c^1 = (0, 1), tau = 0.5: logits (2, 0).
    # log p(c^0) = 2 - log(1 + e^2), log p(c^1) = -log(1 + e^2).
    # lam = 0.25, y_a = 0, y_b = 1: loss = -0.25 * 2 + log(1 + e^2).
    embeddings = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DTYPE)
    loss = centroid_contrastive_loss(embeddings, centroids, torch.tensor([0]), torch.tensor([1]), 0.25, 0.5)
    expected = math.log(1.0 + math.e**2) - 0.5
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_centroid_loss_gradient_reaches_embeddings_only():
    embeddings, centroids, labels_a, labels_b, lam = _random_problem(6)
    embeddings.requires_grad_(True)
    centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, 0.3).backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert centroids.grad is None


@pytest.mark.parametrize("seed", [0, 1])
def test_interpolative_cross_entropy_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(9, 4, generator=gen, dtype=DTYPE) * 3
    labels_a = torch.randint(0, 4, (9,), generator=gen)
    labels_b = torch.randint(0, 4, (9,), generator=gen)
    lam = torch.rand(9, generator=gen, dtype=DTYPE)
    for weights in (lam, 0.6):
        loss = interpolative_cross_entropy(logits, labels_a, labels_b, weights)
        expected = _reference_interpolative_ce(logits, labels_a, labels_b, weights)
        torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_interpolative_cross_entropy_hand_computed():
    # logits (ln 3, 0): p = (3/4, 1/4); lam = 0.5 with labels (0, 1): -(0.5 ln 0.75 + 0.5 ln 0.25).
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=DTYPE)
    loss = interpolative_cross_entropy(logits, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5], dtype=DTYPE))
    assert loss.item() == pytest.approx(-0.5 * math.log(0.75) - 0.5 * math.log(0.25), rel=1e-12)


def test_interpolative_cross_entropy_reduces_to_cross_entropy():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, generator=gen, dtype=DTYPE)
    labels = torch.randint(0, 5, (6,), generator=gen)
    other = torch.randint(0, 5, (6,), generator=gen)
    torch.testing.assert_close(interpolative_cross_entropy(logits, labels, other, 1.0), F.cross_entropy(logits, labels))


def test_interpolate_per_sample_weights():
    gen = torch.Generator().manual_seed(0)
    x_a = torch.randn(4, 3, 5, 5, generator=gen)
    x_b = torch.randn(4, 3, 5, 5, generator=gen)
    lam = torch.rand(4, generator=gen)
    mixed = interpolate(x_a, x_b, lam)
    assert mixed.shape == x_a.shape
    for i in range(4):
        torch.testing.assert_close(mixed[i], float(lam[i]) * x_a[i] + (1.0 - float(lam[i])) * x_b[i])
    torch.testing.assert_close(interpolate(x_a, x_b, 0.3), 0.3 * x_a + 0.7 * x_b)
    torch.testing.assert_close(interpolate(x_a, x_b, torch.ones(4)), x_a)


def test_interpolate_keeps_input_dtype_with_float64_weights():
    x_a = torch.zeros(2, 3, dtype=torch.float16)
    x_b = torch.ones(2, 3, dtype=torch.float16)
    mixed = interpolate(x_a, x_b, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert mixed.dtype == torch.float16
    torch.testing.assert_close(mixed[:, 0], torch.tensor([0.75, 0.25], dtype=torch.float16))


def test_interpolation_weights_are_reproducible_from_the_generator():
    first = sample_interpolation_weights(64, 1.0, torch.Generator().manual_seed(7))
    second = sample_interpolation_weights(64, 1.0, torch.Generator().manual_seed(7))
    other = sample_interpolation_weights(64, 1.0, torch.Generator().manual_seed(8))
    assert first.shape == (64,) and first.dtype == torch.float32
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, other)
    assert bool(((first >= 0) & (first <= 1)).all())


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_interpolation_weights_follow_beta_moments(alpha):
    draws = sample_interpolation_weights(200_000, alpha, torch.Generator().manual_seed(0), dtype=torch.float64)
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert draws.mean().item() == pytest.approx(0.5, abs=5e-3)
    assert draws.var().item() == pytest.approx(1.0 / (4.0 * (2.0 * alpha + 1.0)), rel=2e-2)
    assert bool(((draws >= 0) & (draws <= 1)).all())


def test_alpha_one_is_uniform():
    draws = sample_interpolation_weights(200_000, 1.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    for quantile in (0.1, 0.25, 0.5, 0.9):
        assert (draws < quantile).double().mean().item() == pytest.approx(quantile, abs=5e-3)


def test_interpolation_weights_reject_non_positive_alpha():
    with pytest.raises(ValueError):
        sample_interpolation_weights(4, 0.0)


def _reference_distillation(student, teacher, labels, weight, temperature):
    total = 0.0
    batch = student.shape[0]
    for i in range(batch):
        exps = [math.exp(float(v)) for v in student[i]]
        cross_entropy = -math.log(exps[int(labels[i])] / sum(exps))
        soft_student = [math.exp(float(v) / temperature) for v in student[i]]
        soft_teacher = [math.exp(float(v) / temperature) for v in teacher[i]]
        norm_s, norm_t = sum(soft_student), sum(soft_teacher)
        kl = 0.0
        for s, t in zip(soft_student, soft_teacher):
            p_t, p_s = t / norm_t, s / norm_s
            kl += p_t * math.log(p_t / p_s)
        total += (1.0 - weight) * cross_entropy + weight * temperature**2 * kl
    return total / batch


@pytest.mark.parametrize(("weight", "temperature"), [(0.5, 10.0), (0.2, 2.0), (1.0, 4.0)])
def test_distillation_loss_matches_reference(weight, temperature):
    gen = torch.Generator().manual_seed(11)
    student = torch.randn(8, 6, generator=gen, dtype=DTYPE) * 4
    teacher = torch.randn(8, 6, generator=gen, dtype=DTYPE) * 4
    labels = torch.randint(0, 6, (8,), generator=gen)
    loss = distillation_loss(student, teacher, labels, weight, temperature)
    expected = _reference_distillation(student, teacher, labels, weight, temperature)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_distillation_loss_hand_computed():
    # Student logits (0, 0): CE = ln 2. Teacher (ln 3 * tau, 0) gives soft targets (3/4, 1/4);
    # KL((3/4, 1/4) || (1/2, 1/2)) = 3/4 ln(3/2) + 1/4 ln(1/2).
    tau = 2.0
    student = torch.zeros(1, 2, dtype=DTYPE)
    teacher = torch.tensor([[math.log(3.0) * tau, 0.0]], dtype=DTYPE)
    loss = distillation_loss(student, teacher, torch.tensor([1]), 0.5, tau)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert loss.item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * tau**2 * kl, rel=1e-12)


def test_distillation_loss_without_teacher_weight_is_cross_entropy_and_teacher_gets_no_gradient():
    gen = torch.Generator().manual_seed(12)
    student = torch.randn(5, 3, generator=gen, dtype=DTYPE, requires_grad=True)
    teacher = torch.randn(5, 3, generator=gen, dtype=DTYPE, requires_grad=True)
    labels = torch.randint(0, 3, (5,), generator=gen)
    torch.testing.assert_close(distillation_loss(student, teacher, labels, 0.0, 10.0), F.cross_entropy(student, labels))
    distillation_loss(student, teacher, labels).backward()
    assert student.grad is not None and teacher.grad is None


def _reference_biased_centroid_loss(embeddings, centroids, labels_a, labels_b, lam, temperature, bias_a, bias_b):
    """Eq. 4/5 with a per-(anchor, class) logit bias, one bias per target, entry by entry."""
    total = 0.0
    for i in range(embeddings.shape[0]):
        lam_i = float(lam[i])
        for weight, label, bias in ((lam_i, labels_a[i], bias_a), (1.0 - lam_i, labels_b[i], bias_b)):
            scores = [math.exp(float(embeddings[i] @ centroids[k]) / temperature + float(bias[i, k]))
                      for k in range(centroids.shape[0])]
            total += -weight * math.log(scores[int(label)] / sum(scores))
    return total / embeddings.shape[0]


def test_centroid_loss_with_per_target_logit_biases_matches_reference():
    embeddings, centroids, labels_a, labels_b, lam = _random_problem(7)
    gen = torch.Generator().manual_seed(70)
    bias_a = torch.randn(embeddings.shape[0], centroids.shape[0], generator=gen, dtype=DTYPE)
    bias_b = torch.randn(embeddings.shape[0], centroids.shape[0], generator=gen, dtype=DTYPE)
    loss = centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, 0.3,
                                     logit_bias=bias_a, logit_bias_b=bias_b)
    expected = _reference_biased_centroid_loss(embeddings, centroids, labels_a, labels_b, lam, 0.3, bias_a, bias_b)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_centroid_loss_with_a_class_prior_bias_is_balanced_softmax_retrieval():
    # A column bias log n_k (RCL's prior) used for both targets: p(c^k|x) ∝ n_k exp(z.c^k / tau).
    embeddings, centroids, labels_a, labels_b, lam = _random_problem(8)
    counts = torch.tensor([50.0, 20.0, 9.0, 4.0, 2.0], dtype=DTYPE)
    loss = centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, 0.5,
                                     logit_bias=counts.log()[None, :])
    expected = 0.0
    for i in range(embeddings.shape[0]):
        scores = [float(counts[k]) * math.exp(float(embeddings[i] @ centroids[k]) / 0.5) for k in range(5)]
        p_a, p_b = scores[int(labels_a[i])] / sum(scores), scores[int(labels_b[i])] / sum(scores)
        expected += -float(lam[i]) * math.log(p_a) - (1.0 - float(lam[i])) * math.log(p_b)
    expected /= embeddings.shape[0]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)
    zero_bias = centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, 0.5,
                                          logit_bias=torch.zeros(1, 5, dtype=DTYPE))
    torch.testing.assert_close(zero_bias, centroid_contrastive_loss(embeddings, centroids, labels_a, labels_b, lam, 0.5))


def test_lazy_exports():
    import ltcore_iccl

    assert ltcore_iccl.centroid_contrastive_loss is centroid_contrastive_loss
    assert ltcore_iccl.distillation_loss is distillation_loss
    assert "centroid_contrastive_loss" in ltcore_iccl.__all__
    with pytest.raises(AttributeError):
        ltcore_iccl.no_such_name


def test_loading_the_plugin_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ltcore_iccl, ltcore_iccl.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
