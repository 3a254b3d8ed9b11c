"""What a run saves: the checkpoint it resumes from and the final model it is evaluated from.

``<output>/<run id>/checkpoint.pt`` holds everything needed to continue (written after every
epoch, atomically); ``model.pt`` the settings, the plugin list, every module of the run and the
state of its plugin objects, which is what ``ltrun evaluate`` and a reused GML teacher read,
and the record that makes the final model usable on its own (``ltcore.load_model``).
"""

from __future__ import annotations

import io
import threading
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
    """The settings, plugins, modules and plugin-object state of ``run`` (the final model),
    with where each plugin loaded from a module came from (``plugin_sources``)."""
    return {"ltcore_version": __version__, "settings": run.settings.to_dict(),
            "plugins": run.selected, "modules": run.modules.state_dict(),
            "plugin_objects": run.run_plugins.state_dict(),
            "plugin_sources": {name: source.to_dict()
                               for name, source in run.plugins.sources.items()}}


def model_state(run: Run) -> dict[str, Any]:
    """:func:`run_state` with the record that makes the run's final model usable on its own
    (``standalone``: classes, preprocessing, architecture; :mod:`ltcore.standalone`): what
    ``model.pt`` and ``model_best.pt`` hold."""
    from ..standalone import STANDALONE, standalone_record

    return {**run_state(run), STANDALONE: standalone_record(run, run.stages[-1].model)}


def restore_run_state(run: Run, saved: dict[str, Any]) -> None:
    """Load what :func:`run_state` saved into a run rebuilt from the same settings."""
    run.modules.load_state_dict(saved["modules"])
    run.run_plugins.load_state_dict(saved.get("plugin_objects", {}))


def write(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` to ``path`` atomically and durably (serialised in memory, written to a
    temporary file and synced, then renamed): a kill leaves the previous file, and a full disk
    is reported as such (torch's own file writer hides the cause)."""
    write_bytes(path, serialise(state))


def serialise(state: dict[str, Any]) -> bytes:
    """``state`` as the bytes of a ``torch.save`` file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class BackgroundWriter:
    """Writes checkpoint files as :func:`write` does, one at a time, in a thread: ``submit``
    serialises the state (so later changes to it do not reach the file) and returns while the
    file is written and synced; ``wait`` blocks until the last file is on disk."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._label: str | None = None
        self._error: BaseException | None = None

    def submit(self, path: Path, state: dict[str, Any], label: str) -> str | None:
        """Start writing ``state`` to ``path`` after the previous write; returns that one's
        ``label`` (see :meth:`wait`)."""
        previous = self.wait()
        data = serialise(state)

        def work():
            try:
                write_bytes(path, data)
            except BaseException as exc:  # raised by the next wait, in the training thread
                self._error = exc

        self._label = label
        self._thread = threading.Thread(target=work, name="ltcore-checkpoint-writer")
        self._thread.start()
        return previous

    def wait(self) -> str | None:
        """Block until the file being written is on disk: its ``label``, or None when nothing
        was being written; the write's error (a full disk) is raised here."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread, label = None, self._label
        error, self._error = self._error, None
        if error is not None:
            raise error
        return label


def copy_state(module: torch.nn.Module, device: str | None = None) -> dict:
    """A copy of ``module``'s state dict (tensors detached, on ``device`` when given; extra
    states deep-copied)."""
    import copy

    return {k: (v.detach().to(device) if device else v.detach()).clone() if torch.is_tensor(v)
            else copy.deepcopy(v) for k, v in module.state_dict().items()}


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
