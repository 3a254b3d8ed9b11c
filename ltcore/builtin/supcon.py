"""``supcon``: supervised contrastive learning (Khosla et al. 2020, L_out) trained jointly with
the classifier: ``CE(classifier view) + weight * SupCon(two contrastive views)``.

``supcon`` owns only the SupCon term (``supcon.weight``, beta). The classifier term is the run's:
the default CE (weight 1), or the classifier loss of a selected plugin with its own weight, e.g.
``--plugin la --plugin supcon --set la.weight=2`` is RCL's LC+SCL ablation (alpha 2, beta 1).
The contrastive term is rebalanceable: ``--plugin supcon --plugin rcl`` is RCL's eq. 4.
"""

import attrs

from ltcore import doc, hookimpl


@attrs.define(kw_only=True)
class Options:
    temperature: float = doc("SupCon temperature", default=0.1, validator=attrs.validators.gt(0))
    weight: float = doc("beta: weight of the SupCon term (the classifier term's weight is its "
                        "own plugin's, e.g. la.weight; the default CE has 1)", default=1.0,
                        validator=attrs.validators.ge(0))


def supcon(run, temperature: float = 0.1, weight: float = 1.0, plugin: str = "supcon"):
    """SupCon over the run's contrastive views (rebalanceable)."""
    from ltcore.terms import supcon_term

    run.contrastive_views(2)
    return supcon_term("supcon", plugin, temperature, weight)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("supcon", supcon)


@hookimpl
def setup_run(run):
    options = run.option("supcon")
    run.classifier_view()
    run.main_stage.add_loss(supcon(run, options.temperature, options.weight))
