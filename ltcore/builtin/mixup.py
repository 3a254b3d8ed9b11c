"""``mixup``: cross-entropy with mixup (Zhang et al. 2018) on the classifier view.

Each batch is paired with a permutation of itself and mixed with one weight
``lam ~ Beta(alpha, alpha)``: the images ``lam x_i + (1 - lam) x_p(i)`` are classified and the loss
is ``lam CE(o_i, y_i) + (1 - lam) CE(o_i, y_p(i))``, averaged over the batch. The mixing is the
core's batched mixup (``mix.*``, :mod:`ltcore.engine.mixing`): selecting the plugin sets
``mix.mixup_alpha`` to ``mixup.alpha``.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PLUGIN = "mixup"


@attrs.define(kw_only=True)
class Options:
    """Options of ``mixup``."""

    alpha: float = doc("lam ~ Beta(alpha, alpha), one per batch (Zhang et al.: 1.0 on CIFAR, "
                       "0.2 on ImageNet)", default=1.0, validator=attrs.validators.gt(0))


def with_mixup_alpha(run, alpha: float) -> None:
    """Set the run's ``mix.mixup_alpha`` to ``alpha``; a different non-zero value set by hand is
    a conflict."""
    from ltcore import ConfigError

    mix = run.config.mix
    if mix.mixup_alpha == alpha:
        return
    if mix.mixup_alpha > 0:
        raise ConfigError(f"plugin 'mixup' mixes with mixup.alpha = {alpha}, but mix.mixup_alpha "
                          f"is set to {mix.mixup_alpha}; set only mixup.alpha")
    config = attrs.evolve(run.config, mix=attrs.evolve(mix, mixup_alpha=alpha))
    run.settings = attrs.evolve(run.settings, run=config)
    run.config = config


def cifar_recipe(dataset: str) -> dict:
    """BBN's CIFAR-LT schedule, under which ICCL's Table 1 quotes mixup: ResNet-32, 200 epochs,
    batch 128, lr 0.1 after 5 warm-up epochs, x0.01 at epochs 120 and 160, weight decay 2e-4."""
    return {"dataset": dataset, "imbalance_factor": 100.0, "model.backbone": "resnet32",
            "views.classifier": "standard", "epochs": 200, "batch_size": 128, "optim.lr": 0.1,
            "optim.momentum": 0.9, "optim.weight_decay": 2e-4, "schedule.kind": "step",
            "schedule.warmup_epochs": 5, "schedule.milestones": [120, 160],
            "schedule.gamma": 0.01}


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_presets(register):
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        register(name, cifar_recipe(name),
                 f"BBN's CIFAR-{classes}-LT schedule (ICCL Table 1's Mixup row), ResNet-32, 200 "
                 f"epochs, alpha 1")
    register("imagenet-lt", {"dataset": "imagenet-lt", "model.backbone": "resnext50",
                             "views.classifier": "imagenet-standard", "epochs": 90,
                             "batch_size": 256, "optim.lr": 0.1, "optim.momentum": 0.9,
                             "optim.weight_decay": 5e-4, "schedule.kind": "cosine",
                             "schedule.warmup_epochs": 0},
             "ICCL's ImageNet-LT settings (Table 7's Mixup row): ResNeXt-50, 90 epochs, batch "
             "256, lr 0.1 cosine, weight decay 5e-4")


@hookimpl
def setup_run(run):
    from ltcore import cross_entropy_term

    with_mixup_alpha(run, run.option(PLUGIN).alpha)
    run.classifier_view()
    run.main_stage.set_classifier_loss(cross_entropy_term("mixup-ce", PLUGIN))
