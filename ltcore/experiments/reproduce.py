"""The papers' tables as sweeps: ``ltrun reproduce``.

:func:`plan_table` turns a :class:`~ltcore.tables.PaperTable` into sweep cells (one per distinct
run of its (row, column) cells and seed, under ``eval.protocol = paper``), :func:`smoke_cells`
into their one-step form on the embedded data, and :func:`table_layout` lays the measured mean
± std of each cell out as the paper prints the table, beside the paper's number.
"""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import attrs

from ..errors import ConfigError, LtcoreError
from ..tables import PaperTable, TableColumn, TableRow
from .compare import literal, markdown_table, search_all, text_table
from .sweep import Cell, Sweep, fmt_number, validate_cells
from .tags import CELL_TAG, KIND_TAG, SWEEP_TAG

TABLE_TAG = "ltcore.table"
"""The tag of a reproduction sweep's own run: the table's id."""

PROTOCOL = {"eval.protocol": "paper"}
"""What every reproduction cell starts from: the papers' evaluation protocol."""

SMOKE = {"limit.epochs": 1, "limit.steps": 1, "limit.eval_images": 40, "limit.plots": False,
         "batch_size": 16, "model.backbone": "resnet8", "views.workers": 0,
         "tracking.log_model": False}
"""The one-step form of every cell (``--smoke``): one step of one epoch per stage, evaluated
on 40 images per split without plots, a ResNet-8, batch 16, no MLflow Model."""

FILE_TREES = {"imagenet-lt": "imagenet-lt", "inaturalist2018": "inaturalist2018",
              "places-lt": "places-lt", "imagefolder-lt": "imagenet-lt"}
"""Datasets of image files and the generated tree their smoke form reads (an ImageFolder
dataset reads the ``train/``, ``val/`` and ``test/`` folders of an ImageNet-LT tree)."""


def toml_literal(value: Any) -> str:
    """``value`` as ``--set KEY=VALUE`` reads it back (strings bare where that is unambiguous)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return fmt_number(value) if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inner(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_inner(v)}"
                               for k, v in value.items()) + "}"
    text = str(value)
    try:
        tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _inner(value: Any) -> str:
    """A value inside a TOML array or table: strings always quoted."""
    return json.dumps(value) if isinstance(value, str) else toml_literal(value)


@attrs.define
class TablePlan:
    """A table's sweep cells and, for each (row, column) of the paper, the key of its runs'
    configuration (a cell's key without its seed)."""

    table_id: str
    table: PaperTable
    cells: list[Cell]
    positions: dict[tuple[str, str], str]


def _cell(plugins, presets, settings: dict[str, Any]) -> Cell:
    return Cell(0, tuple(plugins), None, None, {k: toml_literal(v) for k, v in settings.items()},
                presets=tuple(presets))


def plan_table(table_id: str, table: PaperTable, seeds: Sequence[int],
               overrides=None) -> TablePlan:
    """The sweep cells of ``table`` for ``seeds``; ``overrides(settings) -> settings`` changes
    each cell's settings (the smoke form), and cells that come out the same train once."""
    (plan,) = plan_tables([(table_id, table)], seeds, overrides)
    return plan


def plan_tables(tables: Sequence[tuple[str, PaperTable]], seeds: Sequence[int],
                overrides=None, same=None) -> list[TablePlan]:
    """The plans of several tables whose cells are numbered as one sweep: a run two tables share
    (the same method on the same data) is one cell of both. ``same(cell) -> key`` merges further
    the cells of one key into the first of them (the smoke form: :func:`smoke_identity`)."""
    configs: dict[str, Cell] = {}
    kept: dict[Any, str] = {}
    plans = []
    for table_id, table in tables:
        positions = {}
        for row in table.rows:
            for column in table.columns:
                plugins, presets, settings = table.cell_setup(row, column)
                settings = {**PROTOCOL, **settings}
                if overrides is not None:
                    settings = overrides(plugins, presets, settings)
                base = _cell(plugins, presets, settings)
                key = kept.setdefault(same(base) if same else base.key, base.key)
                configs.setdefault(key, base)
                positions[(row.label, column.label)] = key
        plans.append(TablePlan(table_id, table, [], positions))
    index = {}
    for key, base in configs.items():
        index[key] = [attrs.evolve(base, index=len(index) * len(seeds) + i, seed=seed)
                      for i, seed in enumerate(seeds)]
    for plan in plans:
        keys = dict.fromkeys(plan.positions.values())
        plan.cells = [cell for key in keys for cell in index[key]]
    return plans


def sweep_cells(plans: Sequence[TablePlan]) -> list[Cell]:
    """The cells of one or more plans made by :func:`plan_tables`, each once, in index order."""
    cells = {cell.index: cell for plan in plans for cell in plan.cells}
    return [cells[i] for i in sorted(cells)]


def smoke_overrides(data_root: Path, plugins):
    """The function that gives a cell's settings their one-step form: :data:`SMOKE` (every
    backbone a plugin option names, a teacher's, a ResNet-8 too; a CLIP one :data:`SMOKE_CLIP`),
    the table's datasets swapped for ``digits-lt`` at imbalance factor 10 (so that columns of
    datasets and factors train once) or a small generated tree under ``data_root``, then each
    selected plugin's ``smoke`` preset (:data:`SMOKE_PRESET`: its small memory banks, or the
    data and model of its task)."""
    from ..config import resolve

    def override(selected, presets, settings: dict[str, Any]) -> dict[str, Any]:
        out = {**settings, **SMOKE}
        try:
            resolved = resolve(plugins, list(selected), list(presets),
                               assignments=[f"{k}={toml_literal(v)}" for k, v in
                                            settings.items()]).flat()
        except LtcoreError:  # the real cell's check says why
            resolved = {}
        for key, value in resolved.items():  # a plugin's own backbones too (a teacher's)
            if key.endswith("backbone") and value:
                out[key] = SMOKE["model.backbone"]
        if str(resolved.get("model.backbone", "")).startswith("clip:"):  # a tiny random CLIP
            out.update({"model.backbone": f"clip:{smoke_clip(data_root)}",
                        "model.backbone_options.force_image_size": 32,
                        "model.pretrained": "none",
                        "clip.class_names": "dataset"})
        dataset = resolved.get("dataset", settings.get("dataset", "digits-lt"))
        if str(dataset) in FILE_TREES:
            out["data_dir"] = str(smoke_tree(data_root, FILE_TREES[str(dataset)]))
            out["views.image_size"] = 32
        else:
            out.update({"dataset": "digits-lt", "imbalance_factor": 10})
            if "data_dir" in out:
                out["data_dir"] = ""
        for name in selected:  # what a plugin's own smoke form needs (small queues, its data)
            found = plugins.presets.get(name, {}).get(SMOKE_PRESET)
            out.update(found.settings if found else {})
        return out
    return override


SMOKE_PRESET = "smoke"
"""A plugin's preset of this name adds what its smoke form needs (a small memory bank...)."""

SMOKE_INDIFFERENT = ("seed", "data_dir")
"""Keys whose values do not change what a smoke cell runs at all."""


def _what_runs(value: Any) -> Any:
    """A setting as far as it changes what runs: a number is zero or not (a weight of 0 switches
    a term off; a learning rate, a temperature or epochs change only the numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return tuple(_what_runs(v) for v in value)
    return "0" if value == 0 else "number"


def smoke_identity(plugins):
    """``same`` of :func:`plan_tables` for the smoke form: what a cell's resolved configuration
    runs (:func:`_what_runs` of each setting but :data:`SMOKE_INDIFFERENT`), so that cells
    differing only in non-zero numbers train once (cells that do not resolve keep their own
    key)."""
    from ..config import resolve

    def identity(cell: Cell):
        try:
            settings = resolve(plugins, list(cell.plugins), list(cell.presets),
                               assignments=[f"{k}={v}" for k, v in cell.grid.items()])
        except LtcoreError:
            return cell.key
        flat = {k: _what_runs(v) for k, v in settings.flat().items()
                if k not in SMOKE_INDIFFERENT}
        return (cell.plugins, tuple(sorted(flat.items())))
    return identity


SMOKE_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32,
                                              "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                           "layers": 1}}
"""The smoke form of a ``clip:`` backbone: a two-layer ViT with random weights (no download)."""


def smoke_clip(data_root: Path) -> Path:
    """The open_clip configuration file of :data:`SMOKE_CLIP` under ``data_root``."""
    from ..files import write_text

    path = data_root / "clip-smoke.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(SMOKE_CLIP))
    return path


def smoke_tree(data_root: Path, benchmark: str) -> Path:
    """A small tree in ``benchmark``'s layout under ``data_root`` (made once)."""
    from ..testing import make_benchmark_tree

    root = data_root / benchmark
    if not (root / "train").is_dir():
        make_benchmark_tree(root, benchmark)
    return root


def find_table(plugins, table_id: str) -> PaperTable:
    """The registered table ``table_id``, or a ConfigError listing the known ones."""
    if table_id not in plugins.tables:
        known = ", ".join(sorted(plugins.tables)) or "none (no installed plugin registers one)"
        raise ConfigError(f"unknown table {table_id!r}; the installed plugins' tables: {known}")
    return plugins.tables[table_id]


def select_tables(plugins, text: str, echo=print) -> list[tuple[str, PaperTable]]:
    """The tables ``text`` names: ``plugin:table`` ids, comma-separated, or a plugin's name for
    each of its tables that can run (those that wait are named on ``echo``). A named table
    that waits, or an unknown id, raises a ConfigError."""
    chosen = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if ":" in item:
            table = find_table(plugins, item)
            waits = waiting_for(plugins, item, table)
            if waits:
                raise ConfigError(f"{item} cannot run yet: it waits for {waits}")
            chosen.append((item, table))
            continue
        ids = sorted((k for k in plugins.tables if k.startswith(f"{item}:")), key=_table_order)
        if not ids:
            find_table(plugins, item)  # the error that lists the known ids
        for table_id in ids:
            waits = waiting_for(plugins, table_id, plugins.tables[table_id])
            if waits:
                echo(f"{table_id} is left out: it waits for {waits}")
            else:
                chosen.append((table_id, plugins.tables[table_id]))
    if not chosen:
        raise ConfigError(f"no table of {text!r} can run yet (ltrun reproduce --list)")
    return list(dict(chosen).items())


def waiting_for(plugins, table_id: str, table: PaperTable) -> str:
    """What ``table`` waits for ('' when it can run): its own ``waits``, or the first reason one
    of its cells cannot be configured (a plugin that is not installed, an unknown key...)."""
    if table.waits:
        return table.waits
    plan = plan_table(table_id, table, [0])
    try:
        validate_cells(Sweep("check", plan.cells, []), plugins)
    except LtcoreError as exc:
        return str(exc)
    return ""


def list_tables(plugins) -> str:
    """One line per table: ``<id>  <caption>  runnable`` or ``waits: <what>``."""
    rows = []
    for table_id in sorted(plugins.tables, key=_table_order):
        table = plugins.tables[table_id]
        waits = waiting_for(plugins, table_id, table)
        rows.append([table_id, short(table.caption),
                     f"waits: {waits}" if waits else "runnable"])
    if not rows:
        return "no installed plugin registers a paper table"
    return text_table(["table", "caption", "status"], rows)


def short(caption: str, width: int = 90) -> str:
    """A caption's first sentence, cut to ``width`` characters."""
    first = caption.split(". ")[0].split("; ")[0]
    return first if len(first) <= width else first[:width - 3].rstrip() + "..."


KIND_ORDER = ("table", "table-a", "fig", "supp-table", "supp-fig")
"""The order tables are listed in: the main text's tables, the appendix's, figures, then the
supplementary material's."""


def _table_order(table_id: str):
    plugin, _, name = table_id.partition(":")
    parts = _split_digits(name)
    kind = KIND_ORDER.index(parts[0]) if parts[0] in KIND_ORDER else len(KIND_ORDER)
    return plugin, kind, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def _split_digits(text: str) -> list[str]:
    out, current = [], ""
    for char in text:
        if current and char.isdigit() != current[-1].isdigit():
            out.append(current)
            current = ""
        current += char
    return out + ([current] if current else [])


def reproduction_sweep(plans: Sequence[TablePlan], sweep_id: str, common: Sequence[str],
                       experiment: str, tracking_uri: str, output: str, nproc: int) -> Sweep:
    """The sweep that trains the cells of ``plans``, its record tagged with the tables' ids."""
    return Sweep(sweep_id, sweep_cells(plans), list(common), experiment, tracking_uri, output,
                 nproc, tags={TABLE_TAG: ",".join(p.table_id for p in plans)})


# -- the table as printed, with measured numbers ---------------------------------------------


def sweep_layouts(sweep: Sweep, plans: Sequence[TablePlan]) -> dict[str, list]:
    """Each plan's table laid out with the sweep's measured numbers, as ``text`` and
    ``markdown``, and those numbers (``values``)."""
    from ..tracking import connect
    from ..tracking.store import experiment_id

    client = connect(sweep.tracking_uri or None)
    experiment = experiment_id(client, sweep.experiment)
    out: dict[str, list] = {"text": [], "markdown": [], "values": []}
    for plan in plans:
        values = measured(client, [experiment], sweep.id, plan)
        out["values"].append(values)
        out["text"].append(table_layout(plan, values))
        out["markdown"].append(table_layout(plan, values, "markdown"))
    return out


def measured(client, experiment_ids: Iterable[str], sweep_id: str, plan: TablePlan
             ) -> dict[tuple[str, str], list[float]]:
    """Each (row, column)'s figure over the sweep's finished runs (one per seed)."""
    by_key: dict[str, list] = {}
    query = (f"tags.`{SWEEP_TAG}` = {literal(sweep_id)} and attributes.status = 'FINISHED'")
    for run in search_all(client, list(experiment_ids), query):
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or tags.get(KIND_TAG) == "sweep":
            continue
        key = tags.get(CELL_TAG, "").rsplit(" seed=", 1)[0]
        by_key.setdefault(key, []).append(run)
    out = {}
    for row in plan.table.rows:
        for column in plan.table.columns:
            position = (row.label, column.label)
            runs = by_key.get(plan.positions[position], [])
            values = [run_figure(client, run, column.metric) for run in runs]
            out[position] = [v for v in values if v is not None and math.isfinite(v)]
    return out


def run_figure(client, run, metric: str) -> float | None:
    """A run's ``metric``: its final value, or for a per-epoch figure only its stages record
    (``train/epoch_time``) the mean over the epochs of the first stage that records it."""
    if metric in run.data.metrics:
        return run.data.metrics[metric]
    stages = client.search_runs([run.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = {literal(run.info.run_id)}",
                                order_by=["attributes.start_time ASC"], max_results=50)
    for stage in stages:
        if metric in stage.data.metrics:
            history = client.get_metric_history(stage.info.run_id, metric)
            return statistics.fmean(m.value for m in history)
    return None


def _cell_text(values: list[float], paper: float | None) -> str:
    if not values:
        return "-" if paper is None else f"- (paper {paper:g})"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{mean:.2f} ± {spread:.2f}"
    if paper is not None:
        text += f" (paper {paper:g}, {mean - paper:+.2f})"
    return text


def layout_rows(plan: TablePlan, values: dict[tuple[str, str], list[float]]
                ) -> tuple[str, list[str], list[list[str]]]:
    """The table as the paper lays it out: its title, header and rows, each cell the measured
    mean ± std over seeds, the paper's number and the difference."""
    table = plan.table
    header = [table.source] + [c.label for c in table.columns]
    rows = [[row.label] + [_cell_text(values.get((row.label, c.label), []),
                                      table.numbers.get((row.label, c.label)))
                           for c in table.columns] for row in table.rows]
    seeds = sorted({len(v) for v in values.values() if v})
    runs = f"{'/'.join(map(str, seeds))} seed(s) per cell" if seeds else "no finished run yet"
    title = f"{plan.table_id}: {table.caption} ({runs}; mean ± std, paper's number, difference)"
    return title, header, rows


def table_layout(plan: TablePlan, values: dict[tuple[str, str], list[float]],
                 fmt: str = "text") -> str:
    """:func:`layout_rows` as aligned ``text`` or ``markdown``."""
    title, header, rows = layout_rows(plan, values)
    if fmt == "markdown":
        return f"**{title}**\n\n" + markdown_table(header, rows)
    return title + "\n" + text_table(header, rows)


def against_setting(plan: TablePlan, values: dict[tuple[str, str], list[float]],
                    folder: Path) -> tuple[str, Path, str] | None:
    """Draw a figure of kind ``against-setting``: each column's measured mean ± std against
    the rows' ``axis`` setting, as ``folder/<table>.png`` (SVG and PDF beside it); its report
    section, path and caption, or None before any cell has a finished run."""
    from ..plots import against_setting_png

    table = plan.table
    if table.figure != "against-setting" or not any(values.values()):
        return None
    points = {}
    for column in table.columns:
        points[column.label] = []
        for row in table.rows:
            found = values.get((row.label, column.label), [])
            if found:
                spread = statistics.stdev(found) if len(found) > 1 else 0.0
                points[column.label].append((float(table.axis_value(row)),
                                             statistics.fmean(found), spread))
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = against_setting_png(points, Path(folder) / f"{plan.table_id.replace(':', '-')}.png",
                               setting=table.axis, title=f"{plan.table_id}: {table.source}")
    return (f"{plan.table_id}", path, f"{table.caption}: each column's mean over the seeds "
            f"against {table.axis}, error bars +- one standard deviation")


# -- what a report needs to lay a sweep's tables out again ------------------------------------

TABLES_FILE = "tables.json"
"""The tables of a reproduction sweep, written to its folder and logged to its record run."""


def plans_to_json(plans: Sequence[TablePlan]) -> list[dict[str, Any]]:
    """What :func:`plans_from_json` needs to lay the tables out without their plugins."""
    return [{"id": p.table_id, "caption": p.table.caption, "source": p.table.source,
             "kind": p.table.kind, "figure": p.table.figure, "axis": p.table.axis,
             "rows": [r.label for r in p.table.rows],
             "axis_values": [p.table.axis_value(r) for r in p.table.rows] if p.table.axis
             else [],
             "columns": [[c.label, c.metric] for c in p.table.columns],
             "numbers": [[r, c, v] for (r, c), v in p.table.numbers.items()],
             "positions": [[r, c, key] for (r, c), key in p.positions.items()]} for p in plans]


def plans_from_json(items: Sequence[dict[str, Any]]) -> list[TablePlan]:
    plans = []
    for item in items:
        axis, values = item.get("axis", ""), item.get("axis_values") or [None] * len(item["rows"])
        table = PaperTable(name=item["id"].partition(":")[2], caption=item["caption"],
                           source=item["source"], kind=item["kind"], figure=item["figure"],
                           axis=axis,
                           rows=[TableRow(label=r, plugins=(), settings={axis: x} if axis else {})
                                 for r, x in zip(item["rows"], values)],
                           columns=[TableColumn(label=c, metric=m) for c, m in item["columns"]],
                           numbers={(r, c): v for r, c, v in item["numbers"]})
        plans.append(TablePlan(item["id"], table, [],
                               {(r, c): key for r, c, key in item["positions"]}))
    return plans


def _record(client, experiment_ids: Sequence[str], sweep_id: str):
    query = f"tags.`{SWEEP_TAG}` = {literal(sweep_id)} and tags.`{KIND_TAG}` = 'sweep'"
    found = client.search_runs(list(experiment_ids), query, max_results=1,
                               order_by=["attributes.start_time ASC", "attributes.run_id ASC"])
    return found[0] if found else None


def record_plans(sweep: Sweep, plans: Sequence[TablePlan]) -> Path:
    """Write the tables of a sweep to its folder and log them to its record run (made by
    :func:`~ltcore.experiments.sweep.run_sweep`)."""
    from ..files import write_text
    from ..tracking import connect
    from ..tracking.store import experiment_id

    path = write_text(sweep.folder() / TABLES_FILE,
                      json.dumps(plans_to_json(plans), indent=1) + "\n")
    client = connect(sweep.tracking_uri or None)
    record = _record(client, [experiment_id(client, sweep.experiment)], sweep.id)
    if record is not None:
        client.log_artifact(record.info.run_id, str(path))
    return path


def sweep_plans(client, experiment_ids: Sequence[str], sweep_id: str) -> list[TablePlan]:
    """The tables of a reproduction sweep, from its record run ([] for another sweep)."""
    import tempfile

    record = _record(client, experiment_ids, sweep_id)
    if record is None or TABLE_TAG not in record.data.tags:
        return []
    with tempfile.TemporaryDirectory(prefix="ltcore-tables-") as tmp:
        try:
            path = client.download_artifacts(record.info.run_id, TABLES_FILE, tmp)
        except Exception:  # a sweep stopped before its tables were logged
            return []
        return plans_from_json(json.loads(Path(path).read_text()))
