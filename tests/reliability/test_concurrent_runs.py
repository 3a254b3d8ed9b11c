"""Many runs at once on one store: eight processes that record runs through the tracker, all
opening a sqlite store that does not exist yet at the same instant (its creation is serialised
by a file lock); in the full test (``-m slow``) eight whole ``ltrun`` runs on a new sqlite store
and eight against a tracking server backed by PostgreSQL (the server and its database take a
minute to start). Every run finishes and no metric point is lost."""

import subprocess
import sys
import textwrap

import pytest

from ltcore.testing import FAST

RUNS = 8
EPOCHS = 2
TINY = ["--epochs", str(EPOCHS), "--imbalance-factor", "100", *FAST]
PER_EPOCH = ("train/loss", "train/lr", "val/acc", "val/hmean")  # test/* on the parent only


def train_at_once(ltrun_process, *extra):
    processes = [ltrun_process.start(*TINY, "--seed", str(seed), *extra) for seed in range(RUNS)]
    for process in processes:
        process.wait()
    for process in processes:
        assert process.code == 0, process.err
        assert "Traceback" not in process.err and "warning" not in process.err.lower(), process.err
    return [process.run_id() for process in processes]


def assert_every_point_recorded(client, run_ids):
    assert len(set(run_ids)) == RUNS
    for run_id in run_ids:
        parent = client.get_run(run_id)
        assert parent.info.status == "FINISHED"
        assert {"val/acc", "test/acc"} <= set(parent.data.metrics)
        (stage,) = client.search_runs([parent.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert stage.info.status == "FINISHED"
        for key in PER_EPOCH:
            steps = sorted(m.step for m in client.get_metric_history(stage.info.run_id, key))
            assert steps == list(range(EPOCHS)), (run_id, key, steps)
        assert client.get_metric_history(stage.info.run_id, "test/acc") == []  # the parent's


RECORD_RUN = textwrap.dedent("""
    import pathlib, sys, time
    from ltcore.tracking import Tracker
    uri, seed = sys.argv[1], sys.argv[2]
    pathlib.Path(f"ready-{seed}").touch()
    deadline = time.monotonic() + 120
    while len(list(pathlib.Path().glob("ready-*"))) < %d and time.monotonic() < deadline:
        time.sleep(0.005)  # every process opens the new store at once
    tracker = Tracker(uri, "ltcore")
    parent = tracker.start(f"run-{seed}", {"seed": seed})
    stage = tracker.start("train", {"ltcore.stage": "train"}, parent_id=parent)
    for epoch in range(%d):
        tracker.log_metrics(stage, {key: epoch + 0.5 for key in %r}, step=epoch)
        assert tracker.flush()
    tracker.log_metrics(parent, {"val/acc": 1.0, "test/acc": 1.0}, step=%d)  # as a run
    assert tracker.flush() and tracker.end(stage) and tracker.end(parent)
    assert tracker.summary() is None, tracker.summary()
    print(parent)
""" % (RUNS, EPOCHS, PER_EPOCH, EPOCHS))


def test_eight_processes_record_runs_at_once_on_a_new_sqlite_store(tmp_path):
    """The race of first runs on a new store without the cost of training: the processes are
    started, and once all have imported their modules they open the store at the same
    moment."""
    from mlflow.tracking import MlflowClient

    store = tmp_path / "store" / "mlflow.db"
    assert not store.exists()
    uri = f"sqlite:///{store}"
    processes = [subprocess.Popen([sys.executable, "-c", RECORD_RUN, uri, str(seed)],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for seed in range(RUNS)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
        assert "Traceback" not in err and "warning" not in err.lower(), err
    assert_every_point_recorded(MlflowClient(tracking_uri=uri),
                                [out.split()[-1] for out, _ in outputs])


@pytest.mark.slow
def test_eight_first_runs_at_once_on_a_new_sqlite_store(ltrun_process):
    assert not (ltrun_process.folder / "mlflow.db").exists()
    run_ids = train_at_once(ltrun_process)
    assert_every_point_recorded(ltrun_process.client(), run_ids)


@pytest.mark.slow
def test_eight_runs_at_once_against_a_server_on_postgresql(ltrun_process,
                                                           mlflow_server_on_postgres):
    from mlflow.tracking import MlflowClient

    uri = mlflow_server_on_postgres.uri
    run_ids = train_at_once(ltrun_process, "--tracking-uri", uri)
    assert_every_point_recorded(MlflowClient(tracking_uri=uri), run_ids)
