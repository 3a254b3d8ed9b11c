"""The ``rcl`` plugin: Rebalanced Contrastive Learning on top of whichever contrastive loss runs.

* **Balanced-softmax rebalancing** (eqs. 4, 5, 7): through the run-time hook
  ``contrastive_logit_bias`` every contrast entry of class ``j`` (positives included) gets
  ``log n_j`` added to its logit, ``n_j`` being the training-set count. ``--plugin bcl --plugin
  rcl`` rebalances BCL's class-averaged terms (eq. 5), ``--plugin supcon --plugin rcl`` SupCon
  (eq. 4). Alone, ``--plugin rcl`` is the paper's "RCL": LA-CE + SupCon + RCL.
  ``rcl.prior=false`` switches the rebalancing off and keeps the rest (ablations).
* **Feature compression** (sec. 3.3.2, 4.3): from ``compression_epoch`` on, the contrastive
  embeddings are multiplied by a per-class factor (hook ``adjust_embeddings``); the factors are
  chosen once from the per-class validation accuracy measured at the start of that epoch.
* The clustering metrics the paper reports (Calinski-Harabasz, Davies-Bouldin) are enabled for
  the final evaluation; the harmonic mean of per-class accuracy is always reported (``hmean``).
* The published CIFAR-LT results of RCL and BCL + RCL are declared for ``--reference papers``,
  and the paper's Tables 1-5 for ``ltrun reproduce rcl:tableN`` (``ltcore_rcl.tables``).

RCL acts in ``compose_run``, after every selected plugin's ``setup_run``, so it sees every
contrastive term the others built; it rebalances a term because the term declares itself
``rebalanceable`` (``kind="contrastive"``), whatever plugin built it.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl, interval

PLUGIN = "rcl"
METRICS = ("calinski-harabasz", "davies-bouldin")
"""Registered metrics that RCL reports (final evaluation of each stage)."""



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
    prior: bool = doc("balanced-softmax rebalancing (eq. 4/5): log n_j added to each contrast "
                      "entry's logit; false keeps the rest of RCL (the losses it adds, feature "
                      "compression) on the un-rebalanced contrastive loss, for the ablations",
                      default=True)
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
                                       validator=interval(0, 1))
    compression_factor_below: float = doc("factor of the classes below the threshold (sec. 4.3: "
                                          "1)", default=1.0, validator=attrs.validators.gt(0))
    compression_factor_others: float = doc("factor of the other classes (sec. 4.3: 0.005)",
                                           default=0.005, validator=attrs.validators.gt(0))


def compression_start(run, options: Options) -> int:
    """The main-stage epoch from which features are compressed."""
    if options.compression_epoch is not None:
        return options.compression_epoch
    return run.main_stage.epochs // 2


def rebalanced_terms(run) -> list:
    """The contrastive terms of the run; raise naming the plugin of one that takes no bias."""
    from ltcore import PluginError

    terms = []
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
            terms.append(term)
    return terms


def _add_own_losses(run, options: Options) -> list:
    """The paper's stand-alone RCL: LA-CE (default classifier loss) + SupCon, rebalanced."""
    from ltcore import logit_adjusted_term

    stage = run.main_stage
    term = run.build("loss", "supcon", temperature=options.temperature,
                     weight=options.contrastive_weight, plugin=PLUGIN)
    stage.add_loss(term)
    run.classifier_view()
    stage.set_classifier_loss(logit_adjusted_term(run, options.la_tau, options.classifier_weight,
                                                  plugin=PLUGIN), default=True)
    return [term]


def _check(run, options: Options) -> None:
    from ltcore import ConfigError, DataError

    counts = run.class_counts
    if options.prior and bool((counts <= 0).any()):
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


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def compose_run(run):
    """Check the run and rebalance its contrastive terms, adding RCL's own if there is none."""
    from .state import Rebalancing

    options: Options = run.option(PLUGIN)
    _check(run, options)
    terms = rebalanced_terms(run) or _add_own_losses(run, options)
    run.register(Rebalancing(run, options, terms, compression_start(run, options)), PLUGIN)
    run.add_metrics(*METRICS)


CIFAR = {
    "model.backbone": "resnet32", "model.classifier": "cosine",
    "views.classifier": "autoaugment-cutout", "views.contrastive": "simaugment",
    "model.projection_hidden": 512, "model.projection_dim": 128,
    "batch_size": 256, "optim.lr": 0.2, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "step", "schedule.warmup_epochs": 5, "schedule.milestones": [160, 180],
    "epochs": 200, "imbalance_factor": 100.0,
    "rcl.la_tau": 1.3, "rcl.classifier_weight": 2.0, "rcl.contrastive_weight": 1.0,
    "rcl.temperature": 0.1, "rcl.compression": True, "rcl.compression_threshold": 0.2,
    "rcl.compression_factor_below": 1.0, "rcl.compression_factor_others": 0.005,
    "bcl.la_tau": 1.3, "bcl.classifier_weight": 2.0, "bcl.contrastive_weight": 1.0,
}


RESULTS = "ResNet-32, 200 epochs, top-1 on the balanced test set (docs/comparing.md)"


@hookimpl
def register_reference_results(register):
    for plugins, dataset, accuracies in (("rcl", "cifar10-lt", (86.0, 88.5, 91.7)),
                                         ("bcl,rcl", "cifar10-lt", (86.2, 88.4, 92.0)),
                                         ("rcl", "cifar100-lt", (52.2, 56.8, 65.6)),
                                         ("bcl,rcl", "cifar100-lt", (52.1, 56.0, 65.4))):
        for factor, accuracy in zip((100, 50, 10), accuracies):
            register(plugins=plugins, dataset=dataset, imbalance_factor=factor,
                     metrics={"test/acc": accuracy}, source="RCL, " + RESULTS)
    for plugins, dataset, hmean, what in (("rcl", "cifar100-lt", 42.4, " (SCL+RCL)"),
                                          ("bcl,rcl", "cifar100-lt", 41.1, ""),
                                          ("rcl", "cifar10-lt", 85.3, " (SCL+RCL)"),
                                          ("bcl,rcl", "cifar10-lt", 85.7, "")):
        register(plugins=plugins, dataset=dataset, imbalance_factor=100,
                 metrics={"test/hmean": hmean}, source=f"RCL harmonic mean{what}, " + RESULTS)


@hookimpl
def register_tables(register):
    """Tables 1-5 of the paper (``ltcore_rcl.tables``)."""
    from .tables import TABLES

    for table in TABLES:
        register(table)


@hookimpl
def register_presets(register):
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        register(name, {**CIFAR, "dataset": name},
                 f"RCL paper, CIFAR-{classes}-LT IF 100, ResNet-32, 200 epochs, lr 0.2, LA tau "
                 f"1.3, alpha 2, beta 1, compression from epoch 100 (after bcl's preset of the "
                 f"same name when bcl is selected first)")
