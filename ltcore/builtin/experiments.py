"""The ``experiments`` built-in plugin: ``ltrun sweep``, ``ltrun compare`` and ``ltrun report``.

It only adds commands (no ``setup_run``), so it is not selectable with ``--plugin``. The logic
lives in :mod:`ltcore.experiments`; this module imports nothing heavy until a command runs.
"""

from __future__ import annotations

import shlex
import sys

import click

from ltcore import hookimpl
from ltcore.files import EXPERIMENT_RULE, check_name, experiment_problem


def name_option(ctx, param, value):
    """Refuse a sweep id that could not name a folder (one line, exit 2)."""
    return value if value is None else check_name(value, param.opts[0])


def experiment_option(ctx, param, value):
    """Refuse an experiment name MLflow could not hold (one line, exit 2)."""
    from ltcore.errors import ConfigError

    problem = value is not None and experiment_problem(value)
    if problem:
        raise ConfigError(f"{param.opts[0]} {value!r} is refused: it {problem} "
                          f"({EXPERIMENT_RULE})")
    return value


SELECTION = [
    click.option("--experiment", default="ltcore", show_default=True, callback=experiment_option,
                 help="MLflow experiment of the runs."),
    click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or "
                 "sqlite:///mlflow.db)."),
    click.option("--filter", "filter_string", default="", metavar="EXPR",
                 help="MLflow search filter, e.g. \"tags.dataset = 'digits-lt'\"."),
    click.option("--sweep", metavar="ID", callback=name_option,
                 help="Only the runs of this sweep."),
    click.option("--run", "run_ids", multiple=True, metavar="RUN_ID",
                 help="These runs (repeat); overrides --experiment/--filter/--sweep."),
    click.option("--group-by", metavar="KEYS",
                 help="Comma-separated tags or params to group by (default: the sweep's axes "
                      "without seed, else plugins,dataset,imbalance_factor)."),
    click.option("--status", type=click.Choice(["FINISHED", "all"]), default="FINISHED",
                 show_default=True, help="Runs to include."),
    click.option("--select", type=click.Choice(["last", "best-val"]), default="last",
                 show_default=True,
                 help="Figures of the last epoch, or of the epoch with the best val/acc."),
    click.option("--reference", metavar="FILE|papers",
                 help="Reference numbers (TOML/CSV, or 'papers' for the built-in paper table), "
                      "shown with the difference."),
]


def with_options(table: list):
    """A decorator that adds the click options of ``table`` to a command, in table order."""
    def decorate(fn):
        for option in reversed(table):
            fn = option(fn)
        return fn
    return decorate


selection_options = with_options(SELECTION)


LAUNCH = [
    click.option("--max-parallel", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Cells trained at once, each an ltrun subprocess (with a submitit "
                      "launcher: the default of --array-parallelism)."),
    click.option("--in-process", is_flag=True,
                 help="Train cells one after another in this process instead of subprocesses."),
    click.option("--launcher", type=click.Choice(["local", "submitit-local", "slurm"]),
                 default="local", show_default=True,
                 help="How cells run: ltrun subprocesses here (local), or submitit jobs on this "
                      "machine (submitit-local) or on a SLURM cluster (slurm, one job array). "
                      "The options below apply to the submitit launchers; see "
                      "docs/distributed.md."),
    click.option("--slurm-partition", metavar="NAME", help="SLURM partition of the jobs."),
    click.option("--slurm-account", metavar="NAME", help="SLURM account of the jobs."),
    click.option("--slurm-qos", metavar="NAME", help="SLURM quality of service of the jobs."),
    click.option("--gpus-per-cell", type=click.IntRange(min=0), default=0, show_default=True,
                 help="GPUs of each cell's job (0: none requested; submitit-local hands out "
                      "this machine's GPUs in blocks of N)."),
    click.option("--cpus-per-cell", type=click.IntRange(min=1),
                 help="CPUs of each cell's job (and OMP_NUM_THREADS = N / ranks)."),
    click.option("--time-limit", type=click.IntRange(min=1), metavar="MINUTES",
                 help="Wall-clock limit of each cell's job (default: 1440 on SLURM, none with "
                      "submitit-local)."),
    click.option("--array-parallelism", type=click.IntRange(min=1),
                 help="Jobs running at once (default: --max-parallel)."),
    click.option("--nproc-per-cell", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Ranks per cell: above 1 a cell is `ltrun --nproc N ...`, its ranks "
                      "started by torchrun inside the cell (inside its job)."),
]

launch_options = with_options(LAUNCH)
"""How the cells of ``ltrun sweep`` and ``ltrun reproduce`` run."""

RECORDING = [
    click.option("--experiment", default="ltcore", show_default=True, callback=experiment_option,
                 help="MLflow experiment of the cells' runs."),
    click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or "
                 "sqlite:///mlflow.db)."),
]

recording_options = with_options(RECORDING)
"""Where the cells of ``ltrun sweep`` and ``ltrun reproduce`` are recorded."""


def _splits(split: str) -> list[str]:
    return ["val", "test"] if split == "both" else [split]


def _comparison(tracking_uri, experiment, filter_string, sweep, run_ids, group_by, status,
                select, reference, split, metrics):
    from ltcore import experiments as ex
    from ltcore.errors import DataError
    from ltcore.tracking import connect

    client = connect(tracking_uri or None, create=False)
    runs, left_out = ex.collect_runs(client, experiment, filter_string, sweep, status, run_ids)
    if not runs:
        where = f"sweep {sweep!r}" if sweep else f"experiment {experiment!r}"
        raise DataError(f"no {'finished ' if status == 'FINISHED' else ''}ltcore runs found in "
                        f"{where}{' matching ' + repr(filter_string) if filter_string else ''} at "
                        f"{client.tracking_uri} ({len(left_out)} runs did not finish)")
    keys = ([k.strip() for k in group_by.split(",") if k.strip()] if group_by
            else ex.default_group_by(runs, sweep))
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    refs = ex.load_reference(reference) if reference else None
    comparison = ex.compare(client, runs, keys, _splits(split), names, select, refs, len(left_out))
    return client, runs, comparison


@click.command("sweep", context_settings={"ignore_unknown_options": True})
@click.option("--plugins", "plugin_sets", multiple=True, metavar="A[+B...]",
              help="A plugin set per cell row; repeat for several (bcl, bcl+rcl). Default: ce.")
@click.option("--seeds", multiple=True, metavar="LIST", help="Seeds: 0,1,2 or 0-4.")
@click.option("--imbalance-factors", multiple=True, metavar="LIST", help="e.g. 10,50,100.")
@click.option("--grid", multiple=True, metavar="KEY=V1,V2",
              help="Any configuration key and its values; repeat for more axes.")
@click.option("--devices", metavar="LIST", help="Devices handed out to cells round-robin, "
              "e.g. cuda:0,cuda:1.")
@launch_options
@click.option("--sweep-id", metavar="ID", callback=name_option,
              help="Id of the sweep (default: new); reusing one runs only its cells that have "
                   "not finished.")
@recording_options
@click.option("--output", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Checkpoints folder of the cells; logs go to OUTPUT/sweeps/ID/.")
@click.option("--dry-run", is_flag=True, help="Print the cells' ltrun commands and exit.")
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED)
def sweep_command(plugin_sets, seeds, imbalance_factors, grid, devices, max_parallel, in_process,
                  launcher, slurm_partition, slurm_account, slurm_qos, gpus_per_cell,
                  cpus_per_cell, time_limit, array_parallelism, nproc_per_cell, sweep_id,
                  experiment, tracking_uri, output, dry_run, run_options):
    """Train every combination of plugin sets, seeds, imbalance factors and --grid values.

    Any other ltrun option (--epochs, --preset, --set KEY=VALUE, --dataset, ...) is passed to
    every cell. Each cell is one MLflow run tagged ltcore.sweep=ID; a failed cell is recorded
    as FAILED and the sweep goes on. The exit code is 1 when a cell failed.

    \b
    Examples:
      ltrun sweep --plugins bcl --plugins bcl+rcl --seeds 0,1 --imbalance-factors 10,100 \\
          --grid optim.lr=0.1,0.2 --epochs 200 --max-parallel 2
      ltrun sweep --plugins bcl --seeds 0-4 --epochs 200 --launcher slurm \\
          --slurm-partition gpu --gpus-per-cell 1 --cpus-per-cell 8 --time-limit 600 \\
          --array-parallelism 5 --tracking-uri http://mlflow.example:5000
    """

    from ltcore import experiments as ex
    from ltcore.errors import ConfigError

    common = list(run_options)
    swept = {"--seed": ("--seeds", seeds), "--imbalance-factor": ("--imbalance-factors",
                                                                  imbalance_factors),
             "--plugin": ("--plugins", True), "-p": ("--plugins", True)}
    for flag, (axis, given) in swept.items():
        if flag in common and given:
            raise ConfigError(f"{flag} is swept by ltrun sweep: use {axis}")
    cells = ex.plan_sweep(ex.parse_plugin_sets(plugin_sets), ex.parse_seeds(seeds),
                          ex.parse_floats(imbalance_factors, "--imbalance-factors"),
                          ex.parse_grid(grid), ex.split_values(devices) if devices else ())
    sweep = ex.Sweep(sweep_id or ex.new_sweep_id(), cells, common, experiment,
                     tracking_uri or "", output, nproc_per_cell)
    runner = ex.Launcher(launcher, slurm_partition, slurm_account, slurm_qos, gpus_per_cell,
                         cpus_per_cell, time_limit, array_parallelism)
    runner.check(in_process, bool(devices), nproc_per_cell)
    if runner.submitit and not dry_run:
        ex.import_submitit()
    ex.validate_cells(sweep)
    if dry_run:
        for cell in cells:
            click.echo(f"[{cell.index}] ltrun {shlex.join(sweep.command_args(cell))}")
        return
    results = ex.run_sweep(sweep, max_parallel, in_process, echo=click.echo, launcher=runner)
    click.echo("")
    click.echo(ex.format_sweep_summary(sweep, results))
    if any(r.status in ("FAILED", "NOT_RUN") for r in results):
        sys.exit(1)


@click.command("compare")
@selection_options
@click.option("--split", type=click.Choice(["val", "test", "both"]), default="test",
              show_default=True, help="Evaluation split(s) of the figures.")
@click.option("--metrics", default=None,
              help="Figures to show per split, e.g. acc,many (default: acc, many, medium, few, "
                   "hmean; for runs without accuracy, such as segmentation's, every figure "
                   "they record: mIoU, mAcc, aAcc and their groups).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "markdown", "json"]),
              default="table", show_default=True)
@click.option("--output", "output_file", type=click.Path(dir_okay=False),
              help="Write to this file instead of the terminal.")
def compare_command(experiment, tracking_uri, filter_string, sweep, run_ids, group_by, status,
                    select, reference, split, metrics, fmt, output_file):
    """Mean ± std over seeds of overall, many, medium, few and harmonic-mean accuracy and
    wall-clock, one row per group of runs.

    \b
    Examples:
      ltrun compare --sweep 20250101-120000-abc123
      ltrun compare --filter "tags.dataset = 'cifar10-lt'" --group-by plugins,imbalance_factor \\
          --reference papers --format markdown
    """

    from ltcore import experiments as ex

    _, _, comparison = _comparison(tracking_uri, experiment, filter_string, sweep, run_ids,
                                   group_by, status, select, reference, split, metrics)
    text = ex.render(comparison, fmt)
    if fmt in ("table", "markdown"):
        text += "\n\n" + ex.comparison_note(comparison)
    if output_file:
        from ltcore.files import write_text

        write_text(output_file, text if text.endswith("\n") else text + "\n")
        click.echo(f"wrote {output_file}")
    else:
        click.echo(text.rstrip("\n"))


@click.command("report")
@selection_options
@click.option("--output", "output_dir", type=click.Path(file_okay=False),
              help="Folder of the page and plots (default: reports/<sweep or experiment>).")
@click.option("--format", "fmt", type=click.Choice(["html", "markdown"]), default="html",
              show_default=True)
@click.option("--split", default="val", show_default=True,
              help="Evaluation split of the t-SNE plots (the other figures use the table's "
                   "split: test when the table shows it).")
@click.option("--table-split", type=click.Choice(["val", "test", "both"]), default="both",
              show_default=True, help="Split(s) of the table.")
@click.option("--no-tsne", is_flag=True, help="Skip the t-SNE plots.")
@click.option("--tsne-normalise", type=click.Choice(["l2", "standard", "none"]), default="l2",
              show_default=True, help="Feature scaling before t-SNE.")
@click.option("--tsne-points", type=click.IntRange(min=11), default=2000, show_default=True,
              help="At most this many points per t-SNE (random subset).")
@click.option("--max-runs", type=click.IntRange(min=1), default=12, show_default=True,
              help="Methods with a confusion matrix and runs with a t-SNE.")
@click.option("--no-log", is_flag=True, help="Do not log the plots as MLflow artifacts.")
@click.option("--device", default="cpu", show_default=True,
              help="Device for recomputing model outputs.")
@click.option("--runs-dir", type=click.Path(file_okay=False),
              help="The folder holding the run folders with model.pt (default: each run's --output).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Dataset folder, when it moved since training.")
def report_command(experiment, tracking_uri, filter_string, sweep, run_ids, group_by, status,
                   select, reference, output_dir, fmt, split, table_split, no_tsne,
                   tsne_normalise, tsne_points, max_runs, no_log, device, runs_dir, data_dir):
    """Write one HTML or markdown page with the comparison table and plots: per-class accuracy
    vs class size, accuracy vs epoch, confusion matrices and t-SNE of validation features.

    The plots are logged as MLflow artifacts: each run's t-SNE to that run, the cross-run plots
    and the page to the sweep's record run (with --sweep).
    """
    from pathlib import Path

    from ltcore import experiments as ex
    from ltcore.files import inside

    client, runs, comparison = _comparison(tracking_uri, experiment, filter_string, sweep,
                                           run_ids, group_by, status, select, reference,
                                           table_split, ",".join(ex.METRICS))
    name = sweep or (experiment if not run_ids else "runs")
    output = Path(output_dir) if output_dir else inside(Path("reports") / ex.slug(name), "reports")
    options = ex.ReportOptions(split=split, format=fmt, tsne=not no_tsne,
                               tsne_normalise=tsne_normalise, tsne_points=tsne_points,
                               max_runs=max_runs, log=not no_log, device=device,
                               runs_dir=runs_dir, data_dir=data_dir)
    title = f"ltcore report: {'sweep ' + sweep if sweep else 'experiment ' + experiment}"
    if sweep:  # a reproduction sweep: its tables as the papers print them
        from ltcore.experiments import reproduce as rp
        from ltcore.tracking.store import experiment_id

        ids = [experiment_id(client, experiment, create=False)]
        for plan in rp.sweep_plans(client, ids, sweep):
            values = rp.measured(client, ids, sweep, plan)
            options.tables.append(rp.layout_rows(plan, values))
            drawn = rp.against_setting(plan, values, output / "plots")
            if drawn is not None:
                options.table_figures.append(drawn)
    page = ex.build_report(client, runs, comparison, output, options, title, sweep,
                           echo=click.echo)
    click.echo(f"wrote {page}")


@click.command("reproduce", context_settings={"ignore_unknown_options": True})
@click.argument("table_id", required=False, metavar="PLUGIN:TABLE[,...]|PLUGIN")
@click.option("--list", "list_tables", is_flag=True,
              help="List the installed plugins' tables: runnable, or what each waits for.")
@click.option("--seeds", default="0,1,2", show_default=True, metavar="LIST",
              help="Seeds of every cell: 0,1,2 or 0-4.")
@click.option("--smoke", is_flag=True,
              help="Train each distinct cell for one step on the embedded data (digits-lt, or "
                   "a small generated tree for image-file datasets) with a ResNet-8, seed 0, in "
                   "this process: a check that the table runs, not a result.")
@click.option("--data-dir", "data_dirs", multiple=True, metavar="DATASET=DIR",
              help="Where a dataset's files are, e.g. cifar10-lt=~/data/cifar10; repeat.")
@launch_options
@click.option("--sweep-id", metavar="ID", callback=name_option,
              help="Id of the sweep (default: reproduce-<plugin>-<table>, so the same command "
                   "again continues it and trains only the cells not yet finished).")
@recording_options
@click.option("--output", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Checkpoints folder of the cells; logs and the table go to "
                   "OUTPUT/sweeps/ID/.")
@click.option("--dry-run", is_flag=True,
              help="Print each cell's place in the table and its ltrun command, and exit.")
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED)
def reproduce_command(table_id, list_tables, seeds, smoke, data_dirs, max_parallel, in_process,
                      launcher, slurm_partition, slurm_account, slurm_qos, gpus_per_cell,
                      cpus_per_cell, time_limit, array_parallelism, nproc_per_cell, sweep_id,
                      experiment, tracking_uri, output, dry_run, run_options):
    """Run a table or figure of a paper as a resumable sweep and lay it out as printed, with
    the measured mean ± std beside each of the paper's numbers (docs/reproduce.md).

    Several tables (comma-separated ids, or a plugin's name for all its runnable tables) are one
    sweep, in which a run two tables share trains once. Every cell is evaluated under
    eval.protocol = paper. Any other ltrun option (--device, --set KEY=VALUE, ...) is passed
    to every cell.

    \b
    Examples:
      ltrun reproduce --list
      ltrun reproduce bcl:table3 --seeds 0,1,2 --data-dir cifar10-lt=~/data/cifar10 \\
          --data-dir cifar100-lt=~/data/cifar100
      ltrun reproduce gml:table5 --launcher slurm --slurm-partition gpu --gpus-per-cell 1
      ltrun reproduce iccl:table4 --smoke
    """
    from pathlib import Path

    from ltcore import experiments as ex
    from ltcore.errors import ConfigError
    from ltcore.experiments import reproduce as rp
    from ltcore.files import write_text
    from ltcore.plugins import Plugins

    plugins = Plugins()
    if list_tables:
        click.echo(rp.list_tables(plugins))
        return
    if not table_id:
        raise ConfigError("name a table (ltrun reproduce PLUGIN:TABLE), or list them with "
                          "ltrun reproduce --list")
    tables = rp.select_tables(plugins, table_id, echo=click.echo)
    dirs = {}
    for item in data_dirs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--data-dir expects DATASET=DIR, got {item!r}")
        dirs[name] = str(Path(folder).expanduser())

    def with_data(selected, presets, settings):
        folder = dirs.get(str(settings.get("dataset", "")))
        return {**settings, "data_dir": folder} if folder else settings

    plans = rp.plan_tables(tables, ex.parse_seeds([seeds]), with_data)
    name = "-".join(table_id.replace(":", "-").split(","))[:80]
    default_id = f"reproduce-{name}"
    common = list(run_options)
    if smoke:  # the real cells are checked, then their one-step form trains
        ex.validate_cells(rp.reproduction_sweep(plans, default_id, common, experiment,
                                                tracking_uri or "", output, 1), plugins)
        plans = rp.plan_tables(tables, [0], rp.smoke_overrides(Path(output) / "smoke-data",
                                                                  plugins),
                               rp.smoke_identity(plugins))
        default_id = f"smoke-{name}-{ex.new_sweep_id()}"
        in_process = in_process or (launcher == "local" and max_parallel == 1)
    sweep = rp.reproduction_sweep(plans, sweep_id or default_id, common, experiment,
                                  tracking_uri or "", output, nproc_per_cell)
    runner = ex.Launcher(launcher, slurm_partition, slurm_account, slurm_qos, gpus_per_cell,
                         cpus_per_cell, time_limit, array_parallelism)
    runner.check(in_process, False, nproc_per_cell)
    ex.validate_cells(sweep, plugins)
    if dry_run:
        where: dict[str, list[str]] = {}
        for plan in plans:
            for (row, column), key in plan.positions.items():
                where.setdefault(key, []).append(f"{plan.table_id} {row} / {column}")
        for cell in sweep.cells:
            click.echo(f"[{cell.index}] {'; '.join(where[cell.key.rsplit(' seed=', 1)[0]])}")
            click.echo(f"    ltrun {shlex.join(sweep.command_args(cell))}")
        return
    if runner.submitit:
        ex.import_submitit()
    try:
        results = ex.run_sweep(sweep, max_parallel, in_process, echo=click.echo,
                               launcher=runner)
    finally:  # what ltrun report needs to lay the tables out, stopped or not
        rp.record_plans(sweep, plans)
    click.echo("")
    click.echo(ex.format_sweep_summary(sweep, results))
    layouts = rp.sweep_layouts(sweep, plans)
    write_text(sweep.folder() / "tables.md", "\n\n".join(layouts["markdown"]) + "\n")
    for text, values, plan in zip(layouts["text"], layouts["values"], plans):
        click.echo("")
        click.echo(text)
        drawn = rp.against_setting(plan, values, sweep.folder())
        if drawn is not None:
            click.echo(f"{plan.table_id} drawn: {drawn[1]}")
        elif plan.table.kind == "figure":
            click.echo(f"{plan.table_id} is drawn by: ltrun report --sweep "
                       f"{shlex.quote(sweep.id)} --experiment {shlex.quote(experiment)}")
    if any(r.status in ("FAILED", "NOT_RUN") for r in results):
        sys.exit(1)


@hookimpl
def register_commands(cli):
    for command in (sweep_command, compare_command, report_command, reproduce_command):
        cli.add_command(command)
