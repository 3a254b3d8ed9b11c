"""``la``: logit-adjusted cross-entropy (Menon et al. 2021): CE on ``logits + tau * log(pi)``."""

import attrs

from ltcore import doc, hookimpl


@attrs.define(kw_only=True)
class Options:
    tau: float = doc("logit-adjustment strength tau (1.0 = Balanced Softmax)", default=1.0,
                     validator=attrs.validators.ge(0))


def _logit_adjusted_term(run, **options):
    """CE on logits + tau * log(class prior); evaluation logits stay raw (options tau, weight)"""
    from ltcore.terms import logit_adjusted_term

    return logit_adjusted_term(run, **options)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("la-ce", _logit_adjusted_term)


@hookimpl
def setup_run(run):
    from ltcore.terms import logit_adjusted_term

    run.classifier_view()
    run.main_stage.set_classifier_loss(logit_adjusted_term(run, run.option("la").tau))
