"""What a run prints: its plan before training and one line per epoch.

The plan names the run and how its data was made (images an imposed long tail dropped,
evaluation splits split off the training images), where it is tracked, the device and precision,
then each stage with its epochs (and the setting that changes them), steps per epoch, sampler,
learning rate, loss terms with their weights and views, and the shot groups with their classes.
Stages so short that they cannot learn much get a warning there. Each epoch then prints one
persistent line: stage, epoch/total, loss, validation accuracy with many/medium/few (``-`` for
an empty group), epoch time and the time left for the whole run.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ..metrics import SHOT_GROUP_NAMES
from .backends import batch_rows
from .schedule import describe_groups, stage_groups

if TYPE_CHECKING:
    from ..run import Run, Stage

FEW_STEPS_PER_EPOCH = 10
"""Fewer optimiser steps per epoch than this get a warning in the plan."""

FEW_STEPS_PER_STAGE = 100
"""Fewer optimiser steps in a whole training stage than this get a warning in the plan."""


def steps_per_epoch(run: Run, stage: Stage) -> int:
    """Optimiser steps in one epoch of ``stage``: its sampler's draws in batches."""
    import torch

    try:
        draws = len(run.build("sampler", stage.sampler, **stage.sampler_options))
    except Exception:  # no length, or not buildable yet: the stage's start reports the latter
        draws = len(run.dataset.train)
    if run.config.limit.steps:  # a capped try-out run
        draws = min(draws, run.config.limit.steps * run.config.batch_size)
    return len(batch_rows(torch.arange(draws), run.config.batch_size))


def option_name(stage: Stage) -> str:
    """How a user sets the stage's epochs: ``--epochs`` for the main stage, else its key."""
    return "--epochs" if stage.epochs_setting == "epochs" else stage.epochs_setting


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 10 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Console:
    """The lines of a run's plan and of its epochs; estimates the time left from the seconds
    per step so far."""

    def __init__(self, run: Run):
        self.run = run
        self.steps = {stage.name: steps_per_epoch(run, stage) for stage in run.stages}
        self.started = time.perf_counter()
        self.steps_done = 0

    def plan(self, run_dir, tracking: str) -> list[str]:
        """The lines printed before training (warnings start with ``warning:``)."""
        run, cfg = self.run, self.run.config
        total_epochs = sum(stage.epochs for stage in run.stages)
        world = run.world
        ranks = (f"{world.size} ranks ({world.backend}, {cfg.batch_size // world.size} images "
                 f"per rank), " if world.distributed else "")
        lines = [f"{run.run_name}: {'+'.join(run.selected)} on {run.dataset.name} "
                 f"({len(run.dataset.train)} training images, {run.dataset.num_classes} "
                 f"classes), seed {cfg.seed}",
                 *(f"data: {note}" for note in run.dataset.notes),
                 f"tracked in {tracking}, experiment {cfg.tracking.experiment!r}; files in "
                 f"{run_dir}",
                 f"device {run.device}, {ranks}compute "
                 f"{str(run.compute_dtype).removeprefix('torch.')}"
                 f"{' with a gradient scaler' if cfg.precision == 'fp16' else ''}, "
                 f"batch {cfg.batch_size}, model {backbone_words(cfg.model)} + "
                 f"{cfg.model.classifier} classifier; fast path: {run.speed.describe()}",
                 *(f"model: {note}" for note in run.model_notes),
                 *training_options(run),
                 f"plan: {plural(len(run.stages), 'stage')}, "
                 f"{plural(total_epochs, 'epoch')} in all"]
        warnings = [f"warning: {warning}" for warning in run.dataset.warnings]
        accumulate = cfg.optim.accumulate
        for number, stage in enumerate(run.stages, 1):
            batches = self.steps[stage.name]
            steps = -(-batches // accumulate)
            setting = f", set by {option_name(stage)}" if stage.epochs_setting else ""
            per_epoch = (f"{batches} batches ({steps} updates) per epoch" if accumulate > 1
                         else f"{steps} steps per epoch")
            lines.append(f"  {number}. {stage.name} ({stage.plugin}): "
                         f"{plural(stage.epochs, 'epoch')}{setting}; {per_epoch}, "
                         f"sampler {stage.sampler}, {stage.optim.name} lr {stage.optim.lr:g} "
                         f"{stage.schedule.kind}, trains "
                         f"{'the classifier only' if stage.trainable == 'classifier' else 'all'}")
            groups = describe_groups(stage_groups(stage), stage.optim.lr)
            if groups:
                lines.append(f"     parameter groups: {groups}")
            lines.append("     losses: " + ", ".join(f"{term.weight:g} x {term.name}"
                                                     for term in stage.losses))
            lines.append("     views: " + ", ".join(
                f"{role} = {view.pipeline or 'made by a plugin (adjust_images)'}"
                for role, view in stage.views.items()))
            if stage.epochs and (steps < FEW_STEPS_PER_EPOCH
                                 or steps * stage.epochs < FEW_STEPS_PER_STAGE):
                warnings.append(
                    f"warning: stage {stage.name!r} makes {steps} optimiser steps per epoch "
                    f"({len(run.dataset.train)} images, batch {cfg.batch_size}"
                    f"{f' x {accumulate} accumulated' if accumulate > 1 else ''}) and "
                    f"{steps * stage.epochs} in all: too few to learn much; lower --batch-size "
                    f"or raise {option_name(stage) or 'its epochs'}")
        lines += run.task.plan_lines(run)
        if cfg.precision == "fp16" and run.device.type == "cpu":
            warnings.append("warning: precision fp16 on the CPU is tens of times slower than fp32 "
                            "(torch has few float16 CPU kernels); it is meant for GPUs without "
                            "bfloat16")
        return lines + warnings

    def epoch(self, stage: Stage, epoch: int, metrics: dict[str, float]) -> str:
        """The line of a finished epoch, with the time left."""
        self.steps_done += self.steps[stage.name]
        elapsed = time.perf_counter() - self.started
        index = self.run.stages.index(stage)
        left = (stage.epochs - epoch - 1) * self.steps[stage.name] + sum(
            s.epochs * self.steps[s.name] for s in self.run.stages[index + 1:])
        per_step = elapsed / max(self.steps_done, 1)
        width = len(str(stage.epochs))
        parts = [f"{stage.name} {epoch + 1:>{width}}/{stage.epochs}",
                 f"loss {metrics['train/loss']:.4f}"]
        parts += self.run.task.epoch_figures(metrics)
        parts.append(f"{metrics['train/epoch_time']:.1f} s")
        parts.append(f"left {duration(left * per_step)}" if left else "done")
        return "  ".join(parts)


def backbone_words(model) -> str:
    """The backbone as the plan names it: its specification, options and frozen part."""
    words = model.backbone
    options = [f"{k} = {v}" for k, v in model.backbone_options.items() if k != "config"]
    if options:
        words += f" ({', '.join(options)})"
    if model.freeze != "none":
        words += f", {model.freeze} frozen"
    return words


def training_options(run: Run) -> list[str]:
    """The plan's line of the training options that are set (none: no line)."""
    cfg = run.config
    parts = []
    if cfg.optim.accumulate > 1:
        parts.append(f"gradients of {cfg.optim.accumulate} batches per update (effective batch "
                     f"{cfg.batch_size * cfg.optim.accumulate})")
    if cfg.optim.clip_grad_norm:
        parts.append(f"gradient norm clipped at {cfg.optim.clip_grad_norm:g}")
    if cfg.loss.label_smoothing:
        parts.append(f"label smoothing {cfg.loss.label_smoothing:g}")
    mix = cfg.mix
    if mix.active:
        kinds = [f"{name} alpha {alpha:g}" for name, alpha in
                 (("mixup", mix.mixup_alpha), ("CutMix", mix.cutmix_alpha)) if alpha]
        switch = f", CutMix for {mix.switch_prob:.0%} of them" if len(kinds) == 2 else ""
        parts.append(f"{' and '.join(kinds)} on {mix.prob:.0%} of the batches{switch}")
    if cfg.ema.decay:
        parts.append(f"weights EMA {cfg.ema.decay:g}"
                     + (" (evaluated and saved)" if cfg.eval.use_ema else " (kept, not evaluated)"))
    monitor = cfg.checkpoint
    if monitor.monitor != "val/acc" or monitor.mode != "auto" or cfg.early_stop.patience:
        parts.append(f"best epoch by {monitor.monitor} ({'max' if monitor.maximise else 'min'})")
    if cfg.early_stop.patience:
        parts.append(f"a stage stops after {plural(cfg.early_stop.patience, 'epoch')} without "
                     "a better one")
    return [f"training: {'; '.join(parts)}"] if parts else []


def final_lines(metrics: dict[str, float]) -> list[str]:
    """The final figures, a line per split: the last epoch's, then the best epoch's on
    validation (``best/...``) when that was another epoch."""
    best = {k.removeprefix("best/"): v for k, v in metrics.items() if k.startswith("best/")}
    last = {k: v for k, v in metrics.items() if not k.startswith("best/")}
    lines = split_lines(last, "")
    epoch = best.pop("epoch", None)
    if best and any(last.get(k) != v for k, v in best.items()):
        lines.append(f"best epoch on validation: {epoch:.0f}")
        lines += split_lines(best, "best ")
    return lines


def split_lines(metrics: dict[str, float], prefix: str) -> list[str]:
    """A line per split; a split with accuracy figures shows every shot group after ``acc``,
    ``-`` for an empty one."""
    splits: dict[str, dict[str, float | None]] = {}
    for key, value in metrics.items():
        split, _, name = key.partition("/")
        splits.setdefault(split, {})[name] = value
    lines = []
    for split, values in splits.items():
        if "acc" in values:
            groups = {group: values.pop(group, None) for group in SHOT_GROUP_NAMES}
            values = {"acc": values.pop("acc"), **groups, **values}
        lines.append(f"{prefix + split:>10}: " + "  ".join(f"{k} {figure(v, 2)}"
                                                            for k, v in values.items()))
    return lines


def figure(value: float | None, decimals: int) -> str:
    """A figure with ``decimals`` decimals, or ``-`` where there is none (an empty shot group)."""
    return "-" if value is None or math.isnan(value) else f"{value:.{decimals}f}"
