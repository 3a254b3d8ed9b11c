"""``ltrun reproduce gml --smoke``: every runnable table of the plugin trains each of its distinct
cells for one step on the embedded data and is laid out as the paper prints it; Figure 2 is drawn
against alpha into the sweep's folder."""

import re
from pathlib import Path

from ltcore.testing import smoke_tables


def test_every_runnable_table_runs_in_its_smoke_form(ltrun):
    output = smoke_tables(ltrun, "gml")
    drawn = Path(re.search(r"gml:fig2 drawn: (\S+\.png)", output).group(1))
    assert drawn.is_file() and drawn.with_suffix(".svg").is_file()
