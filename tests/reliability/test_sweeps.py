"""``ltrun sweep`` as real processes: a launcher killed and run again, one sweep launched twice
at once, a launcher stopped by SIGTERM. Every cell trains exactly once, a killed cell continues
from its checkpoint, and no cell process outlives its launcher."""

import json
import re
import signal
import time

import pytest

from ltcore.experiments.claims import logged_run_id, process_start
from ltcore.testing import FAST, run_folder
from ltcore.tracking import experiment_id

SWEEP = ["sweep", "--imbalance-factor", "100", "--set", "optim.lr=0.02", *FAST]


def wait_for_line(process, log, pattern, limit_s=120):
    """Wait until the cell's ``log`` has a line matching ``pattern`` (the launcher running)."""
    deadline = time.monotonic() + limit_s
    while not (log.is_file() and re.search(pattern, log.read_text(errors="replace"), re.M)):
        assert process.proc.poll() is None, f"the sweep ended first:\n{process.out}{process.err}"
        assert time.monotonic() < deadline, f"{pattern!r} never appeared in {log}"
        time.sleep(0.05)


def cell_runs(ltrun, sweep_id):
    """Cell key -> [(run id, status)] of the sweep's parent runs."""
    client = ltrun.client()
    exp = client.get_experiment_by_name("ltcore").experiment_id
    found = {}
    for run in client.search_runs([exp], f"tags.`ltcore.sweep` = '{sweep_id}'"):
        tags = run.data.tags
        if "mlflow.parentRunId" not in tags and tags.get("ltcore.kind") != "sweep":
            found.setdefault(tags["ltcore.sweep.cell"], []).append((run.info.run_id,
                                                                   run.info.status))
    return found


def claims(ltrun, sweep_id):
    folder = ltrun.folder / "runs" / "sweeps" / sweep_id / "claims"
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def assert_no_cell_process_left(ltrun, sweep_id, limit_s=30):
    deadline = time.monotonic() + limit_s
    for claim in claims(ltrun, sweep_id).values():
        while process_start(claim["child_pid"]) == claim["child_started"]:
            assert time.monotonic() < deadline, f"cell process {claim['child_pid']} is left"
            time.sleep(0.1)


def test_a_killed_launcher_run_again_trains_each_cell_once_continuing_the_killed_one(
        ltrun_process):
    args = [*SWEEP, "--seeds", "0", "--epochs", "4", "--sweep-id", "k"]
    first = ltrun_process.start(*args)
    log = ltrun_process.folder / "runs" / "sweeps" / "k" / "cell-000.log"
    wait_for_line(first, log, r"^train 1/4 ")
    first.proc.send_signal(signal.SIGKILL)
    first.wait()
    killed = logged_run_id(str(log))

    again = ltrun_process(*args)
    assert again.code == 0, again.err
    assert (f"[1/1] resume plugins=ce seed=0: run {killed} of the launcher (pid "
            f"{first.proc.pid}) that is gone, from its checkpoint") in again.out
    assert "sweep k: 1 finished" in again.out
    assert cell_runs(ltrun_process, "k") == {"plugins=ce seed=0": [(killed, "FINISHED")]}
    assert f"run {killed} resumed from the checkpoint" in log.read_text()
    assert sorted(claims(ltrun_process, "k")) == ["cell-000.0.json", "cell-000.1.json"]
    assert_no_cell_process_left(ltrun_process, "k")


def test_one_sweep_launched_twice_at_once_trains_each_cell_once(ltrun_process):
    experiment_id(ltrun_process.client(), "ltcore")  # the store, made before both start
    args = [*SWEEP, "--seeds", "0,1", "--epochs", "1", "--sweep-id", "twice"]
    one, two = ltrun_process.start(*args), ltrun_process.start(*args)
    assert one.wait() == 0, one.err
    assert two.wait() == 0, two.err
    runs = cell_runs(ltrun_process, "twice")
    assert {key: [s for _, s in found] for key, found in runs.items()} == {
        "plugins=ce seed=0": ["FINISHED"], "plugins=ce seed=1": ["FINISHED"]}
    for name, claim in claims(ltrun_process, "twice").items():
        assert name.endswith(".0.json")  # each cell claimed once, by one of the two
        trainer, other = (one, two) if claim["pid"] == one.proc.pid else (two, one)
        ((run_id, _),) = runs[claim["cell"]]
        index = claim["index"] + 1
        assert f"[{index}/2] done   {claim['cell']}: run {run_id} in " in trainer.out
        # the other waited for it (or, started late, found it finished)
        assert f"done   {claim['cell']}: run {run_id} in " not in other.out
        assert (f"[{index}/2] done   {claim['cell']}: trained by another launcher (pid "
                f"{trainer.proc.pid}): run {run_id}" in other.out
                or re.search(rf"^{claim['index']} +{re.escape(claim['cell'])} +SKIPPED +{run_id} "
                             r".*finished in an earlier call", other.out, re.M)), other.out
    client = ltrun_process.client()
    exp = client.get_experiment_by_name("ltcore").experiment_id
    assert len(client.search_runs([exp], "tags.`ltcore.kind` = 'sweep'")) == 1  # one record


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow),
                                       pytest.param(signal.SIGHUP, 129, marks=pytest.mark.slow),
                                       pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_a_signal_to_the_launcher_stops_its_cell_with_a_checkpoint_and_exits_128_plus_it(
        ltrun_process, sig, code):
    args = [*SWEEP, "--seeds", "0", "--epochs", "30", "--sweep-id", "term"]
    process = ltrun_process.start(*args)
    log = ltrun_process.folder / "runs" / "sweeps" / "term" / "cell-000.log"
    wait_for_line(process, log, r"^train +1/30 ")
    process.signal(sig)  # the launcher alone, not its process group
    assert process.wait() == code, process.err
    assert process.err.strip().splitlines()[-1] == (
        f"sweep term stopped by {sig.name} (1 cell(s) stopped); continue it with the same ltrun "
        "sweep command and --sweep-id term")
    assert re.search(rf"^\[1/1\] FAILED plugins=ce seed=0 \(exit {code}\) after \d+ s: "
                     rf"stopped by {sig.name} in stage 'train'.*checkpoint saved ", process.out,
                     re.M), process.out
    assert "sweep term: 1 failed" in process.out
    run_id = logged_run_id(str(log))
    assert cell_runs(ltrun_process, "term") == {"plugins=ce seed=0": [(run_id, "KILLED")]}
    assert (run_folder(ltrun_process.folder / "runs", run_id) / "checkpoint.pt").is_file()
    assert claims(ltrun_process, "term")["cell-000.0.json"]["state"] == "KILLED"
    assert_no_cell_process_left(ltrun_process, "term", limit_s=0)
