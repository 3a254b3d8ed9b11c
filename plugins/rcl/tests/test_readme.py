"""The README's main-job command works and leaves the MLflow record the README promises."""

import re
import shlex
import warnings
from pathlib import Path

import pytest

from ltcore.testing import check_recorded, mlflow_client, recorded_runs, run_numbers

README = Path(__file__).resolve().parents[3] / "README.md"
RECORDED = Path(__file__).parent / "recorded" / "readme.json"


def main_job_arguments():
    block = re.search(r"<!-- setup-commands -->\s*```\s*(.*?)```", README.read_text(), re.S).group(1)
    first = block.strip().splitlines()[0]
    command = first.split("&&")[-1].strip()
    words = shlex.split(command)
    assert words[0].endswith("ltrun")
    return words[1:]


def test_readme_main_job(ltrun):
    args = main_job_arguments()
    assert args[:4] == ["--plugin", "bcl", "--plugin", "rcl"]
    result = ltrun(*args, "--no-progress")
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    (stage,) = recorded_runs(client, nested=True)
    assert parent.info.status == stage.info.status == "FINISHED"
    assert parent.data.params["plugins"] == "bcl,rcl"
    assert {"plugin.bcl.version", "plugin.rcl.version"} <= set(parent.data.params)
    for key in ("train/loss/la-ce", "train/loss/bcl", "train/lr", "train/epoch_time",
                "train/samples_per_s", "val/acc", "val/many", "val/medium", "val/few", "val/hmean"):
        assert client.get_metric_history(stage.info.run_id, key), key
    artifacts = {a.path for a in client.list_artifacts(stage.info.run_id, "evaluation")}
    assert {"evaluation/val_per_class_accuracy.csv", "evaluation/val_confusion_matrix.png",
            "evaluation/val_per_class_accuracy.png"} <= artifacts
    assert "checkpoints" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the main job shows that the method works: 70% or more, no class left at 0
    figures = parent.data.metrics
    assert figures["test/acc"] >= 70.0 and figures["test/hmean"] > 0.0, figures
    # the README's figure is from two torch threads; the suite runs with one (other rounding)
    assert "about 90% test top-1" in README.read_text() and figures["test/acc"] >= 85.0
    # the numbers the main job gave before the last change meant to alter them; on another
    # machine they cannot be compared, and the test still passes on what it checked above
    try:
        check_recorded(RECORDED, "main-job", run_numbers(client, parent.info.run_id))
    except pytest.skip.Exception as skipped:
        warnings.warn(f"main job's recorded numbers not compared: {skipped}")
