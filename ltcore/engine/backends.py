"""How a stage's views are made: batched on the training device, or per image in workers.

:class:`BatchedViews` keeps the training split on the device as uint8 and applies each view
pipeline's batched form to whole batches with per-sample randomness; :class:`FileBatchedViews`
does the same for image files, read by DataLoader workers and decoded on the device (on a GPU,
``decode_jpeg`` there); :class:`ReferenceViews` applies the per-image torchvision form in
DataLoader workers (files or in-memory images), each image's randomness seeded by (epoch seed,
position in the epoch, view). :func:`views_backend` picks one from ``views.backend``.
"""

from __future__ import annotations

from typing import Any, Iterator

import attrs
import torch

from ..data import Split, load_image
from ..errors import ConfigError
from ..run import Run, Stage
from ..views import seed_image_randomness
from ..views.files import EncodedImages, as_list, decode
from ..launch import worker_options


@attrs.define
class Batch:
    """One step's samples: ``indices`` and ``labels`` of the global batch, ``images`` of this
    rank's share; ``shares`` are the ranks' sample counts (None in one process)."""

    indices: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]
    shares: list[int] | None = None


def batch_rows(order: torch.Tensor, batch_size: int, ranks: int = 1) -> list[torch.Tensor]:
    """Consecutive global batches of an epoch's index rows; a final batch that would leave a
    rank fewer than two samples is dropped (BatchNorm cannot train on one)."""
    rows = list(order.split(batch_size))
    if len(rows) > 1 and len(rows[-1]) < 2 * ranks:
        rows.pop()
    return rows


def shut_down_workers(loader: torch.utils.data.DataLoader) -> None:
    """End the persistent workers of ``loader`` now (a views object's ``close()``, when its
    stage ends). Left to the garbage collector, a DataLoader's shutdown can run at any later
    point of the process, where its workers were seen to take 20 s to end (4 joins of 5 s)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def _shares(run: Run, rows: torch.Tensor) -> list[int] | None:
    return run.world.shares(len(rows)) if run.world.distributed else None


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
        self.run = run
        self.generator: torch.Generator | None = None
        """The generator of the epoch being made (its state goes into a mid-epoch checkpoint)."""

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int, seed: int,
              start: int = 0, state: torch.Tensor | None = None) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on; ``state`` is the generator's state at
        that batch (from :meth:`generator_state` when the epoch stopped). Each rank makes the
        views of its share with a generator seeded by its own seed (:meth:`World.seed`)."""
        world = self.run.world
        self.generator = generator = torch.Generator(device=self.device).manual_seed(
            world.seed(seed))
        if state is not None:
            generator.set_state(state)
        order = order.to(self.device)
        column = {s: i for i, s in enumerate(sources)}
        for rows in batch_rows(order, batch_size, world.size)[start:]:
            indices = {s: rows[:, i] for i, s in enumerate(sources)}
            labels = {s: self.labels[idx] for s, idx in indices.items()}
            mine = world.local(rows)
            images = {role: fn(self.images[mine[:, column[self.sources[role]]]], generator)
                      for role, fn in self.views.items()}
            yield Batch(indices, labels, images, _shares(self.run, rows))

    def generator_state(self) -> torch.Tensor | None:
        return None if self.generator is None else self.generator.get_state()

    def close(self) -> None:
        """Nothing to end: the views are made on the device."""


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
            seed_image_randomness((seed * 1_000_003 + position * 101 + v) % (2 ** 63))
            out[role] = transform(self.image(row[source]))
        return out


class EpochKeys:
    """The batch sampler of views made per image in DataLoader workers: this rank's keys of
    each batch of the epoch being made, ``(epoch seed, position in the epoch, index row)`` per
    image, so that an image's randomness depends on its key alone (workers persist across
    epochs; :meth:`epoch` replaces the keys)."""

    def __init__(self):
        self.keys: list[list] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)

    def epoch(self, order: torch.Tensor, batch_size: int, seed: int, start: int,
              world) -> list[torch.Tensor]:
        """Set the keys of the epoch's batches (``order`` in global batches, :func:`batch_rows`)
        from batch ``start`` on; returns those batches' global index rows."""
        all_rows = batch_rows(order.cpu(), batch_size, world.size)
        keys, position = [], 0
        for rows in all_rows:
            positions = world.local(torch.arange(position, position + len(rows))).tolist()
            keys.append([(seed, p, row) for p, row in zip(positions, world.local(rows).tolist())])
            position += len(rows)
        self.keys = keys[start:]
        return all_rows[start:]


class ReferenceViews:
    """Per-image reference pipelines in DataLoader workers (files or in-memory images)."""

    def __init__(self, run: Run, stage: Stage, sources: tuple[str, ...]):
        ds = run.dataset
        self.labels = ds.train.labels
        column = {s: i for i, s in enumerate(sources)}
        transforms = {role: (column[v.source], run.component("view", v.pipeline)
                             .make_reference(ds.image_size, ds.mean, ds.std))
                      for role, v in stage.views.items() if v.pipeline}
        self.batches = EpochKeys()
        workers = run.config.views.loader_workers
        self.loader = torch.utils.data.DataLoader(
            _ReferenceDataset(ds.train, transforms), batch_sampler=self.batches,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=run.device.type == "cuda", **worker_options())
        self.device = run.device
        self.run = run

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int, seed: int,
              start: int = 0, state: torch.Tensor | None = None) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on (every image's randomness depends on its
        position in the epoch only, so there is no generator state, and a rank makes exactly
        the views one process would make of its share)."""
        all_rows = self.batches.epoch(order, batch_size, seed, start, self.run.world)
        for rows, images in zip(all_rows, self.loader):
            indices = {s: rows[:, i].to(self.device) for i, s in enumerate(sources)}
            labels = {s: self.labels[rows[:, i]].to(self.device) for i, s in enumerate(sources)}
            yield Batch(indices, labels, {r: x.to(self.device, non_blocking=True)
                                          for r, x in images.items()}, _shares(self.run, rows))

    def generator_state(self) -> None:
        return None

    def close(self) -> None:
        shut_down_workers(self.loader)


class FileBatchedViews:
    """Image files read by DataLoader workers, decoded on the training device (JPEGs on a GPU
    with ``decode_jpeg``; in the workers on the CPU) and made into views there by the
    pipelines' batched forms, per-sample randomness from one generator per epoch."""

    def __init__(self, run: Run, stage: Stage, sources: tuple[str, ...]):
        ds = run.dataset
        self.paths = ds.train.paths
        self.labels = ds.train.labels.to(run.device)
        self.views = {role: run.component("view", v.pipeline).make_batched(
            ds.image_size, ds.mean, ds.std) for role, v in stage.views.items() if v.pipeline}
        self.sources = {role: v.source for role, v in stage.views.items() if v.pipeline}
        self.used = sorted(set(self.sources.values()), key=sources.index)
        self.column = {s: i for i, s in enumerate(sources)}
        self.batches = EpochKeys()
        workers = run.config.views.loader_workers
        self.loader = torch.utils.data.DataLoader(
            EncodedImages(self.paths, decode_jpegs=run.device.type != "cuda"),
            batch_sampler=self.batches, num_workers=workers, persistent_workers=workers > 0,
            collate_fn=as_list, pin_memory=run.device.type == "cuda",
            **worker_options())
        self.device = run.device
        self.run = run
        self.generator: torch.Generator | None = None

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int, seed: int,
              start: int = 0, state: torch.Tensor | None = None) -> Iterator[Batch]:
        """As :meth:`BatchedViews.epoch`; a batch reads the files of the sources its views use
        (of this rank's share)."""
        world = self.run.world
        self.generator = generator = torch.Generator(device=self.device).manual_seed(
            world.seed(seed))
        if state is not None:
            generator.set_state(state)
        all_rows = batch_rows(order.cpu(), batch_size, world.size)[start:]
        used = [self.column[s] for s in self.used]
        self.batches.keys = [world.local(rows)[:, used].flatten().tolist() for rows in all_rows]
        for rows, items in zip(all_rows, self.loader):
            shares = _shares(self.run, rows)
            rows = rows.to(self.device)
            indices = {s: rows[:, i] for i, s in enumerate(sources)}
            labels = {s: self.labels[idx] for s, idx in indices.items()}
            flat = world.local(rows)[:, used].flatten().tolist()
            decoded = decode(items, [self.paths[i] for i in flat], self.device)
            images_of = {s: decoded[k::len(used)] for k, s in enumerate(self.used)}
            images = {role: fn.from_images(images_of[self.sources[role]], generator)
                      for role, fn in self.views.items()}
            yield Batch(indices, labels, images, shares)

    def generator_state(self) -> torch.Tensor | None:
        return None if self.generator is None else self.generator.get_state()

    def close(self) -> None:
        shut_down_workers(self.loader)


def views_backend(run: Run, stage: Stage) -> str:
    """``batched`` or ``reference``: ``views.backend``, with ``auto`` resolved."""
    choice = run.config.views.backend
    ds = run.dataset
    pipelines = [run.component("view", v.pipeline) for v in stage.views.values() if v.pipeline]
    batched_ok = all(p.batched for p in pipelines) and (ds.in_memory or all(
        p.make_batched(ds.image_size, ds.mean, ds.std).any_size for p in pipelines))
    if choice == "batched" and not batched_ok:
        raise ConfigError("views.backend = 'batched' needs view pipelines with a batched form "
                          "and, for image files, pipelines that crop or resize any image to the "
                          "view size (the imagenet-* ones, simaugment); use 'reference'")
    if choice == "auto":
        # On the CPU the per-image reference in DataLoader workers overlaps with the step and is
        # as fast as the batched ops (docs/benchmarks.md); on a GPU the batched path wins.
        return "batched" if batched_ok and run.device.type == "cuda" else "reference"
    return choice


def stage_views(run: Run, stage: Stage, sources: tuple[str, ...]):
    """The views of ``stage`` made by the backend :func:`views_backend` picks."""
    if views_backend(run, stage) == "reference":
        return ReferenceViews(run, stage, sources)
    return (BatchedViews if run.dataset.in_memory else FileBatchedViews)(run, stage, sources)
