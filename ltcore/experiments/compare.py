"""Finding recorded runs and comparing them: mean ± std per group, beside reference numbers.

:func:`compare` groups parent runs (by tags, then params: ``plugins``, ``imbalance_factor``,
``optim.lr``...) and gives mean, sample standard deviation and count of the final accuracy
figures and the wall-clock per group, optionally beside reference numbers
(:func:`load_reference`: a TOML/CSV file, or ``papers``, the published results the installed
plugins declare through ``register_reference_results``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from ..errors import ConfigError, DataError
from ..tracking import experiment_id
from .tags import AXES_TAG, CELL_TAG, DEFAULT_GROUP_BY, KIND_TAG, METRICS, SWEEP_TAG, WALL_CLOCK


def literal(value: str, what: str = "") -> str:
    """``value`` quoted for an MLflow filter string: in single quotes, or in double quotes when
    it holds a single quote; a :class:`ConfigError` (naming it ``what``) for a value with both,
    which MLflow's filters cannot hold."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"{what}{value!r} cannot be searched for in MLflow: it holds both a "
                      "single and a double quote")


def search_all(client, experiment_ids: list[str], filter_string: str = "",
                order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000,
                                  order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def collect_runs(client, experiment: str = "ltcore", filter_string: str = "",
                 sweep: str | None = None, status: str | None = "FINISHED",
                 run_ids: Sequence[str] = (),
                 warn: Callable[[str], None] = _stderr) -> tuple[list, list]:
    """The parent runs of ltcore trainings that match; returns (kept, left out by status).

    Stage runs (nested), sweep records and runs that ltcore did not make are never returned.
    A search counts one run per sweep cell (:func:`one_per_cell`; ``warn`` is told the
    duplicates it leaves out); runs named by ``run_ids`` are all kept.
    """
    if run_ids:
        runs = [client.get_run(r) for r in run_ids]
    else:
        exp_id = experiment_id(client, experiment, create=False)
        if exp_id is None:
            raise DataError(f"no MLflow experiment named {experiment!r} at "
                            f"{client.tracking_uri}; give --experiment (ltrun --experiment "
                            "names it when training) or --tracking-uri")
        clauses = [filter_string.strip()]
        if sweep:
            clauses.append(f"tags.`{SWEEP_TAG}` = {literal(sweep, 'sweep id ')}")
        query = " and ".join(c for c in clauses if c)
        try:
            runs = search_all(client, [exp_id], query, order_by=["attributes.start_time ASC"])
        except Exception as exc:
            if "filter" in str(exc).lower() or "invalid" in str(exc).lower():
                raise ConfigError(f"invalid --filter {filter_string!r}: {exc}") from exc
            raise
    kept, left_out = [], []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or tags.get(KIND_TAG) == "sweep" or "ltcore.plugins" not in tags:
            continue
        (kept if status in (None, "all") or run.info.status == status else left_out).append(run)
    if not run_ids:
        kept = one_per_cell(kept, warn)
    kept.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return kept, left_out


def one_per_cell(runs: Sequence, warn: Callable[[str], None] = _stderr) -> list:
    """``runs`` with one parent run per (sweep, cell): of several, the FINISHED one (the latest
    of several), else the latest. One warning line names the runs left out."""
    cells: dict[tuple[str, str], list] = {}
    for run in runs:
        tags = run.data.tags
        if SWEEP_TAG in tags and CELL_TAG in tags:
            cells.setdefault((tags[SWEEP_TAG], tags[CELL_TAG]), []).append(run)
    left_out, notes = set(), []
    for (sweep, cell), members in cells.items():
        if len(members) < 2:
            continue
        kept = max(members, key=lambda r: (r.info.status == "FINISHED", r.info.start_time or 0,
                                           r.info.run_id))
        others = [r.info.run_id for r in members if r is not kept]
        left_out.update(others)
        notes.append(f"sweep {sweep} cell '{cell}': {', '.join(others)} (kept "
                     f"{kept.info.run_id})")
    if notes:
        warn(f"warning: {len(left_out)} duplicate run(s) of sweep cells left out, one run per "
             f"cell counted: {'; '.join(notes)}")
    return [r for r in runs if r.info.run_id not in left_out]


def run_value(run, key: str) -> str:
    """A run's value for a grouping or matching key: ``tags.K``/``params.K`` explicitly, else
    the tag, then the param, then the run attributes ``status``/``run_name``/``run_id``."""
    tags, params = run.data.tags, run.data.params
    if key.startswith("tags."):
        return tags.get(key[5:], "")
    if key.startswith("params."):
        return params.get(key[7:], "")
    if key in tags:
        return tags[key]
    if key in params:
        return params[key]
    if key == "plugins":
        return tags.get("ltcore.plugins", "")
    return str(getattr(run.info, key, "") or "")


def _normal(key: str, value: Any) -> Any:
    """Comparable form: plugin sets as sorted tuples, numbers as floats, else stripped text."""
    text = str(value).strip()
    if key.split(".")[-1] == "plugins":
        return tuple(sorted(p for p in text.replace("+", ",").split(",") if p))
    try:
        return float(text)
    except ValueError:
        return text


def default_group_by(runs: Sequence, sweep: str | None) -> list[str]:
    """The sweep's axes without ``seed`` (when a sweep is asked for), else plugins, dataset and
    imbalance factor."""
    if sweep:
        axes = []
        for run in runs:
            for key in json.loads(run.data.tags.get(AXES_TAG, "{}")):
                if key != "seed" and key not in axes:
                    axes.append(key)
        for key in ("dataset", "imbalance_factor"):
            if key not in axes and len({run_value(r, key) for r in runs}) > 1:
                axes.append(key)
        if axes:
            return axes
    return list(DEFAULT_GROUP_BY)


def final_metrics(client, run, select: str = "last") -> dict[str, float]:
    """The accuracy figures of a parent run.

    ``last``: the parent's final figures (the last stage's last epoch), falling back to the last
    stage run's last logged step. ``best-val``: every figure of the last stage's model at its
    epoch with the highest ``val/acc`` (the earliest such epoch; the ``best/...`` figures a run
    records, test included), the reading the papers' reference code does not use on the test
    set and we do on the validation split. Runs recorded before those figures existed are read
    from the stage's per-epoch history.
    """
    metrics = run.data.metrics
    figures = {k: v for k, v in metrics.items() if "/" in k and k.split("/")[0] in
               ("val", "test")}
    if select == "last" and figures:
        return figures
    if select == "best-val" and "best/epoch" in metrics:
        best = {k.removeprefix("best/"): v for k, v in metrics.items() if k.startswith("best/")}
        best["epoch"] -= 1  # 0-based, as the history's steps
        return best
    stage = last_stage_run(client, run)
    if stage is None:
        return figures
    keys = [k for k in stage.data.metrics if k.split("/")[0] in ("val", "test")]
    history = {k: {m.step: m.value for m in client.get_metric_history(stage.info.run_id, k)}
               for k in keys}
    if not history.get("val/acc"):
        return figures
    steps = history["val/acc"]
    step = (max(steps) if select == "last"
            else min((s for s in steps if steps[s] == max(steps.values()))))
    out = {k: h[step] for k, h in history.items() if step in h}
    out["epoch"] = float(step)
    return out


def last_stage_run(client, run):
    stages = client.search_runs([run.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = {literal(run.info.run_id)}",
                                order_by=["attributes.start_time DESC"], max_results=50)
    return stages[0] if stages else None


def wall_clock(run) -> float | None:
    """Seconds from the parent run's start to its end (resumed runs include the pause)."""
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000.0
    return None


@attrs.define
class Stat:
    """Mean, sample standard deviation (None for a single value) and count of a figure."""

    mean: float
    std: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat | None":
        values = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not values:
            return None
        mean = sum(values) / len(values)
        std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
               if len(values) > 1 else None)
        return cls(mean, std, len(values), values)


@attrs.define
class GroupRow:
    """One row of a comparison: a group's key values, its runs and its statistics."""

    key: dict[str, str]
    run_ids: list[str]
    seeds: list[str]
    stats: dict[str, Stat | None]
    reference: dict[str, float] = attrs.Factory(dict)
    reference_source: str = ""
    protocols: list[str] = attrs.Factory(list)
    """The ``eval.protocol`` of the group's runs (runs recorded before it existed: heldout)."""

    @property
    def n(self) -> int:
        return len(self.run_ids)

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.key.items())


@attrs.define
class Comparison:
    """A comparison table: the rows and how it was made."""

    rows: list[GroupRow]
    group_by: list[str]
    columns: list[str]
    left_out: int = 0
    select: str = "last"
    reference_name: str = ""


def metric_columns(splits: Sequence[str], metrics: Sequence[str] = METRICS) -> list[str]:
    return [f"{s}/{m}" for s in splits for m in metrics] + [WALL_CLOCK]


def recorded_figures(runs: Sequence, splits: Sequence[str]) -> list[str]:
    """The figures to compare by default: the accuracy figures (:data:`METRICS`) when a run
    records ``<split>/acc``, else every figure the runs record for the splits (a task without
    accuracy, e.g. segmentation's mIoU, mAcc, aAcc), overall ones before their groups."""
    names = {key.split("/", 1)[1] for run in runs for key in run.data.metrics
             if key.count("/") == 1 and key.split("/", 1)[0] in splits}
    if not names or "acc" in names:
        return list(METRICS)
    return sorted(names, key=lambda name: ("_" in name, name.lower()))


def compare(client, runs: Sequence, group_by: Sequence[str], splits: Sequence[str] = ("test",),
            metrics: Sequence[str] | None = METRICS, select: str = "last",
            reference: list[dict] | None = None, left_out: int = 0) -> Comparison:
    """Group ``runs`` and compute mean ± std over each group's runs (its seeds); ``metrics``
    None: :func:`recorded_figures`."""
    columns = metric_columns(splits, metrics if metrics is not None
                             else recorded_figures(runs, splits))
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault(tuple(run_value(run, k) for k in group_by), []).append(run)
    rows = []
    for key, members in groups.items():
        figures = [final_metrics(client, r, select) for r in members]
        stats: dict[str, Stat | None] = {}
        for column in columns:
            if column == WALL_CLOCK:
                stats[column] = Stat.of([w for w in map(wall_clock, members) if w is not None])
            else:
                stats[column] = Stat.of([f[column] for f in figures if column in f])
        protocols = sorted({run_value(r, "eval.protocol") or "heldout" for r in members})
        rows.append(GroupRow(dict(zip(group_by, key)), [r.info.run_id for r in members],
                             [run_value(r, "seed") for r in members], stats,
                             protocols=protocols))
    rows.sort(key=lambda row: tuple(_sort_key(v) for v in row.key.values()))
    comparison = Comparison(rows, list(group_by), columns, left_out, select)
    if reference:
        attach_reference(comparison, reference, groups)
    return comparison


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# -- reference numbers ----------------------------------------------------------------------


def load_reference(source: str, plugins=None) -> list[dict[str, Any]]:
    """Reference rows from ``papers`` (the published results the installed plugins declare,
    :func:`ltcore.hookspecs.register_reference_results`), a TOML file or a CSV file.

    A row maps matching keys (``plugins``, ``dataset``, ``imbalance_factor``, any tag or param,
    or ``group = "plugins=bcl imbalance_factor=100"``) and metric columns (``test/acc``...) to
    values; ``source``/``note`` are carried along. TOML gives rows as ``[[reference]]`` tables,
    or ``metric = "test/acc"`` with a ``[values]`` table of group label -> number.
    """
    if source == "papers":
        from ..plugins import Plugins

        found = (plugins or Plugins()).reference_results
        return [{k: v for k, v in row.items() if k != "plugin"} for row in found]
    path = Path(source)
    if not path.is_file():
        raise DataError(f"reference file {source!r} does not exist (or use --reference papers)")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = [{k.strip(): v.strip() for k, v in row.items() if k and v not in (None, "")}
                    for row in csv.DictReader(fh)]
    else:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"reference file {source!r} is not valid TOML: {exc}") from exc
        rows = [dict(r) for r in data.get("reference", [])]
        if "values" in data:
            metric = data.get("metric", "test/acc")
            rows += [{"group": label, metric: value} for label, value in data["values"].items()]
    out = []
    for row in rows:
        if "group" in row:
            for part in str(row.pop("group")).split():
                key, sep, value = part.partition("=")
                if not sep:
                    raise DataError(f"reference group label part {part!r} is not KEY=VALUE")
                row[key] = value
        out.append(row)
    if not out:
        raise DataError(f"reference file {source!r} holds no rows")
    return out


def _is_metric_key(key: str) -> bool:
    return "/" in key or key in METRICS or key == WALL_CLOCK


def attach_reference(comparison: Comparison, reference: list[dict], groups: dict) -> None:
    """Give each row the reference numbers of the first reference row that matches it.

    A reference row matches when each of its keys equals the group's value: a group-by key's
    value, or a value every run of the group shares (so ``--group-by plugins`` on runs of one
    dataset still matches rows that name the dataset).
    """
    splits = [c.split("/")[0] for c in comparison.columns if "/" in c]
    by_label = {tuple(row.key.values()): row for row in comparison.rows}
    for key, members in groups.items():
        row = by_label[key]
        for ref in reference:
            keys = [k for k in ref if not _is_metric_key(k) and k not in ("source", "note")]
            if not keys:
                continue
            if all(_group_value(row, members, k) == _normal(k, ref[k]) for k in keys):
                for k, v in ref.items():
                    if not _is_metric_key(k):
                        continue
                    column = k if "/" in k else f"{splits[0] if splits else 'test'}/{k}"
                    try:
                        row.reference.setdefault(column, float(v))
                    except (TypeError, ValueError):
                        raise DataError(f"reference value {v!r} of {k} is not a number")
                if "source" in ref and not row.reference_source:
                    row.reference_source = str(ref["source"])


def _group_value(row: GroupRow, members: Sequence, key: str):
    if key in row.key:
        return _normal(key, row.key[key])
    values = {_normal(key, run_value(r, key)) for r in members}
    return values.pop() if len(values) == 1 else None


# -- rendering ------------------------------------------------------------------------------


def _fmt_stat(stat: Stat | None, column: str) -> str:
    if stat is None:
        return "-"
    digits = 0 if column == WALL_CLOCK else 2
    text = f"{stat.mean:.{digits}f}"
    if stat.std is not None:
        text += f" ± {stat.std:.{digits}f}"
    return text


def _header(column: str) -> str:
    return "wall-clock (s)" if column == WALL_CLOCK else column


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human-readable table (mean ± std)."""
    ref_columns = [c for c in comparison.columns if any(c in r.reference for r in comparison.rows)]
    header = [*comparison.group_by, "runs"] + [_header(c) for c in comparison.columns]
    for c in ref_columns:
        header += [f"ref {c}", f"Δ {c}"]
    rows = []
    for row in comparison.rows:
        cells = [v or "-" for v in row.key.values()] + [str(row.n)]
        cells += [_fmt_stat(row.stats.get(c), c) for c in comparison.columns]
        for c in ref_columns:
            ref = row.reference.get(c)
            stat = row.stats.get(c)
            cells.append("-" if ref is None else f"{ref:.2f}")
            cells.append("-" if ref is None or stat is None else f"{stat.mean - ref:+.2f}")
        rows.append(cells)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(out)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
           + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    out.append("</tbody></table>")
    return "\n".join(out)


def to_json(comparison: Comparison) -> list[dict[str, Any]]:
    """Rows as dicts: group values, n, run ids, seeds and mean/std/n/values per column."""
    out = []
    for row in comparison.rows:
        item: dict[str, Any] = {"group": row.key, "n": row.n, "run_ids": row.run_ids,
                                "seeds": row.seeds, "protocols": row.protocols, "metrics": {}}
        for column in comparison.columns:
            stat = row.stats.get(column)
            item["metrics"][column] = None if stat is None else attrs.asdict(stat)
        if row.reference:
            item["reference"] = row.reference
            item["reference_source"] = row.reference_source
            item["difference"] = {c: row.stats[c].mean - v for c, v in row.reference.items()
                                  if row.stats.get(c) is not None}
        out.append(item)
    return out


def render(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison as ``table`` (aligned text), ``markdown``, ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps(to_json(comparison), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        ref_columns = [c for c in comparison.columns
                       if any(c in r.reference for r in comparison.rows)]
        header = [*comparison.group_by, "runs"]
        for c in comparison.columns:
            header += [f"{c} mean", f"{c} std"]
        header += [f"{c} reference" for c in ref_columns]
        writer.writerow(header)
        for row in comparison.rows:
            cells: list[Any] = [*row.key.values(), row.n]
            for c in comparison.columns:
                stat = row.stats.get(c)
                cells += ["" if stat is None else repr(stat.mean),
                          "" if stat is None or stat.std is None else repr(stat.std)]
            cells += [row.reference.get(c, "") for c in ref_columns]
            writer.writerow(cells)
        return buf.getvalue()
    header, rows = table_rows(comparison)
    if fmt == "markdown":
        return markdown_table(header, rows)
    if fmt == "table":
        return text_table(header, rows)
    raise ConfigError(f"unknown format {fmt!r}; use table, csv, markdown or json")


def comparison_note(comparison: Comparison) -> str:
    """The line under a table: what the numbers are."""
    note = (f"mean ± sample std over each group's runs (seeds); figures are "
            f"{'the last epoch' if comparison.select == 'last' else 'at the best val/acc epoch'} "
            "in percent; wall-clock is the parent run's end - start")
    if comparison.left_out:
        note += f"; {comparison.left_out} runs that did not finish are left out (--status all)"
    protocols = sorted({p for r in comparison.rows for p in r.protocols})
    note += f"; eval.protocol {' and '.join(protocols)}" if protocols else ""
    sources = sorted({r.reference_source for r in comparison.rows if r.reference_source})
    if sources:
        note += "; reference: " + "; ".join(sources)
    return note + "".join(f"\nwarning: {w}" for w in protocol_warnings(comparison))


def protocol_warnings(comparison: Comparison) -> list[str]:
    """Where the runs' evaluation protocol makes a comparison misleading: reference numbers
    beside runs not evaluated as the papers are, best-val selection on test images."""
    warnings = []
    unlike = [r.label() for r in comparison.rows
              if r.reference and any(p != "paper" for p in r.protocols)]
    if unlike:
        warnings.append(f"{len(unlike)} row(s) with reference numbers were not evaluated under "
                        "eval.protocol paper, the papers' protocol (their test split may leave "
                        f"images out): {'; '.join(unlike[:3])}{'; ...' if len(unlike) > 3 else ''}")
    if comparison.select == "best-val" and any("paper" in r.protocols for r in comparison.rows):
        warnings.append("--select best-val picks epochs by validation images that are part of "
                        "the test split under eval.protocol paper: the test figures are then "
                        "selected on test images")
    return warnings
