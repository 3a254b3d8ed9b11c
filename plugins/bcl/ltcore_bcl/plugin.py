"""The ``bcl`` plugin: ``lambda * LA-CE(classifier view) + mu * L_BCL(two contrastive views)``.

Three views per image go through the backbone in one stacked forward: the classifier view
(``autoaugment-cutout`` by default) and two ``simaugment`` contrastive views. Prototypes are the
classifier's weight rows passed through their own MLP (``bcl_prototypes`` head, the projection
head's shape) and L2-normalised, so the contrastive loss's gradient reaches the classifier. The
BCL term is rebalanceable: ``--plugin bcl --plugin rcl`` is RCL's eq. 5.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PROTOTYPE_HEAD = "bcl_prototypes"


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


class ClassifierPrototypes:
    """Prototype provider: classifier weight rows through an MLP, L2-normalised."""

    def __init__(self, run, model=None):
        from ltcore import MLPHead

        self.model = model or run.model
        if PROTOTYPE_HEAD not in self.model.heads:
            cfg = run.config.model
            self.model.heads[PROTOTYPE_HEAD] = MLPHead(
                self.model.feature_dim, cfg.projection_dim, cfg.projection_hidden).to(run.device)

    def prototypes(self, step=None):
        import torch.nn.functional as F

        weight = self.model.classifier.weight
        return F.normalize(self.model.heads[PROTOTYPE_HEAD](weight).float(), dim=1)


def bcl_term(run, options: Options, plugin: str = "bcl"):
    """The balanced contrastive loss over the stacked contrastive views (rebalanceable)."""
    import torch

    from ltcore import LossTerm

    from .loss import balanced_contrastive_loss

    provider = run.build("prototype-provider", "classifier-mlp")
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
    register("classifier-mlp", ClassifierPrototypes)


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
    "schedule.kind": "cosine", "schedule.warmup_epochs": 0,
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
def setup_run(run):
    from ltcore import logit_adjusted_term

    options = run.option("bcl")
    stage = run.main_stage
    run.classifier_view()
    stage.set_classifier_loss(logit_adjusted_term(run, options.la_tau, options.classifier_weight,
                                                  plugin="bcl"), default=True)
    stage.add_loss(bcl_term(run, options))
