"""The batched view path trains as well as the per-image reference path.

Both backends apply the same augmentation distribution (tests/views checks the ops and the
distributions); here a short training run on the embedded dataset must reach the same
accuracy within noise. Noise: the test split has 300 images, so one accuracy has a binomial
standard error of about 2.6 points at 70%, a difference of two runs about 3.7 points, and the
seed-to-seed spread of such short runs adds as much again; the mean over two seeds per backend
must agree within 10 points (about 2.7 standard errors of the difference of the means). Both
must also have learned something (over 2.5 times the 10% chance level after 8 short epochs).
"""

import statistics

import pytest

from ltcore.config import resolve
from ltcore.engine.runs import train
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS

SEEDS = (0, 1)
TOLERANCE = 10.0


def accuracy(plugins, backend, seed):
    settings = resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, f"views.backend={backend}"],
                       overrides={"epochs": 8, "seed": seed})
    return train(plugins, ["ce"], settings, progress=False).metrics["test/acc"]


@pytest.mark.slow  # 40 s of training; tests/views checks the ops and distributions each run
def test_batched_and_reference_views_reach_the_same_accuracy():
    plugins = Plugins()
    batched = [accuracy(plugins, "batched", s) for s in SEEDS]
    reference = [accuracy(plugins, "reference", s) for s in SEEDS]
    assert min(batched + reference) > 25, (batched, reference)  # 2.5x chance: both learn
    assert abs(statistics.mean(batched) - statistics.mean(reference)) <= TOLERANCE, (batched, reference)
