"""The building blocks of configuration sections: documented fields and the validators whose
messages name the option (:mod:`ltcore.config` holds the sections)."""

from __future__ import annotations

import math

from attrs import field

from .files import EXPERIMENT_RULE, experiment_problem


def doc(text: str, **kwargs):
    """An attrs field with documentation shown by ``ltrun plugins --options``."""
    return field(metadata={"doc": text}, **kwargs)


def interval(low: float, high: float, *, include_low: bool = True, include_high: bool = True):
    """An attrs validator: the value lies between ``low`` and ``high`` (``[0, 1)``:
    ``interval(0, 1, include_high=False)``); the message names the option and the interval."""
    def shown(x):
        return f"{x:g}" if isinstance(x, float) else str(x)
    text = f"{'[' if include_low else '('}{shown(low)}, {shown(high)}{']' if include_high else ')'}"

    def check(instance, attribute, value):
        above = value >= low if include_low else value > low
        below = value <= high if include_high else value < high
        if not (above and below):
            raise ValueError(f"'{attribute.name}' must be in {text}, got {value!r}")
    return check


def positive(instance, attribute, value):
    if value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value!r}")


def non_negative(instance, attribute, value):
    if value < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0, got {value!r}")


def experiment_name(instance, attribute, value):
    """An MLflow experiment's name (``tracking.experiment``): not empty, no control character."""
    problem = experiment_problem(value)
    if problem:
        raise ValueError(f"'{attribute.name}' {problem} ({EXPERIMENT_RULE}), got {value!r}")


def moment_decays(instance, attribute, value):
    if len(value) != 2 or not all(0 <= b < 1 for b in value):
        raise ValueError(f"'{attribute.name}' must be two numbers in [0, 1), got {value!r}")


def keyword_options(instance, attribute, value):
    if not isinstance(value, dict):
        raise ValueError(f"'{attribute.name}' must be a table of keyword options "
                         f"({{name = value, ...}}), got {value!r}")


def fraction_or_off(instance, attribute, value):
    if value != 0 and not 0 < value < 1:
        raise ValueError(f"'{attribute.name}' must be in (0, 1) (0 switches it off), got {value!r}")


def per_channel(strictly_positive: bool):
    """A validator of per-channel values (``views.mean``, ``views.std``): none (the default's),
    or up to four finite numbers, at least 0 (above it with ``strictly_positive``)."""
    bound = "> 0" if strictly_positive else ">= 0"

    def check(instance, attribute, value):
        fits = all(math.isfinite(x) and (x > 0 if strictly_positive else x >= 0) for x in value)
        if len(value) > 4 or not fits:
            raise ValueError(f"'{attribute.name}' must be one finite number {bound} per image "
                             f"channel (or [] for the default), got {list(value)!r}")
    return check


def needs_pretrained(instance, attribute, value):
    """``model.freeze`` keeps weights fixed, so they must come from somewhere."""
    if value != "none" and instance.pretrained == "none":
        raise ValueError(f"'{attribute.name}' = {value} would keep a randomly initialised "
                         "backbone fixed: set model.pretrained (hub, a weights file or an "
                         "earlier run) or model.freeze = none")


PROMPT_SETS = ("imagenet", "simple")
"""Named prompt-template sets of ``clip.templates`` (:mod:`ltcore.clip` holds them)."""


def prompt_templates(instance, attribute, value):
    for template in value:
        if template not in PROMPT_SETS and "{}" not in template:
            raise ValueError(f"'{attribute.name}' takes {' or '.join(PROMPT_SETS)} or templates "
                             f"with {{}} where the class name goes, got {template!r}")
