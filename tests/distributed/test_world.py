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
    run = assemble_run(selected, plugins=plugins)
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
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    command = nproc_launch(["--plugin", "bcl", "--nproc", "4", "--epochs", "2"])
    assert command == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node=4", "-m", "ltcore", "--plugin", "bcl", "--epochs", "2"]
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
