"""``ltrun`` as real processes: started, signalled, killed and resumed, in one folder and store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltcore.testing import run_numbers

LTRUN = [sys.executable, "-c", "from ltcore.cli import main; main()"]
LIMIT_S = 300
"""The longest any one ``ltrun`` process of these tests may take."""


class Ltrun:
    """``ltrun`` subprocesses working in ``folder`` with the store ``folder/mlflow.db``."""

    def __init__(self, folder: Path, logs: Path | None = None):
        self.folder = folder
        self.logs = logs or folder
        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true",
                        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.count = 0

    def start(self, *args: str) -> "Process":
        """Start ``ltrun args`` (with ``FAST`` for training), output into log files."""
        self.count += 1
        return Process(self, list(args), self.logs / f"ltrun-{self.count}")

    def __call__(self, *args: str) -> "Process":
        """Run ``ltrun args`` to its end."""
        process = self.start(*args)
        process.wait()
        return process

    def numbers(self, run_id: str) -> dict:
        from mlflow.tracking import MlflowClient

        return run_numbers(MlflowClient(tracking_uri=self.uri), run_id)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


class Process:
    """One ``ltrun`` process: its exit code, standard output and error."""

    def __init__(self, ltrun: Ltrun, args: list[str], log: Path):
        self.args = args
        self.out_path, self.err_path = log.with_suffix(".out"), log.with_suffix(".err")
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen([*LTRUN, *args], cwd=ltrun.folder, env=ltrun.env,
                                     stdout=self._out, stderr=self._err)
        self.started = time.monotonic()

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self) -> int:
        try:
            self.proc.wait(timeout=LIMIT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.close()
            self._err.close()
        return self.proc.returncode

    @property
    def code(self) -> int:
        return self.proc.returncode

    def run_id(self, wait: bool = True) -> str | None:
        """The id the process printed before training (waiting for it to appear)."""
        while True:
            found = re.search(r"run (\S+) (started|resumed)", self.out)
            if found or not wait:
                return found.group(1) if found else None
            if self.proc.poll() is not None or time.monotonic() - self.started > LIMIT_S:
                raise AssertionError(f"no run id printed:\n{self.out}\n{self.err}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_when(self, exists: Path, limit_s: float = 60) -> bool:
        """SIGKILL the process the moment ``exists`` appears (a file being written); False
        when the process ended first."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if exists.exists() or exists.is_symlink():
                self.proc.send_signal(signal.SIGKILL)
                return True
            if self.proc.poll() is not None:
                return False
        raise AssertionError(f"{exists} never appeared within {limit_s} s")


@pytest.fixture
def ltrun_process(tmp_path) -> Ltrun:
    """``ltrun`` as real processes in a fresh folder with no MLflow store yet."""
    folder = tmp_path / "work"
    folder.mkdir()
    return Ltrun(folder)


@pytest.fixture
def ltrun_in():
    """``ltrun_in(folder, logs=None)``: ``ltrun`` processes working in another folder."""
    return Ltrun
