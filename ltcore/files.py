"""Files that are whole or absent: every file a run writes goes through :func:`atomic_write`.

The content is written to a temporary file beside the target (``.<name>.tmp``) and renamed over
it, so a kill at any moment leaves either the previous file or the new one, never a truncated
one; :func:`remove_stale` deletes the temporary files a killed process left. A full disk or a
quota raises :class:`~ltcore.errors.StorageError` with the path, and the previous file stays.

Names that become files or folders (sweep ids) are checked by :func:`name_problem` where
they enter, run names are made safe by :func:`file_name`, experiment names may not hold control
characters (:func:`experiment_problem`), and :func:`inside` keeps the paths made of them in their
folder.
"""

from __future__ import annotations

import csv
import errno
import os
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, StorageError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` then rename ``tmp`` to ``path``; the previous ``path`` is kept if it fails."""
    path = Path(path)
    tmp = temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            what = ("no space left on the device" if exc.errno in FULL
                    else exc.strerror or type(exc).__name__)
            raise StorageError(f"could not write {str(path)!r}: {what}") from exc
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path``, flushed to the disk before the rename (a crash keeps old or new)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return atomic_write(path, write)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    return atomic_write(path, write)


def save_figure(fig, path: str | Path, **options) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format follows ``path``'s suffix)."""
    suffix = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, **options))


def remove_stale(folder: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted writes below ``folder``; return them."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file() or p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


NAME_RULE = ("a name is not empty, has no '/', '\\' or control character and does not start "
             "with '.'")
"""What :func:`name_problem` asks of a name, in words."""


def _control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name one file or folder inside another (None when it can)."""
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if any(_control(c) for c in name):
        return "holds a control character"
    if name.startswith("."):
        return "starts with '.'"
    return None


EXPERIMENT_RULE = "an experiment name is not empty and has no control character"
"""What :func:`experiment_problem` asks: MLflow experiment names are no file names (they may
hold '/', as Databricks' ``/Users/...`` do); where one names a folder it is made a slug."""


def experiment_problem(name: str) -> str | None:
    """Why ``name`` cannot be an MLflow experiment's name (None when it can)."""
    if not name.strip():
        return "is empty"
    if any(_control(c) for c in name):
        return "holds a control character"
    return None


def check_name(name: str, option: str) -> str:
    """``name``, or a ConfigError naming ``option``, the name and what is wrong with it."""
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"{option} {name!r} is refused: it {problem} ({NAME_RULE})")
    return name


def file_name(text: str) -> str:
    """``text`` with its path separators and control characters replaced by ``-``."""
    return "".join("-" if c in "/\\" or _control(c) else c for c in text)


def inside(path: str | Path, folder: str | Path) -> Path:
    """``path``, checked to resolve to a place inside ``folder``; ConfigError otherwise."""
    path = Path(path)
    if not path.resolve().is_relative_to(Path(folder).resolve()):
        raise ConfigError(f"{str(path)!r} would be written outside {str(folder)!r}")
    return path
