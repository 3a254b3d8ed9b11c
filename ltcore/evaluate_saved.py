"""Evaluating a saved model (``ltrun evaluate``): the run's figures, and shifted test sets.

The run recorded in a ``model.pt`` or ``checkpoint.pt`` is rebuilt from its saved settings and
plugins (so plugin state such as LWS scales is restored), optionally on another dataset and with
changed settings (``--set eval.posthoc_la_tau=1``, ``--set 'eval.metrics=["ece"]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .config import flatten, parse_assignment, resolve
from .errors import DataError


def load_saved_run(plugins, path: str, overrides: dict | None = None,
                   assignments: Sequence[str] = ()):
    """The run saved in ``path`` with its trained modules loaded, and the model to evaluate
    (the last stage's). ``assignments`` (``KEY=VALUE``) and then ``overrides`` change the saved
    settings."""
    from . import engine

    if not Path(path).is_file():
        raise DataError(f"checkpoint {path!r} does not exist")
    try:
        saved = torch.load(path, weights_only=False, map_location="cpu")
        settings_tree, selected = saved["settings"], saved["plugins"]
    except Exception as exc:
        raise DataError(f"{path!r} is not an ltcore checkpoint: {exc}") from exc
    values = flatten(settings_tree)
    values.update(dict(parse_assignment(a) for a in assignments))
    values.update(overrides or {})
    settings = resolve(plugins, plugins.select(selected), overrides=values)
    run = engine.prepare(plugins, selected, settings)
    saved_classes = saved["modules"]["model.classifier.weight"].shape[0]
    if saved_classes != run.dataset.num_classes:
        raise DataError(f"the model has {saved_classes} classes but dataset "
                        f"{run.dataset.name!r} has {run.dataset.num_classes}")
    run.modules.load_state_dict(saved["modules"])
    return run, run.stages[-1].model


def evaluate_checkpoint(plugins, path: str, overrides: dict | None = None,
                        assignments: Sequence[str] = ()) -> dict[str, float]:
    """Rebuild the run recorded in ``path`` and evaluate its model on every evaluation split."""
    from . import engine

    run, model = load_saved_run(plugins, path, overrides, assignments)
    figures, _ = engine.evaluate(run, model, "final")
    return figures


def evaluate_checkpoint_shifted(plugins, path: str, overrides: dict | None = None,
                                assignments: Sequence[str] = (), ratios=None, seed: int = 0,
                                draws: int = 1) -> dict:
    """Figures of the saved model on long-tailed resamplings of the balanced test split."""
    from .shift import DEFAULT_RATIOS, evaluate_shifted

    run, model = load_saved_run(plugins, path, overrides, assignments)
    result = evaluate_shifted(run, model, ratios or DEFAULT_RATIOS, seed, draws)
    result["checkpoint"] = str(path)
    return result
