"""The one evaluation path: model outputs on un-augmented splits, through the hooks, to figures.

:func:`evaluate` computes a model's classifier logits and backbone features on each asked-for
split, lets every ``adjust_eval_logits`` implementation change the logits (LWS's scales,
tau-norm's normalised classifier), applies post-hoc logit adjustment (``eval.posthoc_la_tau``)
and returns an :class:`Evaluation`. Per-epoch and final figures, the reports, RCL's per-class
measurement, shifted test sets and ``ltrun evaluate`` all call it.

Figures are percentages. Overall accuracy is over samples; ``many``/``medium``/``few`` are the
unweighted means of per-class accuracies within each shot group (``eval.shot_groups``: by
``eval.many_threshold``/``eval.few_threshold``, or thirds of the classes), and an empty group
has no figure; ``hmean`` is the harmonic mean of per-class accuracies (:data:`HMEAN`). Metric
components (``register_metrics``) add more; a figure that is NaN is left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import attrs
import torch

from . import metrics as M
from .data import Split, load_image
from .launch import worker_options
from .errors import DataError

if TYPE_CHECKING:
    from .models import ModelBundle
    from .run import Run, Stage

HMEAN = ("hmean: the harmonic mean of the per-class accuracies, C / sum(1 / accuracy), 0 when "
         "any class is at 0%")
"""The harmonic mean's definition, as the plan states it."""


@attrs.define(eq=False)
class EvalOutputs:
    """Everything a metric may use about one split: logits, labels, backbone features (when
    kept), the training counts."""

    split: str
    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None
    class_counts: torch.Tensor
    many_threshold: int
    few_threshold: int
    shot_groups: str = "counts"
    """``counts`` (by the thresholds) or ``thirds`` (:func:`ltcore.metrics.shot_thirds`)."""

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    def per_class_accuracy(self) -> torch.Tensor:
        return M.per_class_accuracy(self.predictions, self.labels, self.num_classes)

    def groups(self) -> dict[str, torch.Tensor]:
        return class_groups(self.class_counts, self.shot_groups, self.many_threshold,
                            self.few_threshold)


def class_groups(class_counts: torch.Tensor, grouping: str = "counts", many: int = 100,
                 few: int = 20) -> dict[str, torch.Tensor]:
    """The many/medium/few class indices of ``eval.shot_groups``: by the ``many``/``few``
    thresholds (``counts``) or thirds of the classes (``thirds``)."""
    if grouping == "thirds":
        return M.shot_thirds(class_counts)
    return M.shot_groups(class_counts, many, few)


def shot_groups_of(class_counts: torch.Tensor, config) -> dict[str, torch.Tensor]:
    """:func:`class_groups` as the evaluation settings ``config`` (an ``EvalConfig``) choose."""
    return class_groups(class_counts, config.shot_groups, config.many_threshold,
                        config.few_threshold)


SHOWN_CLASSES = 8
"""Class names a shot-group line shows before saying how many more there are."""


def shot_group_lines(class_counts: torch.Tensor, classes: list[str], config) -> list[str]:
    """What the groups are: how ``config`` (``eval.*``) makes them, then each group's classes
    (by name) and training-count range, ``-`` for an empty one."""
    if config.shot_groups == "thirds":
        rule = ("thirds: the classes ordered by training images, most first, cut into three "
                "groups of equal size, the first ones a class larger where the classes do not "
                "divide by 3")
    else:
        rule = (f"counts: many > {config.many_threshold}, few < {config.few_threshold} "
                f"training images, medium in between")
    lines = [f"shot groups (eval.shot_groups = {rule}):"]
    counts = torch.as_tensor(class_counts).tolist()
    for name, indices in shot_groups_of(class_counts, config).items():
        members = indices.tolist()
        if not members:
            lines.append(f"  {name:<7} -")
            continue
        low, high = min(counts[i] for i in members), max(counts[i] for i in members)
        shown = ", ".join(classes[i] for i in members[:SHOWN_CLASSES])
        if len(members) > SHOWN_CLASSES:
            shown += f", ... ({len(members) - SHOWN_CLASSES} more)"
        lines.append(f"  {name:<7} {len(members)} {'class' if len(members) == 1 else 'classes'}, "
                     f"{low if low == high else f'{low}-{high}'} training images: {shown}")
    return lines


@attrs.define
class Metric:
    """A registered metric made of a function: ``fn(outputs) -> {name: value}``.

    ``when`` is ``epoch`` (every evaluation) or ``final`` (end of each stage, for costly ones);
    ``needs_features`` asks the evaluation to keep the backbone features (final evaluations
    always keep them).
    """

    fn: Callable[[EvalOutputs], dict[str, float]]
    when: str = attrs.field(default="epoch", validator=attrs.validators.in_(("epoch", "final")))
    needs_features: bool = False
    doc: str = ""

    def __call__(self, outputs: EvalOutputs) -> dict[str, float]:
        return self.fn(outputs)


FIGURE_DECIMALS = 4
"""Decimals of the accuracy figures (percent): finer than any split of under a million images
resolves, and free of float rounding noise (17.5, not 17.499999701976776)."""


def accuracy_figures(outputs: EvalOutputs) -> dict[str, float]:
    """Overall top-1, many/medium/few and harmonic-mean accuracy (percent), computed in
    float64 from the counts of correct predictions and rounded to :data:`FIGURE_DECIMALS`."""
    per_class = M.per_class_accuracy(outputs.predictions, outputs.labels, outputs.num_classes,
                                     torch.float64)
    correct = int((outputs.predictions == outputs.labels).sum())
    figures = {"acc": 100.0 * correct / len(outputs.labels)}
    for group, value in M.group_accuracy(per_class, outputs.groups()).items():
        figures[group] = 100.0 * float(value)
    figures["hmean"] = 100.0 * float(M.harmonic_mean_accuracy(per_class))
    return {name: round(value, FIGURE_DECIMALS) for name, value in figures.items()}


def posthoc_logit_adjustment(logits: torch.Tensor, class_counts: torch.Tensor,
                             tau: float) -> torch.Tensor:
    """``logits - tau * log(pi)`` with ``pi`` the training class prior (Menon et al. 2021)."""
    return logits - tau * torch.log(class_counts.float() / class_counts.sum())


@attrs.define(eq=False)
class Evaluation:
    """One evaluation of ``model`` on some splits, as ``adjust_eval_logits`` sees and changes it.

    ``stage`` is the stage being trained when the evaluation happens (None for a saved model)
    and ``final`` marks an evaluation with every metric (a stage's last epoch, ``ltrun
    evaluate``).
    """

    run: "Run"
    model: "ModelBundle"
    outputs: dict[str, EvalOutputs]
    stage: "Stage | None" = None
    final: bool = False

    def figures(self) -> dict[str, float]:
        """``{"val/acc": ...}``: the accuracy figures and the run's selected metrics of every
        split (the ``final`` ones only in a final evaluation)."""
        figures = {}
        metrics = selected_metrics(self.run, self.final)
        for name, out in self.outputs.items():
            for metric in metrics.values():
                for key, value in metric(out).items():
                    if not (isinstance(value, float) and math.isnan(value)):
                        figures[f"{name}/{key}"] = value
        return figures


def selected_metrics(run: Run, final: bool) -> dict[str, object]:
    """The metrics an evaluation computes: accuracy, ``eval.metrics`` and those the plugins
    asked for (:meth:`Run.add_metrics`); ``final``-only ones in final evaluations."""
    table = {}
    for name in [run.task.metric, *run.config.eval.metrics, *run.metrics]:
        metric = run.component("metric", name)
        if metric.when == "epoch" or final:
            table[name] = metric
    return table


def evaluate(run: Run, model: ModelBundle, splits: Sequence[str] | None = None, *,
             stage: Stage | None = None, final: bool = False,
             features: bool = False) -> Evaluation:
    """Evaluate ``model`` on ``splits`` of the run's dataset (``train``, ``val``, ``test``;
    default: the evaluation splits it has).

    Images are un-augmented (the dataset's evaluation view). Backbone features are kept when ``features``,
    in a final evaluation, or when a selected metric needs them. The logits then go through
    ``adjust_eval_logits`` and post-hoc logit adjustment. The model is left in the mode it was
    in.
    """
    table = {"train": run.dataset.train, **run.dataset.eval_splits()}
    names = list(splits) if splits is not None else list(run.dataset.eval_splits())
    missing = [n for n in names if n not in table]
    if missing:
        raise DataError(f"dataset {run.dataset.name!r} has no {', '.join(map(repr, missing))} "
                        f"split (it has {', '.join(table)})")
    keep = features or final or any(getattr(m, "needs_features", False)
                                    for m in selected_metrics(run, final).values())
    return run.task.evaluate(run, model, {name: table[name] for name in names}, stage=stage,
                             final=final, keep_features=keep)


def classification_evaluation(run: Run, model: ModelBundle, splits: dict[str, Split], *,
                              stage: Stage | None, final: bool,
                              keep_features: bool) -> Evaluation:
    """Image classification's evaluation (:meth:`ltcore.Task.evaluate`): each split's logits,
    labels and (``keep_features``) backbone features, then ``adjust_eval_logits`` and
    post-hoc logit adjustment."""
    counts = run.dataset.class_counts
    cfg = run.config.eval
    outputs = {}
    for name, split in splits.items():
        logits, kept = model_outputs(run, model, split, keep_features)
        outputs[name] = EvalOutputs(name, logits, split.labels, kept, counts,
                                    cfg.many_threshold, cfg.few_threshold, cfg.shot_groups)
    evaluation = Evaluation(run, model, outputs, stage, final)
    run.hooks.adjust_eval_logits(evaluation=evaluation)
    if cfg.posthoc_la_tau:
        for out in outputs.values():
            out.logits = posthoc_logit_adjustment(out.logits, counts, cfg.posthoc_la_tau)
    return evaluation


@torch.no_grad()
def model_outputs(run: Run, model: ModelBundle, split: Split,
                  keep_features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw classifier logits (and backbone features) of ``model`` on an un-augmented split, on
    the CPU (one copy per split). Use :func:`evaluate`, which adds the plugins' adjustments."""
    was_training = model.training
    model.eval()
    world = run.world
    shard = world.distributed and len(split) >= world.size
    if shard:  # each rank its consecutive share, gathered in order
        shares = world.shares(len(split))
        split = subset(split, world.span(len(split)))
    logits, feats = [], []
    try:
        with run.autocast():
            for x in eval_batches(run, split):
                f = model.backbone(run.speed.layout(x))
                logits.append(model.classifier(f).float())
                if keep_features:
                    feats.append(f.float())
    finally:
        model.train(was_training)
    logits = torch.cat(logits)
    feats = torch.cat(feats) if keep_features else None
    if shard:
        logits = world.gather(logits, shares)
        feats = world.gather(feats, shares) if keep_features else None
    return logits.cpu(), (feats.cpu() if keep_features else None)


def classification_report(run: Run, stage: Stage, evaluation: Evaluation,
                          folder: Path) -> list[Path]:
    """Image classification's stage report (:meth:`ltcore.Task.report`): per split, the
    per-class accuracy as CSV and, unless ``limit.plots`` is off, the confusion matrix and
    per-class accuracy against class size as plots."""
    from . import plots
    from .files import write_csv
    from .tasks import Task

    table = Task.per_class
    counts = run.dataset.class_counts.tolist()
    classes = run.dataset.classes
    files = []
    for split, out in evaluation.outputs.items():
        per_class = out.per_class_accuracy().tolist()
        files.append(write_csv(folder / f"{split}_{table.file}",
                               ["class_index", "class", table.count, table.figure],
                               [[i, name, n, f"{100 * acc:.4f}"] for i, (name, n, acc)
                                in enumerate(zip(classes, counts, per_class))]))
        if run.config.limit.plots:
            files += [plots.confusion_matrix_png(out, classes,
                                                 folder / f"{split}_confusion_matrix.png"),
                      plots.per_class_accuracy_png(
                          {stage.name: per_class}, counts, folder / f"{split}_per_class_accuracy.png",
                          title=f"{split}: per-class accuracy vs class size")]
    return files


def subset(split: Split, rows: slice) -> Split:
    """The samples ``rows`` of ``split``."""
    return Split(*(None if part is None else part[rows] for part in
                   (split.labels, split.images, split.paths, split.masks, split.mask_paths)))


def eval_batches(run: Run, split: Split) -> Iterator[torch.Tensor]:
    """Batches of ``eval.batch_size`` un-augmented images of ``split`` on the run's device,
    through the dataset's evaluation view (``Dataset.eval_view``): in-memory images on the
    device; image files decoded on the device when the views are batched there (a GPU, or
    ``views.backend = 'batched'``), else per image in DataLoader workers."""
    ds = run.dataset
    eval_view = run.component("view", ds.eval_view)
    size = run.config.eval.batch_size
    workers = run.config.views.loader_workers
    if split.images is not None:
        normalise = eval_view.make_batched(ds.image_size, ds.mean, ds.std)
        unused = torch.Generator(device=run.device)
        return (normalise(split.images[i:i + size].to(run.device), unused)
                for i in range(0, len(split), size))
    backend = run.config.views.backend
    if eval_view.batched and (backend == "batched" or (backend == "auto"
                                                       and run.device.type == "cuda")):
        from .views.files import EncodedImages, as_list, decode

        pipeline = eval_view.make_batched(ds.image_size, ds.mean, ds.std)
        unused = torch.Generator(device=run.device)
        loader = torch.utils.data.DataLoader(
            EncodedImages(split.paths, decode_jpegs=run.device.type != "cuda"), batch_size=size,
            num_workers=workers, collate_fn=as_list, pin_memory=run.device.type == "cuda",
            **worker_options())
        starts = range(0, len(split), size)
        return (pipeline.from_images(decode(items, split.paths[i:i + size], run.device), unused)
                for i, items in zip(starts, loader))
    transform = eval_view.make_reference(ds.image_size, ds.mean, ds.std)
    loader = torch.utils.data.DataLoader(_FileImages(split.paths, transform), batch_size=size,
                                         num_workers=workers, **worker_options())
    return (x.to(run.device) for x in loader)


class _FileImages(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(load_image(self.paths[i]))
