"""``kcl``: k-positive contrastive learning (Kang et al. 2021) trained jointly with the classifier:
``CE(classifier view) + weight * KCL(two contrastive views)``.

KCL is SupCon with a balanced positive set: each anchor's positives are its other view plus ``k``
same-class samples drawn at random (all of them when the batch has fewer), so every class pulls
with the same number of positives. The draw uses the run's seeded random stream. The term is
rebalanceable (``--plugin kcl --plugin rcl``); ``--plugin kcl --plugin crt`` adds KCL's decoupled
classifier stage.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PLUGIN = "kcl"


@attrs.define(kw_only=True)
class Options:
    """Options of ``kcl``."""

    k: int = doc("positives per anchor besides its own other view (KCL uses 6)", default=6,
                 validator=attrs.validators.ge(0))
    temperature: float = doc("contrastive temperature", default=0.1,
                             validator=attrs.validators.gt(0))
    weight: float = doc("weight of the KCL term", default=1.0, validator=attrs.validators.ge(0))


def kcl_term(run, k: int = 6, temperature: float = 0.1, weight: float = 1.0,
             plugin: str = PLUGIN):
    """KCL over the run's two contrastive views (rebalanceable)."""
    from ltcore import LossTerm
    from ltcore.losses import kcl_loss

    run.contrastive_views(2)

    def fn(step):
        z, labels = step.stacked_embeddings()
        return kcl_loss(z, labels, temperature, k, n_views=len(step.embedding_roles()),
                        logit_bias=step.contrastive_bias(labels, labels))

    return LossTerm("kcl", fn, plugin, weight, kind="contrastive", rebalanceable=True)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("kcl", kcl_term, "k-positive contrastive loss over the contrastive views")


@hookimpl
def register_reference_results(register):
    from ltcore.builtin.ldam_drw import register_quoted_baseline

    register_quoted_baseline(register, "kcl", 77.6)


@hookimpl
def setup_run(run):
    options = run.option(PLUGIN)
    run.classifier_view()
    run.main_stage.add_loss(kcl_term(run, options.k, options.temperature, options.weight))
