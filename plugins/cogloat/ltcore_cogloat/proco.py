"""The ``proco`` plugin: prototype learning via coreset selection (ProCo, Bach et al., TMLR 2023).

ProCo adds a prototype loss to whatever contrastive loss the other selected plugins set up
(CoGloAT in the paper; SupCon, BCL, ... work the same way). It acts in ``compose_run``, after
every plugin's ``setup_run``: in every stage that has contrastive terms it multiplies their
weights by ``alpha`` and adds the ``proco`` term with weight ``1 - alpha``, so the stage trains
``alpha L_contrastive + (1 - alpha) L_ProCo``. Without a contrastive term there is nothing to
combine with, and setting up the run fails with an error naming ``proco``.

At every epoch start the stage's coreset prototypes are refreshed (each
:class:`~ltcore_cogloat.prototypes.CoresetPrototypes` is a run plugin object): the per-class
coreset is re-selected when due (k-center greedy on the current embeddings), two augmented views
of it are embedded with the current model (eval mode, no gradient) and averaged per class into
two prototype sets.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl, interval

PLUGIN = "proco"




@attrs.define(kw_only=True)
class Options:
    """Options of the ``proco`` plugin (``proco.<name>``)."""

    alpha: float = doc("alpha of alpha L_contrastive + (1 - alpha) L_ProCo", default=0.5,
                       validator=interval(0, 1))
    temperature: float = doc("temperature of the prototype loss (when adaptive_temperature is "
                             "false)", default=0.1, validator=attrs.validators.gt(0))
    adaptive_temperature: bool = doc("use CoGloAT's per-class temperature (eq. 8) for each "
                                     "anchor of the prototype loss", default=False)
    gamma: float = doc("minimum temperature of the adaptive temperature", default=0.1,
                       validator=interval(0, 1, include_low=False))
    selection: str = doc("coreset selection per class: k-center-greedy (farthest-point "
                         "coverage of the class's embeddings) or random", default="k-center-greedy",
                         validator=attrs.validators.in_(("k-center-greedy", "random")))
    coreset_fraction: float = doc("coreset size per class: ceil(fraction * n_c), at least one "
                                  "image", default=0.1,
                                  validator=interval(0, 1, include_low=False))
    coreset_per_class: int = doc("coreset size per class: min(b, n_c) images (0: use "
                                 "coreset_fraction)", default=0, validator=attrs.validators.ge(0))
    reselect_every: int = doc("re-select the coreset every N epochs with the current model "
                              "(0: once, at the first epoch)", default=10,
                              validator=attrs.validators.ge(0))
    selection_features: str = doc("space of the k-center selection: projection (the contrastive "
                                  "embeddings) or backbone features", default="projection",
                                  validator=attrs.validators.in_(("projection", "backbone")))
    view: str = doc("view pipeline of the coreset's two views ('' = views.contrastive)",
                    default="")


def _coreset_prototypes(run, **options):
    """ProCo's coreset prototypes: class means of two augmented views of a per-class k-center
    coreset (refresh(epoch) at every epoch start; prototypes(step) -> [C, D])"""
    from .prototypes import coreset_prototypes

    return coreset_prototypes(run, **options)


def _proco_loss(run, provider=None, **options):
    """ProCo's symmetric prototype loss against two coreset prototype sets"""
    from .prototypes import coreset_prototypes, proco_term

    return proco_term(run, provider or coreset_prototypes(run), **options)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_prototype_providers(register):
    register("coreset", _coreset_prototypes)


@hookimpl
def register_losses(register):
    register("proco", _proco_loss)


@hookimpl
def compose_run(run):
    from ltcore import PluginError

    from .prototypes import coreset_prototypes, proco_term

    options: Options = run.option(PLUGIN)
    stages = [s for s in run.stages if s.contrastive_losses]
    if not stages:
        others = ", ".join(p for p in run.selected if p != PLUGIN) or "none"
        raise PluginError(
            "plugin 'proco' adds a prototype loss to the contrastive loss of another plugin, but "
            f"none of the other selected plugins ({others}) added a contrastive loss term; "
            "select one too, e.g. --plugin cogloat --plugin proco")
    for stage in stages:
        for term in stage.contrastive_losses:
            term.weight *= options.alpha
        provider = coreset_prototypes(
            run, stage, fraction=options.coreset_fraction,
            per_class=options.coreset_per_class or None, selection=options.selection,
            reselect_every=options.reselect_every, features=options.selection_features,
            view=options.view or None)
        stage.add_loss(proco_term(run, provider, temperature=options.temperature,
                                  adaptive=options.adaptive_temperature, gamma=options.gamma,
                                  weight=1.0 - options.alpha, plugin=PLUGIN))
