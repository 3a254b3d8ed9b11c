"""What a run saves: the checkpoint it resumes from and the final model it is evaluated from.

``<output>/<run id>/checkpoint.pt`` holds everything needed to continue (written after every
epoch, atomically); ``model.pt`` the settings, the plugin list, every module of the run and the
state of its plugin objects, which is what ``ltrun evaluate`` and a reused GML teacher read,
and the record that makes the final model usable on its own (``ltcore.load_model``).
"""

from __future__ import annotations

import io
import mmap
import os
import pickletools
import re
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import DataError, is_out_of_memory
from ..files import temporary, write_bytes
from ..run import Run

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint-previous.pt"
"""The checkpoint before the latest (a hard link to the file the latest replaced)."""
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


def write(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Save ``state`` to ``path`` atomically and durably (serialised in memory, written to a
    temporary file and synced, then renamed): a kill leaves the previous file, and a full disk
    is reported as such (torch's own file writer hides the cause). With ``keep_previous``
    the file it replaces stays as :data:`PREVIOUS`."""
    data = serialise(state)
    if keep_previous:
        link_previous(path)
    write_bytes(path, data)


def link_previous(path: Path) -> None:
    """Keep the current ``path`` as :data:`PREVIOUS` beside it before it is replaced: a hard
    link, so nothing is copied (where the file system has none, only the latest is kept)."""
    if not path.is_file():
        return
    previous = path.with_name(PREVIOUS)
    tmp = temporary(previous)
    try:
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, previous)
    except OSError:
        tmp.unlink(missing_ok=True)


def serialise(state: dict[str, Any]) -> bytes:
    """``state`` as the bytes of a ``torch.save`` file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class BackgroundWriter:
    """Writes checkpoint files as :func:`write` does (keeping the previous one), one at a time, in a thread: ``submit``
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
                link_previous(path)
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
    """``torch.load`` of tensors and plain values only (``weights_only``), nothing in the file
    run: a file that is empty, truncated, not a PyTorch file, or whose pickle needs code to load
    raises a :class:`DataError` naming it and saying which."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{str(path)!r} is empty (0 bytes): there is nothing to load; copy the "
                        "file again from where it was saved")
    try:
        with warnings.catch_warnings():  # torch's remark on a pickle protocol it may not read
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise DataError(f"{str(path)!r} {unreadable(path, exc)}") from None


def unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed on ``path`` with ``exc``, as the end of a
    sentence that starts with the file's name."""
    with open(path, "rb") as file:
        head = file.read(16)
    text = str(exc)
    if head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
        return ("is truncated: a PyTorch zip archive whose end is missing (cut short, e.g. by an "
                "interrupted copy or download); copy the file again from where it was saved")
    if any(refusal in text for refusal in REFUSALS):
        named = re.search(r"GLOBAL (\S+)", text)
        needs = f"it imports {named.group(1)}" if named else "it builds an object"
    else:
        imports = pickle_imports(path)
        needs = f"it imports {', '.join(sorted(set(imports))[:5])}" if imports else None
    if needs:
        return (f"is refused: loading it would run code it carries ({needs}, which is neither a "
                "tensor nor a plain value); nothing in it was run. ltcore's checkpoints and "
                "models hold tensors and plain values only")
    if head.startswith(ZIP_MAGIC):
        reason = " ".join(re.sub(r"^\[enforce fail at [^]]*\][ .]*", "", text).split())
        return f"is a zip archive but not a PyTorch file ({reason[:200]})"
    return (f"is not a PyTorch file: neither a torch.save archive nor a pickle (it starts with "
            f"{head!r})")


ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of a zip archive, which ``torch.save`` writes."""

REFUSALS = ("allowlist", "is blocked")
"""What torch's weights-only unpickler says when it refuses an object that needs code to load
(a global it was not told to trust); its other errors are about malformed bytes."""


def pickle_imports(path: Path) -> list[str] | None:
    """The names the pickle in ``path`` imports to load, read from its opcodes without loading
    it; None when the file is not one complete pickle."""
    names: list[str] = []
    recent: list[str | None] = [None, None]  # the strings the last two opcodes pushed
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0,
                                                  access=mmap.ACCESS_READ) as data:
            for opcode, arg, _ in pickletools.genops(data):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(arg.replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL":
                    names.append(".".join(recent) if None not in recent else "an object")
                if "PUT" not in opcode.name and opcode.name != "MEMOIZE":
                    recent = [recent[1], arg if isinstance(arg, str) else None]
    except Exception:  # noqa: BLE001 - any malformed byte ends the pickle: not one
        return None
    return names


LTCORE_KEYS = ("settings", "plugins", "modules")
"""What every checkpoint and model file of a run holds."""


def read(path: str | Path) -> dict[str, Any]:
    """A saved ``checkpoint.pt`` or ``model.pt``, loaded safely; a :class:`DataError` names a
    file that is missing, unreadable, unsafe or not ltcore's."""
    if not Path(path).is_file():
        raise DataError(f"checkpoint {str(path)!r} does not exist")
    saved = load_safely(path)
    if not (isinstance(saved, dict) and all(key in saved for key in LTCORE_KEYS)):
        raise DataError(f"{str(path)!r} is not an ltcore checkpoint: it holds "
                        f"{describe(saved)}, where a run's checkpoint.pt or model.pt holds a dict "
                        f"with {', '.join(map(repr, LTCORE_KEYS))}")
    return saved


def describe(value: Any) -> str:
    """What a loaded file holds, in a few words."""
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        keys = ", ".join(repr(key) for key in list(value)[:5])
        more = f" and {len(value) - 5} more" if len(value) > 5 else ""
        return f"a dict with keys {keys}{more}" if value else "an empty dict"
    return f"a {type(value).__name__}"
