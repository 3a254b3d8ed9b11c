"""``ltrun --plugin rcl`` end to end on the embedded dataset: records, compression, metrics."""

from __future__ import annotations

import csv

import pytest
import torch

from ltcore.testing import FAST, mlflow_client, recorded_runs


def test_rcl_alone_trains_switches_compression_and_logs_it(ltrun, isolated):
    result = ltrun("--plugin", "rcl", "--epochs", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    (stage,) = recorded_runs(client, nested=True)
    assert parent.info.status == "FINISHED"
    params, tags = parent.data.params, parent.data.tags
    assert params["plugins"] == "rcl"
    assert params["plugin.rcl.version"] == "ltcore-rcl 0.1.0"
    assert params["rcl.la_tau"] == "1.3" and params["rcl.compression_factor_others"] == "0.005"
    assert stage.data.params["stage.losses"] == "1*supcon, 2*la-ce"

    # compression is off in epoch 0 and switches on at epoch 1 (= 2 epochs // 2)
    switch = client.get_metric_history(stage.info.run_id, "rcl/compression")
    history = {m.step: m.value for m in switch}
    assert history == {0: 0.0, 1: 1.0}
    assert tags["rcl.compression.epoch"] == "1"
    below = [int(c) for c in tags["rcl.compression.below_threshold"].split(",") if c]
    others = [int(c) for c in tags["rcl.compression.others"].split(",") if c]
    assert sorted(below + others) == list(range(10))
    for c in range(10):
        (factor,) = client.get_metric_history(stage.info.run_id, f"rcl/factor/{c}")
        assert factor.step == 1
        assert factor.value == pytest.approx(1.0 if c in below else 0.005)

    # the per-class table is an artifact and agrees with the tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "rcl")}
    assert "rcl/compression.csv" in artifacts
    table = next(isolated.glob("runs/*/artifacts/rcl/compression.csv"))
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["class_index"]) for r in rows if r["below_threshold"] == "True"] == below
    for row in rows:
        accuracy = float(row["val_accuracy"])
        assert (accuracy < 20.0) == (row["below_threshold"] == "True")

    # the factors and the record are in the checkpoint
    checkpoint = torch.load(next(isolated.glob("runs/*/checkpoint.pt")), weights_only=False)
    record = checkpoint["plugin_objects"]["rcl"]["record"]
    assert record["below_threshold"] == below and record["epoch"] == 1
    assert checkpoint["modules"]["rcl.factors"].tolist() == pytest.approx(record["factors"])

    # the metrics the paper reports
    for key in ("val/hmean", "val/calinski-harabasz", "val/davies-bouldin",
                "test/calinski-harabasz"):
        assert key in parent.data.metrics, key
    assert torch.isfinite(torch.tensor(parent.data.metrics["val/calinski-harabasz"]))
