"""The paco plugin in runs: assembly, the term against the plain loss, the bias hook, the key
encoder and queue (updates and saved state), presets, RCL and the CLI."""

import pytest
import torch
from ltcore_paco import paco_loss
from ltcore_paco.method import KEY_ENCODER_MODULE, KEY_ROLE, QUEUE_MODULE, KeyQueue

from ltcore import Plugins, Step, hookimpl, load_saved_run, prepare, resolve
from ltcore.testing import FAST, FAST_SETTINGS, forward, recorded_runs, run_folder


class BiasRecorder:
    """A test plugin whose contrastive bias is a fixed random tensor; it keeps what it saw."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def contrastive_logit_bias(self, contrast):
        self.seen.append(contrast)
        g = torch.Generator().manual_seed(11)
        return torch.randn(len(contrast.anchor_labels), len(contrast.column_labels), generator=g)


RECORDER = BiasRecorder()


@pytest.fixture(scope="module")
def plugins():
    return Plugins(extra={"bias-recorder": RECORDER})


def assemble(plugins, selected=("paco",), *assignments, presets=()):
    settings = resolve(plugins, list(selected), presets,
                       assignments=[*FAST_SETTINGS, *assignments])
    return prepare(plugins, list(selected), settings)


def fake_step(run, batch=8, seed=0):
    """A step of the main stage with random images for every view."""
    stage = run.main_stage
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, run.dataset.num_classes, (batch,), generator=g)
    images = {role: torch.randn(batch, run.dataset.channels, 32, 32, generator=g)
              for role in stage.views}
    return Step(run, stage, 0, 0, {"sample": torch.arange(batch)}, {"sample": labels}, images)


def plain_loss(run, step, **extra):
    """``paco_loss`` on the step's tensors with the run's options and an empty queue."""
    options = run.option("paco")
    encoder = run.modules[KEY_ENCODER_MODULE]
    queue = run.modules[QUEUE_MODULE]
    queries, labels = step.embeddings["cls"], step.targets("cls")
    with torch.no_grad():
        keys = encoder(step.images[KEY_ROLE])
    samples = torch.cat([queries, keys, queue.keys])
    valid = torch.cat([torch.ones(2 * len(labels), dtype=torch.bool), queue.valid])
    return paco_loss(queries, labels, step.logits["cls"], samples,
                     torch.cat([labels, labels, queue.labels]), alpha=options.alpha,
                     beta=options.beta, gamma=options.gamma, temperature=options.temperature,
                     class_prior=run.class_prior, sample_valid=valid, **extra)


def test_recipe_views_losses_and_modules(plugins):
    run = assemble(plugins)
    stage = run.main_stage
    views = {r: (v.pipeline, v.forward, v.classify, v.embed) for r, v in stage.views.items()}
    assert views == {"cls": ("standard", True, True, True),
                     KEY_ROLE: ("standard", False, False, False)}
    assert [(t.name, t.weight, t.kind) for t in stage.losses] == [
        ("paco", 1.0, "contrastive"), ("paco-ce", 0.0, "classifier")]
    assert stage.loss("paco").rebalanceable and stage.classifier_loss_is_default
    assert run.config.model.classifier_init == "default"
    queue = run.modules[QUEUE_MODULE]
    assert queue.size == min(1024, len(run.dataset.train)) and not queue.valid.any()
    encoder = run.modules[KEY_ENCODER_MODULE]
    query = [*run.model.backbone.parameters(), *run.model.heads["projection"].parameters()]
    assert all(torch.equal(k, q) for k, q in zip(encoder.parameters(), query, strict=True))
    assert not any(p.requires_grad for p in encoder.parameters())


def test_term_equals_the_plain_loss_and_trains_the_centres(plugins):
    run = assemble(plugins)
    step = fake_step(run)
    losses = forward(run, step)
    expected = plain_loss(run, step)
    torch.testing.assert_close(losses[0], expected)
    losses[0].backward()
    assert run.model.classifier.weight.grad.abs().sum() > 0
    assert run.model.heads["projection"][0].weight.grad.abs().sum() > 0


def test_the_bias_hook_reaches_the_term(plugins):
    run = assemble(plugins, ("paco", "bias-recorder"))
    RECORDER.seen.clear()
    step = fake_step(run, seed=3)
    losses = forward(run, step)
    (contrast,) = RECORDER.seen
    assert contrast.term is run.main_stage.loss("paco")
    batch, classes = 8, run.dataset.num_classes
    samples = 2 * batch + run.modules[QUEUE_MODULE].size
    assert contrast.column_labels.shape == (samples + classes,)
    assert contrast.is_prototype.tolist() == [False] * samples + [True] * classes
    assert contrast.column_labels[samples:].tolist() == list(range(classes))
    g = torch.Generator().manual_seed(11)
    bias = torch.randn(batch, samples + classes, generator=g)
    expected = plain_loss(run, step, logit_bias=bias[:, :samples],
                          centre_bias=bias[:, samples:])
    torch.testing.assert_close(losses[0], expected)
    assert abs(float(losses[0].detach()) - float(plain_loss(run, step).detach())) > 1e-3


def test_step_end_moves_the_key_encoder_and_fills_the_queue(plugins):
    run = assemble(plugins, ("paco",), "paco.momentum=0.5")
    step = fake_step(run, batch=6)
    forward(run, step)
    encoder, queue = run.modules[KEY_ENCODER_MODULE], run.modules[QUEUE_MODULE]
    with torch.no_grad():
        keys = encoder(step.images[KEY_ROLE])
        before = [p.clone() for p in encoder.parameters()]
        for p in run.model.parameters():
            p.add_(1.0)
    run.hooks.step_end(step=step)
    query = [*run.model.backbone.parameters(), *run.model.heads["projection"].parameters()]
    for old, new, q in zip(before, encoder.parameters(), query, strict=True):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * q)
    assert queue.valid.sum() == 6 and int(queue.pointer) == 6
    torch.testing.assert_close(queue.keys[:6], keys)
    assert queue.labels[:6].tolist() == step.targets("cls").tolist()


def test_queue_is_first_in_first_out_with_wrap_around():
    queue = KeyQueue(4, 2)
    for start in (0, 3):
        keys = torch.arange(start, start + 3, dtype=torch.float32)[:, None].repeat(1, 2)
        queue.enqueue(keys, torch.arange(start, start + 3))
    assert queue.labels.tolist() == [4, 5, 2, 3] and int(queue.pointer) == 2
    queue.enqueue(torch.zeros(6, 2), torch.arange(10, 16))
    assert sorted(queue.labels.tolist()) == [12, 13, 14, 15] and int(queue.pointer) == 0
    assert queue.valid.all()


def test_queue_and_key_encoder_state_round_trip(plugins, tmp_path):
    run = assemble(plugins)
    step = fake_step(run)
    forward(run, step)
    with torch.no_grad():
        for p in run.model.parameters():
            p.mul_(0.5)
    run.hooks.step_end(step=step)
    path = tmp_path / "modules.pt"
    torch.save(run.modules.state_dict(), path)
    fresh = assemble(plugins)
    fresh.modules.load_state_dict(torch.load(path))
    for name in (KEY_ENCODER_MODULE, QUEUE_MODULE):
        saved, loaded = run.modules[name].state_dict(), fresh.modules[name].state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert int(fresh.modules[QUEUE_MODULE].valid.sum()) == 8


def test_rcl_rebalances_the_paco_term(plugins):
    run = assemble(plugins, ("paco", "rcl"), "rcl.compression=false")
    assert [(t.plugin, t.name) for t in run.plugin_object("rcl").terms] == [("paco", "paco")]
    assert run.main_stage.classifier_loss.name == "paco-ce"
    step = fake_step(run, seed=5)
    losses = forward(run, step)
    queue = run.modules[QUEUE_MODULE]
    labels = step.targets("cls")
    log_counts = torch.log(run.class_counts.float())
    sample_labels = torch.cat([labels, labels, queue.labels])
    expected = plain_loss(run, step, logit_bias=log_counts[sample_labels][None, :],
                          centre_bias=log_counts[None, :])
    torch.testing.assert_close(losses[0], expected)


def test_a_chosen_classifier_loss_replaces_the_zero_weight_ce(plugins):
    run = assemble(plugins, ("paco", "la"), "paco.ce_weight=0.5")
    classifier = run.main_stage.classifier_loss
    assert (classifier.plugin, classifier.weight) == ("la", 0.5)


def test_cifar100_preset(plugins):
    settings = resolve(plugins, ["paco"], ["cifar100-lt"])
    cfg, options = settings.run, settings.plugins["paco"]
    assert (cfg.dataset, cfg.imbalance_factor, cfg.epochs, cfg.batch_size) == (
        "cifar100-lt", 100.0, 400, 128)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.schedule.kind) == (0.05, 5e-4, "step")
    assert cfg.schedule.warmup_epochs == 10 and cfg.schedule.milestones == (321, 361)
    assert (cfg.views.classifier, cfg.views.contrastive) == ("autoaugment-cutout", "simaugment")
    assert (cfg.model.projection_hidden, cfg.model.projection_dim) == (64, 32)
    assert (options.alpha, options.temperature, options.queue_size) == (0.01, 0.05, 1024)


def test_reference_results_are_declared(plugins):
    rows = [r for r in plugins.reference_results if r["plugins"] == "paco"]
    assert {(r["imbalance_factor"], r["test/acc"]) for r in rows} == {
        (100, 52.0), (50, 56.0), (10, 64.2)}


@pytest.mark.parametrize("selected", [["paco"], ["paco", "rcl"]])
def test_one_epoch_on_the_embedded_dataset(ltrun, selected):
    args = [a for name in selected for a in ("--plugin", name)]
    result = ltrun(*args, "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.stderr
    (stage,) = recorded_runs(nested=True)
    assert stage.info.status == "FINISHED"
    assert stage.data.params["stage.losses"] == "1*paco, 0*paco-ce"
    assert "train/loss/paco" in stage.data.metrics
    (parent,) = recorded_runs(nested=False)
    saved = load_saved_run(Plugins(), run_folder("runs", parent.info.run_id) / "model.pt")
    queue = saved.modules[QUEUE_MODULE]
    assert int(queue.valid.sum()) == min(queue.size, len(saved.dataset.train))
    encoder = saved.modules[KEY_ENCODER_MODULE]
    query = [*saved.model.backbone.parameters(), *saved.model.heads["projection"].parameters()]
    assert any(not torch.equal(k, q) for k, q in zip(encoder.parameters(), query, strict=True))


def test_the_test_kit_contracts_hold():
    from ltcore.testing import check_composes_with_rcl, check_state_round_trip

    check_composes_with_rcl("paco")
    check_state_round_trip(["paco"])
