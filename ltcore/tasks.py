"""Tasks: what a run predicts, and the few places where that changes how it trains.

A dataset names its task (``Dataset.task``); the task is a component (``register_tasks``) that
the engine asks, at five points, what to do: make a stage's training batches, turn the stacked
views into features and logits, evaluate a model on splits, report a stage's final evaluation
and show an epoch's figures. Everything else (stages, loss terms, samplers, optimisers,
schedules, checkpoints, tracking, sweeps) is shared. :class:`Task` is image classification, one
label per image, the task of every built-in dataset; a plugin subclasses it for another task
(``ltcore-seg``'s ``segmentation``: a label per pixel) and overrides those methods.

A task registered by a plugin needs that plugin selected: it sets up the task's losses. It may
``adopt`` other plugins, methods it gives a form of its own (segmentation adopts ``gml``): an
adopted plugin's options and presets apply, while its run hooks stay out of the run and the
task's plugin builds the method. Any other plugin in such a run is refused in one line.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .errors import ConfigError, PluginError

if TYPE_CHECKING:
    import torch

    from .data import Split
    from .evaluation import Evaluation
    from .models import ModelBundle
    from .run import Run, Stage, Step

CLASSIFICATION = "classification"
"""The built-in task's name, every dataset's unless it names another."""


@attrs.frozen
class PerClassTable:
    """The per-class CSV a stage's final evaluation writes for each split
    (``evaluation/<split>_<file>``, a row per class with a ``class`` column) and ``ltrun report``
    reads back to plot each class's figure against its training count."""

    file: str
    count: str
    """The column of the class's training count (images, or pixels)."""
    figure: str
    """The column of the class's figure in percent (empty where it is undefined, as the IoU of
    a class absent from both the split and the predictions)."""
    name: str
    """The figure's name in plots and captions (``accuracy``, ``IoU``)."""
    against: str
    """What the figure is plotted against, in headings (``class size``)."""
    unit: str
    """What the training count counts (``training images``): the plot's axis."""


class Task:
    """Image classification: one label per image (the built-in task).

    Subclass it for another task and override what differs; ``name`` is the registered name,
    ``metric`` the registered metric every evaluation computes, ``adopts`` the plugins whose
    method the task's own plugin builds. The other attributes say how recorded runs of the task
    are read back (``ltrun report``, sweep summaries), where only the run's ``ltcore.task`` tag
    names the task.
    """

    name: str = CLASSIFICATION
    metric: str = "accuracy"
    adopts: tuple[str, ...] = ()
    headline: str = "acc"
    """The overall figure of a split (``<split>/<headline>``) that a sweep's summary shows."""
    per_class: PerClassTable = PerClassTable("per_class_accuracy.csv", "train_count", "accuracy",
                                             "accuracy", "class size", "training images")
    standalone: bool = True
    """Whether a saved model of the task predicts on its own (``load_model``, ``ltrun predict``
    and ``export``, the MLflow Model a run logs, the figures ``ltrun report`` computes from a
    run's model)."""

    def check(self, run: "Run", plugin: str) -> None:
        """Refuse a run whose plugins or settings cannot train this task; ``plugin`` registered
        it."""
        if not self.standalone and run.config.tracking.register_model:
            raise ConfigError(f"tracking.register_model registers the run's MLflow Model; a "
                              f"{self.name} model is not logged as one (it is used through its "
                              f"run: ltrun evaluate --checkpoint)")
        if plugin == "core":
            return
        dataset = run.dataset.name
        if plugin not in run.selected:
            raise PluginError(f"dataset {dataset!r} is a {self.name} dataset: select "
                              f"--plugin {plugin}, which trains that task")
        others = [p for p in run.selected if p != plugin and p not in self.adopts]
        if others:
            with_adopted = "".join(f" --plugin {p}" for p in self.adopts)
            raise PluginError(f"plugin(s) {', '.join(others)} train image classification; "
                              f"dataset {dataset!r} is a {self.name} dataset, trained by "
                              f"--plugin {plugin}" + (f" (with{with_adopted})" if with_adopted
                                                      else ""))

    def views(self, run: "Run", stage: "Stage", sources: tuple[str, ...]):
        """The stage's training batches: an object with ``epoch(order, sources, batch_size,
        seed, start, state)`` yielding :class:`ltcore.engine.backends.Batch`,
        ``generator_state()`` and ``close()``, called when the stage ends (a DataLoader's
        workers ended there: :func:`ltcore.shut_down_workers`) (:mod:`ltcore.engine.backends`)."""
        from .engine.backends import stage_views

        return stage_views(run, stage, sources)

    def forward(self, run: "Run", step: "Step", roles: list[str], x: torch.Tensor) -> None:
        """Fill ``step.features`` and, for the views that ask, ``step.logits`` and
        ``step.embeddings`` from ``x``, the stacked images of ``roles`` (inside autocast)."""
        import torch

        stage = step.stage
        model = stage.model
        with torch.no_grad() if stage.trainable == "classifier" else nullcontext():
            features = model.backbone(x)
        for role, f in zip(roles, features.split([len(step.images[r]) for r in roles])):
            step.features[role] = f
            view = stage.views[role]
            if view.classify:
                step.logits[role] = model.classifier(f).float()
            if view.embed:
                step.embeddings[role] = run.embed(model, f).float()

    def evaluate(self, run: "Run", model: "ModelBundle", splits: dict[str, "Split"], *,
                 stage: "Stage | None", final: bool, keep_features: bool) -> "Evaluation":
        """Evaluate ``model`` on ``splits`` (name -> split): each split's outputs, as the
        task's metrics take them, through the plugins' adjustments."""
        from .evaluation import classification_evaluation

        return classification_evaluation(run, model, splits, stage=stage, final=final,
                                         keep_features=keep_features)

    def report(self, run: "Run", stage: "Stage", evaluation: "Evaluation",
               folder: Path) -> list[Path]:
        """Write the stage's final per-class tables and plots into ``folder``; the files."""
        from .evaluation import classification_report

        return classification_report(run, stage, evaluation, folder)

    def epoch_figures(self, metrics: dict[str, float]) -> list[str]:
        """The parts of an epoch's console line that show its validation figures."""
        from .engine.console import figure
        from .metrics import SHOT_GROUP_NAMES

        if "val/acc" not in metrics:
            return []
        return [f"val {metrics['val/acc']:5.2f}%" + "".join(
            f" {group} {figure(metrics.get(f'val/{group}'), 1)}" for group in SHOT_GROUP_NAMES)]

    def plan_lines(self, run: "Run") -> list[str]:
        """The plan's lines on how the figures are grouped."""
        from .evaluation import HMEAN, shot_group_lines

        return [*shot_group_lines(run.dataset.class_counts, run.dataset.classes,
                                  run.config.eval), HMEAN]

