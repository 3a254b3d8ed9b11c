"""Stopping a run cleanly and continuing it where it stopped.

:class:`StopSignals` turns SIGTERM (what schedulers, ``kill`` and container runtimes send),
SIGINT (Ctrl-C) and SIGHUP (a closed terminal or SSH session) into a request the trainer honours
at the next step boundary: it saves a checkpoint of the epoch in progress (:class:`EpochProgress`)
and stops. A second signal stops at once (in one process; a rank of a distributed run goes on to
the step the ranks agree on); once the stop is being recorded, further signals wait for it, so
the run always ends KILLED. :class:`EpochProgress` holds what continuing an epoch at a given step
needs besides the modules, the optimiser and the plugin objects: the running loss sums and the
random states.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from typing import Any

import attrs
import torch

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                     if hasattr(signal, name))
_NAMES = {sig.name for sig in STOP_SIGNALS}


class StopSignals:
    """While entered (in the main thread), SIGTERM, SIGINT and SIGHUP set :attr:`received`
    instead of interrupting; a second signal raises ``KeyboardInterrupt`` at once, unless the
    stop is already being recorded (:attr:`finishing`), which no signal interrupts, or the
    process is ``patient``: a rank of a distributed run, which must reach the step the ranks
    agree to stop at (a scheduler's SIGTERM and the launcher's passing it on arrive together),
    or :attr:`orphaned`."""

    def __init__(self, patient: bool = False):
        self.received: str | None = None
        self.finishing = False
        """Set while a stop or failure is recorded: signals no longer interrupt."""
        self.patient = patient
        self._parent = os.getppid()
        self._previous: dict[int, Any] = {}

    @property
    def orphaned(self) -> bool:
        """Whether the process that started this one has ended: the signals are then its death
        notices (``PR_SET_PDEATHSIG`` comes once per thread it had), not a user's second Ctrl-C,
        and do not stop at once."""
        return os.getppid() != self._parent

    @property
    def number(self) -> int:
        """The number of the signal this process received; 0 for none (or another rank's)."""
        name = self.received or ""
        return int(getattr(signal, name)) if name in _NAMES else 0

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        elif not (self.finishing or self.patient or self.orphaned):
            self.finishing = True
            raise KeyboardInterrupt


@attrs.define
class EpochProgress:
    """How far an epoch got: the next step, the per-term loss sums and samples seen so far, the
    seconds it has trained, and the random states (torch CPU and CUDA, Python's, and the
    batched views' generator) at that step."""

    step: int
    sums: torch.Tensor
    seen: int
    elapsed: float
    torch_state: torch.Tensor
    cuda_states: list
    python_state: tuple
    views_state: torch.Tensor | None

    @classmethod
    def capture(cls, step: int, sums: torch.Tensor, seen: int, elapsed: float,
                views_state: torch.Tensor | None) -> "EpochProgress":
        return cls(step, sums.detach().cpu(), seen, elapsed, torch.get_rng_state(),
                   torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                   random.getstate(), views_state)

    def restore_random_states(self) -> None:
        torch.set_rng_state(self.torch_state)
        if self.cuda_states:
            torch.cuda.set_rng_state_all(self.cuda_states)
        random.setstate(_as_tuples(self.python_state))

    def state_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> "EpochProgress | None":
        return None if state is None else cls(**state)


def _as_tuples(value):
    """Python's random state with its nested tuples (a checkpoint may give lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
