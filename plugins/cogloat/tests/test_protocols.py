"""CoGloAT's and ProCo's registered components have what ltcore.protocols says each kind needs."""

from ltcore import Plugins, prepare, resolve
from ltcore import protocols
from ltcore.testing import FAST_SETTINGS


def test_sampler_memory_banks_prototypes_and_metrics():
    plugins = Plugins()
    run = prepare(plugins, ["ce"], resolve(plugins, ["ce"], assignments=FAST_SETTINGS))
    assert isinstance(run.build("sampler", "k-global"), protocols.Sampler)
    for name in ("moco-queue", "momentum-encoder"):
        assert isinstance(run.build("memory-bank", name), protocols.MemoryBank)
    assert isinstance(run.build("prototype-provider", "coreset"), protocols.PrototypeProvider)
    for name in ("alignment", "variance", "uniformity", "improved-uniformity"):
        assert isinstance(run.component("metric", name), protocols.Metric)
