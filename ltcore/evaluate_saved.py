"""Evaluating a saved model (``ltrun evaluate``)."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import flatten, resolve
from .errors import DataError


def evaluate_checkpoint(plugins, path: str, overrides: dict) -> dict[str, float]:
    """Rebuild the run recorded in ``path`` (on ``overrides``' dataset) and evaluate its model."""
    from . import engine

    if not Path(path).is_file():
        raise DataError(f"checkpoint {path!r} does not exist")
    try:
        saved = torch.load(path, weights_only=False, map_location="cpu")
        settings_tree, selected = saved["settings"], saved["plugins"]
    except Exception as exc:
        raise DataError(f"{path!r} is not an ltcore checkpoint: {exc}") from exc
    values = flatten(settings_tree)
    values.update(overrides)
    settings = resolve(plugins, plugins.select(selected), overrides=values)
    run = engine.prepare(plugins, selected, settings)
    saved_classes = saved["modules"]["model.classifier.weight"].shape[0]
    if saved_classes != run.dataset.num_classes:
        raise DataError(f"the model has {saved_classes} classes but dataset "
                        f"{run.dataset.name!r} has {run.dataset.num_classes}")
    run.modules.load_state_dict(saved["modules"])
    model = run.stages[-1].model
    figures, _ = engine.evaluate(run, model, "final")
    return figures
