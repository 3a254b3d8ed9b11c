"""``balanced-softmax``: Balanced Softmax (Ren et al. 2020), ``n_y e^{f_y} / sum_j n_j e^{f_j}``."""

from ltcore import hookimpl


def balanced_softmax_term(run, weight: float = 1.0):
    """Balanced Softmax cross-entropy on the classifier view."""
    from ltcore.losses.classification import balanced_softmax_loss
    from ltcore.terms import classifier_term

    counts = run.class_counts
    return classifier_term("balanced-softmax", "balanced-softmax",
                           lambda logits, y, **smoothing: balanced_softmax_loss(
                               logits, y, counts, **smoothing),
                           weight, label_smoothing=True)


@hookimpl
def register_losses(register):
    register("balanced-softmax", balanced_softmax_term)


@hookimpl
def register_reference_results(register):
    from ltcore.builtin.ldam_drw import register_quoted_baseline

    register_quoted_baseline(register, "balanced-softmax", 84.9)


@hookimpl
def setup_run(run):
    run.classifier_view()
    run.main_stage.set_classifier_loss(balanced_softmax_term(run))
