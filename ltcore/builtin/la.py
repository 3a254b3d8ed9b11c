"""``la``: logit-adjusted cross-entropy (Menon et al. 2021): CE on ``logits + tau * log(pi)``."""

import attrs

from ltcore import hookimpl
from ltcore.config import doc


@attrs.define(kw_only=True)
class Options:
    tau: float = doc("logit-adjustment strength tau (1.0 = Balanced Softmax)", default=1.0,
                     validator=attrs.validators.ge(0))


def logit_adjusted_term(run, tau: float = 1.0, weight: float = 1.0, plugin: str = "la"):
    """CE on logits + tau * log(class prior); test-time logits stay raw."""
    from ltcore.losses.classification import logit_adjusted_cross_entropy
    from ltcore.terms import classifier_term

    prior = run.class_prior
    return classifier_term("la-ce", plugin,
                           lambda logits, y: logit_adjusted_cross_entropy(logits, y, prior, tau),
                           weight)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("la-ce", logit_adjusted_term)


@hookimpl
def setup_run(run):
    run.classifier_view()
    run.main_stage.set_classifier_loss(logit_adjusted_term(run, run.option("la").tau))
