"""Training over several processes with ``torch.distributed``, started by ``torchrun``.

A run learns its :class:`World` from the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``...); without them it is a world of one process and every
method here is the identity. In a world of several ranks:

* every rank draws the same epoch order from the run's sampler and takes its share of each
  global batch (:meth:`World.shares`), so every sampler keeps its sampling distribution;
* after the stacked forward the engine gathers the step's per-sample tensors (features,
  logits, embeddings) from every rank, gradients flowing back to each rank's own part, so the
  hooks and loss terms see the global batch as one process would;
* every rank computes the same losses and the same bank updates; DistributedDataParallel
  averages the gradients, which, because the gather's backward sums the ranks' gradients,
  gives exactly the gradient of the global batch's loss;
* evaluation is sharded over the ranks and gathered, and only rank 0 records to MLflow and
  writes files.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Sequence

import attrs
import torch
import torch.distributed as dist

from .errors import ConfigError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def backend_for(device: torch.device, choice: str) -> str:
    """The process-group backend: ``choice``, or for ``auto`` NCCL on CUDA and gloo on CPU."""
    if choice != "auto":
        return choice
    return "nccl" if device.type == "cuda" else "gloo"


@attrs.define(eq=False)
class World:
    """The processes that train one run together: this process's ``rank`` among ``size``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """``gloo`` or ``nccl`` in a world of several ranks, None in a single process."""

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that records to MLflow and writes the run's files."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's seed derived from a run-wide ``seed`` (``seed`` itself on rank 0), for
        the randomness each rank draws for its own samples (views, dropout)."""
        return seed if self.rank == 0 else (seed * 1_000_003 + 7_919 * self.rank) % 2 ** 63

    # -- splitting work --

    def shares(self, count: int) -> list[int]:
        """How many of ``count`` rows each rank takes: equal parts, the first ``count % size``
        ranks one more (as :meth:`torch.Tensor.tensor_split`)."""
        base, extra = divmod(count, self.size)
        return [base + (r < extra) for r in range(self.size)]

    def span(self, count: int) -> slice:
        """Where this rank's consecutive share of ``count`` rows is (:meth:`shares`)."""
        shares = self.shares(count)
        start = sum(shares[:self.rank])
        return slice(start, start + shares[self.rank])

    def local(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's consecutive share of ``rows`` (all of them in a single process)."""
        return rows[self.span(len(rows))] if self.distributed else rows

    # -- collectives --

    def gather(self, tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated along dim 0, rank by rank; gradients flow back to
        each rank's own rows (the backward sums the ranks' gradients). ``sizes`` are the ranks'
        row counts when they differ (:meth:`shares`); the tensor itself in a single process."""
        if not self.distributed:
            return tensor
        sizes = list(sizes) if sizes is not None else [len(tensor)] * self.size
        if len(tensor) != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} gathers {len(tensor)} rows, expected "
                             f"{sizes[self.rank]}")
        longest = max(sizes)
        padded = tensor
        if len(tensor) < longest:
            padded = torch.cat([tensor, tensor.new_zeros((longest - len(tensor),
                                                          *tensor.shape[1:]))])
        gathered = _GatherRows.apply(padded.contiguous(), self)
        return torch.cat([part[:n] for part, n in zip(gathered.chunk(self.size), sizes)])

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable value)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, by rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers of ``module`` (BatchNorm statistics, banks)."""
        if not self.distributed:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def by_rank(self, value: int, device: torch.device) -> list[int]:
        """Every rank's integer ``value``, by rank (one all-reduce)."""
        if not self.distributed:
            return [value]
        values = torch.zeros(self.size, dtype=torch.int64, device=device)
        values[self.rank] = value
        dist.all_reduce(values)
        return [int(v) for v in values.tolist()]


class _GatherRows(torch.autograd.Function):
    """All-gather of equal-sized row blocks; the backward sums every rank's gradient of the
    whole and keeps this rank's block (an all-reduce: every backend has one)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, world: World) -> torch.Tensor:
        ctx.world = world
        parts = [torch.empty_like(tensor) for _ in range(world.size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        world = ctx.world
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(world.size)[world.rank].clone(), None


SINGLE = World()
"""The world of one process."""


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def join(device: torch.device, backend: str, timeout_s: float) -> World:
    """This process's place in the world torchrun started (joining its process group once), or
    :data:`SINGLE` when the process was not started by torchrun or is alone in its world."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; train in one process")
    backend = backend_for(device, backend)
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("distributed.backend = 'nccl' needs CUDA devices; use gloo on the CPU")
    if device.type == "cuda":  # NCCL's collectives and object transfers use this device
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]),
                 dist.get_backend())


def leave() -> None:
    """Leave the process group (at the end of ``ltrun``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
