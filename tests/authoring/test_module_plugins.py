"""Plugins loaded from a module without installing it: ``--plugin ./method.py``,
``--plugin package.module`` and ``LTCORE_PLUGINS``; the run records the file so that resuming and
evaluating find it again, and says when it changed."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from ltcore.plugins import Plugins
from ltcore.testing import FAST, mlflow_client, recorded_runs

METHOD = '''"""A loss tried for an afternoon: cross-entropy on logits divided by a temperature."""
from ltcore import classifier_term, hookimpl


def tempered_ce(run, temperature=TEMPERATURE):
    import torch.nn.functional as F

    return classifier_term("tempered-ce", "method", lambda z, y: F.cross_entropy(z / temperature, y))


@hookimpl
def register_losses(register):
    register("tempered-ce", tempered_ce)


@hookimpl
def setup_run(run):
    run.classifier_view()
    run.main_stage.set_classifier_loss(run.build("loss", "tempered-ce"))
'''

BACKBONE = '''"""A backbone of one's own."""
from ltcore import hookimpl


def small(channels):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    net.feature_dim = 8
    return net


@hookimpl
def register_backbones(register):
    register("small-conv", small)
'''


def ltrun_process(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "LTCORE_PLUGINS": ""}
    return subprocess.run([sys.executable, "-m", "ltcore", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_method_file_trains_resumes_and_evaluates_from_fresh_processes(ltrun, isolated):
    method = isolated / "method.py"
    method.write_text(METHOD.replace("TEMPERATURE", "2.0"))
    result = ltrun("--plugin", "./method.py", "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.stderr
    (folder,) = isolated.glob("runs/method-digits-lt-*")
    assert (folder / "plugins" / "method.py").read_text() == method.read_text()
    assert f'plugins = ["{method}"]' in (folder / "config.toml").read_text()
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    assert "plugins/method.py" in {a.path for a in client.list_artifacts(parent.info.run_id,
                                                                          "plugins")}
    assert parent.data.params["plugin.method.version"].startswith(f"module {method} ")
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert saved["plugin_sources"]["method"]["file"] == str(method)

    method.write_text(METHOD.replace("TEMPERATURE", "4.0"))  # edited since
    resumed = ltrun_process(isolated, "--resume", "last", "--epochs", "2", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "warning: plugin 'method'" in resumed.stdout
    assert "changed since the run began" in resumed.stdout
    assert "train 2/2" in resumed.stdout

    evaluated = ltrun_process(isolated, "evaluate", "--checkpoint", str(folder / "model.pt"),
                              "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert '"test/acc"' in evaluated.stdout

    method.unlink()  # gone: the run's copy stands in
    again = ltrun("evaluate", "--checkpoint", str(folder / "model.pt"))
    assert again.exit_code == 0, again.stderr
    assert "no longer exists; loaded the run's copy" in again.stderr


def test_component_modules_load_from_the_environment(ltrun, isolated, monkeypatch):
    (isolated / "mine").mkdir()
    (isolated / "mine" / "__init__.py").write_text("")
    (isolated / "mine" / "backbones.py").write_text(BACKBONE)
    monkeypatch.syspath_prepend(str(isolated))
    monkeypatch.setenv("LTCORE_PLUGINS", "mine.backbones")
    plugins = Plugins()
    assert plugins.component("backbone", "small-conv").plugin == "backbones"
    assert plugins.sources["backbones"].reference == "mine.backbones"
    result = ltrun("--epochs", "1", *FAST, "--set", "model.backbone=small-conv")
    assert result.exit_code == 0, result.stderr
    assert "model small-conv" in result.output

    monkeypatch.setenv("LTCORE_PLUGINS", "")
    refused = ltrun("--plugin", "mine.backbones", "--epochs", "1")
    assert refused.exit_code == 2
    assert "only registers components (backbone)" in refused.stderr
    assert "LTCORE_PLUGINS=mine.backbones" in refused.stderr
    missing = ltrun("--plugin", "./nowhere.py")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
