"""Shared helpers of the cogloat/proco tests: a prepared (untrained) run on the embedded dataset."""

import pytest

from ltcore.config import resolve
from ltcore.engine import prepare
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS


def prepared_run(selected, *assignments, epochs=1, plugins=None):
    """A run assembled by ``selected`` on digits-lt with the FAST settings (nothing trained)."""
    plugins = plugins or Plugins()
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, "device=cpu", *assignments],
                       overrides={"epochs": epochs})
    return prepare(plugins, selected, settings)


@pytest.fixture
def make_run():
    return prepared_run
