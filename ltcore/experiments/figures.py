"""The papers' figures in reports, drawn from what the runs recorded.

Four kinds (:data:`ltcore.tables.RUN_FIGURE_KINDS`), each drawn when the runs hold its data:

- ``weight-norms``: the per-class L2 norms of the classifier's weight rows
  (``figures/weight-norms.json``, recorded by the core at every run's end), classes ordered by
  training images, one line per method (ICCL Fig. 2); one figure per dataset and imbalance
  factor.
- ``projection-tsne``: a t-SNE of the projection head's outputs on the report's t-SNE split,
  with the class centroids (the run's recorded ``centroids``, else the class means of the
  projections) embedded in the same t-SNE and marked (ICCL Fig. 3); one per run.
- ``temperatures``: per-class temperatures per epoch from the metrics ``temperature/class-<i>``,
  the smallest classes by default (CoGloAT Fig. 2); one per method, averaged over its seeds.
- ``features-2d``: for a 2-d projection head (``model.projection_dim = 2``), the L2-normalised
  projections on the unit circle with the recorded ``prototypes`` (BCL supp. Fig. 2); one per
  run.

:func:`figure_plots` draws one kind for some runs (``ltrun reproduce``'s figures);
:func:`~ltcore.experiments.report.build_report` draws every kind with :func:`draw`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from ..tables import RUN_FIGURE_KINDS

SECTIONS = {"weight-norms": "Classifier weight norms",
            "projection-tsne": "t-SNE of projections with class centroids",
            "temperatures": "Per-class temperatures",
            "features-2d": "2-d projections with class prototypes"}
"""The report page's section of each kind."""

TEMPERATURE = re.compile(r"temperature/class-(\d+)")
"""The per-epoch metric of a class's temperature (class index)."""

NEEDS_MODEL = ("projection-tsne", "features-2d")
"""The kinds recomputed from the run's saved model (the projection head's outputs)."""


@attrs.define
class Figure:
    """One drawn figure: its kind, PNG (SVG and PDF beside it), caption, the run it shows
    (None for a figure of several runs) and the data it shows."""

    kind: str
    path: Path
    caption: str
    run_id: str | None
    data: dict[str, Any]


def run_folder(run, runs_dir: str | None = None) -> Path | None:
    """The run's folder under ``runs_dir`` or the run's ``output`` setting, if it is here."""
    from ..engine.runs import find_run_folder
    from ..errors import DataError

    for root in [*([runs_dir] if runs_dir else []), run.data.params.get("output", "runs")]:
        try:
            return find_run_folder(root, run.info.run_id)[0]
        except DataError:
            continue
    return None


def recorded_figures(client, run, runs_dir: str | None = None,
                     scratch: Path | None = None) -> dict[str, dict]:
    """The figures' data a run recorded (:func:`ltcore.record_figure`): name -> data, from the
    run's folder, else from its ``figures/`` artifacts (downloaded to ``scratch``)."""
    from ..figures import FIGURES

    folder = run_folder(run, runs_dir)
    files = sorted((folder / FIGURES).glob("*.json")) if folder is not None else []
    if not files and scratch is not None:
        try:
            listed = client.list_artifacts(run.info.run_id, FIGURES)
            target = Path(scratch) / f"{run.info.run_id}-figures"
            target.mkdir(parents=True, exist_ok=True)
            files = [Path(client.download_artifacts(run.info.run_id, a.path, str(target)))
                     for a in listed if a.path.endswith(".json")]
        except Exception:  # noqa: BLE001 - a run without figures, or a store without files
            files = []
    found = {}
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found[path.stem] = data
    return found


def temperature_keys(client, run) -> list[str]:
    """The ``temperature/class-<i>`` metrics of the run's stages, by class index."""
    from .compare import literal

    stages = client.search_runs([run.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = {literal(run.info.run_id)}",
                                max_results=50)
    keys = {k for stage in stages for k in stage.data.metrics if TEMPERATURE.fullmatch(k)}
    return sorted(keys, key=lambda k: int(TEMPERATURE.fullmatch(k).group(1)))


def projections(saved_run, features) -> Any:
    """The projection head's outputs ``[N, P]`` (numpy) for backbone ``features`` of the saved
    run's last stage model (evaluation mode), or None for a model without one."""
    import torch

    from ..run import PROJECTION_HEAD

    for model in (saved_run.stages[-1].model, saved_run.model):
        if PROJECTION_HEAD in model.heads:
            head = model.heads[PROJECTION_HEAD]
            break
    else:
        return None
    parameter = next(head.parameters())
    training = head.training
    head.eval()
    try:
        with torch.no_grad():
            out = head(torch.as_tensor(features).to(parameter.device, parameter.dtype))
    finally:
        head.train(training)
    return out.float().cpu().numpy()


def add_figure_data(client, run, detail, kinds: Sequence[str] = RUN_FIGURE_KINDS,
                    runs_dir: str | None = None, scratch: Path | None = None) -> None:
    """Read what ``kinds`` need of ``run`` into ``detail`` (a report's ``RunDetail``): its
    recorded figures, and the temperature curves (with ``temperatures``)."""
    from .report import stage_curves

    detail.recorded = recorded_figures(client, run, runs_dir, scratch)
    if "temperatures" in kinds:
        keys = temperature_keys(client, run)
        if keys:
            curves, boundaries = stage_curves(client, run, keys)
            detail.curves.update(curves)
            detail.boundaries = detail.boundaries or boundaries


def _counts(detail) -> list[int] | None:
    recorded = detail.recorded.get("weight-norms", {}).get("counts")
    return list(recorded) if recorded else (list(detail.counts) if detail.counts else None)


def smallest_classes(indices: Sequence[int], counts: Sequence[int] | None, n: int) -> list[int]:
    """The ``n`` classes among ``indices`` with the fewest training images (ties: the higher
    index first, the tail of a long-tailed order; every class with ``n`` 0), in class order;
    without counts the ``n`` highest indices."""
    indices = sorted(set(indices))
    if n <= 0 or n >= len(indices):
        return indices
    if counts is None or max(indices) >= len(counts):
        return indices[-n:]
    return sorted(sorted(indices, key=lambda c: (counts[c], -c))[:n])


def _normalised(rows, how: str = "l2"):
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    if how != "l2":
        return rows
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def class_centroids(detail, projected, labels, normalise: str = "l2"):
    """(centroids ``[K, P]``, their classes, source): the run's recorded ``centroids`` when they
    are one row per class of the projections' width (the classes its ``seen`` flags, if any,
    mark as seen, with a non-zero row), else the class means of the (``normalise``-scaled)
    projections of the classes present."""
    import numpy as np

    figure = detail.recorded.get("centroids", {})
    recorded = figure.get("centroids")
    if recorded is not None:
        rows = np.asarray(recorded, dtype=np.float64)
        if rows.ndim == 2 and rows.shape[1] == projected.shape[1] and np.isfinite(rows).all():
            seen = np.asarray(figure.get("seen") or [True] * len(rows), dtype=bool)
            kept = [c for c in range(len(rows)) if (seen[c] if c < len(seen) else True)
                    and np.abs(rows[c]).sum() > 0]
            if kept:
                return rows[kept], kept, "recorded centroids"
    scaled = _normalised(projected, normalise)
    classes = sorted({int(c) for c in labels})
    means = np.stack([scaled[np.asarray(labels) == c].mean(0) for c in classes])
    return means, classes, "class means of the projections"


def tsne_with_marks(rows, marks, normalise: str = "l2", max_points: int = 2000, seed: int = 0):
    """One t-SNE of ``rows`` (a random subset of at most ``max_points``, seed ``seed``) and
    ``marks`` together: (row points, mark points, index of the rows kept)."""
    import numpy as np

    from .report import tsne

    rows = np.asarray(rows, dtype=np.float64)
    keep = np.arange(len(rows))
    if len(rows) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
    stacked = np.concatenate([rows[keep], np.asarray(marks, dtype=np.float64)])
    points, _ = tsne(stacked, seed=seed, normalise=normalise, max_points=len(stacked))
    return points[:len(keep)], points[len(keep):], keep


def draw(details: Sequence, kinds: Sequence[str], plot_dir: Path, options, tag: str,
         where: str) -> list[Figure]:
    """The figures of ``kinds`` for the runs ``details`` (one dataset and imbalance factor,
    ``where`` in words, ``tag`` in file names) that hold their data, under ``plot_dir``."""
    from .. import plots

    figures: list[Figure] = []
    if "weight-norms" in kinds:
        runs = [d for d in details if d.recorded.get("weight-norms", {}).get("norms")]
        counts = list(runs[0].recorded["weight-norms"].get("counts") or []) if runs else []
        methods: dict[str, list] = {}
        for d in runs:
            norms = d.recorded["weight-norms"]["norms"]
            if len(norms) == len(counts) and None not in norms:
                methods.setdefault(d.group, []).append(list(norms))
        if methods:
            path = plots.weight_norms_png(methods, counts, plot_dir / f"weight_norms_{tag}.png",
                                          title=f"classifier weight norm per class ({where})")
            figures.append(Figure("weight-norms", path, (
                f"{where}: the L2 norm of each class's classifier weight row after training, "
                "classes ordered by their training images (head left, grey bars), one line per "
                "method: the mean over its seeds, with a band of +- one standard deviation. "
                "Plain cross-entropy grows the head classes' norms; a flat line means a "
                "classifier balanced across head and tail."), None,
                {"methods": methods, "counts": counts}))
    if "temperatures" in kinds:
        figures += _temperatures(details, plot_dir, options, tag, where)
    for d in [d for d in details if d.projections is not None][:options.max_runs]:
        if "projection-tsne" in kinds and options.tsne:
            figure = _projection_tsne(d, plot_dir, options)
            if figure is not None:
                figures.append(figure)
        if "features-2d" in kinds and d.projections.shape[1] == 2:
            figures.append(_features_2d(d, plot_dir, options))
    return figures


def _temperatures(details, plot_dir: Path, options, tag: str, where: str) -> list[Figure]:
    from .. import plots

    figures = []
    by_method: dict[str, list] = {}
    for d in details:
        if any(TEMPERATURE.fullmatch(k) for k in d.curves):
            by_method.setdefault(d.group, []).append(d)
    for method, runs in by_method.items():
        counts = next((c for c in map(_counts, runs) if c), None)
        indices = {int(TEMPERATURE.fullmatch(k).group(1)) for d in runs for k in d.curves
                   if TEMPERATURE.fullmatch(k)}
        chosen = smallest_classes(indices, counts, options.temperature_classes)
        curves = {}
        for c in chosen:
            names = runs[0].classes
            name = names[c] if names and c < len(names) else f"class {c}"
            label = f"{name} ({counts[c]})" if counts and c < len(counts) else name
            curves[label] = [d.curves[f"temperature/class-{c}"] for d in runs
                             if f"temperature/class-{c}" in d.curves]
        boundaries = sorted({b for d in runs for b in d.boundaries})
        path = plots.temperatures_png(curves, plot_dir / f"temperatures_{tag}_{_slug(method)}.png",
                                      boundaries, title=f"per-class temperature per epoch: "
                                                        f"{method} ({where})")
        which = (f"the {len(chosen)} classes with the fewest training images"
                 if len(chosen) < len(indices) else "every class")
        figures.append(Figure("temperatures", path, (
            f"{method}, {where}: the temperature of {which} after each epoch (dotted lines: a "
            "new stage), the mean over the method's seeds with a band of +- one standard "
            "deviation; the legend gives each class's training images."), None,
            {"classes": chosen, "curves": curves}))
    return figures


def _projection_tsne(d, plot_dir: Path, options) -> Figure | None:
    import numpy as np

    from .. import plots

    labels = np.asarray(d.labels)
    marks, mark_classes, source = class_centroids(d, d.projections, labels,
                                                  options.tsne_normalise)
    try:
        points, mark_points, keep = tsne_with_marks(d.projections, marks, options.tsne_normalise,
                                                    options.tsne_points)
    except ValueError as exc:  # non-finite projections of a diverged model
        d.notes.append(f"no t-SNE of projections: {exc}")
        return None
    classes = d.classes or [str(c) for c in range(int(labels.max()) + 1)]
    path = plots.projection_tsne_png(
        points, labels[keep], mark_points, mark_classes, classes,
        plot_dir / f"projection_tsne_{d.run_id}.png",
        title=f"{options.split} split: t-SNE of projections - {d.label}",
        marks_name=source.replace(" of the projections", ""))
    return Figure("projection-tsne", path, (
        f"{d.label}: 2-d t-SNE of the projection head's outputs on the {options.split} images, "
        f"colour = true class; stars: the {source}, embedded in the same t-SNE. Compact clusters "
        "around their centroids, tail classes included, mean a well-spread embedding space."),
        d.run_id, {"points": points, "labels": labels[keep], "centroids": marks,
                   "centroid_classes": mark_classes, "centroid_points": mark_points,
                   "source": source})


def _features_2d(d, plot_dir: Path, options) -> Figure:
    import numpy as np

    from .. import plots

    points = _normalised(d.projections)
    labels = np.asarray(d.labels)
    recorded = d.recorded.get("prototypes", {}).get("prototypes")
    prototypes = None
    if recorded is not None:
        rows = np.asarray(recorded, dtype=np.float64)
        if rows.ndim == 2 and rows.shape[1] == 2 and np.isfinite(rows).all():
            prototypes = _normalised(rows)
    classes = d.classes or [str(c) for c in range(int(labels.max()) + 1)]
    path = plots.features_2d_png(points, labels, prototypes, classes,
                                 plot_dir / f"features_2d_{d.run_id}.png",
                                 title=f"{options.split} split: 2-d projections - {d.label}")
    shown = "spokes: the recorded class prototypes" if prototypes is not None else \
        "no prototypes were recorded"
    return Figure("features-2d", path, (
        f"{d.label}: the L2-normalised 2-d projections of the {options.split} images on the "
        f"unit circle (each class drawn a little further out), colour = true class; {shown}. "
        "Classes that each hold their own arc, the tail included, are well separated."),
        d.run_id, {"points": points, "labels": labels, "prototypes": prototypes})


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def figure_plots(client, runs: Sequence, kind: str, output: Path, *, options=None,
                 group_by: Sequence[str] = ("plugins",), labels: dict[str, str] | None = None,
                 plugins=None, echo: Callable[[str], None] = print) -> list[Path]:
    """Draw the figure ``kind`` (one of :data:`~ltcore.tables.RUN_FIGURE_KINDS`) for ``runs``
    (MLflow parent runs) under ``output``, one per dataset and imbalance factor or per run as
    the kind is; returns the PNGs (SVG and PDF beside each), none when the runs hold no data
    for it. A method is a run's ``labels[run id]`` if given, else its ``group_by`` values;
    ``options`` is a :class:`~ltcore.experiments.report.ReportOptions` (the t-SNE split and
    size, the device, the temperatures' classes)."""
    import tempfile

    from ..errors import ConfigError
    from .compare import run_value
    from .report import ReportOptions, RunDetail, model_details, model_file, run_label

    if kind not in RUN_FIGURE_KINDS:
        raise ConfigError(f"figure {kind!r}: one of {', '.join(RUN_FIGURE_KINDS)}")
    options = options or ReportOptions()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    details = []
    with tempfile.TemporaryDirectory(prefix="ltcore-figures-") as tmp:
        for run in runs:
            group = (labels or {}).get(run.info.run_id) or run_label(run, group_by, seed=False)
            detail = RunDetail(run.info.run_id, f"{group} ({run.info.run_id[:8]})",
                               group or "all runs", run_value(run, "dataset"),
                               run_value(run, "imbalance_factor"))
            add_figure_data(client, run, detail, (kind,), options.runs_dir, Path(tmp))
            if kind in NEEDS_MODEL:
                path = model_file(client, run, options.runs_dir, Path(tmp))
                try:
                    if path is None:
                        raise FileNotFoundError("no model.pt (locally or as an artifact)")
                    found = model_details(path, options.split, plugins, options.device,
                                          options.data_dir, options.split)
                    for key in ("classes", "counts", "labels", "projections"):
                        setattr(detail, key, found.get(key))
                except Exception as exc:  # noqa: BLE001 - the other runs are still drawn
                    echo(f"{kind}: run {run.info.run_id} left out: {type(exc).__name__}: {exc}")
                    continue
            details.append(detail)
    by_setting: dict[tuple[str, str], list] = {}
    for d in details:
        by_setting.setdefault((d.dataset, d.imbalance_factor), []).append(d)
    paths = []
    for (dataset, factor), group in by_setting.items():
        drawn = draw(group, (kind,), output, options, _slug(f"{dataset}-if{factor}"),
                     f"{dataset}, imbalance factor {factor}")
        paths += [figure.path for figure in drawn]
    return paths
