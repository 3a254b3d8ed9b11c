"""``ltrun --plugin gml``: the teacher stage, then reusing that teacher by path and by run id."""

import os

import pytest
import torch

from ltcore.testing import FAST, mlflow_client, recorded_runs, run_folder

TINY = [*FAST, "--epochs", "1", "--imbalance-factor", "100", "--set", "views.classifier=standard",
        "--set", "views.contrastive=standard", "--set", "gml.queue_size=256"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """One full ``ltrun --plugin gml`` (teacher stage + student stage) in its own folder and store."""
    from ltcore.testing import invoke_ltrun

    folder = tmp_path_factory.mktemp("teacher-run")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    before = os.getcwd()
    os.chdir(folder)
    try:
        code = invoke_ltrun("--plugin", "gml", *TINY, "--set", "gml.teacher_epochs=1",
                            "--output", str(folder / "runs"), "--tracking-uri", uri)
    finally:
        os.chdir(before)
    assert code == 0, f"ltrun --plugin gml exited with {code}"
    (run_dir,) = (folder / "runs").iterdir()
    return {"folder": folder, "uri": uri, "run_id": (run_dir / "run_id").read_text().strip(),
            "model": run_dir / "model.pt"}


def _teacher_state(path):
    modules = torch.load(path, weights_only=False)["modules"]
    return {k: v for k, v in modules.items() if k.startswith("teacher.")}


def _assert_same_teacher(path, reference):
    mine, theirs = _teacher_state(path), _teacher_state(reference)
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        if torch.is_tensor(value):
            assert torch.equal(mine[key], value), key
        else:
            assert mine[key] == value, key


def test_teacher_and_student_stages_are_nested_runs(teacher_run):
    client = mlflow_client(teacher_run["uri"])
    parent = client.get_run(teacher_run["run_id"])
    assert parent.info.status == "FINISHED"
    stages = [r for r in recorded_runs(client, nested=True)
              if r.data.tags["mlflow.parentRunId"] == teacher_run["run_id"]]
    assert sorted(r.data.tags["ltcore.stage"] for r in stages) == ["teacher", "train"]
    for stage in stages:
        assert stage.info.status == "FINISHED"
        assert stage.data.tags["mlflow.parentRunId"] == teacher_run["run_id"]
    by_name = {r.data.tags["ltcore.stage"]: r for r in stages}
    assert set(by_name["teacher"].data.params["stage.losses"].split(", ")) == {"1*la-ce"}
    assert set(by_name["train"].data.params["stage.losses"].split(", ")) == {
        "1*la-ce", "1*gml", "1*gml-temperature", "1*kd"}
    assert "val/acc" in by_name["teacher"].data.metrics
    for key in ("train/loss/gml", "train/loss/kd", "train/gml_temperature", "train/gml_queue_filled"):
        assert key in by_name["train"].data.metrics
    assert parent.data.params["gml.queue_size"] == "256"
    state = _teacher_state(teacher_run["model"])
    assert state["teacher._extra_state"] == {"backbone": "resnet8", "classifier": "cosine",
                                             "cosine_scale": 30.0}


def _student_only(client, parent_id):
    stages = [r for r in recorded_runs(client, nested=True)
              if r.data.tags["mlflow.parentRunId"] == parent_id]
    assert [r.data.tags["ltcore.stage"] for r in stages] == ["train"]
    assert stages[0].info.status == "FINISHED"


def _finished_run(result):
    assert result.exit_code == 0, result.stderr
    return result.output.split("run ", 1)[1].split(" ", 1)[0]


def test_teacher_from_a_model_file_skips_the_teacher_stage(ltrun, teacher_run, isolated):
    result = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={teacher_run['model']}",
                   "--tracking-uri", teacher_run["uri"])
    run_id = _finished_run(result)
    _student_only(mlflow_client(teacher_run["uri"]), run_id)
    _assert_same_teacher(run_folder(isolated / "runs", run_id) / "model.pt", teacher_run["model"])


def test_teacher_from_a_run_id_in_the_output_folder(ltrun, teacher_run, isolated, monkeypatch):
    def no_download(**kwargs):
        raise AssertionError("the teacher should come from the output folder")

    monkeypatch.setattr("mlflow.artifacts.download_artifacts", no_download)
    output = teacher_run["folder"] / "runs"
    result = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={teacher_run['run_id']}",
                   "--output", str(output), "--tracking-uri", teacher_run["uri"])
    run_id = _finished_run(result)
    _student_only(mlflow_client(teacher_run["uri"]), run_id)
    # The reused teacher, its recorded architecture included, is what this run saved in turn.
    _assert_same_teacher(run_folder(output, run_id) / "model.pt", teacher_run["model"])


def test_teacher_from_a_run_id_downloaded_from_mlflow(ltrun, teacher_run, isolated):
    assert not (isolated / "runs").exists()  # not in this folder: downloaded from MLflow
    result = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={teacher_run['run_id']}",
                   "--tracking-uri", teacher_run["uri"])
    run_id = _finished_run(result)
    _student_only(mlflow_client(teacher_run["uri"]), run_id)
    _assert_same_teacher(run_folder(isolated / "runs", run_id) / "model.pt", teacher_run["model"])


def test_the_students_model_can_be_the_teacher(ltrun, teacher_run, isolated):
    result = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={teacher_run['model']}",
                   "--set", "gml.teacher_module=model", "--set", "gml.distill=false",
                   "--tracking-uri", teacher_run["uri"])
    run_id = _finished_run(result)
    mine = _teacher_state(run_folder(isolated / "runs", run_id) / "model.pt")
    student = torch.load(teacher_run["model"], weights_only=False)["modules"]
    assert torch.equal(mine["teacher.backbone.conv1.weight"], student["model.backbone.conv1.weight"])


def test_unusable_teacher_sources_are_reported(ltrun, teacher_run):
    missing = ltrun("--plugin", "gml", *TINY, "--set", "gml.teacher=nowhere/model.pt")
    assert missing.exit_code == 2 and "neither an existing file nor an MLflow run id" in missing.stderr
    unknown = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={'0' * 32}",
                    "--tracking-uri", teacher_run["uri"])
    assert unknown.exit_code == 2 and "could not be downloaded" in unknown.stderr
    other = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={teacher_run['model']}",
                  "--set", "gml.teacher_backbone=resnet20")
    assert other.exit_code == 2 and "'resnet8'" in other.stderr


class RunsCode:
    """Pickles as a call to ``exec``: loading the file would write the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_teacher_file_that_runs_code_is_refused(ltrun, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "teacher.pt"
    torch.save({"settings": {}, "plugins": ["gml"], "modules": {"x": RunsCode(marker)}}, evil)
    result = ltrun("--plugin", "gml", *TINY, "--set", f"gml.teacher={evil}")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "gml.teacher" in errors[0] and "teacher.pt" in errors[0]
    assert "nothing in it was run" in errors[0] and "Traceback" not in result.stderr
    assert not marker.exists()
