"""The test kit of ltcore and its plugins: a pytest plugin, registered by installing ltcore.

Fixtures (any test may request them; none is applied unasked, so installing ltcore changes no
other project's tests):

- ``isolated``: the test runs in its own working directory with its own MLflow store, dataset
  cache and one torch thread. Every fixture below uses it; a plugin's ``conftest.py`` applies
  it to every test with ``@pytest.fixture(autouse=True) def _isolated(isolated): ...``.
- ``ltrun``: the CLI in-process, returning exit code, stdout and stderr.
- ``ltcore_plugins``: a plugin manager holding the built-in plugins and only the installed
  plugins named (plus test plugin objects).
- ``tiny_data``: the embedded long-tailed digits dataset.
- ``make_run`` / ``make_step``: an assembled, untrained run of the given plugins on the
  tiny data, and a training step of it with real images through the stage's views.
- ``one_epoch_run``: one epoch of ``ltrun --plugin ...`` and what it recorded.

Contract checks a plugin's tests call: :func:`check_loss_matches_reference`,
:func:`check_loss_finite_on_label_edge_cases`, :func:`check_composes_with_rcl` and
:func:`check_state_round_trip`. ``FAST`` are the options that keep a training test to seconds
on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ltcore import hookimpl

SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpeg"
"""The real CIFAR-10 JPEG tree shipped beside the repository, when present."""

FAST = ["--set", "model.backbone=resnet8", "--set", "views.workers=0", "--batch-size", "64",
        "--no-progress", "--set", "tracking.log_model=false"]
"""CLI options that keep a training test to seconds on two CPU cores; no MLflow Model is logged
(its export costs 0.5 to 1 s a run, 2 s the first in a process)."""

FAST_SETTINGS = ["model.backbone=resnet8", "views.workers=0", "batch_size=64",
                 "tracking.log_model=false"]
"""The same as ``--set`` assignments, for :func:`ltcore.config.resolve`."""


@pytest.fixture(scope="session")
def one_torch_thread():
    """One intra-op thread per test process: tests run one process per core (``pytest -n``),
    and oversubscribed threads make small models many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory):
    """An MLflow sqlite store with its schema created, copied into each test's directory
    (creating the schema takes seconds; copying the file takes milliseconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch, mlflow_store_template, one_torch_thread):
    """Run the test in ``tmp_path`` with a private MLflow store and dataset cache, and one torch
    thread."""
    import shutil

    shutil.copyfile(mlflow_store_template, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LTCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LTCORE_DISABLE_PLUGINS", "")  # restored after the test, whoever set it
    return tmp_path


class CliResult:
    """Exit code and captured output of one ``ltrun`` call."""

    def __init__(self, exit_code: int, output: str, stderr: str):
        self.exit_code, self.output, self.stderr = exit_code, output, stderr


def invoke_ltrun(*args: str) -> int:
    """Run ``ltrun args`` in this process; its exit code."""
    from ..cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture
def ltrun(capsys, isolated):
    """Call the ``ltrun`` entry point in-process: ``ltrun("--plugin", "la", ...)``."""

    def call(*args: str) -> CliResult:
        code = invoke_ltrun(*args)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


def tiny_dataset(imbalance_factor: float = 10.0):
    """The embedded long-tailed digits (``digits-lt``): real images, ten classes, in memory."""
    from ..data import digits_lt

    return digits_lt(imbalance_factor)


@pytest.fixture
def tiny_data(isolated):
    """:func:`tiny_dataset` with its default imbalance factor 10."""
    return tiny_dataset()


def plugins_holding(*names: str, extra: dict[str, object] | None = None):
    """A :class:`~ltcore.Plugins` with the built-in plugins, the installed plugins ``names``
    (the others switched off) and the test plugin objects ``extra``."""
    from importlib import metadata

    from ..plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, Plugins

    installed = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    missing = sorted(set(names) - installed - set(extra or {}) - set(BUILTIN_PLUGINS))
    if missing:
        pytest.skip(f"plugin {', '.join(missing)} is not installed")
    return Plugins(extra=extra, disable=tuple(sorted(installed - set(names))))


@pytest.fixture
def ltcore_plugins(isolated):
    """``ltcore_plugins("demo", "rcl", extra={"probe": obj})``: :func:`plugins_holding`."""
    return plugins_holding


def assemble_run(selected: list[str], *assignments: str, epochs: int = 1, plugins=None):
    """The run ``selected`` assemble on the tiny data with :data:`FAST_SETTINGS` on the CPU,
    untrained (:func:`ltcore.prepare`); ``assignments`` are ``--set`` strings."""
    from ..config import resolve
    from ..engine.runs import prepare

    plugins = plugins or plugins_holding(*selected)
    settings = resolve(plugins, list(selected), assignments=[*FAST_SETTINGS, "device=cpu",
                                                             *assignments],
                       overrides={"epochs": epochs})
    return prepare(plugins, list(selected), settings)


@pytest.fixture
def make_run(isolated):
    """``make_run(["demo", "rcl"], "demo.weight=0.5", epochs=1, plugins=None)``: an assembled,
    untrained run (:func:`assemble_run`)."""
    return assemble_run


def training_step(run, stage=None, batch_size: int = 16, epoch: int = 0):
    """The first step of ``epoch`` of ``stage`` (the main stage by default) as the engine makes
    it: indices from the stage's sampler, images through its views. Pass it to :func:`forward`
    for the losses."""
    import torch

    from ..engine.backends import stage_views
    from ..run import Step

    stage = stage or run.main_stage
    sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
    sources = tuple(getattr(sampler, "sources", ("sample",)))
    seed = run.epoch_seed(stage, epoch)
    order = sampler.epoch_indices(epoch, torch.Generator().manual_seed(seed))
    if order.dim() == 1:
        order = order.unsqueeze(1)
    views = stage_views(run, stage, sources)
    batch = next(iter(views.epoch(order[:batch_size], sources, batch_size, seed, 0, None)))
    return Step(run, stage, epoch, 0, batch.indices, batch.labels, batch.images)


@pytest.fixture
def make_step(isolated):
    """``make_step(run, stage=None, batch_size=16, epoch=0)``: :func:`training_step`."""
    return training_step


class EpochRun:
    """What :func:`run_one_epoch` ran: the run's id, its folder, the parent run's final metrics
    and the CLI's output."""

    def __init__(self, run_id: str, folder: Path, metrics: dict[str, float], output: str):
        self.run_id, self.folder, self.metrics, self.output = run_id, folder, metrics, output


def run_one_epoch(ltrun, *args: str) -> EpochRun:
    """``ltrun --epochs 1`` with :data:`FAST`, then ``args`` (which win over it); asserts that
    it finished."""
    import re

    result = ltrun(*FAST, "--epochs", "1", *args)
    assert result.exit_code == 0, result.stderr
    run_id = re.search(r"run (\S+) finished", result.output).group(1)
    metrics = mlflow_client().get_run(run_id).data.metrics
    return EpochRun(run_id, run_folder("runs", run_id), dict(metrics), result.output)


@pytest.fixture
def one_epoch_run(ltrun):
    """``one_epoch_run("--plugin", "demo", "--set", "demo.weight=0.5")``: :func:`run_one_epoch`."""
    return lambda *args: run_one_epoch(ltrun, *args)


def forward(run, step) -> list:
    """What the engine computes for one training step before the backward: the stacked forward
    of the step's views, the run-time hooks, then every loss term of the stage (unweighted)."""
    from ..engine.step import forward as engine_forward

    return engine_forward(run, step)


def parameter_groups(run, stage) -> list[dict]:
    """The parameter groups the optimiser of ``stage`` will hold (after the plugins' hooks)."""
    from ..engine.schedule import parameter_groups as groups

    return groups(run, stage)


def mlflow_client(uri: str | None = None):
    """An MLflow client on the test's store (``mlflow.db`` in the working directory)."""
    import os

    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri or f"sqlite:///{os.path.abspath('mlflow.db')}")


def recorded_runs(client=None, experiment: str = "ltcore", nested: bool | None = None):
    """Runs of ``experiment``: parents (nested=False), stage runs (True) or all (None)."""
    client = client or mlflow_client()
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    if nested is None:
        return runs
    return [r for r in runs if ("mlflow.parentRunId" in r.data.tags) == nested]


def requires_shared_cifar():
    """Skip marker for tests that need the shared CIFAR-10 JPEG images."""
    return pytest.mark.skipif(not (SHARED_CIFAR / "train").is_dir(),
                              reason=f"shared CIFAR-10 images not found at {SHARED_CIFAR}")


# -- numbers recorded from earlier runs -----------------------------------------------------

RECORD_ENV = "LTCORE_RECORD_NUMBERS"
"""With ``LTCORE_RECORD_NUMBERS=1``, :func:`check_recorded` writes the numbers instead of
comparing them (to record a new reference after a change that is meant to alter them)."""

TIMINGS = ("train/epoch_time", "train/samples_per_s")
"""Metrics that measure time and differ between identical runs."""


def run_numbers(client, run_id: str) -> dict:
    """Every number an ``ltrun`` run recorded in MLflow, timings left out: the parent run's
    final metrics and each stage run's per-epoch history of every metric."""
    parent = client.get_run(run_id)
    numbers = {"final": dict(sorted(parent.data.metrics.items())), "stages": {}}
    experiment = parent.info.experiment_id
    stages = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")
    for stage in stages:
        name = stage.data.tags.get("ltcore.stage", stage.info.run_name)
        histories = {}
        for key in sorted(stage.data.metrics):
            if key in TIMINGS:
                continue
            histories[key] = [[m.step, m.value] for m in sorted(
                client.get_metric_history(stage.info.run_id, key), key=lambda m: m.step)]
        numbers["stages"][name] = histories
    return numbers


def repeated_points(client, run_id: str) -> dict[str, list[int]]:
    """The metric points recorded more than once for one (run, name, step) in run ``run_id``
    and its stage runs, timings included: ``"<stage or 'run'>/<name>"`` -> the repeated steps
    (empty when every point was written once)."""
    parent = client.get_run(run_id)
    stages = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{run_id}'")
    repeated = {}
    for run in [parent, *stages]:
        where = run.data.tags.get("ltcore.stage", "run")
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            twice = sorted({s for s in steps if steps.count(s) > 1})
            if twice:
                repeated[f"{where}/{key}"] = twice
    return repeated


def run_folder(output, run_id: str) -> Path:
    """The folder of run ``run_id`` under the ``output`` folder (runs are in folders named
    after them, ``bcl-digits-lt-s0-1a2b3c4d``)."""
    from ..engine.runs import find_run_folder

    return find_run_folder(output, run_id)[0]


def environment_fingerprint() -> dict:
    """What bit-identical numbers depend on besides the code: the torch build and the CPU
    kernels it dispatches to, down to the instruction-set extensions oneDNN picks its
    convolution kernels by (two AVX512 CPUs with and without AMX round differently)."""
    import torch

    features = sorted(name[len("_is_"):-len("_supported")] for name in dir(torch.cpu)
                      if name.startswith("_is_") and name.endswith("_supported")
                      and getattr(torch.cpu, name)())
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_features": features}


def check_recorded(path: Path, name: str, numbers: dict) -> None:
    """Assert that ``numbers`` equal, bit for bit, the numbers recorded under ``name`` in the
    JSON file ``path``; record them there instead when ``LTCORE_RECORD_NUMBERS=1``.

    Bit-identical results are only defined for the same torch build on the same kind of CPU;
    on another, the test is skipped naming both.
    """
    import json
    import os

    if os.environ.get(RECORD_ENV) == "1":
        import fcntl

        with open(path.with_suffix(".lock"), "w") as lock:  # pytest -n: one writer at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            recorded = json.loads(path.read_text()) if path.exists() else {}
            recorded["environment"] = environment_fingerprint()
            recorded.setdefault("numbers", {})[name] = numbers
            path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    recorded = json.loads(path.read_text()) if path.exists() else {}
    if name not in recorded.get("numbers", {}):
        raise AssertionError(f"no numbers recorded under {name!r} in {path}; record them with "
                             f"{RECORD_ENV}=1")
    here = environment_fingerprint()
    if recorded["environment"] != here:
        pytest.skip(f"numbers in {path.name} were recorded with {recorded['environment']}; this "
                    f"is {here}, where bit-identical results are not defined")
    assert numbers == recorded["numbers"][name]


EVALUATIONS = {
    "plain": [],
    "posthoc-la": ["--set", "eval.posthoc_la_tau=1"],
    "shifted": ["--test-shift"],
}


def train_and_evaluate(ltrun, args) -> dict:
    """Train with ``args``; the run's numbers and what ``ltrun evaluate --json`` prints for its
    saved model, plainly, with post-hoc logit adjustment and on shifted test sets."""
    import json
    import re

    result = ltrun(*args, *FAST)
    assert result.exit_code == 0, result.stderr
    run_id = re.search(r"run (\S+) finished", result.output).group(1)
    numbers = run_numbers(mlflow_client(), run_id)
    model = str(run_folder("runs", run_id) / "model.pt")
    for name, extra in EVALUATIONS.items():
        evaluated = ltrun("evaluate", "--checkpoint", model, "--json", *extra)
        assert evaluated.exit_code == 0, evaluated.stderr
        figures = json.loads(evaluated.output)
        figures.pop("checkpoint", None)
        figures.pop("per_class", None)  # the recorded figures predate the per-class table
        numbers[f"evaluate/{name}"] = figures
    return numbers


def recorded_scenarios(path: Path, scenarios: dict[str, list[str]], slow=()):
    """A test (assign it to a ``test_...`` name) that trains each scenario's ``ltrun`` arguments,
    evaluates the saved model (:func:`train_and_evaluate`) and compares every number with those
    recorded in ``path`` (:func:`check_recorded`). Scenarios in ``slow`` run with ``-m slow``."""
    names = [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in scenarios]

    @pytest.mark.parametrize("name", names)
    def test(ltrun, name):
        check_recorded(path, name, train_and_evaluate(ltrun, scenarios[name]))
    return test


def label_batches(max_classes: int = 6, max_size: int = 12):
    """A hypothesis strategy of ``(labels, number of classes)`` for property tests of losses:
    random batch sizes, single-class batches and classes absent from the batch."""
    from hypothesis import strategies as st

    return st.integers(1, max_classes).flatmap(lambda classes: st.tuples(
        st.lists(st.integers(0, classes - 1), min_size=1, max_size=max_size), st.just(classes)))


def assert_finite_with_gradients(loss, *inputs) -> None:
    """Asserts that ``loss`` is finite, back-propagates it and asserts that every input got
    a finite gradient."""
    import torch

    assert torch.isfinite(loss).all(), loss
    loss.backward()
    for tensor in inputs:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), tensor.grad


class SignalAtStep:
    """A test plugin that sends ``signal`` (SIGTERM by default) to its own process once, after
    step ``iteration`` of stage ``stage`` (counted from 0 over the stage's epochs): the run stops
    there with a mid-epoch checkpoint, as one stopped by a scheduler does. Register it with
    ``Plugins(extra={"signal": SignalAtStep(...)})`` and select it by that name."""

    def __init__(self, stage: str, iteration: int, signal: int | None = None):
        import signal as signals

        self.at = (stage, iteration)
        self.signal = signals.SIGTERM if signal is None else signal
        self.sent = False

    @hookimpl
    def step_end(self, step) -> None:
        import os

        if not self.sent and (step.stage.name, step.iteration) == self.at:
            self.sent = True
            os.kill(os.getpid(), self.signal)


BENCHMARK_TREES = {
    "imagenet-lt": ("train", "val", "test"),
    "places-lt": ("train", "val", "test"),
    "inaturalist2018": ("train", "test"),
}
"""The splits of each split-list benchmark that :func:`make_benchmark_tree` writes."""


def make_benchmark_tree(root: Path, benchmark: str = "imagenet-lt", train_counts=(12, 7, 4, 2),
                        per_class_eval: int = 2, seed: int = 0) -> Path:
    """A small tree in the layout of ``benchmark`` (``imagenet-lt``, ``places-lt``,
    ``inaturalist2018``): its standard split list files (``relative/path label`` per line) and
    ordinary JPEGs of varied, non-square sizes (64 to 420 px a side, some under 224 px), one
    colour pattern per class so that a model can learn them. ``train_counts`` are the long-tailed
    training images per class, each evaluation split has ``per_class_eval`` per class. Returns
    ``root``, to pass as ``--data-dir``."""
    import random

    from PIL import Image

    from ..data import SPLIT_LISTS

    rng = random.Random(seed)
    files = dict(zip(("train", "val", "test"), SPLIT_LISTS[benchmark]))
    root.mkdir(parents=True, exist_ok=True)
    for split in BENCHMARK_TREES[benchmark]:
        counts = train_counts if split == "train" else [per_class_eval] * len(train_counts)
        lines = []
        for label, count in enumerate(counts):
            folder = root / split / f"c{label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                width, height = rng.randint(64, 420), rng.randint(64, 420)
                if width == height:
                    width += 1
                hue = (label * 67) % 256
                base = Image.new("HSV", (width, height), (hue, 200, 60 + 40 * (i % 4)))
                noise = Image.effect_noise((width, height), 40).convert("RGB")
                image = Image.blend(base.convert("RGB"), noise, 0.3)
                name = f"{split}_{label}_{i}.jpg"
                image.save(folder / name, quality=85)
                lines.append(f"{split}/c{label:04d}/{name} {label}")
        (root / files[split]).write_text("\n".join(lines) + "\n")
    return root


LARGE_SCALE_FAST = ["--epochs", "1", "--batch-size", "8", "--no-progress",
                    "--set", "model.backbone=resnet8", "--set", "views.image_size=48",
                    "--set", "views.workers=0", "--set", "eval.batch_size=16",
                    "--set", "model.projection_hidden=32", "--set", "model.projection_dim=16",
                    "--set", "tracking.log_model=false"]
"""Overrides that shrink a large-scale preset to seconds on two CPU cores: a ResNet-8, 48 px
views, batch 8, small projection heads, one epoch of the main stage, no MLflow Model."""


def train_on_tree(ltrun, tree: Path, *args: str) -> dict:
    """Train ``ltrun args`` on a :func:`make_benchmark_tree` folder with
    :data:`LARGE_SCALE_FAST`, then ``ltrun evaluate`` its saved model; check that every stage
    finished and that both report the evaluation splits' figures. Returns the figures of the
    evaluation."""
    import json
    import math
    import re

    result = ltrun(*args, "--data-dir", str(tree), *LARGE_SCALE_FAST)
    assert result.exit_code == 0, result.stderr
    run_id = re.search(r"run (\S+) finished", result.output).group(1)
    client = mlflow_client()
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    splits = ["val", "test"] if (tree / "ImageNet_LT_val.txt").exists() or \
        (tree / "Places_LT_val.txt").exists() else ["test"]
    for split in splits:
        assert math.isfinite(parent.data.metrics[f"{split}/acc"]), split
        assert f"{split}: acc" in result.output
    for stage in client.search_runs([parent.info.experiment_id],
                                    f"tags.`mlflow.parentRunId` = '{run_id}'"):
        assert stage.info.status == "FINISHED", stage.data.tags.get("ltcore.stage")
    evaluated = ltrun("evaluate", "--checkpoint", str(run_folder("runs", run_id) / "model.pt"),
                      "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    figures = json.loads(evaluated.output)
    for split in splits:
        assert figures[f"{split}/acc"] == parent.data.metrics[f"{split}/acc"]
    return figures



def table_runs(table) -> list[tuple]:
    """Each distinct run of a :class:`~ltcore.PaperTable`: ``(plugins, presets, settings,
    cells)``, ``cells`` the (row, column) labels that show it."""
    import json

    runs: dict[str, tuple] = {}
    for row in table.rows:
        for column in table.columns:
            selected, presets, settings = table.cell_setup(row, column)
            key = json.dumps([selected, presets, settings], sort_keys=True)
            runs.setdefault(key, (selected, presets, settings, []))[3].append(
                (row.label, column.label))
    return list(runs.values())


def resolve_cell(plugins, selected, presets, settings):
    """A table cell's configuration as ``ltrun`` resolves it (``Table.cell_setup``'s parts)."""
    import json

    from ..config import resolve

    assignments = [f"{key}={json.dumps(value)}" for key, value in settings.items()]
    return resolve(plugins, list(selected), list(presets), None, assignments)


def table_plans(plugins, ids, seeds=(0,)):
    """The plans of the tables ``ids`` as one ``ltrun reproduce`` sweep would train them: each
    plan's ``cells`` and ``positions`` ((row, column) -> the key of that cell's runs)."""
    from ..experiments.reproduce import plan_tables

    return plan_tables([(table_id, plugins.tables[table_id]) for table_id in ids], list(seeds))


def smoke_tables(ltrun, selection: str) -> str:
    """``ltrun reproduce SELECTION --smoke`` (a plugin's name: all its runnable tables), checked:
    every cell finished and every selected table was laid out. Returns the output."""
    from ..experiments.reproduce import select_tables
    from ..plugins import Plugins

    tables = [table_id for table_id, _ in select_tables(Plugins(), selection, echo=lambda _: None)]
    result = ltrun("reproduce", selection, "--smoke")
    assert result.exit_code == 0, result.stderr + result.output[-3000:]  # 1: a cell failed
    for table_id in tables:
        assert f"\n{table_id}: " in result.output, f"{table_id} was not laid out"
    return result.output


from .contracts import (  # noqa: E402, F401 - re-exported; the checks build on the helpers above
    LABEL_EDGE_CASES, check_composes_with_rcl, check_loss_finite_on_label_edge_cases,
    check_loss_matches_reference, check_state_round_trip,
)
