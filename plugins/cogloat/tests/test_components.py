"""The cogloat run components: k-global sampler, key encoder, queue, loss term, stage-2 loss."""

import math
import subprocess
import sys

import ltcore_cogloat
import pytest
import torch
import torch.nn.functional as F
from ltcore_cogloat.classifier import (
    ReweightedClassifierLoss,
    class_weights,
    inverse_frequency_weights,
)
from ltcore_cogloat.components import (
    SECOND_VIEW_EMBEDDINGS,
    GlobalContrastiveTerm,
    KGlobalSampler,
    MomentumEncoder,
)
from ltcore_cogloat.moco import LabelledQueue
from torch import nn

from ltcore import InstanceBalancedSampler, Step


def test_package_exports_are_lazy_and_plugins_import_without_torch():
    taus = ltcore_cogloat.adaptive_temperatures(torch.tensor([100, 10, 1]), 0.1)
    assert isinstance(taus, torch.Tensor) and taus.shape == (3,)
    torch.testing.assert_close(taus, torch.tensor([1.0, 0.19, 0.109]))
    with pytest.raises(AttributeError):
        ltcore_cogloat.no_such_function
    code = ("import sys, ltcore_cogloat, ltcore_cogloat.plugin, ltcore_cogloat.proco; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the k-global sampler --------------------------------------------------------------------


def _long_tailed_labels():
    counts = [40, 20, 10, 3, 1]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("k", [1, 3])
def test_k_global_rows_share_the_label_and_come_from_outside_the_batch(k):
    labels = _long_tailed_labels()
    batch = 16
    sampler = KGlobalSampler(InstanceBalancedSampler(labels), labels, k, batch)
    assert sampler.sources == ("sample", *[f"pos{j + 1}" for j in range(k)])
    rows = sampler.epoch_indices(0, torch.Generator().manual_seed(1))
    assert rows.shape == (len(labels), 1 + k)
    assert sorted(rows[:, 0].tolist()) == list(range(len(labels)))
    checked_outside = 0
    for chunk in rows.split(batch):
        in_batch = set(chunk[:, 0].tolist())
        for anchor, *positives in chunk.tolist():
            label = int(labels[anchor])
            assert all(int(labels[p]) == label for p in positives)
            members = (labels == label).nonzero().squeeze(1).tolist()
            outside = [m for m in members if m not in in_batch]
            if len(outside) >= k:
                assert all(p not in in_batch for p in positives)
                assert len(set(positives)) == k
                checked_outside += 1
            elif len(members) > 1:
                assert anchor not in positives
            else:
                assert positives == [anchor] * k
    assert checked_outside > len(labels) // 2


def test_k_global_with_zero_positives_is_the_base_order():
    labels = _long_tailed_labels()
    sampler = KGlobalSampler(InstanceBalancedSampler(labels), labels, 0, 16)
    base = InstanceBalancedSampler(labels)
    assert sampler.sources == ("sample",)
    assert torch.equal(sampler.epoch_indices(3, torch.Generator().manual_seed(5)),
                       base.epoch_indices(3, torch.Generator().manual_seed(5)))


def test_k_global_component_wraps_the_configured_sampler(make_run):
    run = make_run(["ce"], "sampler=class-balanced")
    sampler = run.build("sampler", "k-global", k=2)
    assert sampler.batch_size == 64 and sampler.k == 2
    assert type(sampler.base).__name__ == "ClassPowerSampler"
    rows = sampler.epoch_indices(0, torch.Generator().manual_seed(0))
    labels = run.dataset.train.labels
    assert rows.shape == (len(labels), 3)
    assert torch.equal(labels[rows[:, 1]], labels[rows[:, 0]])


# -- MoCo v2 pieces --------------------------------------------------------------------------


def _query_encoder():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())
    head = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    return backbone, head


def test_momentum_encoder_starts_as_a_copy_and_follows_the_ema():
    backbone, head = _query_encoder()
    encoder = MomentumEncoder(backbone, head, momentum=0.9)
    query = list(backbone.parameters()) + list(head.parameters())
    keys = list(encoder.key.parameters())
    assert all(torch.equal(k, q) for k, q in zip(keys, query))
    assert not any(k.requires_grad for k in keys)
    assert set(encoder.state_dict()) == {f"key.{n}" for n in
                                         nn.ModuleDict({"backbone": backbone, "head": head}).state_dict()}
    before = [k.detach().clone() for k in keys]
    with torch.no_grad():
        for q in query:
            q.add_(torch.randn_like(q))
    backbone.train()
    backbone(torch.randn(4, 3, 8, 8))  # new BatchNorm statistics in the query encoder
    encoder.update()
    for old, new, q in zip(before, encoder.key.parameters(), query):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * q.detach())
    key_buffers = list(encoder.key.buffers())
    query_buffers = list(backbone.buffers()) + list(head.buffers())
    assert all(torch.equal(k, q) for k, q in zip(key_buffers, query_buffers))
    encoder.update(momentum=0.0)
    assert all(torch.equal(k, q) for k, q in zip(encoder.key.parameters(), query))


def test_momentum_encoder_embeds_normalised_keys_without_gradient():
    backbone, head = _query_encoder()
    images = torch.randn(5, 3, 8, 8)
    batch_mode = MomentumEncoder(backbone, head, batchnorm="batch")
    keys = batch_mode(images)
    assert keys.shape == (5, 3) and not keys.requires_grad
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(5))
    running = MomentumEncoder(backbone, head, batchnorm="running")
    # running statistics: each key depends on its own image only
    torch.testing.assert_close(running(images)[:2], running(images[:2]))
    backbone.eval(), head.eval()
    torch.testing.assert_close(running(images), F.normalize(head(backbone(images)), dim=1))
    with pytest.raises(ValueError):
        MomentumEncoder(backbone, head, batchnorm="shuffle")


def test_registered_memory_banks(make_run):
    run = make_run(["ce"])
    queue = run.build("memory-bank", "moco-queue", size=6)
    assert isinstance(queue, LabelledQueue) and queue.keys.shape == (6, 128)
    encoder = run.build("memory-bank", "momentum-encoder", momentum=0.99)
    assert encoder.momentum == 0.99
    assert "projection" in run.model.heads
    for k, q in zip(encoder.key.parameters(),
                    [*run.model.backbone.parameters(), *run.model.heads["projection"].parameters()]):
        assert torch.equal(k, q)


# -- the CoGloAT loss term against a direct computation of eq. 1 --------------------------


def _eq1_reference(queries, keys, positives, bank, bank_labels, labels, taus):
    """Eq. 1 by loops: per anchor, mean over {own key} + k positives of
    -log e^{q.p/tau} / (e^{q.p/tau} + sum_{v in V_i} e^{q.v/tau}); V_i = other keys + queue."""
    total = 0.0
    batch = queries.shape[0]
    for i in range(batch):
        tau = taus[int(labels[i])]
        negatives = [keys[m] for m in range(batch) if m != i] + list(bank)
        denominator = sum(math.exp(float(queries[i] @ v) / tau) for v in negatives)
        terms = []
        for p in [keys[i], *positives[i]]:
            positive = math.exp(float(queries[i] @ p) / tau)
            terms.append(-math.log(positive / (positive + denominator)))
        total += sum(terms) / len(terms)
    return total / batch


def _step(run, k, batch=6, seed=0):
    stage = run.main_stage
    generator = torch.Generator().manual_seed(seed)
    labels = run.dataset.train.labels[:batch]
    images = {role: torch.randn(batch, 3, 32, 32, generator=generator)
              for role in ["con0", "key", *[f"pos{j + 1}" for j in range(k)]]}
    sources = {"sample": torch.arange(batch), **{f"pos{j + 1}": torch.arange(batch) for j in range(k)}}
    step = Step(run, stage, 0, 0, sources, {s: labels for s in sources}, images)
    model = run.model
    model.train()
    step.embeddings["con0"] = run.embed(model, model.backbone(images["con0"]))
    return step


def test_cogloat_term_is_eq1_with_adaptive_temperatures_and_updates_after_the_step(make_run):
    run = make_run(["cogloat"], "cogloat.k=2", "cogloat.gamma=0.2", "cogloat.momentum=0.9")
    term = run.main_stage.loss("cogloat")
    fn = term.fn
    assert isinstance(fn, GlobalContrastiveTerm) and term.kind == "contrastive"
    queue = run.modules["cogloat_queue"]
    assert queue.size == min(4096, len(run.dataset.train))
    # a partly filled queue: three earlier keys
    earlier = F.normalize(torch.randn(3, 128, generator=torch.Generator().manual_seed(9)), dim=1)
    queue.enqueue(earlier, torch.tensor([0, 4, 9]))

    key_model = [m for m in (run.model.backbone, run.model.heads["projection"])]
    import copy

    key_backbone, key_head = (copy.deepcopy(m) for m in key_model)
    step = _step(run, k=2)
    batch = 6
    loss = fn(step)
    loss.backward()
    assert run.model.backbone.conv1.weight.grad is not None

    with torch.no_grad():
        key_backbone.train(), key_head.train()
        stacked = torch.cat([step.images[r] for r in ("key", "pos1", "pos2")])
        embedded = F.normalize(key_head(key_backbone(stacked)), dim=1)
    keys = embedded[:batch]
    positives = embedded[batch:].view(2, batch, -1).transpose(0, 1)
    counts = run.dataset.class_counts.double()
    taus = (0.2 + 0.8 * counts / counts.max()).tolist()
    labels = step.labels["sample"]
    expected = _eq1_reference(step.embeddings["con0"].detach().double(), keys.double(),
                              positives.double(), earlier.double(), None, labels, taus)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(step.extras[SECOND_VIEW_EMBEDDINGS], keys, rtol=1e-4, atol=1e-5)

    # after the optimiser step: EMA of the key encoder, then the step's keys enqueued (FIFO)
    encoder = run.modules["cogloat_key_encoder"]
    key_before = [p.detach().clone() for p in encoder.key.parameters()]
    query = [*run.model.backbone.parameters(), *run.model.heads["projection"].parameters()]
    with torch.no_grad():
        for p in query:
            p.add_(0.5)
    fn.after_step(step)
    for old, new, q in zip(key_before, encoder.key.parameters(), query):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * q.detach())
    assert int(queue.pointer) == 3 + batch
    torch.testing.assert_close(queue.keys[3:3 + batch], keys, rtol=1e-4, atol=1e-5)
    assert queue.labels[:3 + batch].tolist() == [0, 4, 9, *labels.tolist()]
    assert bool(queue.valid[:3 + batch].all()) and not bool(queue.valid[3 + batch:].any())


def test_cogloat_term_constant_temperature_and_views(make_run):
    run = make_run(["cogloat"], "cogloat.adaptive_temperature=false", "cogloat.temperature=0.3",
                   "cogloat.k=1", "cogloat.include_batch_keys=false")
    stage = run.main_stage
    views = stage.views
    assert views["con0"].forward and views["con0"].embed and views["con0"].classify
    assert not views["key"].forward and views["key"].source == "sample"
    assert not views["pos1"].forward and views["pos1"].source == "pos1"
    assert stage.sampler == "k-global" and stage.sampler_options["k"] == 1
    fn = stage.loss("cogloat").fn
    assert fn.temperatures is None and fn.temperature == 0.3 and not fn.include_batch_keys


# -- stage 2: re-weighted CE / LDAM -----------------------------------------------------------


def test_inverse_frequency_weights_by_hand():
    weights = inverse_frequency_weights(torch.tensor([1, 2, 4]))
    torch.testing.assert_close(weights, torch.tensor([12 / 7, 6 / 7, 3 / 7]))
    assert class_weights(torch.tensor([3, 5]), "none") is None
    with pytest.raises(ValueError):
        class_weights(torch.tensor([3, 5]), "square")


def _weighted_ce_reference(logits, targets, weights):
    total, norm = 0.0, 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        w = 1.0 if weights is None else float(weights[y])
        total += w * (log_z - row[y])
        norm += w
    return total / norm


def test_reweighted_ce_and_deferred_weights():
    counts = torch.tensor([50, 10, 2])
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 2, 0, 1, 0])
    loss = ReweightedClassifierLoss(counts, "ce", "inverse-frequency", start_epoch=2)
    weights = inverse_frequency_weights(counts)
    assert float(loss(logits, targets, 2)) == pytest.approx(
        _weighted_ce_reference(logits, targets, weights), rel=1e-6)
    assert float(loss(logits, targets, 1)) == pytest.approx(
        _weighted_ce_reference(logits, targets, None), rel=1e-9)


def test_ldam_on_a_cosine_classifier_matches_the_formula():
    counts = torch.tensor([100, 16, 1])
    generator = torch.Generator().manual_seed(1)
    cosines = torch.rand(5, 3, generator=generator, dtype=torch.float64) * 2 - 1
    targets = torch.tensor([2, 0, 1, 2, 1])
    classifier_scale = 16.0
    loss = ReweightedClassifierLoss(counts, "ldam", "effective-number", beta=0.99, scale=30.0,
                                    classifier_scale=classifier_scale)
    margins = [0.5 * (n ** -0.25) / (1 ** -0.25) for n in counts.tolist()]
    adjusted = cosines.clone()
    for i, y in enumerate(targets.tolist()):
        adjusted[i, y] -= margins[y]
    effective = [(1 - 0.99) / (1 - 0.99 ** n) for n in counts.tolist()]
    weights = torch.tensor(effective) * 3 / sum(effective)
    expected = _weighted_ce_reference(30.0 * adjusted, targets, weights)
    assert float(loss(classifier_scale * cosines, targets, 0)) == pytest.approx(expected, rel=1e-5)
    linear = ReweightedClassifierLoss(counts, "ldam", "none")
    assert float(linear(cosines, targets, 0)) == pytest.approx(
        _weighted_ce_reference(adjusted, targets, None), rel=1e-6)


# -- stage assembly ---------------------------------------------------------------------------


def test_pretraining_has_no_classifier_and_stage_two_trains_only_the_classifier(make_run):
    from ltcore.testing import parameter_groups

    run = make_run(["cogloat"], "cogloat.classifier_loss=ldam", "cogloat.classifier_epochs=7")
    pretrain, second = run.stages
    assert (pretrain.name, second.name) == ("train", "classifier")
    ce = pretrain.classifier_loss
    assert (ce.name, ce.weight, ce.plugin) == ("pretrain-ce", 0.0, "cogloat")
    assert "cls" not in pretrain.views  # the classifier reads the query view: no extra forward
    trained = {id(p) for g in parameter_groups(run, pretrain) for p in g["params"]}
    assert not any(id(p) in trained for p in run.model.classifier.parameters())
    assert all(id(p) in trained for p in run.model.backbone.parameters())
    assert second.trainable == "classifier" and second.epochs == 7 and second.model is run.model
    assert (second.optim.lr, second.optim.weight_decay) == (0.1, 2e-4)
    assert second.classifier_loss.name == "ldam-reweighted"
    assert list(second.views) == ["cls"] and second.views["cls"].pipeline == "standard"
    assert run.metrics == ["alignment", "variance", "uniformity", "improved-uniformity"]


def test_a_classifier_loss_plugin_conflicts_unless_pretraining_trains_a_classifier(make_run):
    from ltcore import PluginError

    with pytest.raises(PluginError, match="both set the classifier loss") as info:
        make_run(["cogloat", "la"])
    assert "'cogloat'" in str(info.value) and "'la'" in str(info.value)
    run = make_run(["cogloat", "la"], "cogloat.pretrain_classifier_weight=0.5")
    loss = run.main_stage.classifier_loss
    assert (loss.name, loss.weight) == ("la-ce", 0.5)
    assert run.main_stage.trainable == "all"
