"""The tracker: a fast failure at the start, tolerant calls after it, the offline queue."""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from ltcore import tracking
from ltcore.errors import TrackingError
from ltcore.testing import FAST, mlflow_client, repeated_points
from ltcore.tracking import Tracker, http_policy
from ltcore.tracking.store import source_tags
from ltcore.tracking.tracker import dataset_input


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_uri() -> str:
    return tracking.resolve_uri("sqlite:///mlflow.db")


class Flaky:
    """An MlflowClient whose calls fail as against a vanished server while ``down`` is set."""

    def __init__(self, client):
        self.client = client
        self.down = False

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError("[Errno 111] Connection refused (server stopped)")
            return attr(*args, **kwargs)

        return call


def flaky_tracker(experiment="ltcore") -> tuple[Tracker, Flaky]:
    tracker = Tracker(local_uri(), experiment)
    tracker.client = Flaky(tracker.client)
    return tracker, tracker.client


def test_unreachable_server_fails_fast_with_the_uri():
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as info:
        Tracker(uri, "ltcore")
    assert time.monotonic() - t0 < 5
    assert uri in str(info.value) and "cannot reach" in str(info.value)


def test_silent_server_fails_after_the_start_timeout(monkeypatch):
    monkeypatch.setenv(tracking.START_TIMEOUT_ENV, "1")
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(TrackingError) as info:
            Tracker(uri, "ltcore")
        elapsed = time.monotonic() - t0
    assert elapsed < 5, elapsed  # MLflow alone would retry for minutes
    assert uri in str(info.value)
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") is None  # restored afterwards


def test_ltrun_against_an_unreachable_server_fails_before_training(ltrun, isolated):
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    result = ltrun("--tracking-uri", uri, "--epochs", "1", *FAST)
    assert result.exit_code == 2
    assert uri in result.stderr and "cannot reach the MLflow tracking store" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(isolated.glob("runs/*/checkpoint.pt"))
    assert time.monotonic() - t0 < 60


def test_http_policy_is_scoped_and_respects_the_users_settings(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with http_policy(2, 30, 1, override=False):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    with http_policy(0, 5):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"


def test_a_store_that_goes_away_loses_nothing(isolated, capsys):
    tracker, flaky = flaky_tracker()
    parent = tracker.start("ce", {"plugins": "ce"})
    stage = tracker.start("train", {"ltcore.stage": "train"}, parent_id=parent)
    tracker.log_metrics(stage, {"train/loss": 1.0}, step=0)
    assert tracker.flush()

    flaky.down = True
    assert tracker.log_params(stage, {"stage.lr": 0.1}) is False  # no exception
    assert tracker.set_tags(stage, {"note": "offline"}) is False
    tracker.log_metrics(stage, {"train/loss": 0.5}, step=1)
    assert tracker.flush() is False
    artifact = isolated / "table.csv"
    artifact.write_text("a,b\n1,2\n")
    assert tracker.log_artifact(stage, "table.csv", "evaluation") is False
    assert tracker.end(stage) is False
    second = tracker.start("retrain", {"ltcore.stage": "retrain"}, parent_id=parent)
    assert second.startswith(tracking.OFFLINE_PREFIX)
    tracker.log_metrics(second, {"train/loss": 0.25}, step=0)
    assert tracker.flush() is False
    assert tracker.offline and tracker.failures >= 2
    assert tracker.unsent_artifacts == [str(artifact)]
    summary = tracker.summary()
    assert "2 metric values" in summary and "1 artifacts" in summary and "1 stage runs" in summary
    assert "stopped answering" in capsys.readouterr().err

    flaky.down = False
    assert tracker.flush()
    assert tracker.end(parent)
    assert tracker.summary() is None and tracker.unsent_artifacts == []
    assert "answers again" in capsys.readouterr().err

    client = mlflow_client(local_uri())
    run = client.get_run(stage)
    assert run.data.params["stage.lr"] == "0.1" and run.data.tags["note"] == "offline"
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(stage, "train/loss")) == [0, 1]
    assert [a.path for a in client.list_artifacts(stage, "evaluation")] == ["evaluation/table.csv"]
    children = client.search_runs([tracker.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent}'")
    retrain = next(r for r in children if r.data.tags.get("ltcore.stage") == "retrain")
    assert [m.value for m in client.get_metric_history(retrain.info.run_id, "train/loss")] == [0.25]
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_model_logged_while_the_store_is_away_is_logged_and_registered_when_it_answers(
        isolated):
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    folder = isolated / "mlflow_model"
    folder.mkdir()
    Model().save(str(folder / "MLmodel"))
    (folder / "weights.bin").write_bytes(b"\0" * 16)
    tracker, flaky = flaky_tracker()
    parent = tracker.start("ce", {"plugins": "ce"})
    flaky.down = True
    assert tracker.log_model(parent, str(folder), "model", "digits") is False
    assert "1 models" in tracker.summary()
    flaky.down = False
    assert tracker.end(parent) and tracker.summary() is None

    client = mlflow_client(local_uri())
    (logged,) = client.search_logged_models([tracker.experiment_id],
                                            f"source_run_id = '{parent}'")
    assert logged.name == "model" and logged.status == LoggedModelStatus.READY
    assert Model.load(str(folder)).model_id == logged.model_id
    assert {f.path for f in client.list_logged_model_artifacts(logged.model_id)} == {
        "MLmodel", "weights.bin"}
    assert client.get_model_version("digits", "1").run_id == parent


def test_a_run_created_offline_is_made_once_even_from_later_processes(isolated):
    first, flaky = flaky_tracker()
    parent = first.start("ce", {"plugins": "ce"})
    flaky.down = True
    placeholder = first.start("train", {"ltcore.stage": "train"}, parent_id=parent)
    first.log_params(placeholder, {"stage.epochs": 3})
    first.log_metrics(placeholder, {"train/loss": 2.0}, step=0)
    assert not first.flush()
    journal, pending = first.journal(), list(first.pending)  # what a checkpoint keeps

    second = Tracker(local_uri(), "ltcore")  # a resumed process, the store is back
    second.pending = pending
    second.load_journal(journal)
    assert second.flush()
    third = Tracker(local_uri(), "ltcore")
    third.log_metrics(placeholder, {"train/loss": 1.0}, step=1)
    assert third.flush()

    client = mlflow_client(local_uri())
    children = client.search_runs([second.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 1
    (child,) = children
    assert child.data.params["stage.epochs"] == "3"
    history = client.get_metric_history(child.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 2.0), (1, 1.0)]


def test_a_refused_record_is_reported_and_not_retried(isolated):
    tracker = Tracker(local_uri(), "ltcore")
    parent = tracker.start("ce", {})
    assert tracker.log_params(parent, {"optim.lr": 0.1})
    assert tracker.log_params(parent, {"optim.lr": 0.2}) is False  # MLflow refuses a changed param
    assert not tracker.offline and len(tracker.refused) == 1
    assert tracker.flush() and "refused records" in tracker.summary()
    assert mlflow_client(local_uri()).get_run(parent).data.params["optim.lr"] == "0.1"


def test_a_resumed_tracker_reads_the_stored_points_when_the_store_answers(isolated):
    tracker = Tracker(local_uri(), "ltcore")
    parent = tracker.start("ce", {})
    stage = tracker.start("train", {}, parent_id=parent)
    for step, value in ((0, 3.0), (1, 2.0)):
        tracker.log_metrics(stage, {"train/loss": value}, step=step)
    assert tracker.flush()

    resumed, flaky = flaky_tracker()
    now = int(time.time() * 1000)
    resumed.pending = [(stage, "train/loss", 9.0, now, 1), (stage, "train/loss", 1.0, now, 2)]
    flaky.down = True
    resumed.verify(stage)  # cannot ask now: read before sending
    assert len(resumed.pending) == 2
    flaky.down = False
    assert resumed.flush()
    history = mlflow_client(local_uri()).get_metric_history(stage, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 3.0), (1, 2.0), (2, 1.0)]


class WritesThenFails(Flaky):
    """A store that writes a metric batch and then loses the answer (a server killed mid-reply),
    ``failures`` times."""

    def __init__(self, client, failures: int):
        super().__init__(client)
        self.failures = failures

    def log_batch(self, *args, **kwargs):
        self.client.log_batch(*args, **kwargs)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Connection aborted: RemoteDisconnected (server killed)")


def test_every_point_is_written_once_whatever_retries_and_resumes_happen(isolated):
    tracker = Tracker(local_uri(), "ltcore")
    parent = tracker.start("ce", {})
    stage = tracker.start("train", {}, parent_id=parent)
    tracker.client = WritesThenFails(tracker.client, failures=1)
    tracker.log_metrics(stage, {"train/loss": 3.0, "val/acc": 10.0}, step=0)
    assert not tracker.flush()  # written, but the answer was lost
    tracker.log_metrics(stage, {"train/loss": 2.0, "val/acc": 20.0}, step=1)
    tracker.log_metrics(stage, {"train/loss": 9.0}, step=1)  # a second value of one point
    assert tracker.flush()
    # a resume from a checkpoint taken before step 1 was sent: both steps again
    resumed = Tracker(local_uri(), "ltcore")
    resumed.load_journal(tracker.journal())
    now = int(time.time() * 1000)
    resumed.pending = [(stage, "train/loss", 3.0, now, 0), (stage, "val/acc", 10.0, now, 0),
                       (stage, "train/loss", 2.0, now, 1), (stage, "train/loss", 1.0, now, 2)]
    assert resumed.flush() and not resumed.pending
    client = mlflow_client(local_uri())
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(stage, "train/loss"),
                                               key=lambda m: m.step)] == [(0, 3.0), (1, 2.0),
                                                                          (2, 1.0)]
    assert sorted(m.step for m in client.get_metric_history(stage, "val/acc")) == [0, 1]
    assert repeated_points(client, parent) == {}


def test_extra_tags_reach_every_run(isolated, monkeypatch):
    monkeypatch.setenv(tracking.RUN_TAGS_ENV, '{"team": "vision"}')
    with tracking.extra_tags({"ltcore.sweep": "s1"}):
        tracker = Tracker(local_uri(), "ltcore")
    parent = tracker.start("ce", {"plugins": "ce"})
    stage = tracker.start("train", {}, parent_id=parent)
    client = mlflow_client(local_uri())
    for run_id in (parent, stage):
        tags = client.get_run(run_id).data.tags
        assert tags["team"] == "vision" and tags["ltcore.sweep"] == "s1"
    assert os.environ[tracking.RUN_TAGS_ENV] == '{"team": "vision"}'
    monkeypatch.setenv(tracking.RUN_TAGS_ENV, "not json")
    with pytest.raises(TrackingError, match=tracking.RUN_TAGS_ENV):
        Tracker(local_uri(), "ltcore")


def test_artifact_paths_are_kept_absolute(isolated):
    tracker, flaky = flaky_tracker()
    parent = tracker.start("ce", {})
    flaky.down = True
    Path("config.toml").write_text("x = 1\n")
    tracker.log_artifact(parent, "config.toml")
    assert tracker.journal()["queue"][0][2][0] == str(isolated / "config.toml")


def git(cwd, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=ltcore", "-c", "user.email=ltcore@example.com",
                           *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_parent_runs_record_the_git_commit_and_the_dataset(isolated, make_run, monkeypatch,
                                                           tmp_path_factory):
    git(isolated, "init", "-q", "-b", "main")
    Path("train.py").write_text("print(1)\n")
    git(isolated, "add", "train.py")
    git(isolated, "commit", "-q", "-m", "first")
    git(isolated, "remote", "add", "origin", "https://user:secret@example.com/lab/ltcore.git")
    commit = git(isolated, "rev-parse", "HEAD")

    tracker, flaky = flaky_tracker()
    parent = tracker.start("ce", {"plugins": "ce"})
    stage = tracker.start("train", {}, parent_id=parent)
    run = make_run(["ce"])
    record = dataset_input(run)
    flaky.down = True
    assert tracker.log_input(parent, record) is False  # queued with the other records
    assert "1 dataset inputs" in tracker.summary()
    flaky.down = False
    assert tracker.flush() and tracker.end(parent)

    client = mlflow_client(local_uri())
    tags = client.get_run(parent).data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.branch"] == "main" and tags["ltcore.git.dirty"] == "false"
    assert tags["mlflow.source.git.repoURL"] == "https://example.com/lab/ltcore.git"
    assert "mlflow.source.git.commit" not in client.get_run(stage).data.tags
    (found,) = client.get_run(parent).inputs.dataset_inputs
    assert found.dataset.name == "digits-lt" and len(found.dataset.digest) == 16
    assert {t.key: t.value for t in found.tags} == {"mlflow.data.context": "train"}
    profile = json.loads(found.dataset.profile)
    assert profile["class_counts"] == run.dataset.class_counts.tolist()
    assert profile["train_images"] == len(run.dataset.train) and profile["num_classes"] == 10
    assert dataset_input(make_run(["la"]))["digest"] == record["digest"]

    Path("train.py").write_text("print(2)\n")  # a changed tracked file makes the checkout dirty
    (isolated / "data").mkdir()
    assert source_tags(str(isolated / "data"))["ltcore.git.dirty"] == "true"
    assert source_tags(str(tmp_path_factory.mktemp("elsewhere"))) == {}  # not in a repository
    monkeypatch.setenv(tracking.RUN_TAGS_ENV, '{"mlflow.source.git.commit": "given"}')
    by_hand = Tracker(local_uri(), "ltcore").start("ce", {})
    tags = client.get_run(by_hand).data.tags
    assert tags["mlflow.source.git.commit"] == "given" and "ltcore.git.dirty" not in tags
