"""Assembling a run from plugins and training it: the loop, evaluation, checkpoints, resume.

``prepare`` turns the selected plugins and settings into a :class:`~ltcore.run.Run`;
:class:`Trainer` trains its stages in order. After every epoch the trainer evaluates, logs the
epoch's metrics and writes ``<output>/<run id>/checkpoint.pt``; ``resume`` rebuilds the run from
that file and continues with the next epoch, giving the same final numbers as an uninterrupted
run on the CPU (every epoch's randomness is seeded from the run seed, the stage and the epoch).
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import attrs
import torch
import torch.nn.functional as F

from . import __version__
from .config import Settings, flatten, resolve
from .data import Dataset, Split, load_image
from .errors import ConfigError, DataError, LtcoreError, NonFiniteLossError, PluginError
from .evaluation import EvalOutputs, Metric, accuracy_figures
from .plugins import CORE, Plugins
from .run import LossTerm, Run, Stage, Step
from .tracking import DEFAULT_URI, Tracker

DEFAULT_PLUGINS = ["ce"]
CHECKPOINT = "checkpoint.pt"


# -- assembling ---------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but CUDA is not available; use "
                          "--device cpu or auto")
    return device


def epoch_seed(seed: int, stage_index: int, epoch: int) -> int:
    """The seed of one epoch's sampling and augmentation (independent of any earlier epoch)."""
    return (seed * 1_000_003 + stage_index * 10_007 + epoch) % (2 ** 63)


def prepare(plugins: Plugins, selected: list[str], settings: Settings) -> Run:
    """Build the dataset and model, let the selected plugins set the run up, and check it."""
    cfg = settings.run
    device = resolve_device(cfg.device)
    dataset_factory = plugins.component("dataset", cfg.dataset).obj
    dataset = dataset_factory(cfg)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run = Run(cfg, settings.plugins, plugins, selected, dataset, device)
    run.settings = settings
    run.hooks.setup_run(run=run)
    finish_setup(run)
    return run


def finish_setup(run: Run) -> None:
    """Give stages without a classifier loss the default CE and check what plugins built."""
    for stage in run.stages:
        if stage.trainable != "classifier" or stage.classifier_loss is None:
            if stage.classifier_loss is None:
                run.classifier_view(stage)
                stage.set_classifier_loss(run.build("loss", "ce"), default=True)
        if not any(v.classify for v in stage.views.values()):
            run.classifier_view(stage)
        for view in stage.views.values():
            if view.pipeline is not None:
                run.plugins.component("view", view.pipeline)
        if not any(id(stage.model) == id(m) for m in run.modules.values()):
            run.add_module(f"{stage.name}_model", stage.model)
        run.plugins.component("sampler", stage.sampler)


# -- data paths ---------------------------------------------------------------------------


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
        self.views = {role: run.plugins.component("view", v.pipeline).obj.make_batched(
            ds.image_size, ds.mean, ds.std) for role, v in stage.views.items() if v.pipeline}
        self.sources = {role: v.source for role, v in stage.views.items() if v.pipeline}
        self.device = run.device

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int,
              seed: int) -> Iterator[Batch]:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        order = order.to(self.device)
        for rows in batch_rows(order, batch_size):
            indices = {s: rows[:, i] for i, s in enumerate(sources)}
            labels = {s: self.labels[idx] for s, idx in indices.items()}
            images = {role: fn(self.images[indices[self.sources[role]]], generator)
                      for role, fn in self.views.items()}
            yield Batch(indices, labels, images)


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
        transforms = {role: (column[v.source], run.plugins.component("view", v.pipeline).obj
                             .make_reference(ds.image_size, ds.mean, ds.std))
                      for role, v in stage.views.items() if v.pipeline}
        self.batches = _EpochBatches()
        workers = run.config.views.workers
        self.loader = torch.utils.data.DataLoader(
            _ReferenceDataset(ds.train, transforms), batch_sampler=self.batches,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=run.device.type == "cuda")
        self.device = run.device

    def epoch(self, order: torch.Tensor, sources: tuple[str, ...], batch_size: int,
              seed: int) -> Iterator[Batch]:
        all_rows = batch_rows(order.cpu(), batch_size)
        self.batches.keys = []
        position = 0
        for rows in all_rows:
            keys = []
            for row in rows.tolist():
                keys.append((seed, position, row))
                position += 1
            self.batches.keys.append(keys)
        for rows, images in zip(all_rows, self.loader):
            indices = {s: rows[:, i].to(self.device) for i, s in enumerate(sources)}
            labels = {s: self.labels[rows[:, i]].to(self.device) for i, s in enumerate(sources)}
            yield Batch(indices, labels, {r: x.to(self.device, non_blocking=True)
                                          for r, x in images.items()})


def views_backend(run: Run, stage: Stage) -> str:
    choice = run.config.views.backend
    pipelines = [run.plugins.component("view", v.pipeline).obj for v in stage.views.values()
                 if v.pipeline]
    batched_ok = run.dataset.in_memory and all(p.batched for p in pipelines)
    if choice == "batched" and not batched_ok:
        raise ConfigError("views.backend = 'batched' needs an in-memory small-image dataset and "
                          "view pipelines with a batched implementation; use 'reference'")
    if choice == "auto":
        # On the CPU the per-image reference in DataLoader workers overlaps with the step and is
        # as fast as the batched ops (docs/benchmarks.md); on a GPU the batched path wins.
        return "batched" if batched_ok and run.device.type == "cuda" else "reference"
    return choice


# -- evaluation ---------------------------------------------------------------------------


@torch.no_grad()
def model_outputs(run: Run, model, split: Split, keep_features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (and backbone features) of ``model`` on an un-augmented split, on the CPU."""
    ds = run.dataset
    model.eval()
    eval_view = run.plugins.component("view", "eval").obj
    logits, feats = [], []
    size = run.config.eval.batch_size
    if split.images is not None:
        normalise = eval_view.make_batched(ds.image_size, ds.mean, ds.std)
        unused = torch.Generator(device=run.device)
        batches = (normalise(split.images[i:i + size].to(run.device), unused)
                   for i in range(0, len(split), size))
    else:
        transform = eval_view.make_reference(ds.image_size, ds.mean, ds.std)
        dataset = _FileEvalDataset(split.paths, transform)
        batches = (x.to(run.device) for x in torch.utils.data.DataLoader(
            dataset, batch_size=size, num_workers=run.config.views.workers))
    with autocast(run):
        for x in batches:
            f = model.backbone(x)
            logits.append(model.classifier(f).float().cpu())
            if keep_features:
                feats.append(f.float().cpu())
    return torch.cat(logits), (torch.cat(feats) if keep_features else None)


class _FileEvalDataset(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(load_image(self.paths[i]))


def selected_metrics(run: Run, when: str) -> dict[str, Metric]:
    names = list(run.config.eval.metrics) + list(run.state.get("metrics", []))
    table = {}
    for name in ["accuracy", *names]:
        metric = run.plugins.component("metric", name).obj
        if metric.when == "epoch" or when == "final":
            table[name] = metric
    return table


def evaluate(run: Run, model, when: str = "epoch") -> tuple[dict[str, float], dict[str, EvalOutputs]]:
    """Metrics of ``model`` on every evaluation split, as ``{"val/acc": ...}``."""
    metrics = selected_metrics(run, when)
    keep = any(m.needs_features for m in metrics.values())
    figures, outputs = {}, {}
    counts = run.dataset.class_counts
    tau = run.config.eval.posthoc_la_tau
    for name, split in run.dataset.eval_splits().items():
        logits, features = model_outputs(run, model, split, keep)
        if tau:
            logits = logits - tau * torch.log(counts.float() / counts.sum())
        out = EvalOutputs(name, logits, split.labels, features, counts,
                          run.config.eval.many_threshold, run.config.eval.few_threshold)
        outputs[name] = out
        for metric in metrics.values():
            for key, value in metric(out).items():
                figures[f"{name}/{key}"] = value
    return figures, outputs


def autocast(run: Run):
    precision = run.config.precision
    if run.device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


# -- the schedule -------------------------------------------------------------------------


def learning_rate(stage: Stage, epoch: int) -> float:
    """Linear warm-up to ``optim.lr`` over ``warmup_epochs``, then cosine, step or constant."""
    base, sched = stage.optim.lr, stage.schedule
    if epoch < sched.warmup_epochs:
        return base * (epoch + 1) / sched.warmup_epochs
    if sched.kind == "cosine":
        span = max(1, stage.epochs - sched.warmup_epochs)
        return 0.5 * base * (1 + math.cos(math.pi * (epoch - sched.warmup_epochs) / span))
    if sched.kind == "step":
        return base * sched.gamma ** sum(epoch >= m for m in sched.milestones)
    return base


def parameter_groups(stage: Stage) -> list[dict]:
    if callable(stage.trainable):
        return list(stage.trainable(stage.model))
    if stage.trainable == "classifier":
        return [{"params": list(stage.model.classifier.parameters())}]
    if stage.trainable == "all":
        return [{"params": [p for p in stage.model.parameters() if p.requires_grad]}]
    raise PluginError(f"stage {stage.name!r} has trainable={stage.trainable!r}; expected 'all', "
                      "'classifier' or a callable")


# -- training -----------------------------------------------------------------------------


class Trainer:
    """Trains a run's stages and records them."""

    def __init__(self, run: Run, tracker: Tracker, run_dir: Path, progress: bool = True):
        self.run = run
        self.tracker = tracker
        self.run_dir = run_dir
        self.progress = progress
        run.tracker = tracker
        self.stage_runs: dict[str, str] = {}
        self.position = (0, 0)
        self.optimizer_state = None
        self.history: list[dict] = []

    @property
    def parent_id(self) -> str:
        return self.run.state["mlflow_run_id"]

    # -- checkpoints --

    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def save(self, stage_index: int, next_epoch: int, optimizer) -> None:
        state = {
            "ltcore_version": __version__,
            "settings": self.run.settings.to_dict(),
            "plugins": self.run.selected,
            "position": (stage_index, next_epoch),
            "modules": self.run.modules.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "state": self.run.state,
            "stage_runs": self.stage_runs,
            "pending_metrics": self.tracker.pending,
            "tracking_journal": self.tracker.journal(),
            "history": self.history,
        }
        tmp = self.checkpoint_path().with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path())

    def restore(self, checkpoint: dict) -> None:
        self.run.modules.load_state_dict(checkpoint["modules"])
        self.run.state.update(checkpoint["state"])
        self.stage_runs = dict(checkpoint["stage_runs"])
        self.position = tuple(checkpoint["position"])
        self.optimizer_state = checkpoint["optimizer"]
        self.history = list(checkpoint["history"])
        self.tracker.pending = [tuple(m) for m in checkpoint["pending_metrics"]]
        self.tracker.load_journal(checkpoint.get("tracking_journal"))
        for run_id in {m[0] for m in self.tracker.pending}:
            self.tracker.drop_logged(run_id, "train/loss")

    # -- the loop --

    def train(self) -> dict[str, float]:
        run = self.run
        run.hooks.run_start(run=run)
        final: dict[str, float] = {}
        start_stage, start_epoch = self.position
        for index, stage in enumerate(run.stages):
            if index < start_stage:
                continue
            final = self.train_stage(index, stage, start_epoch if index == start_stage else 0)
        run.hooks.run_end(run=run)
        return final

    def stage_run(self, stage: Stage) -> str:
        if stage.name not in self.stage_runs:
            self.stage_runs[stage.name] = self.tracker.start(
                stage.name, {"ltcore.stage": stage.name, "ltcore.stage_plugin": stage.plugin},
                parent_id=self.parent_id)
            self.tracker.log_params(self.stage_runs[stage.name], {
                "stage.epochs": stage.epochs, "stage.lr": stage.optim.lr,
                "stage.sampler": stage.sampler, "stage.trainable": stage.trainable
                if isinstance(stage.trainable, str) else "custom",
                "stage.losses": ", ".join(f"{t.weight:g}*{t.name}" for t in stage.losses),
                "stage.views": ", ".join(f"{r}={v.pipeline}" for r, v in stage.views.items())})
        else:
            self.tracker.reopen(self.stage_runs[stage.name])
        return self.stage_runs[stage.name]

    def train_stage(self, index: int, stage: Stage, start_epoch: int) -> dict[str, float]:
        run = self.run
        run_id = self.stage_run(stage)
        run.hooks.stage_start(run=run, stage=stage)
        sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
        sources = tuple(getattr(sampler, "sources", ("sample",)))
        backend = views_backend(run, stage)
        views = (BatchedViews if backend == "batched" else ReferenceViews)(run, stage, sources)
        frozen = stage.trainable == "classifier"
        if frozen:
            stage.model.backbone.requires_grad_(False)
        optimizer = torch.optim.SGD(parameter_groups(stage), lr=stage.optim.lr,
                                    momentum=stage.optim.momentum,
                                    weight_decay=stage.optim.weight_decay,
                                    nesterov=stage.optim.nesterov)
        if self.optimizer_state is not None and start_epoch > 0:
            optimizer.load_state_dict(self.optimizer_state)
        self.optimizer_state = None
        metrics: dict[str, float] = {}
        for epoch in range(start_epoch, stage.epochs):
            t0 = time.perf_counter()
            seed = epoch_seed(run.config.seed, index, epoch)
            torch.manual_seed(seed)
            random.seed(seed)
            lr = learning_rate(stage, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            run.hooks.epoch_start(run=run, stage=stage, epoch=epoch)
            generator = torch.Generator().manual_seed(seed)
            order = sampler.epoch_indices(epoch, generator)
            if order.dim() == 1:
                order = order.unsqueeze(1)
            sums, seen = self.train_epoch(stage, views, order, sources, optimizer, epoch, seed,
                                          frozen)
            elapsed = time.perf_counter() - t0
            metrics = {"train/lr": lr, "train/epoch_time": elapsed,
                       "train/samples_per_s": seen / max(elapsed, 1e-9)}
            self.check_finite(stage, epoch, sums)
            total = 0.0
            for term, value in zip(stage.losses, sums.tolist()):
                metrics[f"train/loss/{term.name}"] = value
                total += term.weight * value
            metrics["train/loss"] = total
            last = epoch == stage.epochs - 1
            if stage.evaluate and (last or (epoch + 1) % run.config.eval.every == 0):
                figures, outputs = evaluate(run, stage.model, "final" if last else "epoch")
                metrics.update(figures)
            run.hooks.epoch_end(run=run, stage=stage, epoch=epoch, metrics=metrics)
            self.history.append({"stage": stage.name, "epoch": epoch, **metrics})
            self.tracker.log_metrics(run_id, metrics, step=epoch)
            self.save(index, epoch + 1, optimizer)
            self.flush()
        if frozen:
            stage.model.backbone.requires_grad_(True)
        if stage.evaluate:
            self.report_stage(stage, run_id)
        self.save(index + 1, 0, None)
        self.tracker.end(run_id)
        run.hooks.stage_end(run=run, stage=stage)
        return {k: v for k, v in metrics.items() if not k.startswith("train/")}

    def train_epoch(self, stage: Stage, views, order, sources, optimizer, epoch, seed, frozen):
        run = self.run
        stage.model.train()
        if frozen:
            stage.model.backbone.eval()
        sums = torch.zeros(len(stage.losses), device=run.device)
        seen = 0
        steps_per_epoch = len(batch_rows(order, run.config.batch_size))
        batches = views.epoch(order, sources, run.config.batch_size, seed)
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=steps_per_epoch, leave=False, dynamic_ncols=True,
                           desc=f"{stage.name} {epoch + 1}/{stage.epochs}")
        for i, batch in enumerate(batches):
            step = Step(run, stage, epoch, epoch * steps_per_epoch + i, batch.indices,
                        batch.labels, batch.images)
            losses = self.forward(step, frozen)
            total = sum(t.weight * l for t, l in zip(stage.losses, losses))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            sums += torch.stack([l.detach().float() for l in losses])
            seen += len(next(iter(batch.labels.values())))
            run.hooks.step_end(step=step)
        return sums / max(1, steps_per_epoch), seen

    def forward(self, step: Step, frozen: bool) -> list[torch.Tensor]:
        run, stage = self.run, step.stage
        model = stage.model
        run.hooks.adjust_images(step=step)
        roles = [r for r, v in stage.views.items() if v.forward]
        missing = [r for r in roles if r not in step.images]
        if missing:
            raise PluginError(f"stage {stage.name!r}: no plugin produced the images of view(s) "
                              f"{missing}")
        with autocast(run):
            x = torch.cat([step.images[r] for r in roles])
            with torch.no_grad() if frozen else nullcontext():
                features = model.backbone(x)
            for role, f in zip(roles, features.split([len(step.images[r]) for r in roles])):
                step.features[role] = f
                view = stage.views[role]
                if view.classify:
                    step.logits[role] = model.classifier(f).float()
                if view.embed:
                    step.embeddings[role] = run.embed(model, f).float()
        run.hooks.adjust_embeddings(step=step)
        run.hooks.adjust_classifier_logits(step=step)
        return [term.fn(step).float() for term in stage.losses]

    def check_finite(self, stage: Stage, epoch: int, sums: torch.Tensor) -> None:
        finite = torch.isfinite(sums)
        if bool(finite.all()):
            return
        term: LossTerm = stage.losses[int((~finite).nonzero()[0])]
        kept = (f"the last good checkpoint (after epoch {epoch}) is kept at "
                f"{self.checkpoint_path()}" if self.checkpoint_path().exists()
                else "no epoch had finished, so there is no checkpoint")
        self.tracker.set_tags(self.stage_runs[stage.name], {"ltcore.error": "non-finite loss"})
        raise NonFiniteLossError(
            f"loss term {term.name!r} (plugin {term.plugin!r}) became non-finite in stage "
            f"{stage.name!r}, epoch {epoch + 1}; {kept}. Lower the learning rate or check the "
            f"plugin's options, then continue with ltrun --resume {self.parent_id}")

    def flush(self) -> None:
        if not self.tracker.flush():
            self.run.state["tracking_warning"] = (
                f"{len(self.tracker.pending)} metric values could not be sent to "
                f"{self.tracker.uri}; they are kept in the checkpoint and sent on resume")

    # -- reports --

    def report_stage(self, stage: Stage, run_id: str) -> None:
        """Final evaluation artifacts of a stage: per-class CSV, confusion matrix, plots."""
        from . import plots

        _, outputs = evaluate(self.run, stage.model, "final")
        folder = self.run_dir / "artifacts" / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        counts = self.run.dataset.class_counts.tolist()
        classes = self.run.dataset.classes
        for split, out in outputs.items():
            per_class = out.per_class_accuracy().tolist()
            csv_path = folder / f"{split}_per_class_accuracy.csv"
            with open(csv_path, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["class_index", "class", "train_count", "accuracy"])
                for i, (name, n, acc) in enumerate(zip(classes, counts, per_class)):
                    writer.writerow([i, name, n, f"{100 * acc:.4f}"])
            files = [csv_path,
                     plots.confusion_matrix_png(out, classes, folder / f"{split}_confusion_matrix.png"),
                     plots.per_class_accuracy_png({stage.name: per_class}, counts,
                                                  folder / f"{split}_per_class_accuracy.png",
                                                  title=f"{split}: per-class accuracy vs class size")]
            for path in files:
                self.tracker.log_artifact(run_id, str(path), "evaluation")


# -- entry points -------------------------------------------------------------------------


def tracking_uri(config) -> str:
    """The configured tracking URI, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` here.

    A relative sqlite path is made absolute: MLflow caches stores by URI, so a relative one
    would follow the first working directory of the process.
    """
    uri = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not os.path.isabs(uri[len(prefix):]):
        uri = prefix + os.path.abspath(uri[len(prefix):])
    return uri


def run_tags(run: Run) -> dict[str, str]:
    cfg = run.config
    return {"ltcore.plugins": ",".join(run.selected), "dataset": cfg.dataset,
            "imbalance_factor": f"{cfg.imbalance_factor:g}", "seed": str(cfg.seed),
            "plugins": ",".join(run.selected)}


def run_params(run: Run) -> dict[str, Any]:
    params = dict(run.settings.flat())
    params["plugins"] = ",".join(run.selected)
    for name in run.selected:
        info = run.plugins.info[name]
        params[f"plugin.{name}.version"] = f"{info.distribution} {info.version}"
    params["ltcore.version"] = __version__
    return params


def train(plugins: Plugins, selected: list[str], settings: Settings, progress: bool = True) -> "Result":
    """Train a new run and record it; returns the final metrics and where things are."""
    selected = plugins.select(selected or DEFAULT_PLUGINS)
    # check the tracking store before building the data: an unreachable server fails in seconds
    tracker = Tracker(tracking_uri(settings.run), settings.run.tracking.experiment)
    run = prepare(plugins, selected, settings)
    parent = tracker.start("+".join(selected), run_tags(run))
    run.state["mlflow_run_id"] = parent
    run_dir = Path(run.config.output) / parent
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker.log_params(parent, run_params(run))
    config_path = run_dir / "config.toml"
    config_path.write_text(f"# plugins: {' '.join(selected)}\n" + settings.to_toml())
    tracker.log_artifact(parent, str(config_path))
    trainer = Trainer(run, tracker, run_dir, progress)
    return _finish(trainer, parent)


def resume(plugins: Plugins, run_id: str, output: str = "runs", progress: bool = True) -> "Result":
    """Continue a run from its last checkpoint, in the same MLflow run."""
    path = Path(output) / run_id / CHECKPOINT
    if not path.exists():
        raise DataError(f"no checkpoint for run {run_id!r} at {str(path)!r}; give the run's "
                        "--output directory if it was not 'runs'")
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    selected = plugins.select(checkpoint["plugins"])
    settings = resolve(plugins, selected, overrides=flatten(checkpoint["settings"]))
    run = prepare(plugins, selected, settings)
    run.state["mlflow_run_id"] = run_id
    tracker = Tracker(tracking_uri(run.config), run.config.tracking.experiment)
    tracker.reopen(run_id)
    trainer = Trainer(run, tracker, path.parent, progress)
    trainer.restore(checkpoint)
    return _finish(trainer, run_id)


@attrs.define
class Result:
    """What a finished run reports: its MLflow id, final metrics and folders."""

    run_id: str
    metrics: dict[str, float]
    run_dir: Path
    warnings: list[str]


def _finish(trainer: Trainer, parent: str) -> Result:
    run, tracker = trainer.run, trainer.tracker
    try:
        metrics = trainer.train()
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        for run_id in trainer.stage_runs.values():
            tracker.end(run_id, status)
        tracker.flush()
        tracker.end(parent, status)
        raise
    final_model = trainer.run_dir / "model.pt"
    torch.save({"settings": run.settings.to_dict(), "plugins": run.selected,
                "modules": run.modules.state_dict()}, final_model)
    tracker.log_artifact(parent, str(final_model), "checkpoints")
    tracker.log_metrics(parent, dict(metrics), step=0)
    tracker.end(parent)  # sends what is still queued first
    warnings = []
    if tracker.summary():
        trainer.save(len(run.stages), 0, None)  # the unsent records, for ltrun --resume
        warnings.append(f"{tracker.summary()}; the checkpoint and files are in {trainer.run_dir}; "
                        f"once the tracking store answers again, ltrun --resume {parent} sends "
                        "what was not logged")
    return Result(parent, metrics, trainer.run_dir, warnings)
