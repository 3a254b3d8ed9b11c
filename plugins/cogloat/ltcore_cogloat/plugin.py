"""The ``cogloat`` plugin: contrastive pre-training with k-global positives and adaptive
temperature (CoGloAT, Bach et al., TMLR 2023), then a re-weighted linear classifier.

Stage ``train`` (pre-training, MoCo v2): each image gives a query view (``con0``, through the
model and its projection head) and a key view; ``k`` same-label positives drawn from the whole
training set (``k-global`` sampler) give ``k`` more key views. The key views go through a
momentum (EMA) copy of the encoder only. The loss is eq. 1 against the batch's other keys and a
labelled FIFO queue, with the per-class temperature of eq. 8 for each anchor (Table 6 variants as
an option). After each optimiser step the key encoder moves and the keys are enqueued.

Stage ``classifier``: the encoder is frozen and the classifier is trained with re-weighted
cross-entropy or LDAM (``cogloat.classifier_loss``) at lr 0.1.

The paper trains no classifier during pre-training. The core gives every stage without a
classifier loss a default cross-entropy, so this plugin sets the pre-training stage's classifier
loss itself, a cross-entropy on the query view's logits with weight
``cogloat.pretrain_classifier_weight`` (0 by default), and with weight 0 leaves the classifier out
of the pre-training optimiser, so it starts stage 2 untouched.
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl, interval

VARIANTS = ("unsupervised+kglobal", "supervised+kglobal", "kcl+kglobal")
EMBEDDING_METRICS = ("alignment", "variance", "uniformity", "improved-uniformity")
EMBEDDING_READINGS = ("euclidean-unordered", "euclidean", "squared")
"""Readings of eq. 9-13 (:data:`ltcore_cogloat.embedding_metrics.READINGS`); the first is the
default, whose metrics have the plain names, the others' carry the reading as a suffix."""
PLUGIN = "cogloat"


def embedding_metric_name(figure: str, reading: str) -> str:
    """``alignment`` for the default reading, ``alignment-squared`` for ``squared``..."""
    return figure if reading == EMBEDDING_READINGS[0] else f"{figure}-{reading}"


ge0 = attrs.validators.ge(0)
gt0 = attrs.validators.gt(0)


@attrs.define(kw_only=True)
class Options:
    """Options of the ``cogloat`` plugin (``cogloat.<name>``)."""

    k: int = doc("k-global positives per query, drawn from the whole training set (0: none, "
                 "plain MoCo v2)", default=3, validator=ge0)
    variant: str = doc("loss mix of Table 6: unsupervised+kglobal (MoCo instance term + k-global "
                       "term, eq. 1), supervised+kglobal (every same-label bank key is a positive "
                       "too), kcl+kglobal (kcl_positives same-label bank keys are positives too)",
                       default="unsupervised+kglobal", validator=attrs.validators.in_(VARIANTS))
    kcl_positives: int = doc("same-label bank keys taken as positives by kcl+kglobal (0: k)",
                             default=0, validator=ge0)
    adaptive_temperature: bool = doc("per-class temperature tau_c = gamma + (1 - gamma) n_c / n_max "
                                     "(eq. 8) for each anchor; false: the constant temperature",
                                     default=True)
    gamma: float = doc("minimum temperature gamma of eq. 8 (the largest class gets tau 1)",
                       default=0.1, validator=interval(0, 1, include_low=False))
    temperature: float = doc("constant temperature, used when adaptive_temperature is false",
                             default=0.1, validator=gt0)
    momentum: float = doc("momentum m of the key encoder's EMA (MoCo v2)", default=0.999,
                          validator=interval(0, 1))
    queue_size: int = doc("length of the labelled key queue (capped at the training-set size)",
                          default=4096, validator=gt0)
    include_batch_keys: bool = doc("the other queries' keys of the batch are negatives too "
                                   "(eq. 1's V_i); false: the queue only (MoCo v2)", default=True)
    key_batchnorm: str = doc("key encoder BatchNorm: batch (statistics of the key batch, MoCo) "
                             "or running (the query encoder's running statistics)",
                             default="batch", validator=attrs.validators.in_(("batch", "running")))
    weight: float = doc("weight of the CoGloAT loss term", default=1.0, validator=ge0)
    pretrain_classifier_weight: float = doc(
        "weight of a cross-entropy on the query view during pre-training (0: no classifier is "
        "trained before stage 2, as in the paper)", default=0.0, validator=ge0)
    classifier_epochs: int = doc("epochs of the classifier stage (0: no classifier stage)",
                                 default=100, validator=ge0)
    classifier_loss: str = doc("classifier-stage loss: ce (CIFAR-100-LT recipe) or ldam "
                               "(CIFAR-10-LT recipe)", default="ce",
                               validator=attrs.validators.in_(("ce", "ldam")))
    reweighting: str = doc("class weights of the classifier-stage loss: inverse-frequency (the "
                           "paper's Reweight), effective-number (Cui et al.) or none",
                           default="inverse-frequency", validator=attrs.validators.in_(
                               ("inverse-frequency", "effective-number", "none")))
    reweighting_beta: float = doc("beta of effective-number re-weighting", default=0.9999,
                                  validator=interval(0, 1))
    reweighting_start_epoch: int = doc("first classifier-stage epoch with class weights (0: all; "
                                       "later: deferred re-weighting)", default=0, validator=ge0)
    ldam_max_margin: float = doc("LDAM margin of the rarest class", default=0.5, validator=ge0)
    ldam_scale: float = doc("LDAM logit scale s (with a cosine classifier)", default=30.0,
                            validator=gt0)
    classifier_lr: float = doc("classifier-stage learning rate", default=0.1, validator=gt0)
    classifier_momentum: float = doc("classifier-stage SGD momentum", default=0.9, validator=ge0)
    classifier_weight_decay: float = doc("classifier-stage weight decay", default=2e-4,
                                         validator=ge0)
    classifier_schedule: str = doc("classifier-stage lr schedule: cosine | constant",
                                   default="cosine",
                                   validator=attrs.validators.in_(("cosine", "constant")))
    embedding_metrics: bool = doc("compute alignment, variance, uniformity and improved uniformity "
                                  "of the validation features at the end of each stage",
                                  default=True)
    embedding_reading: str = doc(
        "distances of the embedding metrics (eq. 9-13): euclidean-unordered (Euclidean, eq. 9 "
        "counts each pair of a class once: Intra below Variance as in Table 1), euclidean "
        "(Euclidean, ordered pairs) or squared (squared distances, ordered pairs: Intra = 2 "
        "Variance); metrics of the last two are named alignment-<reading>, ...",
        default="euclidean-unordered", validator=attrs.validators.in_(EMBEDDING_READINGS))
    temperature_metrics: bool = doc("log each class's pre-training temperature per epoch as "
                                    "temperature/class-<index> (eq. 8, or the constant one)",
                                    default=True)

    def __attrs_post_init__(self):
        if self.variant == "supervised+kglobal" and self.kcl_positives:
            raise ValueError("'kcl_positives' applies to variant kcl+kglobal only")


# -- registration -----------------------------------------------------------------------------


def _sampler(run, **options):
    """k-global positives: rows (sample, pos1..posk) of k same-label training images per sample,
    drawn per batch-sized chunk of the base sampler's order, from outside the chunk when possible"""
    from .components import k_global_sampler

    return k_global_sampler(run, **options)


def _momentum_encoder(run, **options):
    """MoCo v2 key encoder: EMA copy of the model's backbone and projection head (update() in
    step_end)"""
    from .components import momentum_encoder

    return momentum_encoder(run, **options)


def _moco_queue(run, **options):
    """MoCo FIFO queue of labelled keys (keys, labels, valid, pointer; enqueue after the loss)"""
    from .components import moco_queue

    return moco_queue(run, **options)


def _cogloat_loss(run, **options):
    """k-global contrastive loss with adaptive temperature on a MoCo queue (sets up its views,
    sampler, key encoder and queue; its fn.after_step(step) must run in step_end)"""
    from .components import cogloat_term

    return cogloat_term(run, **options)


def _classifier_loss(run, **options):
    """re-weighted CE or LDAM on the classifier view (CoGloAT's stage 2)"""
    from .classifier import reweighted_classifier_term

    return reweighted_classifier_term(run, **options)


class EmbeddingMetric:
    """One of CoGloAT's embedding-quality figures (:mod:`ltcore_cogloat.embedding_metrics`) of
    the L2-normalised validation features, in the final evaluation of each stage."""

    when = "final"
    needs_features = True

    def __init__(self, name: str, function: str, reduce_mean: bool = False,
                 reading: str = EMBEDDING_READINGS[0]):
        self.name, self.function, self.reduce_mean = name, function, reduce_mean
        self.reading = reading

    def __call__(self, outputs):
        import torch.nn.functional as F

        from . import embedding_metrics

        value = getattr(embedding_metrics, self.function)(F.normalize(outputs.features, dim=1),
                                                          outputs.labels, reading=self.reading)
        return {self.name: float(value.mean() if self.reduce_mean else value)}


EMBEDDING_METRIC_DOCS = {
    "alignment": ("intra_class_alignment", "intra-class alignment of the validation features "
                  "(CoGloAT eq. 9; final evaluation)"),
    "variance": ("class_variances", "mean per-class variance of the validation features "
                 "(CoGloAT eq. 10; final evaluation)"),
    "uniformity": ("inter_class_uniformity", "inter-class uniformity of the validation "
                   "features (CoGloAT eq. 12; final evaluation)"),
    "improved-uniformity": ("improved_uniformity", "improved inter-class uniformity of the "
                            "validation features (CoGloAT eq. 13; final evaluation)"),
}


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_samplers(register):
    register("k-global", _sampler)


@hookimpl
def register_memory_banks(register):
    register("momentum-encoder", _momentum_encoder)
    register("moco-queue", _moco_queue)


@hookimpl
def register_losses(register):
    register("cogloat", _cogloat_loss)
    register("reweighted-classifier", _classifier_loss)


READING_DOCS = {"euclidean-unordered": "", "euclidean": "; Euclidean, ordered pairs",
                "squared": "; squared distances, ordered pairs"}


@hookimpl
def register_metrics(register):
    for reading, words in READING_DOCS.items():
        for figure, (function, text) in EMBEDDING_METRIC_DOCS.items():
            name = embedding_metric_name(figure, reading)
            register(name, EmbeddingMetric(name, function, reduce_mean=figure == "variance",
                                           reading=reading), text.replace(")", words + ")", 1))


@hookimpl
def register_tables(register):
    from .tables import TABLES

    for table in TABLES:
        register(table)


RESULTS = "ResNet-32, 200 epochs, top-1 on the balanced test set (docs/comparing.md)"


@hookimpl
def register_reference_results(register):
    for plugins, dataset, accuracies in (("cogloat,proco", "cifar10-lt", (81.6, 85.5, 89.4)),
                                         ("cogloat,proco", "cifar100-lt", (46.0, 50.4, 60.8)),
                                         ("cogloat", "cifar10-lt", (81.4, 84.5, 88.9)),
                                         ("cogloat", "cifar100-lt", (45.4, 49.5, 60.7))):
        for factor, accuracy in zip((100, 50, 10), accuracies):
            register(plugins=plugins, dataset=dataset, imbalance_factor=factor,
                     metrics={"test/acc": accuracy}, source="CoGloAT/ProCo, " + RESULTS)


CIFAR = {
    "model.backbone": "resnet32", "model.classifier": "linear", "batch_size": 256,
    "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "cosine", "schedule.warmup_epochs": 0, "imbalance_factor": 100.0,
    "epochs": 1000, "eval.every": 50, "views.contrastive": "simaugment",
    "views.classifier": "standard", "cogloat.classifier_epochs": 100,
}


MOCO_KCL = {"cogloat.k": 0, "cogloat.variant": "kcl+kglobal", "cogloat.kcl_positives": 6,
            "cogloat.adaptive_temperature": False, "cogloat.include_batch_keys": False}
"""The MoCo-based KCL baseline (Kang et al. 2021, as in TSC's code): positives the own key and 6
same-label queue keys, negatives the rest of the queue, one constant temperature."""


@hookimpl
def register_presets(register):
    register("moco-kcl", MOCO_KCL,
             "the paper's KCL baseline (Tables 1, 3-5): MoCo v2 with the own key and 6 same-label "
             "queue keys as positives, the queue as negatives, no k-global positives, constant "
             "temperature (combine with cifar10-lt, cifar100-lt or imagenet-lt)")
    register("cifar10-lt", {**CIFAR, "dataset": "cifar10-lt", "model.classifier": "cosine",
                            "cogloat.classifier_loss": "ldam"},
             "CoGloAT paper, CIFAR-10-LT IF 100: ResNet-32, batch 256, lr 0.1, 1,000 pre-training "
             "epochs, then LDAM + inverse-frequency re-weighting on a cosine classifier")
    register("cifar100-lt", {**CIFAR, "dataset": "cifar100-lt", "cogloat.classifier_loss": "ce"},
             "CoGloAT paper, CIFAR-100-LT IF 100: ResNet-32, batch 256, lr 0.1, 1,000 pre-training "
             "epochs, then CE + inverse-frequency re-weighting")
    register("imagenet-lt", {
        "dataset": "imagenet-lt", "model.backbone": "resnet50", "model.classifier": "linear",
        "model.projection_hidden": 2048, "model.projection_dim": 128, "batch_size": 256,
        "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
        "schedule.kind": "cosine", "schedule.warmup_epochs": 0, "epochs": 200, "eval.every": 10,
        "views.contrastive": "imagenet-simaugment", "views.classifier": "imagenet-standard",
        "cogloat.queue_size": 65536, "cogloat.classifier_epochs": 100,
        "cogloat.classifier_loss": "ce"},
        "CoGloAT paper, ImageNet-LT: ResNet-50, 200 pre-training epochs, 100 classifier epochs, "
        "CIFAR-100-LT hyper-parameters")


# -- the run ----------------------------------------------------------------------------------


class Pretraining:
    """cogloat's plugin object in a run: with ``pretrain_classifier_weight = 0`` the
    pre-training stage's optimiser leaves the classifier out, so it starts stage 2 untouched."""

    def __init__(self, stage):
        self.stage = stage

    @hookimpl
    def adjust_parameter_groups(self, run, stage, groups):
        if stage is not self.stage:
            return
        classifier = {id(p) for p in stage.model.classifier.parameters()}
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in classifier]


@hookimpl
def setup_run(run):
    from ltcore import OptimConfig, ScheduleConfig, cross_entropy_term

    from .classifier import reweighted_classifier_term
    from .components import cogloat_term

    options: Options = run.option(PLUGIN)
    stage = run.main_stage
    term = cogloat_term(
        run, k=options.k, temperature=options.temperature,
        adaptive=options.adaptive_temperature, gamma=options.gamma, variant=options.variant,
        include_batch_keys=options.include_batch_keys,
        kcl_positives=options.kcl_positives or None, momentum=options.momentum,
        key_batchnorm=options.key_batchnorm, queue_size=options.queue_size,
        weight=options.weight, stage=stage, plugin=PLUGIN,
        temperature_metrics=options.temperature_metrics)
    stage.add_loss(term)

    query = term.fn.query_role
    stage.add_view(query, run.config.views.contrastive, classify=True)
    # With weight 0 the loss is not a default another plugin could silently take over: a
    # classifier-loss plugin (la, ldam-drw...) selected too is reported as a conflict.
    stage.set_classifier_loss(cross_entropy_term("pretrain-ce", PLUGIN,
                                                 options.pretrain_classifier_weight, role=query),
                              default=options.pretrain_classifier_weight > 0)
    if options.pretrain_classifier_weight == 0:
        run.register(Pretraining(stage), "cogloat-pretraining")

    if options.classifier_epochs:
        second = run.new_stage("classifier", options.classifier_epochs, plugin=PLUGIN,
                               trainable="classifier",
                               epochs_setting=f"{PLUGIN}.classifier_epochs")
        second.optim = OptimConfig(lr=options.classifier_lr, momentum=options.classifier_momentum,
                                   weight_decay=options.classifier_weight_decay)
        second.schedule = ScheduleConfig(kind=options.classifier_schedule, warmup_epochs=0)
        run.add_stage(second, after=stage.name)
        run.classifier_view(second)
        second.set_classifier_loss(reweighted_classifier_term(
            run, loss=options.classifier_loss, reweighting=options.reweighting,
            beta=options.reweighting_beta, start_epoch=options.reweighting_start_epoch,
            max_margin=options.ldam_max_margin, scale=options.ldam_scale, model=second.model,
            plugin=PLUGIN, name=f"{options.classifier_loss}-reweighted"), default=True)

    if options.embedding_metrics:
        run.add_metrics(*(embedding_metric_name(figure, options.embedding_reading)
                          for figure in EMBEDDING_METRICS))
