"""The ICCL losses on generated batches (hypothesis): random sizes, single-class batches,
classes absent from the batch, any interpolation weights and extreme logits give finite losses
with finite gradients."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ltcore.testing import assert_finite_with_gradients, label_batches
from ltcore_iccl import centroid_contrastive_loss, distillation_loss, interpolative_cross_entropy


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.integers(1, 8), st.floats(0.01, 1.0), st.floats(0, 1), st.booleans())
def test_finite_for_any_batch(batch, dim, temperature, weight, per_sample):
    labels, classes = batch
    labels_a = torch.tensor(labels)
    labels_b = labels_a[torch.randperm(len(labels_a))]
    lam = torch.rand(len(labels_a), dtype=torch.float64) if per_sample else weight
    rows = F.normalize(torch.randn(len(labels_a), dim, dtype=torch.float64), dim=1).requires_grad_()
    centroids = F.normalize(torch.randn(classes, dim, dtype=torch.float64), dim=1)
    log_counts = torch.log(torch.randint(1, 5000, (classes,)).double())
    for bias in (None, log_counts[None, :]):
        rows.grad = None
        loss = centroid_contrastive_loss(rows, centroids, labels_a, labels_b, lam, temperature,
                                         logit_bias=bias)
        assert_finite_with_gradients(loss, rows)

    logits = (50 * torch.randn(len(labels_a), classes, dtype=torch.float64)).requires_grad_()
    loss = interpolative_cross_entropy(logits, labels_a, labels_b, lam)
    assert_finite_with_gradients(loss, logits)
    logits.grad = None
    teacher = 50 * torch.randn(len(labels_a), classes, dtype=torch.float64)
    loss = distillation_loss(logits, teacher, labels_a, weight, 1.0 / temperature)
    assert_finite_with_gradients(loss, logits)
