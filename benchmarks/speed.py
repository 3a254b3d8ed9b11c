"""BCL's CIFAR-10-LT recipe trained the papers' way and ltcore's fast way, in one invocation.

Both pipelines train the same recipe: ``--plugin bcl --preset cifar10-lt`` (ResNet-32, cosine
classifier, AutoAugment + Cutout and two SimAugment views, batch 256) on CIFAR-10-LT IF 100
made from a CIFAR-10 JPEG tree by ``imagefolder-lt``:

- **reference**: per-image PIL/torchvision transforms in DataLoader workers feeding an eager
  fp32 step, as the papers' code trains (``views.backend = reference``, ``precision = fp32``,
  every ``speed.*`` switch and ``optim.fused`` off);
- **fast**: ltcore's defaults for the device (on CUDA: the training split resident on the GPU
  as uint8, batched views, bf16 autocast with fp32 losses, channels-last, fused SGD, TF32,
  cuDNN autotuning, the compiled backbone).

Each trains ``--warmup`` epochs untimed (workers starting, compilation, autotuning), then
``--epochs`` timed ones, each followed by the per-epoch validation, timed with CUDA events on
a GPU (``time.perf_counter`` on the CPU). Printed per pipeline: training samples/s, seconds per
epoch with validation, the projected 200-epoch wall-clock (set-up and warm-up plus 200 epochs
at the measured pace), samples/s of the step alone on pre-made views, and peak GPU memory. The
last line is the ratio of the fast path's training samples/s to the reference's. ``--ablate``
adds the fast path with one switch changed at a time (``ABLATIONS``): what each one buys.

    python benchmarks/speed.py --device cuda --json benchmarks/results/speed.json
    python benchmarks/speed.py --tiny --device cpu     # the same comparison in about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ltcore.config import resolve
from ltcore.engine.backends import stage_views, views_backend
from ltcore.engine.runs import prepare
from ltcore.engine.schedule import (learning_rate, parameter_groups, set_learning_rate,
                                    trained_parameters)
from ltcore.engine.updates import Updates
from ltcore.engine.step import distributed_step
from ltcore.engine.trainer import Trainer
from ltcore.plugins import Plugins
from ltcore.run import Step
from ltcore.tracking import SilentTracker

REFERENCE = ["views.backend=reference", "precision=fp32", "optim.fused=off",
             *(f"speed.{name}=off" for name in ("channels_last", "tf32", "cudnn_benchmark",
                                                "compile", "background_checkpoints"))]
"""The papers' way: per-image views in workers, an eager fp32 step, no fast-path switch."""

ABLATIONS = {
    "without batched views": ["views.backend=reference"],
    "without bf16": ["precision=fp32"],
    "without channels-last": ["speed.channels_last=off"],
    "without TF32": ["speed.tf32=off"],
    "without cuDNN autotuning": ["speed.cudnn_benchmark=off"],
    "without compile": ["speed.compile=off"],
    "without fused SGD": ["optim.fused=off"],
    "with CUDA graphs": ["speed.compile_mode=reduce-overhead"],
}
"""--ablate: the fast path with one switch changed at a time (what each one buys)."""

TINY = ["model.backbone=resnet8"]
"""--tiny: a smaller backbone (with --images and --batch-size shrunk too)."""


class Clock:
    """Seconds between marks: CUDA events on a GPU (what the device did), else the wall clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return end - start


class Pipeline:
    """One way of training the recipe, set up and ready to train epochs."""

    def __init__(self, name: str, assignments: list[str], args):
        started = time.perf_counter()
        self.name, self.args = name, args
        plugins = Plugins()
        settings = resolve(plugins, ["bcl"], presets=["cifar10-lt"], assignments=[
            "dataset=imagefolder-lt", f"data_dir={args.data_dir}", "imbalance_factor=100",
            f"device={args.device}", f"batch_size={args.batch_size}",
            f"views.workers={args.workers}", *(TINY if args.tiny else []), *assignments])
        self.run = run = prepare(plugins, ["bcl"], settings)
        self.stage = stage = run.main_stage
        self.sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
        self.sources = tuple(getattr(self.sampler, "sources", ("sample",)))
        self.views = stage_views(run, stage, self.sources)
        self.trainer = Trainer(run, SilentTracker(), Path(args.scratch) / name, progress=False)
        self.groups = parameter_groups(run, stage)
        self.clock = Clock(run.device)
        with trained_parameters(stage, self.groups):
            self.step_fn = distributed_step(run, stage, self.groups)
            self.updates = Updates(run, stage, self.groups)
            self.optimizer = self.updates.optimizer
        self.setup_s = time.perf_counter() - started
        self.train_s, self.epoch_s, self.seen, self.peak = [], [], 0, 0
        self.accuracy = float("nan")
        self.flops: float | None = None
        """FLOPs per training sample of one step (convolutions and matrix products, forward and
        backward; ``torch.utils.flop_counter``)."""

    def order(self, epoch: int) -> torch.Tensor:
        order = self.sampler.epoch_indices(epoch, torch.Generator().manual_seed(epoch))
        return (order.unsqueeze(1) if order.dim() == 1 else order)[:self.args.images]

    def epoch(self, epoch: int, timed: bool) -> None:
        """Train epoch ``epoch`` and validate; recorded when ``timed``, else part of set-up."""
        run, stage, clock = self.run, self.stage, self.clock
        wall = time.perf_counter()
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        with trained_parameters(stage, self.groups):
            set_learning_rate(self.optimizer, learning_rate(stage, epoch))
            start = clock.mark()
            _, seen, _ = self.trainer.train_epoch(0, stage, self.views, self.order(epoch),
                                                  self.sources, self.updates, epoch, epoch,
                                                  time.perf_counter(), None, self.step_fn)
            trained = clock.mark()
            self.accuracy = self.trainer.evaluate(stage, False).figures()["val/acc"]
            done = clock.mark()
            train_s, epoch_s = clock.seconds(start, trained), clock.seconds(start, done)
        if run.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(run.device))
        if timed:
            self.train_s.append(train_s)
            self.epoch_s.append(epoch_s)
            self.seen += seen
        else:
            self.setup_s += time.perf_counter() - wall

    def step_only(self) -> float:
        """Samples/s of ``--step-repeats`` steps on one batch of views made beforehand (no
        data loading or view making)."""
        run, stage, args = self.run, self.stage, self.args
        batch = next(iter(self.views.epoch(self.order(0), self.sources, args.batch_size, 0)))
        size = len(next(iter(batch.labels.values())))

        def one_step(i):
            step = Step(run, stage, 0, i, batch.indices, batch.labels, batch.images)
            losses = self.step_fn(step)
            total = sum(t.weight * loss for t, loss in zip(stage.losses, losses))
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            run.hooks.step_end(step=step)

        with trained_parameters(stage, self.groups):
            stage.model.train()
            if self.name == "reference" and self.flops is None:  # eager: every op is seen
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    one_step(0)
                self.flops = counter.get_total_flops() / size
            one_step(0)  # a batch the compiled code may not have seen yet
            start = self.clock.mark()
            for i in range(args.step_repeats):
                one_step(i + 1)
            return args.step_repeats * size / self.clock.seconds(start, self.clock.mark())

    def figures(self, step_rate: float) -> dict:
        run = self.run
        per_epoch = sum(self.epoch_s) / len(self.epoch_s)
        return {
            "pipeline": self.name, "views": views_backend(run, self.stage),
            "device": str(run.device), "precision": str(run.compute_dtype).removeprefix("torch."),
            "switches": run.speed.describe(), "fused_sgd": bool(self.optimizer.defaults["fused"]),
            "samples_per_s": self.seen / sum(self.train_s), "epoch_with_val_s": per_epoch,
            "projected_200ep_s": self.setup_s + 200 * per_epoch,
            "setup_and_warmup_s": self.setup_s, "step_only_samples_per_s": step_rate,
            "val_acc": self.accuracy, "flops_per_sample": self.flops,
            "peak_mem_gb": self.peak / 2 ** 30 if run.device.type == "cuda" else None,
        }


def measure(args) -> list[dict]:
    """Both pipelines (and with ``--ablate`` the fast one with each switch changed), warmed
    up, then their timed epochs and step-only runs interleaved (so that changes of the
    machine's load reach every one)."""
    variants = {"reference": REFERENCE, "fast": [], **(ABLATIONS if args.ablate else {})}
    pipelines = [Pipeline(name, assignments, args) for name, assignments in variants.items()]
    for p in pipelines:
        print(f"{p.name:24} views {views_backend(p.run, p.stage):9} "
              f"{str(p.run.compute_dtype).removeprefix('torch.'):8} switches: "
              f"{p.run.speed.describe()}; fused SGD {bool(p.optimizer.defaults['fused'])}",
              flush=True)
        for epoch in range(args.warmup):
            p.epoch(epoch, timed=False)
    for epoch in range(args.warmup, args.warmup + args.epochs):
        for p in pipelines:
            p.epoch(epoch, timed=True)
    rates = {p.name: [] for p in pipelines}
    for _ in range(2):
        for p in pipelines:
            rates[p.name].append(p.step_only())
    return [p.figures(max(rates[p.name])) for p in pipelines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                                  / "data" / "cifar10-jpeg"),
                        help="CIFAR-10 ImageFolder tree (train/, val/)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per pipeline")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=None,
                        help="training images per epoch (default: the whole IF-100 split)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="DataLoader workers of the reference pipeline")
    parser.add_argument("--step-repeats", type=int, default=20)
    parser.add_argument("--ablate", action="store_true",
                        help="also the fast path with one switch changed at a time")
    parser.add_argument("--tiny", action="store_true",
                        help="ResNet-8, 512 images per epoch, batch 64, 1 + 1 epochs, 3 steps")
    parser.add_argument("--scratch", default=None, help="folder for the trainers' files")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if args.tiny:
        args.images = args.images or 512
        args.batch_size, args.epochs, args.warmup, args.step_repeats = 64, 1, 1, 3
        args.workers = min(args.workers, 2)
    if args.scratch is None:
        import tempfile

        args.scratch = tempfile.mkdtemp(prefix="ltcore-speed-")
    if not (Path(args.data_dir) / "train").is_dir():
        parser.error(f"--data-dir {args.data_dir!r} has no train/ folder (a CIFAR-10 JPEG tree)")
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    print(f"# BCL cifar10-lt recipe on {machine}, torch {torch.__version__}; {args.warmup} "
          f"warm-up + {args.epochs} timed epochs of {args.images or 'all'} images, batch "
          f"{args.batch_size}", flush=True)
    results = measure(args)
    print("| pipeline                 | samples/s | x fast | s/epoch with val | 200 epochs, s "
          "| step only, samples/s | peak GB | val acc |")
    print("|--------------------------|----------:|-------:|-----------------:|--------------:"
          "|---------------------:|--------:|--------:|")
    reference, fast, *ablations = results
    for r in results:
        peak = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.2f}"
        print(f"| {r['pipeline']:24} | {r['samples_per_s']:9.0f} "
              f"| {r['samples_per_s'] / fast['samples_per_s']:6.2f} "
              f"| {r['epoch_with_val_s']:16.2f} | {r['projected_200ep_s']:13.0f} "
              f"| {r['step_only_samples_per_s']:20.0f} | {peak:>7} | {r['val_acc']:7.2f} |")
    print(f"one step: {reference['flops_per_sample'] / 1e9:.3f} GFLOP per training sample "
          f"(forward and backward of every view, torch.utils.flop_counter)")
    ratio = fast["samples_per_s"] / reference["samples_per_s"]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "device": machine, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "reference": reference, "fast": fast, "ablations": ablations,
            "speedup_vs_reference": ratio}, indent=2))
    print(f"speedup_vs_reference: {ratio:.2f}x (fast {fast['samples_per_s']:.0f} / reference "
          f"{reference['samples_per_s']:.0f} training samples/s on {args.device})")


if __name__ == "__main__":
    main()
