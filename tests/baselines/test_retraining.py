"""cRT, LWS, tau-norm and DRW inside real runs (in-process, FAST settings, one shared store)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ltcore import hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import prepare, train
from ltcore.evaluation import model_outputs
from ltcore.models import LinearClassifier
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("retraining")
    return [f"tracking.uri=sqlite:///{root}/mlflow.db", f"output={root}/runs", "device=cpu"]


def settings(plugins, selected, store, *assignments, epochs=1):
    return resolve(plugins, selected, assignments=[*FAST_SETTINGS, *store, *assignments],
                   overrides={"epochs": epochs})


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class StageSpy:
    """Records the model at the end of every stage and the classifier right after a stage
    starts (after the plugins' own ``stage_start``)."""

    def __init__(self):
        self.at_end, self.at_start = {}, {}

    @hookimpl
    def stage_end(self, run, stage):
        self.at_end[stage.name] = snapshot(run.model)

    @hookimpl(trylast=True)
    def stage_start(self, run, stage):
        self.at_start[stage.name] = snapshot(run.model.classifier)


def test_crt_then_lws_train_only_what_they_should(store):
    from ltcore.builtin.crt import reinitialisation_seed, reinitialise

    spy = StageSpy()
    plugins = Plugins(extra={"spy": spy})
    selected = ["ce", "crt", "lws", "spy"]
    result = train(plugins, selected, settings(plugins, selected, store, "crt.epochs=1",
                                               "lws.epochs=1", "crt.lr=0.5", "lws.lr=0.5"),
                   progress=False)
    main, crt, lws = spy.at_end["train"], spy.at_end["classifier"], spy.at_end["lws"]
    backbone = [k for k in main if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    # the encoder (BatchNorm statistics included) is frozen in both retraining stages
    assert all(torch.equal(main[k], crt[k]) and torch.equal(crt[k], lws[k]) for k in backbone)
    # cRT starts from a seeded re-initialisation, not from the main stage's classifier
    # the classifier's own init: Kaiming normal on the CIFAR ResNet (model.classifier_init auto)
    expected = LinearClassifier(main["classifier.weight"].shape[1],
                                main["classifier.weight"].shape[0], init="kaiming_normal")
    expected.register_parameter("lws_scale", torch.nn.Parameter(torch.ones(10)))
    reinitialise(expected, reinitialisation_seed(SimpleNamespace(config=SimpleNamespace(seed=0))))
    started = spy.at_start["classifier"]
    assert torch.equal(started["weight"], expected.weight.detach())
    assert not torch.equal(started["weight"], main["classifier.weight"])
    assert not torch.equal(crt["classifier.weight"], started["weight"])  # and it trained
    assert torch.equal(crt["classifier.lws_scale"], torch.ones(10))
    # LWS learns the scales only
    assert torch.equal(lws["classifier.weight"], crt["classifier.weight"])
    assert torch.equal(lws["classifier.bias"], crt["classifier.bias"])
    assert not torch.equal(lws["classifier.lws_scale"], torch.ones(10))
    saved = torch.load(result.run_dir / "model.pt", weights_only=False)["modules"]
    assert torch.equal(saved["model.classifier.lws_scale"], lws["classifier.lws_scale"])
    assert "val/acc" in result.metrics


class WeightsBeforeTauNorm:
    """Records the classifier's weights as every evaluation starts (before tau-norm acts)."""

    @hookimpl(tryfirst=True)
    def adjust_eval_logits(self, evaluation):
        self.weight = evaluation.run.model.classifier.weight.detach().clone()


def test_tau_norm_normalises_the_final_classifier(store):
    spy = WeightsBeforeTauNorm()
    plugins = Plugins(extra={"spy": spy})
    selected = ["ce", "tau-norm", "spy"]
    result = train(plugins, selected, settings(plugins, selected, store), progress=False)
    tau = result.metrics["tau-norm/tau"]
    assert tau in [round(0.1 * i, 1) for i in range(21)]
    saved = torch.load(result.run_dir / "model.pt", weights_only=False)["modules"]
    norms = spy.weight.norm(dim=1, keepdim=True)
    assert torch.allclose(saved["model.classifier.weight"], spy.weight / norms ** tau, atol=1e-6)
    assert torch.equal(saved["model.classifier.bias"], torch.zeros(10))
    # the reported figures are those of the normalised classifier
    run = prepare(plugins, selected, settings(plugins, selected, store))
    run.modules.load_state_dict(saved)
    figures = run.evaluate(final=True).figures()
    assert figures["val/acc"] == result.metrics["val/acc"]
    assert figures["test/acc"] == result.metrics["test/acc"]
    assert result.metrics["tau-norm/val_acc"] == result.metrics["val/acc"]


def test_tau_norm_chooses_tau_on_validation_never_on_test(store):
    plugins = Plugins()
    selected = ["ce", "tau-norm"]
    run = prepare(plugins, selected, settings(plugins, selected, store,
                                              "tau-norm.grid=[0.0, 1.0, 2.0]"))
    tau_norm = run.plugin_object("tau-norm")
    model = run.model
    with torch.no_grad():  # class vectors of very different norms: tau changes predictions
        model.classifier.weight.mul_(torch.logspace(-1, 1, 10).unsqueeze(1))
    original = snapshot(model.classifier)

    def predictions(split, tau):
        _, features = model_outputs(run, model, split, keep_features=True)
        weight = original["weight"]
        return F.linear(features, weight / weight.norm(dim=1, keepdim=True) ** tau).argmax(dim=1)

    def final_epoch(epoch=0):
        """The last stage's final evaluation and epoch_end, as the trainer runs them."""
        metrics = run.evaluate(stage=run.stages[-1], final=epoch == 0).figures()
        tau_norm.epoch_end(run=run, stage=run.stages[-1], epoch=epoch, metrics=metrics)
        return metrics

    val, test = run.dataset.val, run.dataset.test
    for val_tau, test_tau in ((0.0, 2.0), (2.0, 0.0), (1.0, 0.0)):
        model.classifier.load_state_dict(original)
        tau_norm.load_state_dict({"record": None})
        val.labels = predictions(val, val_tau)
        test.labels = predictions(test, test_tau)
        assert not torch.equal(test.labels, predictions(test, val_tau))
        metrics = final_epoch()
        assert metrics["tau-norm/tau"] == val_tau
        assert metrics["val/acc"] == 100.0 and metrics["test/acc"] < 100.0
        assert tau_norm.record["validation"][str(val_tau)] == 100.0
    tau_norm.load_state_dict({"record": None})
    metrics = {k: v for k, v in final_epoch(epoch=-1).items() if k.startswith("tau-norm")}
    assert metrics == {}  # only at the last epoch of the last stage


def test_tau_norm_refuses_data_without_validation_unless_given_a_fallback_tau(store):
    from ltcore import DataError

    plugins = Plugins()
    selected = ["ce", "tau-norm"]
    for fallback in (None, 1.5):
        extra = [] if fallback is None else [f"tau-norm.fallback_tau={fallback}"]
        run = prepare(plugins, selected, settings(plugins, selected, store, *extra))
        run.dataset.val = None  # as iNaturalist 2018: no validation split
        weight = run.model.classifier.weight.detach().clone()
        tau_norm = run.plugin_object("tau-norm")
        if fallback is None:
            with pytest.raises(DataError, match="set tau-norm.fallback_tau"):
                run.evaluate(stage=run.stages[-1], final=True)
            continue
        metrics = run.evaluate(stage=run.stages[-1], final=True).figures()
        tau_norm.epoch_end(run=run, stage=run.stages[-1], epoch=0, metrics=metrics)
        assert metrics["tau-norm/tau"] == 1.5 and "tau-norm/val_acc" not in metrics
        expected = weight / weight.norm(dim=1, keepdim=True) ** 1.5
        assert torch.allclose(run.model.classifier.weight, expected, atol=1e-6)


class DrwSpy:
    """Recomputes the LDAM-DRW term on each training step's logits, with and without the
    class-balanced weights."""

    def __init__(self):
        self.steps = []

    @hookimpl
    def step_end(self, step):
        from ltcore.losses.classification import (
            class_balanced_weights,
            ldam_loss,
            ldam_margins,
        )

        counts = step.run.class_counts
        z = step.logits["cls"].detach() / step.run.model.classifier.scale
        y = step.targets("cls")
        margins = ldam_margins(counts, 0.5)
        plain = ldam_loss(z, y, margins, 30.0)
        weighted = ldam_loss(z, y, margins, 30.0, weight=class_balanced_weights(counts, 0.9999))
        used = step.stage.loss("ldam-drw")(step).detach()
        self.steps.append((step.epoch, math.isclose(used, plain, rel_tol=1e-6),
                           math.isclose(used, weighted, rel_tol=1e-6)))


def test_drw_switches_at_the_configured_epoch_of_a_run(store):
    spy = DrwSpy()
    plugins = Plugins(extra={"spy": spy})
    selected = ["ldam-drw", "spy"]
    train(plugins, selected, settings(plugins, selected, store, "ldam-drw.drw_epoch=1",
                                      epochs=2), progress=False)
    epochs = {e for e, _, _ in spy.steps}
    assert epochs == {0, 1}
    assert all(plain and not weighted for e, plain, weighted in spy.steps if e == 0)
    assert all(weighted and not plain for e, plain, weighted in spy.steps if e == 1)
