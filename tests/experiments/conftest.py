"""Fixtures of the experiment-management tests: a real ``mlflow server`` on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SERVER_START_LIMIT_S = 90
"""The longest a test waits for ``mlflow server`` to answer (it usually takes 5-20 s)."""

TINY = ["--epochs", "1", "--imbalance-factor", "100", "--set", "optim.lr=0.02"]
"""With ``FAST``: one epoch on the 304-image digits-lt split, a learning rate that learns."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """An ``mlflow server`` subprocess in its own process group, with a sqlite backend and a
    local artifact store."""

    def __init__(self, root: Path, template: Path | None = None):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "artifacts"
        self.log_path = root / "server.log"
        root.mkdir(parents=True, exist_ok=True)
        if template is not None:  # an empty store with its tables made: a faster start
            shutil.copyfile(template, root / "backend.db")
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true",
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", f"sqlite:///{root / 'backend.db'}",
             "--artifacts-destination", str(self.artifacts),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            cwd=root)

    def wait_ready(self, limit_s: float = SERVER_START_LIMIT_S) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {limit_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server by its process group (uvicorn runs in a child process)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:  # children that outlived the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()

    def kill(self) -> None:
        """Take the server away at once (SIGKILL to its process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@pytest.fixture
def tiny():
    """Options (with ``FAST``) of the smallest training that still learns something."""
    return list(TINY)


@pytest.fixture
def mlflow_server(tmp_path, mlflow_store_template):
    """A running ``mlflow server`` on a free loopback port, its backend a copy of the empty
    store template (``ltcore.testing``); stopped after the test."""
    server = MlflowServer(tmp_path / "server", mlflow_store_template)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
