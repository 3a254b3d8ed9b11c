"""GML's class-wise queue has what ltcore.protocols says a memory bank needs."""

from ltcore import Plugins, prepare, resolve
from ltcore import protocols
from ltcore.testing import FAST_SETTINGS


def test_class_queue_is_a_memory_bank():
    plugins = Plugins()
    run = prepare(plugins, ["ce"], resolve(plugins, ["ce"], assignments=FAST_SETTINGS))
    queue = run.build("memory-bank", "class-queue", size=64, min_size=2, dim=8)
    assert isinstance(queue, protocols.MemoryBank)
