"""The ``bcl`` plugin: ``lambda * LA-CE(classifier view) + mu * L_BCL(two contrastive views)``.

Three views per image go through the backbone in one stacked forward: the classifier view
(``autoaugment-cutout`` by default) and two ``simaugment`` contrastive views. Prototypes are the
classifier's weight rows passed through their own MLP (``bcl_prototypes`` head, the projection
head's shape) and L2-normalised, so the contrastive loss's gradient reaches the classifier
(``bcl.prototypes``: ``ema`` or ``learnable`` for supplementary Table 1). The BCL term is
rebalanceable: ``--plugin bcl --plugin rcl`` is RCL's eq. 5. The paper's tables are
``ltcore_bcl.tables``.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl, interval

PROTOTYPE_HEAD = "bcl_prototypes"
"""The MLP of the ``classifier-mlp`` prototypes in ``model.heads``."""
LEARNABLE_HEAD = "bcl_learnable_prototypes"
"""The parameters of the ``learnable`` prototypes in ``model.heads``."""
EMA_MODULE = "bcl_ema_prototypes"
"""The class means of the ``ema`` prototypes in ``run.modules`` and its run plugin object."""
PROTOTYPES = ("classifier-mlp", "ema", "learnable")
"""BCL's prototype providers (supplementary Table 1); ``classifier-mlp`` is the paper's."""


@attrs.define(kw_only=True)
class Options:
    temperature: float = doc("contrastive temperature tau", default=0.1,
                             validator=attrs.validators.gt(0))
    classifier_weight: float = doc("lambda: weight of the logit-adjusted CE", default=2.0,
                                   validator=attrs.validators.ge(0))
    contrastive_weight: float = doc("mu: weight of L_BCL", default=0.6,
                                    validator=attrs.validators.ge(0))
    la_tau: float = doc("logit-adjustment tau of the classifier loss", default=1.0,
                        validator=attrs.validators.ge(0))
    averaging: str = doc("class-averaging form: L1 (mean of exps, default), L2 (mean inside the "
                         "exp), L3 (prototype-only softmax)", default="L1",
                         validator=attrs.validators.in_(("L1", "L2", "L3")))
    class_complement: bool = doc("prototypes of every class join the contrast set", default=True)
    class_averaging: bool = doc("average each class's terms in the denominator", default=True)
    prototypes: str = doc("prototype provider: classifier-mlp (classifier weights through an "
                          "MLP, the paper's) | ema (moving class means of the contrastive "
                          "embeddings) | learnable (free parameters)", default="classifier-mlp",
                          validator=attrs.validators.in_(PROTOTYPES))
    ema_momentum: float = doc("momentum of the ema prototypes' class means, per step a class "
                              "is in the batch", default=0.9, validator=interval(
                                  0, 1, include_high=False))


def prototype_provider(run, options: Options):
    """The run's provider ``options.prototypes`` (built once: a second call reuses its state)."""
    extra = {"momentum": options.ema_momentum} if options.prototypes == "ema" else {}
    return run.build("prototype-provider", options.prototypes, **extra)


def _provider(name: str):
    def build(run, **options):
        from . import prototypes

        return getattr(prototypes, name)(run, **options)
    return build


def bcl_term(run, options: Options, plugin: str = "bcl"):
    """The balanced contrastive loss over the stacked contrastive views (rebalanceable)."""
    import torch

    from ltcore import LossTerm

    from .loss import balanced_contrastive_loss

    provider = prototype_provider(run, options)
    run.contrastive_views(2)

    def fn(step):
        z, labels = step.stacked_embeddings()
        prototypes = provider.prototypes(step)
        classes = torch.arange(len(prototypes), device=labels.device)
        bias = step.contrastive_bias(labels, labels, classes)
        sample_bias = bias[..., :len(labels)] if bias is not None else None
        prototype_bias = bias[..., len(labels):] if bias is not None else None
        return balanced_contrastive_loss(
            z, labels, prototypes, options.temperature, logit_bias=sample_bias,
            prototype_bias=prototype_bias, averaging=options.averaging,
            class_complement=options.class_complement, class_averaging=options.class_averaging)

    return LossTerm("bcl", fn, plugin, options.contrastive_weight, kind="contrastive",
                    rebalanceable=options.averaging != "L3")


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_prototype_providers(register):
    register("classifier-mlp", _provider("ClassifierPrototypes"),
             "BCL: classifier weight rows through an MLP (head bcl_prototypes), L2-normalised")
    register("ema", _provider("ema_prototypes"),
             "BCL supp. Table 1: moving average (momentum) of the class means of the contrastive "
             "embeddings, updated after each step, L2-normalised")
    register("learnable", _provider("LearnablePrototypes"),
             "BCL supp. Table 1: free [C, projection_dim] parameters trained by the loss, "
             "L2-normalised")


@hookimpl
def register_losses(register):
    register("bcl", lambda run, **kw: bcl_term(run, Options(**kw)))


CIFAR = {
    "model.backbone": "resnet32", "model.classifier": "cosine",
    "views.classifier": "autoaugment-cutout", "views.contrastive": "simaugment",
    "model.projection_hidden": 512, "model.projection_dim": 128,
    "batch_size": 256, "optim.lr": 0.15, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "step", "imbalance_factor": 100.0,
}
IMAGENET = {
    "dataset": "imagenet-lt", "model.classifier": "cosine", "views.classifier":
    "imagenet-randaugment", "views.contrastive": "imagenet-simaugment",
    "model.projection_hidden": 2048, "model.projection_dim": 1024, "batch_size": 256,
    "schedule.kind": "cosine", "schedule.warmup_epochs": 0, "schedule.cosine_offset": 1,
    "bcl.classifier_weight": 1.0, "bcl.contrastive_weight": 0.35, "bcl.temperature": 0.07,
}


@hookimpl
def register_presets(register):
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        base = {**CIFAR, "dataset": name}
        register(name, {**base, "epochs": 200, "schedule.warmup_epochs": 5,
                        "schedule.milestones": [160, 180]},
                 f"BCL paper, CIFAR-{classes}-LT IF 100, ResNet-32, 200 epochs")
        register(f"{name}-400", {**base, "epochs": 400, "schedule.warmup_epochs": 10,
                                 "schedule.milestones": [360, 380]},
                 f"BCL paper, CIFAR-{classes}-LT IF 100, ResNet-32, 400 epochs")
    register("imagenet-lt-resnet50", {**IMAGENET, "model.backbone": "resnet50", "epochs": 90,
                                      "optim.lr": 0.1, "optim.weight_decay": 5e-4},
             "BCL paper, ImageNet-LT, ResNet-50, 90 epochs")
    register("imagenet-lt-resnext50", {**IMAGENET, "model.backbone": "resnext50", "epochs": 90,
                                       "optim.lr": 0.1, "optim.weight_decay": 5e-4},
             "BCL paper, ImageNet-LT, ResNeXt-50-32x4d, 90 epochs")
    register("imagenet-lt-resnext50-180", {**IMAGENET, "model.backbone": "resnext50",
                                           "epochs": 180, "optim.lr": 0.1,
                                           "optim.weight_decay": 5e-4},
             "BCL paper, ImageNet-LT, ResNeXt-50-32x4d, 180 epochs (Table 6)")
    register("inaturalist2018", {**IMAGENET, "dataset": "inaturalist2018",
                                 "model.backbone": "resnet50", "epochs": 100, "optim.lr": 0.2,
                                 "optim.weight_decay": 1e-4},
             "BCL paper, iNaturalist 2018, ResNet-50, 100 epochs")


RESULTS = "ResNet-32, 200 epochs, top-1 on the balanced test set (docs/comparing.md)"


@hookimpl
def register_reference_results(register):
    for dataset, accuracies in (("cifar10-lt", (84.32, 87.24, 91.12)),
                                ("cifar100-lt", (51.93, 56.59, 64.87))):
        for factor, accuracy in zip((100, 50, 10), accuracies):
            register(plugins="bcl", dataset=dataset, imbalance_factor=factor,
                     metrics={"test/acc": accuracy}, source="BCL (Zhu et al. 2022), " + RESULTS)
    register(plugins="bcl", dataset="cifar100-lt", imbalance_factor=100,
             metrics={"test/many": 67.2, "test/medium": 53.1, "test/few": 32.9},
             source="BCL shot groups, " + RESULTS)


@hookimpl
def register_tables(register):
    """Tables 3-6, supplementary Tables 1-2 and Fig. 2 (``ltcore_bcl.tables``)."""
    from .tables import TABLES

    for table in TABLES:
        register(table)


@hookimpl
def setup_run(run):
    from ltcore import logit_adjusted_term

    options = run.option("bcl")
    stage = run.main_stage
    run.classifier_view()
    stage.set_classifier_loss(logit_adjusted_term(run, options.la_tau, options.classifier_weight,
                                                  plugin="bcl"), default=True)
    stage.add_loss(bcl_term(run, options))


@hookimpl
def run_end(run):
    """With a 2-D projection (``model.projection_dim = 2``, supplementary Fig. 2) the final
    prototypes are recorded as the figure data ``prototypes``."""
    import ltcore

    if run.config.model.projection_dim != 2 or not hasattr(ltcore, "record_figure"):
        return
    import torch

    with torch.no_grad():
        prototypes = prototype_provider(run, run.option("bcl")).prototypes()
    ltcore.record_figure(run, "prototypes", {"prototypes": prototypes.float().cpu().tolist()})
