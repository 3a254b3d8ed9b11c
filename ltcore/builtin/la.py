"""``la``: logit-adjusted cross-entropy (Menon et al. 2021): CE on ``logits + tau * log(pi)``."""

import attrs

from ltcore import doc, hookimpl


@attrs.define(kw_only=True)
class Options:
    tau: float = doc("logit-adjustment strength tau (1.0 = Balanced Softmax)", default=1.0,
                     validator=attrs.validators.ge(0))
    weight: float = doc("alpha: weight of the LA-CE term in the run's total loss (RCL's "
                        "LC+SCL ablation: 2)", default=1.0, validator=attrs.validators.ge(0))


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
    from ltcore import ConfigError
    from ltcore.terms import logit_adjusted_term

    options = run.option("la")
    run.classifier_view()
    stage = run.main_stage
    recipe = stage.classifier_loss if stage.classifier_loss_is_default else None
    stage.set_classifier_loss(logit_adjusted_term(run, options.tau, options.weight))
    if recipe is not None and options.weight != 1.0 and recipe.weight != options.weight:
        raise ConfigError(f"la.weight = {options.weight:g}, but la replaces the classifier loss "
                          f"of plugin {recipe.plugin!r} and takes over its weight "
                          f"({recipe.weight:g}); set that plugin's classifier weight instead")
