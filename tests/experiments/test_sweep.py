"""``ltrun sweep``: planning cells, validating them up front, parallel subprocess cells, failed
cells recorded as FAILED runs, and re-running a sweep to complete it."""

import json
import re

import pytest

from ltcore import experiments as ex
from ltcore.errors import ConfigError
from ltcore.testing import FAST, mlflow_client


def test_lists_ranges_and_grids_are_parsed():
    assert ex.split_values("0.1, 0.2,[160,180],'a,b'") == ["0.1", "0.2", "[160,180]", "'a,b'"]
    assert ex.parse_seeds(["0-2", "7"]) == [0, 1, 2, 7]
    assert ex.parse_floats(["10,100"], "--imbalance-factors") == [10.0, 100.0]
    assert ex.parse_grid(["optim.lr=0.1,0.2", "schedule.milestones=[160,180],[120,160]"]) == {
        "optim.lr": ["0.1", "0.2"], "schedule.milestones": ["[160,180]", "[120,160]"]}
    assert ex.parse_plugin_sets(["bcl", "bcl+rcl"]) == [("bcl",), ("bcl", "rcl")]
    for bad, call in (("0,,1", lambda: ex.parse_seeds(["0,,1"])),
                      ("x", lambda: ex.parse_seeds(["x"])),
                      ("-1", lambda: ex.parse_floats(["-1"], "--imbalance-factors")),
                      ("lr", lambda: ex.parse_grid(["lr"])),
                      ("seed", lambda: ex.parse_grid(["seed=1,2"]))):
        with pytest.raises(ConfigError):
            call()


def test_cells_are_every_combination_with_seeds_innermost():
    cells = ex.plan_sweep([("bcl",), ("bcl", "rcl")], [0, 1], [10.0, 100.0],
                          {"optim.lr": ["0.1", "0.2"]}, devices=["cuda:0", "cuda:1"])
    assert len(cells) == 16
    assert [c.key for c in cells[:3]] == [
        "plugins=bcl imbalance_factor=10 optim.lr=0.1 seed=0",
        "plugins=bcl imbalance_factor=10 optim.lr=0.1 seed=1",
        "plugins=bcl imbalance_factor=10 optim.lr=0.2 seed=0"]
    assert len({c.key for c in cells}) == 16
    assert [c.device for c in cells[:3]] == ["cuda:0", "cuda:1", "cuda:0"]
    args = cells[-1].args(["--epochs", "3", "--set", "optim.lr=0.5"])
    assert args[:4] == ["--plugin", "bcl", "--plugin", "rcl"]
    assert args.index("optim.lr=0.2") > args.index("optim.lr=0.5")  # the grid wins over --set
    assert args[-7:] == ["--seed", "1", "--imbalance-factor", "100", "--device", "cuda:1",
                         "--no-progress"]


def test_every_cell_is_validated_before_anything_trains(ltrun, isolated):
    bad = ltrun("sweep", "--plugins", "ce", "--grid", "optim.lr=0.1,-1", "--epochs", "1")
    assert bad.exit_code == 2 and "sweep cell 1" in bad.stderr and "optim.lr" in bad.stderr
    unknown = ltrun("sweep", "--plugins", "ce+nope")
    assert unknown.exit_code == 2 and "unknown plugin 'nope'" in unknown.stderr
    axis = ltrun("sweep", "--seeds", "1,2", "--seed", "1")
    assert axis.exit_code == 2 and "use --seeds" in axis.stderr
    assert ltrun("sweep", "--plugin", "ce").exit_code == 2
    dry = ltrun("sweep", "--plugins", "ce", "--plugins", "la", "--seeds", "0-2", "--dry-run",
                "--epochs", "2")
    assert dry.exit_code == 0, dry.stderr
    lines = dry.output.strip().splitlines()
    assert len(lines) == 6 and "ltrun --plugin la --epochs 2" in lines[-1]
    assert not (isolated / "runs").exists()


def test_parallel_subprocess_cells_and_a_failed_cell(ltrun, isolated, tiny):
    args = ["sweep", "--plugins", "ce", "--seeds", "3", "--grid", "dataset=digits-lt,imagefolder-lt",
            "--max-parallel", "2", "--sweep-id", "s1", *tiny, *FAST]
    result = ltrun(*args)
    assert result.exit_code == 1, result.stderr  # a cell failed, the sweep went on
    assert "FAILED plugins=ce dataset=imagefolder-lt seed=3" in result.output
    # a line per finished cell, with its run and figures
    assert re.search(r"\[\d/2\] done   plugins=ce dataset=digits-lt seed=3: run \w+ in \d+ s  "
                     r"val/acc [0-9.]+  test/acc [0-9.]+", result.output), result.output
    assert "sweep s1: 1 finished, 1 failed" in result.output
    assert "ltrun compare --sweep s1" in result.output

    client = mlflow_client(f"sqlite:///{isolated / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ltcore").experiment_id
    tagged = client.search_runs([experiment], "tags.`ltcore.sweep` = 's1'")
    record = [r for r in tagged if r.data.tags.get("ltcore.kind") == "sweep"]
    cells = {r.data.tags["ltcore.sweep.cell"]: r for r in tagged
             if "mlflow.parentRunId" not in r.data.tags and r not in record}
    assert set(cells) == {"plugins=ce dataset=digits-lt seed=3",
                          "plugins=ce dataset=imagefolder-lt seed=3"}
    done = cells["plugins=ce dataset=digits-lt seed=3"]
    assert done.info.status == "FINISHED" and done.data.tags["seed"] == "3"
    assert done.data.metrics["axis/seed"] == 3.0 and "test/acc" in done.data.metrics
    assert json.loads(done.data.tags["ltcore.sweep.axes"])["dataset"] == "digits-lt"
    failed = cells["plugins=ce dataset=imagefolder-lt seed=3"]
    assert failed.info.status == "FAILED"
    assert failed.info.run_name == f"ce-s3-{failed.info.run_id[:8]}"
    assert "imagefolder-lt needs --data-dir" in failed.data.tags["ltcore.error"]
    assert "--set dataset=imagefolder-lt" in failed.data.params["ltrun.args"]
    assert [a.path for a in client.list_artifacts(failed.info.run_id, "sweep")] == [
        "sweep/cell-001.log"]
    (record,) = record
    assert record.info.status == "FAILED"
    assert record.data.metrics["cells/finished"] == 1 and record.data.metrics["cells/failed"] == 1
    assert (isolated / "runs" / "sweeps" / "s1" / "summary.csv").is_file()
    # a cell's log shows its plan and a line per epoch, as the console of a run does
    log = (isolated / "runs" / "sweeps" / "s1" / "cell-000.log").read_text()
    assert "plan: 1 stage, 1 epoch in all" in log and re.search(r"^train 1/1  loss ", log, re.M)

    again = ltrun(*args)  # the same sweep id: only what did not finish runs again
    assert again.exit_code == 1
    assert "1 to run, 1 already finished" in again.output
    assert "sweep s1: 1 skipped, 1 failed" in again.output
    finished = client.search_runs([experiment], "tags.`ltcore.sweep` = 's1' and "
                                  "attributes.status = 'FINISHED'")
    assert [r.info.run_id for r in finished
            if "mlflow.parentRunId" not in r.data.tags] == [done.info.run_id]
