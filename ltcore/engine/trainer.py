"""The training loop: stages, epochs, steps, the per-epoch evaluation and what is recorded.

After every epoch the trainer checks the losses are finite, evaluates (validation and test
splits, through :mod:`ltcore.evaluation`), keeps the best epoch by ``checkpoint.monitor``, calls
``epoch_end``, buffers the metrics for MLflow, writes the checkpoint and sends the metrics; a
stage whose monitored figure stopped improving for ``early_stop.patience`` epochs ends there. At
the end of a stage it writes the per-class tables and plots of the stage's final evaluation.
How a step's loss becomes an update (accumulation, fp16 scaling, clipping, EMA) is
:mod:`ltcore.engine.updates`; mixup and CutMix are :mod:`ltcore.engine.mixing`.
"""

from __future__ import annotations

import random
import signal
import time
from contextlib import closing, contextmanager
from pathlib import Path

import torch

from ..errors import (ConfigError, DeviceMemoryError, PluginError, RunStopped, StorageError,
                      is_out_of_memory)
from ..evaluation import Evaluation
from ..figures import record_weight_norms
from ..files import write_csv
from ..launch import launch_folder, note_run
from ..run import Run, Stage, Step
from ..startup import mark
from ..tracking import Tracker
from . import checkpoints
from .backends import batch_rows
from .console import Console, plural
from .interrupts import EpochProgress, StopSignals
from .resuming import resume_command
from .checkpoints import copy_state
from .schedule import parameter_groups, set_learning_rate, trained_parameters
from .step import UNUSED_PARAMETERS, NonFinite, distributed_step
from .updates import Updates


SUMMARY_SPLITS = ("test", "best")
"""Figures recorded once, at a stage's end (the test split, the best epoch's): they go to the
stage's ``evaluation/figures.csv``, the run's ``metrics.csv`` and, for the last stage, the parent
run, not to the stage run's per-epoch metrics (whose MLflow page then shows curves only)."""

FIGURES_CSV = "figures.csv"


def per_epoch(metrics: dict[str, float]) -> dict[str, float]:
    """The figures of an epoch's record that the stage run charts per epoch."""
    return {k: v for k, v in metrics.items() if k.split("/", 1)[0] not in SUMMARY_SPLITS}


LOG = "log.txt"
"""The run's console lines (plan, epochs, final figures), also an MLflow artifact."""
METRICS_CSV = "metrics.csv"
"""The run's per-epoch figures, a row per epoch (1-based) of every stage."""


class Trainer:
    """Trains a run's stages and records them; ``echo`` prints the console lines."""

    def __init__(self, run: Run, tracker: Tracker, run_dir: Path, progress: bool = True,
                 echo=None):
        self.run = run
        self.tracker = tracker
        self.run_dir = run_dir
        self.progress = progress
        self.echo = echo
        self.console = Console(run)
        if run.world.is_main:
            run.recorder.attach(tracker, run.run_id, run_dir)
        self.stage_runs: dict[str, str] = {}
        self.position = (0, 0)
        self.updates_state: dict | None = None
        """The checkpoint's :meth:`Updates.state_dict`, loaded when its stage starts again."""
        self.ended: Updates | None = None
        """The updates of the stage that ended last (checkpointed with what follows it)."""
        self.history: list[dict] = []
        self.final: dict[str, float] = {}
        """The last finished stage's figures (the run's final metrics)."""
        self.stop = StopSignals(patient=run.world.distributed)
        self.saved = "none"
        """What the checkpoint on disk holds, in words (for messages; see :meth:`settle`)."""
        self.writer = checkpoints.BackgroundWriter()
        """Writes the epochs' checkpoints with ``speed.background_checkpoints``."""
        self._resumed_epoch: tuple[EpochProgress, dict] | None = None
        self.best: dict | None = None
        """The current stage's best epoch by ``checkpoint.monitor``: ``stage``, ``epoch``,
        ``monitor``, ``value`` and the stage model's ``state`` (on the CPU)."""
        self.resumed = False
        """Whether the run continues what another process started (its MLflow runs may hold
        records made after the checkpoint)."""
        if run.world.is_main and launch_folder():  # for ltrun --nproc's report of a failure
            note_run(run.run_id, run_dir, run.tracking_uri, self.resume_command())

    # -- checkpoints --

    def checkpoint_path(self) -> Path:
        return self.run_dir / checkpoints.CHECKPOINT

    def save(self, stage_index: int, next_epoch: int, updates: Updates | None,
             progress: EpochProgress | None = None, per_rank: bool = False) -> None:
        """Write ``metrics.csv`` and the checkpoint: at ``next_epoch`` of stage ``stage_index``,
        or inside that epoch at ``progress``. A full disk keeps the previous checkpoint and says
        which it is. Rank 0 writes; with ``per_rank`` (every rank calls it) the checkpoint
        holds every rank's ``progress``."""
        saved = self.describe(stage_index, next_epoch, progress)
        world = self.run.world
        state = None if progress is None else progress.state_dict()
        rank_progress = world.gather_objects(state) if per_rank and world.distributed else None
        if not world.is_main:
            self.saved = saved
            return
        self.settle()
        kept = updates or self.ended
        try:
            self.write_history()
            payload = {
                **checkpoints.run_state(self.run),
                "position": (stage_index, next_epoch),
                "epoch_progress": state,
                "rank_progress": rank_progress,
                "updates": kept.state_dict() if kept is not None else None,
                "finished": stage_index >= len(self.run.stages),
                "stage_runs": self.stage_runs,
                "pending_metrics": self.tracker.pending,
                "tracking_journal": self.tracker.journal(),
                "history": self.history,
                "final": self.final,
                "best": self.best,
                "saved": saved,
            }
            if self.run.speed.background_checkpoints and progress is None:
                self.writer.submit(self.checkpoint_path(), payload, saved)
                return
            checkpoints.write(self.checkpoint_path(), payload, keep_previous=True)
        except StorageError as exc:
            raise self.storage_error(exc) from exc
        self.saved = saved

    def settle(self) -> None:
        """Wait for a checkpoint being written in the background; :attr:`saved` then says what
        is on disk (a write that failed raises its :class:`StorageError`)."""
        try:
            label = self.writer.wait()
        except StorageError as exc:
            raise self.storage_error(exc) from exc
        if label is not None:
            self.saved = label

    def storage_error(self, exc: StorageError) -> StorageError:
        """``exc`` (a checkpoint that could not be written) with which one is kept and how to
        go on."""
        kept = (f"the checkpoint {self.saved} is kept" if self.saved != "none"
                else "there is no checkpoint yet")
        return StorageError(f"{exc}; {kept}. Free space, then continue with "
                            f"{self.resume_command()}")

    def describe(self, stage_index: int, epoch: int, progress: EpochProgress | None) -> str:
        """Where a checkpoint at this position stands, in words."""
        stages = self.run.stages
        if stage_index >= len(stages):
            return f"after the last stage ({self.checkpoint_path()})"
        stage = stages[stage_index]
        if progress is not None:
            return (f"at step {progress.step} of epoch {epoch + 1} in stage {stage.name!r} "
                    f"({self.checkpoint_path()})")
        if epoch == 0:
            where = ("from before training" if stage_index == 0
                     else f"from before stage {stage.name!r}")
            return f"{where} ({self.checkpoint_path()})"
        return f"after epoch {epoch} of stage {stage.name!r} ({self.checkpoint_path()})"

    def restore(self, checkpoint: dict) -> None:
        self.resumed = True
        checkpoints.restore_run_state(self.run, checkpoint)
        self.stage_runs = dict(checkpoint["stage_runs"])
        self.position = tuple(checkpoint["position"])
        self.updates_state = checkpoint.get("updates")
        if self.updates_state is None and checkpoint.get("optimizer") is not None:
            self.updates_state = {"optimizer": checkpoint["optimizer"]}  # ltcore 1.0
        self.history = list(checkpoint["history"])
        self.final = dict(checkpoint["final"])
        self.best = checkpoint.get("best")
        if self.best is not None and "value" not in self.best:  # ltcore 1.0: by val/acc
            self.best = dict(self.best, monitor="val/acc", value=self.best["val_acc"])
        self.saved = checkpoint["saved"]
        progress = EpochProgress.from_state(self.own_progress(checkpoint))
        if progress is not None:
            self._resumed_epoch = (progress, checkpoint["plugin_objects"])
        self.tracker.pending = [tuple(m) for m in checkpoint["pending_metrics"]]
        self.tracker.load_journal(checkpoint.get("tracking_journal"))
        for run_id in {m[0] for m in self.tracker.pending}:
            self.tracker.verify(run_id)

    def own_progress(self, checkpoint: dict) -> dict | None:
        """This rank's progress through a stopped epoch: its own when the checkpoint holds every
        rank's, else rank 0's (the views' generator then starts afresh on the other ranks)."""
        world, state = self.run.world, checkpoint["epoch_progress"]
        by_rank = checkpoint.get("rank_progress")
        if state is None or world.rank == 0:
            return state
        if by_rank is not None and len(by_rank) == world.size:
            return by_rank[world.rank]
        return {**state, "views_state": None}

    def say(self, line: str) -> None:
        """Print ``line`` (when the run has a console) and add it to the run's text log; on
        rank 0 only in a distributed run."""
        if not self.run.world.is_main:
            return
        if self.echo is not None:
            self.echo(line)
        try:
            with open(self.run_dir / LOG, "a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError:  # a full disk: the next checkpoint says so; the console has the line
            pass

    def write_history(self) -> None:
        """The per-epoch figures so far as ``metrics.csv``: a row per epoch of every stage."""
        columns = ["stage", "epoch"]
        for row in self.history:
            columns += [k for k in row if k not in columns]
        write_csv(self.run_dir / METRICS_CSV, columns,
                  [[row.get(k, "") if k != "epoch" else row[k] + 1 for k in columns]
                   for row in self.history])

    def stopping(self, agree: bool) -> bool:
        """Whether a stop signal was received. In a distributed run the ranks agree (any rank's
        signal stops them all at the same step), at the steps where ``agree`` only; a rank that
        got none stops for ``a signal to another rank (SIGTERM to rank 1)``."""
        world = self.run.world
        if not world.distributed:
            return self.stop.received is not None
        if not agree:
            return False
        numbers = world.by_rank(self.stop.number, self.run.device)
        signalled = [rank for rank, number in enumerate(numbers) if number]
        if signalled and self.stop.received is None:
            first = signalled[0]
            self.stop.received = (f"a signal to another rank "
                                  f"({signal.Signals(numbers[first]).name} to rank {first})")
        return bool(signalled)

    def resume_command(self) -> str:
        """``ltrun --resume <id>``, with ``--nproc N`` for ranks ``ltrun --nproc N`` started."""
        return resume_command(self.run.run_id, self.run.config.output, self.run.world.size)

    # -- the loop --

    def train(self) -> dict[str, float]:
        """Train what is left of the run. Inside ``with trainer.stop:``, SIGTERM and SIGINT stop
        it at the next step boundary with a checkpoint (:class:`~ltcore.errors.RunStopped`)."""
        run = self.run
        run.hooks.run_start(run=run)
        start_stage, start_epoch = self.position
        for index, stage in enumerate(run.stages):
            if index < start_stage:
                continue
            self.train_stage(index, stage, start_epoch if index == start_stage else 0)
        run.hooks.run_end(run=run)
        record_weight_norms(run)
        return self.final

    def stage_run(self, stage: Stage) -> str:
        if stage.name not in self.stage_runs and self.resumed:
            found = self.tracker.stage_run(self.run.run_id, stage.name)
            if found is not None:  # made after the checkpoint by the process that stopped
                self.stage_runs[stage.name] = found
        if stage.name not in self.stage_runs:
            self.stage_runs[stage.name] = self.tracker.start(
                f"{self.run.run_name}/{stage.name}",
                {"ltcore.stage": stage.name, "ltcore.stage_plugin": stage.plugin},
                parent_id=self.run.run_id)
            self.tracker.log_params(self.stage_runs[stage.name], {
                "stage.epochs": stage.epochs, "stage.lr": stage.optim.lr,
                "stage.sampler": stage.sampler, "stage.trainable": stage.trainable,
                "stage.losses": ", ".join(f"{t.weight:g}*{t.name}" for t in stage.losses),
                "stage.views": ", ".join(f"{r}={v.pipeline}" for r, v in stage.views.items())})
        else:
            self.tracker.reopen(self.stage_runs[stage.name])
        return self.stage_runs[stage.name]

    def train_stage(self, index: int, stage: Stage, start_epoch: int) -> None:
        run = self.run
        run_id = self.stage_run(stage)
        run.hooks.stage_start(run=run, stage=stage)
        sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
        sources = tuple(getattr(sampler, "sources", ("sample",)))
        with closing(run.task.views(run, stage, sources)) as views:  # its workers end with it
            mark("views built")
            groups = parameter_groups(run, stage)
            metrics: dict[str, float] = {}
            evaluation: Evaluation | None = None
            with trained_parameters(stage, groups):
                step_fn = distributed_step(run, stage, groups)
                self.ended = None
                updates = Updates(run, stage, groups)
                if self.updates_state is not None and self.updates_state.get(
                        "stage", stage.name) == stage.name:
                    updates.load_state_dict(self.updates_state)
                self.updates_state = None
                epochs = range(start_epoch, stage.epochs)
                if start_epoch and self.stopped_early(stage, start_epoch - 1):
                    epochs = range(0)  # resumed after the epoch that ended the stage
                for epoch in epochs:
                    t0 = time.perf_counter()
                    seed = run.epoch_seed(stage, epoch)
                    torch.manual_seed(run.world.seed(seed))
                    random.seed(run.world.seed(seed))
                    lr = updates.schedule.at(epoch)
                    set_learning_rate(updates.optimizer, lr)
                    run.hooks.epoch_start(run=run, stage=stage, epoch=epoch)
                    generator = torch.Generator().manual_seed(seed)
                    order = sampler.epoch_indices(epoch, generator)
                    if order.dim() == 1:
                        order = order.unsqueeze(1)
                    progress = None
                    if self._resumed_epoch is not None:  # continue the epoch where it stopped
                        progress, objects = self._resumed_epoch
                        self._resumed_epoch = None
                        run.run_plugins.load_state_dict(objects)
                        progress.restore_random_states()
                    sums, seen, elapsed = self.train_epoch(index, stage, views, order, sources,
                                                           updates, epoch, seed, t0, progress,
                                                           step_fn)
                    run.world.broadcast_buffers(run.modules)  # rank 0's BatchNorm statistics
                    metrics = {"train/lr": lr, "train/epoch_time": elapsed,
                               "train/samples_per_s": seen / max(elapsed, 1e-9)}
                    total = 0.0
                    for term, value in zip(stage.losses, sums.tolist()):
                        metrics[f"train/loss/{term.name}"] = value
                        total += term.weight * value
                    metrics["train/loss"] = total
                    last = epoch == stage.epochs - 1
                    if self.evaluated(stage, epoch):
                        with updates.evaluated_weights():
                            evaluation = self.evaluate(stage, last)
                            metrics.update(evaluation.figures())
                            self.keep_if_best(stage, epoch, metrics)
                            if not last and self.stopped_early(stage, epoch):
                                last = True
                                self.say(self.early_stop_line(stage, epoch))
                                self.tracker.set_tags(run_id, {"ltcore.stopped_early":
                                                               f"after epoch {epoch + 1}"})
                                evaluation = self.evaluate(stage, True)
                                metrics.update(evaluation.figures())
                            if last and self.best is not None and self.best["stage"] == stage.name:
                                # in the last epoch's record, so a resume sends or skips them
                                metrics.update(self.best_figures(stage, epoch, evaluation))
                    updates.schedule.observe(epoch, metrics)
                    run.hooks.epoch_end(run=run, stage=stage, epoch=epoch, metrics=metrics)
                    self.say(self.console.epoch(stage, epoch, metrics))
                    self.history.append({"stage": stage.name, "epoch": epoch, **metrics})
                    self.tracker.log_metrics(run_id, per_epoch(metrics), step=epoch)
                    self.save(index, epoch + 1, updates)
                    self.tracker.flush()  # what is not sent stays in the checkpoint
                    if last:
                        break
                    if self.stopping(True):
                        self.stopped(stage, epoch + 1, None)
                if stage.evaluate:
                    with updates.evaluated_weights():
                        if evaluation is None or not evaluation.final:  # resumed after the end
                            evaluation = self.evaluate(stage, True)
                updates.finish()
                self.ended = updates
        if not metrics:  # resumed after the stage's last epoch: that epoch's record
            metrics = next((row for row in reversed(self.history) if row["stage"] == stage.name),
                           {})
        if metrics:
            self.final = {k: v for k, v in metrics.items()
                          if not k.startswith("train/") and k not in ("stage", "epoch")}
        if stage.evaluate:
            self.report_stage(stage, run_id, evaluation)
        self.save(index + 1, 0, updates)
        self.tracker.end(run_id)
        run.hooks.stage_end(run=run, stage=stage)

    def evaluated(self, stage: Stage, epoch: int) -> bool:
        """Whether ``epoch`` of ``stage`` is evaluated (every ``eval.every``, and the last)."""
        return stage.evaluate and (epoch == stage.epochs - 1
                                   or (epoch + 1) % self.run.config.eval.every == 0)

    def train_epoch(self, index: int, stage: Stage, views, order, sources, updates: Updates,
                    epoch: int, seed: int, t0: float, progress: EpochProgress | None, step_fn):
        """The epoch's steps (from ``progress.step`` when it continues a stopped epoch), each
        through ``step_fn`` (:func:`distributed_step`), the optimiser stepping at the end of
        each accumulation group: the mean of each loss term, the samples seen and the seconds
        trained."""
        run = self.run
        stage.model.train()
        if stage.trainable == "classifier":
            stage.model.backbone.eval()
        start = progress.step if progress else 0
        sums = (progress.sums.to(run.device) if progress
                else torch.zeros(len(stage.losses), device=run.device))
        seen = progress.seen if progress else 0
        before = progress.elapsed if progress else 0.0
        finite = NonFinite(stage, run.device)
        if run.config.limit.steps:  # a capped try-out run: the epoch's first steps only
            order = order[:run.config.limit.steps * run.config.batch_size]
        steps_per_epoch = len(batch_rows(order, run.config.batch_size, run.world.size))
        batches = views.epoch(order, sources, run.config.batch_size, seed, start,
                              progress.views_state if progress else None)
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=steps_per_epoch, initial=start, leave=False,
                           dynamic_ncols=True, desc=f"{stage.name} {epoch + 1}/{stage.epochs}")
        every = run.config.check_finite_every
        for i, batch in enumerate(batches, start=start):
            step = Step(run, stage, epoch, epoch * steps_per_epoch + i, batch.indices,
                        batch.labels, batch.images, shares=batch.shares)
            first, last, size = updates.group(i, steps_per_epoch)
            mark("training starts")
            try:
                if first:
                    updates.optimizer.zero_grad(set_to_none=True)
                    if stage.schedule.per_step:
                        set_learning_rate(updates.optimizer,
                                          updates.schedule.at(epoch + i / steps_per_epoch))
                with updates.no_sync(step_fn, last):
                    losses = step_fn(step)
                    total = sum(t.weight * l for t, l in zip(stage.losses, losses))
                    updates.backward(total, size)
                finite.update(losses, updates.step() if last else None, i)
                mark("first step")
            except RuntimeError as exc:
                if is_out_of_memory(exc):
                    raise DeviceMemoryError(
                        f"{run.device} ran out of memory in stage {stage.name!r} at batch size "
                        f"{run.config.batch_size} ({len(stage.views)} views per image): use a "
                        f"smaller --batch-size (e.g. {max(1, run.config.batch_size // 2)}, with "
                        f"optim.lr scaled alike, or optim.accumulate to keep the effective "
                        f"batch) or a smaller model") from exc
                if UNUSED_PARAMETERS not in str(exc):
                    raise
                raise PluginError(
                    f"stage {stage.name!r}: a trained parameter got no gradient in a step, which "
                    f"DistributedDataParallel refuses unless asked to look for such parameters; "
                    f"set distributed.find_unused_parameters = true") from exc
            sums += torch.stack([l.detach().float() for l in losses])
            seen += len(next(iter(batch.labels.values())))
            run.hooks.step_end(step=step)
            checkpoint_step = (i + 1) % every == 0 or i + 1 == steps_per_epoch
            if checkpoint_step:
                finite.check(epoch, i, self)
            if last and self.stopping(checkpoint_step) and i + 1 < steps_per_epoch:
                finite.check(epoch, i, self)
                elapsed = before + time.perf_counter() - t0
                self.save(index, epoch, updates, EpochProgress.capture(
                    i + 1, sums, seen, elapsed, views.generator_state()), per_rank=True)
                self.stopped(stage, epoch, (i + 1, steps_per_epoch))
        return sums / max(1, steps_per_epoch), seen, before + time.perf_counter() - t0

    # -- the best epoch and early stopping --

    def keep_if_best(self, stage: Stage, epoch: int, figures: dict[str, float]) -> None:
        """Keep the stage model's weights when ``checkpoint.monitor`` is the stage's best so
        far (the earliest epoch of a tie). A monitored figure the run does not record is an
        error listing those it does."""
        cfg = self.run.config.checkpoint
        value = figures.get(cfg.monitor)
        if value is None:
            if cfg.monitor.split("/", 1)[0] in {k.split("/", 1)[0] for k in figures}:
                raise ConfigError(f"checkpoint.monitor = {cfg.monitor!r} is not a figure this "
                                  f"run records after an epoch; it records "
                                  f"{', '.join(sorted(figures))}")
            return  # the run has no such split (no validation split): no best epoch
        best = self.best
        better = (best is None or best["stage"] != stage.name
                  or (value > best["value"] if cfg.maximise else value < best["value"]))
        if better:
            self.best = {"stage": stage.name, "epoch": epoch, "monitor": cfg.monitor,
                         "value": value, "state": copy_state(stage.model, "cpu")}

    def stopped_early(self, stage: Stage, epoch: int) -> bool:
        """Whether ``stage`` ends after ``epoch``: an evaluated epoch at least
        ``early_stop.patience`` epochs after the stage's best."""
        patience = self.run.config.early_stop.patience
        best = self.best
        return bool(patience and self.evaluated(stage, epoch) and best is not None
                    and best["stage"] == stage.name and epoch - best["epoch"] >= patience)

    def early_stop_line(self, stage: Stage, epoch: int) -> str:
        best = self.best
        return (f"stage {stage.name!r} stops early after epoch {epoch + 1}/{stage.epochs}: "
                f"{best['monitor']} has not improved for "
                f"{plural(epoch - best['epoch'], 'epoch')} (best "
                f"{best['value']:.4g} at epoch {best['epoch'] + 1}; early_stop.patience "
                f"{self.run.config.early_stop.patience})")

    def best_figures(self, stage: Stage, epoch: int, last: Evaluation) -> dict[str, float]:
        """Every figure of the best epoch's model on every evaluation split, as ``best/...``,
        with ``best/epoch`` (1-based); ``last`` is the final evaluation after ``epoch``. They
        are recorded with the stage's last epoch."""
        best = self.best
        if best["epoch"] == epoch:
            figures = last.figures()
        else:
            with self.best_weights(stage):
                figures = self.evaluate(stage, True).figures()
        return {**{f"best/{k}": v for k, v in figures.items()},
                "best/epoch": float(best["epoch"] + 1)}

    @contextmanager
    def best_weights(self, stage: Stage):
        """The stage model holds the best epoch's weights inside the block."""
        last = copy_state(stage.model)
        stage.model.load_state_dict(self.best["state"])
        try:
            yield
        finally:
            stage.model.load_state_dict(last)

    def write_best_model(self, path: Path) -> bool:
        """Save the run as :data:`checkpoints.MODEL` does, with the last evaluated stage's
        model at its best epoch on validation; False when no stage had a validation split (or
        on ranks other than 0)."""
        if self.best is None or not self.run.world.is_main:
            return False
        stage = self.run.stage(self.best["stage"])
        with self.best_weights(stage):
            checkpoints.write(path, {**checkpoints.model_state(self.run),
                                     "best_epoch": (stage.name, self.best["epoch"] + 1)})
        return True

    def evaluate(self, stage: Stage, final: bool) -> Evaluation:
        """The stage's evaluation: validation only after an epoch, every evaluation split at
        the stage's end (test figures are never there to choose epochs by)."""
        splits = None if final else [s for s in self.run.dataset.eval_splits() if s != "test"]
        try:
            return self.run.evaluate(stage.model, splits, stage=stage, final=final)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            size = self.run.config.eval.batch_size
            raise DeviceMemoryError(
                f"{self.run.device} ran out of memory evaluating stage {stage.name!r} at "
                f"eval.batch_size {size}: use --set eval.batch_size={max(1, size // 2)}") from exc

    def stopped(self, stage: Stage, epoch: int, steps: tuple[int, int] | None) -> None:
        """Raise :class:`RunStopped` for the signal received, with where the run stopped:
        inside epoch ``epoch`` after ``steps = (done, per epoch)``, or after epoch ``epoch``."""
        self.settle()
        where = (f"stage {stage.name!r}, epoch {epoch + 1}/{stage.epochs} after step "
                 f"{steps[0]}/{steps[1]}" if steps is not None
                 else f"stage {stage.name!r} after epoch {epoch}/{stage.epochs}")
        raise RunStopped(f"stopped by {self.stop.received} in {where}; checkpoint saved "
                         f"{self.saved}. Continue with: {self.resume_command()}",
                         signal_name=self.stop.received, where=where)

    # -- reports --

    def report_stage(self, stage: Stage, run_id: str, evaluation: Evaluation) -> None:
        """The stage's final evaluation as artifacts: its figures (test and best epoch
        included) and the task's per-class tables and plots (rank 0 writes them)."""
        if not self.run.world.is_main:
            return
        folder = self.run_dir / "artifacts" / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        figures = write_csv(folder / FIGURES_CSV, ["figure", "value"],
                            [[k, v] for k, v in sorted(self.final.items())])
        self.tracker.log_artifact(run_id, str(figures), "evaluation")
        for path in self.run.task.report(self.run, stage, evaluation, folder):
            self.tracker.log_artifact(run_id, str(path), "evaluation")
