"""The class-wise queue as a registered memory bank, and the GML student's trainable pieces.

``class-queue`` is the memory-bank component any plugin can build by name: per-class ring
buffers whose lengths follow eq. 5 of the GML paper for the run's training-set class counts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .queue import ClassWiseQueue


def class_queue(run, size: int = 4096, min_size: int = 2, dim: int = 128,
                dtype: torch.dtype = torch.float32, overflow: str = "first") -> ClassWiseQueue:
    """Class-wise queues of ``size`` entries in all (``k``), at least ``min_size`` (``k_m``) per
    class, ``|Z_c| = k_m + (k - k_m C) pi_c`` for the run's class prior; ``overflow`` (``first``
    or ``last``) says which samples a class keeps when one batch holds more than its queue (see
    ``ClassWiseQueue``). Attach the result with ``run.add_module`` so it is checkpointed."""
    from ltcore import ConfigError

    counts = run.class_counts.cpu()
    if size < min_size * counts.numel():
        raise ConfigError(f"a class-wise queue of {size} entries cannot give each of the "
                          f"{counts.numel()} classes at least {min_size}; raise the queue size "
                          f"to at least {min_size * counts.numel()} or lower the minimum")
    return ClassWiseQueue.from_class_counts(counts, size, min_size, dim, dtype, overflow)


def with_fresh_rows(stored: Tensor, fresh: Tensor, slot: Tensor, writer: Tensor) -> Tensor:
    """``stored`` with the rows a batch was just written to replaced by the batch's own
    (gradient-carrying) ``fresh`` rows: ``out[slot[i]] = fresh[writer[i]]``.

    Each surviving sample feeds exactly one row, so its gradient is counted once even when
    a class received more samples than its queue holds.
    """
    source = torch.full((stored.shape[0],), -1, dtype=torch.long, device=stored.device)
    source = source.scatter(0, slot, writer)
    written = (source >= 0).unsqueeze(1)
    return torch.where(written, fresh[source.clamp_min(0)].to(stored.dtype), stored)


def fill_random(queue: ClassWiseQueue, generator: torch.Generator | None = None) -> None:
    """Fill every slot with a random unit vector (the reference code's queue start).

    The slots become valid, keep their class labels and get negative sample indices
    (``-1 - slot``), which never match a dataset index.
    """
    with torch.no_grad():
        features = torch.randn(queue.queue_features.shape, generator=generator)
        queue.queue_features.copy_(nn.functional.normalize(features, dim=1))
        queue.queue_valid.fill_(True)
        queue.queue_indices.copy_(-1 - torch.arange(queue.queue_indices.numel()))


class Temperature(nn.Module):
    """The GML temperature ``tau_g``, stored as ``log tau_g`` so it stays positive.

    Trained only through ``temperature_loss`` (the main loss sees a detached copy); the
    optimiser gives it no weight decay. ``learnable=False`` keeps it fixed.
    """

    def __init__(self, initial: float, learnable: bool = True):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial)),
                                            requires_grad=learnable)

    def forward(self) -> Tensor:
        """``tau_g`` as a 0-d tensor (with gradient to ``log_temperature`` when learnable)."""
        return self.log_temperature.exp()
