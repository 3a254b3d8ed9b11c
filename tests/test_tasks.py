"""Tasks: a plugin's task is trained through the engine's task points, its plugin required, the
plugins it adopts kept out of the run's hooks; plus the task-neutral pieces a second task uses
(per-step polynomial schedules, the compared figures, figures against a setting)."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from ltcore import PerClassTable, PluginError, Task, hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import prepare
from ltcore.testing import FAST_SETTINGS


class CountingTask(Task):
    """Classification under another name, counting the task points the engine calls."""

    name = "counting"
    adopts = ("la",)

    def __init__(self):
        self.calls = []

    def views(self, run, stage, sources):
        self.calls.append("views")
        return super().views(run, stage, sources)

    def forward(self, run, step, roles, x):
        self.calls.append("forward")
        super().forward(run, step, roles, x)

    def evaluate(self, run, model, splits, **options):
        self.calls.append("evaluate")
        return super().evaluate(run, model, splits, **options)

    def report(self, run, stage, evaluation, folder):
        self.calls.append("report")
        return super().report(run, stage, evaluation, folder)

    def epoch_figures(self, metrics):
        self.calls.append("epoch_figures")
        return super().epoch_figures(metrics)


class CountingPlugin:
    """Registers the task and a digits dataset of that task; sets nothing up itself."""

    def __init__(self):
        self.task = CountingTask()
        self.set_up = []

    @hookimpl
    def register_tasks(self, register):
        register("counting", self.task)

    @hookimpl
    def register_datasets(self, register):
        def digits(config):
            from ltcore.data import digits_lt

            dataset = digits_lt(10)
            dataset.task = "counting"
            return dataset
        register("counting-digits", digits)

    @hookimpl
    def setup_run(self, run):
        self.set_up.append(run.selected)


def assemble(plugins, selected, *assignments):
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, "device=cpu",
                                                       "dataset=counting-digits", *assignments])
    return prepare(plugins, selected, settings)


def test_a_plugins_task_needs_the_plugin_and_refuses_plugins_it_does_not_adopt(ltcore_plugins):
    plugin = CountingPlugin()
    plugins = ltcore_plugins(extra={"counting": plugin})
    with pytest.raises(PluginError, match="counting dataset: select --plugin counting"):
        assemble(plugins, ["ce"])
    with pytest.raises(PluginError, match=r"plugin\(s\) balanced-softmax train image "
                                          r"classification.*--plugin counting \(with --plugin la"):
        assemble(plugins, ["counting", "balanced-softmax"])
    run = assemble(plugins, ["counting", "la"], "la.tau=0.5")
    # the adopted plugin's options apply, its hooks stay out: its loss is not set up
    assert run.task is plugin.task and plugin.set_up == [["counting", "la"]]
    assert run.option("la").tau == 0.5
    assert [t.name for t in run.main_stage.losses] == ["ce"]


def test_the_engine_goes_through_the_tasks_points(ltcore_plugins, ltrun):
    plugin = CountingPlugin()
    plugins = ltcore_plugins(extra={"counting": plugin})
    from ltcore.engine.runs import train

    settings = resolve(plugins, ["counting"], assignments=[
        *FAST_SETTINGS, "device=cpu", "dataset=counting-digits", "limit.steps=2",
        "limit.plots=false"], overrides={"epochs": 1})
    result = train(plugins, ["counting"], settings, progress=False)
    assert {"views", "forward", "evaluate", "report", "epoch_figures"} <= set(plugin.task.calls)
    assert result.metrics["test/acc"] >= 0
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["ltcore.task"] == "counting"


def test_polynomial_schedule_per_step_follows_its_formula():
    from ltcore.engine.schedule import learning_rate

    schedule = SimpleNamespace(kind="polynomial", warmup_epochs=0, min_lr=1e-4, power=0.9)
    stage = SimpleNamespace(optim=SimpleNamespace(lr=0.01), schedule=schedule, epochs=10)
    for epoch in (0.0, 0.25, 3.5, 9.999, 10.0):
        want = (0.01 - 1e-4) * (1 - epoch / 10) ** 0.9 + 1e-4
        assert learning_rate(stage, epoch) == pytest.approx(want)


def test_per_step_learning_rates_reach_the_optimiser(one_epoch_run, monkeypatch):
    from ltcore import ConfigError
    from ltcore.engine import trainer

    rates = []
    set_rate = trainer.set_learning_rate
    monkeypatch.setattr(trainer, "set_learning_rate",
                        lambda optimizer, lr: (rates.append(lr), set_rate(optimizer, lr)))
    one_epoch_run("--plugin", "ce", "--epochs", "2", "--set", "schedule.kind=polynomial",
                  "--set", "schedule.per_step=true", "--set", "schedule.min_lr=0.001",
                  "--set", "optim.lr=0.1", "--set", "limit.steps=4")
    # per epoch: the epoch's rate, then one per step at the epoch's fraction done
    fractions = [0, 0, 0.25, 0.5, 0.75, 1, 1, 1.25, 1.5, 1.75]
    assert rates == pytest.approx([(0.1 - 0.001) * (1 - f / 2) ** 0.9 + 0.001
                                   for f in fractions])
    with pytest.raises(ConfigError, match="per_step sets ltcore's schedules"):
        from ltcore.engine.timm_factories import check_schedule

        check_schedule(SimpleNamespace(kind="tanh", per_step=True, milestones=(), gamma=0.1))


def test_compare_shows_the_figures_runs_record_when_they_have_no_accuracy():
    from ltcore.experiments.compare import METRICS, recorded_figures

    def run(**metrics):
        return SimpleNamespace(data=SimpleNamespace(metrics=metrics))

    seg = run(**{"test/mIoU": 1, "test/mAcc": 2, "test/aAcc": 3, "test/rare_mIoU": 4,
                 "val/mIoU": 5, "best/test/mIoU": 6})
    assert recorded_figures([seg], ["test"]) == ["aAcc", "mAcc", "mIoU", "rare_mIoU"]
    assert recorded_figures([run(**{"test/acc": 1}), seg], ["test"]) == list(METRICS)


def test_against_setting_figure_draws_each_column_against_the_rows_setting(tmp_path):
    from ltcore import PaperTable, TableColumn, TableRow
    from ltcore.experiments.reproduce import (TablePlan, against_setting, plans_from_json,
                                              plans_to_json)

    table = PaperTable(name="fig", caption="c", source="s", kind="figure",
                       figure="against-setting", axis="x.alpha",
                       rows=[TableRow(label=f"a{a}", plugins=("ce",), settings={"x.alpha": a})
                             for a in (1.0, 0.0, 0.5)],
                       columns=[TableColumn(label="mIoU", metric="test/mIoU")])
    plan = TablePlan("p:fig", table, [], {})
    values = {("a1.0", "mIoU"): [40.0, 42.0], ("a0.0", "mIoU"): [30.0], ("a0.5", "mIoU"): []}
    section, path, caption = against_setting(plan, values, tmp_path)
    assert path.is_file() and path.with_suffix(".svg").is_file() and "x.alpha" in caption
    again = plans_from_json(plans_to_json([plan]))[0]  # a report lays it out without plugins
    assert [again.table.axis_value(r) for r in again.table.rows] == [1.0, 0.0, 0.5]
    assert against_setting(plan, {}, tmp_path) is None
    with pytest.raises(PluginError, match="do not set to a number"):
        PaperTable(name="bad", caption="c", source="s", kind="figure",
                   figure="against-setting", axis="x.alpha",
                   rows=[TableRow(label="r", plugins=("ce",))], columns=[TableColumn(label="m")])


def test_against_setting_png_sorts_the_settings_and_draws_error_bars(tmp_path, monkeypatch):
    from ltcore import plots

    drawn = []
    close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig: (drawn.append(fig), close(fig)))
    points = {"mIoU": [(1.0, 40.0, 0.0), (0.0, 30.0, 1.5), (0.5, 35.0, 2.0)],
              "mAcc": [(0.5, math.nan, 0.0), (0.0, 45.0, 0.0), (1.0, 50.0, 0.0)]}
    path = plots.against_setting_png(points, tmp_path / "alpha.png", setting="alpha")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = drawn[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()
             if not line.get_label().startswith("_")}
    assert list(lines["mIoU"].get_xdata()) == [0.0, 0.5, 1.0]
    assert list(lines["mIoU"].get_ydata()) == [30.0, 35.0, 40.0]
    assert list(lines["mAcc"].get_xdata()) == [0.0, 1.0] and ax.get_xlabel() == "alpha"
    bars = [c for c in ax.collections if len(c.get_segments())]
    assert len(bars) == 1 and len(bars[0].get_segments()) == 2


class HeadlineTask(Task):
    """A task whose runs record ``<split>/score`` and ``scores.csv``, and no standalone model."""

    name = "scoring"
    headline = "score"
    per_class = PerClassTable("scores.csv", "train_units", "score", "score", "units", "units")
    standalone = False


class HeadlinePlugin:
    @hookimpl
    def register_tasks(self, register):
        register("scoring", HeadlineTask())


def test_recorded_runs_are_read_back_through_their_tasks_attributes(ltcore_plugins, tmp_path):
    """The sweep summary shows the headline of each task its cells recorded (classification's
    when none); ``ltrun report`` finds a run's task by its tag and reads the task's per-class
    table, and knows when no installed plugin registers it."""
    from ltcore.experiments import Cell, CellResult, Sweep, format_sweep_summary
    from ltcore.experiments.report import per_class_from_artifact, recorded_task

    plugins = ltcore_plugins(extra={"scoring": HeadlinePlugin()})
    sweep = Sweep("s1", [Cell(0, ("ce",)), Cell(1, ("ce",))], [])
    scored = [CellResult(sweep.cells[0], "FINISHED", "r0", metrics={"test/score": 12.5}),
              CellResult(sweep.cells[1], "FAILED")]
    header = format_sweep_summary(sweep, scored, plugins).splitlines()[0].split()
    assert header[4:6] == ["val/score", "test/score"] and "test/acc" not in header
    failed = [CellResult(sweep.cells[0], "FAILED")]
    assert "test/acc" in format_sweep_summary(sweep, failed, plugins).splitlines()[0]

    def run(tags):
        return SimpleNamespace(data=SimpleNamespace(tags=tags),
                               info=SimpleNamespace(run_id="r", experiment_id="0"))

    assert type(recorded_task(run({"ltcore.task": "scoring"}), plugins)) is HeadlineTask
    assert type(recorded_task(run({}), plugins)) is Task  # recorded before tasks were
    assert recorded_task(run({"ltcore.task": "depth"}), plugins) is None

    class Client:
        def search_runs(self, *args, **kwargs):
            return [SimpleNamespace(info=SimpleNamespace(run_id="stage", start_time=1),
                                    data=SimpleNamespace(tags={}))]

        def download_artifacts(self, run_id, path, target):
            assert (run_id, path) == ("stage", "evaluation/test_scores.csv")
            written = Path(target) / "scores.csv"
            written.write_text("class_index,class,train_units,score\n0,a,40,50.0\n1,b,2,\n")
            return str(written)

    found = per_class_from_artifact(Client(), run({"ltcore.task": "scoring"}), HeadlineTask(),
                                    "test", tmp_path)
    assert found[0] == [40, 2] and found[1][0] == 0.5 and math.isnan(found[1][1])
    assert found[2] == ["a", "b"]
