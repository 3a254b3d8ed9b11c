"""``ldam-drw``: label-distribution-aware margins with deferred re-weighting (Cao et al. 2019).

The classifier loss is ``w_y * CE(s * (z - m_y e_y), y)`` with margins ``m_j = K / n_j^(1/4)``
(``K`` makes the rarest class's margin ``max_margin``), ``z`` the cosines of the normalised
classifier and ``s`` the scale, as in the LDAM-DRW reference code (``NormedLinear`` + ``s = 30``).
Deferred re-weighting: the class weights ``w`` are ones before epoch ``drw_epoch`` of the main
stage and the class-balanced weights ``(1 - beta) / (1 - beta^n_j)`` (summing to ``C``) from it on.
The default preset selects the cosine classifier; with a linear classifier the margins are
subtracted from the raw logits (``s`` is a property of the normalised classifier and is not applied).
"""

from __future__ import annotations

import warnings

import attrs

from ltcore import doc, hookimpl

PLUGIN = "ldam-drw"


@attrs.define(kw_only=True)
class Options:
    """Options of ``ldam-drw``."""

    max_margin: float = doc("margin of the rarest class (K / n_min^(1/4)); the reference uses 0.5",
                            default=0.5, validator=attrs.validators.gt(0))
    scale: float = doc("s: factor on the margin-adjusted cosines (cosine classifier only)",
                       default=30.0, validator=attrs.validators.gt(0))
    drw: bool = doc("deferred re-weighting on (LDAM-DRW) or off (plain LDAM)", default=True)
    drw_epoch: int = doc("first re-weighted epoch of the main stage (0-based; the reference's "
                         "160 of 200)", default=160, validator=attrs.validators.ge(0))
    beta: float = doc("effective-number beta of the deferred class weights", default=0.9999,
                      validator=[attrs.validators.ge(0), attrs.validators.lt(1)])


def cifar_recipe(dataset: str) -> dict:
    """The LDAM-DRW reference code's CIFAR-LT schedule (shared by the re-weighting baselines)."""
    return {"dataset": dataset, "imbalance_factor": 100.0, "model.backbone": "resnet32",
            "views.classifier": "standard", "epochs": 200, "batch_size": 128, "optim.lr": 0.1,
            "optim.momentum": 0.9, "optim.weight_decay": 2e-4, "schedule.kind": "step",
            "schedule.warmup_epochs": 5, "schedule.milestones": [160, 180], "schedule.gamma": 0.01}


def register_cifar_recipes(register, extra: dict | None = None, note: str = "") -> None:
    """Register the ``cifar10-lt`` and ``cifar100-lt`` presets on the LDAM-DRW schedule."""
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        register(name, {**cifar_recipe(name), **(extra or {})},
                 f"LDAM-DRW reference schedule, CIFAR-{classes}-LT IF 100, ResNet-32, 200 "
                 f"epochs{note}")


CIFAR_RESULTS = "ResNet-32, 200 epochs, top-1 on the balanced test set (docs/comparing.md)"
"""How the published CIFAR-LT numbers of every seed paper were measured."""


def register_quoted_baseline(register, plugin: str, accuracy: float) -> None:
    """A baseline's CIFAR-10-LT IF 100 top-1 as the seed papers quote it (``--reference papers``)."""
    register(plugins=plugin, dataset="cifar10-lt", imbalance_factor=100,
             metrics={"test/acc": accuracy},
             source="baseline as quoted by the papers, " + CIFAR_RESULTS)


def deferred_weights(run, start_epoch: int, beta: float):
    """``weights(epoch)``: ``None`` (unweighted) before ``start_epoch``, the class-balanced
    weights from it on, as ``drw_weights`` of the loss library. The weights are built once on
    the run's device, so the per-step choice is a comparison of epoch numbers (no host sync)."""
    from ltcore.losses.classification import class_balanced_weights

    balanced = class_balanced_weights(run.class_counts, beta).to(run.device)

    def weights(epoch: int):
        return balanced if epoch >= start_epoch else None
    return weights


def warn_if_never(run, plugin: str, key: str, start_epoch: int) -> None:
    """Warn when a deferred schedule starts after the main stage's last epoch."""
    epochs = run.main_stage.epochs
    if start_epoch >= epochs:
        warnings.warn(f"{plugin}: {key} = {start_epoch} but the main stage has {epochs} epochs, "
                      f"so re-weighting never starts; set --set {key}=N with N < {epochs}",
                      stacklevel=2)


def ldam_term(run, max_margin: float = 0.5, scale: float = 30.0, drw: bool = True,
              drw_epoch: int = 160, beta: float = 0.9999, weight: float = 1.0,
              plugin: str = PLUGIN):
    """LDAM (with deferred re-weighting when ``drw``) on the classifier view's logits."""
    from ltcore.losses.classification import ldam_loss, ldam_margins
    from ltcore.models import CosineClassifier
    from ltcore.run import CLASSIFIER_ROLE, LossTerm

    margins = ldam_margins(run.class_counts, max_margin).to(run.device)
    classifier = run.model.classifier
    cosine = isinstance(classifier, CosineClassifier)
    logit_scale = float(classifier.scale) if cosine else 1.0
    loss_scale = scale if cosine else 1.0
    class_weights = deferred_weights(run, drw_epoch, beta) if drw else (lambda epoch: None)

    def fn(step):
        z = step.logits[CLASSIFIER_ROLE] / logit_scale
        return ldam_loss(z, step.targets(CLASSIFIER_ROLE), margins, loss_scale,
                         weight=class_weights(step.epoch))

    return LossTerm("ldam-drw" if drw else "ldam", fn, plugin, weight, kind="classifier")


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("ldam", lambda run, **options: ldam_term(run, **{"drw": False, **options}),
             "LDAM: CE(s * (cos - m_y e_y)) with m_j proportional to n_j^(-1/4)")
    register("ldam-drw", ldam_term, "LDAM with deferred class-balanced re-weighting")


@hookimpl
def register_presets(register):
    register("default", {"model.classifier": "cosine", "model.cosine_scale": 30.0},
             "LDAM's normalised classifier (the reference's NormedLinear); s is ldam-drw.scale")
    register_cifar_recipes(register, {"ldam-drw.drw_epoch": 160}, ", DRW at 160")


@hookimpl
def register_reference_results(register):
    register_quoted_baseline(register, PLUGIN, 77.0)


@hookimpl
def setup_run(run):
    options = run.option(PLUGIN)
    if options.drw:
        warn_if_never(run, PLUGIN, "ldam-drw.drw_epoch", options.drw_epoch)
    run.classifier_view()
    run.main_stage.set_classifier_loss(ldam_term(run, **attrs.asdict(options)))
