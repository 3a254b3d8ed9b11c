"""Paper tables and figures as data: what a plugin declares through ``register_tables``.

A :class:`PaperTable` is laid out as the paper prints it: :class:`TableRow` s (methods,
ablation settings) by :class:`TableColumn` s (datasets, imbalance factors, figures), and the
paper's number of each (row, column). A cell's run is its row's plugins with the table's, the
column's and the row's presets and settings, in that order (later ones win); cells that come out
the same (a column per shot group of one dataset) train once. ``ltrun reproduce`` runs a table
as a resumable sweep and lays its measured numbers out beside the paper's.
"""

from __future__ import annotations

import types
from typing import Any, Mapping

import attrs

RUN_FIGURE_KINDS = ("weight-norms", "projection-tsne", "temperatures", "features-2d")
"""The report plots drawn from what the runs recorded (:mod:`ltcore.experiments.figures`)."""
FIGURE_KINDS = (*RUN_FIGURE_KINDS, "against-setting")
"""The plots a :class:`PaperTable` of kind ``figure`` can name (``docs/reproduce.md``): a run
figure, or ``against-setting``, drawn from the table's measured numbers."""


def _settings(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value or {}))


def _names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.define(frozen=True, kw_only=True)
class TableRow:
    """One row: a method or an ablation setting (its plugins, presets and configuration keys)."""

    label: str
    plugins: tuple[str, ...] = attrs.field(converter=_names)
    presets: tuple[str, ...] = attrs.field(default=(), converter=_names)
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=_settings)


@attrs.define(frozen=True, kw_only=True)
class TableColumn:
    """One column: the figure it shows (``metric``, a recorded MLflow metric such as
    ``test/acc``, or a per-epoch figure of the stages such as ``train/epoch_time``, averaged over
    the epochs) and the presets and settings of its runs (dataset, imbalance factor, ...)."""

    label: str
    metric: str = "test/acc"
    presets: tuple[str, ...] = attrs.field(default=(), converter=_names)
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=_settings)


def _numbers(value) -> Mapping[tuple[str, str], float]:
    return types.MappingProxyType({(str(r), str(c)): float(v) for (r, c), v in dict(value).items()})


@attrs.define(frozen=True, kw_only=True)
class PaperTable:
    """A table (or figure) of a paper: ``ltrun reproduce <plugin>:<name>``.

    ``numbers`` maps (row label, column label) to the paper's number (percent for accuracies);
    a cell without one is trained and shown with a dash. ``waits`` says what the table needs
    that ltcore does not have yet (it is listed, not run). A figure (``kind="figure"``) names
    the report plot that draws it (one of :data:`FIGURE_KINDS`); ``against-setting`` draws each
    column's measured figure against the numeric setting ``axis`` of the rows (mean ± std).
    """

    name: str
    caption: str
    source: str
    rows: tuple[TableRow, ...] = attrs.field(converter=tuple)
    columns: tuple[TableColumn, ...] = attrs.field(converter=tuple)
    numbers: Mapping[tuple[str, str], float] = attrs.field(factory=dict, converter=_numbers)
    presets: tuple[str, ...] = attrs.field(default=(), converter=_names)
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=_settings)
    waits: str = ""
    kind: str = attrs.field(default="table", validator=attrs.validators.in_(("table", "figure")))
    figure: str = ""
    axis: str = ""

    def __attrs_post_init__(self):
        from .errors import PluginError

        rows = [r.label for r in self.rows]
        columns = [c.label for c in self.columns]
        for what, labels in (("row", rows), ("column", columns)):
            if len(set(labels)) != len(labels):
                raise PluginError(f"table {self.name!r} has two {what}s of one label")
        unknown = [key for key in self.numbers if key[0] not in rows or key[1] not in columns]
        if unknown:
            raise PluginError(f"table {self.name!r} has numbers of cells it does not lay out: "
                              f"{unknown[:3]}")
        if self.kind == "figure" and self.figure not in FIGURE_KINDS:
            raise PluginError(f"figure {self.name!r} names the plot {self.figure!r}; one of "
                              f"{', '.join(FIGURE_KINDS)}")
        if self.figure == "against-setting":
            unset = [r.label for r in self.rows if not isinstance(
                self.axis_value(r), (int, float))]
            if unset:
                raise PluginError(f"figure {self.name!r} draws against {self.axis!r}, which "
                                  f"rows {unset[:3]} do not set to a number")

    def axis_value(self, row: TableRow) -> Any:
        """The value of ``axis`` a row's runs take (its own settings, else the table's)."""
        return row.settings.get(self.axis, self.settings.get(self.axis))

    def cell_setup(self, row: TableRow, column: TableColumn) -> tuple[tuple[str, ...],
                                                                     tuple[str, ...],
                                                                     dict[str, Any]]:
        """The plugins, presets and settings of the run of one cell."""
        presets = tuple(dict.fromkeys((*self.presets, *column.presets, *row.presets)))
        return row.plugins, presets, {**self.settings, **column.settings, **row.settings}
