"""The learning rate of each epoch and the optimiser of each stage.

A stage's parameter groups start from ``stage.trainable`` (every trainable parameter of the stage
model, or only the classifier's) and pass through the ``adjust_parameter_groups`` hook; the
optimiser ``optim.name`` is built on them: a registered one (``sgd``, ``adamw``), else timm's of
that name (``timm.optim.create_optimizer_v2``). While the stage trains, the parameters in the
groups require gradients and every other parameter of the stage model is frozen.

The learning rate is set once per epoch. ltcore's schedules (cosine, step, constant after a linear
warm-up) are closed-form in :func:`learning_rate`; every other ``schedule.kind`` is timm's
scheduler of that name (``timm.scheduler.create_scheduler_v2``), read per epoch through
:class:`LearningRate`, which also feeds ``plateau`` the monitored figure.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch

from ..errors import ConfigError, PluginError
from ..run import Run, Stage
from .timm_factories import optimizer_factory, timm_schedule

def learning_rate(stage: Stage, epoch: float) -> float:
    """The learning rate of ``epoch`` (ltcore's schedules: linear warm-up to ``optim.lr`` over
    ``warmup_epochs``, then cosine, step, polynomial or constant; timm's through
    :class:`LearningRate`). ``epoch`` is fractional under ``schedule.per_step``."""
    if timm_schedule(stage.schedule.kind) is not None:
        return LearningRate(stage).at(epoch)
    base, sched = stage.optim.lr, stage.schedule
    if epoch < sched.warmup_epochs:
        return base * (epoch + 1) / sched.warmup_epochs
    if sched.kind == "cosine":
        elapsed = epoch - sched.warmup_epochs + sched.cosine_offset
        span = max(1, stage.epochs - sched.warmup_epochs + sched.cosine_offset)
        return 0.5 * base * (1 + math.cos(math.pi * elapsed / span))
    if sched.kind == "step":
        return base * sched.gamma ** sum(epoch >= m for m in sched.milestones)
    if sched.kind == "polynomial":
        span = max(1, stage.epochs - sched.warmup_epochs)
        done = min(1.0, (epoch - sched.warmup_epochs) / span)
        return (base - sched.min_lr) * (1 - done) ** sched.power + sched.min_lr
    return base


class LearningRate:
    """The learning rate of each epoch of a stage. A timm scheduler is stepped on a one-parameter
    stand-in optimiser and read back; ``plateau`` lowers the rate from the figures
    :meth:`observe` sees (``checkpoint.monitor``), which :meth:`state_dict` keeps."""

    def __init__(self, stage: Stage, monitor: str = "val/acc", maximise: bool = True):
        self.stage = stage
        self.monitor = monitor
        self.kind = timm_schedule(stage.schedule.kind)
        self.scheduler = None
        if self.kind is not None:
            self.scheduler = self._timm_scheduler(maximise)

    def _timm_scheduler(self, maximise: bool):
        from timm.scheduler import create_scheduler_v2

        stage, sched = self.stage, self.stage.schedule
        self._stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=stage.optim.lr)
        options = {"num_epochs": stage.epochs, "warmup_epochs": sched.warmup_epochs,
                   "warmup_prefix": True, "min_lr": sched.min_lr,
                   "plateau_mode": "max" if maximise else "min",
                   "warmup_lr": stage.optim.lr / max(1, sched.warmup_epochs)}
        try:
            with warnings.catch_warnings():  # its state is kept whole here: see state_dict
                warnings.filterwarnings("ignore", "PlateauLRScheduler is deprecated",
                                        FutureWarning)
                scheduler, _ = create_scheduler_v2(self._stand_in, sched=self.kind,
                                                   **{**options, **sched.options})
        except TypeError as exc:
            raise ConfigError(f"schedule.options: timm's {self.kind!r} scheduler refused them: "
                              f"{exc}") from None
        return scheduler

    def at(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (0-based)."""
        if self.scheduler is None:
            return learning_rate(self.stage, epoch)
        if self.kind != "plateau":
            self.scheduler.step(epoch)
        return float(self._stand_in.param_groups[0]["lr"])

    def observe(self, epoch: int, figures: dict[str, float]) -> None:
        """After ``epoch``: a plateau schedule takes the monitored figure (when it was
        evaluated; in warm-up it steps without one)."""
        if self.kind != "plateau":
            return
        figure = figures.get(self.monitor)
        if figure is not None or epoch + 1 <= self.stage.schedule.warmup_epochs:
            self.scheduler.step(epoch + 1, figure)

    def state_dict(self) -> dict | None:
        """What a plateau schedule has learnt from the figures (None for the others)."""
        if self.kind != "plateau":
            return None
        return {"plateau": self.scheduler.lr_scheduler.state_dict(),
                "lr": self._stand_in.param_groups[0]["lr"]}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None or self.kind != "plateau":
            return
        self.scheduler.lr_scheduler.load_state_dict(state["plateau"])
        self._stand_in.param_groups[0]["lr"] = state["lr"]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its ``lr_scale`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def parameter_groups(run: Run, stage: Stage) -> list[dict]:
    """The groups the optimiser of ``stage`` holds: :func:`stage_groups`, then the hook's
    changes, less the parameters ``model.freeze`` fixes."""
    groups = stage_groups(stage)
    run.hooks.adjust_parameter_groups(run=run, stage=stage, groups=groups)
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise PluginError(f"a parameter group of stage {stage.name!r} is not a dict with "
                              f"'params': {group!r}")
    return without_frozen(stage.model, groups)


def stage_groups(stage: Stage) -> list[dict]:
    """``stage.trainable``'s parameters before the plugins' hook: the classifier's, or every
    trainable one (the backbone's by layer when ``optim.backbone_lr_scale`` or
    ``optim.layer_decay`` asks); what the plan prints."""
    model = stage.model
    if stage.trainable == "classifier":
        groups = [{"params": [p for p in model.classifier.parameters() if p.requires_grad]}]
    else:
        groups = layer_groups(model, stage.optim)
    return without_frozen(model, groups)


def without_frozen(model, groups: list[dict]) -> list[dict]:
    """The non-empty ``groups`` without the parameters ``model.freeze`` fixes."""
    frozen = {id(p) for p in getattr(model, "frozen_parameters", list)()}
    if frozen:
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in frozen]
    return [g for g in groups if g["params"]]


def layer_groups(model, optim) -> list[dict]:
    """Every trainable parameter of ``model`` in one group, or, with ``optim.backbone_lr_scale``
    or ``optim.layer_decay`` set, a group per backbone layer at ``lr_scale = backbone_lr_scale
    * layer_decay^(L - i)`` (layer ``i`` of the backbone's ``L`` in its ``group_matcher``'s
    order, timm's convention) and one for the classifier and heads at the full rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.backbone_lr_scale == 1 and optim.layer_decay == 1:
        return [{"params": params}]
    backbone = model.backbone
    named = [(name, p) for name, p in backbone.named_parameters() if p.requires_grad]
    layer_of = {name: 0 for name, _ in named}
    if optim.layer_decay != 1:
        matcher = getattr(backbone, "group_matcher", None)
        if matcher is None:
            raise ConfigError(f"optim.layer_decay needs a backbone that names its layers "
                              f"(timm's group_matcher); {type(backbone).__name__} does not: use a "
                              "timm: or clip: model, a ResNet or ViT of torchvision, or "
                              "optim.backbone_lr_scale alone")
        from timm.models import group_parameters

        layer_of = group_parameters(backbone, matcher(coarse=False), reverse=True)
    count = max(layer_of.values(), default=0) + 1
    layers: dict[int, list] = {}
    for name, p in named:
        layers.setdefault(layer_of.get(name, count - 1), []).append(p)
    in_backbone = {id(p) for _, p in named}
    groups = [{"params": layers[i], "name": f"backbone.layer{i}" if count > 1 else "backbone",
               "lr_scale": optim.backbone_lr_scale * optim.layer_decay ** (count - i)
               if optim.layer_decay != 1 else optim.backbone_lr_scale}
              for i in sorted(layers)]
    return groups + [{"params": [p for p in params if id(p) not in in_backbone],
                      "name": "classifier+heads", "lr_scale": 1.0}]


def describe_groups(groups: list[dict], lr: float) -> str | None:
    """The plan's words for a stage's parameter groups (None for one group at the full rate):
    each group's name, learning rate and size."""
    if len(groups) == 1 and groups[0].get("lr_scale", 1.0) == 1.0:
        return None

    def size(group):
        count = sum(p.numel() for p in group["params"])
        return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count / 1e3:.1f} k"
    return ", ".join(f"{group.get('name', f'group {i}')} lr {lr * group.get('lr_scale', 1.0):.3g} "
                     f"({size(group)})" for i, group in enumerate(groups))


def build_optimizer(run: Run, stage: Stage, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimiser ``stage.optim.name`` on ``groups``."""
    return optimizer_factory(run.plugins, stage.optim.name)(groups, stage.optim)


@contextmanager
def trained_parameters(stage: Stage, groups: list[dict]) -> Iterator[None]:
    """Inside: the parameters in ``groups`` require gradients, the stage model's others do not;
    the previous flags are restored on the way out."""
    trained = {id(p) for g in groups for p in g["params"]}
    params = {id(p): p for p in stage.model.parameters()}
    params.update({id(p): p for g in groups for p in g["params"]})
    saved = {key: p.requires_grad for key, p in params.items()}
    for key, p in params.items():
        p.requires_grad_(key in trained)
    try:
        yield
    finally:
        for key, p in params.items():
            p.requires_grad_(saved[key])


def fused(groups: list[dict], optim) -> bool:
    """Whether ``optim.fused`` asks for torch's fused kernel for these parameters (``auto``:
    when every one is on CUDA)."""
    if optim.fused == "auto":
        return all(p.is_cuda for g in groups for p in g["params"])
    return optim.fused == "on"


def sgd(groups: list[dict], optim) -> torch.optim.Optimizer:
    """SGD with momentum (``optim.momentum``, ``weight_decay``, ``nesterov``, ``fused``)."""
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay, nesterov=optim.nesterov,
                           fused=fused(groups, optim) or None)


def adamw(groups: list[dict], optim) -> torch.optim.Optimizer:
    """AdamW (``optim.betas``, decoupled ``weight_decay``, ``fused``)."""
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas),
                             weight_decay=optim.weight_decay, fused=fused(groups, optim) or None)
