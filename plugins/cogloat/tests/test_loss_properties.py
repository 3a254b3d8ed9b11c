"""The CoGloAT and ProCo losses on generated batches (hypothesis): random sizes, single-class
batches, classes absent from the batch, the queue or the coreset, unfilled queue slots and
adaptive temperatures give finite losses with finite gradients."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ltcore.testing import assert_finite_with_gradients, label_batches
from ltcore_cogloat import adaptive_temperatures, global_contrastive_loss, prototype_loss
from ltcore_cogloat.loss import GLOBAL_LOSS_VARIANTS


def unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.integers(0, 16), st.integers(1, 3), st.integers(1, 8),
       st.floats(0.05, 1.0), st.sampled_from(GLOBAL_LOSS_VARIANTS), st.booleans(), st.booleans())
def test_global_loss_is_finite_for_any_batch(batch, queue, positives, dim, gamma, variant,
                                             batch_keys, partly_filled):
    labels, classes = batch
    labels = torch.tensor(labels)
    queries = unit(len(labels), dim).requires_grad_()
    counts = torch.randint(1, 5000, (classes,))
    temperature = adaptive_temperatures(counts, gamma).double()[labels]
    valid = torch.rand(queue) < 0.5 if partly_filled else None
    loss = global_contrastive_loss(
        queries, unit(len(labels), dim), unit(len(labels), positives, dim), unit(queue, dim),
        labels, torch.randint(0, classes, (queue,)), temperature, variant=variant,
        negatives_valid=valid, include_batch_keys=batch_keys)
    assert_finite_with_gradients(loss, queries)


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.integers(1, 8), st.floats(0.05, 1.0), st.booleans())
def test_prototype_loss_is_finite_for_any_batch(batch, dim, temperature, masked):
    labels, classes = batch
    labels = torch.tensor(labels)
    views = unit(2, len(labels), dim).requires_grad_()
    mask = torch.rand(classes) < 0.5 if masked else None
    loss = prototype_loss(views, labels, unit(classes, dim), unit(classes, dim), temperature,
                          class_mask=mask)
    assert_finite_with_gradients(loss, views)
