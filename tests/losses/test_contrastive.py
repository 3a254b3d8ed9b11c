"""SupCon and KCL against slow, loop-based references of their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcore.losses.contrastive import (
    kcl_loss,
    kcl_positive_mask,
    masked_logsumexp,
    positive_mean_loss,
    supcon_loss,
)

RTOL = 1e-5


def assert_relative(actual: torch.Tensor, expected: float) -> None:
    value = float(actual.detach())
    assert math.isfinite(value)
    assert abs(value - expected) <= RTOL * abs(expected), (value, expected)


def random_embeddings(num_rows: int, dim: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_rows, dim, generator=generator, dtype=dtype), dim=1)


def slow_supervised_contrastive(embeddings, positives_of, temperature, bias=None) -> float:
    """Loop form of ``-mean_i mean_{p in P_i} log(exp(s_ip) / sum_{a != i} exp(s_ia))``.

    ``positives_of(i)`` lists anchor ``i``'s positive rows; anchors without any are skipped.
    """
    rows = embeddings.tolist()
    num_rows = len(rows)

    def logit(i, j):
        value = sum(a * b for a, b in zip(rows[i], rows[j])) / temperature
        return value + (float(bias[i][j]) if bias is not None else 0.0)

    anchor_losses = []
    for i in range(num_rows):
        positives = positives_of(i)
        if not positives:
            continue
        denominator = sum(math.exp(logit(i, a)) for a in range(num_rows) if a != i)
        terms = [-math.log(math.exp(logit(i, p)) / denominator) for p in positives]
        anchor_losses.append(sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses) if anchor_losses else 0.0


def slow_supcon(embeddings, labels, temperature, bias=None) -> float:
    label_list = labels.tolist()

    def positives_of(i):
        return [p for p in range(len(label_list)) if p != i and label_list[p] == label_list[i]]

    return slow_supervised_contrastive(embeddings, positives_of, temperature, bias)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_matches_slow_reference(seed, temperature):
    generator = torch.Generator().manual_seed(100 + seed)
    batch = 9
    image_labels = torch.randint(0, 4, (batch,), generator=generator)
    labels = image_labels.repeat(2)
    embeddings = random_embeddings(2 * batch, 8, seed)
    assert_relative(supcon_loss(embeddings, labels, temperature), slow_supcon(embeddings, labels, temperature))


def test_supcon_with_single_view_rows_skips_anchors_without_positives():
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3, 0, 4])
    embeddings = random_embeddings(len(labels), 5, seed=7)
    assert_relative(supcon_loss(embeddings, labels, 0.2), slow_supcon(embeddings, labels, 0.2))


def test_supcon_with_logit_bias_matches_slow_reference():
    labels = torch.tensor([0, 1, 1, 2, 0, 1, 1, 2])
    embeddings = random_embeddings(len(labels), 6, seed=3)
    bias = torch.randn(len(labels), len(labels), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert_relative(
        supcon_loss(embeddings, labels, 0.3, logit_bias=bias),
        slow_supcon(embeddings, labels, 0.3, bias=bias.tolist()),
    )
    row_bias = bias[0]
    assert_relative(
        supcon_loss(embeddings, labels, 0.3, logit_bias=row_bias),
        slow_supcon(embeddings, labels, 0.3, bias=row_bias.expand(len(labels), -1).tolist()),
    )


def test_supcon_hand_computed():
    # two images (classes 0 and 1), two views each, view-major: rows a1, b1, a2, b2.
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    t = 0.5
    # dot products: a1.b1 = 0, a1.a2 = 0.6, a1.b2 = -0.6, b1.a2 = 0.8, b1.b2 = 0.8, a2.b2 = 0.28
    loss_a1 = -math.log(math.exp(0.6 / t) / (math.exp(0.0) + math.exp(0.6 / t) + math.exp(-0.6 / t)))
    loss_b1 = -math.log(math.exp(0.8 / t) / (math.exp(0.0) + math.exp(0.8 / t) + math.exp(0.8 / t)))
    loss_a2 = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.8 / t) + math.exp(0.28 / t)))
    loss_b2 = -math.log(math.exp(0.8 / t) / (math.exp(-0.6 / t) + math.exp(0.8 / t) + math.exp(0.28 / t)))
    expected = (loss_a1 + loss_b1 + loss_a2 + loss_b2) / 4
    assert_relative(supcon_loss(embeddings, labels, t), expected)


def test_supcon_hand_computed_anchor_without_positive_is_left_out():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    # anchors 0 and 1 are each other's only positive; anchor 2 has none.
    loss_0 = -math.log(math.exp(0.0) / (math.exp(0.0) + math.exp(0.6)))
    loss_1 = -math.log(math.exp(0.0) / (math.exp(0.0) + math.exp(0.8)))
    assert_relative(supcon_loss(embeddings, labels, 1.0), (loss_0 + loss_1) / 2)


def test_supcon_without_any_positive_is_zero_with_finite_gradient():
    embeddings = random_embeddings(4, 3, seed=0).requires_grad_()
    loss = supcon_loss(embeddings, torch.arange(4), 0.1)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_supcon_gradcheck():
    labels = torch.tensor([0, 1, 1, 0, 1, 1])
    embeddings = random_embeddings(len(labels), 4, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: supcon_loss(z, labels, 0.3), (embeddings,))


def test_supcon_float32_is_stable_at_small_temperature():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    embeddings = random_embeddings(len(labels), 16, seed=11)
    expected = slow_supcon(embeddings, labels, 0.02)
    loss = supcon_loss(embeddings.float(), labels, 0.02)
    assert loss.dtype == torch.float32
    assert abs(float(loss) - expected) <= 1e-4 * abs(expected)


def test_supcon_computes_half_inputs_in_float32():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    embeddings = random_embeddings(len(labels), 8, seed=12).bfloat16().requires_grad_()
    loss = supcon_loss(embeddings, labels, 0.1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, supcon_loss(embeddings.detach().float(), labels, 0.1))
    loss.backward()
    assert embeddings.grad.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_loss = supcon_loss(embeddings.detach().float(), labels, 0.1)
    assert autocast_loss.dtype == torch.float32
    torch.testing.assert_close(autocast_loss, loss.detach())


def slow_kcl(embeddings, positive_mask, temperature) -> float:
    mask = positive_mask.tolist()

    def positives_of(i):
        return [p for p in range(len(mask)) if mask[i][p]]

    return slow_supervised_contrastive(embeddings, positives_of, temperature)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_kcl_matches_slow_reference_on_the_drawn_positives(k):
    batch = 10
    image_labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 3])
    labels = image_labels.repeat(2)
    embeddings = random_embeddings(2 * batch, 8, seed=k)
    mask = kcl_positive_mask(labels, k, generator=torch.Generator().manual_seed(k))
    loss = kcl_loss(embeddings, labels, 0.2, k, generator=torch.Generator().manual_seed(k))
    assert_relative(loss, slow_kcl(embeddings, mask, 0.2))


@pytest.mark.parametrize("n_views", [1, 2, 3])
def test_kcl_positive_mask_structure(n_views):
    image_labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 0])
    batch = len(image_labels)
    labels = image_labels.repeat(n_views)
    k = 2
    mask = kcl_positive_mask(labels, k, n_views=n_views, generator=torch.Generator().manual_seed(0))
    for i in range(len(labels)):
        image = i % batch
        own_views = {image + v * batch for v in range(n_views)} - {i}
        same_class_other_images = {
            j for j in range(len(labels)) if labels[j] == labels[i] and j % batch != image
        }
        chosen = {j for j in range(len(labels)) if mask[i, j]}
        assert own_views <= chosen
        assert chosen - own_views <= same_class_other_images
        assert len(chosen - own_views) == min(k, len(same_class_other_images))


def test_kcl_positive_draw_is_uniform():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1]).repeat(2)
    generator = torch.Generator().manual_seed(0)
    draws = 600
    counts = torch.zeros(len(labels), len(labels))
    for _ in range(draws):
        counts += kcl_positive_mask(labels, 2, generator=generator).float()
    # anchor 0 (image 0, class 0): 8 candidate rows (images 1-4, both views), 2 drawn each time.
    frequencies = counts[0, [1, 2, 3, 4, 8, 9, 10, 11]] / draws
    assert torch.all((frequencies - 0.25).abs() < 0.06), frequencies
    assert counts[0, 7] == draws  # its own other view, always


def test_kcl_with_large_k_equals_supcon():
    labels = torch.tensor([0, 1, 1, 2, 0, 0]).repeat(2)
    embeddings = random_embeddings(len(labels), 5, seed=21)
    torch.testing.assert_close(kcl_loss(embeddings, labels, 0.1, k=len(labels)), supcon_loss(embeddings, labels, 0.1))


def test_kcl_hand_computed_k0_uses_only_the_other_view():
    # rows a1, b1, a2, b2 with both images in class 0: with k=0 the positive is the other view only.
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0])
    t = 0.5
    loss_a1 = -math.log(math.exp(0.6 / t) / (math.exp(0.0) + math.exp(0.6 / t) + math.exp(-0.6 / t)))
    loss_b1 = -math.log(math.exp(0.8 / t) / (math.exp(0.0) + math.exp(0.8 / t) + math.exp(0.8 / t)))
    loss_a2 = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.8 / t) + math.exp(0.28 / t)))
    loss_b2 = -math.log(math.exp(0.8 / t) / (math.exp(-0.6 / t) + math.exp(0.8 / t) + math.exp(0.28 / t)))
    expected = (loss_a1 + loss_b1 + loss_a2 + loss_b2) / 4
    assert_relative(kcl_loss(embeddings, labels, t, k=0), expected)


def test_kcl_rejects_rows_that_are_not_whole_views():
    with pytest.raises(ValueError):
        kcl_positive_mask(torch.zeros(5, dtype=torch.long), 1, n_views=2)


def test_masked_logsumexp_matches_loop_and_handles_empty_rows():
    values = torch.tensor([[1.0, 50.0, -3.0], [2.0, 0.5, 7.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    result = masked_logsumexp(values, mask)
    assert_relative(result[0], math.log(math.exp(1.0) + math.exp(-3.0)))
    assert result[1] == float("-inf")
    result[0].backward()
    assert torch.isfinite(values.grad).all()
    assert torch.equal(values.grad[1], torch.zeros(3, dtype=torch.float64))


def test_positive_mean_loss_by_hand():
    log_prob = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -8.0, -1.5], [-3.0, -3.0, -3.0]])
    positive_mask = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])
    # anchor 0: (1 + 2) / 2 = 1.5; anchor 1: 1.5; anchor 2 has no positive.
    assert float(positive_mean_loss(log_prob, positive_mask)) == pytest.approx(1.5)
