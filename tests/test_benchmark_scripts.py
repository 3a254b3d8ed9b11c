"""The benchmark scripts keep up with the engine: each starts, and the training-step benchmark
trains a tiny epoch (the GPU checks run them; a script that no longer runs is found here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_the_script_starts(script):
    result = python(str(BENCHMARKS / script), "--help")
    if result.returncode and "No module named 'ltcore_" in result.stderr:
        pytest.skip(f"{script} needs a plugin that is not installed")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_the_step_benchmark_trains_an_epoch(tmp_path):
    result = python(str(BENCHMARKS / "step.py"), "--plugin", "ce", "--device", "cpu",
                    "--epochs", "1", "--images", "128", "--batch-size", "32", "--backbone",
                    "resnet8", "--workers", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    header, row = result.stdout.strip().splitlines()[-2:]
    assert header.split()[-1] == "samples/s" and row.split()[:3] == ["ce", "cpu", "reference"]
    assert float(row.split()[-1].replace(",", "")) > 0
