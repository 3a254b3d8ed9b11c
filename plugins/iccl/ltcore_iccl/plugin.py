"""The ``iccl`` plugin: Interpolative Centroid Contrastive Learning, two stages.

Stage ``train``: a uniform branch (CE on the class-agnostic image ``x^h``) and an interpolative
branch on ``x^f = lambda x^h + (1 - lambda) x^t`` with ``x^t`` from the class-aware sampler,
trained with the interpolative CE (eq. 7) and the interpolative centroid contrastive loss
(eq. 5) against EMA class centroids; the first T epochs are a warm-up with CE and a plain
centroid loss. Stage ``classifier``: classifier rebalancing on the class-aware sampler with
distillation from the stage-1 network (eq. 9). See ``docs/methods/iccl.md``.

Components registered for every run, whether or not ``iccl`` is selected: the samplers
``class-aware`` (option ``gamma``) and ``iccl-paired``, and ``iccl-centroids`` as a memory bank
and as a prototype provider. The plain loss functions are in :mod:`ltcore_iccl.loss`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from ltcore import doc, hookimpl, interval

CENTROID_INITS = ("first_batch", "random")
"""Kept equal to ``ltcore_iccl.centroids.CENTROID_INITS`` (that module imports torch)."""
CENTROID_UPDATES = ("per-sample", "batch-mean")
"""Kept equal to ``ltcore_iccl.centroids.CENTROID_UPDATES``."""




@attrs.define(kw_only=True)
class Options:
    """Options of the ``iccl`` plugin (``--set iccl.<name>=value``)."""

    temperature: float = doc("tau of the centroid retrieval softmax p(c^k | x) (eq. 4); the "
                             "paper uses 0.07 (ImageNet-LT, iNaturalist) and 0.3 (CIFAR)",
                             default=0.07, validator=v.gt(0))
    warmup_epochs: int | None = doc("T: warm-up epochs (uniform branch only: CE + plain centroid "
                                    "loss) before the interpolative branch starts; unset = half "
                                    "the train stage's epochs (the paper puts T about halfway)",
                                    default=None, validator=v.optional(v.ge(0)))
    uniform_weight: float = doc("w_u: weight of the uniform-branch CE after the warm-up (eq. 8; "
                                "1 in the paper, 0 for CIFAR)", default=1.0, validator=v.ge(0))
    interpolative_weight: float = doc("w_it: weight of L_ce^it + L_cc^it after the warm-up (eq. 8)",
                                      default=1.0, validator=v.ge(0))
    interpolative_ce_weight: float | None = doc("weight of L_ce^it alone after the warm-up; unset "
                                                "= interpolative_weight (0 drops the term, as "
                                                "Table 4's rows without L_ce^it)", default=None,
                                                validator=v.optional(v.ge(0)))
    interpolative_centroid_weight: float | None = doc("weight of L_cc^it alone after the warm-up; "
                                                      "unset = interpolative_weight (0 drops the "
                                                      "term, as Table 4's rows without L_cc^it)",
                                                      default=None, validator=v.optional(v.ge(0)))
    warmup_centroid_weight: float = doc("weight of the plain centroid loss during the warm-up (the "
                                        "paper adds it unweighted to the CE)", default=1.0,
                                        validator=v.ge(0))
    alpha: float = doc("interpolation weight lambda ~ Beta(alpha, alpha), one per sample; 1 is "
                       "U(0, 1), the paper's choice", default=1.0, validator=v.gt(0))
    beta_a: float | None = doc("first parameter of lambda ~ Beta(beta_a, beta_b) (Table 5; "
                               "Beta(0.2, 1.0) favours a small lambda, i.e. the class-aware "
                               "image); unset = alpha", default=None,
                               validator=v.optional(v.gt(0)))
    beta_b: float | None = doc("second parameter of lambda ~ Beta(beta_a, beta_b); unset = alpha",
                               default=None, validator=v.optional(v.gt(0)))
    gamma: float = doc("class-aware sampler of the interpolative branch, p(k) ∝ (1/n_k)^gamma "
                       "(0 class-balanced, the paper's; 1 reverse)", default=0.0, validator=v.ge(0))
    tail_sampler: str = doc("how x^t is drawn: 'class-aware' (eq. 2 with gamma) or 'uniform' "
                            "(Table 6's class-agnostic baseline: an independent random order of "
                            "the training images each epoch, as the uniform branch's sampler)",
                            default="class-aware", validator=v.in_(("class-aware", "uniform")))
    head_view: str = doc("x^h inside the interpolation: 'shared' = the very augmented image the "
                         "uniform branch classifies; 'separate' = an independent augmentation of "
                         "the same sample", default="shared",
                         validator=v.in_(("shared", "separate")))
    centroid_momentum: float = doc("m of the centroid EMA (eq. 1)", default=0.99,
                                   validator=interval(0, 1, include_high=False))
    normalize_centroids: bool = doc("re-project the centroids onto the unit sphere after each "
                                    "batch's update (MoPro, which the paper follows; eq. 1 as "
                                    "written does not)", default=True)
    centroid_update: str = doc("per-sample: the EMA steps once per sample in batch order (MoPro); "
                               "batch-mean: once per batch with the class's batch mean",
                               default="per-sample", validator=v.in_(CENTROID_UPDATES))
    centroid_init: str = doc("first_batch: a class's centroid starts as the (EMA-weighted) mean "
                             "of the batch where it is first seen; "
                             "random: random unit vectors, EMA from the first update",
                             default="first_batch", validator=v.in_(CENTROID_INITS))
    classifier_epochs: int = doc("epochs of the classifier-rebalancing stage (0: no second stage)",
                                 default=10, validator=v.ge(0))
    classifier_lr_scale: float = doc("initial lr of the rebalancing stage (cosine, no warm-up) as "
                                     "a multiple of optim.lr (paper: x0.1)", default=0.1,
                                     validator=v.gt(0))
    classifier_trainable: str = doc("rebalancing stage trains 'classifier' (encoder frozen, "
                                    "ImageNet-LT/iNaturalist) or 'all' (encoder fine-tuned too, "
                                    "CIFAR)", default="classifier",
                                    validator=v.in_(("classifier", "all")))
    encoder_lr_scale: float = doc("with classifier_trainable=all: the encoder's lr as a multiple "
                                  "of the stage's", default=1.0, validator=v.gt(0))
    classifier_gamma: float = doc("gamma' of the rebalancing stage's class-aware sampler (1 = "
                                  "reverse)", default=1.0, validator=v.ge(0))
    distill_weight: float = doc("w_d of eq. 9 (0: plain CE, no teacher)", default=0.5,
                                validator=interval(0, 1))
    distill_temperature: float = doc("tau_d of eq. 9", default=10.0, validator=v.gt(0))
    teacher: str = doc("teacher logits o^T: 'network' = the frozen stage-1 encoder and classifier "
                       "on the same images; 'classifier' = the frozen stage-1 classifier on the "
                       "student's current features (the two coincide when the encoder is frozen)",
                       default="network", validator=v.in_(("network", "classifier")))
    reset_classifier: bool = doc("re-initialise the classifier when the rebalancing stage starts "
                                 "(cRT style); the paper fine-tunes it", default=False)

    def __attrs_post_init__(self):
        if self.tail_sampler == "uniform" and self.gamma != 0:
            raise ValueError("gamma shapes the class-aware draw of x^t; with "
                             "tail_sampler=uniform leave it 0")

    @property
    def beta(self) -> tuple[float, float]:
        """(a, b) of lambda ~ Beta(a, b)."""
        return (self.alpha if self.beta_a is None else self.beta_a,
                self.alpha if self.beta_b is None else self.beta_b)

    def interpolative_weights(self) -> tuple[float, float]:
        """Weights of L_ce^it and L_cc^it after the warm-up."""
        return tuple(self.interpolative_weight if w is None else w
                     for w in (self.interpolative_ce_weight, self.interpolative_centroid_weight))


# -- components usable from any run -------------------------------------------------------------


def class_aware_sampler(run, gamma: float = 0.0, num_samples: int | None = None):
    """Class-aware sampler p(k) ∝ (1/n_k)^gamma, then an image of class k (option gamma)."""
    from .samplers import ClassAwareSampler

    return ClassAwareSampler(run.dataset.train.labels, gamma, num_samples=num_samples,
                             num_classes=run.dataset.num_classes)


def paired_sampler(run, gamma: float = 0.0, agnostic: str = "instance-balanced",
                   tail: str = "class-aware", **agnostic_options):
    """Rows (class-agnostic sample, class-aware sample) as sources ('sample', 'paired');
    tail='uniform' draws the second column as an independent random order instead."""
    from ltcore import PluginError

    from .samplers import PairedSampler

    if agnostic == "iccl-paired":
        raise PluginError("iccl-paired cannot use itself as its class-agnostic sampler")
    base = run.build("sampler", agnostic, **agnostic_options)
    if tuple(getattr(base, "sources", ("sample",))) != ("sample",):
        raise PluginError(f"iccl-paired needs a single-index class-agnostic sampler; "
                          f"{agnostic!r} gives sources {base.sources}")
    if tail not in ("class-aware", "uniform"):
        raise PluginError(f"iccl-paired: tail must be 'class-aware' or 'uniform', got {tail!r}")
    return PairedSampler(run.dataset.train.labels, gamma, base, uniform=tail == "uniform")


def centroid_bank(run, **options):
    """EMA class centroids of the projection embeddings (momentum, normalize, init, update,
    dim)."""
    from .centroids import centroid_bank as build

    return build(run, **options)


def centroid_prototypes(run, **options):
    """The run's EMA class centroids (module iccl_centroids), L2-normalised."""
    from .centroids import CentroidPrototypes

    return CentroidPrototypes(run, **options)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_samplers(register):
    register("class-aware", class_aware_sampler)
    register("iccl-paired", paired_sampler)


@hookimpl
def register_memory_banks(register):
    register("iccl-centroids", centroid_bank)


@hookimpl
def register_prototype_providers(register):
    register("iccl-centroids", centroid_prototypes)


class TailAccuracy:
    """Metric ``iccl-tail``: the unweighted mean of the per-class accuracies (percent) of the
    medium and few classes together, the "Tail" of the paper's Table 4 (classes with at most
    ``eval.many_threshold`` = 100 training images; "Head" is ``many``)."""

    when = "epoch"
    needs_features = False

    def __call__(self, outputs):
        import torch

        from ltcore.metrics import per_class_accuracy

        groups = outputs.groups()
        tail = torch.cat([torch.as_tensor(groups[g]).long().reshape(-1)
                          for g in ("medium", "few") if g in groups])
        if tail.numel() == 0:
            return {}
        per_class = per_class_accuracy(outputs.predictions, outputs.labels, outputs.num_classes,
                                       torch.float64)
        return {"iccl-tail": round(100.0 * float(per_class[tail].mean()), 4)}


@hookimpl
def register_metrics(register):
    register("iccl-tail", TailAccuracy(), "mean accuracy of the medium and few classes together "
             "(ICCL Table 4's Tail)")


@hookimpl
def register_tables(register):
    from .tables import TABLES

    for table in TABLES:
        register(table)


# -- presets ------------------------------------------------------------------------------------

CIFAR = {
    "model.backbone": "resnet32", "model.classifier": "linear", "model.projection_dim": 32,
    "views.classifier": "standard", "imbalance_factor": 100.0, "batch_size": 128, "epochs": 200,
    "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 2e-4,
    "schedule.kind": "step", "schedule.warmup_epochs": 5, "schedule.milestones": [120, 160],
    "schedule.gamma": 0.01, "iccl.temperature": 0.3, "iccl.uniform_weight": 0.0,
    "iccl.classifier_trainable": "all", "iccl.classifier_lr_scale": 0.1,
}
LARGE = {
    "model.classifier": "linear", "model.projection_hidden": 2048, "model.projection_dim": 128,
    "views.classifier": "imagenet-standard", "optim.momentum": 0.9, "schedule.kind": "cosine",
    "schedule.warmup_epochs": 0, "iccl.temperature": 0.07, "iccl.uniform_weight": 1.0,
    "iccl.classifier_trainable": "classifier", "iccl.classifier_lr_scale": 0.1,
    "iccl.classifier_epochs": 10,
}


RESULTS = "ResNet-32, 200 epochs, top-1 on the balanced test set (docs/comparing.md)"


@hookimpl
def register_reference_results(register):
    for dataset, accuracies in (("cifar100-lt", (46.6, 51.6, 62.1)),
                                ("cifar10-lt", (82.1, 84.7, 89.7))):
        for factor, accuracy in zip((100, 50, 10), accuracies):
            register(plugins="iccl", dataset=dataset, imbalance_factor=factor,
                     metrics={"test/acc": accuracy}, source="ICCL, " + RESULTS)


@hookimpl
def register_presets(register):
    register("default", {"views.classifier": "standard"},
             "ICCL's augmentation: random crop (padding 4 at 32 px) and horizontal flip for "
             "every branch")
    register("cifar10-lt", {**CIFAR, "dataset": "cifar10-lt", "iccl.warmup_epochs": 100},
             "ICCL paper, CIFAR-10-LT IF 100 (82.1), ResNet-32, 200 epochs, T 100")
    register("cifar100-lt", {**CIFAR, "dataset": "cifar100-lt", "iccl.warmup_epochs": 80},
             "ICCL paper, CIFAR-100-LT IF 100 (46.6), ResNet-32, 200 epochs, T 80")
    register("imagenet-lt", {**LARGE, "dataset": "imagenet-lt", "model.backbone": "resnext50",
                             "epochs": 90, "batch_size": 256, "optim.lr": 0.1,
                             "optim.weight_decay": 5e-4, "iccl.warmup_epochs": 40},
             "ICCL paper, ImageNet-LT (54.0), ResNeXt-50-32x4d, 90 epochs, T 40")
    inat = {**LARGE, "dataset": "inaturalist2018", "model.backbone": "resnet50",
            "batch_size": 512, "optim.lr": 0.2, "optim.weight_decay": 1e-4}
    register("inaturalist2018", {**inat, "epochs": 90, "iccl.warmup_epochs": 40},
             "ICCL paper, iNaturalist 2018 (70.5), ResNet-50, 90 epochs, T 40")
    register("inaturalist2018-200", {**inat, "epochs": 200, "iccl.warmup_epochs": 100},
             "ICCL paper, iNaturalist 2018 (72.5), ResNet-50, 200 epochs, T 100")


# -- the run (its hooks are those of ICCL's plugin object, ltcore_iccl.method.ICCLRun) ----------


@hookimpl
def setup_run(run):
    from .method import setup

    setup(run, run.option("iccl"))
