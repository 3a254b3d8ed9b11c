"""The BCL loss on generated batches (hypothesis): random sizes, single-class batches and
classes absent from the batch give a finite loss with finite gradients, in every form."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ltcore.testing import assert_finite_with_gradients, label_batches
from ltcore_bcl import balanced_contrastive_loss

FORMS = [dict(averaging="L1"), dict(averaging="L2"), dict(averaging="L3"),
         dict(class_averaging=False), dict(class_complement=False),
         dict(class_averaging=False, class_complement=False)]


@settings(max_examples=60, deadline=None)
@given(label_batches(), st.integers(1, 8), st.floats(0.05, 1.0), st.sampled_from(FORMS),
       st.booleans())
def test_finite_for_any_batch(batch, dim, temperature, form, biased):
    labels, classes = batch
    labels = torch.tensor(labels + labels)
    rows = F.normalize(torch.randn(len(labels), dim, dtype=torch.float64), dim=1).requires_grad_()
    prototypes = F.normalize(torch.randn(classes, dim, dtype=torch.float64), dim=1).requires_grad_()
    bias = {}
    if biased:
        log_counts = torch.log(torch.randint(1, 5000, (classes,)).double())
        bias = dict(logit_bias=log_counts[labels][None, :], prototype_bias=log_counts[None, :])
    loss = balanced_contrastive_loss(rows, labels, prototypes, temperature, **bias, **form)
    used = (rows, prototypes) if form.get("class_complement", True) else (rows,)
    assert_finite_with_gradients(loss, *used)
