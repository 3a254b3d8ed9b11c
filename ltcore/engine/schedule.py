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

def learning_rate(stage: Stage, epoch: int) -> float:
    """The learning rate of ``epoch`` (ltcore's schedules: linear warm-up to ``optim.lr`` over
    ``warmup_epochs``, then cosine, step or constant; timm's through :class:`LearningRate`)."""
    if timm_schedule(stage.schedule.kind) is not None:
        return LearningRate(stage).at(epoch)
    base, sched = stage.optim.lr, stage.schedule
    if epoch < sched.warmup_epochs:
        return base * (epoch + 1) / sched.warmup_epochs
    if sched.kind == "cosine":
        span = max(1, stage.epochs - sched.warmup_epochs)
        return 0.5 * base * (1 + math.cos(math.pi * (epoch - sched.warmup_epochs) / span))
    if sched.kind == "step":
        return base * sched.gamma ** sum(epoch >= m for m in sched.milestones)
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
    """The groups the optimiser of ``stage`` holds (``stage.trainable``, then the hook)."""
    module = stage.model.classifier if stage.trainable == "classifier" else stage.model
    groups = [{"params": [p for p in module.parameters() if p.requires_grad]}]
    run.hooks.adjust_parameter_groups(run=run, stage=stage, groups=groups)
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise PluginError(f"a parameter group of stage {stage.name!r} is not a dict with "
                              f"'params': {group!r}")
    return [g for g in groups if g["params"]]


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
