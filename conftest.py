"""Every test of the repository runs isolated: own working directory, MLflow store, dataset
cache and one torch thread (the ``isolated`` fixture of the test kit, ``ltcore.testing``)."""

import pytest


@pytest.fixture(autouse=True)
def _isolated(isolated):
    return isolated
