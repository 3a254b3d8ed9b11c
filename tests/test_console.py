"""What a run shows and leaves behind: the plan and per-epoch lines on the console, the run
folder (named after the run, with its log, per-epoch CSV and best model), the MLflow records
(names, test figures only at a stage's end, the best epoch on validation) and configurations
that round-trip."""

import csv
import os
import re
import subprocess
import sys

import pytest

from ltcore.testing import FAST, mlflow_client, recorded_runs

ARGS = ["--plugin", "ce", "--plugin", "crt", "--epochs", "3", "--set", "crt.epochs=2", *FAST]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real ``ltrun`` process (ce + crt, 3 + 2 epochs) in a fresh folder."""
    folder = tmp_path_factory.mktemp("console")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    process = subprocess.run([sys.executable, "-c", "from ltcore.cli import main; main()", *ARGS],
                             cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    run_id = re.match(r"run (\w+) started", process.stdout).group(1)
    return folder, process.stdout, run_id


def test_the_console_shows_the_plan_then_a_line_per_epoch(finished):
    folder, out, run_id = finished
    lines = out.splitlines()
    assert lines[0] == f"run {run_id} started; continue an interrupted run with: ltrun --resume {run_id}"
    name = f"ce+crt-digits-lt-s0-{run_id[:8]}"
    assert lines[1].startswith(f"{name}: ce+crt on digits-lt (503 training images, 10 classes)")
    assert "sqlite:///" in lines[2] and f"runs/{name}" in lines[2]
    assert lines[3].startswith("device cpu, compute float32, batch 64, model resnet8")
    assert lines[4] == "plan: 2 stages, 5 epochs in all"
    assert lines[5].startswith("  1. train (core): 3 epochs, set by --epochs; 8 steps per epoch, "
                               "sampler instance-balanced, sgd lr 0.1 cosine, trains all")
    assert lines[6] == "     losses: 1 x ce" and lines[7] == "     views: cls = standard"
    assert lines[8].startswith("  2. classifier (crt): 2 epochs, set by crt.epochs; 8 steps per "
                               "epoch, sampler class-balanced")
    assert "trains the classifier only" in lines[8]
    assert lines[9] == "     losses: 1 x crt-ce"
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 2 and "8 optimiser steps per epoch" in warnings[0]
    assert "raise --epochs" in warnings[0] and "raise crt.epochs" in warnings[1]
    epochs = [line for line in lines if re.match(r"(train|classifier) \d/\d  loss", line)]
    assert [line.split("  ")[0] for line in epochs] == [
        "train 1/3", "train 2/3", "train 3/3", "classifier 1/2", "classifier 2/2"]
    pattern = (r"loss \d+\.\d{4}  val +\d+\.\d\d% many \d+\.\d medium \d+\.\d few \d+\.\d  "
               r"\d+\.\d s  (left \d+ (s|min \d\d s)|done)$")
    assert all(re.search(pattern, line) for line in epochs), epochs
    assert epochs[-1].endswith("done") and all("left" in line for line in epochs[:-1])
    assert f"run {run_id} finished ({name}); files in runs/{name}" in lines
    assert any(line.strip().startswith("test: acc") for line in lines)


def test_the_run_folder_is_named_after_the_run_and_holds_its_log_figures_and_models(finished):
    folder, out, run_id = finished
    run_dir = folder / "runs" / f"ce+crt-digits-lt-s0-{run_id[:8]}"
    assert (run_dir / "run_id").read_text().strip() == run_id
    assert {"config.toml", "checkpoint.pt", "model.pt", "model_best.pt", "log.txt",
            "metrics.csv"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "log.txt").read_text() == out  # everything the console showed
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["stage"], r["epoch"]) for r in rows] == [
        ("train", "1"), ("train", "2"), ("train", "3"), ("classifier", "1"), ("classifier", "2")]
    assert all(r["val/acc"] for r in rows)
    # test figures only at the end of each stage
    assert [bool(r["test/acc"]) for r in rows] == [False, False, True, False, True]


def test_mlflow_names_the_runs_and_keeps_test_figures_for_the_end(finished):
    folder, out, run_id = finished
    client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
    parent = client.get_run(run_id)
    name = f"ce+crt-digits-lt-s0-{run_id[:8]}"
    assert parent.info.run_name == name
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    stages = {r.info.run_name: r for r in recorded_runs(client, nested=True)}
    assert set(stages) == {f"{name}/train", f"{name}/classifier"}
    train = stages[f"{name}/train"].info.run_id
    assert [m.step for m in client.get_metric_history(train, "val/acc")] == [0, 1, 2]
    assert client.get_metric_history(train, "test/acc") == []  # in evaluation/figures.csv
    figures = parent.data.metrics
    best_epoch = figures["best/epoch"]
    assert 1 <= best_epoch <= 2 and "best/test/acc" in figures and "best/val/acc" in figures
    classifier = stages[f"{name}/classifier"].info.run_id
    history = {int(m.step): m.value for m in client.get_metric_history(classifier, "val/acc")}
    assert figures["best/val/acc"] == max(history.values())
    assert best_epoch == 1 + min(s for s, v in history.items() if v == max(history.values()))
    for key, value in figures.items():  # no float noise; exact 0 where a class is never right
        if key.split("/")[-1] in ("acc", "many", "medium", "few", "hmean"):
            assert value == round(value, 4), key
    assert "log.txt" in {a.path for a in client.list_artifacts(run_id)}


def test_resume_takes_the_id_the_name_or_last(finished, ltrun, monkeypatch):
    folder, out, run_id = finished
    monkeypatch.chdir(folder)
    for reference in (run_id, f"ce+crt-digits-lt-s0-{run_id[:8]}", "last"):
        result = ltrun("--resume", reference, "--no-progress")
        assert result.exit_code == 0, result.stderr
        assert f"run {run_id} finished" in result.output
    result = ltrun("--resume", "nothing-like-it")
    assert result.exit_code == 2 and "no run 'nothing-like-it'" in result.stderr


def test_print_config_records_the_plugins_and_reruns_alone(ltrun, tmp_path):
    result = ltrun("--plugin", "ce", "--plugin", "crt", "--set", "crt.epochs=3", "--print-config")
    assert result.exit_code == 0, result.stderr
    assert result.output.splitlines()[0] == 'plugins = ["ce", "crt"]'
    saved = tmp_path / "saved.toml"
    saved.write_text(result.output)
    again = ltrun("--config", str(saved), "--print-config")
    assert again.exit_code == 0, again.stderr
    assert again.output == result.output


@pytest.mark.parametrize("assignment, message", [
    ("model.backbone=resnet9", "model.backbone: unknown backbone 'resnet9'"),
    ("views.classifier=nope", "views.classifier: unknown view 'nope'"),
    ("sampler=nope", "sampler: unknown sampler 'nope'"),
    ("eval.metrics=nope", "eval.metrics: unknown metric 'nope'"),
])
def test_print_config_refuses_unknown_components_as_training_does(ltrun, assignment, message):
    result = ltrun("--set", assignment, "--print-config")
    assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize("dataset, total, first, last", [("cifar10-lt", 12406, 5000, 50),
                                                          ("cifar100-lt", 10847, 500, 5)])
def test_datasets_prints_cifar_counts_without_the_images(ltrun, tmp_path, dataset, total, first,
                                                         last):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    result = ltrun("datasets", "--dataset", dataset, "--imbalance-factor", "100",
                   "--data-dir", str(empty))
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith(f"{dataset}: {total} training images")
    assert "no image was read" in result.output
    rows = [line.split() for line in result.output.splitlines() if re.match(r" +\d+ ", line)]
    assert (int(rows[0][2]), int(rows[-1][2])) == (first, last)
    assert not any(empty.iterdir())  # nothing was downloaded


def test_an_experiment_made_elsewhere_is_marked_as_a_model_training_one(isolated):
    """An existing experiment without the tag (MLflow's Default, one made by hand) gets it."""
    from ltcore.tracking.store import EXPERIMENT_KIND, experiment_id

    client = mlflow_client()
    made = client.create_experiment("made-by-hand")
    assert "mlflow.experimentKind" not in client.get_experiment(made).tags
    assert experiment_id(client, "made-by-hand") == made
    assert EXPERIMENT_KIND.items() <= client.get_experiment(made).tags.items()
    assert experiment_id(client, "absent", create=False) is None


def test_a_failed_run_keeps_its_console_log_as_an_artifact(ltrun):
    result = ltrun("--epochs", "2", *FAST, "--set", "optim.lr=1e30")
    assert result.exit_code != 0
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    assert parent.info.status == "FAILED"
    assert "log.txt" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_the_saved_config_alone_reruns_the_run(finished, tmp_path):
    """``ltrun --config runs/<name>/config.toml`` in a fresh folder, as a real process: the
    same plugins, stages and per-epoch figures (timings aside)."""
    folder, out, run_id = finished
    (run_dir,) = [p for p in (folder / "runs").iterdir() if p.name.endswith(run_id[:8])]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    again = subprocess.run([sys.executable, "-c", "from ltcore.cli import main; main()",
                            "--config", str(run_dir / "config.toml"), "--no-progress"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    (rerun,) = (tmp_path / "runs").iterdir()
    assert rerun.name.startswith("ce+crt-digits-lt-s0-")

    def figures(path):
        with open(path / "metrics.csv", newline="") as f:
            return [{k: v for k, v in row.items() if "time" not in k and "per_s" not in k}
                    for row in csv.DictReader(f)]

    assert figures(rerun) == figures(run_dir)
