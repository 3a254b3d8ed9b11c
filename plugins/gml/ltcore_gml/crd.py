"""The ``crd`` plugin: Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR
2020), the distillation baseline of GML's Table 7, with GML's teacher machinery.

A run has two stages, as ``gml``'s: ``teacher`` (a network ``crd.teacher_backbone`` with the
run's ``model.classifier``, trained with CE, or logit-adjusted CE with ``crd.teacher_la_tau``;
skipped when ``crd.teacher`` names an earlier run or file) and ``train``, the student:

    ce_weight L_CE + weight L_CRD + kd_weight L_KD

``L_CRD`` is the NCE critic of the paper (eq. 10-18) as its reference code (HobbitLong/
RepDistiller, ``crd/``) computes it. The student's and the teacher's pooled backbone features
of the classifier view pass each through a linear embedding to ``feat_dim`` and are
L2-normalised (``v_s``, ``v_t``; both embeddings trained, the teacher frozen). Two memory banks
hold one ``feat_dim`` row per training image, for the student (``M_s``) and the teacher
(``M_t``). For sample ``i`` the contrast indices are ``i`` and ``K`` negatives; with ``N`` the
training-set size:

    h_s(j) = exp(v_s . M_t[j] / T) / Z_s,      h_t(j) = exp(v_t . M_s[j] / T) / Z_t
    L_NCE(h) = -1/B sum_i [ log(h(i) / (h(i) + K/N)) + sum_neg log((K/N) / (h(neg) + K/N)) ]
    L_CRD = L_NCE(h_s) + L_NCE(h_t)

(``+ 1e-7`` in both denominators). ``Z`` is fixed at the first step: the mean of that step's
``exp(./T)`` times ``N``. After the loss each row ``i`` of the batch becomes
``normalize(m M[i] + (1 - m) v)`` (``m`` = ``crd.momentum``). Memories start uniform in
``[-s, s]``, ``s = 1 / sqrt(feat_dim / 3)``.
"""

from __future__ import annotations

import math

import attrs
from attrs import validators as v

from ltcore import doc, hookimpl

PLUGIN = "crd"
MEMORY_MODULE = "crd_memory"
STUDENT_HEAD = "crd_student"
TEACHER_HEAD = "crd_teacher"
EPS = 1e-7


@attrs.define(kw_only=True)
class Options:
    teacher: str = doc(
        "teacher to reuse: '' trains one in the run's 'teacher' stage; else the path of an ltcore "
        "model.pt / checkpoint.pt (or its run folder), or an MLflow run id (as gml.teacher)",
        default="")
    teacher_module: str = doc(
        "which network of a reused run is the teacher: auto (its 'teacher' when it has one, else "
        "its 'model'), teacher, model", default="auto",
        validator=v.in_(("auto", "teacher", "model")))
    teacher_backbone: str = doc("backbone of the teacher trained in the run ('' = model.backbone)",
                                default="")
    teacher_epochs: int = doc("epochs of the teacher stage (0 = those of the main stage)",
                              default=0, validator=v.ge(0))
    teacher_la_tau: float = doc("logit-adjustment strength of the teacher's CE (0: plain CE, "
                                "CRD's teachers)", default=0.0, validator=v.ge(0))
    weight: float = doc("beta: weight of L_CRD (reference code 0.8)", default=0.8,
                        validator=v.ge(0))
    temperature: float = doc("T of the critic exp(v_s . v_t / T) (nce_t)", default=0.07,
                             validator=v.gt(0))
    negatives: int = doc("K: negatives per sample (nce_k)", default=16384, validator=v.gt(0))
    feat_dim: int = doc("width of the embeddings and memory rows", default=128,
                        validator=v.gt(0))
    momentum: float = doc("m of the memory update normalize(m M[i] + (1 - m) v) (nce_m)",
                          default=0.5, validator=[v.ge(0), v.le(1)])
    negatives_from: str = doc(
        "other-classes (reference code, mode exact: images of the other classes) | all (every "
        "training image, the memory's own uniform sampler); drawn with replacement",
        default="other-classes", validator=v.in_(("other-classes", "all")))
    symmetric: bool = doc("both critics, student anchors on M_t and teacher anchors on M_s "
                          "(reference code); false keeps the student's only", default=True)
    ce_weight: float = doc("gamma: weight of the student's CE", default=1.0, validator=v.ge(0))
    kd_weight: float = doc("alpha: weight of Hinton's KD on the classifier view (0: CRD alone; "
                           "KD alone: weight 0, ce_weight 0.1, kd_weight 0.9)", default=0.0,
                           validator=v.ge(0))
    kd_temperature: float = doc("temperature of L_KD", default=4.0, validator=v.gt(0))


@hookimpl
def register_options(register):
    register(Options)


CIFAR_RECIPE = {"epochs": 240, "batch_size": 64, "optim.lr": 0.05, "optim.momentum": 0.9,
                "optim.weight_decay": 5e-4, "schedule.kind": "step", "schedule.warmup_epochs": 0,
                "schedule.milestones": [150, 180, 210], "views.classifier": "standard"}
"""CRD's CIFAR-100 recipe (RepDistiller): 240 epochs, lr 0.05 x0.1 at 150/180/210, batch 64."""
IMAGENET_RECIPE = {"epochs": 90, "batch_size": 256, "optim.lr": 0.1, "optim.momentum": 0.9,
                   "optim.weight_decay": 1e-4, "schedule.kind": "step",
                   "schedule.warmup_epochs": 0, "schedule.milestones": [30, 60],
                   "views.classifier": "imagenet-standard"}
"""The standard ImageNet recipe of CRD's ImageNet runs: 90 epochs, lr 0.1 x0.1 at 30/60."""
TABLE7 = {
    "table7-cifar100": ({"dataset": "cifar100-lt", "imbalance_factor": "natural"},
                        "resnet20", "resnet56", CIFAR_RECIPE),
    "table7-imagenet": ({"dataset": "imagefolder-lt", "imbalance_factor": "natural"},
                        "resnet18", "resnet34", IMAGENET_RECIPE),
    "table7-cifar100-lt": ({"dataset": "cifar100-lt", "imbalance_factor": 100.0},
                           "resnet20", "resnet56", CIFAR_RECIPE),
    "table7-imagenet-lt": ({"dataset": "imagenet-lt"}, "resnext50", "resnext101",
                           IMAGENET_RECIPE),
}
"""GML Table 7's columns: data, student, teacher and the baselines' recipe (sec. 4.6; balanced
ImageNet is an ImageNet train/val tree read as imagefolder-lt with imbalance_factor natural)."""


@hookimpl
def register_presets(register):
    base = {"model.classifier": "linear", "crd.weight": 0.8, "crd.temperature": 0.07,
            "crd.negatives": 16384, "crd.feat_dim": 128}
    for name, (data, student, teacher, recipe) in TABLE7.items():
        register(name, {**base, **recipe, **data, "model.backbone": student,
                        "crd.teacher_backbone": teacher},
                 f"GML Table 7 ({name[7:]}): {student} student, {teacher} teacher, CRD's "
                 f"recipe ({recipe['epochs']} epochs)")


# -- the loss --------------------------------------------------------------------------------


def nce_loss(probabilities, data_size: int):
    """``L_NCE`` of ``probabilities`` ``[B, 1 + K]`` (column 0 the positive), noise ``1 / N``."""
    import torch

    negatives = probabilities.shape[1] - 1
    noise = negatives / data_size
    positive = probabilities[:, 0]
    log_positive = torch.log(positive / (positive + noise + EPS))
    log_negative = torch.log(noise / (probabilities[:, 1:] + noise + EPS))
    return -(log_positive.sum() + log_negative.sum()) / probabilities.shape[0]


def _memory_module():
    import torch
    from torch import nn

    class ContrastMemory(nn.Module):
        """The two memories (``student``, ``teacher``: ``[N, feat_dim]``) and the fixed
        normalisers ``z`` (student critic, teacher critic; -1 until the first step)."""

        def __init__(self, data_size: int, feat_dim: int):
            super().__init__()
            bound = 1.0 / math.sqrt(feat_dim / 3)
            for name in ("student", "teacher"):
                self.register_buffer(name, torch.rand(data_size, feat_dim) * 2 * bound - bound)
            self.register_buffer("z", torch.full((2,), -1.0))

        @torch.no_grad()
        def update(self, name: str, rows, values, momentum: float) -> None:
            memory = getattr(self, name)
            mixed = memory[rows] * momentum + values.detach().float() * (1 - momentum)
            memory.index_copy_(0, rows, mixed / mixed.pow(2).sum(1, keepdim=True).pow(0.5))

    return ContrastMemory


def contrast(anchors, memory, indices, temperature: float, z, which: int):
    """``exp(M[indices] . anchor / T) / Z`` ``[B, 1 + K]``; ``Z[which]`` set on the first call."""
    import torch

    out = torch.exp(torch.bmm(memory[indices], anchors.float().unsqueeze(2)).squeeze(2)
                    / temperature)
    if float(z[which]) < 0:
        z[which] = out.detach().mean() * memory.shape[0]
    return out / z[which].clone()  # a copy: the buffer's other entry is set in place later


def draw_negatives(labels, count: int, order, starts, sizes, generator=None):
    """``count`` training-image indices per label, uniform over the images of the other
    classes (``order`` the indices sorted by class, ``starts`` / ``sizes`` each class's block)."""
    import torch

    size = order.numel()
    room = (size - sizes[labels]).unsqueeze(1).float()
    draw = torch.rand(labels.numel(), count, device=order.device, generator=generator)
    rank = (draw * room).long().clamp_max(room.long() - 1)
    start = starts[labels].unsqueeze(1)
    rank = rank + (rank >= start) * sizes[labels].unsqueeze(1)
    return order[rank]


class CRDTerms:
    """The run's CRD pieces and loss terms."""

    def __init__(self, run, options: Options, teacher, memory, role: str):
        import torch

        self.run, self.options, self.teacher, self.memory, self.role = (run, options, teacher,
                                                                        memory, role)
        labels = run.dataset.train.labels.to(run.device)
        self.data_size = labels.numel()
        self.order = torch.argsort(labels, stable=True)
        self.sizes = torch.bincount(labels, minlength=run.dataset.num_classes)
        self.starts = torch.cumsum(self.sizes, 0) - self.sizes
        self._last = None

    def outputs(self, step):
        """This step's teacher features and logits (once per step)."""
        import torch

        if self._last is not None and self._last[0] is step:
            return self._last[1]
        with torch.no_grad(), step.run.autocast():
            features = self.teacher.backbone(step.images[self.role]).float()
            logits = self.teacher.classifier(features).float()
        out = {"features": step.gather(features), "logits": step.gather(logits)}
        self._last = (step, out)
        step.extras[PLUGIN] = out
        return out

    def indices(self, step):
        import torch

        rows = step.indices[step.stage.views[self.role].source]
        if self.options.negatives_from == "all":
            negatives = torch.randint(self.data_size, (rows.numel(), self.options.negatives),
                                      device=rows.device)
        else:
            negatives = draw_negatives(step.targets(self.role), self.options.negatives,
                                       self.order, self.starts, self.sizes)
        return rows, torch.cat([rows.unsqueeze(1), negatives], dim=1)

    def crd_term(self):
        import torch.nn.functional as F

        from ltcore import LossTerm

        o, heads = self.options, self.run.main_stage.model.heads

        def fn(step):
            teacher = self.outputs(step)
            with step.run.autocast():
                v_s = F.normalize(heads[STUDENT_HEAD](step.features[self.role]).float(), dim=1)
                v_t = F.normalize(heads[TEACHER_HEAD](teacher["features"]).float(), dim=1)
            rows, idx = self.indices(step)
            memory = self.memory
            loss = nce_loss(contrast(v_s, memory.teacher, idx, o.temperature, memory.z, 0),
                            self.data_size)
            if o.symmetric:
                loss = loss + nce_loss(contrast(v_t, memory.student, idx, o.temperature,
                                                memory.z, 1), self.data_size)
            memory.update("student", rows, v_s, o.momentum)
            memory.update("teacher", rows, v_t, o.momentum)
            teacher.update(v_s=v_s.detach(), v_t=v_t.detach(), idx=idx, loss=loss.detach())
            return loss

        return LossTerm("crd", fn, PLUGIN, o.weight, kind="other")

    def kd_term(self):
        from ltcore import LossTerm
        from ltcore.losses import distillation_kl

        def fn(step):
            return distillation_kl(step.logits[self.role], self.outputs(step)["logits"],
                                   self.options.kd_temperature)

        return LossTerm("kd", fn, PLUGIN, self.options.kd_weight, kind="other")


class CRDRun:
    """Keeps the teacher frozen and in evaluation mode while the student trains."""

    def __init__(self, stage, teacher):
        self.stage, self.teacher = stage, teacher

    @hookimpl
    def stage_start(self, run, stage):
        if stage is self.stage:
            from .teacher import freeze

            freeze(self.teacher)

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if stage is self.stage:
            self.teacher.eval()


@hookimpl
def setup_run(run):
    from torch import nn

    from ltcore import cross_entropy_term

    from . import teacher as teachers

    options: Options = run.option(PLUGIN)
    stage = run.main_stage
    model = stage.model
    role = run.classifier_view(stage)
    stage.set_classifier_loss(cross_entropy_term("ce", PLUGIN, options.ce_weight, role),
                              default=True)
    if options.weight == 0 and options.kd_weight == 0:
        return  # CE alone (Table 7's "None"): no teacher is needed
    if options.teacher:
        teacher = teachers.load_teacher(run, options.teacher, options.teacher_module,
                                        options.teacher_backbone)
    else:
        backbone = options.teacher_backbone or run.config.model.backbone
        teacher = teachers.build_teacher(run, backbone, run.config.model.classifier)
        teacher_stage = teachers.teacher_stage(run, backbone, options.teacher_epochs,
                                               options.teacher_la_tau, PLUGIN, model=teacher)
        teacher_stage.epochs_setting = (f"{PLUGIN}.teacher_epochs" if options.teacher_epochs
                                        else f"--epochs, as {PLUGIN}.teacher_epochs = 0")
        run.add_stage(teacher_stage, before=stage.name)
    run.add_module(teachers.TEACHER_MODULE, teacher)
    model.heads[STUDENT_HEAD] = nn.Linear(model.feature_dim, options.feat_dim).to(run.device)
    model.heads[TEACHER_HEAD] = nn.Linear(teacher.feature_dim, options.feat_dim).to(run.device)
    memory = _memory_module()(len(run.dataset.train.labels), options.feat_dim).to(run.device)
    run.add_module(MEMORY_MODULE, memory)
    terms = CRDTerms(run, options, teacher, memory, role)
    if options.weight > 0:
        stage.add_loss(terms.crd_term())
    if options.kd_weight > 0:
        stage.add_loss(terms.kd_term())
    run.register(CRDRun(stage, teacher), PLUGIN)
