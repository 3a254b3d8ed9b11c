"""What a run saves: the checkpoint it resumes from and the final model it is evaluated from.

``<output>/<run id>/checkpoint.pt`` holds everything needed to continue (written after every
epoch, atomically); ``model.pt`` the settings, the plugin list, every module of the run and the
state of its plugin objects, which is what ``ltrun evaluate`` and a reused GML teacher read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import DataError
from ..run import Run

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


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
    """Save ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read(path: str | Path) -> dict[str, Any]:
    """A saved ``checkpoint.pt`` or ``model.pt``; raise a :class:`DataError` naming the file."""
    if not Path(path).is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist")
    try:
        saved = torch.load(path, weights_only=False, map_location="cpu")
        saved["settings"], saved["plugins"], saved["modules"]
    except Exception as exc:
        raise DataError(f"{str(path)!r} is not an ltcore checkpoint: {exc}") from exc
    return saved
