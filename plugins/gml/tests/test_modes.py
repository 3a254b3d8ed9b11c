"""The other modes of the plugin in a real short run."""

import math

import pytest
import torch
from ltcore_gml.loss import gml_loss

from ltcore import Plugins, hookimpl, resolve, train
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs

SETTINGS = [*FAST_SETTINGS, "imbalance_factor=100", "views.classifier=standard",
            "views.contrastive=standard", "gml.queue_size=128"]


class Recorder:
    """Keeps the GML tensors of the student's first step and the key MLP it started with."""

    def __init__(self):
        self.first = None
        self.key_head = None
        self.prior = None

    @hookimpl
    def stage_start(self, run, stage):
        if stage.name == "train":
            self.prior = run.class_prior.cpu()
            self.key_head = {k: v.clone() for k, v in stage.model.heads["gml_key"].state_dict().items()}

    @hookimpl
    def step_end(self, step):
        if step.stage.name == "train" and self.first is None:
            out = step.extras["gml"]
            self.first = {k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)}
            self.first["losses"] = {k: v.clone() for k, v in out["losses"].items()}


def test_key_embeddings_random_start_fixed_temperature_other_teacher(isolated):
    recorder = Recorder()
    plugins = Plugins(extra={"recorder": recorder})
    settings = resolve(plugins, ["gml", "recorder"], overrides={"epochs": 1}, assignments=[
        *SETTINGS, "gml.teacher_epochs=1", "gml.teacher_backbone=resnet20",
        "gml.queue_contents=key-embeddings", "gml.queue_init=random",
        "gml.learn_temperature=false", "gml.temperature=0.2", "gml.distill=false",
        "gml.gml_alpha=0.5", "model.projection_dim=16"])
    result = train(plugins, ["gml", "recorder"], settings, progress=False)
    stages = {r.data.tags["ltcore.stage"]: r for r in recorded_runs(mlflow_client(), nested=True)}
    assert stages["train"].data.params["stage.losses"] == "1*la-ce, 1*gml"
    assert stages["train"].data.metrics["train/gml_temperature"] == pytest.approx(0.2, rel=1e-6)
    modules = torch.load(result.run_dir / "model.pt", weights_only=False)["modules"]
    assert float(modules["model.heads.gml_temperature.log_temperature"]) == pytest.approx(math.log(0.2))
    assert modules["teacher._extra_state"]["backbone"] == "resnet20"
    assert modules["gml_queue.queue_features"].shape == (128, 16)
    first = recorder.first
    # Random start: every slot is usable from the first step; no teacher logits without L_KD.
    assert bool(first["bank_valid"].all()) and "teacher_logits" not in first
    torch.testing.assert_close(first["bank"].norm(dim=1), torch.ones(128))
    expected = gml_loss(first["query"].double(), first["labels"], first["bank"].double(),
                        first["bank_labels"], recorder.prior.double(), 0.2, 0.5)
    assert math.isclose(float(first["losses"]["gml"]), float(expected), rel_tol=1e-5)
    assert any(not torch.equal(modules[f"model.heads.gml_key.{k}"], v)
               for k, v in recorder.key_head.items() if v.is_floating_point())
