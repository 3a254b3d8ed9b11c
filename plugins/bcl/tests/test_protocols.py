"""BCL's prototype provider has what ltcore.protocols says the kind needs."""

from ltcore import Plugins, prepare, resolve
from ltcore import protocols
from ltcore.testing import FAST_SETTINGS


def test_classifier_prototypes_are_a_prototype_provider():
    plugins = Plugins()
    run = prepare(plugins, ["ce"], resolve(plugins, ["ce"], assignments=FAST_SETTINGS))
    provider = run.build("prototype-provider", "classifier-mlp")
    assert isinstance(provider, protocols.PrototypeProvider)
    assert provider.prototypes().shape == (run.dataset.num_classes, run.config.model.projection_dim)
