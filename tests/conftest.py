"""Services the tests start themselves: a real ``mlflow server`` on loopback, with a sqlite
backend or with a PostgreSQL server the fixture runs from the distribution's packages."""

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

    def __init__(self, root: Path, template: Path | None = None, backend: str | None = None):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "artifacts"
        self.log_path = root / "server.log"
        root.mkdir(parents=True, exist_ok=True)
        if template is not None:  # an empty store with its tables made: a faster start
            shutil.copyfile(template, root / "backend.db")
        self.backend = backend or f"sqlite:///{root / 'backend.db'}"
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true",
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.artifacts),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            cwd=self.root)

    def restart(self) -> None:
        """Start the server again on the same port and store (after it was killed)."""
        self.stop()
        self._start()
        self.wait_ready()

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


POSTGRES_BINARIES = ("initdb", "pg_ctl")


def install_postgres() -> str:
    """Install the distribution's PostgreSQL server (Debian's ``postgresql``) where the tests
    may; the reason when they may not."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "the tests are not root with apt-get to install the postgresql package"
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                  env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} did not finish within 10 minutes"
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}"
    return ""


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (on PATH or Debian's /usr/lib/postgresql)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if all((folder / name).exists() for name in POSTGRES_BINARIES):
            return folder
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster on a free loopback port, trusting local connections (as
    the ``postgres`` user when the tests run as root: the server refuses root)."""

    def __init__(self, bin_dir: Path):
        import tempfile

        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="ltcore-postgres-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / program), *args], check=True,
                       capture_output=True, cwd=self.root)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL server, installed from the distribution's packages when missing;
    skipped with the reason when it cannot be installed."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        why = install_postgres()
        bin_dir = postgres_bin()
        if bin_dir is None:
            pytest.skip(f"PostgreSQL's server programs (initdb, pg_ctl) are not installed and "
                        f"could not be: {why or 'the package installed no initdb'}")
    try:
        import psycopg2  # noqa: F401  (MLflow's driver for a PostgreSQL backend)
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install -e '.[test]' installs it)")
    server = PostgresServer(bin_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server_on_postgres(tmp_path, postgres):
    """A running ``mlflow server`` whose backend store is a fresh PostgreSQL database."""
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="postgres",
                                  dbname="postgres")
    connection.autocommit = True
    name = f"mlflow_{tmp_path.name.lower().replace('-', '_')[-40:]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    backend = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/{name}"
    server = MlflowServer(tmp_path / "server", backend=backend)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
