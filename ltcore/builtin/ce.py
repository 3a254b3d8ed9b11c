"""``ce``: plain cross-entropy on the classifier view (the default when no method is selected)."""

from ltcore import hookimpl


def ce_term(run, weight: float = 1.0):
    """Cross-entropy on the classifier view's logits (with loss.label_smoothing)."""
    from ltcore.terms import cross_entropy_term

    return cross_entropy_term("ce", "ce", weight)


@hookimpl
def register_losses(register):
    register("ce", ce_term)


@hookimpl
def register_reference_results(register):
    from ltcore.builtin.ldam_drw import register_quoted_baseline

    register_quoted_baseline(register, "ce", 70.4)


@hookimpl
def setup_run(run):
    run.classifier_view()
    run.main_stage.set_classifier_loss(ce_term(run))
