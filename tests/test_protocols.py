"""The core's components have what ltcore.protocols says the core needs of each kind."""

import pytest

from ltcore import protocols
from ltcore.config import resolve
from ltcore.engine.runs import prepare
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS


@pytest.fixture(scope="module")
def run():
    plugins = Plugins()
    return prepare(plugins, ["ce", "tau-norm"], resolve(plugins, ["ce", "tau-norm"],
                                                         assignments=FAST_SETTINGS))


@pytest.mark.parametrize("name", ["instance-balanced", "class-balanced", "square-root",
                                  "reverse", "progressively-balanced"])
def test_samplers(run, name):
    assert isinstance(run.build("sampler", name), protocols.Sampler)


def test_view_pipelines_and_metrics(run):
    for component in run.plugins.components["view"].values():
        assert isinstance(component.obj, protocols.ViewPipeline), component.name
    for component in run.plugins.components["metric"].values():
        assert isinstance(component.obj, protocols.Metric), component.name


def test_rebalancers(run):
    assert isinstance(run.plugin_object("tau-norm"), protocols.Rebalancer)
    lws = run.build("rebalancer", "lws", classifier=run.build_model("linear").classifier)
    assert isinstance(lws, protocols.Rebalancer)
