"""``ltrun``: train with any combination of plugins, and inspect, evaluate and compare runs.

``ltrun --plugin bcl --plugin rcl [run options]`` trains (no subcommand); ``ltrun plugins``,
``ltrun datasets`` and ``ltrun evaluate`` (plus the commands plugins add) sit beside it.
Errors a user can fix are printed as one paragraph without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import json
import os
import sys

import click

from .errors import (ConfigError, DeviceMemoryError, LtcoreError, RunFinished, RunStopped,
                     is_out_of_memory, out_of_memory_message)
from .launch import ignore_stop_signals, note_error, run_ranks
from .startup import mark

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

RUN_OPTIONS = {
    "dataset": "dataset", "data_dir": "data_dir", "imbalance_factor": "imbalance_factor",
    "epochs": "epochs", "batch_size": "batch_size", "seed": "seed", "device": "device",
    "views": "views.backend", "experiment": "tracking.experiment",
    "tracking_uri": "tracking.uri", "output": "output",
    "register_model": "tracking.register_model",
}
"""CLI option -> configuration key, applied after --set."""


def load_plugins(ctx):
    """The installed plugins, less those switched off with ``--disable-plugin``; a warning for
    each that failed to load. The names switched off join ``LTCORE_DISABLE_PLUGINS``, so the
    ltrun processes a command starts (sweeps) leave them off too."""
    from .plugins import DISABLE_ENV, Plugins, disabled_by_environment

    disable = tuple(ctx.find_root().params.get("disabled_plugins") or ())
    if disable:
        os.environ[DISABLE_ENV] = ",".join(sorted(disabled_by_environment() | set(disable)))
    plugins = Plugins(disable=disable)
    for info in plugins.broken():
        click.echo(f"warning: plugin {info.name!r} ({info.module}) failed to load and is "
                   f"unavailable: {info.error}", err=True)
    return plugins


class LtrunGroup(click.Group):
    """The ``ltrun`` group: plugins' commands are added when the group is first listed."""

    def _with_plugin_commands(self, ctx):
        if not getattr(self, "_plugins_loaded", False):
            self._plugins_loaded = True
            ctx.ensure_object(dict)
            try:
                plugins = load_plugins(ctx)
            except LtcoreError as exc:
                click.echo(f"warning: {exc}", err=True)
                return
            ctx.obj["plugins"] = plugins
            plugins.pm.hook.register_commands(cli=self)

    def list_commands(self, ctx):
        self._with_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            self._with_plugin_commands(ctx)
            command = super().get_command(ctx, name)
        return command


def plugins_of(ctx):
    ctx.ensure_object(dict)
    if "plugins" not in ctx.obj:
        ctx.obj["plugins"] = load_plugins(ctx)
    return ctx.obj["plugins"]


@click.group(cls=LtrunGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugin", "-p", "plugin_names", multiple=True, metavar="NAME",
              help="Method plugin to use; repeat to compose (default: ce).")
@click.option("--preset", "presets", multiple=True, metavar="NAME",
              help="Recipe of the selected plugins, e.g. cifar10-lt.")
@click.option("--disable-plugin", "disabled_plugins", multiple=True, metavar="NAME",
              help="Leave an installed plugin unloaded (also: LTCORE_DISABLE_PLUGINS=a,b).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="TOML configuration file (format of --print-config); its plugins unless "
                   "--plugin is given.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set any configuration key, e.g. --set optim.lr=0.2 --set bcl.temperature=0.1.")
@click.option("--dataset", help="Dataset name (ltrun datasets lists them).")
@click.option("--data-dir", type=click.Path(), help="Where the dataset's files are (manifest-lt: "
              "the manifest file).")
@click.option("--imbalance-factor", metavar="IF|natural",
              help="n_max / n_min of the long tail imposed on the training images, or natural "
                   "(every training image as it is).")
@click.option("--epochs", type=int, help="Epochs of the main stage.")
@click.option("--batch-size", type=int, help="Training batch size.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--device", help="auto | cpu | cuda | cuda:N.")
@click.option("--views", type=click.Choice(["auto", "reference", "batched"]),
              help="Augmentation backend: per-image reference or batched on the device.")
@click.option("--experiment", help="MLflow experiment name.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db).")
@click.option("--output", type=click.Path(file_okay=False), help="Checkpoints and reports folder.")
@click.option("--register-model", metavar="NAME",
              help="Register the run's MLflow Model under NAME in the Model Registry.")
@click.option("--resume", metavar="RUN", help="Continue a run from its last checkpoint: its id, "
              "its folder's name or 'last' (the run started last under --output).")
@click.option("--from", "start_from", type=click.Choice(["previous", "start"]),
              help="With --resume: continue from the checkpoint before the latest (kept when a "
                   "new one is written), or start the run over, in its MLflow run.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("--nproc", type=click.IntRange(min=1), metavar="N",
              help="Train with N processes on this machine (torchrun --standalone "
                   "--nproc-per-node N; docs/distributed.md).")
@click.version_option(package_name="ltcore")
@click.pass_context
def cli(ctx, plugin_names, presets, disabled_plugins, config_file, assignments, resume,
        start_from, print_config, no_progress, debug, nproc, **options):
    """Train a long-tailed recognition run composed from plugins.

    \b
    Examples:
      ltrun --plugin bcl --plugin rcl --epochs 3
      ltrun --plugin bcl --preset cifar10-lt --data-dir ~/data/cifar10
      ltrun plugins --options bcl
    """
    if ctx.invoked_subcommand is not None:
        return
    from .config import resolve
    from .engine import runs

    mark("engine imported")
    plugins = plugins_of(ctx)
    mark("plugins loaded")
    if start_from and not resume:
        raise ConfigError(f"--from {start_from} goes with --resume RUN")
    if resume:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items()
                 if v is not None and k not in ("output", "epochs")]
        given += [flag for flag, value in (("--plugin", plugin_names), ("--preset", presets),
                                           ("--config", config_file), ("--set", assignments))
                  if value]
        if given:
            raise ConfigError(f"--resume continues a run with its own settings, so "
                              f"{', '.join(given)} cannot be given with it (--epochs changes "
                              f"its epochs; start a new run for other settings)")
        try:
            result = runs.resume(plugins, resume, options.get("output") or "runs",
                                 progress=not no_progress, echo=click.echo,
                                 epochs=options.get("epochs"), start_from=start_from)
        except RunFinished as finished:
            if os.environ.get("RANK", "0") == "0":  # once for all ranks
                click.echo(str(finished))
            return
    else:
        from .config_text import plugins_in_file

        recorded = plugins_in_file(config_file) if config_file and not plugin_names else []
        selected = plugins.select(list(plugin_names) or recorded or runs.DEFAULT_PLUGINS)
        overrides = {RUN_OPTIONS[k]: v for k, v in options.items() if v is not None}
        settings = resolve(plugins, selected, presets, config_file, assignments, overrides)
        mark("settings resolved")
        if print_config:
            click.echo(settings.to_toml(plugins.references(selected)), nl=False)
            return
        result = runs.train(plugins, selected, settings, progress=not no_progress,
                            echo=click.echo)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command("plugins")
@click.option("--options", "options_of", metavar="NAME", help="Show the options and presets of NAME.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_command(ctx, options_of, as_json):
    """List installed plugins and the components they register."""
    plugins = plugins_of(ctx)
    if options_of:
        click.echo(describe_options(plugins, options_of))
        return
    rows = []
    for name, info in sorted(plugins.info.items()):
        components: dict[str, list[str]] = {}
        for c in plugins.components_of(name):
            components.setdefault(c.kind, []).append(c.name)
        rows.append({"name": name, "version": info.version, "distribution": info.distribution,
                     "builtin": info.builtin, "supports": info.supports,
                     "disabled": info.disabled, "error": info.error,
                     "hooks": plugins.hooks_of(name), "components": components,
                     "presets": sorted(plugins.presets.get(name, {}))})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        origin = "built-in" if row["builtin"] else row["distribution"]
        supports = f"ltcore {row['supports']}" if row["supports"] else "no ltcore range declared"
        click.echo(f"{row['name']} {row['version']} ({origin}; {supports})")
        if row["disabled"]:
            click.echo("    switched off (--disable-plugin or LTCORE_DISABLE_PLUGINS)")
        if row["error"]:
            click.echo(f"    FAILED TO LOAD: {row['error']}")
        if row["hooks"]:
            click.echo(f"    hooks: {', '.join(row['hooks'])}")
        for kind, names in row["components"].items():
            click.echo(f"    {kind}: {', '.join(names)}")
        if row["presets"]:
            click.echo(f"    presets: {', '.join(row['presets'])}")


@cli.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Where to write the distribution's folder.")
@click.pass_context
def new_plugin_command(ctx, name, directory):
    """Write a new plugin distribution ltcore-NAME, ready to install and test."""
    from .scaffold import write_plugin

    target = write_plugin(name, directory, taken=set(plugins_of(ctx).info))
    click.echo(f"wrote {target}/\n  pip install -e {target}\n  pytest {target / 'tests'}\n"
               f"  ltrun --plugin {name} --epochs 1")


def describe_options(plugins, name: str) -> str:
    from .config import RunConfig, field_docs
    from .errors import PluginError

    if name == "core":
        rows, presets = field_docs(RunConfig), {}
    else:
        if name not in plugins.info:
            raise PluginError(f"unknown plugin {name!r}; installed plugins: "
                              f"{', '.join(plugins.available())}")
        cls = plugins.options.get(name)
        rows = field_docs(cls, name) if cls else []
        presets = plugins.presets.get(name, {})
    lines = [f"options of {name}:" if rows else f"{name} has no options"]
    for key, type_name, default, text in rows:
        lines.append(f"  {key} ({type_name}, default {default!r})")
        if text:
            lines.append(f"      {text}")
    if presets:
        lines.append("presets:")
        for preset in presets.values():
            lines.append(f"  {preset.name}: {preset.doc}")
            lines.extend(f"      {k} = {v!r}" for k, v in preset.settings.items())
    return "\n".join(lines)


@cli.command("datasets")
@click.option("--dataset", help="Show the per-class counts of this dataset.")
@click.option("--data-dir", type=click.Path(), default="",
              help="Where the dataset's files are (manifest-lt: the manifest file).")
@click.option("--imbalance-factor", metavar="IF|natural", default=None,
              help="The long tail to impose, or natural (the images as they are).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Change a setting, e.g. --set eval.shot_groups=thirds --set val_fraction=0.2.")
@click.pass_context
def datasets_command(ctx, dataset, data_dir, imbalance_factor, assignments):
    """List datasets, or print a dataset's per-class counts and shot groups (by name)."""
    plugins = plugins_of(ctx)
    if not dataset:
        for c in plugins.components["dataset"].values():
            click.echo(f"{c.name:18} {c.doc}  [{c.plugin}]")
        return
    import torch

    from .config import RunConfig, structure
    from .config_text import merge, nest, parse_assignment
    from .data import imbalance_factor_text
    from .evaluation import shot_group_lines, shot_groups_of

    options = {"dataset": dataset, "data_dir": data_dir or None,
               "imbalance_factor": imbalance_factor}
    cfg = structure(RunConfig, merge(nest(dict(parse_assignment(a) for a in assignments)),
                                     {k: v for k, v in options.items() if v is not None}))
    factory = plugins.component("dataset", dataset).obj
    formula = getattr(factory, "class_counts", None)
    if formula is not None:  # from the construction: no image read, nothing downloaded
        counts = torch.tensor(formula(cfg))
        names = getattr(factory, "class_names", None) or [str(i) for i in range(len(counts))]
        click.echo(f"{dataset}: {int(counts.sum())} training images in {len(counts)} classes, "
                   f"imbalance factor {imbalance_factor_text(cfg.imbalance_factor)} (counts from "
                   "the dataset's construction; no image was read)")
    else:
        ds = factory(cfg)
        counts, names = ds.class_counts, ds.classes
        click.echo(f"{ds.name}: {len(ds.train)} training images in {ds.num_classes} classes, "
                   f"imbalance factor {imbalance_factor_text(cfg.imbalance_factor)} "
                   f"(source {ds.source})")
        for split, data in ds.eval_splits().items():
            click.echo(f"{split}: {len(data)} images")
        for note in ds.notes:
            click.echo(f"data: {note}")
        for warning in ds.warnings:
            click.echo(f"warning: {warning}")
    groups = shot_groups_of(counts, cfg.eval)
    group_of = {int(i): g for g, idx in groups.items() for i in idx}
    click.echo(f"{'class':>5}  {'name':20} {'count':>6}  group")
    for i, (name, n) in enumerate(zip(names, counts.tolist())):
        click.echo(f"{i:>5}  {name[:20]:20} {n:>6}  {group_of.get(i, '')}")
    for line in shot_group_lines(counts, names, cfg.eval):
        click.echo(line)


@cli.command("evaluate")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="model.pt or checkpoint.pt of a run.")
@click.option("--zero-shot", is_flag=True, help="Instead of a checkpoint: a CLIP model "
              "(model.backbone=clip:...) with its text tower's class-name classifier, configured "
              "as for training (--config, --preset, --set, --dataset...; docs/clip.md).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --zero-shot: a TOML configuration file, as ltrun --config.")
@click.option("--preset", "presets", multiple=True, metavar="NAME",
              help="With --zero-shot: a preset of the selected plugins, as ltrun --preset.")
@click.option("--dataset", help="Dataset to evaluate on (default: the run's).")
@click.option("--data-dir", type=click.Path(), help="The dataset's files.")
@click.option("--imbalance-factor", metavar="IF|natural",
              help="Defines the shot groups (default: the run's).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Change a setting for this evaluation, e.g. --set eval.posthoc_la_tau=1 "
                   "--set 'eval.metrics=[\"ece\"]'.")
@click.option("--test-shift", is_flag=True,
              help="Evaluate on long-tailed resamplings of the balanced test split (forward and "
                   "backward imbalance ratios, as in SADE) and print accuracy/many/medium/few "
                   "per ratio.")
@click.option("--ratios", metavar="R,R,...",
              help="Imbalance ratios of --test-shift (implies it): > 1 forward, 1 uniform, < 1 "
                   "backward, e.g. 50,10,1,0.1,0.02 (the default) or 1/50.")
@click.option("--shift-seed", type=int, default=0, show_default=True,
              help="Seed of the --test-shift resampling.")
@click.option("--draws", type=click.IntRange(min=1), default=1, show_default=True,
              help="Resamplings per ratio (seeds shift-seed, shift-seed+1, ...); figures averaged.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the figures and, under per_class, each class's accuracy.")
@click.option("--predictions", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write every test image's label and prediction to FILE (CSV).")
@click.option("--save-model", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the run's model to FILE as model.pt is written now (class names, "
                   "preprocessing, architecture): upgrades a model saved by an older ltcore.")
@click.pass_context
def evaluate_command(ctx, checkpoint, zero_shot, config_file, presets, dataset, data_dir,
                     imbalance_factor, assignments, test_shift, ratios, shift_seed, draws,
                     as_json, predictions, save_model):
    """Evaluate a saved model (or, with --zero-shot, an untrained CLIP model) on the evaluation
    splits of a dataset, or on shifted test sets.

    \b
    Examples:
      ltrun evaluate --checkpoint runs/RUN/model.pt
      ltrun evaluate --checkpoint runs/RUN/model.pt --set eval.posthoc_la_tau=1
      ltrun evaluate --checkpoint runs/RUN/model.pt --json --predictions test.csv
      ltrun evaluate --checkpoint runs/RUN/model.pt --test-shift --ratios 50,10,1,0.1,0.02
      ltrun evaluate --zero-shot --set model.backbone=clip:ViT-B-32 --set model.pretrained=hub
    """
    from .engine.console import final_lines
    from .engine.runs import evaluate_checkpoint, evaluate_checkpoint_shifted
    from .zero_shot import evaluate_zero_shot, evaluate_zero_shot_shifted

    if bool(checkpoint) == zero_shot or (checkpoint and (config_file or presets)):
        raise ConfigError("ltrun evaluate takes --checkpoint FILE, or --zero-shot (with "
                          "--config and --preset if need be)")
    overrides = {k: v for k, v in (("dataset", dataset), ("data_dir", data_dir),
                                   ("imbalance_factor", imbalance_factor)) if v is not None}
    source = ((plugins_of(ctx), presets, config_file, assignments, overrides) if zero_shot
              else (plugins_of(ctx), checkpoint, overrides, assignments))
    if test_shift or ratios:
        from .shift import format_shift_table, parse_ratios

        shifted = evaluate_zero_shot_shifted if zero_shot else evaluate_checkpoint_shifted
        result = shifted(*source, parse_ratios(ratios) if ratios else None, shift_seed, draws,
                         echo=warn)
        click.echo(json.dumps(result, indent=2) if as_json else format_shift_table(result))
        return
    evaluation = (evaluate_zero_shot if zero_shot else evaluate_checkpoint)(*source, echo=warn)
    if predictions:
        from .predict import write_test_predictions

        count = write_test_predictions(evaluation, predictions)
        warn(f"wrote the predictions of the {count} test images to {predictions}")
    if save_model:
        from .engine import checkpoints

        checkpoints.write(save_model, checkpoints.model_state(evaluation.run))
        warn(f"wrote {save_model}: the model with its class names, preprocessing and "
             "architecture (ltcore.load_model, ltrun predict, ltrun export read it)")
    figures = evaluation.figures()
    if as_json:
        from .predict import per_class_accuracy

        click.echo(json.dumps({**figures, "per_class": per_class_accuracy(evaluation)}, indent=2))
    else:
        click.echo("\n".join(final_lines(figures)))


@cli.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="model.pt of a run (or a .safetensors file ltrun export wrote).")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classes given per image, most probable first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True,
              help="auto (a GPU when there is one) | cpu | cuda | cuda:N.")
@click.option("--posthoc-la-tau", type=click.FloatRange(min=0), metavar="TAU",
              help="Post-hoc logit adjustment logits - TAU * log(prior) (default: the run's "
                   "eval.posthoc_la_tau).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the class names.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per image and rank.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict_command(paths, checkpoint, top_k, batch_size, device, posthoc_la_tau, as_json,
                    as_csv, no_progress):
    """Predict the classes of unlabelled images (files or folders) with a saved model.

    Only the model file is needed: no dataset, no method plugin. Images that cannot be read
    are reported and skipped.

    \b
    Examples:
      ltrun predict --checkpoint runs/RUN/model.pt photos/ extra.jpg
      ltrun predict --checkpoint runs/RUN/model.pt photos/ --json --top-k 3
    """
    from .engine.runs import resolve_device
    from .predict import (image_files, prediction_csv, prediction_table, predict_files,
                          predictions_json)
    from .standalone import load_model

    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other; give one")
    files = image_files(paths)
    model, preprocessing = load_model(checkpoint, posthoc_la_tau)
    found, skipped = predict_files(model, preprocessing, files, resolve_device(device),
                                   batch_size, top_k, not no_progress, warn)
    if as_json:
        click.echo(predictions_json(checkpoint, float(model.posthoc_la_tau), found, skipped,
                                    model.classes))
    elif as_csv:
        click.echo(prediction_csv(found, model.classes), nl=False)
    else:
        click.echo("\n".join(prediction_table(found, model.classes)))


@cli.command("export")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="model.pt of a run (or a .safetensors file ltrun export wrote).")
@click.option("--format", "fmt", required=True, metavar="FORMAT",
              help="torchscript | onnx | safetensors.")
@click.option("--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="The exported file (default: beside the checkpoint: model.torchscript.pt, "
                   "model.onnx, model.safetensors); its JSON is FILE.json.")
def export_command(checkpoint, fmt, output):
    """Export a saved model to TorchScript, ONNX or safetensors, with its preprocessing.

    The preprocessing (class names, input size, resize, crop, mean, std) is written beside it
    as JSON, and the exported model's logits are compared with the PyTorch model's on a batch.

    \b
    Examples:
      ltrun export --checkpoint runs/RUN/model.pt --format onnx
      ltrun export --checkpoint runs/RUN/model.pt --format safetensors --output deploy/m.safetensors
    """
    from .export import describe, export_model

    for line in describe(export_model(checkpoint, fmt, output), fmt):
        click.echo(line)


def warn(line: str) -> None:
    """Print a warning line on standard error."""
    click.echo(line, err=True)


def nproc_launch(args: list[str]) -> list[str] | None:
    """For ``ltrun --nproc N ...`` outside torchrun: the arguments of ``torchrun`` that start N
    ranks of ``ltrun ...`` on this machine (:func:`ltcore.launch.run_ranks` runs them; None
    without ``--nproc`` or under torchrun)."""
    if args and args[0] in cli.commands:
        return None
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg == "--nproc" or arg.startswith("--nproc="):
            value = arg.partition("=")[2] if "=" in arg else (args[i + 1] if i + 1 < len(args)
                                                              else "")
            rest = args[:i] + args[i + (1 if "=" in arg else 2):]
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"--nproc expects a number of processes, got {value!r}")
            from .distributed import launched_by_torchrun

            if launched_by_torchrun():
                return None
            return ["--standalone", f"--nproc-per-node={value}", "-m", "ltcore", *rest]
    return None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn user errors into one-paragraph messages."""
    mark("cli started")
    args = sys.argv[1:] if argv is None else argv
    rank = os.environ.get("RANK", "0")  # set by torchrun
    in_world = os.environ.get("WORLD_SIZE", "1") != "1"
    prefix = f"[rank {rank}] " if in_world and rank != "0" else ""

    def error(text: str) -> None:  # under ltrun --nproc the launcher prints one line for all
        if in_world:
            ignore_stop_signals()
        if not note_error(rank, text):
            click.echo(f"{prefix}Error: {text}", err=True)

    try:
        launch = nproc_launch(args)
        if launch is not None:
            try:  # a usage error (or --help) once, not from every rank
                cli.make_context("ltrun", launch[4:])
            except click.exceptions.Exit as exc:  # --help, --version
                sys.exit(exc.exit_code)
            sys.exit(run_ranks(launch))
        cli.main(args=args, prog_name="ltrun", standalone_mode=False)
    except RunStopped as exc:
        if in_world:
            ignore_stop_signals()
        if not prefix:  # rank 0 says it for every rank
            click.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except LtcoreError as exc:
        if "--debug" in args:
            raise
        error(str(exc))
        sys.exit(exc.exit_code)
    except RuntimeError as exc:
        if "--debug" in args or not is_out_of_memory(exc):
            raise
        error(out_of_memory_message(exc))
        sys.exit(DeviceMemoryError.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        if not prefix:
            click.echo("Aborted.", err=True)
        sys.exit(130)
    finally:
        if "torch.distributed" in sys.modules:  # a distributed run joined a process group
            from .distributed import leave

            leave()
