"""Start-up phase marks: ``LTCORE_STARTUP_TRACE=FILE`` makes ``ltrun`` append one line per phase
reached, ``PHASE TIME`` (``time.time()``), to FILE; ``benchmarks/startup.py`` reads them. Without
the variable :func:`mark` does nothing."""

from __future__ import annotations

import os
import time

TRACE_ENV = "LTCORE_STARTUP_TRACE"

_reached: set[str] = set()


def mark(phase: str) -> None:
    """Record the first time this process reaches ``phase`` (a no-op without the variable)."""
    path = os.environ.get(TRACE_ENV)
    if not path or phase in _reached:
        return
    _reached.add(phase)
    with open(path, "a", encoding="utf-8") as trace:
        trace.write(f"{phase} {time.time():.6f}\n")
