"""The benchmark scripts keep up with the engine: each starts, and the training-step benchmark
trains a tiny epoch (the GPU checks run them; a script that no longer runs is found here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltcore.testing import requires_shared_cifar

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


@requires_shared_cifar()
def test_the_speed_benchmark_compares_both_pipelines(tmp_path):
    """``speed.py --tiny --device cpu``: the same comparison as on a GPU, small (a test of
    function: on the CPU both pipelines train alike, so the ratio says nothing of speed)."""
    import json
    import re

    from ltcore.testing import plugins_holding

    plugins_holding("bcl")  # skips where the bcl plugin is not installed (the core alone)
    out = tmp_path / "speed.json"
    result = python(str(BENCHMARKS / "speed.py"), "--tiny", "--device", "cpu", "--json",
                    str(out), "--scratch", str(tmp_path / "scratch"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    ratio = re.fullmatch(r"speedup_vs_reference: ([0-9.]+)x \(fast \d+ / reference \d+ "
                         r"training samples/s on cpu\)", last)
    assert ratio, last
    figures = json.loads(out.read_text())
    assert figures["speedup_vs_reference"] == pytest.approx(float(ratio.group(1)), abs=0.01)
    for pipeline in ("reference", "fast"):
        row = figures[pipeline]
        assert row["samples_per_s"] > 0 and row["step_only_samples_per_s"] > 0
        assert row["projected_200ep_s"] > 200 * row["epoch_with_val_s"] * 0.99
        assert 0 <= row["val_acc"] <= 100
    assert figures["reference"]["views"] == "reference"
    assert figures["reference"]["switches"] == "none"
    # on the CPU the fast path's auto switches are off: both trained the same numbers
    assert figures["fast"]["val_acc"] == figures["reference"]["val_acc"]


def test_the_startup_benchmark_prints_the_breakdown_and_the_ratio(tmp_path):
    """``startup.py --repeat 1``: the phases of both store states in order, the imports before
    the first step (neither scikit-learn nor matplotlib among them) and the ratio last."""
    import json
    import re

    out = tmp_path / "startup.json"
    result = python(str(BENCHMARKS / "startup.py"), "--repeat", "1", "--torch-repeat", "1",
                    "--scratch", str(tmp_path / "scratch"), "--json", str(out), "--",
                    "--set", "model.backbone=resnet8", "--imbalance-factor", "100",
                    "--set", "tracking.log_model=false", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    ratio = re.fullmatch(r"ratio: ([0-9.]+)x import torch to the start of training, store "
                         r"existing \(target 3x: (met|not met)\)", last)
    assert ratio, last
    figures = json.loads(out.read_text())
    assert figures["ratio"] == pytest.approx(float(ratio.group(1)), abs=0.01)
    for phases in figures["phases"].values():
        times = [phase["at_s"] for phase in phases.values()]
        assert list(phases)[-1] == "first step" and times == sorted(times) and times[0] > 0
    assert {"torch", "mlflow"} <= set(figures["imports_s"])
    assert not {"sklearn", "matplotlib"} & set(figures["notable_imports_s"])


def test_the_clip_step_benchmark_times_a_tiny_tower(tmp_path):
    """``clip_step.py --tiny --device cpu``: one row of positive figures, printed and in the
    JSON (gpu_checks.sh part 10 times the RN50 and ViT-B/16 towers the same way)."""
    import json

    pytest.importorskip("open_clip")
    pytest.importorskip("ltcore_gml")
    out = tmp_path / "clip-step.json"
    result = python(str(BENCHMARKS / "clip_step.py"), "--tiny", "--device", "cpu", "--json",
                    str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["backbone"] == "clip:tiny" and row["batch_size"] == 8
    assert row["images_per_s"] > 0 and row["ms_per_step"] > 0
    assert result.stdout.strip().splitlines()[-1].split()[0] == "clip:tiny"
