"""The proco plugin: coreset, prototypes refreshed at epoch start, the loss term, composition."""

import math

import pytest
import torch
import torch.nn.functional as F
from ltcore_cogloat.components import SECOND_VIEW_EMBEDDINGS
from ltcore_cogloat.coreset import select_coreset
from ltcore_cogloat.loss import prototype_loss
from ltcore_cogloat.prototypes import (
    CoresetPrototypes,
    ProCoTerm,
    coreset_budgets,
    random_coreset,
)

from ltcore import PluginError, Step, epoch_seed


def test_coreset_budgets_by_hand():
    counts = torch.tensor([124, 30, 12, 1])
    assert coreset_budgets(counts, fraction=0.1).tolist() == [13, 3, 2, 1]
    assert coreset_budgets(counts, per_class=20).tolist() == [20, 20, 12, 1]
    with pytest.raises(ValueError):
        coreset_budgets(counts)
    with pytest.raises(ValueError):
        coreset_budgets(counts, fraction=0.0)


def test_random_coreset_keeps_the_budget_of_each_class():
    labels = torch.tensor([0, 1, 0, 2, 0, 1, 0, 0, 2, 1])
    budgets = torch.tensor([2, 3, 1])
    chosen = random_coreset(labels, budgets, torch.Generator().manual_seed(0))
    assert chosen.tolist() == sorted(set(chosen.tolist()))
    assert torch.bincount(labels[chosen], minlength=3).tolist() == [2, 3, 1]
    again = random_coreset(labels, budgets, torch.Generator().manual_seed(0))
    assert torch.equal(chosen, again)


def _reference(views, labels, sets, tau):
    """-1/(2VN) sum_i sum_v sum_q log e^{v.c_iq/tau} / (e^{v.c_iq/tau} + sum_{c != y_i} e^{v.c/tau})."""
    total = 0.0
    for v in views:
        for i, y in enumerate(labels.tolist()):
            for prototypes in sets:
                scores = [math.exp(float(v[i] @ c) / tau) for c in prototypes]
                total += math.log(scores[y] / sum(scores))
    return -total / (2 * len(views) * len(labels))


class _Provider:
    """Fixed prototype sets with the interface ProCoTerm reads."""

    def __init__(self, run, sets):
        self.run, self.sets, self.class_mask = run, sets, torch.ones(len(sets[0]), dtype=torch.bool)

    def _current(self):
        return self.sets


def test_proco_term_is_the_symmetric_loss_over_the_stage_views(make_run):
    run = make_run(["supcon"])
    stage = run.main_stage
    generator = torch.Generator().manual_seed(0)
    sets = tuple(F.normalize(torch.randn(10, 8, generator=generator), dim=1) for _ in range(2))
    labels = torch.tensor([0, 3, 3, 9, 1])
    views = [F.normalize(torch.randn(5, 8, generator=generator), dim=1) for _ in range(2)]
    step = Step(run, stage, 0, 0, {"sample": torch.arange(5)}, {"sample": labels}, {})
    step.embeddings.update({"con0": views[0], "con1": views[1]})
    term = ProCoTerm(_Provider(run, sets), temperature=0.2)
    loss = term(step)
    assert float(loss) == pytest.approx(_reference(views, labels, sets, 0.2), rel=1e-5)
    joint = prototype_loss(torch.stack(views), labels, *sets, 0.2, class_mask=torch.ones(10, dtype=torch.bool))
    torch.testing.assert_close(loss, joint)


def test_proco_term_uses_a_published_second_view_or_the_single_view(make_run):
    run = make_run(["cogloat"])
    stage = run.main_stage
    generator = torch.Generator().manual_seed(1)
    sets = tuple(F.normalize(torch.randn(10, 8, generator=generator), dim=1) for _ in range(2))
    labels = torch.tensor([2, 2, 5, 0])
    query, key = (F.normalize(torch.randn(4, 8, generator=generator), dim=1) for _ in range(2))
    step = Step(run, stage, 0, 0, {"sample": torch.arange(4)}, {"sample": labels}, {})
    step.embeddings["con0"] = query
    counts = run.dataset.class_counts.double()
    taus = 0.3 + 0.7 * counts / counts.max()
    term = ProCoTerm(_Provider(run, sets), adaptive=True, gamma=0.3)
    alone = term(step)
    expected_alone = _per_anchor_reference([query], labels, sets, taus)
    assert float(alone) == pytest.approx(expected_alone, rel=1e-5)
    step.extras[SECOND_VIEW_EMBEDDINGS] = key
    both = term(step)
    assert float(both) == pytest.approx(_per_anchor_reference([query, key], labels, sets, taus), rel=1e-5)


def _per_anchor_reference(views, labels, sets, taus):
    total = 0.0
    for v in views:
        for i, y in enumerate(labels.tolist()):
            tau = float(taus[y])
            for prototypes in sets:
                scores = [math.exp(float(v[i] @ c) / tau) for c in prototypes]
                total += math.log(scores[y] / sum(scores))
    return -total / (2 * len(views) * len(labels))


def test_refresh_selects_a_k_center_coreset_and_averages_two_augmented_views(make_run):
    run = make_run(["cogloat", "proco"], "proco.coreset_fraction=0.2", "proco.reselect_every=2")
    stage = run.main_stage
    model = run.model
    model.train()
    provider = CoresetPrototypes(run, stage, fraction=0.2, reselect_every=2)
    provider.refresh(0)
    assert model.training  # the mode is restored
    labels = run.dataset.train.labels
    coreset = provider.coreset
    budgets = coreset_budgets(run.dataset.class_counts, fraction=0.2)
    assert torch.bincount(labels[coreset], minlength=10).tolist() == budgets.tolist()

    ds = run.dataset
    with torch.no_grad():
        model.eval()
        eval_view = run.plugins.component("view", "eval").obj.make_batched(ds.image_size, ds.mean, ds.std)
        embedded = run.embed(model, model.backbone(eval_view(ds.train.images, torch.Generator())))
        expected_coreset = select_coreset(embedded, labels, per_class_fraction=0.2, num_classes=10)
        assert torch.equal(coreset, expected_coreset)

        seed = epoch_seed(run.config.seed, 0, 0) ^ 0x50726F436F
        transform = run.plugins.component("view", run.config.views.contrastive).obj.make_batched(
            ds.image_size, ds.mean, ds.std)
        generator = torch.Generator().manual_seed(seed)
        images = ds.train.images[coreset]
        for prototypes in provider.sets:
            z = run.embed(model, model.backbone(transform(images, generator)))
            for c in range(10):
                mean = F.normalize(z[labels[coreset] == c].mean(dim=0), dim=0)
                torch.testing.assert_close(prototypes[c], mean, rtol=1e-4, atol=1e-5)
    model.train()
    assert bool(provider.class_mask.all())
    assert not torch.allclose(provider.sets[0], provider.sets[1])
    # the coreset is kept as the provider's (checkpointed) state until the next selection is due
    assert provider.state_dict()["coreset"] is coreset
    assert not provider.due(1) and provider.due(2)


def test_proco_rescales_the_contrastive_terms_by_alpha(make_run):
    run = make_run(["cogloat", "proco"], "proco.alpha=0.3", "cogloat.weight=2.0")
    weights = {t.name: t.weight for t in run.main_stage.losses}
    assert weights["cogloat"] == pytest.approx(0.6) and weights["proco"] == pytest.approx(0.7)
    assert "proco" not in {t.name for t in run.stage("classifier").losses}
    run = make_run(["supcon", "proco"])
    weights = {t.name: t.weight for t in run.main_stage.losses}
    assert weights == {"supcon": 0.5, "proco": 0.5, "ce": 1.0}


def test_proco_without_a_contrastive_loss_is_an_error_naming_proco(make_run):
    with pytest.raises(PluginError, match="proco") as info:
        make_run(["la", "proco"])
    assert "la" in str(info.value) and "contrastive" in str(info.value)
