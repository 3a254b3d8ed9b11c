"""Reports: one HTML or markdown page with the comparison table and the plots.

:func:`build_report` writes the table of :func:`~ltcore.experiments.compare.compare` and the
plots of :mod:`ltcore.plots` (per-class accuracy vs class size and many/medium/few bars per
method, accuracy vs epoch, seed-averaged confusion matrices, t-SNE of backbone features) and the
papers' figures the runs hold data for (:mod:`ltcore.experiments.figures`), each as PNG, SVG and
PDF, recomputing what needs the model from each run's saved ``model.pt``
through the run's evaluation path. The per-method figures use the table's split
(:func:`figure_split`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from ..config import doc
from ..files import write_text
from ..tables import RUN_FIGURE_KINDS
from ..tasks import CLASSIFICATION, Task
from .compare import (Comparison, comparison_note, final_metrics, html_table, last_stage_run,
                      literal, markdown_table, render, run_value, table_rows)
from .figures import SECTIONS, add_figure_data, draw, projections
from .tags import KIND_TAG, SWEEP_TAG, TASK_TAG


@attrs.define
class RunDetail:
    """What a report shows about one run (None where it could not be computed)."""

    run_id: str
    label: str
    group: str
    """The run's group (its label without the seed): curves are averaged over a group."""
    dataset: str
    imbalance_factor: str
    classes: list[str] | None = None
    counts: list[int] | None = None
    per_class: list[float] | None = None
    confusion: Any = None
    features: Any = None
    """Backbone features of the t-SNE split's images (``labels``: their classes)."""
    labels: Any = None
    class_groups: list[str] | None = None
    figures: dict[str, float] = attrs.Factory(dict)
    """The run's figures in the table (``test/many``, ...; percent)."""
    curves: dict[str, tuple[list[int], list[float]]] = attrs.Factory(dict)
    boundaries: list[int] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    projections: Any = None
    """The projection head's outputs for the t-SNE split's images (a model with one)."""
    recorded: dict[str, dict] = attrs.Factory(dict)
    """The figures' data the run recorded (``figures/<name>.json``: name -> data)."""
    task: Task | None = attrs.Factory(Task)
    """The task the run trained (None: no installed plugin registers it)."""


def run_label(run, group_by: Sequence[str], seed: bool = True) -> str:
    """``bcl,rcl IF=100 seed=0``: the group values of the run plus (with ``seed``) its seed."""
    parts = []
    for key in group_by:
        value = run_value(run, key)
        if key == "imbalance_factor":
            parts.append(f"IF={value}")
        elif key == "plugins":
            parts.append(value)
        elif value:
            parts.append(f"{key.split('.')[-1]}={value}")
    if seed:
        parts.append(f"seed={run_value(run, 'seed')}")
    return " ".join(p for p in parts if p)


def label_keys(runs: Sequence, group_by: Sequence[str]) -> list[str]:
    """The keys of ``group_by`` whose values differ among ``runs`` (the first key when none
    does): what tells the runs apart in a legend, where a value they all share (a sweep's fixed
    settings) would only lengthen every label."""
    varying = [key for key in group_by if len({run_value(run, key) for run in runs}) > 1]
    return varying or list(group_by[:1])


def stage_curves(client, run, keys: Sequence[str] = ("val/acc", "train/loss")):
    """Per-epoch histories of the run's stages, end to end: key -> (epochs, values) and the
    epochs where a new stage starts."""
    stages = client.search_runs([run.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = {literal(run.info.run_id)}",
                                order_by=["attributes.start_time ASC"], max_results=50)
    curves: dict[str, tuple[list[int], list[float]]] = {k: ([], []) for k in keys}
    boundaries, offset = [], 0
    for i, stage in enumerate(stages):
        last = -1
        for key in keys:
            history = sorted({m.step: m.value for m in
                              client.get_metric_history(stage.info.run_id, key)}.items())
            for step, value in history:
                curves[key][0].append(offset + step)
                curves[key][1].append(value)
                last = max(last, step)
        if i > 0:
            boundaries.append(offset)
        offset += last + 1
    return {k: v for k, v in curves.items() if v[0]}, boundaries


def model_file(client, run, runs_dir: str | None, scratch: Path) -> Path | None:
    """The run's ``model.pt``: under ``runs_dir`` (or the run's ``output`` param), else the
    ``checkpoints/model.pt`` artifact downloaded to ``scratch``."""
    from ..engine.checkpoints import MODEL
    from ..engine.runs import find_run_folder
    from ..errors import DataError

    for root in [*([runs_dir] if runs_dir else []), run.data.params.get("output", "runs")]:
        try:
            path = find_run_folder(root, run.info.run_id)[0] / MODEL
        except DataError:
            continue
        if path.is_file():
            return path
    try:
        target = scratch / run.info.run_id
        target.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run.info.run_id, "checkpoints/model.pt", str(target)))
    except Exception:
        return None


def model_details(path: Path, split: str, plugins=None, device: str = "cpu",
                  data_dir: str | None = None, feature_split: str | None = None) -> dict[str, Any]:
    """Rebuild the saved run and compute, on ``split``: per-class accuracy, the confusion matrix,
    class counts and shot groups; with ``feature_split``, the backbone features, labels and
    projection head outputs (None without a head) of that split's images."""
    from ..engine.runs import load_saved_run
    from ..metrics import confusion_matrix
    from ..plugins import Plugins

    overrides: dict[str, Any] = {"device": device, "views.workers": 0}
    if data_dir:
        overrides["data_dir"] = data_dir
    run = load_saved_run(plugins or Plugins(), str(path), overrides)
    splits = list(dict.fromkeys([split, *([feature_split] if feature_split else [])]))
    outputs = run.evaluate(run.stages[-1].model, splits, features=bool(feature_split)).outputs
    out = outputs[split]
    num = run.dataset.num_classes
    group_of = ["" for _ in range(num)]
    for name, idx in out.groups().items():
        for i in idx.tolist():
            group_of[i] = name
    details = {"classes": list(run.dataset.classes), "counts": out.class_counts.tolist(),
               "per_class": out.per_class_accuracy().tolist(),
               "confusion": confusion_matrix(out.predictions, out.labels.cpu(), num).numpy(),
               "class_groups": group_of}
    if feature_split:
        seen = outputs[feature_split]
        details.update(features=seen.features.numpy(), labels=seen.labels.cpu().numpy(),
                       projections=projections(run, seen.features))
    return details


def recorded_task(run, plugins) -> Task | None:
    """The task a recorded run trained (its ``ltcore.task`` tag; classification for runs
    recorded before tasks were), or None when no installed plugin registers it."""
    name = run.data.tags.get(TASK_TAG, CLASSIFICATION)
    component = plugins.components["task"].get(name)
    return component.obj if component is not None else None


def per_class_from_artifact(client, run, task: Task, split: str, scratch: Path) -> tuple | None:
    """(counts, per-class figure in [0, 1], classes) from the last stage's per-class CSV
    artifact (:attr:`Task.per_class`: accuracy, IoU for segmentation)."""
    stage = last_stage_run(client, run)
    if stage is None:
        return None
    table = task.per_class
    try:
        target = scratch / f"{run.info.run_id}-csv"
        target.mkdir(parents=True, exist_ok=True)
        path = client.download_artifacts(stage.info.run_id, f"evaluation/{split}_{table.file}",
                                         str(target))
    except Exception:
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return ([int(r[table.count]) for r in rows],
            [float(r[table.figure]) / 100 if r[table.figure] else float("nan") for r in rows],
            [r["class"] for r in rows])


def tsne(features, seed: int = 0, normalise: str = "l2", max_points: int = 2000):
    """2-d t-SNE (scikit-learn, single-threaded) of features; returns (points, index of the
    rows kept)."""
    import numpy as np
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64)
    keep = np.arange(len(x))
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x = x[keep]
    if normalise == "l2":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif normalise == "standard":
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # one thread: OpenMP workers busy-wait, and on a shared machine a few thousand points take
    # ten times longer with them than without
    with threadpool_limits(limits=1):
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                      learning_rate="auto").fit_transform(x)
    return points, keep


def figure_split(comparison: Comparison) -> str:
    """The split of the per-method figures: the table's, ``test`` when it shows test figures
    (the split the papers report, ``ltrun compare``'s default), else the first it shows with
    figures."""
    shown = list(dict.fromkeys(c.split("/")[0] for c in comparison.columns if "/" in c))
    with_figures = [s for s in shown if any(row.stats.get(c) for row in comparison.rows
                                            for c in comparison.columns if c.startswith(s + "/"))]
    candidates = with_figures or shown
    return "test" if "test" in candidates or not candidates else candidates[0]


def per_class_by_method(details: Sequence[RunDetail]) -> tuple[dict[str, list], list[int]]:
    """Each method's (group's) per-class figures (accuracies, or IoUs), one list per run, and
    the training count per class they share (those of the first run; runs with other classes
    are left out)."""
    runs = [d for d in details if d.per_class is not None and d.counts is not None]
    if not runs:
        return {}, []
    methods: dict[str, list] = {}
    for d in runs:
        if len(d.per_class) == len(runs[0].counts):
            methods.setdefault(d.group, []).append(d.per_class)
    return methods, list(runs[0].counts)


SCALING = {"l2": "L2-normalised first", "standard": "each dimension standardised first",
           "none": "as they are"}


@attrs.define(kw_only=True)
class ReportOptions:
    """Choices of ``ltrun report`` (the command's options of the same names)."""

    split: str = doc("evaluation split of the t-SNE plots (the other figures use the table's)",
                     default="val")
    format: str = doc("html | markdown page", default="html",
                      validator=attrs.validators.in_(("html", "markdown")))
    tsne: bool = doc("draw a t-SNE of each run's backbone features (and of its projections)",
                     default=True)
    figures: tuple[str, ...] = doc("the papers' figures to draw where the runs hold their data "
                                   "(docs/comparing.md#figures)", default=RUN_FIGURE_KINDS,
                                   converter=tuple, validator=attrs.validators.deep_iterable(
                                       attrs.validators.in_(RUN_FIGURE_KINDS)))
    temperature_classes: int = doc("classes in the temperatures figure: those with the fewest "
                                   "training images (0: every class)", default=4,
                                   validator=attrs.validators.ge(0))
    tsne_normalise: str = doc("feature scaling before t-SNE: l2 (unit norm), standard (z-score "
                              "per dimension) or none", default="l2",
                              validator=attrs.validators.in_(("l2", "standard", "none")))
    tsne_points: int = doc("at most this many points per t-SNE (random subset, seed 0)",
                           default=2000, validator=attrs.validators.gt(10))
    max_runs: int = doc("runs shown in per-run panels (confusion matrices, t-SNE)", default=12,
                        validator=attrs.validators.gt(0))
    log: bool = doc("log the plots as MLflow artifacts", default=True)
    device: str = doc("device the model outputs are recomputed on", default="cpu")
    runs_dir: str | None = doc("folder holding each run folder's model.pt (default: each run's output "
                               "setting)", default=None)
    data_dir: str | None = doc("dataset folder, when it moved since training", default=None)
    tables: list = doc("the papers' tables of a reproduction sweep, as laid out by "
                       ":func:`ltcore.experiments.reproduce.layout_rows` (title, header, rows)",
                       factory=list)
    table_figures: list = doc("figures of a reproduction sweep's tables (section, PNG, "
                              "caption), drawn by "
                              ":func:`ltcore.experiments.reproduce.against_setting`",
                              factory=list)


def build_report(client, runs: Sequence, comparison: Comparison, output: Path,
                 options: ReportOptions, title: str, sweep: str | None = None,
                 echo: Callable[[str], None] = print) -> Path:
    """Write the page, its table and plots under ``output``; log the plots to MLflow.

    Per run: t-SNE of the backbone features on ``options.split`` (logged to that run under
    ``report/``). Per dataset and imbalance factor, on the table's split (:func:`figure_split`),
    one line, bar or matrix per method averaged over its seeds: per-class accuracy vs class size,
    many/medium/few accuracy, a confusion matrix per method; and accuracy (and training loss) vs
    epoch (logged to the sweep's record); the papers' figures of ``options.figures`` that the
    runs hold data for (:func:`ltcore.experiments.figures.draw`; those of one run are logged to
    it). Every figure is a PNG with an SVG and a PDF beside it.
    """
    import tempfile

    import numpy as np

    from .. import plots
    from ..plugins import Plugins

    output = Path(output)
    plot_dir = output / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plugins = Plugins()
    details: list[RunDetail] = []
    split = figure_split(comparison)
    labelled = label_keys(runs, comparison.group_by)
    with tempfile.TemporaryDirectory(prefix="ltcore-report-") as tmp:
        scratch = Path(tmp)
        for run in runs:
            detail = RunDetail(run.info.run_id, run_label(run, labelled),
                               run_label(run, labelled, seed=False) or "all runs",
                               run_value(run, "dataset"), run_value(run, "imbalance_factor"))
            try:
                detail.curves, detail.boundaries = stage_curves(client, run)
            except Exception as exc:
                detail.notes.append(f"no curves: {exc}")
            try:
                detail.figures = {k: v for k, v in final_metrics(client, run, comparison.select)
                                  .items() if k.startswith(f"{split}/")}
            except Exception as exc:
                detail.notes.append(f"no table figures: {exc}")
            try:
                add_figure_data(client, run, detail, options.figures, options.runs_dir, scratch)
            except Exception as exc:
                detail.notes.append(f"no figures' data: {exc}")
            detail.task = recorded_task(run, plugins)
            if detail.task is None:
                detail.notes.append(f"task {run.data.tags.get(TASK_TAG)!r} is not registered "
                                    "by an installed plugin")
            standalone = detail.task is not None and detail.task.standalone
            path = model_file(client, run, options.runs_dir, scratch) if standalone else None
            with_features = options.tsne or ("features-2d" in options.figures and run.data
                                             .params.get("model.projection_dim") == "2")
            if path is not None:
                try:
                    d = model_details(path, split, plugins, options.device, options.data_dir,
                                      options.split if with_features else None)
                    for key, value in d.items():
                        setattr(detail, key, value)
                except Exception as exc:
                    detail.notes.append(f"model not evaluated: {type(exc).__name__}: {exc}")
            elif standalone:
                detail.notes.append("no model.pt (locally or as an artifact)")
            if detail.per_class is None and detail.task is not None:
                found = per_class_from_artifact(client, run, detail.task, split, scratch)
                if found:
                    detail.counts, detail.per_class, detail.classes = found
            if any(d.label == detail.label for d in details):  # one legend entry per run
                detail.label += f" ({run.info.run_id[:8]})"
            details.append(detail)
            echo(f"report: {detail.label} ({run.info.run_id})"
                 + (f" - {'; '.join(detail.notes)}" if detail.notes else ""))

    figures: list[tuple[str, Path, str]] = []  # (section, path, caption)
    per_run_logged: list[tuple[str, Path]] = []
    by_setting: dict[tuple[str, str], list[RunDetail]] = {}
    for d in details:
        by_setting.setdefault((d.dataset, d.imbalance_factor), []).append(d)
    for (dataset, factor), group in by_setting.items():
        tag = slug(f"{dataset}-if{factor}")
        where = f"{dataset}, imbalance factor {factor}"
        methods, counts = per_class_by_method(group)
        if methods:  # the runs of one dataset: one task
            table = next(d.task.per_class for d in group if d.per_class is not None)
            path = plots.per_class_accuracy_by_method_png(
                methods, counts, plot_dir / f"{Path(table.file).stem}_{tag}.png",
                title=f"{split} split: per-class {table.name} vs {table.against} ({where})",
                figure=table.name, unit=table.unit)
            figures.append((f"Per-class {table.name} vs {table.against}", path,
                            f"{where}, {split} split (the table's): {table.name} of each class "
                            f"against its number of {table.unit} (log scale), one line per "
                            "method: the mean over its seeds, with a band of +- one standard "
                            "deviation. Head classes are on the right; a method that helps the "
                            "tail lifts the left end."))
        bars: dict[str, dict[str, list[float]]] = {}
        for d in group:
            for metric in plots.SHOT_GROUP_BARS:
                if f"{split}/{metric}" in d.figures:
                    bars.setdefault(d.group, {}).setdefault(metric, []).append(
                        d.figures[f"{split}/{metric}"])
        if bars:
            path = plots.shot_group_bars_png(
                bars, plot_dir / f"shot_groups_{tag}.png",
                title=f"{split} split: accuracy per shot group ({where})")
            figures.append(("Many / medium / few accuracy", path,
                            f"{where}, {split} split, the table's figures: mean accuracy of the "
                            "classes with many, a medium number of and few training images, "
                            "overall accuracy and the harmonic mean of the per-class accuracies; "
                            "one bar per method: the mean over its seeds, with an error bar of "
                            "+- one standard deviation."))
        with_curves = [d for d in group if d.curves.get("val/acc")]
        if with_curves:
            accuracy: dict[str, list] = {}
            loss: dict[str, list] = {}
            for d in with_curves:
                accuracy.setdefault(d.group, []).append(d.curves["val/acc"])
                if "train/loss" in d.curves:
                    loss.setdefault(d.group, []).append(d.curves["train/loss"])
            path = plots.accuracy_curves_png(
                accuracy, plot_dir / f"accuracy_vs_epoch_{tag}.png", loss=loss,
                boundaries=sorted({b for d in with_curves for b in d.boundaries}),
                title=f"accuracy and training loss per epoch ({where})")
            figures.append(("Accuracy vs epoch", path,
                            f"{where}: validation accuracy (left) and training loss (right) after "
                            "each epoch, all stages end to end (dotted lines: a new stage), one "
                            "colour per plugin set: the mean over its seeds, with a band of +- "
                            "one standard deviation."))
        matrices: dict[str, list] = {}
        classes = next((d.classes for d in group if d.confusion is not None), [])
        for d in group:
            if d.confusion is not None and len(d.confusion) == len(classes):
                matrices.setdefault(d.group, []).append(d.confusion)
        if matrices:
            shown = {(f"{method} (mean of {len(found)} seeds)" if len(found) > 1 else method):
                     plots.mean_confusion(found)
                     for method, found in list(matrices.items())[:options.max_runs]}
            path = plots.confusion_matrices_png(
                shown, classes, plot_dir / f"confusion_matrices_{tag}.png",
                title=f"{split} split: confusion matrices, row-normalised ({where})")
            figures.append(("Confusion matrices", path,
                            f"{where}, {split} split: one panel per method, the mean over its "
                            "seeds of the row-normalised matrices; rows are true classes ordered "
                            "by training-set size (head first), columns predictions. Mass left of "
                            "the diagonal in the lower rows means tail images predicted as head "
                            "classes."))
        if options.tsne:
            for d in [d for d in group if d.features is not None][:options.max_runs]:
                try:
                    points, keep = tsne(d.features, normalise=options.tsne_normalise,
                                        max_points=options.tsne_points)
                except ValueError as exc:  # e.g. non-finite features of a diverged model
                    d.notes.append(f"no t-SNE: {exc}")
                    continue
                path = plots.tsne_png(points, np.asarray(d.labels)[keep], d.class_groups,
                                      d.classes, plot_dir / f"tsne_{d.run_id}.png",
                                      title=f"{options.split} split: t-SNE of backbone features - "
                                            f"{d.label}")
                figures.append((f"t-SNE of {options.split} features", path,
                                f"{d.label}: 2-d t-SNE of the backbone features of the "
                                f"{options.split} "
                                f"images ({SCALING[options.tsne_normalise]}), colour = true class, "
                                "marker = "
                                "shot group of the class (many / medium / few). Tight, separated "
                                "clusters for the few-shot markers mean the tail is well "
                                "represented."))
                per_run_logged.append((d.run_id, path))
        for figure in draw(group, options.figures, plot_dir, options, tag, where):
            figures.append((SECTIONS[figure.kind], figure.path, figure.caption))
            if figure.run_id:
                per_run_logged.append((figure.run_id, figure.path))

    figures += list(options.table_figures)
    table_header, table_body = table_rows(comparison)
    csv_path = output / "comparison.csv"
    write_text(csv_path, render(comparison, "csv"))
    page = output / ("report.html" if options.format == "html" else "report.md")
    notes = [f"{d.label} ({d.run_id}): {'; '.join(d.notes)}" for d in details if d.notes]
    write_text(page, _page(options.format, title, comparison, table_header, table_body, figures,
                           notes, output, options.tables))

    if options.log:
        for run_id, path in per_run_logged:
            try:
                for file in figure_files(path):
                    client.log_artifact(run_id, str(file), "report")
            except Exception as exc:
                echo(f"warning: could not log {path.name} to run {run_id}: {exc}")
        record = _sweep_record_id(client, runs, sweep) if sweep else None
        if record:
            try:
                for _, path, _ in figures:
                    if any(path == logged for _, logged in per_run_logged):
                        continue
                    for file in figure_files(path):
                        client.log_artifact(record, str(file), "report")
                client.log_artifact(record, str(page), "report")
                client.log_artifact(record, str(csv_path), "report")
            except Exception as exc:
                echo(f"warning: could not log the report to the sweep run {record}: {exc}")
    return page


def _sweep_record_id(client, runs: Sequence, sweep: str) -> str | None:
    if not runs:
        return None
    found = client.search_runs([runs[0].info.experiment_id],
                               f"tags.`{SWEEP_TAG}` = {literal(sweep)} and "
                               f"tags.`{KIND_TAG}` = 'sweep'", max_results=1,
                               order_by=["attributes.start_time ASC", "attributes.run_id ASC"])
    return found[0].info.run_id if found else None


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def figure_files(path: Path) -> list[Path]:
    """A figure's PNG (the page shows it) and the SVG and PDF beside it (the page links them)."""
    from ..plots import FIGURE_FORMATS

    return [path.with_suffix(f".{suffix}") for suffix in FIGURE_FORMATS]


def _page(fmt: str, title: str, comparison: Comparison, header, body, figures, notes,
          output: Path, tables=()) -> str:
    note = comparison_note(comparison)
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections: dict[str, list[tuple[Path, str]]] = {}
    for section, path, caption in figures:
        sections.setdefault(section, []).append((path, caption))
    if fmt == "markdown":
        out = [f"# {title}", "", f"{len({r for row in comparison.rows for r in row.run_ids})} "
               f"runs, made {when}.", "", markdown_table(header, body), "", f"*{note}*", ""]
        if tables:
            out += ["## The papers' tables", ""]
            for name, table_header, rows in tables:
                out += [f"**{name}**", "", markdown_table(table_header, rows), ""]
        for section, items in sections.items():
            out += [f"## {section}", ""]
            for path, caption in items:
                link, *others = [p.relative_to(output).as_posix() for p in figure_files(path)]
                also = " and ".join(f"[{Path(o).suffix[1:].upper()}]({o})" for o in others)
                out += [f"[![{caption}]({link})]({link})", "", f"{caption} (also as {also})", ""]
        if notes:
            out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        return "\n".join(out)
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
           "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
           "padding:3px 8px;text-align:right}th{background:#eee}figure{display:block;"
           "margin:1em 0}img{width:100%;height:auto}"
           "figcaption{font-size:85%;color:#333}</style></head><body>",
           f"<h1>{esc(title)}</h1>",
           f"<p>{len({r for row in comparison.rows for r in row.run_ids})} runs, made {when}.</p>",
           html_table(header, body), f"<p><em>{esc(note)}</em></p>"]
    if tables:
        out.append("<h2>The papers' tables</h2>")
        for name, table_header, rows in tables:
            out += [f"<p><strong>{esc(name)}</strong></p>", html_table(table_header, rows)]
    for section, items in sections.items():
        out.append(f"<h2>{esc(section)}</h2>")
        for path, caption in items:
            link, *others = [esc(p.relative_to(output).as_posix()) for p in figure_files(path)]
            also = " and ".join(f"<a href='{o}'>{Path(o).suffix[1:].upper()}</a>" for o in others)
            out.append(f"<figure><a href='{link}'><img src='{link}' alt='{esc(caption)}'></a>"
                       f"<figcaption>{esc(caption)} (click for the full-size image; also as "
                       f"{also})</figcaption></figure>")
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)
