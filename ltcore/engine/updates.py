"""How a stage's loss becomes parameter updates: the optimiser and what shapes its steps.

:class:`Updates` holds a stage's optimiser and learning-rate schedule with the options that
change how gradients reach it: ``optim.accumulate`` (micro-batches summed before an update),
``precision = "fp16"`` (a gradient scaler), ``optim.clip_grad_norm`` and ``ema.decay`` (an
exponential moving average of the stage model's weights, timm's ``ModelEmaV3``). Its
:meth:`~Updates.state_dict` is part of every checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from ..run import Run, Stage
from .checkpoints import copy_state
from .schedule import LearningRate, build_optimizer


class Updates:
    """A stage's optimiser, schedule, gradient scaler, clipping and weights' EMA.

    With ``optim.accumulate = k`` the steps of an epoch form groups of ``k`` (the last group
    holds what is left); each step's loss is divided by its group's size, so that the summed
    gradients are those of the mean loss over the group, and the optimiser steps once per group.
    """

    def __init__(self, run: Run, stage: Stage, groups: list[dict]):
        cfg = run.config
        self.run = run
        self.stage = stage
        self.optimizer = build_optimizer(run, stage, groups)
        self.schedule = LearningRate(stage, cfg.checkpoint.monitor, cfg.checkpoint.maximise)
        self.accumulate = cfg.optim.accumulate
        self.clip = cfg.optim.clip_grad_norm
        self.scaler = (torch.amp.GradScaler(run.device.type)
                       if run.compute_dtype == torch.float16 else None)
        self.ema = None
        if cfg.ema.decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(stage.model, decay=cfg.ema.decay)
        self.use_ema = self.ema is not None and cfg.eval.use_ema
        self.trained: dict | None = None
        """The trained weights, kept when the stage ended with the EMA's (:meth:`finish`)."""

    # -- the steps of an epoch --

    def group(self, step: int, steps: int) -> tuple[bool, bool, int]:
        """For step ``step`` of an epoch of ``steps``: whether it starts its accumulation
        group, whether it ends it (the optimiser steps after it) and the group's size."""
        start = step - step % self.accumulate
        size = min(self.accumulate, steps - start)
        return step == start, step == start + size - 1, size

    def no_sync(self, step_fn, last: bool):
        """Inside: DistributedDataParallel does not reduce gradients (a step that is not the
        last of its group), else nothing."""
        if last or not hasattr(step_fn, "no_sync"):
            return nullcontext()
        return step_fn.no_sync()

    def backward(self, total: torch.Tensor, size: int) -> None:
        """Add the gradients of ``total`` (a step of a group of ``size``)."""
        if size > 1:
            total = total / size
        if self.scaler is not None:
            total = self.scaler.scale(total)
        total.backward()

    def step(self) -> torch.Tensor | None:
        """Update the parameters from the summed gradients: unscale (fp16), clip, step, then
        the EMA. Returns the gradients' total norm before clipping, for the non-finite check
        (None with the fp16 scaler, which skips the steps whose gradients overflowed)."""
        optimizer = self.optimizer
        params = [p for group in optimizer.param_groups for p in group["params"]
                  if p.grad is not None]
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = None
        if self.clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip)
        elif params:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
            norm = None
        else:
            optimizer.step()
        if self.ema is not None:
            self.ema.update(self.stage.model)
        return norm

    # -- the weights that are evaluated --

    @contextmanager
    def evaluated_weights(self):
        """Inside: the stage model holds the weights that are evaluated and kept as the best
        (the EMA's with ``eval.use_ema``)."""
        if not self.use_ema:
            yield
            return
        trained = copy_state(self.stage.model)
        self.stage.model.load_state_dict(self.ema.module.state_dict())
        try:
            yield
        finally:
            self.stage.model.load_state_dict(trained)

    def finish(self) -> None:
        """At the stage's end: the stage model takes the EMA's weights (``eval.use_ema``), so
        the saved model and the next stage have what was evaluated; the trained weights stay in
        :meth:`state_dict`, for a run extended later."""
        if self.use_ema:
            self.trained = copy_state(self.stage.model)
            self.stage.model.load_state_dict(self.ema.module.state_dict())

    # -- checkpoints --

    def state_dict(self) -> dict:
        """The optimiser's, the scaler's, the EMA's and the schedule's state, with the stage's
        name (and the trained weights once the stage has ended with the EMA's)."""
        return {"stage": self.stage.name, "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "schedule": self.schedule.state_dict(), "trained": self.trained}

    def load_state_dict(self, state: dict) -> None:
        if state.get("trained") is not None:  # the stage goes on after it had ended
            self.stage.model.load_state_dict(state["trained"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.schedule.load_state_dict(state.get("schedule"))
