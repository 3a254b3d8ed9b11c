"""The data of the papers' figures, recorded with a run: ``figures/<name>.json``.

:func:`record_figure` writes a figure's data (a dict of JSON values: lists of floats, ...) into
the run's folder and logs it as the MLflow artifact ``figures/<name>.json`` of the run's parent
run; ``ltrun report`` draws the figures whose data the runs hold (:mod:`ltcore.plots`,
``docs/comparing.md``). The core records ``weight-norms`` at the end of every run whose
classifier has one weight row per class (:func:`record_weight_norms`); plugins record their
own (BCL's ``prototypes``, ICCL's ``centroids``).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

FIGURES = "figures"
"""The folder of the figures' data, in the run's folder and among its MLflow artifacts."""

WEIGHT_NORMS = "weight-norms"
"""The figure of the per-class L2 norms of the classifier's weight rows (``norms``, ``counts``:
training images per class, in class order)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def plain(value: Any) -> Any:
    """``value`` as JSON values: tensors and arrays as (nested) lists, numpy scalars as numbers,
    tuples as lists; a float that is not finite becomes None (JSON has no NaN)."""
    if hasattr(value, "detach"):  # a tensor
        value = value.detach().cpu().tolist()
    elif hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def record_figure(run, name: str, data: Mapping[str, Any]) -> Path | None:
    """Write ``data`` as ``figures/<name>.json`` in the run's folder and log it as the artifact
    ``figures/<name>.json`` of the run's (parent) MLflow run; returns the file's path.

    ``name`` is letters, digits, ``.``, ``_`` and ``-``; recording a name again replaces its
    file. Under torchrun only rank 0 records (the others return None). A run that is not being
    trained (built to evaluate a saved model, or in a test) records nothing and warns.
    """
    from .errors import PluginError
    from .files import write_text

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PluginError(f"figure name {name!r}: use letters, digits, '.', '_' and '-'")
    if not isinstance(data, Mapping):
        raise PluginError(f"figure {name!r}: the data is a dict of JSON values, not "
                          f"{type(data).__name__}")
    try:
        text = json.dumps(plain(data), allow_nan=False)
    except TypeError as exc:
        raise PluginError(f"figure {name!r}: {exc}") from None
    if not run.world.is_main:
        return None
    recorder = run.recorder
    if not recorder.active or recorder.folder is None:
        warnings.warn(f"figure {name!r} is not recorded: the run is not being trained and "
                      "tracked", stacklevel=2)
        return None
    path = Path(recorder.folder) / FIGURES / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text + "\n")
    recorder.artifact(path, FIGURES)
    return path


def classifier_weight(model, num_classes: int):
    """The classifier's weight ``[C, D]`` (one row per class), or None for a classifier without
    one (``model.classifier.weight`` of another shape, or none)."""
    import torch

    weight = getattr(getattr(model, "classifier", None), "weight", None)
    if (isinstance(weight, torch.Tensor) and weight.dim() == 2
            and weight.shape[0] == num_classes):
        return weight
    return None


def weight_norms(model, num_classes: int) -> list[float] | None:
    """The L2 norm of each class's weight row of the model's classifier (None without one)."""
    weight = classifier_weight(model, num_classes)
    if weight is None:
        return None
    return weight.detach().float().norm(dim=1).cpu().tolist()


def record_weight_norms(run) -> Path | None:
    """Record ``weight-norms`` of the last stage's model at the end of a run (after every
    plugin's ``run_end``): ``norms`` (per class) and ``counts`` (training images per class);
    nothing for a classifier without per-class weight rows. A failure is a warning: the trained
    run stands without the figure."""
    if not run.world.is_main or not run.recorder.active:
        return None
    try:
        counts = run.class_counts.tolist()
        norms = weight_norms(run.stages[-1].model, len(counts))
        if norms is None:
            return None
        return record_figure(run, WEIGHT_NORMS, {"norms": norms, "counts": counts})
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"weight norms not recorded: {type(exc).__name__}: {exc}", stacklevel=1)
        return None
