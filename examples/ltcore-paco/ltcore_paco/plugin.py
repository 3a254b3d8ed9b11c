"""The ``paco`` plugin: Parametric Contrastive Learning (Cui et al., ICCV 2021).

The classifier's weights are the parametric class centres: its logits of the query view join
the sample logits of a supervised contrastive loss against the other queries, the momentum
keys and a queue of keys (``ltcore_paco.method``). The classifier is trained through that loss
alone, as in the reference; the stage's classifier loss is a plain cross-entropy of weight
``paco.ce_weight`` (0 by default), kept so that ltcore adds no CE of its own and so that a
classifier-loss plugin (``la``, ``balanced-softmax``) replaces it and takes over that weight.
The PaCo term is rebalanceable: ``--plugin paco --plugin rcl`` adds RCL's ``log n_j`` to its
sample and centre logits.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

PLUGIN = "paco"

ge0 = attrs.validators.ge(0)
gt0 = attrs.validators.gt(0)


@attrs.define(kw_only=True)
class Options:
    """PaCo's options; the defaults are the reference's CIFAR-100-LT scripts'."""

    alpha: float = doc("alpha: weight of each sample positive (--alpha)", default=0.01,
                       validator=ge0)
    beta: float = doc("beta: weight of the centre positive c_y (--beta)", default=1.0,
                      validator=ge0)
    gamma: float = doc("gamma: weight of the sample terms in the denominator (--gamma)",
                       default=1.0, validator=ge0)
    temperature: float = doc("temperature of the sample logits (--moco-t)", default=0.05,
                             validator=gt0)
    centre_temperature: float = doc("temperature dividing the centre logits (supt)",
                                    default=1.0, validator=gt0)
    centre_prior: bool = doc("add log(pi_j) of the training-set class frequencies to the centre "
                             "logits in training (the reference's long-tailed rebalancing)",
                             default=True)
    queue_size: int = doc("K: length of the key queue, capped at the training-set size; 0 for "
                          "none (--moco-k)", default=1024, validator=ge0)
    momentum: float = doc("m: momentum of the key encoder's parameter average (--moco-m)",
                          default=0.999, validator=attrs.validators.and_(ge0,
                                                                         attrs.validators.le(1)))
    weight: float = doc("weight of the PaCo loss", default=1.0, validator=ge0)
    ce_weight: float = doc("weight of an extra cross-entropy on the classifier logits (0: none, "
                           "as the reference)", default=0.0, validator=ge0)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_losses(register):
    register("paco", lambda run, **options: _paco_term(run, Options(**options)),
             doc="PaCo loss against the queries, momentum keys, key queue and classifier centres "
                 "(sets up its views, key encoder and queue)")


def _paco_term(run, options: Options):
    from .method import paco_term

    return paco_term(run, options)


CIFAR100 = {
    "dataset": "cifar100-lt", "imbalance_factor": 100.0, "epochs": 400, "batch_size": 128,
    "model.backbone": "resnet32", "model.classifier": "linear",
    "model.classifier_init": "default", "model.projection_hidden": 64,
    "model.projection_dim": 32,
    "views.classifier": "autoaugment-cutout", "views.contrastive": "simaugment",
    "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "step", "schedule.warmup_epochs": 10, "schedule.milestones": [321, 361],
    "schedule.gamma": 0.1,
    "paco.alpha": 0.01, "paco.beta": 1.0, "paco.gamma": 1.0, "paco.temperature": 0.05,
    "paco.centre_temperature": 1.0, "paco.queue_size": 1024, "paco.momentum": 0.999,
}


@hookimpl
def register_presets(register):
    register("default", {"model.classifier": "linear", "model.classifier_init": "default"},
             "PaCo's classifier: a linear layer with bias and PyTorch's default initialisation "
             "(the reference's nn.Linear centres)")
    register("cifar100-lt", CIFAR100,
             "PaCo reference script, CIFAR-100-LT IF 100, ResNet-32, 400 epochs, batch 128, lr "
             "0.05 (10 warm-up epochs, x0.1 after epochs 320 and 360), alpha 0.01, tau 0.05, "
             "K 1024")


RESULTS = ("PaCo (Cui et al., ICCV 2021), CIFAR-100-LT comparison, ResNet-32, 400 epochs, "
           "top-1 on the balanced test set")


@hookimpl
def register_reference_results(register):
    for factor, accuracy in zip((100, 50, 10), (52.0, 56.0, 64.2)):
        register(plugins=PLUGIN, dataset="cifar100-lt", imbalance_factor=factor,
                 metrics={"test/acc": accuracy}, source=RESULTS)


@hookimpl
def setup_run(run):
    from ltcore import cross_entropy_term

    options: Options = run.option(PLUGIN)
    stage = run.main_stage
    stage.add_loss(_paco_term(run, options))
    stage.set_classifier_loss(cross_entropy_term("paco-ce", PLUGIN, options.ce_weight),
                              default=True)
