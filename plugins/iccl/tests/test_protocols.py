"""ICCL's registered components have what ltcore.protocols says each kind needs."""

from ltcore import Plugins, prepare, resolve
from ltcore import protocols
from ltcore.testing import FAST_SETTINGS


def test_samplers_memory_bank_and_prototype_provider():
    plugins = Plugins()
    run = prepare(plugins, ["ce"], resolve(plugins, ["ce"], assignments=FAST_SETTINGS))
    for name in ("class-aware", "iccl-paired"):
        assert isinstance(run.build("sampler", name), protocols.Sampler)
    assert isinstance(run.build("memory-bank", "iccl-centroids"), protocols.MemoryBank)
    assert isinstance(run.build("prototype-provider", "iccl-centroids"), protocols.PrototypeProvider)
