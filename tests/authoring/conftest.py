"""A fresh environment of a plugin author's: a virtual environment that sees this one's
packages (ltcore, torch, mlflow, the installed plugins) and installs into its own."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

WRAPPERS = {"pip": "pip", "pytest": "pytest", "ltrun": "ltcore"}
"""Commands of the environment: each runs ``python -m <module>`` of the new environment."""


class AuthorEnvironment:
    """A virtual environment in ``root`` layered on this one: what is installed here is
    importable there, and ``pip install`` there installs there only."""

    def __init__(self, root: Path):
        self.root = root
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
                       check=True)
        python = root / "venv" / "bin" / "python"
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                  "get_paths()['purelib'])"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        here = sysconfig.get_paths()["purelib"]
        Path(purelib, "layered-on.pth").write_text(f"import site; site.addsitedir({here!r})\n")
        for command, module in WRAPPERS.items():
            wrapper = root / "venv" / "bin" / command
            wrapper.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
            wrapper.chmod(0o755)

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run the shell ``command`` in ``root`` with the environment's commands first on the
        PATH; raise with its output when it fails."""
        env = {**os.environ, "PATH": f"{self.root / 'venv' / 'bin'}:{os.environ['PATH']}",
               "VIRTUAL_ENV": str(self.root / "venv"), "MLFLOW_DISABLE_TELEMETRY": "true",
               "LTCORE_DISABLE_PLUGINS": "", "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run(["bash", "-c", command], cwd=self.root, env=env, text=True,
                              capture_output=True, timeout=timeout)
        assert done.returncode == 0, (f"`{command}` exited {done.returncode}\n{done.stdout}\n"
                                      f"{done.stderr}")
        return done


@pytest.fixture
def author_environment(tmp_path):
    return AuthorEnvironment(tmp_path / "author")
