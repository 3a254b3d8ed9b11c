"""Sweep cells claimed before they train: one claim per generation, who is live, adopting a
dead launcher's cell, a job taking its cell's claim over; one run per cell in comparisons, and
sweep ids in MLflow filters (no training)."""

import json
import os
import subprocess
import sys
import time

import pytest

from ltcore import experiments as ex
from ltcore.errors import ConfigError
from ltcore.experiments.claims import HOST, STALE_S, ClaimBook, logged_run_id, process_start
from ltcore.experiments.cluster import JOB_FAILED_CODE, CellJob
from ltcore.experiments.compare import literal
from ltcore.testing import mlflow_client
from ltcore.tracking import experiment_id


@pytest.fixture
def sweep(isolated):
    return ex.Sweep("c1", ex.plan_sweep([("ce",)], [0, 1]), ["--epochs", "1"])


def book_of(sweep, echo=print):
    client = mlflow_client()
    return ClaimBook(sweep.folder() / "claims", sweep, client,
                     experiment_id(client, "ltcore"), echo)


def ended_process():
    """The pid and start time of a process that ran and ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    started = process_start(proc.pid)
    proc.wait()
    return proc.pid, started


def test_exactly_one_process_makes_each_generation_of_a_claim(sweep):
    book = ClaimBook(sweep.folder() / "claims")
    first = book.take(0, "plugins=ce seed=0", "a1", None, log="cell-000.log")
    assert first is not None and first.generation == 0
    assert book.take(0, "plugins=ce seed=0", "a2", None) is None  # generation 0 is taken
    assert book.current(0) == first and first.live()  # this process owns it
    second = book.take(0, "plugins=ce seed=0", "a3", first)
    assert second.generation == 1 and book.current(0).attempt == "a3"
    assert book.take(0, "plugins=ce seed=0", "a4", first) is None
    assert sorted(p.name for p in book.folder.iterdir()) == ["cell-000.0.json", "cell-000.1.json"]
    book.finish(second, "FINISHED", "r" * 32)
    assert not book.current(0).live() and book.current(0).run_id == "r" * 32


def test_a_claim_is_live_while_its_owner_runs_or_its_heartbeat_is_fresh(sweep):
    book = ClaimBook(sweep.folder() / "claims")
    claim = book.take(1, "plugins=ce seed=1", "a", None)
    pid, started = ended_process()
    claim.pid, claim.started = pid, started
    assert not claim.live()  # this host: its process ended
    claim.host = "elsewhere"
    assert claim.live()  # another host: its heartbeat is fresh
    claim.heartbeat = time.time() - STALE_S - 1
    assert not claim.live()
    assert claim.by() == f"pid {os.getpid()}"  # the launcher that started the attempt


def test_a_dead_launchers_cell_process_is_stopped_and_its_cell_trained_anew(sweep):
    lines = []
    book = book_of(sweep, lines.append)
    cell = sweep.cells[0]
    dead = book.take(cell.index, cell.key, "gone", None, log=str(sweep.log_path(cell)))
    dead.pid, dead.started = ended_process()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    book.save(dead, pid=dead.pid, started=dead.started, launcher=f"pid {dead.pid} on {HOST}",
              child_pid=orphan.pid, child_started=process_start(orphan.pid))
    book.mine.clear()
    grant = book.claim(cell, sweep.log_path(cell))
    assert orphan.wait(timeout=5) == -15  # SIGTERM: a cell stops with a checkpoint
    assert lines == [f"stopped the process {orphan.pid} of cell plugins=ce seed=0, left by the "
                     f"launcher (pid {dead.pid}) that is gone"]
    assert grant.claim.generation == 1 and grant.resume is None  # no run to continue
    assert grant.claim.attempt != "gone" and grant.adopted == f"pid {dead.pid}"


def test_a_cell_held_by_a_live_launcher_is_waited_for_then_reported(sweep):
    book = book_of(sweep)
    cell = sweep.cells[1]
    other = book.take(cell.index, cell.key, "theirs", None)
    other.host = "elsewhere"  # another launcher: live by its heartbeat
    book.save(other)
    assert book.claim(cell, sweep.log_path(cell)).holder.attempt == "theirs"
    book.finish(other, "FAILED")
    grant = book.claim(cell, sweep.log_path(cell), waited=True)
    assert grant.result.status == "FAILED" and grant.claim is None
    assert grant.result.error.startswith(f"trained by another launcher (pid {other.pid}")


def test_a_job_takes_its_cells_claim_over_unless_it_was_claimed_again(sweep, tmp_path):
    book = ClaimBook(sweep.folder() / "claims")
    cell = sweep.cells[0]
    claim = book.take(cell.index, cell.key, "a", None, log=str(tmp_path / "cell.log"))
    run_line = "print('run ' + 'f' * 32 + ' started')"
    job = CellJob([sys.executable, "-c", run_line], [], str(tmp_path / "cell.log"),
                  str(tmp_path), claim=str(book.path(0, 0)))
    assert job() == 0
    taken = book.current(0)
    assert (taken.generation, taken.attempt, taken.state) == (1, "a", "FINISHED")
    assert taken.launcher == claim.launcher and taken.child_pid is not None
    assert logged_run_id(str(tmp_path / "cell.log")) == "f" * 32
    assert job() == 0 and book.current(0).generation == 2  # the same job, requeued
    book.take(cell.index, cell.key, "b", book.current(0))  # claimed again by another launcher
    (tmp_path / "cell.log").unlink()
    assert job() == JOB_FAILED_CODE and not (tmp_path / "cell.log").exists()


def test_filter_values_are_quoted_and_ids_no_filter_can_hold_are_refused(ltrun, isolated, tiny):
    assert literal("s1") == "'s1'" and literal("a'b") == '"a\'b"'
    with pytest.raises(ConfigError, match="both a single and a double quote"):
        literal("a'b\"c")
    refused = ltrun("sweep", "--sweep-id", "a'b\"c", *tiny)
    assert refused.exit_code == 2
    assert refused.stderr.strip() == ("Error: sweep id 'a\\'b\"c' cannot be searched for in "
                                      "MLflow: it holds both a single and a double quote")
    assert not (isolated / "runs").exists()
    experiment_id(mlflow_client(), "ltcore")
    compared = ltrun("compare", "--sweep", "a'b\"c")
    assert compared.exit_code == 2 and "sweep id 'a\\'b\"c' cannot be" in compared.stderr


def test_compare_counts_one_run_per_sweep_cell_and_names_the_duplicates(ltrun, isolated):
    client = mlflow_client()
    exp_id = experiment_id(client, "ltcore")
    made = {}
    for name, seed, acc, status in (("first", 0, 50.0, "FINISHED"), ("s1", 1, 60.0, "FINISHED"),
                                    ("s2", 2, 70.0, "FINISHED"), ("dup", 0, 10.0, "FINISHED"),
                                    ("failed", 1, 0.0, "FAILED")):
        tags = {"ltcore.sweep": "a'b", "ltcore.sweep.cell": f"plugins=ce seed={seed}",
                "ltcore.plugins": "ce", "seed": str(seed),
                "ltcore.sweep.axes": json.dumps({"plugins": "ce", "seed": str(seed)})}
        run = client.create_run(exp_id, tags=tags)
        client.log_metric(run.info.run_id, "test/acc", acc)
        client.set_terminated(run.info.run_id, status)
        made[name] = run.info.run_id
        time.sleep(0.01)  # the duplicate of seed 0 starts last
    result = ltrun("compare", "--sweep", "a'b", "--metrics", "acc")
    assert result.exit_code == 0, result.stderr
    row = [line for line in result.output.splitlines() if line.startswith("ce ")]
    assert row and row[0].split()[1] == "3", result.output  # 3 runs for 3 seeds
    assert "1 runs that did not finish are left out" in result.output
    (warning,) = [line for line in result.stderr.splitlines() if "duplicate" in line]
    assert warning == (f"warning: 1 duplicate run(s) of sweep cells left out, one run per cell "
                       f"counted: sweep a'b cell 'plugins=ce seed=0': {made['first']} (kept "
                       f"{made['dup']})")
