"""The ``rcl`` plugin: Rebalanced Contrastive Learning on top of whichever contrastive loss runs.

* **Balanced-softmax rebalancing** (eqs. 4, 5, 7): through the run-time hook
  ``contrastive_logit_bias`` every contrast entry of class ``j`` (positives included) gets
  ``log n_j`` added to its logit, ``n_j`` being the training-set count. ``--plugin bcl --plugin
  rcl`` rebalances BCL's class-averaged terms (eq. 5), ``--plugin supcon --plugin rcl`` SupCon
  (eq. 4). Alone, ``--plugin rcl`` is the paper's "RCL": LA-CE + SupCon + RCL.
* **Feature compression** (sec. 3.3.2, 4.3): from ``compression_epoch`` on, the contrastive
  embeddings are multiplied by a per-class factor (hook ``adjust_embeddings``); the factors are
  chosen once from the per-class validation accuracy measured at the start of that epoch.
* The clustering metrics the paper reports (Calinski-Harabasz, Davies-Bouldin) are enabled for
  the final evaluation; the harmonic mean of per-class accuracy is always reported (``hmean``).

``setup_run`` is a hook wrapper: RCL's part runs after every other selected plugin has set the
run up (``trylast`` implementations such as GML's included), so it sees every contrastive term.
"""

from __future__ import annotations

import attrs

from ltcore import hookimpl
from ltcore.config import doc

PLUGIN = "rcl"
METRICS = ("calinski-harabasz", "davies-bouldin")
"""Registered metrics that RCL reports (final evaluation of each stage)."""


def _fraction(instance, attribute, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"'{attribute.name}' must be a fraction in [0, 1], got {value!r}")


@attrs.define(kw_only=True)
class Options:
    """RCL's options; ``temperature``, ``la_tau`` and the weights apply to the losses RCL adds
    itself (``--plugin rcl`` without another contrastive plugin)."""

    temperature: float = doc("SupCon temperature of the contrastive loss rcl adds when no other "
                             "plugin set one up (the paper does not give it; BCL's 0.1)",
                             default=0.1, validator=attrs.validators.gt(0))
    contrastive_weight: float = doc("beta: weight of the contrastive loss rcl adds", default=1.0,
                                    validator=attrs.validators.ge(0))
    classifier_weight: float = doc("alpha: weight of the LA-CE classifier loss rcl adds",
                                   default=2.0, validator=attrs.validators.ge(0))
    la_tau: float = doc("logit-adjustment tau of the LA-CE classifier loss rcl adds (1.3 by "
                        "the paper's grid search)", default=1.3, validator=attrs.validators.ge(0))
    prototype_prior: bool = doc("prototype (class-complement) columns also get log n_j, so eq. 5 "
                                "scales BCL's whole class block j, prototype c_j included",
                                default=True)
    compression: bool = doc("compress contrastive features per class from compression_epoch "
                            "(needs a validation split)", default=True)
    compression_epoch: int | None = doc(
        "0-based epoch of the main stage from which features are compressed; per-class "
        "validation accuracy is measured at its start (default: half the main stage, "
        "epochs // 2)", default=None,
        validator=attrs.validators.optional(attrs.validators.ge(0)))
    compression_threshold: float = doc("classes with validation accuracy strictly below this "
                                       "fraction get compression_factor_below", default=0.2,
                                       validator=_fraction)
    compression_factor_below: float = doc("factor of the classes below the threshold (sec. 4.3: "
                                          "1)", default=1.0, validator=attrs.validators.gt(0))
    compression_factor_others: float = doc("factor of the other classes (sec. 4.3: 0.005)",
                                           default=0.005, validator=attrs.validators.gt(0))


def compression_start(run, options: Options) -> int:
    """The main-stage epoch from which features are compressed."""
    if options.compression_epoch is not None:
        return options.compression_epoch
    return run.main_stage.epochs // 2


def _state(run):
    from .state import MODULE

    return run.modules[MODULE] if MODULE in run.modules else None


def _check_rebalanceable(run) -> set[tuple[str, str]]:
    """``(plugin, loss)`` of each contrastive term of the run; raise if one is not rebalanceable."""
    from ltcore.errors import PluginError

    targets = set()
    for stage in run.stages:
        for term in stage.contrastive_losses:
            if not term.rebalanceable:
                raise PluginError(
                    f"plugin {PLUGIN!r} cannot rebalance the contrastive loss {term.name!r} of "
                    f"plugin {term.plugin!r} (stage {stage.name!r}): that loss takes no "
                    f"contrastive logit bias (its LossTerm has rebalanceable=False), so RCL's "
                    f"log n_j prior has nothing to act on. Drop --plugin {PLUGIN}, or switch "
                    f"plugin {term.plugin!r} to a rebalanceable form of its loss where it has "
                    f"one (bcl: averaging L1 or L2, not the prototype-only L3)")
            targets.add((term.plugin, term.name))
    return targets


def _add_own_losses(run, options: Options) -> set[tuple[str, str]]:
    """The paper's stand-alone RCL: LA-CE (default classifier loss) + SupCon, rebalanced."""
    from ltcore.builtin.la import logit_adjusted_term

    stage = run.main_stage
    term = run.build("loss", "supcon", temperature=options.temperature,
                     weight=options.contrastive_weight, plugin=PLUGIN)
    stage.add_loss(term)
    run.classifier_view()
    stage.set_classifier_loss(logit_adjusted_term(run, options.la_tau, options.classifier_weight,
                                                  plugin=PLUGIN), default=True)
    return {(term.plugin, term.name)}


@hookimpl
def register_options(register):
    register(Options)


@hookimpl(wrapper=True)
def setup_run(run):
    """Runs after every other selected plugin's ``setup_run``, ``trylast`` ones included."""
    result = yield
    _setup(run)
    return result


def _setup(run) -> None:
    """Check the run, rebalance its contrastive terms (adding RCL's own if there is none)."""
    from ltcore.errors import ConfigError, DataError

    from .state import MODULE, STATE, RebalancingState

    options: Options = run.option(PLUGIN)
    counts = run.class_counts
    if bool((counts <= 0).any()):
        empty = (counts <= 0).nonzero().flatten().tolist()
        raise DataError(f"plugin {PLUGIN!r} adds log n_j of each class's training count to the "
                        f"contrastive logits, but classes {empty} have no training image")
    if options.compression:
        if run.dataset.val is None or len(run.dataset.val) == 0:
            raise ConfigError(
                f"plugin {PLUGIN!r}: feature compression measures the per-class validation "
                f"accuracy, but dataset {run.dataset.name!r} has no validation split; use a "
                f"dataset with one, or turn compression off with --set {PLUGIN}.compression=false")
        start = compression_start(run, options)
        if start >= run.main_stage.epochs:
            raise ConfigError(
                f"{PLUGIN}.compression_epoch = {start} is not an epoch of the main stage "
                f"({run.main_stage.epochs} epochs, 0-based), so compression would never switch "
                f"on; lower it or set {PLUGIN}.compression=false")
    targets = _check_rebalanceable(run)
    if not targets:
        targets = _add_own_losses(run, options)
    run.add_module(MODULE, RebalancingState(counts, prototype_prior=options.prototype_prior,
                                            targets=targets))
    run.state[STATE] = {"compression": None}
    metrics = run.state.setdefault("metrics", [])
    metrics.extend(m for m in METRICS if m not in metrics)


@hookimpl
def contrastive_logit_bias(contrast):
    state = _state(contrast.run)
    return state.bias(contrast) if state is not None else None


@hookimpl
def adjust_embeddings(step):
    from .state import STATE

    run = step.run
    if step.stage.name != run.main_stage.name or not run.state[STATE]["compression"]:
        return
    state = _state(run)
    for role in step.embedding_roles():
        step.embeddings[role] = state.compress(step.embeddings[role], step.targets(role))


@hookimpl
def epoch_start(run, stage, epoch):
    from .state import STATE, measure_and_switch

    options: Options = run.option(PLUGIN)
    if (not options.compression or stage.name != run.main_stage.name
            or run.state[STATE]["compression"] or epoch < compression_start(run, options)):
        return
    measure_and_switch(run, stage, epoch, options)


@hookimpl
def epoch_end(run, stage, epoch, metrics):
    from .state import STATE

    if stage.name != run.main_stage.name:
        return
    record = run.state[STATE]["compression"]
    metrics["rcl/compression"] = 1.0 if record else 0.0
    if record and record["epoch"] == epoch:
        metrics["rcl/classes_below_threshold"] = float(len(record["below_threshold"]))
        for c, factor in enumerate(record["factors"]):
            metrics[f"rcl/factor/{c}"] = factor


CIFAR = {
    "model.backbone": "resnet32", "model.classifier": "cosine",
    "model.projection_hidden": 512, "model.projection_dim": 128,
    "batch_size": 256, "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "step", "schedule.warmup_epochs": 5, "schedule.milestones": [160, 180],
    "epochs": 200, "imbalance_factor": 100.0,
    "rcl.la_tau": 1.3, "rcl.classifier_weight": 2.0, "rcl.contrastive_weight": 1.0,
    "rcl.temperature": 0.1, "rcl.compression": True, "rcl.compression_threshold": 0.2,
    "rcl.compression_factor_below": 1.0, "rcl.compression_factor_others": 0.005,
    "bcl.la_tau": 1.3, "bcl.classifier_weight": 2.0, "bcl.contrastive_weight": 1.0,
}


@hookimpl
def register_presets(register):
    register("default",
             {"views.classifier": "autoaugment-cutout", "views.contrastive": "simaugment"},
             "RCL's views (BCL's): autoaugment-cutout for the classifier, simaugment for both "
             "contrastive views")
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        register(name, {**CIFAR, "dataset": name},
                 f"RCL paper, CIFAR-{classes}-LT IF 100, ResNet-32, 200 epochs, lr 0.2, LA tau "
                 f"1.3, alpha 2, beta 1, compression from epoch 100 (after bcl's preset of the "
                 f"same name when bcl is selected first)")
