"""The tags and names by which ltcore finds its runs again."""

SWEEP_TAG = "ltcore.sweep"
CELL_TAG = "ltcore.sweep.cell"
INDEX_TAG = "ltcore.sweep.index"
ATTEMPT_TAG = "ltcore.sweep.attempt"
AXES_TAG = "ltcore.sweep.axes"
KIND_TAG = "ltcore.kind"
ERROR_TAG = "ltcore.error"
TASK_TAG = "ltcore.task"
"""The task a run trained (``classification``, ``segmentation``), set on every run."""

METRICS = ("acc", "many", "medium", "few", "hmean")
"""The accuracy figures a comparison shows per split (percent)."""

WALL_CLOCK = "wall_clock_s"

DEFAULT_GROUP_BY = ("plugins", "dataset", "imbalance_factor")
