"""``focal``: softmax focal loss (Lin et al. 2017) on the classifier view,
``-(1 - p_y)^gamma log p_y`` averaged over the batch (``gamma = 0`` is cross-entropy)."""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PLUGIN = "focal"


@attrs.define(kw_only=True)
class Options:
    """Options of ``focal``."""

    gamma: float = doc("focusing parameter gamma (0 = cross-entropy; the LDAM-DRW reference's "
                       "long-tailed baseline uses 1, Lin et al.'s detector 2)", default=1.0,
                       validator=attrs.validators.ge(0))


def focal_term(run, gamma: float = 1.0, weight: float = 1.0, plugin: str = PLUGIN):
    """Focal loss on the classifier view's logits."""
    from ltcore.losses.classification import focal_loss
    from ltcore.terms import classifier_term

    return classifier_term("focal", plugin, lambda logits, y: focal_loss(logits, y, gamma), weight)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("focal", focal_term, "softmax focal loss -(1 - p_y)^gamma log p_y")


@hookimpl
def register_presets(register):
    from ltcore.builtin.ldam_drw import register_cifar_recipes

    register_cifar_recipes(register)


@hookimpl
def setup_run(run):
    run.classifier_view()
    run.main_stage.set_classifier_loss(focal_term(run, run.option(PLUGIN).gamma))
