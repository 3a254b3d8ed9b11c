"""``ltrun compare`` on a real sweep: 2 plugin sets x 2 seeds on digits-lt, one epoch each; the
printed means are recomputed from the MLflow API."""

import contextlib
import csv
import io
import json
import shutil
import statistics
from types import SimpleNamespace

import pytest

from ltcore.cli import main
from ltcore.testing import FAST, mlflow_client

SWEEP = "acceptance"
PLUGINS = ("ce", "la")
SEEDS = (0, 1)


def call(*args):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return SimpleNamespace(exit_code=code, output=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def swept(tmp_path_factory, mlflow_store_template):
    """The sweep, trained once for the module, in this process (``--in-process``)."""
    root = tmp_path_factory.mktemp("sweep")
    shutil.copyfile(mlflow_store_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("LTCORE_CACHE", str(root / "cache"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = call("sweep", *(a for p in PLUGINS for a in ("--plugins", p)),
                      "--seeds", ",".join(map(str, SEEDS)), "--in-process", "--sweep-id", SWEEP,
                      "--tracking-uri", uri, "--output", str(root / "runs"),
                      "--epochs", "1", "--imbalance-factor", "100", "--set", "optim.lr=0.02",
                      *FAST)
    assert result.exit_code == 0, result.output + result.stderr
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("ltcore").experiment_id
    runs = [r for r in client.search_runs([experiment], f"tags.`ltcore.sweep` = '{SWEEP}'")
            if "mlflow.parentRunId" not in r.data.tags and "ltcore.kind" not in r.data.tags]
    return SimpleNamespace(uri=uri, root=root, result=result, client=client, runs=runs)


def expected(swept, plugins, key):
    """Mean and sample std of ``key`` over the sweep's runs of ``plugins``, from MLflow."""
    members = [r for r in swept.runs if r.data.tags["plugins"] == plugins]
    if key == "wall_clock_s":
        values = [(r.info.end_time - r.info.start_time) / 1000 for r in members]
    else:
        values = [r.data.metrics[key] for r in members]
    return statistics.mean(values), statistics.stdev(values), len(values)


def test_the_sweep_made_one_finished_run_per_cell(swept):
    assert "sweep acceptance: 4 finished" in swept.result.output
    cells = sorted((r.data.tags["plugins"], r.data.tags["seed"], r.info.status) for r in swept.runs)
    assert cells == [(p, str(s), "FINISHED") for p in PLUGINS for s in SEEDS]


def test_compare_prints_the_means_of_the_recorded_runs(swept):
    result = call("compare", "--tracking-uri", swept.uri, "--sweep", SWEEP, "--split", "both",
                  "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = {row["group"]["plugins"]: row for row in json.loads(result.output)}
    assert set(rows) == set(PLUGINS)
    for plugins, row in rows.items():
        assert row["n"] == len(SEEDS) and sorted(row["seeds"]) == [str(s) for s in SEEDS]
        for key in [f"{s}/{m}" for s in ("val", "test")
                    for m in ("acc", "many", "medium", "few", "hmean")] + ["wall_clock_s"]:
            mean, std, n = expected(swept, plugins, key)
            got = row["metrics"][key]
            assert got["n"] == n and got["mean"] == pytest.approx(mean, abs=1e-9), key
            assert got["std"] == pytest.approx(std, abs=1e-9), key

    table = call("compare", "--tracking-uri", swept.uri, "--sweep", SWEEP)
    assert table.exit_code == 0, table.stderr
    header, rule, *lines = table.output.splitlines()
    assert header.split()[:3] == ["plugins", "runs", "test/acc"]  # the sweep's axis
    for plugins in PLUGINS:
        line = next(l for l in lines if l.startswith(plugins + " "))
        for key in ("test/acc", "test/few", "test/hmean"):
            mean, std, _ = expected(swept, plugins, key)
            assert f"{mean:.2f} ± {std:.2f}" in line, (key, line)
    assert "mean ± sample std" in table.output


def test_grouping_filtering_formats_and_references(swept, tmp_path):
    by_seed = json.loads(call("compare", "--tracking-uri", swept.uri, "--sweep", SWEEP,
                              "--group-by", "seed", "--format", "json").output)
    assert [(r["group"]["seed"], r["n"]) for r in by_seed] == [("0", 2), ("1", 2)]
    only_la = json.loads(call("compare", "--tracking-uri", swept.uri,
                              "--filter", "tags.plugins = 'la'", "--format", "json").output)
    assert [(r["group"]["plugins"], r["n"]) for r in only_la] == [("la", 2)]

    rows = list(csv.DictReader(io.StringIO(call("compare", "--tracking-uri", swept.uri,
                                                "--sweep", SWEEP, "--format", "csv").output)))
    for row in rows:
        mean, std, _ = expected(swept, row["plugins"], "test/acc")
        assert float(row["test/acc mean"]) == pytest.approx(mean)
        assert float(row["test/acc std"]) == pytest.approx(std)

    reference = tmp_path / "ref.csv"
    reference.write_text("plugins,dataset,test/acc,source\nla,digits-lt,50.0,a made-up target\n")
    markdown = call("compare", "--tracking-uri", swept.uri, "--sweep", SWEEP, "--format",
                    "markdown", "--reference", str(reference))
    assert markdown.exit_code == 0, markdown.stderr
    header, rule, *lines = markdown.output.splitlines()
    assert header.startswith("| plugins | runs |") and "| ref test/acc | Δ test/acc |" in header
    la = next(l for l in lines if l.startswith("| la |"))
    mean, _, _ = expected(swept, "la", "test/acc")
    assert la.endswith(f"| 50.00 | {mean - 50:+.2f} |")
    ce = next(l for l in lines if l.startswith("| ce |"))
    assert ce.endswith("| - | - |")
    assert "a made-up target" in markdown.output


def test_nothing_found_is_a_clear_error(swept):
    result = call("compare", "--tracking-uri", swept.uri, "--sweep", "no-such-sweep")
    assert result.exit_code == 2 and "no finished ltcore runs found in sweep" in result.stderr
    result = call("compare", "--tracking-uri", swept.uri, "--experiment", "nope")
    assert result.exit_code == 2 and "no MLflow experiment named 'nope'" in result.stderr
