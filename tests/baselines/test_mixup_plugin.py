"""``--plugin mixup``: CE with mixup (Zhang et al. 2018) through the core's batched mixing."""

import pytest
import torch
import torch.nn.functional as F

from ltcore import ConfigError, Plugins, resolve
from ltcore.testing import FAST, forward, mlflow_client, recorded_runs, training_step


def test_selecting_mixup_sets_the_core_mixing(make_run):
    run = make_run(["mixup"])
    assert run.config.mix.mixup_alpha == 1.0 and run.config.mix.active
    assert run.settings.run.mix.mixup_alpha == 1.0
    assert [t.name for t in run.main_stage.losses] == ["mixup-ce"]
    assert make_run(["mixup"], "mixup.alpha=0.2").config.mix.mixup_alpha == 0.2
    # the same value by hand is accepted (a resumed run's settings carry it); another is not
    assert make_run(["mixup"], "mix.mixup_alpha=1.0").config.mix.mixup_alpha == 1.0
    with pytest.raises(ConfigError, match="set only mixup.alpha"):
        make_run(["mixup"], "mix.mixup_alpha=0.4")
    with pytest.raises(ConfigError, match="mixup.alpha"):
        resolve(Plugins(), ["mixup"], assignments=["mixup.alpha=0"])


def test_the_loss_is_the_mixed_cross_entropy_by_hand(make_run):
    from ltcore.engine.mixing import draw, step_seed

    run = make_run(["mixup"], "mixup.alpha=0.5")
    stage, model = run.main_stage, run.main_stage.model
    step = training_step(run, batch_size=12)
    images, labels = step.images["cls"].clone(), step.targets("cls").clone()
    seed = step_seed(run.epoch_seed(stage, step.epoch), step.iteration)
    (loss,) = forward(run, step)

    mix = draw(run.config.mix, seed, [len(images)], images.shape[-2], images.shape[-1])
    partner, lam = mix.partner.tolist(), mix.lam
    assert 0.0 < lam < 1.0 and sorted(partner) == list(range(len(images)))
    mixed = torch.stack([lam * images[i] + (1.0 - lam) * images[partner[i]]
                         for i in range(len(images))])
    with torch.no_grad():
        logits = model.classifier(model.backbone(mixed)).double()
    expected = 0.0
    for i in range(len(images)):
        log_norm = torch.logsumexp(logits[i], 0)
        expected += -(lam * (logits[i, labels[i]] - log_norm)
                      + (1.0 - lam) * (logits[i, labels[partner[i]]] - log_norm))
    expected /= len(images)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    unmixed = F.cross_entropy(logits, labels)
    assert not torch.isclose(unmixed, expected)


def test_presets_follow_the_recipes():
    plugins = Plugins()
    cifar = resolve(plugins, ["mixup"], presets=["cifar100-lt"]).run
    assert (cifar.dataset, cifar.model.backbone, cifar.epochs, cifar.batch_size) == (
        "cifar100-lt", "resnet32", 200, 128)
    assert (cifar.schedule.milestones, cifar.schedule.gamma, cifar.optim.weight_decay) == (
        (120, 160), 0.01, 2e-4)
    imagenet = resolve(plugins, ["mixup"], presets=["imagenet-lt"]).run
    assert (imagenet.model.backbone, imagenet.batch_size, imagenet.optim.lr) == (
        "resnext50", 256, 0.1)


def test_ltrun_trains_with_mixup(ltrun):
    # about 5 s: the one end-to-end training run of the plugin (CLI, MLflow, evaluation)
    result = ltrun("--plugin", "mixup", "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.stderr
    (parent,) = recorded_runs(mlflow_client(), nested=False)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["mixup.alpha"] == "1.0"
    assert parent.data.params["mix.mixup_alpha"] == "1.0"
    assert "test/acc" in parent.data.metrics
