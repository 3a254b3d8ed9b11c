"""GML without teacher-student (Table 5, gml.key_encoder = momentum): no teacher stage, no
L_KD, keys from a momentum copy of the student updated as the reference code's MoCo encoder."""

import math

import pytest
import torch
from ltcore import ConfigError, Plugins, hookimpl, resolve, train
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs

SETTINGS = [*FAST_SETTINGS, "views.classifier=standard", "views.contrastive=standard",
            "gml.queue_size=256", "gml.key_encoder=momentum", "gml.key_momentum=0.5"]


def reference_gml(query, labels, bank, bank_labels, prior, temperature, usable):
    """Eq. 4 entry by entry (float64) over the usable entries."""
    losses = []
    for b in range(query.shape[0]):
        logits = {}
        for c in range(len(prior)):
            terms = [math.exp(float(query[b] @ bank[j]) / temperature) for j in range(len(bank))
                     if int(bank_labels[j]) == c and bool(usable[b, j])]
            if terms:
                logits[c] = math.log(sum(terms) / len(terms)) + math.log(float(prior[c]))
        total = math.log(sum(math.exp(v) for v in logits.values()))
        losses.append(total - logits[int(labels[b])])
    return sum(losses) / len(losses)


class Watcher:
    """Per student step: the key encoder's and the student's parameters after the step."""

    def __init__(self):
        self.steps = []

    @hookimpl
    def step_end(self, step):
        if len(self.steps) >= 2:
            return
        run, model = step.run, step.stage.model
        encoder = run.modules["gml_key_encoder"]
        out = step.extras["gml"]
        self.steps.append({
            "key": [p.detach().clone() for p in encoder.backbone.parameters()],
            "student": [p.detach().clone() for p in model.backbone.parameters()],
            "key_head": [p.detach().clone() for p in model.heads["gml_key"].parameters()],
            "head": [p.detach().clone() for p in run.projection_head(model).parameters()],
            "mode": (encoder.training, any(p.requires_grad for p in encoder.parameters())),
            "losses": dict(out["losses"]), "prior": run.class_prior.double().cpu(),
            **{k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)}})


def test_momentum_keys_without_teacher(isolated):
    watcher = Watcher()
    plugins = Plugins(extra={"watcher": watcher})
    settings = resolve(plugins, ["gml", "watcher"], assignments=SETTINGS, overrides={"epochs": 1})
    result = train(plugins, ["gml", "watcher"], settings, progress=False)

    stages = {r.data.tags["ltcore.stage"] for r in recorded_runs(mlflow_client(), nested=True)}
    assert stages == {"train"}
    modules = torch.load(result.run_dir / "model.pt", weights_only=False)["modules"]
    assert not any(k.startswith("teacher.") for k in modules)
    assert any(k.startswith("gml_key_encoder.backbone.") for k in modules)

    first, second = watcher.steps
    for record in watcher.steps:
        assert record["mode"] == (True, False)  # MoCo's key encoder: train mode, no gradient
        assert set(record["losses"]) == {"gml", "gml-temperature"}  # no L_KD
        usable = record["bank_valid"].unsqueeze(0).expand(len(record["labels"]), -1)
        expected = reference_gml(record["query"].double(), record["labels"],
                                 record["bank"].double(), record["bank_labels"], record["prior"],
                                 float(record["temperature"]), usable)
        assert math.isclose(float(record["losses"]["gml"]), expected, rel_tol=1e-5)
    # step 1: key <- 0.5 key + 0.5 student with key == student at the start: the start itself
    # step 2: key <- 0.5 key_1 + 0.5 student_1 (the student after step 1's update)
    for name, student in (("key", "student"), ("key_head", "head")):
        for k1, s1, k2 in zip(first[name], first[student], second[name]):
            torch.testing.assert_close(k2, 0.5 * k1 + 0.5 * s1, rtol=1e-5, atol=1e-6)
        assert any(not torch.equal(k, s) for k, s in zip(second[name], second[student]))


def test_momentum_refuses_a_teacher(make_run):
    with pytest.raises(ConfigError, match="gml.key_encoder = momentum"):
        make_run(["gml"], "gml.key_encoder=momentum", "gml.teacher=somewhere/model.pt")
    with pytest.raises(ConfigError, match="key_momentum"):
        make_run(["gml"], "gml.key_momentum=1.5")
