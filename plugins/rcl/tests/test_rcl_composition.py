"""RCL composed onto other plugins' losses: assembly, the hook path, errors, presets, compression.

These tests assemble runs (``ltcore.engine.prepare``) without training them.
"""

from __future__ import annotations

import math

import attrs
import pytest
import torch
import torch.nn.functional as F
from ltcore_rcl import class_prior_bias, rebalanced_supcon_loss
from ltcore_rcl.state import MODULE, assign_factors, measure_and_switch

from ltcore import (
    ConfigError,
    LossTerm,
    PluginError,
    Plugins,
    Step,
    hookimpl,
    prepare,
    resolve,
)
from ltcore.testing import FAST, FAST_SETTINGS

RTOL = 1e-5


@pytest.fixture(scope="module")
def plugins():
    return Plugins(extra={"fixed-contrast": FixedContrast(), "late-contrast": LateFixedContrast(),
                          "no-val": NoValidationSplit()})


def assemble(plugins, selected, *assignments, epochs=2):
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, *assignments],
                       overrides={"epochs": epochs})
    return prepare(plugins, selected, settings)


def assert_close(actual, expected):
    a, e = float(actual.detach()), float(expected.detach())
    assert math.isfinite(a) and abs(a - e) <= RTOL * abs(e), (a, e)


def step_with_embeddings(run, seed=0, rows=16):
    """A step of the main stage with random unit embeddings on both contrastive views."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, run.dataset.num_classes, (rows,), generator=generator)
    step = Step(run, run.main_stage, 0, 0, {"sample": torch.arange(rows)}, {"sample": labels}, {})
    for role in step.embedding_roles():
        step.embeddings[role] = F.normalize(torch.randn(rows, 128, generator=generator), dim=1)
    return step


def contrastive_term(run) -> LossTerm:
    (term,) = run.main_stage.contrastive_losses
    return term


def add_unrebalanceable_term(run, plugin: str) -> None:
    """A contrastive term that takes no logit bias (``rebalanceable=False``)."""
    from ltcore.losses import supcon_loss

    run.contrastive_views(2)

    def fn(step):
        z, labels = step.stacked_embeddings()
        return supcon_loss(z, labels, 0.1)

    run.main_stage.add_loss(LossTerm("fixed-supcon", fn, plugin, kind="contrastive",
                                     rebalanceable=False))


class FixedContrast:
    """A test plugin whose contrastive term cannot be rebalanced."""

    @hookimpl
    def setup_run(self, run):
        add_unrebalanceable_term(run, "fixed-contrast")


class LateFixedContrast:
    """The same, set up with ``trylast=True`` (as GML does): RCL must still see its term."""

    @hookimpl(trylast=True)
    def setup_run(self, run):
        add_unrebalanceable_term(run, "late-contrast")


class NoValidationSplit:
    """A test plugin registering the embedded dataset without its validation split."""

    @hookimpl
    def register_datasets(self, register):
        def factory(config):
            from ltcore.testing import tiny_dataset as digits_lt

            return attrs.evolve(digits_lt(config.imbalance_factor), val=None)

        register("digits-no-val", factory)


# -- assembly -------------------------------------------------------------------------------


def test_rcl_alone_is_la_ce_plus_rebalanced_supcon(plugins):
    run = assemble(plugins, ["rcl"])
    stage = run.main_stage
    term = contrastive_term(run)
    assert (term.name, term.plugin, term.weight, term.rebalanceable) == ("supcon", "rcl", 1.0, True)
    classifier = stage.classifier_loss
    assert (classifier.name, classifier.plugin, classifier.weight) == ("la-ce", "rcl", 2.0)
    assert stage.classifier_loss_is_default
    assert {r for r, v in stage.views.items() if v.embed} == {"con0", "con1"}
    # without a preset the dataset's views (the CIFAR presets set the paper's)
    assert stage.views["cls"].pipeline == "standard"
    assert stage.views["con0"].pipeline == "standard"
    # LA-CE with tau 1.3 on the classifier logits
    from ltcore.losses import logit_adjusted_cross_entropy

    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(8)
    step = Step(run, stage, 0, 0, {"sample": targets}, {"sample": targets}, {},
                logits={"cls": logits})
    expected = logit_adjusted_cross_entropy(logits, targets, run.class_prior, 1.3)
    assert_close(classifier(step), expected)
    assert set(run.metrics) >= {"calinski-harabasz", "davies-bouldin"}


def test_a_chosen_classifier_loss_wins_over_rcls_default(plugins):
    run = assemble(plugins, ["la", "rcl"], "la.tau=0.5")
    assert run.main_stage.classifier_loss.plugin == "la"
    assert contrastive_term(run).plugin == "rcl"


@pytest.mark.parametrize("selected", [["supcon", "rcl"], ["rcl", "supcon"]])
def test_supcon_plus_rcl_rebalances_supcons_own_term(plugins, selected):
    run = assemble(plugins, selected)
    term = contrastive_term(run)
    assert (term.name, term.plugin) == ("supcon", "supcon")
    assert [(t.plugin, t.name) for t in run.plugin_object("rcl").terms] == [("supcon", "supcon")]
    assert run.main_stage.classifier_loss.name == "ce"


def test_bcl_plus_rcl_rebalances_bcl(plugins):
    run = assemble(plugins, ["bcl", "rcl"])
    term = contrastive_term(run)
    assert (term.name, term.plugin) == ("bcl", "bcl")
    assert run.main_stage.classifier_loss.plugin == "bcl"
    assert [t.name for t in run.main_stage.losses].count("supcon") == 0


# -- the hook path equals the plain functions ------------------------------------------------


@pytest.mark.parametrize("selected", [["rcl"], ["supcon", "rcl"]])
def test_hook_path_of_supcon_equals_rebalanced_supcon_loss(plugins, selected):
    run = assemble(plugins, selected)
    step = step_with_embeddings(run)
    z, labels = step.stacked_embeddings()
    expected = rebalanced_supcon_loss(z, labels, run.class_counts, 0.1)
    assert_close(contrastive_term(run)(step), expected)
    # and not the plain SupCon value
    from ltcore.losses import supcon_loss

    assert abs(float(expected) - float(supcon_loss(z, labels, 0.1))) > 1e-3


@pytest.mark.parametrize("prototype_prior", [True, False])
def test_hook_path_of_bcl_equals_eq5(plugins, prototype_prior):
    from ltcore_bcl import balanced_contrastive_loss

    run = assemble(plugins, ["bcl", "rcl"], f"rcl.prototype_prior={str(prototype_prior).lower()}")
    run.model.eval()
    step = step_with_embeddings(run, seed=3)
    z, labels = step.stacked_embeddings()
    prototypes = run.build("prototype-provider", "classifier-mlp").prototypes(step)
    classes = torch.arange(run.dataset.num_classes)
    expected = balanced_contrastive_loss(
        z, labels, prototypes, 0.1, logit_bias=class_prior_bias(labels, run.class_counts)[None, :],
        prototype_bias=(class_prior_bias(classes, run.class_counts)[None, :] if prototype_prior
                        else None))
    assert_close(contrastive_term(run)(step), expected)


def test_bias_reaches_only_the_rebalanced_losses(plugins):
    from ltcore import ContrastSet, LossTerm

    run = assemble(plugins, ["rcl"])
    step = step_with_embeddings(run)
    labels = step.targets("con0")
    no_prototypes = torch.zeros(len(labels), dtype=torch.bool)
    supcon = contrastive_term(run)
    bias = run.contrastive_bias(ContrastSet(step, supcon, labels, labels, no_prototypes))
    torch.testing.assert_close(bias, torch.log(run.class_counts.float())[labels][None, :])
    other = LossTerm("other-loss", lambda step: None, "other", kind="contrastive")
    assert run.contrastive_bias(ContrastSet(step, other, labels, labels, no_prototypes)) is None


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("selected", [["fixed-contrast", "rcl"], ["rcl", "fixed-contrast"],
                                      ["late-contrast", "rcl"], ["rcl", "late-contrast"]])
def test_unrebalanceable_loss_is_an_error_naming_both_plugins(plugins, selected):
    (other,) = [name for name in selected if name != "rcl"]
    with pytest.raises(PluginError) as info:
        assemble(plugins, selected)
    message = str(info.value)
    assert "plugin 'rcl'" in message and f"plugin '{other}'" in message
    assert "'fixed-supcon'" in message


def test_bcl_l3_with_rcl_fails_on_the_command_line(ltrun):
    result = ltrun("--plugin", "bcl", "--set", "bcl.averaging=L3", "--plugin", "rcl",
                   "--epochs", "2", *FAST)
    assert result.exit_code == 2
    assert "'rcl'" in result.stderr and "plugin 'bcl'" in result.stderr
    assert "Traceback" not in result.stderr


def test_compression_needs_a_validation_split(plugins):
    with pytest.raises(ConfigError, match="no validation split") as info:
        assemble(plugins, ["rcl"], "dataset=digits-no-val")
    assert "rcl.compression=false" in str(info.value)
    run = assemble(plugins, ["rcl"], "dataset=digits-no-val", "rcl.compression=false")
    assert run.dataset.val is None


def test_compression_epoch_past_the_stage_is_an_error(plugins):
    with pytest.raises(ConfigError, match="never switch on"):
        assemble(plugins, ["rcl"], "rcl.compression_epoch=2", epochs=2)


@pytest.mark.parametrize("assignment", ["rcl.compression_threshold=1.5",
                                        "rcl.compression_factor_others=0",
                                        "rcl.compression_epoch=-1", "rcl.temperature=0"])
def test_invalid_options_are_config_errors(plugins, assignment):
    with pytest.raises(ConfigError, match=assignment.split("=")[0]):
        resolve(plugins, ["rcl"], assignments=[assignment])


# -- presets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10-lt", "cifar100-lt"])
def test_rcl_preset_alone(plugins, name):
    settings = resolve(plugins, ["rcl"], presets=[name])
    cfg, options = settings.run, settings.plugins["rcl"]
    assert (cfg.dataset, cfg.imbalance_factor) == (name, 100.0)
    assert (cfg.epochs, cfg.batch_size) == (200, 256)
    assert (cfg.optim.lr, cfg.model.backbone) == (0.2, "resnet32")
    assert (cfg.views.classifier, cfg.views.contrastive) == ("autoaugment-cutout", "simaugment")
    assert options.la_tau == 1.3
    assert (options.classifier_weight, options.contrastive_weight) == (2.0, 1.0)
    assert (options.compression_factor_below, options.compression_factor_others) == (1.0, 0.005)


def test_bcl_plus_rcl_preset_takes_rcls_learning_rate(plugins):
    settings = resolve(plugins, ["bcl", "rcl"], presets=["cifar10-lt"])
    cfg = settings.run
    assert cfg.optim.lr == 0.2 and cfg.dataset == "cifar10-lt" and cfg.model.classifier == "cosine"
    assert cfg.schedule.milestones == (160, 180) and cfg.schedule.warmup_epochs == 5
    assert settings.plugins["bcl"].classifier_weight == 2.0


# -- compression ----------------------------------------------------------------------------


def test_assign_factors_threshold_rule():
    accuracy = torch.tensor([0.0, 0.19, 0.2, 0.9, float("nan")])
    factors, below = assign_factors(accuracy, 0.2, 1.0, 0.005)
    assert below.tolist() == [True, True, False, False, True]
    assert factors.tolist() == pytest.approx([1.0, 1.0, 0.005, 0.005, 1.0])


def test_compression_scales_embeddings_once_switched(plugins):
    run = assemble(plugins, ["rcl"], "rcl.compression_factor_below=0.5",
                   "rcl.compression_factor_others=0.25", epochs=4)
    step = step_with_embeddings(run, seed=5)
    before = {r: e.clone() for r, e in step.embeddings.items()}
    for epoch in (0, 1):
        run.hooks.epoch_start(run=run, stage=run.main_stage, epoch=epoch)
    rcl = run.plugin_object("rcl")
    assert rcl.record is None
    run.hooks.adjust_embeddings(step=step)
    assert all(torch.equal(step.embeddings[r], before[r]) for r in before)

    run.hooks.epoch_start(run=run, stage=run.main_stage, epoch=2)
    record = rcl.record
    assert record["epoch"] == 2 and len(record["val_accuracy"]) == 10
    for c, accuracy in enumerate(record["val_accuracy"]):
        expected = 0.5 if not accuracy >= 0.2 else 0.25
        assert record["factors"][c] == expected
        assert (c in record["below_threshold"]) == (expected == 0.5)
    factors = run.modules[MODULE].factors
    assert factors.tolist() == pytest.approx(record["factors"])
    run.hooks.adjust_embeddings(step=step)
    for role in before:
        torch.testing.assert_close(step.embeddings[role],
                                   before[role] * factors[step.targets(role)][:, None])
    # the loss sees the compressed rows: eq. 4 on z~
    z, labels = step.stacked_embeddings()
    expected = rebalanced_supcon_loss(z, labels, run.class_counts, 0.1)
    assert_close(contrastive_term(run)(step), expected)
    # measured once: a later epoch keeps the record
    run.hooks.epoch_start(run=run, stage=run.main_stage, epoch=3)
    assert rcl.record is record


def test_measurement_uses_the_validation_split(plugins, monkeypatch):
    run = assemble(plugins, ["rcl"])
    # a model that predicts class 3 for everything: only class 3 reaches the threshold
    classifier = run.model.classifier
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.bias[3] = 10.0
    record = measure_and_switch(run, run.main_stage, 1, run.option("rcl"))
    assert record["others"] == [3]
    assert record["below_threshold"] == [c for c in range(10) if c != 3]
    assert record["val_accuracy"][3] == 1.0
    assert run.modules[MODULE].factors.tolist() == pytest.approx(
        [0.005 if c == 3 else 1.0 for c in range(10)])


def test_preset_keys_of_unselected_plugins_are_skipped(plugins):
    alone = resolve(plugins, ["rcl"], ["cifar10-lt"])
    assert "bcl" not in alone.plugins and alone.run.optim.lr == 0.2
    combined = resolve(plugins, ["bcl", "rcl"], ["cifar10-lt"])
    assert combined.plugins["bcl"].la_tau == 1.3 and combined.plugins["bcl"].contrastive_weight == 1.0
    assert combined.run.optim.lr == 0.2
