"""BCL's prototype providers (supplementary Table 1): classifier-mlp, ema, learnable."""

import json

import pytest
import torch
import torch.nn.functional as F
from ltcore_bcl import balanced_contrastive_loss
from ltcore_bcl.plugin import EMA_MODULE, LEARNABLE_HEAD, PROTOTYPE_HEAD
from ltcore_bcl.prototypes import ClassMeans

import ltcore
from ltcore import ConfigError, Plugins, Step, prepare, protocols, resolve
from ltcore.testing import FAST_SETTINGS, parameter_groups


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def bcl_run(plugins, *assignments):
    settings = resolve(plugins, ["bcl"], assignments=[*FAST_SETTINGS, *assignments])
    return prepare(plugins, ["bcl"], settings)


def fake_step(run, batch=12, seed=0):
    """A step of random images through the stage's views, as the engine's forward makes it."""
    stage = run.main_stage
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, run.dataset.num_classes, (batch,), generator=g)
    images = {role: torch.randn(batch, 3, 32, 32, generator=g) for role in stage.views}
    step = Step(run, stage, 0, 0, {"sample": torch.arange(batch)}, {"sample": labels}, images)
    for role, view in stage.views.items():
        f = stage.model.backbone(images[role])
        if view.classify:
            step.logits[role] = stage.model.classifier(f)
        if view.embed:
            step.embeddings[role] = run.embed(stage.model, f)
    return step


def test_class_means_follow_the_hand_computed_moving_average():
    bank = ClassMeans(3, 2)
    bank.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 0, 1]), 0.9)
    # first batch of a class sets its mean; an absent class stays zero and unseen
    torch.testing.assert_close(bank.means, torch.tensor([[0.5, 0.5], [1.0, 1.0], [0.0, 0.0]]))
    assert bank.seen.tolist() == [True, True, False]
    bank.update(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 4.0]]), torch.tensor([0, 2, 2]), 0.9)
    # class 0: 0.9 * (0.5, 0.5) + 0.1 * (1, 0); class 1 absent: kept; class 2 first: (0, 3)
    torch.testing.assert_close(bank.means, torch.tensor([[0.55, 0.45], [1.0, 1.0], [0.0, 3.0]]))
    assert bank.seen.tolist() == [True, True, True]


def test_ema_prototypes_are_the_normalised_means_the_steps_left(plugins):
    run = bcl_run(plugins, "bcl.prototypes=ema", "bcl.ema_momentum=0.8")
    assert EMA_MODULE in run.modules and PROTOTYPE_HEAD not in run.model.heads
    provider = run.plugin_object(EMA_MODULE)
    assert isinstance(provider, protocols.PrototypeProvider)
    assert run.build("prototype-provider", "ema") is provider  # one per run
    steps = [fake_step(run, seed=s) for s in (0, 1)]
    expected = torch.zeros(run.dataset.num_classes, run.config.model.projection_dim)
    seen = set()
    for step in steps:
        z, labels = step.stacked_embeddings()
        # the loss of a step sees the means of the steps before it, L2-normalised
        torch.testing.assert_close(run.main_stage.loss("bcl")(step), balanced_contrastive_loss(
            z, labels, F.normalize(expected, dim=1), 0.1))
        run.hooks.step_end(step=step)
        for c in labels.unique().tolist():
            mean = z[labels == c].detach().mean(0)
            expected[c] = mean if c not in seen else 0.8 * expected[c] + 0.2 * mean
            seen.add(c)
        torch.testing.assert_close(run.modules[EMA_MODULE].means, expected)
    torch.testing.assert_close(provider.prototypes(), F.normalize(expected, dim=1))
    assert not provider.prototypes().requires_grad


def test_learnable_prototypes_get_the_contrastive_gradient_and_are_trained(plugins):
    run = bcl_run(plugins, "bcl.prototypes=learnable")
    weight = run.model.heads[LEARNABLE_HEAD].weight
    assert weight.shape == (run.dataset.num_classes, run.config.model.projection_dim)
    assert PROTOTYPE_HEAD not in run.model.heads
    assert any(p is weight for g in parameter_groups(run, run.main_stage) for p in g["params"])
    step = fake_step(run)
    z, labels = step.stacked_embeddings()
    value = run.main_stage.loss("bcl")(step)
    torch.testing.assert_close(value, balanced_contrastive_loss(z, labels,
                                                                F.normalize(weight, dim=1), 0.1))
    value.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert run.model.classifier.weight.grad is None  # L_BCL no longer reaches the classifier


def test_the_default_is_the_classifier_mlp(plugins):
    run = bcl_run(plugins)
    assert run.option("bcl").prototypes == "classifier-mlp"
    assert PROTOTYPE_HEAD in run.model.heads and LEARNABLE_HEAD not in run.model.heads
    assert EMA_MODULE not in run.modules


@pytest.mark.parametrize("assignment, key", [("bcl.prototypes=mean", "bcl.prototypes"),
                                             ("bcl.ema_momentum=1", "bcl.ema_momentum")])
def test_bad_values_are_one_line(plugins, assignment, key):
    with pytest.raises(ConfigError, match=key) as error:
        resolve(plugins, ["bcl"], assignments=[assignment])
    assert "\n" not in str(error.value)


@pytest.mark.skipif(not hasattr(ltcore, "record_figure"), reason="needs ltcore.record_figure")
def test_a_2d_run_records_its_prototypes_and_the_ema_steps_through_the_engine(one_epoch_run):
    # the one test that trains (two steps; ~10 s, mostly the run's start and MLflow): the
    # figure is written at the run's end, and the engine calls the ema provider's step_end
    run = one_epoch_run("--plugin", "bcl", "--set", "model.projection_dim=2",
                        "--set", "bcl.prototypes=ema", "--set", "limit.steps=2")
    data = json.loads((run.folder / "figures" / "prototypes.json").read_text())
    prototypes = torch.tensor(data["prototypes"])
    assert prototypes.shape == (10, 2)
    norms = prototypes.norm(dim=1)  # unit rows for the classes the steps saw, 0 for the others
    assert torch.allclose(norms, norms.round(), atol=1e-5)
    assert norms[0] == pytest.approx(1, abs=1e-5)  # class 0, the head, was seen: step_end ran
