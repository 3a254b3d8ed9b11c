"""One training step: the stacked forward of its views, the run-time hooks and the loss terms
(:func:`forward`), its form for a distributed run (:func:`distributed_step`), and the on-device
record of non-finite losses and gradients (:class:`NonFinite`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import NonFiniteLossError, PluginError
from ..run import LossTerm, Run, Stage, Step
from .mixing import check_mixable, loss_value, mix_step, step_seed

if TYPE_CHECKING:
    from .trainer import Trainer


def forward(run: Run, step: Step) -> list[torch.Tensor]:
    """One stacked forward of the step's views, the run-time hooks, then every loss term."""
    stage = step.stage
    run.hooks.adjust_images(step=step)
    if run.config.mix.active:
        mix_step(step, step_seed(run.epoch_seed(stage, step.epoch), step.iteration))
    roles = [r for r, v in stage.views.items() if v.forward]
    missing = [r for r in roles if r not in step.images]
    if missing:
        raise PluginError(f"stage {stage.name!r}: no plugin produced the images of view(s) "
                          f"{missing}")
    with run.autocast():
        x = run.speed.layout(torch.cat([step.images[r] for r in roles]))
        run.task.forward(run, step, roles, x)
    if step.shares is not None:
        gather_outputs(step)
    run.hooks.adjust_embeddings(step=step)
    if step.mix is not None:
        check_mixable(stage, list(step.embeddings))
    run.hooks.adjust_classifier_logits(step=step)
    return [loss_value(term, step).float() for term in stage.losses]


def gather_outputs(step: Step) -> None:
    """Replace the step's per-sample features, logits and embeddings (this rank's share) by
    the global batch's, in one collective; gradients flow back to this rank's rows."""
    tables = (step.features, step.logits, step.embeddings)
    parts = [(table, role, t) for table in tables for role, t in table.items()]
    flat = torch.cat([t.float().flatten(1) for _, _, t in parts], dim=1)
    gathered = step.gather(flat).split([t[0].numel() for _, _, t in parts], dim=1)
    for (table, role, t), g in zip(parts, gathered):
        table[role] = g.reshape(len(g), *t.shape[1:]).to(t.dtype)


class StepModule(torch.nn.Module):
    """The modules a stage trains, with :func:`forward` as their forward: what
    DistributedDataParallel wraps, so that every parameter a step uses, in the model or in a
    loss term, is seen by its gradient reduction."""

    def __init__(self, run: Run, modules: list[torch.nn.Module]):
        super().__init__()
        self.run = run
        self.trained = torch.nn.ModuleList(modules)

    def forward(self, step: Step) -> list[torch.Tensor]:
        return forward(self.run, step)


def distributed_step(run: Run, stage: Stage, groups: list[dict]):
    """The stage's step for a distributed run: :func:`forward` through DistributedDataParallel
    over the modules holding trained parameters (``forward`` itself in one process)."""
    if not run.world.distributed:
        return lambda step: forward(run, step)
    trained = {id(p) for g in groups for p in g["params"]}
    candidates = [stage.model, *run.modules.values()]
    modules, seen = [], set()
    for module in candidates:
        if id(module) not in seen and any(id(p) in trained for p in module.parameters()):
            modules.append(module)
            seen.add(id(module))
    if not modules:
        return lambda step: forward(run, step)
    return torch.nn.parallel.DistributedDataParallel(
        StepModule(run, modules),
        find_unused_parameters=run.config.distributed.find_unused_parameters)


UNUSED_PARAMETERS = "Expected to have finished reduction in the prior iteration"
"""The start of DistributedDataParallel's error when a trained parameter got no gradient."""


class NonFinite:
    """On-device record of the first step at which each loss term, and the gradients, became
    NaN or infinite; read every ``check_finite_every`` steps (no host synchronisation between)."""

    def __init__(self, stage: Stage, device: torch.device):
        self.stage = stage
        self.first = torch.full((len(stage.losses) + 1,), -1, dtype=torch.long, device=device)

    def update(self, losses: list[torch.Tensor], grad_norm: torch.Tensor | None,
               step: int) -> None:
        """Record the step's loss terms and, after an update, the gradients' norm."""
        norm = grad_norm if grad_norm is not None else torch.zeros((), device=self.first.device)
        values = torch.stack([*(l.detach().float() for l in losses), norm.float()])
        new = ~torch.isfinite(values) & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)

    def check(self, epoch: int, step: int, trainer: "Trainer") -> None:
        """Raise :class:`NonFiniteLossError` naming what went bad first (a loss term, or the
        gradients while the terms were finite)."""
        first = self.first.tolist()
        bad = [(at, slot) for slot, at in enumerate(first) if at >= 0]
        if not bad:
            return
        at, slot = min(bad)
        trainer.settle()
        stage = self.stage
        if slot < len(stage.losses):
            term: LossTerm = stage.losses[slot]
            what = f"loss term {term.name!r} (plugin {term.plugin!r})"
        else:
            what = "the gradients (every loss term finite)"
        raise NonFiniteLossError(
            f"{what} became non-finite in stage {stage.name!r}, epoch {epoch + 1} at step "
            f"{at + 1} (caught after step {step + 1}); the last good checkpoint "
            f"{trainer.saved} is kept. Lower the learning rate or check the plugin's options, "
            f"then continue with {trainer.resume_command()}")
