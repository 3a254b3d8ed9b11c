"""The training loop: stages, epochs, steps, the per-epoch evaluation and what is recorded.

After every epoch the trainer checks the losses are finite, evaluates (validation and test
splits, through :mod:`ltcore.evaluation`), calls ``epoch_end``, buffers the metrics for MLflow,
writes the checkpoint and sends the metrics. At the end of a stage it writes the per-class
tables and plots of the stage's final evaluation.
"""

from __future__ import annotations

import csv
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..errors import NonFiniteLossError, PluginError
from ..evaluation import Evaluation
from ..run import LossTerm, Run, Stage, Step
from ..tracking import Tracker
from . import checkpoints
from .backends import batch_rows, stage_views
from .schedule import (build_optimizer, learning_rate, parameter_groups, set_learning_rate,
                       trained_parameters)


def forward(run: Run, step: Step) -> list[torch.Tensor]:
    """One stacked forward of the step's views, the run-time hooks, then every loss term."""
    stage = step.stage
    model = stage.model
    run.hooks.adjust_images(step=step)
    roles = [r for r, v in stage.views.items() if v.forward]
    missing = [r for r in roles if r not in step.images]
    if missing:
        raise PluginError(f"stage {stage.name!r}: no plugin produced the images of view(s) "
                          f"{missing}")
    with run.autocast():
        x = torch.cat([step.images[r] for r in roles])
        with torch.no_grad() if stage.trainable == "classifier" else nullcontext():
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
    return [term(step).float() for term in stage.losses]


class Trainer:
    """Trains a run's stages and records them."""

    def __init__(self, run: Run, tracker: Tracker, run_dir: Path, progress: bool = True):
        self.run = run
        self.tracker = tracker
        self.run_dir = run_dir
        self.progress = progress
        run.recorder.attach(tracker, run.run_id, run_dir)
        self.stage_runs: dict[str, str] = {}
        self.position = (0, 0)
        self.optimizer_state = None
        self.history: list[dict] = []

    # -- checkpoints --

    def checkpoint_path(self) -> Path:
        return self.run_dir / checkpoints.CHECKPOINT

    def save(self, stage_index: int, next_epoch: int, optimizer) -> None:
        checkpoints.write(self.checkpoint_path(), {
            **checkpoints.run_state(self.run),
            "position": (stage_index, next_epoch),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "stage_runs": self.stage_runs,
            "pending_metrics": self.tracker.pending,
            "tracking_journal": self.tracker.journal(),
            "history": self.history,
        })

    def restore(self, checkpoint: dict) -> None:
        checkpoints.restore_run_state(self.run, checkpoint)
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
                parent_id=self.run.run_id)
            self.tracker.log_params(self.stage_runs[stage.name], {
                "stage.epochs": stage.epochs, "stage.lr": stage.optim.lr,
                "stage.sampler": stage.sampler, "stage.trainable": stage.trainable,
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
        views = stage_views(run, stage, sources)
        groups = parameter_groups(run, stage)
        metrics: dict[str, float] = {}
        evaluation: Evaluation | None = None
        with trained_parameters(stage, groups):
            optimizer = build_optimizer(run, stage, groups)
            if self.optimizer_state is not None and start_epoch > 0:
                optimizer.load_state_dict(self.optimizer_state)
            self.optimizer_state = None
            for epoch in range(start_epoch, stage.epochs):
                t0 = time.perf_counter()
                seed = run.epoch_seed(stage, epoch)
                torch.manual_seed(seed)
                random.seed(seed)
                lr = learning_rate(stage, epoch)
                set_learning_rate(optimizer, lr)
                run.hooks.epoch_start(run=run, stage=stage, epoch=epoch)
                generator = torch.Generator().manual_seed(seed)
                order = sampler.epoch_indices(epoch, generator)
                if order.dim() == 1:
                    order = order.unsqueeze(1)
                sums, seen = self.train_epoch(stage, views, order, sources, optimizer, epoch, seed)
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
                    evaluation = run.evaluate(stage.model, stage=stage, final=last)
                    metrics.update(evaluation.figures())
                run.hooks.epoch_end(run=run, stage=stage, epoch=epoch, metrics=metrics)
                self.history.append({"stage": stage.name, "epoch": epoch, **metrics})
                self.tracker.log_metrics(run_id, metrics, step=epoch)
                self.save(index, epoch + 1, optimizer)
                self.tracker.flush()  # what is not sent stays in the checkpoint
        if stage.evaluate:
            if evaluation is None or not evaluation.final:  # resumed after the last epoch
                evaluation = run.evaluate(stage.model, stage=stage, final=True)
            self.report_stage(stage, run_id, evaluation)
        self.save(index + 1, 0, None)
        self.tracker.end(run_id)
        run.hooks.stage_end(run=run, stage=stage)
        return {k: v for k, v in metrics.items() if not k.startswith("train/")}

    def train_epoch(self, stage: Stage, views, order, sources, optimizer, epoch, seed):
        run = self.run
        stage.model.train()
        if stage.trainable == "classifier":
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
            losses = forward(run, step)
            total = sum(t.weight * l for t, l in zip(stage.losses, losses))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            sums += torch.stack([l.detach().float() for l in losses])
            seen += len(next(iter(batch.labels.values())))
            run.hooks.step_end(step=step)
        return sums / max(1, steps_per_epoch), seen

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
            f"plugin's options, then continue with ltrun --resume {self.run.run_id}")

    # -- reports --

    def report_stage(self, stage: Stage, run_id: str, evaluation: Evaluation) -> None:
        """The stage's final evaluation as artifacts: per-class CSV, confusion matrix, plots."""
        from .. import plots

        folder = self.run_dir / "artifacts" / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        counts = self.run.dataset.class_counts.tolist()
        classes = self.run.dataset.classes
        for split, out in evaluation.outputs.items():
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
