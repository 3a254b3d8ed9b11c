"""How a global batch is split over ranks, per-rank seeds, ``ltrun --nproc`` and the errors of
a distributed run (a failing rank, options the CPU cannot do)."""

import sys

import mlflow
import pytest
import torch

from ltcore import ConfigError, Plugins, World
from ltcore.cli import nproc_launch
from ltcore.engine.backends import batch_rows
from ltcore.testing import assemble_run
from ltcore.testing.distributed import run_on_ranks, train_failing_on_a_rank

def registered_samplers() -> list[tuple[str, str]]:
    """Every sampler the installed plugins register, with the plugin that registers it."""
    return sorted((c.name, c.plugin) for c in Plugins().components["sampler"].values())


@pytest.mark.parametrize("sampler,plugin", registered_samplers())
def test_the_ranks_shares_make_up_the_global_batch_of_every_sampler(sampler, plugin):
    """Every rank draws the same order and takes its consecutive share of each global batch:
    the shares make up exactly the batches of one process, so every sampler keeps its
    sampling distribution."""
    plugins = Plugins()
    selected = [plugin] if plugin in plugins.available() else ["ce"]
    dense = ["model.backbone=fcn-small"] if plugin == "seg" else []  # a segmentation network
    run = assemble_run(selected, *dense, plugins=plugins)
    stage = run.main_stage
    options = stage.sampler_options if stage.sampler == sampler else (
        {"power": 0.5} if sampler == "class-power" else {})
    built = run.build("sampler", sampler, **options)
    order = built.epoch_indices(0, torch.Generator().manual_seed(3))
    order = order.unsqueeze(1) if order.dim() == 1 else order
    for size in (2, 3):
        batches = batch_rows(order, 20, size)
        assert len(batches) >= len(batch_rows(order, 20)) - 1
        for rows, alone in zip(batches, batch_rows(order, 20)):
            assert torch.equal(rows, alone)  # the batches of one process
            worlds = [World(rank, size) for rank in range(size)]
            parts = [w.local(rows) for w in worlds]
            assert torch.equal(torch.cat(parts), rows)  # in rank order, nothing lost
            assert [len(p) for p in parts] == worlds[0].shares(len(rows))
            assert min(len(p) for p in parts) >= 2


def test_a_last_batch_too_small_for_every_rank_is_dropped():
    order = torch.arange(45).unsqueeze(1)
    assert [len(b) for b in batch_rows(order, 20, 1)] == [20, 20, 5]
    assert [len(b) for b in batch_rows(order, 20, 3)] == [20, 20]


def test_each_rank_draws_from_a_seed_of_its_own():
    seeds = [World(rank, 4).seed(12345) for rank in range(4)]
    assert seeds[0] == 12345 and len(set(seeds)) == 4
    assert World().seed(7) == 7 and World(1, 2).seed(7) == World(1, 4).seed(7)


def test_nproc_starts_torchrun_on_this_machine(monkeypatch):
    import torch.distributed.run as torchrun

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    command = nproc_launch(["--plugin", "bcl", "--nproc", "4", "--epochs", "2"])
    assert command == ["--standalone", "--nproc-per-node=4", "-m", "ltcore", "--plugin", "bcl",
                       "--epochs", "2"]
    # what ltrun's launcher gives torch's elastic agent: 4 local ranks of python -m ltcore
    config, program, program_args = torchrun.config_from_args(torchrun.parse_args(command))
    assert config.nproc_per_node == 4 and config.min_nodes == config.max_nodes == 1
    assert program == sys.executable
    assert program_args == ["-u", "-m", "ltcore", "--plugin", "bcl", "--epochs", "2"]
    assert nproc_launch(["--nproc=2", "--resume", "last"])[-2:] == ["--resume", "last"]
    assert nproc_launch(["--plugin", "bcl"]) is None
    assert nproc_launch(["sweep", "--nproc-per-cell", "2"]) is None
    with pytest.raises(ConfigError, match="--nproc expects"):
        nproc_launch(["--nproc", "two"])
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert nproc_launch(["--nproc", "4"]) is None  # already one of torchrun's ranks


def test_sync_batchnorm_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="sync_batchnorm needs CUDA"):
        assemble_run(["ce"], "distributed.sync_batchnorm=true")


def test_an_error_on_one_rank_ends_the_run_and_names_it(tmp_path):
    endings = run_on_ranks(train_failing_on_a_rank, str(tmp_path), "epochs=3", world_size=2)
    assert endings[1] == "PluginError: a failure on rank 1 only"
    assert endings[0].startswith("RankFailure: rank 1 of 2 failed: PluginError: a failure on "
                                 "rank 1 only"), endings[0]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ltcore").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["ltcore.error"].startswith("rank 1 of 2 failed: PluginError")
    assert len(runs) == 2  # rank 1 recorded nothing


def test_a_rank_goes_on_to_the_agreed_step_after_a_second_signal():
    """Under SLURM a rank gets SIGTERM from the scheduler and again from the launcher: a rank of
    a distributed run keeps going to the step the ranks agree on; one process stops at once."""
    import os
    import signal

    from ltcore.engine.interrupts import StopSignals

    with StopSignals(patient=True) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.received == "SIGTERM" and stop.number == signal.SIGTERM and not stop.finishing
    with pytest.raises(KeyboardInterrupt):
        with StopSignals() as alone:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
    assert alone.received == "SIGTERM" and alone.finishing
    stop.received = "a signal to another rank (SIGTERM to rank 1)"
    assert stop.number == 0  # what this rank tells the others: it got none itself


def test_the_launcher_names_the_rank_that_failed_first(tmp_path, monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from ltcore import launch
    from ltcore.launch import ERROR_FILE, outcome

    recorded = []
    monkeypatch.setattr(launch, "record_failure", lambda run, line: recorded.append((run, line)))

    def ended(*codes: int) -> ChildFailedError:  # rank by rank, in the order they ended
        return ChildFailedError("ltcore", {rank: ProcessFailure(rank, 100 + rank, code,
                                                                str(tmp_path / "none"))
                                           for rank, code in codes})

    assert outcome(ended((1, 143), (0, 143)), 2, tmp_path) == (143, None)  # rank 0 said it
    assert outcome(ended((0, 130), (1, -2)), 2, tmp_path) == (130, None)
    code, line = outcome(ended((1, -9), (0, 1)), 2, tmp_path)
    assert (code, line) == (2, "rank 1 of 2 failed first: killed by SIGKILL; the other rank "
                               "was stopped")
    (tmp_path / ERROR_FILE.format(rank=2)).write_text("rank 2 of 4 failed: PluginError: bad")
    (tmp_path / "run.json").write_text('{"run_id": "x", "resume": "ltrun --nproc 4 --resume '
                                       'x", "tracking_uri": "sqlite:///mlflow.db"}')
    code, line = outcome(ended((2, 2), (0, -15)), 4, tmp_path)
    assert (code, line) == (2, "rank 2 of 4 failed first: exited with code 2: PluginError: bad; "
                               "the other 3 ranks were stopped. Continue with: ltrun --nproc 4 "
                               "--resume x")
    assert recorded == [({"run_id": "x", "resume": "ltrun --nproc 4 --resume x",
                          "tracking_uri": "sqlite:///mlflow.db"}, line)]  # as ltcore.error
    for rank in range(2):  # every rank's error alike: as one process says it
        (tmp_path / ERROR_FILE.format(rank=rank)).write_text("the loss diverged")
    assert outcome(ended((0, 3), (1, 3)), 2, tmp_path) == (3, "the loss diverged")
    # a rank that failed while the others stopped is the one named
    assert outcome(ended((1, 143), (0, 3)), 2, tmp_path)[1].startswith(
        "rank 0 of 2 failed first: exited with code 3: the loss diverged")


KEEP_ALIVE_RACE = """
import sys, threading, time
from datetime import timedelta
from torch.distributed.elastic.rendezvous.utils import _PeriodicTimer
if sys.argv[1] == "launcher":
    from ltcore.launch import ignore_keep_alive_self_join
    ignore_keep_alive_self_join()
holder, released, done = [], threading.Event(), threading.Event()
def keep_alive():  # the timer's thread drops the last reference to the timer, as torch's
    released.wait(10)  # rendezvous keep-alive can when the agent unwinds on a signal
    holder.clear()
    done.set()
holder.append(_PeriodicTimer(timedelta(seconds=0.01), keep_alive))
holder[0].start()
released.set()
done.wait(10)
time.sleep(0.2)
def other():
    raise ValueError("another unraisable error")
import weakref
class Thing: pass
thing = Thing()
weakref.finalize(thing, other)
del thing
"""


def test_the_launcher_leaves_out_the_agents_keep_alive_joining_itself():
    """torch's rendezvous keep-alive timer, finalized in its own thread, would print "Exception
    ignored ... cannot join current thread" under a stopped ``ltrun --nproc``; any other
    unraisable error is still printed."""
    import subprocess

    def stderr(role: str) -> str:
        return subprocess.run([sys.executable, "-c", KEEP_ALIVE_RACE, role], capture_output=True,
                              text=True, timeout=120).stderr

    plain = stderr("plain")
    assert "cannot join current thread" in plain and "another unraisable error" in plain
    launcher = stderr("launcher")
    assert "cannot join current thread" not in launcher, launcher
    assert "another unraisable error" in launcher
