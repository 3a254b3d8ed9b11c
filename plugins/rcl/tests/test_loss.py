"""RCL's rebalanced contrastive losses (eqs. 4, 5, 7 of the paper) against loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ltcore_rcl.loss import class_prior_bias, rebalanced_supcon_loss

from ltcore.losses import supcon_loss

RTOL = 1e-5
CLASS_COUNTS = [500, 210, 90, 37, 16, 5]


def assert_relative(actual, expected: float) -> None:
    value = float(actual.detach()) if isinstance(actual, torch.Tensor) else float(actual)
    assert math.isfinite(value)
    assert abs(value - expected) <= RTOL * abs(expected), (value, expected)


def dot(u, v) -> float:
    return sum(a * b for a, b in zip(u, v))


def two_view_batch(seed: int, num_classes: int = len(CLASS_COUNTS), dim: int = 6):
    """Two views of 9 images from a long tail: some classes absent, one with a single image."""
    generator = torch.Generator().manual_seed(seed)
    image_labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0, 4])
    image_labels = image_labels[torch.randperm(len(image_labels), generator=generator)]
    labels = image_labels.repeat(2)
    embeddings = F.normalize(torch.randn(len(labels), dim, generator=generator, dtype=torch.float64), dim=1)
    prototypes = F.normalize(torch.randn(num_classes, dim, generator=generator, dtype=torch.float64), dim=1)
    return embeddings, labels, prototypes


def slow_eq4(embeddings, labels, counts, temperature) -> float:
    """``-1/|P| sum_p log(n_y e^{s_ip} / sum_{k != i} n_{y_k} e^{s_ik})``, mean over anchors with positives."""
    rows, row_labels = embeddings.tolist(), labels.tolist()
    anchor_losses = []
    for i, y in enumerate(row_labels):
        positives = [p for p, label in enumerate(row_labels) if p != i and label == y]
        if not positives:
            continue
        denominator = sum(
            counts[row_labels[k]] * math.exp(dot(rows[i], rows[k]) / temperature)
            for k in range(len(rows))
            if k != i
        )
        terms = [
            -math.log(counts[y] * math.exp(dot(rows[i], rows[p]) / temperature) / denominator) for p in positives
        ]
        anchor_losses.append(sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses)


def slow_eq7(embeddings, labels, counts, temperature) -> float:
    """Margin form: ``1/|P| sum_p log(1 + sum_{k != i, p} e^{log(n_{y_k}/n_y)} e^{s_ik - s_ip})``."""
    rows, row_labels = embeddings.tolist(), labels.tolist()
    anchor_losses = []
    for i, y in enumerate(row_labels):
        positives = [p for p, label in enumerate(row_labels) if p != i and label == y]
        if not positives:
            continue
        terms = []
        for p in positives:
            s_ip = dot(rows[i], rows[p]) / temperature
            margins = sum(
                math.exp(math.log(counts[row_labels[k]] / counts[y]) + dot(rows[i], rows[k]) / temperature - s_ip)
                for k in range(len(rows))
                if k not in (i, p)
            )
            terms.append(math.log(1 + margins))
        anchor_losses.append(sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses)


def slow_eq5(embeddings, labels, prototypes, counts, temperature) -> float:
    """``-1/|B_y| sum_{p in B_y\\{i} + c_y} log(n_y e^{s_ip} / sum_j n_j/(|B_j|+1) sum_{k in B_j + c_j} e^{s_ik})``.

    ``B_j`` are the rows of class ``j`` (both views) and ``|B_y|`` drops the anchor itself.
    """
    rows, protos, row_labels = embeddings.tolist(), prototypes.tolist(), labels.tolist()
    total = 0.0
    for i, y in enumerate(row_labels):
        denominator = 0.0
        for j in range(len(protos)):
            class_logits = [
                dot(rows[i], rows[k]) / temperature for k, lab in enumerate(row_labels) if lab == j and k != i
            ]
            class_logits.append(dot(rows[i], protos[j]) / temperature)
            denominator += counts[j] * sum(math.exp(s) for s in class_logits) / len(class_logits)
        positive_logits = [
            dot(rows[i], rows[p]) / temperature for p, lab in enumerate(row_labels) if lab == y and p != i
        ]
        positive_logits.append(dot(rows[i], protos[y]) / temperature)
        terms = [-math.log(counts[y] * math.exp(s) / denominator) for s in positive_logits]
        total += sum(terms) / len(terms)
    return total / len(row_labels)


def bcl_with_prior(embeddings, labels, prototypes, counts, temperature, **options):
    balanced_contrastive_loss = pytest.importorskip(
        "ltcore_bcl.loss", reason="BCL + RCL (eq. 5) needs the ltcore-bcl plugin"
    ).balanced_contrastive_loss
    class_ids = torch.arange(len(prototypes))
    return balanced_contrastive_loss(
        embeddings,
        labels,
        prototypes,
        temperature,
        logit_bias=class_prior_bias(labels, counts)[None, :],
        prototype_bias=class_prior_bias(class_ids, counts)[None, :],
        **options,
    )


def test_class_prior_bias_is_log_count_per_entry():
    labels = torch.tensor([2, 0, 5, 2])
    bias = class_prior_bias(labels, CLASS_COUNTS)
    assert bias.dtype == torch.float32
    torch.testing.assert_close(bias, torch.tensor([math.log(90), math.log(500), math.log(5), math.log(90)]))
    counts64 = torch.tensor(CLASS_COUNTS, dtype=torch.float64)
    assert class_prior_bias(labels, counts64).dtype == torch.float64


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.1, 0.7])
def test_rebalanced_supcon_matches_eq4(seed, temperature):
    embeddings, labels, _ = two_view_batch(seed)
    counts = torch.tensor(CLASS_COUNTS, dtype=torch.float64)
    expected = slow_eq4(embeddings, labels, CLASS_COUNTS, temperature)
    assert_relative(rebalanced_supcon_loss(embeddings, labels, counts, temperature), expected)


def test_rebalanced_supcon_with_single_view_rows():
    labels = torch.tensor([0, 3, 1, 0, 1, 5, 0, 2])
    generator = torch.Generator().manual_seed(3)
    embeddings = F.normalize(torch.randn(len(labels), 4, generator=generator, dtype=torch.float64), dim=1)
    counts = torch.tensor(CLASS_COUNTS, dtype=torch.float64)
    assert_relative(
        rebalanced_supcon_loss(embeddings, labels, counts, 0.2), slow_eq4(embeddings, labels, CLASS_COUNTS, 0.2)
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_eq7_margin_form_equals_eq4(seed):
    embeddings, labels, _ = two_view_batch(seed)
    counts = torch.tensor(CLASS_COUNTS, dtype=torch.float64)
    margin_form = slow_eq7(embeddings, labels, CLASS_COUNTS, 0.3)
    assert_relative(torch.tensor(slow_eq4(embeddings, labels, CLASS_COUNTS, 0.3)), margin_form)
    assert_relative(rebalanced_supcon_loss(embeddings, labels, counts, 0.3), margin_form)


def test_rebalanced_supcon_hand_computed():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    counts = torch.tensor([10.0, 2.0], dtype=torch.float64)
    # anchor 0: positive row 1 (s = 0), negative row 2 (s = 0.6); anchor 1: positive row 0, negative s = 0.8;
    # anchor 2 has no positive.
    loss_0 = -math.log(10 * math.exp(0.0) / (10 * math.exp(0.0) + 2 * math.exp(0.6)))
    loss_1 = -math.log(10 * math.exp(0.0) / (10 * math.exp(0.0) + 2 * math.exp(0.8)))
    assert_relative(rebalanced_supcon_loss(embeddings, labels, counts, 1.0), (loss_0 + loss_1) / 2)


def test_rebalancing_with_equal_counts_is_plain_supcon():
    embeddings, labels, _ = two_view_batch(seed=4)
    equal = [37] * len(CLASS_COUNTS)
    plain = float(supcon_loss(embeddings, labels, 0.1))
    assert_relative(rebalanced_supcon_loss(embeddings, labels, equal, 0.1), plain)
    assert abs(float(rebalanced_supcon_loss(embeddings, labels, CLASS_COUNTS, 0.1)) - plain) > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bcl_with_prior_matches_eq5(seed):
    embeddings, labels, prototypes = two_view_batch(seed)
    counts = torch.tensor(CLASS_COUNTS, dtype=torch.float64)
    expected = slow_eq5(embeddings, labels, prototypes, CLASS_COUNTS, 0.1)
    assert_relative(bcl_with_prior(embeddings, labels, prototypes, counts, 0.1), expected)


@pytest.mark.parametrize("averaging", ["L1", "L2", "L3"])
def test_bcl_with_equal_counts_is_plain_bcl(averaging):
    bcl_loss_module = pytest.importorskip("ltcore_bcl.loss", reason="needs the ltcore-bcl plugin")
    embeddings, labels, prototypes = two_view_batch(seed=6)
    equal = torch.full((len(CLASS_COUNTS),), 80.0, dtype=torch.float64)
    plain = bcl_loss_module.balanced_contrastive_loss(embeddings, labels, prototypes, 0.1, averaging=averaging)
    assert_relative(bcl_with_prior(embeddings, labels, prototypes, equal, 0.1, averaging=averaging), float(plain))


def slow_eq5_general(embeddings, labels, prototypes, counts, temperature, *, prototype_prior=True,
                     form="L1") -> float:
    """Eq. 5 by loops, with the prior on prototypes optional and BCL's L2 form.

    Entry ``k`` of class ``j`` carries weight ``w_k = n_j`` (a prototype carries ``n_j`` only with
    ``prototype_prior``). L1: ``D_i = sum_j 1/|A_j| sum_{k in A_j} w_k e^{s_ik}``; L2:
    ``D_i = sum_j exp(1/|A_j| sum_{k in A_j} (s_ik + log w_k))``. Numerator ``w_p e^{s_ip}``.
    """
    rows, protos, row_labels = embeddings.tolist(), prototypes.tolist(), labels.tolist()
    total = 0.0
    for i, y in enumerate(row_labels):
        entries = [(dot(rows[i], rows[k]) / temperature, lab, counts[lab])
                   for k, lab in enumerate(row_labels) if k != i]
        entries += [(dot(rows[i], protos[j]) / temperature, j, counts[j] if prototype_prior else 1.0)
                    for j in range(len(protos))]
        denominator = 0.0
        for j in range(len(protos)):
            block = [(s, w) for s, lab, w in entries if lab == j]
            if form == "L1":
                denominator += sum(w * math.exp(s) for s, w in block) / len(block)
            else:
                denominator += math.exp(sum(s + math.log(w) for s, w in block) / len(block))
        terms = [-math.log(w * math.exp(s) / denominator) for s, lab, w in entries if lab == y]
        total += sum(terms) / len(terms)
    return total / len(row_labels)


def random_batch(seed: int, rows: int = 24, num_classes: int = 7, dim: int = 5, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (rows // 2,), generator=generator).repeat(2)
    embeddings = F.normalize(torch.randn(rows, dim, generator=generator, dtype=dtype), dim=1)
    prototypes = F.normalize(torch.randn(num_classes, dim, generator=generator, dtype=dtype), dim=1)
    counts = torch.randint(3, 900, (num_classes,), generator=generator).tolist()
    return embeddings, labels, prototypes, counts


@pytest.mark.parametrize("seed", [10, 11, 12, 13])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_rebalanced_supcon_random_batches_match_eq4(seed, temperature):
    embeddings, labels, _, counts = random_batch(seed)
    expected = slow_eq4(embeddings, labels, counts, temperature)
    assert_relative(rebalanced_supcon_loss(embeddings, labels, torch.tensor(counts, dtype=torch.float64),
                                           temperature), expected)


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("temperature", [0.1, 0.4])
def test_bcl_with_prior_random_batches_match_eq5(seed, temperature):
    embeddings, labels, prototypes, counts = random_batch(seed)
    expected = slow_eq5(embeddings, labels, prototypes, counts, temperature)
    assert_relative(torch.tensor(slow_eq5_general(embeddings, labels, prototypes, counts, temperature)),
                    expected)
    value = bcl_with_prior(embeddings, labels, prototypes, torch.tensor(counts, dtype=torch.float64),
                           temperature)
    assert_relative(value, expected)


@pytest.mark.parametrize("seed", [20, 21])
def test_bcl_prior_on_samples_only(seed):
    """``rcl.prototype_prior = false``: prototype columns keep weight 1 (bias 0)."""
    bcl_loss = pytest.importorskip("ltcore_bcl.loss", reason="needs the ltcore-bcl plugin")
    embeddings, labels, prototypes, counts = random_batch(seed)
    expected = slow_eq5_general(embeddings, labels, prototypes, counts, 0.2, prototype_prior=False)
    value = bcl_loss.balanced_contrastive_loss(
        embeddings, labels, prototypes, 0.2,
        logit_bias=class_prior_bias(labels, torch.tensor(counts, dtype=torch.float64))[None, :])
    assert_relative(value, expected)
    assert abs(float(value) - slow_eq5(embeddings, labels, prototypes, counts, 0.2)) > 1e-4


@pytest.mark.parametrize("seed", [30, 31])
def test_bcl_l2_form_with_prior(seed):
    """On BCL's L2 ablation the prior multiplies each class's exp-of-mean term by ``n_j``."""
    embeddings, labels, prototypes, counts = random_batch(seed)
    expected = slow_eq5_general(embeddings, labels, prototypes, counts, 0.3, form="L2")
    value = bcl_with_prior(embeddings, labels, prototypes, torch.tensor(counts, dtype=torch.float64),
                           0.3, averaging="L2")
    assert_relative(value, expected)


def test_compressed_features_match_eq4_with_scaled_rows():
    """Eq. 4 on ``z~_i = z_i * s_{y_i}`` (sec. 3.3.2): the loss takes the scaled rows as given."""
    embeddings, labels, _, counts = random_batch(40)
    factors = torch.tensor([1.0, 0.005, 1.0, 0.005, 0.005, 1.0, 1.0], dtype=torch.float64)
    scaled = embeddings * factors[labels][:, None]
    expected = slow_eq4(scaled, labels, counts, 0.1)
    assert_relative(rebalanced_supcon_loss(scaled, labels, counts, 0.1), expected)


def test_float32_rows_match_the_float64_formula():
    embeddings, labels, prototypes, counts = random_batch(50)
    counts32 = torch.tensor(counts, dtype=torch.float32)
    assert_relative(rebalanced_supcon_loss(embeddings.float(), labels, counts32, 0.1),
                    slow_eq4(embeddings, labels, counts, 0.1))
    assert_relative(bcl_with_prior(embeddings.float(), labels, prototypes.float(), counts32, 0.1),
                    slow_eq5(embeddings, labels, prototypes, counts, 0.1))


def test_gradient_of_rebalanced_supcon_matches_finite_differences():
    embeddings, labels, _, counts = random_batch(60, rows=10, dim=4)
    embeddings.requires_grad_(True)
    counts64 = torch.tensor(counts, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: rebalanced_supcon_loss(z, labels, counts64, 0.3),
                                    (embeddings,))


def test_package_exports_the_plain_losses():
    import ltcore_rcl

    assert ltcore_rcl.rebalanced_supcon_loss is rebalanced_supcon_loss
    assert ltcore_rcl.class_prior_bias is class_prior_bias
    with pytest.raises(AttributeError):
        ltcore_rcl.no_such_name
