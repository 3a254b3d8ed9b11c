"""Throughput of the view pipelines: per-image reference (DataLoader workers) vs batched.

Measures image-views per second for each CIFAR-sized pipeline and for the BCL recipe (one
``autoaugment-cutout`` view plus two ``simaugment`` views per image):

* reference: torchvision transforms on PIL images in a ``DataLoader`` with ``--workers``
  persistent workers, over in-memory uint8 images (one warm-up epoch, then one timed epoch);
* batched: the batched pipeline on ``--device`` over the same images held there as uint8,
  ``--batch-size`` images per call; CUDA is timed with events after warm-up batches.

Examples::

    python benchmarks/views.py                       # small CPU run (under two minutes)
    python benchmarks/views.py --device cuda --images 262144 --batch-size 8192 --compile
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ltcore.views import build_batched, build_reference

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
PIPELINES = ("standard", "autoaugment-cutout", "simaugment", "randaugment")
BCL_RECIPE = ("autoaugment-cutout", "simaugment", "simaugment")


class InMemoryViews(Dataset):
    """uint8 HWC images in memory; each item is the stack of the views of one image."""

    def __init__(self, images: np.ndarray, transforms: list) -> None:
        self.images = images
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = Image.fromarray(self.images[index])
        return torch.stack([transform(image) for transform in self.transforms])


def load_images(count: int, data: Path | None, seed: int) -> np.ndarray:
    """``count`` uint8 images ``[N, 32, 32, 3]``: JPEGs from an ImageFolder tree, or uniform noise."""
    if data is None:
        return np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    files = sorted(data.glob("*/*.jpg"))[:count]
    if len(files) < count:
        raise SystemExit(f"{data} has {len(files)} JPEGs, fewer than --images {count}")
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in files])


def reference_rate(images: np.ndarray, names: tuple[str, ...], args: argparse.Namespace) -> float:
    transforms = [build_reference(name, 32, CIFAR_MEAN, CIFAR_STD) for name in names]
    loader = DataLoader(
        InMemoryViews(images, transforms),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    for _ in loader:  # warm-up epoch: starts the workers
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(images) * len(names) / (time.perf_counter() - start)


def batched_rate(images: torch.Tensor, names: tuple[str, ...], args: argparse.Namespace) -> float:
    device = images.device
    pipelines = [build_batched(name, 32, CIFAR_MEAN, CIFAR_STD).to(device) for name in names]
    appliers = [torch.compile(p.apply, fullgraph=True) if args.compile else p.apply for p in pipelines]
    generator = torch.Generator(device=device).manual_seed(0)
    batches = images.split(args.batch_size)

    def run(batch_list) -> None:
        for batch in batch_list:
            for pipeline, apply in zip(pipelines, appliers):
                apply(batch, pipeline.sample(batch.shape, generator))

    run(batches[: args.warmup_batches])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(batches)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
    else:
        begin = time.perf_counter()
        run(batches)
        seconds = time.perf_counter() - begin
    return len(images) * len(names) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048, help="images per timed epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the reference path")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the batched path")
    parser.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) the batched apply")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None,
                        help="ImageFolder of 32x32 JPEGs (e.g. ../shared/data/cifar10-jpeg/train); default noise")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()

    images = load_images(args.images, args.data, seed=0)
    on_device = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(args.device)
    rows = []
    for label, names in [(name, (name,)) for name in PIPELINES] + [("BCL recipe (aa-cutout + 2 sim)", BCL_RECIPE)]:
        if not args.skip_reference:
            rows.append((label, f"reference, {args.workers} workers", "cpu", reference_rate(images, names, args)))
        implementation = "batched" + (" compiled" if args.compile else "")
        rows.append((label, implementation, args.device, batched_rate(on_device, names, args)))
        print(f"{rows[-1][0]:32s} done", flush=True)

    print()
    print(f"{'pipeline':32s} {'implementation':24s} {'device':7s} {'views/s':>12s}")
    for label, implementation, device, rate in rows:
        print(f"{label:32s} {implementation:24s} {device:7s} {rate:12,.0f}")


if __name__ == "__main__":
    main()
