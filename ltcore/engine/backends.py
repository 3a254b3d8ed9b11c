"""How a stage's views are made: batched on the training device, or per image in workers.

:class:`BatchedViews` keeps the training split on the device as uint8 and applies each view
pipeline's batched form to whole batches with per-sample randomness; :class:`ReferenceViews`
applies the per-image torchvision form in DataLoader workers (files or in-memory images), each
image's randomness seeded by (epoch seed, position in the epoch, view). :func:`views_backend`
picks one from ``views.backend``.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import attrs
import torch

from ..data import Split, load_image
from ..errors import ConfigError
from ..run import Run, Stage


@attrs.define
class Batch:
    indices: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]


def batch_rows(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of an epoch's index rows; a final batch of one sample is dropped
    (BatchNorm cannot train on it)."""
    rows = list(order.split(batch_size))
    if len(rows) > 1 and len(rows[-1]) < 2:
        rows.pop()
    return rows


class BatchedViews:
    """The training split on the device as uint8; views made per batch with per-sample randomness."""

    def __init__(self, run: Run, stage: Stage, sources: tuple[str, ...]):
        ds = run.dataset
        self.images = ds.train.images.to(run.device)
        self.labels = ds.train.labels.to(run.device)
        self.views = {role: run.component("view", v.pipeline).make_batched(
            ds.image_size, ds.mean, ds.std) for role, v in stage.views.items() if v.pipeline}
        self.sources = {role: v.source for role, v in stage.views.items() if v.pipeline}
        self.device = run.device
        self.generator: torch.Generator | None = None
        """The generator of the epoch being made (its state goes into a mid-epoch checkpoint)."""

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int, seed: int,
              start: int = 0, state: torch.Tensor | None = None) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on; ``state`` is the generator's state at
        that batch (from :meth:`generator_state` when the epoch stopped)."""
        self.generator = generator = torch.Generator(device=self.device).manual_seed(seed)
        if state is not None:
            generator.set_state(state)
        order = order.to(self.device)
        for rows in batch_rows(order, batch_size)[start:]:
            indices = {s: rows[:, i] for i, s in enumerate(sources)}
            labels = {s: self.labels[idx] for s, idx in indices.items()}
            images = {role: fn(self.images[indices[self.sources[role]]], generator)
                      for role, fn in self.views.items()}
            yield Batch(indices, labels, images)

    def generator_state(self) -> torch.Tensor | None:
        return None if self.generator is None else self.generator.get_state()


class _ReferenceDataset(torch.utils.data.Dataset):
    """Per-image views through torchvision transforms; each image's randomness is seeded by
    (epoch seed, position in the epoch, view)."""

    def __init__(self, split: Split, transforms: dict[str, tuple[int, Any]]):
        self.split = split
        self.transforms = transforms

    def image(self, index: int):
        if self.split.images is not None:
            from PIL import Image

            return Image.fromarray(self.split.images[index].permute(1, 2, 0).numpy())
        return load_image(self.split.paths[index])

    def __len__(self):
        return len(self.split)

    def __getitem__(self, key):
        seed, position, row = key
        out = {}
        for v, (role, (source, transform)) in enumerate(self.transforms.items()):
            s = (seed * 1_000_003 + position * 101 + v) % (2 ** 63)
            torch.manual_seed(s)
            random.seed(s)
            out[role] = transform(self.image(row[source]))
        return out


class _EpochBatches:
    """Batch sampler whose order is replaced every epoch (workers persist across epochs)."""

    def __init__(self):
        self.keys: list[list] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


class ReferenceViews:
    """Per-image reference pipelines in DataLoader workers (files or in-memory images)."""

    def __init__(self, run: Run, stage: Stage, sources: tuple[str, ...]):
        ds = run.dataset
        self.labels = ds.train.labels
        column = {s: i for i, s in enumerate(sources)}
        transforms = {role: (column[v.source], run.component("view", v.pipeline)
                             .make_reference(ds.image_size, ds.mean, ds.std))
                      for role, v in stage.views.items() if v.pipeline}
        self.batches = _EpochBatches()
        workers = run.config.views.workers
        self.loader = torch.utils.data.DataLoader(
            _ReferenceDataset(ds.train, transforms), batch_sampler=self.batches,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=run.device.type == "cuda")
        self.device = run.device

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int, seed: int,
              start: int = 0, state: torch.Tensor | None = None) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on (every image's randomness depends on its
        position in the epoch only, so there is no generator state)."""
        all_rows = batch_rows(order.cpu(), batch_size)
        self.batches.keys = []
        position = 0
        for rows in all_rows:
            keys = []
            for row in rows.tolist():
                keys.append((seed, position, row))
                position += 1
            self.batches.keys.append(keys)
        all_rows, self.batches.keys = all_rows[start:], self.batches.keys[start:]
        for rows, images in zip(all_rows, self.loader):
            indices = {s: rows[:, i].to(self.device) for i, s in enumerate(sources)}
            labels = {s: self.labels[rows[:, i]].to(self.device) for i, s in enumerate(sources)}
            yield Batch(indices, labels, {r: x.to(self.device, non_blocking=True)
                                          for r, x in images.items()})

    def generator_state(self) -> None:
        return None


def views_backend(run: Run, stage: Stage) -> str:
    """``batched`` or ``reference``: ``views.backend``, with ``auto`` resolved."""
    choice = run.config.views.backend
    pipelines = [run.component("view", v.pipeline) for v in stage.views.values() if v.pipeline]
    batched_ok = run.dataset.in_memory and all(p.batched for p in pipelines)
    if choice == "batched" and not batched_ok:
        raise ConfigError("views.backend = 'batched' needs an in-memory small-image dataset and "
                          "view pipelines with a batched implementation; use 'reference'")
    if choice == "auto":
        # On the CPU the per-image reference in DataLoader workers overlaps with the step and is
        # as fast as the batched ops (docs/benchmarks.md); on a GPU the batched path wins.
        return "batched" if batched_ok and run.device.type == "cuda" else "reference"
    return choice


def stage_views(run: Run, stage: Stage, sources: tuple[str, ...]) -> BatchedViews | ReferenceViews:
    """The views of ``stage`` made by the backend :func:`views_backend` picks."""
    backend = views_backend(run, stage)
    return (BatchedViews if backend == "batched" else ReferenceViews)(run, stage, sources)
