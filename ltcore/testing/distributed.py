"""Checks of plugins in distributed runs, on the CPU: several gloo ranks in child processes.

:func:`run_on_ranks` runs an importable function on every rank of a fresh process group and
returns each rank's result. :func:`train_steps` trains a few steps of an assembled run on
fixed global batches, split over the ranks as the engine splits them, and returns the losses
and the run's state: a plugin is right in a distributed run when the losses and the parameters
equal a single process's on the same global batches and every rank holds the same banks.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ltcore import hookimpl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, fn: Callable, args: tuple,
               folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MLFLOW_DISABLE_TELEMETRY="true")
    torch.set_num_threads(1)
    from ..distributed import leave

    try:
        torch.save(fn(*args), Path(folder) / f"rank{rank}.pt")
    finally:
        leave()


def run_on_ranks(fn: Callable, *args: Any, world_size: int = 2) -> list[Any]:
    """``fn(*args)`` on each of ``world_size`` ranks, child processes with torchrun's
    variables set (``fn`` joins the process group with :func:`ltcore.distributed.join`), and
    every rank's result, by rank. ``fn`` must be importable (a module-level function of an
    installed module); a rank's exception is raised here."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_rank_main, args=(world_size, free_port(), fn, args, folder),
                           nprocs=world_size, start_method="spawn")
        return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False)
                for r in range(world_size)]


def train_steps(selected: list[str], assignments: list[str], steps: int = 3,
                batch_size: int = 24, task_views: bool = False) -> dict[str, Any]:
    """Train ``steps`` steps of the main stage of the run ``selected`` assemble (the test kit's
    fast settings, ``assignments``) on global batches that do not depend on the number of
    ranks: the first ``steps * batch_size`` indices of the sampler's epoch 0, the views made
    for the whole batch by one seeded generator per step, then split over the ranks; with
    ``task_views``, the task's own batches (:meth:`ltcore.Task.views`, views made per image
    and keyed by the image's place in the epoch), which a task other than classification
    trains on.

    The run's modules (the stage model, key encoders, teachers) are in eval mode: BatchNorm's
    batch statistics are a rank's own unless it is SyncBatchNorm (CUDA only), so eval mode
    makes each sample's outputs independent of how the batch is split, which isolates what the
    gathering must get right.

    Returns the losses of every step (``[steps][terms]``), the terms' names, the state of
    every run module (parameters, banks) after the last step and the model's validation outputs
    then (``val``: the task's outputs of an evaluation sharded over the ranks and gathered).
    """
    from ..config import resolve
    from ..distributed import join
    from ..engine.runs import prepare
    from ..engine.schedule import (build_optimizer, learning_rate, parameter_groups,
                                   set_learning_rate, trained_parameters)
    from ..engine.step import distributed_step
    from ..run import Step
    from . import FAST_SETTINGS, plugins_holding

    world = join(torch.device("cpu"), "gloo", 60.0)
    plugins = plugins_holding(*selected)
    settings = resolve(plugins, list(selected),
                       assignments=[*FAST_SETTINGS, "device=cpu", *assignments])
    run = prepare(plugins, list(selected), settings, world)
    stage = run.main_stage
    sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
    sources = tuple(getattr(sampler, "sources", ("sample",)))
    order = sampler.epoch_indices(0, torch.Generator().manual_seed(run.epoch_seed(stage, 0)))
    order = order.unsqueeze(1) if order.dim() == 1 else order
    if task_views:
        seed = run.epoch_seed(stage, 0)
        batches = run.task.views(run, stage, sources).epoch(order[:steps * batch_size], sources,
                                                            batch_size, seed)
    else:
        batches = _generated_batches(run, world, order, sources, steps, batch_size)
    run.hooks.stage_start(run=run, stage=stage)
    run.hooks.epoch_start(run=run, stage=stage, epoch=0)
    groups = parameter_groups(run, stage)
    losses = []
    with trained_parameters(stage, groups):
        step_fn = distributed_step(run, stage, groups)
        optimizer = build_optimizer(run, stage, groups)
        set_learning_rate(optimizer, learning_rate(stage, 0))
        run.modules.eval()
        for i, batch in enumerate(batches):
            step = Step(run, stage, 0, i, batch.indices, batch.labels, batch.images,
                        shares=batch.shares)
            values = step_fn(step)
            total = sum(t.weight * v for t, v in zip(stage.losses, values))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            run.hooks.step_end(step=step)
            losses.append([float(v.detach()) for v in values])
    return {"terms": [t.name for t in stage.losses], "losses": losses,
            "state": {k: v.detach().clone() for k, v in run.modules.state_dict().items()
                      if torch.is_tensor(v)},
            "val": run.evaluate(stage.model, ["val"]).outputs["val"]}


def _generated_batches(run, world, order, sources, steps: int, batch_size: int):
    """The first ``steps`` global batches of ``order``, each one's views made for the whole
    batch by a generator seeded with the step, this rank's share taken."""
    from ..engine.backends import Batch

    ds, stage = run.dataset, run.main_stage
    views = {role: (v.source, run.component("view", v.pipeline).make_batched(
        ds.image_size, ds.mean, ds.std)) for role, v in stage.views.items() if v.pipeline}
    for i in range(steps):
        rows = order[i * batch_size:(i + 1) * batch_size]
        indices = {s: rows[:, k] for k, s in enumerate(sources)}
        labels = {s: ds.train.labels[idx] for s, idx in indices.items()}
        generator = torch.Generator().manual_seed(1_000 + i)
        images = {role: world.local(fn(ds.train.images[indices[source]], generator))
                  for role, (source, fn) in views.items()}
        yield Batch(indices, labels, images, world.shares(len(rows)) if world.distributed
                    else None)


class FailOnRank:
    """A test plugin that raises :class:`~ltcore.PluginError` at the end of epoch ``epoch``
    (0-based) on rank ``rank`` only, as a plugin bug that shows on one rank does."""

    def __init__(self, rank: int = 1, epoch: int = 0):
        self.rank, self.epoch = rank, epoch

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics) -> None:
        from ..errors import PluginError

        if run.world.rank == self.rank and epoch == self.epoch:
            raise PluginError(f"a failure on rank {self.rank} only")


def train_failing_on_a_rank(folder: str, *args: str) -> str:
    """``ltrun --plugin ce --plugin fail ARGS`` in ``folder`` with :class:`FailOnRank` as
    ``fail`` (rank 1 raises after the first epoch); the error this rank ended with, in words."""
    from ..config import resolve
    from ..engine.runs import train
    from ..errors import LtcoreError
    from . import FAST_SETTINGS, plugins_holding

    os.chdir(folder)
    plugins = plugins_holding(extra={"fail": FailOnRank()})
    selected = ["ce", "fail"]
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, "device=cpu",
                                                       "distributed.timeout_s=30", *args])
    try:
        train(plugins, selected, settings, progress=False)
    except LtcoreError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "finished"
