"""``ltrun reproduce``: a paper table as a sweep, its smoke form, and the table laid out as
printed; ``eval.protocol``; the ``limit`` caps."""

import pickle
import re

import numpy as np
import pytest

from ltcore import PaperTable, TableColumn, TableRow
from ltcore.errors import PluginError
from ltcore.experiments import reproduce as rp
from ltcore.testing import mlflow_client, recorded_runs

TABLE_PLUGIN = '''
from ltcore import PaperTable, TableColumn, TableRow, hookimpl

DIGITS = {"dataset": "digits-lt", "imbalance_factor": 10}


@hookimpl
def register_tables(register):
    register(PaperTable(
        name="table1", caption="CE and LA on digits", source="A paper, Table 1",
        settings={"epochs": 1},
        rows=[TableRow(label="CE", plugins="ce"),
              TableRow(label="LA", plugins="la", settings={"la.tau": 2.0})],
        columns=[TableColumn(label="All", settings=DIGITS),
                 TableColumn(label="Many", metric="test/many", settings=DIGITS),
                 TableColumn(label="CIFAR-10 IF 100",
                             settings={"dataset": "cifar10-lt", "imbalance_factor": 100})],
        numbers={("CE", "All"): 80.0, ("LA", "All"): 85.5}))
    register(PaperTable(name="table2", caption="Needs a teacher", source="A paper, Table 2",
                        rows=[TableRow(label="A", plugins="ce")],
                        columns=[TableColumn(label="c")], waits="a pretrained teacher"))
    register(PaperTable(name="table10", caption="A plugin that is not installed",
                        source="A paper, Table 10", rows=[TableRow(label="X", plugins="nope")],
                        columns=[TableColumn(label="c")]))
'''


@pytest.fixture
def with_tables(isolated, monkeypatch):
    path = isolated / "apaper.py"
    path.write_text(TABLE_PLUGIN)
    monkeypatch.setenv("LTCORE_PLUGINS", str(path))
    return path


def test_list_names_each_table_runnable_or_what_it_waits_for(ltrun, with_tables):
    result = ltrun("reproduce", "--list")
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]
             if line.startswith("apaper:")}
    assert list(lines) == ["apaper:table1", "apaper:table2", "apaper:table10"]  # numeric order
    assert lines["apaper:table1"].rstrip().endswith("runnable")
    assert "waits: a pretrained teacher" in lines["apaper:table2"]
    assert "waits: " in lines["apaper:table10"] and "nope" in lines["apaper:table10"]


def test_bad_table_ids_and_waiting_tables_exit_2_with_one_line(ltrun, with_tables):
    unknown = ltrun("reproduce", "apaper:table9")
    assert unknown.exit_code == 2
    assert "unknown table 'apaper:table9'" in unknown.stderr
    assert "apaper:table1, apaper:table10, apaper:table2" in unknown.stderr
    waiting = ltrun("reproduce", "apaper:table2")
    assert waiting.exit_code == 2
    assert "apaper:table2 cannot run yet: it waits for a pretrained teacher" in waiting.stderr
    assert ltrun("reproduce").exit_code == 2
    bad_dir = ltrun("reproduce", "apaper:table1", "--data-dir", "cifar10-lt", "--dry-run")
    assert bad_dir.exit_code == 2 and "DATASET=DIR" in bad_dir.stderr


def test_dry_run_places_each_cell_and_runs_shared_configurations_once(ltrun, with_tables):
    result = ltrun("reproduce", "apaper:table1", "--dry-run", "--seeds", "0,1",
                   "--data-dir", "cifar10-lt=/data/c10")
    assert result.exit_code == 0, result.stderr
    places = re.findall(r"^\[(\d+)\] (.*)$", result.output, re.M)
    assert len(places) == 8  # 2 rows x 2 distinct configurations x 2 seeds
    assert places[0] == ("0", "apaper:table1 CE / All; apaper:table1 CE / Many")
    commands = re.findall(r"^    ltrun (.*)$", result.output, re.M)
    assert all("--set eval.protocol=paper" in c for c in commands)
    assert "--set la.tau=2" in commands[4] and "--seed 1" in commands[1]
    assert "--set data_dir=/data/c10" in commands[2]


def test_smoke_trains_each_distinct_cell_once_and_lays_the_table_out(ltrun, with_tables):
    result = ltrun("reproduce", "apaper:table1", "--smoke")
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    runs = [r for r in recorded_runs(client, nested=False)
            if r.data.tags.get("ltcore.kind") != "sweep"]
    assert len(runs) == 2  # the CIFAR column's smoke form is the digits column's
    assert {r.data.params["eval.protocol"] for r in runs} == {"paper"}
    assert {r.data.params["limit.steps"] for r in runs} == {"1"}
    table = result.output[result.output.index("apaper:table1: CE and LA"):]
    assert "1 seed(s) per cell" in table
    assert re.search(r"^CE +\d+\.\d\d ± 0\.00 \(paper 80, [-+]\d+\.\d\d\)", table, re.M)
    assert re.search(r"^LA +\d+\.\d\d ± 0\.00 \(paper 85\.5, ", table, re.M)
    (folder,) = (with_tables.parent / "runs" / "sweeps").iterdir()
    assert "| A paper, Table 1 | All | Many | CIFAR-10 IF 100 |" in (folder / "tables.md").read_text()
    # ltrun report lays the table out again from what the sweep recorded
    report = ltrun("report", "--sweep", folder.name, "--format", "markdown", "--no-tsne",
                   "--output", "report", "--no-log")
    assert report.exit_code == 0, report.stderr
    page = (with_tables.parent / "report" / "report.md").read_text()
    assert "## The papers' tables" in page and "**apaper:table1: CE and LA on digits" in page
    assert re.search(r"^\| LA \| \d+\.\d\d ± 0\.00 \(paper 85\.5, ", page, re.M)


def test_a_plugin_name_selects_its_runnable_tables_and_shared_runs_train_once(ltrun,
                                                                              with_tables):
    result = ltrun("reproduce", "apaper", "--dry-run", "--seeds", "0")
    assert result.exit_code == 0, result.stderr
    assert "apaper:table2 is left out: it waits for a pretrained teacher" in result.output
    assert "apaper:table10 is left out: it waits for" in result.output
    assert len(re.findall(r"^\[\d+\] ", result.output, re.M)) == 4
    tables = [PaperTable(name=name, caption="c", source="S",
                         rows=[TableRow(label="CE", plugins="ce"), TableRow(label=name,
                                                                            plugins="la")],
                         columns=[TableColumn(label="c")]) for name in ("t1", "t2")]
    plans = rp.plan_tables([("p:t1", tables[0]), ("p:t2", tables[1])], [0, 1])
    assert [len(p.cells) for p in plans] == [4, 4]  # each table's own rows...
    assert len(rp.sweep_cells(plans)) == 4  # ...of which CE and LA's runs are shared
    assert [c.index for c in rp.sweep_cells(plans)] == [0, 1, 2, 3]


def test_the_layout_gives_mean_spread_paper_number_and_difference():
    table = PaperTable(name="t", caption="c", source="S", rows=[TableRow(label="M", plugins="ce")],
                       columns=[TableColumn(label="A"), TableColumn(label="B")],
                       numbers={("M", "A"): 84.32})
    plan = rp.plan_table("p:t", table, [0, 1])
    text = rp.table_layout(plan, {("M", "A"): [83.0, 85.0], ("M", "B"): []})
    assert "84.00 ± 1.41 (paper 84.32, -0.32)" in text
    assert text.splitlines()[-1].split()[-1] == "-"
    assert "2 seed(s) per cell" in text


def test_later_settings_win_and_values_read_back_as_given():
    table = PaperTable(name="t", caption="c", source="S", presets=("p1",),
                       settings={"epochs": 5, "optim.lr": 0.1},
                       rows=[TableRow(label="r", plugins=("ce", "la"), presets="p2",
                                      settings={"optim.lr": 0.2})],
                       columns=[TableColumn(label="c", presets="p1",
                                            settings={"epochs": 7, "views.classifier": "true"})])
    (cell,) = rp.plan_table("p:t", table, [3]).cells
    assert cell.presets == ("p1", "p2") and cell.seed == 3
    assert cell.grid == {"eval.protocol": "paper", "epochs": "7", "optim.lr": "0.2",
                         "views.classifier": '"true"'}
    from ltcore.config_text import parse_assignment

    for value in (True, 3, 0.0005, [160, 180], ["a", "b"], "cifar10-lt", "100", "natural",
                  {}, {"force_image_size": 384, "name": 'say "x"'}, ['a"b'], 1e-5):
        assert parse_assignment(f"k={rp.toml_literal(value)}")[1] == (
            list(value) if isinstance(value, tuple) else value)


def test_a_table_refuses_numbers_of_cells_it_does_not_lay_out():
    with pytest.raises(PluginError, match="numbers of cells it does not lay out"):
        PaperTable(name="t", caption="c", source="S", rows=[TableRow(label="r", plugins="ce")],
                   columns=[TableColumn(label="c")], numbers={("r", "d"): 1.0})
    with pytest.raises(PluginError, match="two rows of one label"):
        PaperTable(name="t", caption="c", source="S", columns=[TableColumn(label="c")],
                   rows=[TableRow(label="r", plugins="ce"), TableRow(label="r", plugins="la")])


# -- eval.protocol on a small stand-in of the CIFAR-10 files ----------------------------------


def cifar10_standin(root, train_per_class=30, test_per_class=20):
    """torchvision's ``cifar-10-batches-py`` layout with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(labels):
        return {"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                "labels": list(labels)}

    train = [c for c in range(10) for _ in range(train_per_class)]
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch(train[i::5]), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch([c for _ in range(test_per_class) for c in range(10)]), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)]}, f)
    return root


@pytest.fixture
def cifar10_files(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10, cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    return cifar10_standin(tmp_path / "cifar10")


def test_the_paper_protocol_reports_on_the_whole_official_test_split(cifar10_files):
    from ltcore.data import cifar_lt

    heldout = cifar_lt(10, str(cifar10_files), 10)
    paper = cifar_lt(10, str(cifar10_files), 10, protocol="paper")
    assert (len(heldout.val), len(heldout.test)) == (40, 160)  # 20% per class carved out
    assert (len(paper.val), len(paper.test)) == (40, 200)  # every official test image
    assert paper.test.labels.tolist() == [c for _ in range(20) for c in range(10)]
    assert (paper.val.images == heldout.val.images).all()
    assert any("all 200 official test images" in n for n in paper.notes)
    assert not any("protocol" in n for n in heldout.notes)


def test_the_plan_and_params_say_the_protocol(ltrun, cifar10_files):
    result = ltrun("--dataset", "cifar10-lt", "--data-dir", str(cifar10_files), "--epochs", "1",
                   "--set", "eval.protocol=paper", "--set", "model.backbone=resnet8",
                   "--set", "limit.steps=1", "--set", "tracking.log_model=false",
                   "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert "eval.protocol paper: test figures on all 200 official test images" in result.output
    (run,) = recorded_runs(mlflow_client(), nested=False)
    assert run.data.params["eval.protocol"] == "paper"


def test_limits_cap_every_stage_and_its_steps(make_run):
    from ltcore.engine.runs import finish_setup

    run = make_run(["crt"], "limit.epochs=1", "crt.epochs=4", epochs=3)
    finish_setup(run)
    assert [s.epochs for s in run.stages] == [1, 1]
