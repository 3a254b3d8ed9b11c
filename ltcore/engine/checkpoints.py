"""What a run saves: the checkpoint it resumes from and the final model it is evaluated from.

``<output>/<run id>/checkpoint.pt`` holds everything needed to continue (written after every
epoch, atomically); ``model.pt`` the settings, the plugin list, every module of the run and the
state of its plugin objects, which is what ``ltrun evaluate`` and a reused GML teacher read.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import DataError
from ..files import write_bytes
from ..run import Run

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
BEST_MODEL = "model_best.pt"
"""The run with its last evaluated stage's model at the stage's best epoch on validation."""


def run_state(run: Run) -> dict[str, Any]:
    """The settings, plugins, modules and plugin-object state of ``run`` (the final model)."""
    return {"ltcore_version": __version__, "settings": run.settings.to_dict(),
            "plugins": run.selected, "modules": run.modules.state_dict(),
            "plugin_objects": run.run_plugins.state_dict()}


def restore_run_state(run: Run, saved: dict[str, Any]) -> None:
    """Load what :func:`run_state` saved into a run rebuilt from the same settings."""
    run.modules.load_state_dict(saved["modules"])
    run.run_plugins.load_state_dict(saved.get("plugin_objects", {}))


def write(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` to ``path`` atomically and durably (serialised in memory, written to a
    temporary file and synced, then renamed): a kill leaves the previous file, and a full disk
    is reported as such (torch's own file writer hides the cause)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_safely(path: str | Path) -> Any:
    """``torch.load`` of tensors and plain values only (``weights_only``): a file whose pickle
    needs code to load is refused with a :class:`DataError` naming it, and nothing in it runs."""
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        detail = " ".join(str(exc).split("\n\n")[0].split())[:300]
        raise DataError(f"{str(path)!r} is refused: loading it would run code it carries (an "
                        f"object beyond tensors and plain values: {detail}); nothing in it was "
                        "run. ltcore's checkpoints and models hold tensors and plain values "
                        "only") from None


def read(path: str | Path) -> dict[str, Any]:
    """A saved ``checkpoint.pt`` or ``model.pt``, loaded safely; a :class:`DataError` names a
    file that is missing, unsafe or not ltcore's."""
    if not Path(path).is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist")
    try:
        saved = load_safely(path)
        saved["settings"], saved["plugins"], saved["modules"]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{str(path)!r} is not an ltcore checkpoint: "
                        f"{' '.join(str(exc).split())[:300]}") from exc
    return saved
