"""The published results RCL and BCL declare are what ``ltrun compare --reference papers`` shows."""

from types import SimpleNamespace

import pytest

from ltcore import Plugins
from ltcore import experiments as ex


def fake_run(run_id, plugins, seed, factor="100", metrics=None):
    tags = {"ltcore.plugins": plugins, "plugins": plugins, "seed": str(seed),
            "imbalance_factor": factor, "dataset": "cifar10-lt"}
    info = SimpleNamespace(run_id=run_id, start_time=1_000_000, end_time=1_060_000,
                           status="FINISHED", experiment_id="1")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, params={},
                                                           metrics=metrics or {}))


@pytest.fixture
def runs():
    figures = {"test/acc": 80.0, "test/hmean": 61.0}
    return [fake_run("a0", "bcl", 0, metrics=figures), fake_run("a1", "bcl", 1, metrics=figures),
            fake_run("b0", "bcl,rcl", 0, metrics=figures),
            fake_run("c0", "bcl", 0, factor="10", metrics=figures)]


def test_paper_numbers_match_by_plugins_dataset_and_factor(runs):
    comparison = ex.compare(None, runs, ["plugins"], ["test"], reference=ex.load_reference("papers"))
    # plugins=bcl mixes IF 10 and 100: no single paper number applies
    assert not comparison.rows[0].reference
    assert comparison.rows[1].reference == {"test/acc": 86.2, "test/hmean": 85.7}
    assert len(ex.load_reference("papers")) == len(Plugins().reference_results) > 40


def test_each_plugin_declares_its_own_papers_numbers():
    by_plugin = {}
    for row in Plugins().reference_results:
        by_plugin.setdefault(row["plugin"], set()).add(row["plugins"])
    assert by_plugin["rcl"] == {"rcl", "bcl,rcl"} and by_plugin["bcl"] == {"bcl"}
    assert by_plugin["ce"] == {"ce"}
