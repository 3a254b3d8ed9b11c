"""Training images/s of the file pipeline: decoding JPEGs and making a recipe's views, per backend.

Writes ``--images`` real photographs as JPEG files of ImageNet-like, varied sizes (CIFAR-10
training images from ``../shared/data/cifar10-jpeg``, upscaled to 300-500 px sides, quality 90)
in an ImageNet-LT layout, then makes the training views of one recipe for ``--epochs`` epochs
with each backend and reports training images/s (each image gives all of the recipe's views):

* ``reference``: per image, PIL decoding and torchvision / timm transforms in ``--workers``
  DataLoader workers, as the papers' code trains;
* ``batched``: the workers only read the files; decoding (``decode_jpeg``, on the device on a
  GPU) and the views' batched forms run on the device, per-sample randomness.

Recipes: ``bcl`` (BCL's ImageNet recipe: the classifier view ``imagenet-randaugment``, which only
has a per-image form, and two ``imagenet-simaugment`` views), ``simaugment`` (three
``imagenet-simaugment`` views: the same cost without timm's RandAugment, and what the batched
backend can make entirely on the device). No model runs: this is the input pipeline alone.

Example::

    python benchmarks/files.py --images 512 --epochs 2              # CPU, cores as workers
    python benchmarks/files.py --device cuda --images 4096 --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg" / "train"
RECIPES = {
    "bcl": ("imagenet-randaugment", "imagenet-simaugment"),
    "simaugment": ("imagenet-simaugment", "imagenet-simaugment"),
}


def write_tree(root: Path, count: int, classes: int = 10) -> Path:
    """``count`` JPEGs of varied sizes from the shared CIFAR-10 images, with split lists."""
    import random

    from PIL import Image

    rng = random.Random(0)
    sources = sorted(p for p in SHARED.rglob("*.*"))[: count * 3: 3]
    if len(sources) < count:
        raise SystemExit(f"need {count} images under {SHARED}, found {len(sources)}")
    lines = []
    for i, source in enumerate(sources):
        label = i % classes
        folder = root / "train" / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (rng.randint(300, 500), rng.randint(300, 500))
        Image.open(source).convert("RGB").resize(size, Image.BICUBIC).save(
            folder / f"{i}.jpg", quality=90)
        lines.append(f"train/c{label}/{i}.jpg {label}")
    (root / "ImageNet_LT_train.txt").write_text("\n".join(lines) + "\n")
    for name in ("ImageNet_LT_val.txt", "ImageNet_LT_test.txt"):  # not read here
        (root / name).write_text("\n".join(lines[:classes]) + "\n")
    return root


def images_per_second(tree: Path, recipe: str, backend: str, args) -> float:
    from ltcore.config import resolve
    from ltcore.engine.backends import stage_views
    from ltcore.engine.runs import prepare
    from ltcore.plugins import Plugins

    classifier, contrastive = RECIPES[recipe]
    plugins = Plugins()
    settings = resolve(plugins, ["bcl"], presets=["imagenet-lt-resnet50"], overrides={
        "data_dir": str(tree), "device": args.device, "views.backend": backend,
        "views.workers": args.workers, "views.classifier": classifier,
        "views.contrastive": contrastive, "batch_size": args.batch_size,
        "model.backbone": "resnet8"})
    run = prepare(plugins, ["bcl"], settings)
    views = stage_views(run, run.main_stage, ("sample",))
    order = torch.arange(len(run.dataset.train)).unsqueeze(1)
    rates = []
    for epoch in range(args.epochs + 1):  # the first epoch starts the workers: not timed
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        start, seen = time.perf_counter(), 0
        for batch in views.epoch(order, ("sample",), args.batch_size, seed=epoch):
            seen += len(batch.labels["sample"])
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        if epoch:
            rates.append(seen / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=-1, help="-1: one per usable core")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tree = write_tree(Path(folder), args.images)
        os.chdir(folder)
        from ltcore.config import ViewsConfig

        workers = ViewsConfig(workers=args.workers).loader_workers
        print(f"{args.images} JPEGs of 300-500 px, 224 px views, batch {args.batch_size}, "
              f"{workers} workers, {args.device} ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores), torch {torch.__version__}")
        print(f"{'recipe':<12} {'backend':<10} {'images/s':>9}")
        for recipe in args.recipes:
            rates = {}
            for backend in ("reference", "batched"):
                if recipe == "bcl" and backend == "batched":
                    continue  # imagenet-randaugment has no batched form
                rates[backend] = images_per_second(tree, recipe, backend, args)
                print(f"{recipe:<12} {backend:<10} {rates[backend]:>9.1f}")
            if len(rates) == 2:
                print(f"{recipe:<12} {'ratio':<10} {rates['batched'] / rates['reference']:>9.2f}")


if __name__ == "__main__":
    main()
