"""``cb``: class-balanced re-weighting by the effective number of samples (Cui et al. 2019).

Class ``j`` is weighted by ``(1 - beta) / (1 - beta^n_j)``, normalised to sum to ``C``, in a
cross-entropy or softmax focal loss on the classifier view; the reduction is the weighted mean
``sum_i w_{y_i} l_i / sum_i w_{y_i}``. With ``start_epoch > 0`` the weights are deferred (the
loss is unweighted before that epoch): ``CE-DRW`` / ``Focal-DRW`` of Cao et al. 2019.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PLUGIN = "cb"


@attrs.define(kw_only=True)
class Options:
    """Options of ``cb``."""

    beta: float = doc("effective-number beta in [0, 1) (0 = unweighted)", default=0.9999,
                      validator=[attrs.validators.ge(0), attrs.validators.lt(1)])
    loss: str = doc("ce | focal: the re-weighted loss", default="ce",
                    validator=attrs.validators.in_(("ce", "focal")))
    gamma: float = doc("focal gamma (loss = focal only)", default=1.0,
                       validator=attrs.validators.ge(0))
    start_epoch: int = doc("first re-weighted epoch of the main stage (0 = from the start; "
                           "> 0 = deferred re-weighting)", default=0,
                           validator=attrs.validators.ge(0))


def class_balanced_term(run, beta: float = 0.9999, loss: str = "ce", gamma: float = 1.0,
                        start_epoch: int = 0, weight: float = 1.0, plugin: str = PLUGIN):
    """Class-balanced CE or focal loss on the classifier view's logits."""
    import torch.nn.functional as F

    from ltcore.builtin.ldam_drw import deferred_weights
    from ltcore.losses.classification import focal_loss
    from ltcore.run import CLASSIFIER_ROLE, LossTerm

    class_weights = deferred_weights(run, start_epoch, beta)
    if loss == "focal":
        def base(logits, targets, w):
            return focal_loss(logits, targets, gamma, weight=w)
    else:
        def base(logits, targets, w):
            return F.cross_entropy(logits, targets,
                                   weight=None if w is None else w.to(logits.dtype))

    def fn(step):
        return base(step.logits[CLASSIFIER_ROLE], step.targets(CLASSIFIER_ROLE),
                    class_weights(step.epoch))

    return LossTerm(f"cb-{loss}", fn, plugin, weight, kind="classifier")


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("cb-ce", lambda run, **options: class_balanced_term(run, loss="ce", **options),
             "class-balanced (effective number) cross-entropy")
    register("cb-focal", lambda run, **options: class_balanced_term(run, loss="focal", **options),
             "class-balanced (effective number) softmax focal loss")


@hookimpl
def register_presets(register):
    from ltcore.builtin.ldam_drw import register_cifar_recipes

    register_cifar_recipes(register)


@hookimpl
def setup_run(run):
    from ltcore.builtin.ldam_drw import warn_if_never

    options = run.option(PLUGIN)
    if options.start_epoch:
        warn_if_never(run, PLUGIN, "cb.start_epoch", options.start_epoch)
    run.classifier_view()
    run.main_stage.set_classifier_loss(class_balanced_term(run, **attrs.asdict(options)))
