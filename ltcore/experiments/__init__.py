"""Experiments over many runs: sweeps, comparison tables and reports.

:mod:`~ltcore.experiments.sweep` expands plugin sets x seeds x imbalance factors x ``--grid``
values into cells and trains each as one ``ltrun`` call (a subprocess, or in this process:
:mod:`~ltcore.experiments.local`), tagged ``ltcore.sweep`` so that the runs are found again; a
cell that fails is recorded as a FAILED MLflow run (with its error and log) and the sweep goes
on. :mod:`~ltcore.experiments.claims` has each cell claimed before it trains, so that it trains
once whatever launchers run, die or are run again.
:mod:`~ltcore.experiments.cluster` runs the cells as submitit jobs instead, on this machine or
a SLURM cluster (one job array), and records them the same way.
:mod:`~ltcore.experiments.compare` groups recorded parent runs (by tags, then params:
``plugins``, ``imbalance_factor``, ``optim.lr``...) and gives mean, sample standard deviation and
count of the final accuracy figures and the wall-clock per group, optionally beside reference
numbers (a TOML/CSV file, or the published results the installed plugins declare).
:mod:`~ltcore.experiments.report` writes an HTML or markdown page with that table and the plots
of :mod:`ltcore.plots`, recomputing what needs the model from each run's saved ``model.pt``.
"""

from .cluster import LAUNCHERS, CellJob, Launcher, import_submitit
from .compare import (Comparison, GroupRow, Stat, attach_reference, collect_runs, compare,
                      comparison_note, default_group_by, final_metrics, load_reference,
                      metric_columns, render, run_value, table_rows, wall_clock)
from .report import ReportOptions, build_report, model_details, run_label, slug, stage_curves, tsne
from .sweep import (Cell, CellResult, Sweep, format_sweep_summary, new_sweep_id, parse_floats,
                    parse_grid, parse_plugin_sets, parse_seeds, plan_sweep, run_sweep,
                    split_values, validate_cells)
from .tags import (ATTEMPT_TAG, AXES_TAG, CELL_TAG, DEFAULT_GROUP_BY, ERROR_TAG, INDEX_TAG,
                   KIND_TAG, METRICS, SWEEP_TAG, WALL_CLOCK)

__all__ = [
    "ATTEMPT_TAG", "AXES_TAG", "CELL_TAG", "Cell", "CellJob", "CellResult", "Comparison",
    "DEFAULT_GROUP_BY", "LAUNCHERS", "Launcher", "import_submitit",
    "ERROR_TAG", "GroupRow", "INDEX_TAG", "KIND_TAG", "METRICS", "ReportOptions", "SWEEP_TAG",
    "Stat", "Sweep", "WALL_CLOCK", "attach_reference", "build_report", "collect_runs", "compare",
    "comparison_note", "default_group_by", "final_metrics", "format_sweep_summary",
    "load_reference", "metric_columns", "model_details", "new_sweep_id", "parse_floats",
    "parse_grid", "parse_plugin_sets", "parse_seeds", "plan_sweep", "render", "run_label",
    "run_sweep", "run_value", "slug", "split_values", "stage_curves", "table_rows", "tsne",
    "validate_cells", "wall_clock",
]
