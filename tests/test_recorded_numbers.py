"""Runs of the built-in methods give the numbers recorded before a change, bit for bit on the CPU.

The numbers in ``recorded/core.json`` come from real runs of the commands below (see
``ltcore.testing.check_recorded``): every metric each stage logged per epoch, the final metrics
and what ``ltrun evaluate`` prints for the saved model. A change that is meant to alter them
records new ones with ``LTCORE_RECORD_NUMBERS=1`` and says why.
"""

from pathlib import Path

import pytest

from ltcore.testing import check_recorded, train_and_evaluate

RECORDED = Path(__file__).parent / "recorded" / "core.json"

SCENARIOS = {
    "ce-crt-lws": ["--plugin", "ce", "--plugin", "crt", "--plugin", "lws", "--epochs", "2",
                   "--set", "crt.epochs=1", "--set", "lws.epochs=1"],
    "ce-tau-norm": ["--plugin", "ce", "--plugin", "tau-norm", "--epochs", "2"],
    "supcon-posthoc-la": ["--plugin", "supcon", "--epochs", "2", "--set", "eval.posthoc_la_tau=1",
                          "--set", 'eval.metrics=["ece"]'],
}


SLOW = {"ce-crt-lws", "supcon-posthoc-la"}
"""Scenarios run with ``pytest -m slow`` only, to keep the default suite short."""


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in SCENARIOS])
def test_numbers_match_the_recorded_ones(ltrun, name):
    check_recorded(RECORDED, name, train_and_evaluate(ltrun, SCENARIOS[name]))
