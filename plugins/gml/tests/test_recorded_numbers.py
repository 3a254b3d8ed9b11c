"""Runs of this plugin give the numbers recorded before a change, bit for bit on the CPU.

The numbers in ``recorded/gml.json`` come from real runs of the commands below: every metric
each stage logged per epoch, the final metrics and what ``ltrun evaluate`` prints for the
saved model (see ``ltcore.testing.check_recorded``). A change that is meant to alter them
records new ones with ``LTCORE_RECORD_NUMBERS=1`` and says why.
"""

from pathlib import Path

from ltcore.testing import recorded_scenarios

RECORDED = Path(__file__).parent / "recorded" / "gml.json"

SCENARIOS = {
    "gml": ["--plugin", "gml", "--epochs", "2", "--set", "gml.teacher_epochs=1"],
}


test_numbers_match_the_recorded_ones = recorded_scenarios(
    RECORDED, SCENARIOS, slow={"gml"})  # slow ones: pytest -m slow
