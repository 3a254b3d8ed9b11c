"""The GML losses on generated batches and banks (hypothesis): random sizes, single-class
batches, classes absent from the batch or the bank, unwritten bank slots and queries whose own
image fills the bank give finite losses with finite gradients."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ltcore.testing import assert_finite_with_gradients, label_batches
from ltcore_gml import gml_loss, temperature_loss


def unit_rows(count, dim):
    return F.normalize(torch.randn(count, dim, dtype=torch.float64), dim=1).requires_grad_()


@settings(max_examples=60, deadline=None)
@given(label_batches(), label_batches(max_size=20), st.integers(1, 8), st.floats(0.01, 1.0),
       st.floats(0, 2), st.booleans())
def test_finite_for_any_batch_and_bank(batch, bank, dim, temperature, alpha, partly_written):
    labels, classes = batch
    bank_labels, bank_classes = bank
    classes = max(classes, bank_classes)
    labels, bank_labels = torch.tensor(labels), torch.tensor(bank_labels)
    query, features = unit_rows(len(labels), dim), unit_rows(len(bank_labels), dim)
    prior = torch.rand(classes, dtype=torch.float64) + 1e-6
    prior = prior / prior.sum()
    valid = torch.rand(len(bank_labels)) < 0.5 if partly_written else None
    loss = gml_loss(query, labels, features, bank_labels, prior, temperature, alpha,
                    bank_valid=valid)
    assert_finite_with_gradients(loss, query, features)

    log_temperature = torch.tensor(temperature, dtype=torch.float64).log().requires_grad_()
    own_images = torch.randint(0, 4, (len(bank_labels),))
    loss = temperature_loss(query.detach(), labels, features.detach(), bank_labels, own_images,
                            torch.randint(0, 4, (len(labels),)), prior, log_temperature, alpha,
                            bank_valid=valid)
    assert_finite_with_gradients(loss, log_temperature)
