"""Optimisers and learning-rate schedules by name: ltcore's own first, then timm's.

``optim.name`` names a registered optimiser (``sgd``, ``adamw``: ``register_optimizers``) or
any optimiser of ``timm.optim.create_optimizer_v2``; ``schedule.kind`` names one of ltcore's
schedules (:data:`ltcore.config.SCHEDULES`) or a scheduler of
``timm.scheduler.create_scheduler_v2``. ``timm:NAME`` asks for timm's where the names clash.
Resolving a name imports timm only when the name is timm's; configuration checks and training
resolve names through the same functions.
"""

from __future__ import annotations

from ..config import SCHEDULES
from ..errors import ConfigError, PluginError

TIMM_PREFIX = "timm:"
"""``optim.name`` / ``schedule.kind`` prefix that asks for timm's component of that name even
where ltcore has one of the same name."""

TIMM_SCHEDULES = ("cosine", "tanh", "step", "constant", "multistep", "plateau", "poly", "wsd",
                  "rsqrt")
"""The schedulers ``timm.scheduler.create_scheduler_v2`` makes."""


def timm_schedule(kind: str) -> str | None:
    """The timm scheduler ``schedule.kind`` names (None for ltcore's own)."""
    if kind in SCHEDULES:
        return None
    return kind.removeprefix(TIMM_PREFIX)


def check_schedule(schedule) -> None:
    """Refuse a ``schedule.kind`` that neither ltcore nor timm has, and ltcore's step-schedule
    keys with a timm schedule (which counts its epochs its own way: its keys go in
    ``schedule.options``)."""
    kind = schedule.kind
    if timm_schedule(kind) in TIMM_SCHEDULES and (schedule.milestones or schedule.gamma != 0.1):
        raise ConfigError(f"schedule.milestones and schedule.gamma set ltcore's step schedule; "
                          f"timm's {kind!r} takes its own (decay_milestones, decay_epochs, "
                          f"decay_rate, counted after the warm-up) in schedule.options, e.g. "
                          f"schedule.options = {{decay_milestones = [60, 80], decay_rate = 0.1}}")
    if schedule.per_step and timm_schedule(kind) is not None:
        raise ConfigError(f"schedule.per_step sets ltcore's schedules every step; timm's "
                          f"{kind!r} is set per epoch: use one of {', '.join(SCHEDULES)}")
    if kind not in SCHEDULES and timm_schedule(kind) not in TIMM_SCHEDULES:
        raise ConfigError(f"schedule.kind: unknown schedule {kind!r}; ltcore's: "
                          f"{', '.join(SCHEDULES)}; timm's: "
                          f"{', '.join(s for s in TIMM_SCHEDULES if s not in SCHEDULES)}, "
                          f"{', '.join(TIMM_PREFIX + s for s in TIMM_SCHEDULES if s in SCHEDULES)}")


def optimizer_factory(plugins, name: str):
    """``factory(groups, optim)`` of the optimiser ``name``: the registered one, else timm's
    (``timm:NAME`` always timm's); an unknown name raises naming what there is."""
    if not name.startswith(TIMM_PREFIX) and name in plugins.components["optimizer"]:
        return plugins.component("optimizer", name).obj
    timm_name = name.removeprefix(TIMM_PREFIX)
    if timm_name not in timm_optimizers():
        registered = ", ".join(sorted(plugins.components["optimizer"]))
        raise PluginError(f"unknown optimizer {name!r}; registered optimizers: {registered}; "
                          f"or one of timm's (timm.optim.list_optimizers(), e.g. lamb, lars, "
                          f"lion, adan; timm:NAME where a registered name is the same)")

    def timm_optimizer(groups: list[dict], optim):
        from timm.optim import create_optimizer_v2

        try:
            return create_optimizer_v2(groups, opt=timm_name, lr=optim.lr,
                                       weight_decay=optim.weight_decay, momentum=optim.momentum,
                                       **{"betas": tuple(optim.betas), **optim.options})
        except TypeError as exc:
            raise ConfigError(f"optim.options: timm's {timm_name!r} optimiser refused them: "
                              f"{exc}") from None
    return timm_optimizer


def timm_optimizers() -> set[str]:
    """The names timm's optimiser factory takes (``lookahead_`` forms included)."""
    from timm.optim import list_optimizers

    names = set(list_optimizers())
    return names | {f"lookahead_{n}" for n in names}
