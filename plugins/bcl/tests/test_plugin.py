"""The bcl plugin inside runs: recipe, prototypes, presets, CLI."""

import pytest
import torch
from ltcore_bcl import balanced_contrastive_loss
from ltcore_bcl.plugin import PROTOTYPE_HEAD

from ltcore import Plugins, Step, prepare, resolve
from ltcore.testing import (
    FAST_SETTINGS,
    SHARED_CIFAR,
    recorded_runs,
    requires_shared_cifar,
)


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def bcl_run(plugins, *assignments, presets=()):
    settings = resolve(plugins, ["bcl"], presets, assignments=[*FAST_SETTINGS, *assignments])
    return prepare(plugins, ["bcl"], settings)


def fake_step(run, batch=8):
    stage = run.main_stage
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, run.dataset.num_classes, (batch,), generator=g)
    images = {role: torch.randn(batch, 3, 32, 32, generator=g) for role in stage.views}
    step = Step(run, stage, 0, 0, {"sample": torch.arange(batch)}, {"sample": labels}, images)
    model = stage.model
    for role, view in stage.views.items():
        f = model.backbone(images[role])
        if view.classify:
            step.logits[role] = model.classifier(f)
        if view.embed:
            step.embeddings[role] = run.embed(model, f)
    return step


def test_recipe_views_losses_and_weights(plugins):
    # the paper's views come with the CIFAR presets; without one, the dataset's views
    assert {r: v.pipeline for r, v in bcl_run(plugins).main_stage.views.items()} == {
        "cls": "standard", "con0": "standard", "con1": "standard"}
    run = bcl_run(plugins, "dataset=digits-lt", "imbalance_factor=10", "epochs=2",
                  presets=["cifar10-lt"])
    stage = run.main_stage
    assert {r: v.pipeline for r, v in stage.views.items()} == {
        "cls": "autoaugment-cutout", "con0": "simaugment", "con1": "simaugment"}
    assert [(t.name, t.weight, t.kind) for t in stage.losses] == [
        ("la-ce", 2.0, "classifier"), ("bcl", 0.6, "contrastive")]
    assert stage.loss("bcl").rebalanceable


def test_loss_term_equals_plain_function_and_gradient_reaches_classifier(plugins):
    run = bcl_run(plugins)
    step = fake_step(run)
    value = run.main_stage.loss("bcl")(step)
    z, labels = step.stacked_embeddings()
    weight = run.model.classifier.weight
    prototypes = torch.nn.functional.normalize(run.model.heads[PROTOTYPE_HEAD](weight), dim=1)
    expected = balanced_contrastive_loss(z, labels, prototypes, 0.1)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert run.model.heads[PROTOTYPE_HEAD][0].weight.grad.abs().sum() > 0


def test_balanced_softmax_replaces_bcl_default_classifier_loss(plugins):
    settings = resolve(plugins, ["bcl", "balanced-softmax"], assignments=FAST_SETTINGS)
    run = prepare(plugins, ["bcl", "balanced-softmax"], settings)
    classifier = run.main_stage.classifier_loss
    assert (classifier.name, classifier.plugin, classifier.weight) == ("balanced-softmax",
                                                                       "balanced-softmax", 2.0)


def test_ablation_switches_reach_the_loss(plugins):
    run = bcl_run(plugins, "bcl.averaging=L2", "bcl.class_complement=true")
    step = fake_step(run)
    z, labels = step.stacked_embeddings()
    weight = run.model.classifier.weight
    prototypes = torch.nn.functional.normalize(run.model.heads[PROTOTYPE_HEAD](weight), dim=1)
    torch.testing.assert_close(run.main_stage.loss("bcl")(step),
                               balanced_contrastive_loss(z, labels, prototypes, 0.1, averaging="L2"))


def test_presets(plugins):
    settings = resolve(plugins, ["bcl"], ["cifar100-lt-400"])
    cfg = settings.run
    assert (cfg.dataset, cfg.epochs, cfg.batch_size, cfg.optim.lr) == ("cifar100-lt", 400, 256, 0.15)
    assert cfg.schedule.milestones == (360, 380) and cfg.schedule.warmup_epochs == 10
    assert cfg.model.classifier == "cosine" and cfg.model.backbone == "resnet32"
    imagenet = resolve(plugins, ["bcl"], ["imagenet-lt-resnext50"])
    assert imagenet.run.model.backbone == "resnext50"
    assert imagenet.plugins["bcl"].contrastive_weight == 0.35
    for name in ("cifar10-lt", "cifar10-lt-400", "cifar100-lt", "imagenet-lt-resnet50",
                 "inaturalist2018"):
        assert name in plugins.presets["bcl"]


def test_cifar_preset_trains_two_epochs_on_embedded_dataset(ltrun):
    """The preset's own model, views and losses, two epochs of three steps of 32 images."""
    result = ltrun("--plugin", "bcl", "--preset", "cifar10-lt", "--epochs", "2",
                   "--dataset", "digits-lt", "--imbalance-factor", "10", "--batch-size", "32",
                   "--set", "views.workers=0", "--set", "limit.steps=3",
                   "--set", "tracking.log_model=false", "--no-progress")
    assert result.exit_code == 0, result.stderr
    (stage,) = recorded_runs(nested=True)
    assert stage.data.params["stage.losses"] == "2*la-ce, 0.6*bcl"
    assert stage.info.status == "FINISHED"


@pytest.mark.slow
@requires_shared_cifar()
def test_cifar_preset_trains_on_shared_cifar10_images(ltrun):
    result = ltrun("--plugin", "bcl", "--preset", "cifar10-lt", "--epochs", "2",
                   "--dataset", "imagefolder-lt", "--data-dir", str(SHARED_CIFAR), "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert "val: acc" in result.output
