"""Entry points: assemble a run from the selected plugins, train it, resume it, evaluate it.

:func:`prepare` resolves the dataset and the model, lets the selected plugins set the run up and
compose it, and checks the result; :func:`train` records a new run in MLflow and trains it;
:func:`resume` continues a run from its checkpoint in the same MLflow runs; :func:`load_saved_run`
and the ``evaluate_*`` functions rebuild a run from a saved model for ``ltrun evaluate``.
"""

from __future__ import annotations

import os
import random
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import torch

from .. import __version__
from ..config import Settings, resolve
from ..config_text import flatten, parse_assignment, plugins_in_file
from ..data import Dataset, imbalance_factor_text
from ..distributed import SINGLE, World, join
from ..errors import ConfigError, DataError, LtcoreError, RankFailure, RunFinished, RunStopped
from ..files import remove_stale, write_text
from ..plugins import Plugins
from ..pretrained import initial_weights, with_pretrained_preprocessing
from ..run import Run
from ..startup import mark
from ..tracking import SilentTracker, Tracker, dataset_input, resolve_uri
from . import checkpoints
from .console import final_lines
from .resuming import (checkpoint_to_resume, close_unstarted, extend, finished, hold_run,
                       resume_command)
from .trainer import LOG, Trainer

DEFAULT_PLUGINS = ["ce"]
CONFIG = "config.toml"
"""A run's settings and plugin selection; ``ltrun --config`` reruns the run from it."""
RUN_ID = "run_id"
"""The file in a run's folder that holds its MLflow run id."""
LAST = "last"
"""What ``ltrun --resume`` takes for the most recently started run under the output folder."""


def find_run_folder(output: str | Path, reference: str) -> tuple[Path, str]:
    """The folder and MLflow id of the run ``reference`` names under ``output``: its id, its
    name (the folder's), or ``last`` (the run whose folder was made last)."""
    root = Path(output)
    folders = [f for f in root.iterdir() if f.is_dir()] if root.is_dir() else []

    def recorded_id(folder: Path) -> str | None:
        path = folder / RUN_ID
        return path.read_text().strip() if path.is_file() else None

    if reference == LAST:
        started = [f for f in folders if recorded_id(f)]
        if not started:
            raise DataError(f"no run under {str(root)!r} to resume; give --output if the runs "
                            "are elsewhere")
        folder = max(started, key=lambda f: (f / RUN_ID).stat().st_mtime_ns)
        return folder, recorded_id(folder)
    # a folder made just before its id was written ends with the id's first 8 characters
    named = [f for f in folders if f.name == reference or recorded_id(f) == reference
             or (recorded_id(f) is None and f.name.endswith(f"-{reference[:8]}"))]
    if not named:
        raise DataError(f"no run {reference!r} under {str(root)!r} (a run is named by its id, "
                        f"its folder's name or '{LAST}'); give the run's --output directory if "
                        "it was not 'runs'")
    return named[0], recorded_id(named[0]) or reference


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) stands for; a
    :class:`ConfigError` for any other name or a CUDA device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N (N: a GPU's "
                          "index)")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but CUDA is not available; use "
                          "--device cpu or auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} was asked for, but this machine has "
                          f"{torch.cuda.device_count()} GPU(s), cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1}")
    return device


def join_world(settings: Settings) -> World:
    """This process's place among the ranks torchrun started (one process without torchrun)."""
    cfg = settings.run
    return join(resolve_device(cfg.device), cfg.distributed.backend, cfg.distributed.timeout_s)


def new_tracker(settings: Settings, world: World) -> Tracker | SilentTracker:
    """The run's MLflow tracker: rank 0's records the run; the other ranks' record nothing."""
    cfg = settings.run.tracking
    if not world.is_main:
        return SilentTracker(resolve_uri(cfg.uri), cfg.experiment)
    return Tracker(resolve_uri(cfg.uri), cfg.experiment)


def prepare(plugins: Plugins, selected: list[str], settings: Settings,
            world: World = SINGLE, restoring: bool = False) -> Run:
    """Build the dataset and model, let the selected plugins set the run up and compose it, and
    check what they built. In a distributed run each rank trains on its local GPU. A run
    ``restoring`` its weights from a checkpoint does not load ``model.pretrained``."""
    cfg = settings.run
    device = resolve_device(cfg.device)
    if cfg.distributed.sync_batchnorm and device.type != "cuda":
        raise ConfigError("distributed.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm "
                          "does not run on the CPU)")
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    dataset = plugins.component("dataset", cfg.dataset).obj(cfg)
    if cfg.limit.eval_images:  # a capped try-out run
        dataset.val, dataset.test = (split.head(cfg.limit.eval_images) if split else split
                                     for split in (dataset.val, dataset.test))
    weights = None if restoring else initial_weights(cfg.model.pretrained, cfg.output)
    settings = with_dataset_views(with_pretrained_preprocessing(plugins, settings, weights,
                                                                dataset), dataset)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run = Run(settings, plugins, selected, dataset, device, world, initial_weights=weights)
    run.speed.apply_backend_flags(device)
    run.hooks.setup_run(run=run)
    run.hooks.compose_run(run=run)
    finish_setup(run)
    if world.distributed:
        check_distributed(run)
    return run


def check_distributed(run: Run) -> None:
    """Refuse a batch too small for the ranks, and convert BatchNorm to SyncBatchNorm when
    asked."""
    cfg, world = run.config, run.world
    if cfg.batch_size < 2 * world.size:
        raise ConfigError(f"batch_size {cfg.batch_size} is the global batch of {world.size} "
                          f"ranks: it needs at least 2 samples per rank ({2 * world.size})")
    if cfg.distributed.sync_batchnorm:
        for module in run.modules.values():
            if torch.nn.SyncBatchNorm.convert_sync_batchnorm(module) is not module:
                raise ConfigError("distributed.sync_batchnorm: a run module is itself a "
                                  "BatchNorm layer and cannot be converted in place")


def with_dataset_views(settings: Settings, dataset: Dataset) -> Settings:
    """``settings`` with ``views.classifier`` / ``views.contrastive`` = ``auto`` replaced by the
    dataset's views, and ``dataset`` set to ``views.image_size``, ``views.mean`` and
    ``views.std`` when those are given."""
    views = settings.run.views
    for name in ("mean", "std"):
        value = getattr(views, name)
        if value and len(value) != dataset.channels:
            raise ConfigError(f"views.{name} has {len(value)} values; dataset {dataset.name!r} "
                              f"has {dataset.channels} channels")
        if value:
            setattr(dataset, name, tuple(value))
    size = views.image_size
    if size and size != dataset.image_size:
        if dataset.in_memory:
            raise ConfigError(f"views.image_size = {size}: dataset {dataset.name!r} holds "
                              f"{dataset.image_size}x{dataset.image_size} images in memory; only "
                              "datasets of image files can change the view size (use 0)")
        dataset.image_size = size
    resolved = attrs.evolve(
        views,
        classifier=dataset.classifier_view if views.classifier == "auto" else views.classifier,
        contrastive=dataset.contrastive_view if views.contrastive == "auto" else views.contrastive,
        contrastive_second=(dataset.contrastive_view if views.contrastive_second == "auto"
                            else views.contrastive_second))
    return attrs.evolve(settings, run=attrs.evolve(settings.run, views=resolved))


def finish_setup(run: Run) -> None:
    """Give stages without a classifier loss the default CE and check what plugins built and
    that the training options suit it."""
    from .mixing import check_mixable
    from .timm_factories import check_schedule, optimizer_factory

    for stage in run.stages:
        if run.config.limit.epochs:
            stage.epochs = min(stage.epochs, run.config.limit.epochs)
        if stage.classifier_loss is None:
            run.classifier_view(stage)
            stage.set_classifier_loss(run.build("loss", "ce"), default=True)
        if not any(v.classify for v in stage.views.values()):
            run.classifier_view(stage)
        for view in stage.views.values():
            if view.pipeline is not None:
                run.component("view", view.pipeline)
        if not any(id(stage.model) == id(m) for m in run.modules.values()):
            run.add_module(f"{stage.name}_model", stage.model)
        run.component("sampler", stage.sampler)
        optimizer_factory(run.plugins, stage.optim.name)
        check_schedule(stage.schedule)
        check_training_options(run, stage)
        if run.config.mix.active:
            check_mixable(stage)


def check_training_options(run: Run, stage) -> None:
    """Refuse ``optim.accumulate`` with a contrastive loss (it needs the whole batch at once)
    and ``loss.label_smoothing`` with a classifier loss outside the cross-entropy family."""
    cfg = run.config
    contrastive = stage.contrastive_losses
    if cfg.optim.accumulate > 1 and contrastive:
        term = contrastive[0]
        raise ConfigError(f"optim.accumulate = {cfg.optim.accumulate} splits each batch into "
                          f"micro-batches, but stage {stage.name!r} trains the contrastive loss "
                          f"{term.name!r} (plugin {term.plugin!r}), which contrasts the whole "
                          f"batch at once; use a smaller --batch-size without accumulation, or "
                          f"optim.accumulate = 1")
    term = stage.classifier_loss
    if cfg.loss.label_smoothing and term is not None and not term.label_smoothing:
        raise ConfigError(f"loss.label_smoothing applies to the cross-entropy family (ce, "
                          f"la-ce, balanced-softmax, the retraining stages' CE), but stage "
                          f"{stage.name!r} trains with {term.name!r} (plugin {term.plugin!r})")


def run_tags(run: Run) -> dict[str, str]:
    from ..experiments.tags import TASK_TAG

    cfg = run.config
    return {"ltcore.plugins": ",".join(run.selected), TASK_TAG: run.task.name,
            "dataset": cfg.dataset,
            "imbalance_factor": imbalance_factor_text(cfg.imbalance_factor),
            "seed": str(cfg.seed),
            "plugins": ",".join(run.selected)}


def run_params(run: Run) -> dict[str, Any]:
    params = dict(run.settings.flat())
    params["plugins"] = ",".join(run.selected)
    for name in run.selected:
        info = run.plugins.info[name]
        params[f"plugin.{name}.version"] = f"{info.distribution} {info.version}"
    params["ltcore.version"] = __version__
    world = run.world
    params["distributed.world_size"] = world.size
    params["distributed.backend"] = world.backend or "none"
    shares = world.shares(run.config.batch_size)
    params["distributed.per_rank_batch_size"] = (
        str(shares[0]) if len(set(shares)) == 1 else f"{min(shares)}-{max(shares)}")
    return params


@attrs.define
class Result:
    """What a finished run reports: its MLflow id, final metrics and folders."""

    run_id: str
    metrics: dict[str, float]
    run_dir: Path
    warnings: list[str]


Echo = Callable[[str], None]


def train(plugins: Plugins, selected: list[str], settings: Settings, progress: bool = True,
          echo: Echo | None = None) -> Result:
    """Train a new run and record it; returns the final metrics and where things are.

    The run folder gets ``config.toml`` first and a checkpoint before the first epoch, so the
    run can be resumed whenever it stops; ``echo`` is told the run's id and how to resume it
    before training starts.
    """
    selected = plugins.select(selected or DEFAULT_PLUGINS)
    world = join_world(settings)
    # check the tracking store before building the data: an unreachable server fails in seconds
    tracker = new_tracker(settings, world)
    mark("store opened")
    run = prepare(plugins, selected, settings, world)
    mark("run prepared")
    if world.is_main:
        run.run_id = tracker.start(run.run_name, run_tags(run))
        tracker.set_tags(run.run_id, {"mlflow.runName": run.run_name})  # now with the id
    run.run_id = world.broadcast_object(run.run_id)
    run_dir = Path(run.config.output) / run.run_name
    with hold_run(run_dir, run.run_id) if world.is_main else nullcontext():
        if world.is_main:
            write_text(run_dir / RUN_ID, run.run_id + "\n")
            write_text(run_dir / CONFIG, settings.to_toml(plugins.references(selected)))
        mark("run recorded")
        return _start(run, tracker, run_dir, progress, echo, "started")


def _start(run: Run, tracker: Tracker, run_dir: Path, progress: bool, echo: Echo | None,
           how: str, resumed: bool = False) -> Result:
    """The first checkpoint, the run's params and configuration, then training."""
    trainer = Trainer(run, tracker, run_dir, progress, echo)
    trainer.resumed = resumed
    trainer.save(0, 0, None)
    tracker.log_params(run.run_id, run_params(run))
    tracker.log_input(run.run_id, dataset_input(run))
    tracker.log_artifact(run.run_id, str(run_dir / CONFIG))
    if run.world.is_main:
        for copy in copy_plugin_sources(run.plugins, run_dir / PLUGIN_COPIES):
            tracker.log_artifact(run.run_id, str(copy), PLUGIN_COPIES)
    return _finish(trainer, echo, how)


PLUGIN_COPIES = "plugins"
"""The folder of a run (and of its MLflow artifacts) that keeps a copy of each plugin module
loaded from a file (``--plugin ./method.py``), as it was when the run began."""


def copy_plugin_sources(plugins: Plugins, folder: Path) -> list[Path]:
    """Copy the files of the plugins loaded from modules into ``folder``; their paths."""
    copies = []
    for source in plugins.sources.values():
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / Path(source.file).name
        write_text(copy, Path(source.file).read_text(encoding="utf-8"))
        copies.append(copy)
    return copies


def resume(plugins: Plugins, reference: str, output: str = "runs", progress: bool = True,
           echo: Echo | None = None, epochs: int | None = None,
           start_from: str | None = None) -> Result:
    """Continue a run (its id, name or ``last``) from its last checkpoint, in the same MLflow
    runs; ``start_from`` ``previous`` continues from the checkpoint before, ``start`` starts it
    over. A run stopped before its first checkpoint starts over from its ``config.toml``.
    ``epochs`` sets the main stage's epochs anew (a finished run is extended; the schedule is
    recomputed). A finished run resumed without ``epochs`` raises :class:`RunFinished`; a run
    another process trains raises :class:`RunBusy`."""
    folder, run_id = find_run_folder(output, reference)
    command = resume_command(run_id, output, int(os.environ.get("WORLD_SIZE", "1")))
    with hold_run(folder, run_id) if os.environ.get("RANK", "0") == "0" else nullcontext():
        path = folder / checkpoints.CHECKPOINT
        if not path.exists() and start_from is None or start_from == "start":
            if (folder / CONFIG).is_file():
                if epochs is not None:
                    raise ConfigError(f"run {run_id} starts over (it stopped before its first "
                                      "checkpoint, or --from start): start it again with the "
                                      "epochs it should have")
                checkpoint_to_resume(folder, run_id, command, start_from, True)
                return _start_over(plugins, run_id, folder, progress, echo)
            raise DataError(f"no checkpoint for run {run_id!r} at {str(path)!r}; "
                            + (close_unstarted(run_id, folder) if folder.is_dir() else
                               "give the run's --output directory if it was not 'runs'"))
        checkpoint = checkpoint_to_resume(folder, run_id, command, start_from,
                                          (folder / CONFIG).is_file())
        for note in plugins.load_recorded(checkpoint.get("plugin_sources"), folder / PLUGIN_COPIES):
            if echo is not None:
                echo(f"warning: {note}")
        recorded = checkpoint["settings"]["epochs"]
        if epochs is not None and epochs != recorded:
            checkpoint["settings"] = {**checkpoint["settings"], "epochs": epochs}
        elif finished(checkpoint, folder, run_id):
            raise RunFinished(f"run {run_id} finished earlier ({folder.name}): it trained its "
                              f"{recorded} epochs and its files are in {folder}; to train it "
                              f"longer: ltrun --resume {run_id} --epochs N")
        selected = plugins.select(checkpoint["plugins"])
        settings = resolve(plugins, selected, overrides=flatten(checkpoint["settings"]))
        world = join_world(settings)
        if world.is_main:
            remove_stale(folder)
        run = prepare(plugins, selected, settings, world, restoring=True)
        run.run_id = run_id
        tracker = new_tracker(run.settings, world)
        trainer = Trainer(run, tracker, folder, progress, echo)
        trainer.restore(checkpoint)
        how = f"resumed from the checkpoint {trainer.saved}"
        if epochs is not None and epochs != recorded:
            how += "; " + extend(trainer, recorded)
            if world.is_main:
                write_text(folder / CONFIG, run.settings.to_toml(plugins.references(selected)))
        tracker.reopen(run_id)
        return _finish(trainer, echo, how)


def _start_over(plugins: Plugins, run_id: str, folder: Path, progress: bool,
                echo: Echo | None) -> Result:
    """Train a run that stopped before its first checkpoint from the start, in its MLflow run."""
    config = folder / CONFIG
    selected = plugins.select(plugins_in_file(config))
    settings = resolve(plugins, selected, config_file=str(config))
    world = join_world(settings)
    if world.is_main:
        remove_stale(folder)
    run = prepare(plugins, selected, settings, world)
    run.run_id = run_id
    tracker = new_tracker(run.settings, world)
    tracker.reopen(run_id)
    return _start(run, tracker, folder, progress, echo,
                  "started over (it had stopped before its first checkpoint)", resumed=True)


RANK_ERROR = "error-rank{rank}.txt"
"""Where a rank other than 0 of a distributed run leaves the error that ended it."""


def rank_failure_message(trainer: Trainer, exc: BaseException) -> str:
    """What ended a distributed run, in words: the errors the other ranks left (rank 0 waits a
    few seconds for them), else this rank's own."""
    import time

    world = trainer.run.world
    own = f"{type(exc).__name__}: {exc}".strip()
    if not world.is_main:
        return f"rank {world.rank} of {world.size} failed: {own}"
    files = [trainer.run_dir / RANK_ERROR.format(rank=r) for r in range(1, world.size)]
    deadline = time.monotonic() + 5.0
    while not any(f.is_file() for f in files) and time.monotonic() < deadline:
        time.sleep(0.1)
    reports = [f.read_text().strip() for f in files if f.is_file()]
    if reports:
        return "; ".join(reports) + " (rank 0 then stopped: " + own[:500] + ")"
    return (f"rank 0 of {world.size} failed: {own}; if it waited for another rank, that rank "
            "crashed or hung (torchrun's report, printed after this, names the one that failed)")


def _record_failure(trainer: Trainer, exc: BaseException) -> None:
    """Mark the run's MLflow runs KILLED (stopped) or FAILED with the reason; a rank other
    than 0 leaves its error in the run folder for rank 0 to record."""
    run, tracker, parent = trainer.run, trainer.tracker, trainer.run.run_id
    world = run.world
    if not world.is_main:
        if not isinstance(exc, (KeyboardInterrupt, RunStopped)):
            try:
                write_text(trainer.run_dir / RANK_ERROR.format(rank=world.rank),
                           rank_failure_message(trainer, exc) + "\n")
            except OSError:
                pass
        return
    status = "KILLED" if isinstance(exc, (KeyboardInterrupt, RunStopped)) else "FAILED"
    if isinstance(exc, RunStopped):
        tracker.set_tags(parent, {"ltcore.stopped": f"{exc.signal_name} in {exc.where}"})
    elif isinstance(exc, KeyboardInterrupt):
        tracker.set_tags(parent, {"ltcore.stopped": f"{trainer.stop.received or 'SIGINT'} twice: "
                                                    "stopped at once"})
    elif isinstance(exc, LtcoreError):
        tracker.set_tags(parent, {"ltcore.error": f"{type(exc).__name__}: {exc}"[:5000]})
    elif world.distributed:
        tracker.set_tags(parent, {"ltcore.error": rank_failure_message(trainer, exc)[:5000]})
    for run_id in trainer.stage_runs.values():
        tracker.end(run_id, status)
    if (trainer.run_dir / LOG).exists():  # what the console showed up to the failure
        tracker.log_artifact(parent, str(trainer.run_dir / LOG))
    tracker.flush()
    tracker.end(parent, status)


def _finish(trainer: Trainer, echo: Echo | None, how: str) -> Result:
    run, tracker, parent = trainer.run, trainer.tracker, trainer.run.run_id
    with trainer.stop:  # from the first line, and while a failure is recorded
        try:
            trainer.say(f"run {parent} {how}; continue an interrupted run with: "
                        f"{trainer.resume_command()}")
            for line in trainer.console.plan(trainer.run_dir, run.tracking_uri):
                trainer.say(line)
            metrics = trainer.train()
            trainer.settle()
        except BaseException as exc:
            trainer.stop.finishing = True  # a signal now waits for the record
            try:
                trainer.settle()  # the checkpoint being written is on disk before the record
            except Exception:  # noqa: BLE001 - exc is the failure to record
                pass
            try:
                run.hooks.run_failed(run=run, error=exc)
            finally:
                _record_failure(trainer, exc)
            if isinstance(exc, KeyboardInterrupt) and trainer.stop.received:
                name = trainer.stop.received
                raise RunStopped(f"stopped at once by a second {name}; the last checkpoint "
                                 f"({trainer.saved}) is kept. Continue with: "
                                 f"{trainer.resume_command()}", signal_name=name,
                                 where="a step (stopped at once)") from None
            if run.world.distributed and not isinstance(exc, (LtcoreError, KeyboardInterrupt)):
                raise RankFailure(rank_failure_message(trainer, exc)) from exc
            raise
    final_model = trainer.run_dir / checkpoints.MODEL
    warnings = []
    if run.world.is_main:
        state = checkpoints.model_state(run)
        checkpoints.write(final_model, state)
    tracker.log_artifact(parent, str(final_model), "checkpoints")
    if run.world.is_main and run.config.tracking.log_model and run.task.standalone:
        from ..tracking.model import log_final_model

        try:
            trainer.say(log_final_model(run, tracker, trainer.run_dir, state))
        except Exception as exc:  # noqa: BLE001 - the trained run stands without it
            warnings.append(f"no MLflow Model logged: {type(exc).__name__}: {exc}"[:1000])
    best_model = trainer.run_dir / checkpoints.BEST_MODEL
    if trainer.write_best_model(best_model):
        tracker.log_artifact(parent, str(best_model), "checkpoints")
    tracker.log_metrics(parent, dict(metrics), step=len(trainer.history))
    trainer.say(f"run {parent} finished ({run.run_name}); files in {trainer.run_dir}")
    for line in final_lines(metrics):
        trainer.say(line)
    tracker.log_artifact(parent, str(trainer.run_dir / LOG))
    tracker.end(parent)  # sends what is still queued first
    if tracker.summary():
        trainer.save(len(run.stages), 0, None)  # the unsent records, for ltrun --resume
        trainer.settle()
        warnings.append(f"{tracker.summary()}; the checkpoint and files are in {trainer.run_dir}; "
                        f"once the tracking store answers again, ltrun --resume {parent} sends "
                        "what was not logged")
    return Result(parent, metrics, trainer.run_dir, warnings)


# -- saved models -------------------------------------------------------------------------


def load_saved_run(plugins: Plugins, path: str, overrides: dict | None = None,
                   assignments: Sequence[str] = (), echo: Echo | None = None) -> Run:
    """The run saved in ``path`` (``model.pt`` or ``checkpoint.pt``) rebuilt from its settings
    and plugins, with its modules and plugin-object state loaded (so LWS's scales or tau-norm's
    choice apply again). ``assignments`` (``KEY=VALUE``), then ``overrides``, change the saved
    settings, e.g. another dataset or ``eval.posthoc_la_tau``. Plugins the run loaded from
    files are loaded again (``echo`` is told when one changed since)."""
    saved = checkpoints.read(path)
    for note in plugins.load_recorded(saved.get("plugin_sources"),
                                      Path(path).parent / PLUGIN_COPIES):
        if echo is not None:
            echo(f"warning: {note}")
    values = flatten(saved["settings"])
    values.update(dict(parse_assignment(a) for a in assignments))
    values.update(overrides or {})
    selected = plugins.select(saved["plugins"])
    run = prepare(plugins, selected, resolve(plugins, selected, overrides=values),
                  restoring=True)
    saved_classes = saved["modules"]["model.classifier.weight"].shape[0]
    if saved_classes != run.dataset.num_classes:
        raise DataError(f"the model has {saved_classes} classes but dataset "
                        f"{run.dataset.name!r} has {run.dataset.num_classes}")
    checkpoints.restore_run_state(run, saved)
    return run


def evaluate_checkpoint(plugins: Plugins, path: str, overrides: dict | None = None,
                        assignments: Sequence[str] = (), echo: Echo | None = None):
    """The final evaluation of the saved model (its last stage's) on the evaluation splits:
    an :class:`~ltcore.Evaluation`, whose ``figures()`` ``ltrun evaluate`` prints."""
    run = load_saved_run(plugins, path, overrides, assignments, echo)
    return run.evaluate(run.stages[-1].model, final=True)


def evaluate_checkpoint_shifted(plugins: Plugins, path: str, overrides: dict | None = None,
                                assignments: Sequence[str] = (), ratios=None, seed: int = 0,
                                draws: int = 1, echo: Echo | None = None) -> dict:
    """Figures of the saved model on long-tailed resamplings of the balanced test split."""
    from ..shift import DEFAULT_RATIOS, evaluate_shifted

    run = load_saved_run(plugins, path, overrides, assignments, echo)
    result = evaluate_shifted(run, run.stages[-1].model, ratios or DEFAULT_RATIOS, seed, draws)
    result["checkpoint"] = str(path)
    return result
