"""``ltrun --plugin bcl --plugin rcl`` end to end on the embedded dataset."""

from __future__ import annotations

import math

from ltcore.testing import FAST, mlflow_client, recorded_runs


def test_bcl_plus_rcl_trains_and_records_both_plugins(ltrun, isolated):
    result = ltrun("--plugin", "bcl", "--plugin", "rcl", "--epochs", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    (stage,) = recorded_runs(client, nested=True)
    params = parent.data.params
    assert params["plugins"] == "bcl,rcl" and parent.data.tags["plugins"] == "bcl,rcl"
    assert params["plugin.bcl.version"] == "ltcore-bcl 0.1.0"
    assert params["plugin.rcl.version"] == "ltcore-rcl 0.1.0"
    # BCL's recipe, rebalanced: no SupCon term is added by rcl
    assert stage.data.params["stage.losses"] == "2*la-ce, 0.6*bcl"
    losses = client.get_metric_history(stage.info.run_id, "train/loss/bcl")
    assert len(losses) == 2 and all(math.isfinite(m.value) for m in losses)

    switch = client.get_metric_history(stage.info.run_id, "rcl/compression")
    history = {m.step: m.value for m in switch}
    assert history == {0: 0.0, 1: 1.0}
    assert parent.data.tags["rcl.compression.epoch"] == "1"
    below = parent.data.tags["rcl.compression.below_threshold"]
    others = parent.data.tags["rcl.compression.others"]
    classes = sorted(int(c) for c in (below + "," + others).split(",") if c)
    assert classes == list(range(10))
    for key in ("val/acc", "val/hmean", "val/calinski-harabasz", "val/davies-bouldin"):
        assert key in parent.data.metrics, key
