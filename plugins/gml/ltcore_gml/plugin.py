"""The ``gml`` plugin: Gaussian Mixture Likelihood loss with class-wise queues and a teacher.

Suh & Seo, "Long-Tailed Recognition by Mutual Information Maximization between Latent Features
and Ground-Truth Labels" (ICML 2023). A run has two stages:

* ``teacher`` (before ``train``): a cosine-classifier network (``gml.teacher_backbone``) trained
  with logit-adjusted CE only. Skipped when ``gml.teacher`` names an earlier run or a file.
* ``train``: the student, ``gamma L_cls + beta (L_GML + L_tau) + alpha L_KD``. ``L_cls`` is the
  logit-adjusted CE of the cosine classifier (x30) on the classifier view; ``L_GML`` contrasts
  the query view's projection with the class-wise queues of teacher keys (eq. 4/10);
  ``L_tau`` trains ``tau_g`` (detached similarities, the query's own image left out); ``L_KD``
  distils the teacher's classifier-view logits at temperature 4.

Three views per image: the classifier view (``views.classifier``), the query view ``con0``
(``views.contrastive``, through the student) and the key view ``gml_key`` (``gml.key_view``,
through the frozen teacher only). ``class-queue`` is registered as a memory bank, the teacher
stage as the stage ``gml-teacher``, and the teachers of the paper's ImageNet recipes as the
backbones ``resnet152`` and ``resnext101`` (registered by the core).

``gml.centres = text`` is the visual-linguistic variant (sec. 3.4, Table 4): a ``clip:``
backbone, its text features of each class's prompts as the mixture centres, no teacher
(``text.py``).
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from ltcore import doc, hookimpl

PLUGIN = "gml"
KEY_ROLE = "gml_key"
KEY_HEAD = "gml_key"
TEMPERATURE_HEAD = "gml_temperature"
QUEUE_MODULE = "gml_queue"


@attrs.define(kw_only=True)
class Options:
    teacher: str = doc(
        "teacher to reuse: '' trains one in the run's 'teacher' stage; else the path of an ltcore "
        "model.pt / checkpoint.pt (or its run folder), or an MLflow run id (its <output>/<id>/"
        "model.pt, else its checkpoints/model.pt artifact)", default="")
    teacher_module: str = doc(
        "which network of a reused run is the teacher: auto (its 'teacher' when it has one, else "
        "its 'model'), teacher, model", default="auto",
        validator=v.in_(("auto", "teacher", "model")))
    teacher_backbone: str = doc("backbone of the teacher trained in the run ('' = model.backbone)",
                                default="")
    teacher_epochs: int = doc("epochs of the teacher stage (0 = those of the main stage)",
                              default=0, validator=v.ge(0))
    teacher_la_tau: float = doc("logit-adjustment strength of the teacher's CE", default=1.0,
                                validator=v.ge(0))
    queue_size: int = doc("k: contrast entries in all class-wise queues together", default=4096,
                          validator=v.gt(0))
    queue_min: int = doc("k_m: minimum queue length of a class (eq. 5)", default=2,
                         validator=v.ge(1))
    queue_overflow: str = doc(
        "which samples a class keeps when one batch holds more of them than its queue has "
        "slots K_c: first (reference code: its first K_c samples, its pointer stays put) | last "
        "(its last K_c samples, as if written one at a time)", default="first",
        validator=v.in_(("first", "last")))
    queue_contents: str = doc(
        "teacher-features (reference code: teacher backbone features, re-projected every step "
        "by the trainable key MLP) | key-embeddings (key-MLP embeddings stored when enqueued; "
        "only the current batch's entries carry gradient)", default="teacher-features",
        validator=v.in_(("teacher-features", "key-embeddings")))
    queue_init: str = doc(
        "empty (slots not yet written are left out of the loss) | random (reference code: random "
        "unit vectors, labelled per class, until overwritten)", default="empty",
        validator=v.in_(("empty", "random")))
    key_head_init: str = doc(
        "copy (the key MLP starts as a copy of the query projection head where the shapes "
        "match, as the reference code) | independent", default="copy",
        validator=v.in_(("copy", "independent")))
    temperature: float = doc("tau_g of L_GML (its initial value when learned)", default=0.1,
                             validator=v.gt(0))
    learn_temperature: bool = doc("learn tau_g through the detached loss that leaves the query's "
                                  "own image out; false keeps it fixed", default=True)
    gml_alpha: float = doc("alpha of eq. 10: logit-adjustment strength inside L_GML (1 = eq. 4)",
                           default=1.0, validator=v.ge(0))
    classifier_la_tau: float = doc("logit-adjustment strength of L_cls (eq. 6: 1)", default=1.0,
                                   validator=v.ge(0))
    classifier_weight: float = doc("gamma: weight of L_cls", default=1.0, validator=v.ge(0))
    gml_weight: float = doc("beta: weight of L_GML and of the temperature loss", default=1.0,
                            validator=v.ge(0))
    distill: bool = doc("add L_KD, the teacher's classifier-view logits distilled into the "
                        "student's", default=True)
    kd_weight: float = doc("alpha (Table A.1): weight of L_KD", default=1.0, validator=v.ge(0))
    kd_temperature: float = doc("temperature of L_KD on the x30 cosine logits", default=4.0,
                                validator=v.gt(0))
    key_view: str = doc("view pipeline of the teacher's key view ('' = views.contrastive)",
                        default="")
    centres: str = doc(
        "mixture centres of L_GML: contrast (the teacher's contrast features in class-wise "
        "queues) | text (sec. 3.4: a clip: backbone's text features of each class's prompts, "
        "clip.templates; no teacher, queue or distillation)", default="contrast",
        validator=v.in_(("contrast", "text")))
    key_encoder: str = doc(
        "where the keys come from: teacher (the frozen teacher; sec. 3.3) | momentum (Table 5 "
        "without teacher-student, the reference code without --path_t: a momentum copy of the "
        "student's backbone and projection head, MoCo-style; no teacher stage, no L_KD)",
        default="teacher", validator=v.in_(("teacher", "momentum")))
    key_momentum: float = doc("with key_encoder = momentum: m of key <- m key + (1 - m) student "
                              "(reference code 0.999), applied before every step's keys",
                              default=0.999, validator=[v.ge(0), v.le(1)])
    text_classifier_init: str = doc(
        "with centres = text: zero-shot (the cosine classifier starts as CLIP's zero-shot "
        "classifier of the same prompts) | random", default="zero-shot",
        validator=v.in_(("zero-shot", "random")))


# -- registration ---------------------------------------------------------------------------


def _class_queue(run, **options):
    """Class-wise ring buffers, |Z_c| = k_m + (k - k_m C) pi_c (options size, min_size, dim,
    overflow)."""
    from .bank import class_queue

    return class_queue(run, **options)


def _teacher_stage(run, **options):
    """A cosine-classifier teacher trained with logit-adjusted CE (options backbone, epochs,
    la_tau); attach stage.model with run.add_module."""
    from .teacher import teacher_stage

    return teacher_stage(run, **options)



@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_memory_banks(register):
    register("class-queue", _class_queue)


@hookimpl
def register_stages(register):
    register("gml-teacher", _teacher_stage)


@hookimpl
def register_tables(register):
    """Tables 1-8, A.1 and A.2 and Figures 2 and 3 (``ltcore_gml.tables``; Tables 4, 6 and 8
    and Figure 2 wait)."""
    from .tables import TABLES

    for table in TABLES:
        register(table)


@hookimpl
def register_views(register):
    from .views import PIPELINES

    for pipeline in PIPELINES:
        register(pipeline.name, pipeline, pipeline.description)


CIFAR = {
    "model.backbone": "resnet32", "gml.teacher_backbone": "resnet56",
    "model.classifier": "cosine", "model.cosine_scale": 30.0,
    "model.projection_hidden": 64, "model.projection_dim": 32,
    "views.classifier": "autoaugment-cutout", "views.contrastive": "autoaugment-cutout",
    "batch_size": 64, "optim.lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
    "schedule.kind": "step", "imbalance_factor": 100.0,
    "gml.queue_size": 4096, "gml.queue_min": 2, "gml.temperature": 0.1,
    "gml.classifier_weight": 1.0, "gml.gml_weight": 1.0, "gml.distill": True, "gml.kd_weight": 1.0,
}
LARGE = {
    "model.classifier": "cosine", "model.cosine_scale": 30.0,
    "model.projection_hidden": 2048, "model.projection_dim": 1024,
    "batch_size": 128, "optim.momentum": 0.9, "schedule.kind": "cosine",
    "schedule.warmup_epochs": 0, "gml.queue_min": 2, "gml.distill": False,
}
IMAGENET = {
    **LARGE, "dataset": "imagenet-lt", "model.backbone": "resnext50",
    "gml.teacher_backbone": "resnext101", "views.classifier": "imagenet-randaugment",
    "views.contrastive": "gml-randclsstack", "optim.lr": 0.05, "optim.weight_decay": 5e-4,
    "gml.queue_size": 16384, "gml.temperature": 0.07,
}
INATURALIST = {
    **LARGE, "dataset": "inaturalist2018", "model.backbone": "resnet50",
    "gml.teacher_backbone": "resnet152", "views.classifier": "imagenet-simaugment",
    "views.contrastive": "gml-randclsstack", "optim.lr": 0.02, "optim.weight_decay": 2e-4,
    "gml.queue_size": 65536, "gml.temperature": 0.1,
}

SEGMENTATION = {
    # appendix A.2: (k, k_m, tau_s, tau_g) = (8192, 27, 0.05, 0.07); tau_s = 0.05 is scale 20
    "model.classifier": "cosine", "model.cosine_scale": 20.0, "gml.queue_size": 8192,
    "gml.queue_min": 27, "gml.temperature": 0.07, "gml.distill": False,
}

CLIP_TEXT = {
    # sec. 3.4: text centres, CLIP initialisation; VL-LTR's (Tian et al.) pre-training settings:
    # AdamW, weight decay 0.05, timm cosine with 5 warm-up epochs from 1e-6 (docs/methods/gml.md)
    "model.pretrained": "hub", "model.classifier": "cosine", "model.cosine_scale": 30.0,
    "gml.centres": "text", "gml.distill": False, "gml.text_classifier_init": "zero-shot",
    "clip.templates": ["imagenet"], "imbalance_factor": "natural",
    "optim.name": "adamw", "optim.weight_decay": 0.05, "optim.betas": [0.9, 0.999],
    "schedule.kind": "timm:cosine", "schedule.warmup_epochs": 5,
    "schedule.options": {"warmup_lr": 1e-6, "warmup_prefix": False},
    "views.classifier": "imagenet-randaugment",
}
CLIP_IMAGENET = {**CLIP_TEXT, "dataset": "imagenet-lt", "epochs": 50, "views.image_size": 224,
                 "schedule.min_lr": 0.0, "gml.temperature": 0.07,
                 "clip.class_names": "openai-imagenet"}


@hookimpl
def register_presets(register):
    register("smoke", {"gml.queue_size": 256, "gml.queue_min": 2},
             "ltrun reproduce --smoke: small class-wise queues, so each cell trains in seconds")
    register("default", {"model.classifier": "cosine", "model.cosine_scale": 30.0,
                         "views.classifier": "autoaugment-cutout",
                         "views.contrastive": "autoaugment-cutout"},
             "GML's cosine classifier (tau_s = 1/30) and its CIFAR views (AutoAugment + Cutout "
             "for the classifier, query and key views)")
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        base = {**CIFAR, "dataset": name}
        # reference adjust_learning_rate: x0.1 for epoch > 160, x0.01 for epoch > 180 (0-based)
        register(name, {**base, "epochs": 200, "schedule.warmup_epochs": 5,
                        "schedule.milestones": [161, 181]},
                 f"GML paper, CIFAR-{classes}-LT IF 100, ResNet-32 student, ResNet-56 teacher, "
                 "200 epochs (Table A.1, Table 3 (a))")
        register(f"{name}-400", {**base, "epochs": 400, "schedule.warmup_epochs": 10,
                                 "schedule.milestones": [321, 361]},
                 f"GML paper, CIFAR-{classes}-LT IF 100, ResNet-32 student, ResNet-56 teacher, "
                 "400 epochs (Table A.1, Table 3 (b))")
    register("imagenet-lt", {**IMAGENET, "epochs": 90, "gml.classifier_weight": 1.0,
                             "gml.gml_weight": 1.0},
             "GML paper, ImageNet-LT, ResNeXt-50 student, ResNeXt-101 teacher, 90 epochs "
             "(Table A.1, Table 1 (a))")
    register("imagenet-lt-400", {**IMAGENET, "epochs": 400, "gml.classifier_weight": 0.5,
                                 "gml.gml_weight": 2.0},
             "GML paper, ImageNet-LT, ResNeXt-50 student, ResNeXt-101 teacher, 400 epochs "
             "(Table A.1, Table 1 (b): gamma 0.5, beta 2)")
    register("inaturalist2018", {**INATURALIST, "epochs": 100},
             "GML paper, iNaturalist 2018, ResNet-50 student, ResNet-152 teacher, 100 epochs "
             "(Table A.1, Table 2 (a))")
    register("inaturalist2018-400", {**INATURALIST, "epochs": 400},
             "GML paper, iNaturalist 2018, ResNet-50 student, ResNet-152 teacher, 400 epochs "
             "(Table A.1, Table 2 (b))")
    from .crd import TABLE7

    for name, (data, student, teacher, recipe) in TABLE7.items():
        own = CIFAR if recipe["views.classifier"] == "standard" else {
            **IMAGENET, "views.classifier": recipe["views.classifier"]}
        register(name, {**own, **recipe, **data, "views.classifier": own["views.classifier"],
                        "model.backbone": student, "gml.teacher_backbone": teacher},
                 f"GML Table 7 ({name[7:]}): {student} student, {teacher} teacher, the "
                 f"baselines' (CRD's) recipe, {recipe['epochs']} epochs")
    for name, alpha in (("ade20k-fcn-r50", 0.2), ("ade20k-fcn-r50-alpha1", 1.0)):
        register(name, {**SEGMENTATION, "gml.gml_alpha": alpha, "gml.classifier_la_tau": alpha},
                 f"GML's dense form with --plugin seg (GML Table 8): cosine heads (tau_s 0.05), "
                 f"(k, k_m, tau_g) = (8192, 27, 0.07), alpha = {alpha:g} in L_GML and L_cls; "
                 f"seg's preset of this name gives mmsegmentation's FCN-R50-D8 recipe")
    register("imagenet-lt-clip-rn50", {**CLIP_IMAGENET, "model.backbone": "clip:RN50",
                                       "batch_size": 2048, "optim.lr": 5e-5},
             "GML paper, ImageNet-LT, text centres, CLIP ResNet-50, VL-LTR's settings: AdamW lr "
             "5e-5, batch 2048, 50 epochs (Table 4: 70.9)")
    register("imagenet-lt-clip-vitb16", {**CLIP_IMAGENET, "model.backbone": "clip:ViT-B-16",
                                         "batch_size": 1024, "optim.lr": 3.5e-5},
             "GML paper, ImageNet-LT, text centres, CLIP ViT-B/16, VL-LTR's settings: AdamW lr "
             "3.5e-5, batch 1024, 50 epochs (Table 4: 78.0)")
    register("inaturalist2018-clip-vitb16",
             {**CLIP_TEXT, "dataset": "inaturalist2018", "model.backbone": "clip:ViT-B-16",
              "model.backbone_options": {"force_image_size": 384}, "views.image_size": 384,
              "batch_size": 1024, "optim.lr": 3.5e-4, "epochs": 100, "schedule.min_lr": 1e-5,
              "gml.temperature": 0.1},
             "GML paper, iNaturalist 2018, text centres, CLIP ViT-B/16 at 384 px, VL-LTR's "
             "settings: AdamW lr 3.5e-4, batch 1024, 100 epochs (Table 4: 82.1)")


TABLE_4 = ("GML Table 4, top-1 on the balanced test set, backbone initialised from CLIP, "
           "text centres")


@hookimpl
def register_reference_results(register):
    # Table 4: the visual-linguistic variant; its baselines are named in the source
    for dataset, backbone, accuracy, baselines in (
            ("imagenet-lt", "clip:RN50", 70.9, "VL-LTR 70.1, zero-shot CLIP 59.8"),
            ("imagenet-lt", "clip:ViT-B-16", 78.0, "VL-LTR 77.2"),
            ("inaturalist2018", "clip:ViT-B-16", 82.1, "VL-LTR 81.0, both at 384 px")):
        register(plugins="gml", dataset=dataset, imbalance_factor="natural",
                 metrics={"test/acc": accuracy}, source=f"{TABLE_4} ({baselines})",
                 match={"model.backbone": backbone, "gml.centres": "text"})
    # Table 3: CIFAR-100-LT, ResNet-32, 200 and 400 epochs
    for epochs, accuracies in ((200, (53.0, 57.6, 65.7)), (400, (54.0, 58.1, 67.0))):
        for factor, accuracy in zip((100, 50, 10), accuracies):
            register(plugins="gml", dataset="cifar100-lt", imbalance_factor=factor,
                     metrics={"test/acc": accuracy},
                     source=f"GML Table 3, ResNet-32, {epochs} epochs, top-1 (best epoch)",
                     match={"epochs": epochs})


# -- the run --------------------------------------------------------------------------------


def _check_trainable(stage) -> None:
    from ltcore import PluginError

    if stage.trainable == "classifier":
        raise PluginError(f"plugin 'gml' trains the backbone of stage {stage.name!r}, but another "
                          "selected plugin set it to train only the classifier")


class GMLRun:
    """GML's plugin object in a run: keeps the teacher frozen while the student trains, gives
    tau_g a parameter group without weight decay and reports tau_g and the queue's filling."""

    def __init__(self, stage, teacher, temperature, queue, key_training=False):
        self.stage, self.teacher, self.temperature, self.queue = stage, teacher, temperature, queue
        # a momentum key encoder runs in training mode (BatchNorm on the batch), as MoCo's
        self.key_training = key_training

    @hookimpl
    def run_start(self, run):
        _check_trainable(self.stage)

    @hookimpl
    def adjust_parameter_groups(self, run, stage, groups):
        """tau_g out of every group, into its own group without weight decay."""
        if stage is not self.stage:
            return
        _check_trainable(stage)
        own = [p for p in self.temperature.parameters() if p.requires_grad]
        ids = {id(p) for p in own}
        kept = []
        for group in groups:
            params = [p for p in group["params"] if id(p) not in ids]
            if params:
                kept.append({**group, "params": params})
        groups[:] = kept + ([{"params": own, "weight_decay": 0.0}] if own else [])

    @hookimpl
    def stage_start(self, run, stage):
        if stage is self.stage and self.teacher is not None:
            from .teacher import freeze

            freeze(self.teacher)
            self.teacher.train(self.key_training)

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if stage is self.stage and self.teacher is not None:
            self.teacher.train(self.key_training)

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if stage is self.stage:
            metrics["train/gml_temperature"] = float(self.temperature().detach())
            if self.queue is not None:
                metrics["train/gml_queue_filled"] = float(self.queue.valid().float().mean())


@hookimpl
def setup_run(run):
    import torch

    from ltcore import MLPHead, logit_adjusted_term

    from . import teacher as teachers
    from .bank import Temperature, fill_random
    from .student import TEACHER_FEATURES, GMLStudent

    options: Options = run.option(PLUGIN)
    stage = run.main_stage
    model = stage.model
    if options.centres == "text":
        from .text import setup_text_centres

        temperature = setup_text_centres(run, options, PLUGIN)
        model.heads[TEMPERATURE_HEAD] = temperature
        run.register(GMLRun(stage, None, temperature, None), PLUGIN)
        return
    from .text import refuse_contrast_mode_text_options

    refuse_contrast_mode_text_options(options)
    momentum = options.key_encoder == "momentum"
    if momentum:
        teacher = teachers.momentum_key_encoder(run, options, model.backbone)
        run.add_module(teachers.KEY_ENCODER_MODULE, teacher)
    elif options.teacher:
        teacher = teachers.load_teacher(run, options.teacher, options.teacher_module,
                                        options.teacher_backbone)
        run.add_module(teachers.TEACHER_MODULE, teacher)
    else:
        teacher_stage = run.build("stage", "gml-teacher",
                                  backbone=options.teacher_backbone or run.config.model.backbone,
                                  epochs=options.teacher_epochs, la_tau=options.teacher_la_tau,
                                  plugin=PLUGIN)
        teacher_stage.epochs_setting = (f"{PLUGIN}.teacher_epochs" if options.teacher_epochs
                                        else f"--epochs, as {PLUGIN}.teacher_epochs = 0")
        teacher = teacher_stage.model
        run.add_module(teachers.TEACHER_MODULE, teacher)
        run.add_stage(teacher_stage, before=stage.name)

    classifier_role = run.classifier_view(stage)
    stage.set_classifier_loss(logit_adjusted_term(run, options.classifier_la_tau,
                                                  options.classifier_weight, plugin=PLUGIN),
                              default=True)
    (query_role,) = run.contrastive_views(1, stage)
    stage.add_view(KEY_ROLE, options.key_view or run.config.views.contrastive,
                   source=stage.views[query_role].source, forward=False)

    cfg = run.config.model
    projection = run.projection_head(model)
    key_head = MLPHead(teacher.feature_dim, cfg.projection_dim,
                       cfg.projection_hidden).to(run.device)
    if momentum:  # the key MLP is the momentum copy of the query head, not trained
        key_head.load_state_dict(projection.state_dict())
        key_head.requires_grad_(False)
    elif options.key_head_init == "copy":
        source = projection.state_dict()
        target = key_head.state_dict()
        if all(source[k].shape == t.shape for k, t in target.items()):
            key_head.load_state_dict(source)
    model.heads[KEY_HEAD] = key_head
    temperature = Temperature(options.temperature, options.learn_temperature).to(run.device)
    model.heads[TEMPERATURE_HEAD] = temperature

    features_mode = options.queue_contents == TEACHER_FEATURES
    width = teacher.feature_dim if features_mode else cfg.projection_dim
    # teacher features in the compute dtype: the key MLP's autocast would round them to it
    # anyway, so the queue takes half the memory and no per-step cast where that is bf16
    queue = run.build("memory-bank", "class-queue", size=options.queue_size,
                      min_size=options.queue_min, dim=width,
                      dtype=run.compute_dtype if features_mode else torch.float32,
                      overflow=options.queue_overflow)
    if options.queue_init == "random":
        fill_random(queue)
    run.add_module(QUEUE_MODULE, queue)

    distill = options.distill and options.kd_weight > 0 and not momentum
    student = GMLStudent(run, teacher, queue, key_head, temperature, options.queue_contents,
                         query_role, KEY_ROLE, classifier_role, options.gml_alpha, distill,
                         contrast=options.gml_weight > 0)
    if momentum:
        student.follow(options.key_momentum, model.backbone, projection)
    if options.gml_weight > 0:
        stage.add_loss(student.gml_term(options.gml_weight, PLUGIN))
        if options.learn_temperature:
            stage.add_loss(student.temperature_term(options.gml_weight, PLUGIN))
    if distill:
        stage.add_loss(student.distillation_term(options.kd_weight, options.kd_temperature, PLUGIN))
    run.register(GMLRun(stage, teacher, temperature, queue, key_training=momentum), PLUGIN)
