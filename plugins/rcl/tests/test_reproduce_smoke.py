"""``ltrun reproduce rcl --smoke``: every runnable table of the plugin trains each of its distinct
cells for one step on the embedded data and is laid out as the paper prints it."""

from ltcore.testing import smoke_tables


def test_every_runnable_table_runs_in_its_smoke_form(ltrun):
    smoke_tables(ltrun, "rcl")
