"""Files that are whole or absent: every file a run writes goes through :func:`atomic_write`.

The content is written to a temporary file beside the target (``.<name>.tmp``) and renamed over
it, so a kill at any moment leaves either the previous file or the new one, never a truncated
one; :func:`remove_stale` deletes the temporary files a killed process left. A full disk or a
quota raises :class:`~ltcore.errors.StorageError` with the path, and the previous file stays.
"""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import StorageError

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
