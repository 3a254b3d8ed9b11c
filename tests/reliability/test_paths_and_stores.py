"""Paths and stores: names that would make paths are refused where they enter, every file stays
under its folder, and the commands that only read (compare, report) never create a store nor
change a database that is not MLflow's. Nothing here trains."""

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from ltcore.errors import ConfigError
from ltcore.experiments import Sweep, new_sweep_id
from ltcore.files import name_problem

HOSTILE = ["../../../ESCAPED", "a/b", "a\\b", "a\nb", "tab\there", "nul\x00", "", "..", ".hidden"]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("sweep_id", HOSTILE)
def test_a_hostile_sweep_id_is_refused_and_nothing_is_written(ltrun, tmp_path, sweep_id):
    before = tree(tmp_path)
    output = tmp_path / "one" / "two" / "out"
    result = ltrun("sweep", "--sweep-id", sweep_id, "--output", str(output), "--epochs", "1")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: --sweep-id {sweep_id!r} is refused: it ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["compare", "report"])
@pytest.mark.parametrize("option, value, problem", [
    ("--sweep", "../../ESCAPED", "holds a path separator"),
    ("--experiment", "a\nb", "holds a control character")])
def test_reading_commands_refuse_a_hostile_sweep_or_experiment(ltrun, tmp_path, command, option,
                                                               value, problem):
    before = tree(tmp_path)
    result = ltrun(command, option, value)
    assert result.exit_code == 2
    assert f"Error: {option} {value!r} is refused: it {problem}" in result.stderr
    assert tree(tmp_path) == before


@pytest.mark.parametrize("args, expected", [
    (["--experiment", "", "--print-config"],
     "Error: invalid value for tracking.experiment: 'experiment' is empty"),
    (["--set", "tracking.experiment=a\tb", "--print-config"],
     "Error: invalid value for tracking.experiment: 'experiment' holds a control character"),
    (["sweep", "--experiment", "a\rb", "--epochs", "1"],
     "Error: --experiment 'a\\rb' is refused: it holds a control character"),
], ids=["ltrun --experiment", "tracking.experiment", "ltrun sweep --experiment"])
def test_a_hostile_experiment_name_is_refused(ltrun, tmp_path, args, expected):
    before = tree(tmp_path)
    result = ltrun(*args)
    assert result.exit_code == 2 and result.stderr.startswith(expected), result.stderr
    assert tree(tmp_path) == before


def test_generated_sweep_ids_are_valid_and_a_sweep_folder_stays_under_output(tmp_path):
    assert name_problem(new_sweep_id()) is None
    assert Sweep("lr-search_v2", [], [], output=str(tmp_path)).folder() == (
        tmp_path / "sweeps" / "lr-search_v2")
    with pytest.raises(ConfigError, match="would be written outside"):
        Sweep("../../ESCAPED", [], [], output=str(tmp_path)).folder()


def test_a_run_name_is_one_folder_name():
    from ltcore.run import Run

    run = SimpleNamespace(selected=["ce"], dataset=SimpleNamespace(name="digits-lt"),
                          config=SimpleNamespace(seed=0, model=SimpleNamespace(
                              backbone="clip:hf-hub:laion/CLIP-ViT\n")),
                          run_id="0123456789abcdef")
    assert Run.run_name.fget(run) == "ce-digits-lt-clip.hf-hub:laion-CLIP-ViT--s0-01234567"


def foreign_database(path: Path) -> bytes:
    connection = sqlite3.connect(path)
    connection.execute("create table patients (name text)")
    connection.execute("insert into patients values ('Ada')")
    connection.commit()
    connection.close()
    return path.read_bytes()


@pytest.mark.parametrize("command", ["compare", "report"])
def test_a_foreign_sqlite_file_is_refused_and_left_byte_identical(ltrun, tmp_path, command):
    path = tmp_path / "other.db"
    content = foreign_database(path)
    before = tree(tmp_path)
    result = ltrun(command, "--tracking-uri", f"sqlite:///{path}")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {str(path)!r} is not an MLflow store (it lacks MLflow's "
                             "tables); it was left as it is: point --tracking-uri (or "
                             "MLFLOW_TRACKING_URI) at the store the runs were recorded in\n")
    assert path.read_bytes() == content
    assert tree(tmp_path) == before


def test_a_store_of_an_older_mlflow_is_not_migrated(ltrun, tmp_path):
    path = tmp_path / "mlflow.db"
    connection = sqlite3.connect(path)
    connection.execute("drop table metrics")
    connection.commit()
    connection.close()
    before = tree(tmp_path)
    result = ltrun("compare")
    assert result.exit_code == 2
    assert "is the store of an older MLflow" in result.stderr
    assert "mlflow db upgrade" in result.stderr
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["compare", "report"])
def test_reading_commands_in_an_empty_folder_create_nothing(ltrun, tmp_path, monkeypatch,
                                                            command):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    before = tree(tmp_path)
    result = ltrun(command)
    assert result.exit_code == 2
    assert result.stderr == (f"Error: there is no MLflow store at {str(empty / 'mlflow.db')!r}, "
                             "and nothing was created there: point --tracking-uri (or "
                             "MLFLOW_TRACKING_URI) at the store the runs were recorded in\n")
    assert list(empty.iterdir()) == [] and tree(tmp_path) == before


def test_compare_on_a_file_store_that_does_not_exist_creates_nothing(ltrun, tmp_path):
    before = tree(tmp_path)
    result = ltrun("compare", "--tracking-uri", f"file://{tmp_path / 'mlruns'}")
    assert result.exit_code == 2
    missing = str(tmp_path / "mlruns")
    assert result.stderr.startswith(f"Error: there is no MLflow store at {missing!r}")
    assert tree(tmp_path) == before


def test_an_experiment_name_may_be_a_databricks_path(ltrun):
    result = ltrun("--experiment", "/Users/me@example.com/long-tail", "--print-config")
    assert result.exit_code == 0, result.stderr
    assert 'experiment = "/Users/me@example.com/long-tail"' in result.output
