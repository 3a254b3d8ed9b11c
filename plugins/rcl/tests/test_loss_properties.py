"""The RCL loss on generated batches (hypothesis): random sizes, single-class batches, classes
absent from the batch and extreme class counts give a finite loss with finite gradients."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ltcore.testing import assert_finite_with_gradients, label_batches
from ltcore_rcl import rebalanced_supcon_loss


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.integers(1, 8), st.floats(0.05, 1.0), st.integers(1, 10**6))
def test_finite_for_any_batch(batch, dim, temperature, largest_count):
    labels, classes = batch
    labels = torch.tensor(labels + labels)
    rows = F.normalize(torch.randn(len(labels), dim, dtype=torch.float64), dim=1).requires_grad_()
    counts = torch.randint(1, largest_count + 1, (classes,))
    assert_finite_with_gradients(rebalanced_supcon_loss(rows, labels, counts, temperature), rows)
