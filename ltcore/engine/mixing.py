"""Mixup and CutMix of the classifier views, made on the training device, and the mixed labels.

A mixed batch pairs each sample ``i`` with a partner ``p(i)`` of the same batch (a permutation)
and draws one weight ``lam ~ Beta(alpha, alpha)`` for the batch, as Zhang et al. (mixup) and Yun
et al. (CutMix) do: mixup makes ``lam * x_i + (1 - lam) * x_p(i)``; CutMix pastes a box of
``x_p(i)`` covering ``1 - lam`` of the image into ``x_i`` (``lam`` is then the area left, after
the box is clipped to the image). Every view that classifies is mixed with the same pairs and
box; a classifier loss term ``L`` then becomes ``lam * L(y) + (1 - lam) * L(y_p)``, which for the
cross-entropy family is the cross-entropy on the mixed targets ``lam * y + (1 - lam) * y_p``.

The draws come from the epoch's seed and the step, never from the global generator, so a run that
stops and resumes mixes the same batches the same way. In a distributed run each rank mixes
within its own share of the batch; partners are given in global-batch positions.
"""

from __future__ import annotations

import math
import random

import attrs
import torch

from ..config import MixConfig
from ..errors import ConfigError
from ..run import LossTerm, Stage, Step

MIX_SEED = 0x6D1C
"""Mixed into each step's seed so the mixing draws differ from every other stream."""


@attrs.define(eq=False)
class Mix:
    """One batch's mixing: ``partner`` positions (global batch), the label weight ``lam`` and,
    for CutMix, the pasted box ``(top, bottom, left, right)``."""

    partner: torch.Tensor
    lam: float
    box: tuple[int, int, int, int] | None = None

    def images(self, images: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``images`` (this rank's share, starting at global position ``offset``) mixed."""
        rows = self.partner[offset:offset + len(images)] - offset
        other = images[rows.to(images.device)]
        if self.box is None:
            return self.lam * images + (1.0 - self.lam) * other
        top, bottom, left, right = self.box
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = other[..., top:bottom, left:right]
        return mixed


def draw(cfg: MixConfig, seed: int, shares: list[int], height: int, width: int) -> Mix | None:
    """The mixing of one batch whose ranks hold ``shares`` samples, or None when it is not
    mixed (``mix.prob``); ``seed`` is the step's."""
    rng = random.Random(seed)
    if rng.random() >= cfg.prob:
        return None
    cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha == 0 or rng.random() < cfg.switch_prob)
    alpha = cfg.cutmix_alpha if cutmix else cfg.mixup_alpha
    lam = rng.betavariate(alpha, alpha)
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    starts = [sum(shares[:r]) for r in range(len(shares))]
    partner = torch.cat([start + torch.randperm(n, generator=generator)
                         for start, n in zip(starts, shares)])
    if not cutmix:
        return Mix(partner, lam)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = rng.randrange(height), rng.randrange(width)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    area = (bottom - top) * (right - left)
    return Mix(partner, 1.0 - area / (height * width), (top, bottom, left, right))


def mix_step(step: Step, seed: int) -> None:
    """Mix the images of the step's classifying views (``mix.*``) and keep the mixing in
    ``step.mix`` for the loss terms."""
    run, stage = step.run, step.stage
    roles = [role for role, view in stage.views.items() if view.classify and view.forward]
    if not roles:
        return
    local = step.images[roles[0]]
    shares = step.shares or [len(local)]
    mix = draw(run.config.mix, seed, shares, local.shape[-2], local.shape[-1])
    if mix is None:
        return
    offset = sum(shares[:run.world.rank]) if step.shares else 0
    for role in roles:
        step.images[role] = mix.images(step.images[role], offset)
    step.mix = mix


def step_seed(epoch_seed: int, iteration: int) -> int:
    """The seed of one step's mixing draws."""
    return (epoch_seed * 1_000_003 + iteration * 7919 + MIX_SEED) % (2 ** 63)


def loss_value(term: LossTerm, step: Step) -> torch.Tensor:
    """``term(step)``; on a mixed step a classifier term is taken at both labels of each
    sample, weighted by ``lam``."""
    mix = step.mix
    if mix is None or term.kind != "classifier":
        return term(step)
    first = term(step)
    labels = step.labels
    partner = mix.partner.to(next(iter(labels.values())).device)
    step.labels = {source: y[partner] for source, y in labels.items()}
    try:
        second = term(step)
    finally:
        step.labels = labels
    return mix.lam * first + (1.0 - mix.lam) * second


def check_mixable(stage: Stage, embedded: list[str] | None = None) -> None:
    """Refuse mixing a stage whose classifying view is also embedded for a contrastive loss
    (mixed images would meet unmixed labels there): a view declared to embed, or, on a mixed
    step, one a plugin made an embedding of (``embedded``)."""
    mixed = [role for role, view in stage.views.items() if view.classify and view.forward]
    shared = [role for role in mixed
              if stage.views[role].embed or role in (embedded or ())]
    if shared:
        users = ", ".join(sorted({t.plugin for t in stage.contrastive_losses})) or "a plugin"
        raise ConfigError(f"mix.mixup_alpha / mix.cutmix_alpha mix the classifier view "
                          f"{shared[0]!r} of stage {stage.name!r}, which {users} also embeds for "
                          f"a contrastive loss: mixed images would meet unmixed labels there; "
                          f"switch mixing off for this combination")
