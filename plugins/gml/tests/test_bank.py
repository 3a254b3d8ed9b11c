"""The class-queue memory bank, slot prediction, options, presets, registrations and one student
step."""

import math
import subprocess
import sys

import pytest
import torch
from ltcore_gml.bank import Temperature, fill_random, with_fresh_rows
from ltcore_gml.queue import ClassWiseQueue, class_queue_sizes

from ltcore import ConfigError, Plugins, prepare, resolve
from ltcore.testing import FAST_SETTINGS


@pytest.mark.parametrize("overflow", ["first", "last"])
def test_queue_slots_predict_where_enqueue_writes(overflow):
    sizes = [3, 1, 4, 2]
    queue = ClassWiseQueue(torch.tensor(sizes), dim=2, overflow=overflow)
    gen = torch.Generator().manual_seed(0)
    start = 0
    for batch in [5, 9, 1, 12, 3, 7]:
        labels = torch.randint(0, len(sizes), (batch,), generator=gen)
        features = torch.randn(batch, 2, generator=gen)
        indices = torch.arange(start, start + batch)
        start += batch
        slot, writer, _ = queue.slots(labels)
        queue.enqueue(features, labels, indices)
        assert torch.equal(queue.features()[slot], features[writer])
        assert torch.equal(queue.indices()[slot], indices[writer])
        # The writer of a slot is the first (or last) sample of that class sent there, and
        # it writes itself.
        assert torch.equal(writer[writer], writer)
        for i in range(batch):
            same_slot = (slot == slot[i]).nonzero().flatten()
            kept = same_slot.min() if overflow == "first" else same_slot.max()
            assert int(writer[i]) == int(kept)


@pytest.mark.parametrize(("overflow", "gradient"), [("first", [1.0, 1.0, 0.0, 1.0]),
                                                    ("last", [0.0, 1.0, 1.0, 1.0])])
def test_fresh_rows_replace_written_slots_with_one_gradient_each(overflow, gradient):
    queue = ClassWiseQueue(torch.tensor([2, 3]), dim=2, overflow=overflow)
    queue.enqueue(torch.full((5, 2), 7.0), torch.tensor([0, 0, 1, 1, 1]), torch.arange(5))
    labels = torch.tensor([0, 0, 0, 1])  # class 0 receives 3 samples for 2 slots
    fresh = torch.randn(4, 2, requires_grad=True)
    slot, writer, _ = queue.slots(labels)
    stored = queue.features().clone()
    queue.enqueue(fresh, labels, torch.arange(10, 14))
    bank = with_fresh_rows(queue.features(), fresh, slot, writer)
    torch.testing.assert_close(bank.detach(), queue.features())
    bank.sum().backward()
    # "first": sample 2 of class 0 finds no free slot; "last": it overwrites sample 0.
    assert fresh.grad[:, 0].tolist() == gradient
    untouched = torch.ones(5, dtype=torch.bool)
    untouched[slot] = False
    assert torch.equal(bank[untouched].detach(), stored[untouched])


def test_fill_random_makes_every_slot_a_valid_unit_vector():
    queue = ClassWiseQueue(torch.tensor([3, 2]), dim=4)
    fill_random(queue, torch.Generator().manual_seed(0))
    assert bool(queue.valid().all())
    torch.testing.assert_close(queue.features().norm(dim=1), torch.ones(5))
    assert queue.indices().tolist() == [-1, -2, -3, -4, -5]
    assert queue.labels().tolist() == [0, 0, 0, 1, 1]


def test_temperature_is_a_log_parameter():
    learned = Temperature(0.1)
    torch.testing.assert_close(learned(), torch.tensor(0.1))
    assert learned.log_temperature.requires_grad
    assert learned.log_temperature.item() == pytest.approx(math.log(0.1))
    assert not Temperature(0.07, learnable=False).log_temperature.requires_grad


def test_class_queue_is_a_memory_bank_any_run_can_build(isolated):
    plugins = Plugins()
    assert plugins.component("memory-bank", "class-queue").plugin == "gml"
    run = prepare(plugins, ["ce"], resolve(plugins, ["ce"], assignments=FAST_SETTINGS))
    queue = run.build("memory-bank", "class-queue", size=100, min_size=3, dim=8)
    counts = run.dataset.class_counts
    prior = counts.double() / counts.sum()
    assert queue.sizes.tolist() == class_queue_sizes(counts, 100, 3).tolist()
    assert int(queue.sizes.sum()) == 100 and bool((queue.sizes >= 3).all())
    assert all(abs(s - (3 + 70 * p)) < 1 for s, p in zip(queue.sizes.tolist(), prior.tolist()))
    assert queue.features().shape == (100, 8) and queue.overflow == "first"
    last = run.build("memory-bank", "class-queue", size=100, min_size=3, dim=8, overflow="last")
    assert last.overflow == "last"
    with pytest.raises(ConfigError, match="at least 30"):
        run.build("memory-bank", "class-queue", size=20, min_size=3, dim=8)


def test_teacher_backbones_and_stage_are_registered():
    plugins = Plugins()
    assert plugins.component("backbone", "resnet152").plugin == "core"
    assert plugins.component("backbone", "resnext101").plugin == "core"
    assert plugins.component("stage", "gml-teacher").plugin == "gml"


def test_teacher_stage_factory_builds_a_cosine_la_stage(isolated):
    plugins = Plugins()
    run = prepare(plugins, ["ce"], resolve(plugins, ["ce"], assignments=FAST_SETTINGS))
    stage = run.build("stage", "gml-teacher", backbone="resnet20", epochs=3, la_tau=0.5)
    assert stage.name == "teacher" and stage.epochs == 3
    assert type(stage.model.classifier).__name__ == "CosineClassifier"
    assert len(stage.model.backbone.layers) == 9  # ResNet-20: 3 blocks per stage
    assert stage.classifier_loss.name == "la-ce" and "cls" in stage.views
    assert stage.model.get_extra_state()["backbone"] == "resnet20"


def test_options_are_validated():
    plugins = Plugins()
    with pytest.raises(ConfigError, match="gml.queue_contents"):
        resolve(plugins, ["gml"], assignments=["gml.queue_contents=momentum"])
    with pytest.raises(ConfigError, match="gml.queue_min"):
        resolve(plugins, ["gml"], assignments=["gml.queue_min=0"])
    with pytest.raises(ConfigError, match="gml.temperature"):
        resolve(plugins, ["gml"], assignments=["gml.temperature=0"])
    with pytest.raises(ConfigError, match="gml.queue_overflow"):
        resolve(plugins, ["gml"], assignments=["gml.queue_overflow=middle"])
    defaults = resolve(plugins, ["gml"]).plugins["gml"]
    assert (defaults.queue_size, defaults.queue_min, defaults.temperature) == (4096, 2, 0.1)
    assert defaults.queue_overflow == "first"
    assert defaults.learn_temperature and defaults.distill and defaults.teacher == ""


def test_presets_carry_the_papers_recipes():
    plugins = Plugins()
    default = resolve(plugins, ["gml"])
    assert default.run.model.classifier == "cosine" and default.run.model.cosine_scale == 30.0
    cifar = resolve(plugins, ["gml"], presets=["cifar100-lt"])
    assert cifar.run.dataset == "cifar100-lt" and cifar.run.epochs == 200
    assert cifar.run.schedule.milestones == (161, 181) and cifar.run.schedule.warmup_epochs == 5
    assert (cifar.run.model.projection_hidden, cifar.run.model.projection_dim) == (64, 32)
    gml = cifar.plugins["gml"]
    assert (gml.teacher_backbone, gml.queue_size, gml.queue_min) == ("resnet56", 4096, 2)
    assert gml.temperature == 0.1
    assert gml.distill and (gml.classifier_weight, gml.gml_weight, gml.kd_weight) == (1.0, 1.0, 1.0)
    long = resolve(plugins, ["gml"], presets=["cifar10-lt-400"])
    assert long.run.epochs == 400 and long.run.schedule.milestones == (321, 361)
    imagenet = resolve(plugins, ["gml"], presets=["imagenet-lt"])
    assert imagenet.run.model.backbone == "resnext50" and not imagenet.plugins["gml"].distill
    imagenet_gml = imagenet.plugins["gml"]
    assert imagenet_gml.queue_size == 16384 and imagenet_gml.temperature == 0.07
    assert imagenet.run.views.classifier == "imagenet-randaugment"
    long_imagenet = resolve(plugins, ["gml"], presets=["imagenet-lt-400"]).plugins["gml"]
    assert (long_imagenet.classifier_weight, long_imagenet.gml_weight) == (0.5, 2.0)
    inat = resolve(plugins, ["gml"], presets=["inaturalist2018"])
    assert inat.run.optim.lr == 0.02 and inat.run.optim.weight_decay == 2e-4
    inat_gml = inat.plugins["gml"]
    assert inat_gml.queue_size == 65536 and inat_gml.teacher_backbone == "resnet152"


def test_options_are_listed(ltrun):
    result = ltrun("plugins", "--options", "gml")
    assert result.exit_code == 0, result.stderr
    for key in ("gml.teacher ", "gml.queue_size", "gml.queue_contents", "gml.queue_overflow",
                "gml.learn_temperature",
                "cifar100-lt-400", "imagenet-lt", "inaturalist2018"):
        assert key in result.output


def test_package_exports_load_lazily():
    code = ("import sys, ltcore_gml, ltcore_gml.plugin; assert 'torch' not in sys.modules; "
            "f = ltcore_gml.gml_loss; assert 'torch' in sys.modules; "
            "assert {'gml_loss', 'temperature_loss', 'ClassWiseQueue'} <= set(dir(ltcore_gml))")
    subprocess.run([sys.executable, "-c", code], check=True)
    import ltcore_gml
    from ltcore_gml.loss import gml_loss

    assert ltcore_gml.gml_loss is gml_loss
    with pytest.raises(AttributeError):
        ltcore_gml.nothing


def _prepared(*assignments):
    plugins = Plugins()
    settings = resolve(plugins, ["gml"],
                       assignments=[*FAST_SETTINGS, "gml.queue_size=64", *assignments])
    return prepare(plugins, ["gml"], settings)


def _step(run, batch=12, seed=0):
    from ltcore import Step

    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, run.dataset.num_classes, (batch,), generator=gen)
    indices = torch.randperm(len(run.dataset.train), generator=gen)[:batch]
    stage = run.main_stage
    images = {role: torch.randn(batch, 3, 32, 32, generator=gen) for role in stage.views}
    return Step(run, stage, 0, 0, {"sample": indices}, {"sample": labels}, images)


def test_student_step_enqueues_once_and_feeds_every_term(isolated):
    from ltcore.testing import forward

    run = _prepared()
    assert [t.name for t in run.main_stage.losses] == ["la-ce", "gml", "gml-temperature", "kd"]
    assert [s.name for s in run.stages] == ["teacher", "train"]
    assert run.main_stage.views["gml_key"].forward is False
    queue = run.modules["gml_queue"]
    step = _step(run)
    run.main_stage.model.train()
    losses = forward(run, step)
    assert all(torch.isfinite(loss) for loss in losses)
    # One enqueue for the four terms: each class pointer moved by that class's count in the batch.
    counts = torch.bincount(step.labels["sample"], minlength=run.dataset.num_classes)
    assert queue.pointers.tolist() == (counts % queue.sizes).tolist()
    out = step.extras["gml"]
    assert out["bank"].shape == (64, run.config.model.projection_dim)
    assert out["bank"].requires_grad and not out["teacher_logits"].requires_grad
    assert set(out["losses"]) == {"gml", "gml-temperature", "kd"}
    total = sum(t.weight * l for t, l in zip(run.main_stage.losses, losses))
    total.backward()
    heads = run.main_stage.model.heads
    assert heads["gml_key"][0].weight.grad is not None  # the key MLP learns through L_GML
    assert heads["gml_temperature"].log_temperature.grad is not None
    assert all(p.grad is None for p in run.modules["teacher"].parameters())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_student_projects_the_queue_in_the_compute_precision_once(isolated, precision):
    from ltcore_gml.loss import gml_loss, temperature_loss

    from ltcore.testing import forward

    run = _prepared(f"precision={precision}")
    step = _step(run)
    run.main_stage.model.train()
    losses = dict(zip([t.name for t in run.main_stage.losses], forward(run, step)))
    out = step.extras["gml"]
    assert out["bank"].dtype == torch.float32 and out["similarities"].dtype == torch.float32
    torch.testing.assert_close(out["bank"].norm(dim=1), torch.ones(64))
    # the normalisation is applied to the product: the same values up to rounding
    torch.testing.assert_close(out["similarities"], out["query"] @ out["bank"].T,
                               atol=1e-6, rtol=0)
    prior = run.class_prior
    expected = gml_loss(out["query"], out["labels"], out["bank"], out["bank_labels"], prior,
                        out["temperature"], bank_valid=out["bank_valid"])
    torch.testing.assert_close(losses["gml"], expected, atol=1e-5, rtol=1e-6)
    log_tau = run.main_stage.model.heads["gml_temperature"].log_temperature
    expected = temperature_loss(out["query"], out["labels"], out["bank"], out["bank_labels"],
                                out["bank_indices"], out["indices"], prior, log_tau,
                                bank_valid=out["bank_valid"])
    torch.testing.assert_close(losses["gml-temperature"], expected, atol=1e-5, rtol=1e-6)
    queue = run.modules["gml_queue"]
    # teacher features are stored in the compute dtype (the key MLP's autocast rounds to it)
    assert queue.features().dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    with torch.no_grad():
        full = torch.nn.functional.normalize(
            run.main_stage.model.heads["gml_key"](queue.features().float()), dim=1)
    if precision == "fp32":
        torch.testing.assert_close(out["bank"].detach(), full, atol=1e-6, rtol=0)
    else:  # the key MLP ran in bf16
        assert not torch.equal(out["bank"].detach(), full)
        torch.testing.assert_close(out["bank"].detach(), full, atol=0.05, rtol=0)


def test_student_without_l_gml_leaves_the_queue_alone(isolated):
    from ltcore.testing import forward

    run = _prepared("gml.gml_weight=0")
    assert [t.name for t in run.main_stage.losses] == ["la-ce", "kd"]
    step = _step(run)
    forward(run, step)
    assert not bool(run.modules["gml_queue"].valid().any())
    extras = step.extras["gml"]
    assert "bank" not in extras and extras["teacher_logits"].shape == (12, 10)


def test_temperature_gets_a_group_without_weight_decay(isolated):
    from ltcore.testing import parameter_groups

    run = _prepared()
    stage = run.main_stage
    log_tau = stage.model.heads["gml_temperature"].log_temperature
    groups = parameter_groups(run, stage)
    assert groups[-1] == {"params": [log_tau], "weight_decay": 0.0}
    others = [p for g in groups[:-1] for p in g["params"]]
    assert all(p is not log_tau for p in others)
    assert len(others) + 1 == len([p for p in stage.model.parameters() if p.requires_grad])
    # Groups another plugin set (here with an lr scale) are kept.
    gml = run.plugin_object("gml")
    groups = [{"params": list(stage.model.parameters()), "lr_scale": 0.5}]
    gml.adjust_parameter_groups(run=run, stage=stage, groups=groups)
    first, last = groups
    assert first["lr_scale"] == 0.5 and all(p is not log_tau for p in first["params"])
    assert last == {"params": [log_tau], "weight_decay": 0.0}
    stage.trainable = "classifier"
    from ltcore import PluginError

    with pytest.raises(PluginError, match="only the classifier"):
        gml.adjust_parameter_groups(run=run, stage=stage, groups=groups)
