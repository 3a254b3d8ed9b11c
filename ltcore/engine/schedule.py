"""The learning rate of each epoch and the optimiser of each stage.

A stage's parameter groups start from ``stage.trainable`` (every trainable parameter of the stage
model, or only the classifier's) and pass through the ``adjust_parameter_groups`` hook; the
optimiser registered as ``optim.name`` is built on them. While the stage trains, the parameters
in the groups require gradients and every other parameter of the stage model is frozen.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from ..errors import PluginError
from ..run import Run, Stage


def learning_rate(stage: Stage, epoch: int) -> float:
    """Linear warm-up to ``optim.lr`` over ``warmup_epochs``, then cosine, step or constant."""
    base, sched = stage.optim.lr, stage.schedule
    if epoch < sched.warmup_epochs:
        return base * (epoch + 1) / sched.warmup_epochs
    if sched.kind == "cosine":
        span = max(1, stage.epochs - sched.warmup_epochs)
        return 0.5 * base * (1 + math.cos(math.pi * (epoch - sched.warmup_epochs) / span))
    if sched.kind == "step":
        return base * sched.gamma ** sum(epoch >= m for m in sched.milestones)
    return base


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
    return run.component("optimizer", stage.optim.name)(groups, stage.optim)


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
