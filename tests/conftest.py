"""Shared fixtures: every test runs in its own working directory with its own MLflow store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"

FAST = ["--set", "model.backbone=resnet8", "--set", "views.workers=0", "--batch-size", "64",
        "--no-progress"]
"""CLI options that keep a training test to seconds on two CPU cores."""


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LTCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path


class CliResult:
    def __init__(self, code, out, err):
        self.exit_code, self.output, self.stderr = code, out, err


@pytest.fixture
def ltrun(capsys):
    """Call the ``ltrun`` entry point in-process; returns exit code, stdout and stderr."""
    from ltcore.cli import main

    def call(*args):
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


def mlflow_client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri="sqlite:///mlflow.db")


def requires_shared_cifar():
    return pytest.mark.skipif(not (SHARED_CIFAR / "train").is_dir(),
                              reason=f"shared CIFAR-10 images not found at {SHARED_CIFAR}")
