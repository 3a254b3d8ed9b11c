"""Extra cost per pre-training epoch of CoGloAT's global selection and of ProCo (paper Table 4).

Trains each setting below for ``--warmup + --epochs`` pre-training epochs (no classifier stage,
no evaluation) and times every epoch from the start of its ``epoch_start`` hooks to its
``epoch_end``, so the time includes what the plain step does not: drawing the k-global positives
in the sampler, embedding their views with the key encoder, ProCo's prototype refresh at epoch
start and its loss. Each setting is the plain contrastive baseline (KCL: MoCo v2 with ``k``
same-label queue keys as positives, constant temperature) with one module added, as in Table 4:

* ``KCL``: ``cogloat.k=0``, ``variant=kcl+kglobal``, ``kcl_positives=3``, constant temperature;
* ``+ global selection``: ``k = 3`` positives from the whole training set (``unsupervised+kglobal``);
* ``+ adaptive temperature``: KCL with the per-class temperature of eq. 8;
* ``+ ProCo``: KCL plus ``--plugin proco`` (coreset prototypes refreshed every epoch);
* ``CoGloAT + ProCo``: the defaults of both plugins.

Views come from the batched backend by default (the embedded dataset in memory, per-sample
randomness), so the time is that of the step and of the modules, not of per-image PIL work in
this process (``--views reference`` for that). The ProCo coreset is selected at epoch 0 and then
every ``proco.reselect_every`` (10) epochs; the timed epochs (after ``--warmup``) include no
selection, whose one-off cost shows in the epoch-0 column. Wall-clock and this process's CPU time
are both reported: on a CPU shared with other work the CPU time is the steadier measure.

Example (the embedded dataset, small model, CPU)::

    python benchmarks/cogloat_cost.py                 # ResNet-8, batch 64, 5 x (2 + 3) epochs each
    python benchmarks/cogloat_cost.py --backbone resnet32 --batch-size 128 --epochs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import torch  # noqa: E402

from ltcore import hookimpl  # noqa: E402
from ltcore.config import resolve  # noqa: E402
from ltcore.engine.runs import train  # noqa: E402
from ltcore.plugins import Plugins  # noqa: E402

KCL = ["cogloat.k=0", "cogloat.variant=kcl+kglobal", "cogloat.kcl_positives=3",
       "cogloat.adaptive_temperature=false"]
SETTINGS = [
    ("KCL (baseline)", ["cogloat"], KCL, 1.0),
    ("+ global selection (k=3)", ["cogloat"],
     ["cogloat.k=3", "cogloat.variant=unsupervised+kglobal", "cogloat.adaptive_temperature=false"],
     34.0 / 14.5),
    ("+ adaptive temperature", ["cogloat"], [*KCL[:3], "cogloat.adaptive_temperature=true"],
     15.5 / 14.5),
    ("+ ProCo", ["cogloat", "proco"], KCL, 26.0 / 14.5),
    ("CoGloAT + ProCo", ["cogloat", "proco"], [], None),
]
"""(name, plugins, assignments, the paper's time ratio to KCL: Table 4, CIFAR-100-LT IF 100)."""


class EpochTimer:
    """Times each epoch from the start of its ``epoch_start`` hooks to ``epoch_end`` (and the hooks
    alone), in wall-clock and in this process's CPU time; turns evaluation off so that it is not
    timed."""

    def __init__(self):
        self.epochs: list[tuple[float, float, float]] = []  # (start hooks, wall, CPU) seconds
        self._start = self._cpu = self._hooks = 0.0

    @hookimpl(trylast=True)
    def setup_run(self, run):
        for stage in run.stages:
            stage.evaluate = False

    @hookimpl(hookwrapper=True)
    def epoch_start(self, run, stage, epoch):
        self._start, self._cpu = time.perf_counter(), time.process_time()
        yield
        self._hooks = time.perf_counter() - self._start

    @hookimpl(tryfirst=True)
    def epoch_end(self, run, stage, epoch, metrics):
        self.epochs.append((self._hooks, time.perf_counter() - self._start,
                            time.process_time() - self._cpu))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits-lt")
    parser.add_argument("--backbone", default="resnet8")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first epochs per setting")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 avoids contention on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--views", default="batched", choices=["batched", "reference"],
                        help="augmentation backend (reference: per-image, in this process)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per setting, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    timings = {name: [] for name, *_ in SETTINGS}
    first_starts = {name: [] for name, *_ in SETTINGS}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            # settings interleaved, each repeat starting one further, so that changes of load and
            # position effects spread over all of them
            shift = repeat % len(SETTINGS)
            for name, selected, assignments, _paper in SETTINGS[shift:] + SETTINGS[:shift]:
                timer = EpochTimer()
                plugins = Plugins(extra={"timer": timer})
                chosen = [*selected, "timer"]
                settings = resolve(plugins, chosen, overrides={"epochs": args.warmup + args.epochs},
                                   assignments=[
                    f"dataset={args.dataset}", f"model.backbone={args.backbone}",
                    f"batch_size={args.batch_size}", f"device={args.device}",
                    f"views.backend={args.views}", "views.workers=0",
                    "cogloat.classifier_epochs=0", f"output={folder}/runs",
                    f"tracking.uri=sqlite:///{folder}/mlflow.db", *assignments])
                train(plugins, chosen, settings, progress=False)
                timings[name].extend(timer.epochs[args.warmup:])
                first_starts[name].append(timer.epochs[0][0])
    rows = [(name, statistics.median(e[1] for e in timings[name]),
             statistics.median(e[2] for e in timings[name]),
             statistics.median(e[0] for e in timings[name]), statistics.median(first_starts[name]),
             paper) for name, _, _, paper in SETTINGS]

    base_wall, base_cpu = rows[0][1], rows[0][2]
    print(f"# CoGloAT / ProCo cost per pre-training epoch: {args.dataset}, {args.backbone}, "
          f"batch {args.batch_size}, {args.device} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} torch thread(s)), torch {torch.__version__}; "
          f"{args.views} views; median of {args.repeats} x {args.epochs} epochs after "
          f"{args.warmup} warm-up")
    print(f"| {'setting':<26} | wall s/epoch | x KCL | CPU s/epoch | x KCL | paper x KCL "
          f"| epoch-start s | epoch-0 start s |")
    print(f"|{'-' * 28}|-------------:|------:|------------:|------:|------------:"
          f"|--------------:|----------------:|")
    for name, wall, cpu, start, first_start, paper in rows:
        paper_text = f"{paper:.2f}" if paper else "-"
        print(f"| {name:<26} | {wall:12.2f} | {wall / base_wall:5.2f} | {cpu:11.2f} | "
              f"{cpu / base_cpu:5.2f} | {paper_text:>11} | {start:13.2f} | {first_start:15.2f} |")


if __name__ == "__main__":
    main()
