"""The third-party example plugin in examples/ works through the public API alone."""

import importlib.util
from pathlib import Path

from ltcore import hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import train
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "weight-norms" / "ltcore_weight_norms" / "plugin.py"


def load_example():
    spec = importlib.util.spec_from_file_location("ltcore_weight_norms_plugin", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_plugin_trains_and_reports_weight_norms():
    plugins = Plugins(extra={"weight-norms": load_example()})
    assert plugins.component("loss", "label-smoothing").plugin == "weight-norms"
    settings = resolve(plugins, ["weight-norms"], ["strong"], assignments=FAST_SETTINGS,
                       overrides={"epochs": 1})
    assert settings.plugins["weight-norms"].smoothing == 0.3
    result = train(plugins, ["weight-norms"], settings, progress=False)
    assert 0 <= result.metrics["val/acc"] <= 100
    history = result.run_dir / "checkpoint.pt"
    import torch

    saved = torch.load(history, weights_only=False)
    last = saved["history"][-1]
    assert {"weights/norm_many", "weights/norm_medium", "weights/norm_few"} <= set(last)
    assert saved["history"][-1]["train/loss/label-smoothing"] > 0
    # run_end recorded the final norm of every class's row as an artifact of the run
    table = (result.run_dir / "artifacts" / "weights" / "norms.csv").read_text().splitlines()
    assert table[0] == "class_index,class,train_count,norm" and len(table) == 11


class Diverges:
    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        raise FloatingPointError("the loss diverged")


def test_example_plugin_records_the_norms_of_a_failed_run_too(isolated):
    import pytest

    from ltcore.testing import recorded_runs

    plugins = Plugins(extra={"weight-norms": load_example(), "diverges": Diverges()})
    selected = ["weight-norms", "diverges"]
    settings = resolve(plugins, selected, assignments=FAST_SETTINGS, overrides={"epochs": 1})
    with pytest.raises(FloatingPointError):
        train(plugins, selected, settings, progress=False)
    (parent,) = recorded_runs(nested=False)
    assert parent.info.status == "FAILED"
    (table,) = isolated.glob("runs/*/artifacts/weights/norms.csv")
    assert len(table.read_text().splitlines()) == 11
