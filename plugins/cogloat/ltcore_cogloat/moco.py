"""MoCo v2 pieces used by CoGloAT pre-training: the momentum (key) encoder update and a labelled key queue."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def momentum_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """EMA of parameters, copy of buffers: ``theta_t <- m * theta_t + (1 - m) * theta_s``.

    ``target`` (the key encoder) and ``source`` (the query encoder) must have the same
    parameters and buffers in the same order and shapes. Buffers (BatchNorm running mean/var,
    ``num_batches_tracked``) are copied from ``source``: integer counters cannot be averaged,
    and the query encoder's running statistics are estimated on the same images, so the key
    encoder evaluates like the query encoder. ``momentum`` is a Python float in [0, 1]
    (MoCo v2 uses 0.999); a per-step schedule passes a new float each step, with no host sync.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    target_buffers = list(target.buffers())
    source_buffers = list(source.buffers())
    _check_matching("parameters", target_params, source_params)
    _check_matching("buffers", target_buffers, source_buffers)
    if target_params:
        torch._foreach_lerp_(target_params, source_params, 1.0 - momentum)
    if target_buffers:
        torch._foreach_copy_(target_buffers, source_buffers)


def _check_matching(kind: str, targets: list[Tensor], sources: list[Tensor]) -> None:
    if len(targets) != len(sources):
        raise ValueError(f"target has {len(targets)} {kind}, source has {len(sources)}")
    for position, (target, source) in enumerate(zip(targets, sources)):
        if target.shape != source.shape:
            raise ValueError(
                f"{kind} #{position}: target shape {tuple(target.shape)} != source shape {tuple(source.shape)}"
            )


class LabelledQueue(nn.Module):
    """FIFO memory of the last ``size`` keys ``[size, dim]`` with their labels ``[size]``.

    Buffers (all in ``state_dict``): ``keys``, ``labels`` (-1 in never-filled slots), ``valid``
    (``[size]`` bool, False until a slot is first written) and ``pointer`` (0-d long, the slot the
    next key goes to, which is also the oldest entry once the queue is full). Order of the slots
    does not matter to the losses; pass ``valid`` as their negatives mask.
    """

    keys: Tensor
    labels: Tensor
    valid: Tensor
    pointer: Tensor

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"size and dim must be positive, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("valid", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Writes ``keys [B, dim]`` and ``labels [B]`` at slots ``(pointer + arange(B)) % size``
        (oldest entries overwritten, wrap-around) and advances the pointer by ``B``. When
        ``B > size`` only the last ``size`` keys can survive, so only they are written."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be [B, {self.dim}], got {tuple(keys.shape)}")
        if labels.shape != keys.shape[:1]:
            raise ValueError(f"labels must be [{keys.shape[0]}], got {tuple(labels.shape)}")
        count = keys.shape[0]
        skipped = max(count - self.size, 0)
        slots = (self.pointer + skipped + torch.arange(count - skipped, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, slots, keys[skipped:].detach().to(self.keys.dtype))
        self.labels.index_copy_(0, slots, labels[skipped:].to(self.labels.dtype))
        self.valid.index_fill_(0, slots, True)
        self.pointer.copy_((self.pointer + count) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
