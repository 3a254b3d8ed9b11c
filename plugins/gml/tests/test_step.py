"""A real short GML run, watched step by step: the losses against direct computations of the
paper's formulas, the self-image exclusion, enqueue-before-loss, the frozen teacher and tau_g."""

import math

import torch

from ltcore import Plugins, hookimpl, resolve, train
from ltcore.testing import FAST_SETTINGS, mlflow_client, recorded_runs

SETTINGS = [*FAST_SETTINGS, "views.classifier=standard", "views.contrastive=standard",
            "gml.teacher_epochs=1", "gml.queue_size=256"]


class Spy:
    """Records the first steps of the student stage and the teacher around it."""

    def __init__(self, keep=2):
        self.keep = keep
        self.steps = []
        self.teacher_modes = []
        self.teacher_at_start = None
        self.key_head_at_start = None
        self.prior = None

    @hookimpl
    def stage_start(self, run, stage):
        if stage.name == "train":
            self.prior = run.class_prior.double().cpu()
            self.teacher_at_start = {k: v.clone() for k, v in run.modules["teacher"].state_dict().items()
                                     if torch.is_tensor(v)}
            key_head = stage.model.heads["gml_key"]
            self.key_head_at_start = {k: v.clone() for k, v in key_head.state_dict().items()}

    @hookimpl
    def step_end(self, step):
        if step.stage.name != "train":
            return
        teacher = step.run.modules["teacher"]
        self.teacher_modes.append((teacher.training, any(p.requires_grad for p in teacher.parameters())))
        if len(self.steps) < self.keep:
            out = step.extras["gml"]
            record = {k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)}
            record["losses"] = {k: v.clone() for k, v in out["losses"].items()}
            record["student_logits"] = step.logits["cls"].detach().clone()
            self.steps.append(record)


def reference_gml(query, labels, bank, bank_labels, prior, temperature, alpha, usable):
    """Eq. 10 entry by entry (float64): log-mean-exp per class over usable entries, + alpha log pi,
    CE over the classes that have an entry; queries whose class has none are left out."""
    losses = []
    for b in range(query.shape[0]):
        logits = {}
        for c in range(len(prior)):
            terms = [math.exp(float(query[b] @ bank[j]) / temperature) for j in range(bank.shape[0])
                     if int(bank_labels[j]) == c and bool(usable[b, j])]
            if terms:
                logits[c] = math.log(sum(terms) / len(terms)) + alpha * math.log(float(prior[c]))
        if int(labels[b]) in logits:
            total = math.log(sum(math.exp(v) for v in logits.values()))
            losses.append(total - logits[int(labels[b])])
    return sum(losses) / len(losses)


def reference_kd(student, teacher, temperature):
    """T^2 / B sum_i sum_c q_ic log(q_ic / p_ic), q = softmax(t / T), p = softmax(s / T)."""
    q = torch.softmax(teacher.double() / temperature, dim=1)
    p = torch.softmax(student.double() / temperature, dim=1)
    return float(temperature ** 2 * (q * (q.log() - p.log())).sum() / len(q))


def test_short_run_losses_exclusion_teacher_and_temperature(isolated):
    spy = Spy()
    plugins = Plugins(extra={"spy": spy})
    settings = resolve(plugins, ["gml", "spy"], assignments=SETTINGS, overrides={"epochs": 1})
    result = train(plugins, ["gml", "spy"], settings, progress=False)

    # Both stages ran, each as its own nested MLflow run.
    stages = {r.data.tags["ltcore.stage"]: r for r in recorded_runs(mlflow_client(), nested=True)}
    assert set(stages) == {"teacher", "train"}
    assert all(r.info.status == "FINISHED" for r in stages.values())

    prior = spy.prior
    saved = torch.load(result.run_dir / "model.pt", weights_only=False)
    modules = saved["modules"]
    first, second = spy.steps
    for record in spy.steps:
        query, labels, indices = record["query"].double(), record["labels"], record["indices"]
        bank, bank_labels = record["bank"].double(), record["bank_labels"]
        bank_indices, valid = record["bank_indices"], record["bank_valid"]
        tau = float(record["temperature"])
        usable = valid.unsqueeze(0).expand(len(labels), -1)
        own = indices.unsqueeze(1) == bank_indices.unsqueeze(0)
        # Enqueue before the loss: the batch's own keys are already in the bank.
        assert bool(own.any(dim=1).all())
        expected = reference_gml(query, labels, bank, bank_labels, prior, tau, 1.0, usable)
        assert math.isclose(float(record["losses"]["gml"]), expected, rel_tol=1e-5)
        # tau_g's loss leaves the query's own image out, and that changes it.
        expected_t = reference_gml(query, labels, bank, bank_labels, prior, tau, 1.0, usable & ~own)
        with_own = reference_gml(query, labels, bank, bank_labels, prior, tau, 1.0, usable)
        assert math.isclose(float(record["losses"]["gml-temperature"]), expected_t, rel_tol=1e-5)
        assert not math.isclose(expected_t, with_own, rel_tol=1e-3)
        kd = reference_kd(record["student_logits"], record["teacher_logits"], 4.0)
        assert math.isclose(float(record["losses"]["kd"]), kd, rel_tol=1e-4)

    # On the very first student step the queue held exactly what the batch wrote.
    sizes = torch.tensor([int((first["bank_labels"] == c).sum()) for c in range(len(prior))])
    batch_counts = torch.bincount(first["labels"], minlength=len(prior))
    assert int(first["bank_valid"].sum()) == int(torch.minimum(sizes, batch_counts).sum())
    assert set(first["bank_indices"][first["bank_valid"]].tolist()) <= set(first["indices"].tolist())
    assert int(second["bank_valid"].sum()) > int(first["bank_valid"].sum())

    # tau_g is learned: it moved away from its start, and is logged per epoch.
    log_tau = modules["model.heads.gml_temperature.log_temperature"]
    assert float(log_tau) != math.log(0.1)
    assert math.isclose(float(first["temperature"]), 0.1, rel_tol=1e-6)
    assert float(second["temperature"]) != float(first["temperature"])
    logged = mlflow_client().get_metric_history(stages["train"].info.run_id, "train/gml_temperature")
    assert len(logged) == 1 and math.isclose(logged[0].value, math.exp(float(log_tau)), rel_tol=1e-6)

    # The teacher stayed frozen and in eval mode for the whole student stage.
    assert spy.teacher_modes and all(mode == (False, False) for mode in spy.teacher_modes)
    for key, value in spy.teacher_at_start.items():
        assert torch.equal(modules[f"teacher.{key}"], value), key
    assert modules["teacher._extra_state"]["backbone"] == "resnet8"
    # The key MLP is trained.
    assert any(not torch.equal(modules[f"model.heads.gml_key.{k}"], v)
               for k, v in spy.key_head_at_start.items() if v.is_floating_point())
