"""Against a real ``mlflow server`` on loopback: a training run, ``ltrun compare``, artifacts
that reach the server's artifact store, and a report that fetches the model from it."""

import json
import re
import socket
from pathlib import Path

from ltcore.testing import FAST, mlflow_client


def test_training_and_compare_through_a_tracking_server(ltrun, mlflow_server, tiny, isolated,
                                                        monkeypatch):
    uri = mlflow_server.uri
    result = ltrun("--tracking-uri", uri, *tiny, *FAST)
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr.lower()
    run_id = re.search(r"run (\w+) finished", result.output).group(1)

    client = mlflow_client(uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    (stage,) = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert stage.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(stage.info.run_id, "val/acc")] == [0]

    compared = ltrun("compare", "--tracking-uri", uri, "--split", "both", "--format", "json")
    assert compared.exit_code == 0, compared.stderr
    (row,) = json.loads(compared.output)
    assert row["n"] == 1 and row["run_ids"] == [run_id]
    for key in ("val/acc", "val/few", "test/acc", "test/hmean"):
        assert row["metrics"][key]["mean"] == parent.data.metrics[key]
    wall = (parent.info.end_time - parent.info.start_time) / 1000
    assert abs(row["metrics"]["wall_clock_s"]["mean"] - wall) < 1e-9

    # listed through the server, and present as files under --artifacts-destination
    expected = {(stage.info.run_id, "evaluation/val_per_class_accuracy.csv"),
                (stage.info.run_id, "evaluation/val_confusion_matrix.png"),
                (stage.info.run_id, "evaluation/test_per_class_accuracy.png"),
                (run_id, "config.toml"), (run_id, "checkpoints/model.pt")}
    for owner, path in expected:
        folder = str(Path(path).parent) if "/" in path else None
        listed = {a.path: a for a in client.list_artifacts(owner, folder)}
        assert path in listed, (path, sorted(listed))
        on_disk = [p for p in mlflow_server.artifacts.rglob(Path(path).name)
                   if owner in p.parts and p.as_posix().endswith(path)]
        assert len(on_disk) == 1 and on_disk[0].stat().st_size == listed[path].file_size > 0
    assert not (isolated / "mlruns").exists() and not (isolated / "mlartifacts").exists()

    # a report made elsewhere downloads the model through the server
    elsewhere = isolated / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = ltrun("report", "--tracking-uri", uri, "--no-tsne", "--format", "markdown")
    assert report.exit_code == 0, report.stderr
    page = (elsewhere / "reports" / "ltcore" / "report.md").read_text()
    assert "## Confusion matrices" in page and "## Notes" not in page
    assert (elsewhere / "reports" / "ltcore" / "plots" / "confusion_matrices_digits-lt-if100.png").is_file()

    mlflow_server.stop()
    assert mlflow_server.proc.poll() is not None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", mlflow_server.port)) != 0
