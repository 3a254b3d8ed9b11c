"""RCL's compression factors survive a checkpoint and a resume."""

from __future__ import annotations

import pytest
import torch

from ltcore import Plugins, hookimpl, resolve, resume, train
from ltcore.testing import FAST_SETTINGS


class KillAtEpochEnd:
    """A test plugin that interrupts training at the end of one epoch, keeping its metrics."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.armed = True
        self.seen: dict[str, float] = {}

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if self.armed and epoch == self.epoch:
            self.seen = dict(metrics)
            self.armed = False
            raise KeyboardInterrupt


def test_resumed_run_keeps_the_factors_and_trains_as_before(isolated, monkeypatch):
    killer = KillAtEpochEnd(1)
    plugins = Plugins(extra={"killer": killer})
    selected = ["rcl", "killer"]
    # compression from epoch 0, with two factors that both differ from 1
    settings = resolve(plugins, selected, assignments=[
        *FAST_SETTINGS, "imbalance_factor=100", "rcl.compression_epoch=0",
        "rcl.compression_factor_below=0.5", "rcl.compression_factor_others=0.25"],
        overrides={"epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        train(plugins, selected, settings, progress=False)
    (run_dir,) = (isolated / "runs").iterdir()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert saved["position"] == (0, 1)
    record = saved["plugin_objects"]["rcl"]["record"]
    assert record["epoch"] == 0
    assert saved["modules"]["rcl.factors"].tolist() == pytest.approx(record["factors"])
    assert set(record["factors"]) <= {0.5, 0.25}

    import ltcore_rcl.state as state

    calls = []
    measure = state.measure_and_switch
    monkeypatch.setattr(state, "measure_and_switch",
                        lambda *a, **k: calls.append(a) or measure(*a, **k))
    resumed = resume(plugins, run_dir.name, progress=False)
    assert calls == []  # restored, not measured again

    final = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    (epoch1,) = [h for h in final["history"] if h["epoch"] == 1]
    # epoch 1 after the resume trains exactly as it did before the interruption
    for key, value in killer.seen.items():
        if key.startswith(("train/loss", "val/", "test/")):
            assert epoch1[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert final["plugin_objects"]["rcl"]["record"] == record
    assert final["modules"]["rcl.factors"].tolist() == pytest.approx(record["factors"])
    assert epoch1["rcl/compression"] == 1.0
    assert resumed.metrics["val/acc"] == epoch1["val/acc"]
