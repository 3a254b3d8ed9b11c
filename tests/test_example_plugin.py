"""The third-party example plugin in examples/ works through the public API alone."""

import importlib.util
from pathlib import Path

from ltcore.config import resolve
from ltcore.engine import train
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
