"""Runs of the built-in methods give the numbers recorded before a change, bit for bit on the CPU.

The numbers in ``recorded/core.json`` come from real runs of the commands below (see
``ltcore.testing.check_recorded``): every metric each stage logged per epoch, the final metrics
and what ``ltrun evaluate`` prints for the saved model. A change that is meant to alter them
records new ones with ``LTCORE_RECORD_NUMBERS=1`` and says why.
"""

from pathlib import Path

from ltcore.testing import recorded_scenarios

RECORDED = Path(__file__).parent / "recorded" / "core.json"

SCENARIOS = {
    "ce-crt-lws": ["--plugin", "ce", "--plugin", "crt", "--plugin", "lws", "--epochs", "2",
                   "--set", "crt.epochs=1", "--set", "lws.epochs=1"],
    "ce-tau-norm": ["--plugin", "ce", "--plugin", "tau-norm", "--epochs", "2"],
    "supcon-posthoc-la": ["--plugin", "supcon", "--epochs", "2", "--set", "eval.posthoc_la_tau=1",
                          "--set", 'eval.metrics=["ece"]'],
}


test_numbers_match_the_recorded_ones = recorded_scenarios(
    RECORDED, SCENARIOS, slow={"ce-crt-lws", "supcon-posthoc-la"})  # slow ones: pytest -m slow
