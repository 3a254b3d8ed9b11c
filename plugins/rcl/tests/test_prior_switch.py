"""``rcl.prior``: the balanced-softmax rebalancing switched off, the rest of RCL kept.

Runs are assembled (``ltcore.prepare``), not trained; each contrastive term is called on random
unit embeddings and compared with the un-rebalanced loss and a direct computation of it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ltcore_bcl import balanced_contrastive_loss
from ltcore_rcl import rebalanced_supcon_loss

from ltcore import ConfigError, ContrastSet, Plugins, Step, prepare, resolve
from ltcore.losses import supcon_loss
from ltcore.testing import FAST_SETTINGS


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def assemble(plugins, selected, *assignments, epochs=2):
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, "device=cpu",
                                                       *assignments],
                       overrides={"epochs": epochs})
    return prepare(plugins, selected, settings)


def step_with_embeddings(run, seed=0, rows=12):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (rows,), generator=generator)
    step = Step(run, run.main_stage, 0, 0, {"sample": torch.arange(rows)}, {"sample": labels}, {})
    for role in step.embedding_roles():
        step.embeddings[role] = F.normalize(
            torch.randn(rows, 128, generator=generator, dtype=torch.float64), dim=1)
    return step


def slow_supcon(z, labels, temperature):
    """Khosla et al.'s L_out without any prior: mean over anchors with positives of
    -(1/|P_i|) sum_p log(exp(s_ip) / sum_{k != i} exp(s_ik))."""
    rows, labels = z.tolist(), labels.tolist()
    n = len(rows)

    def s(i, k):
        return sum(a * b for a, b in zip(rows[i], rows[k])) / temperature

    losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        log_denominator = math.log(sum(math.exp(s(i, k)) for k in range(n) if k != i))
        losses.append(sum(log_denominator - s(i, p) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def contrastive_term(run):
    (term,) = run.main_stage.contrastive_losses
    return term


def test_prior_defaults_on_and_validates(plugins):
    assert resolve(plugins, ["rcl"]).plugins["rcl"].prior is True
    with pytest.raises(ConfigError, match="rcl.prior"):
        resolve(plugins, ["rcl"], assignments=["rcl.prior='maybe'"])


@pytest.mark.parametrize("selected", [["rcl"], ["supcon", "rcl"]])
def test_prior_off_is_plain_supcon(plugins, selected):
    run = assemble(plugins, selected, "rcl.prior=false")
    step = step_with_embeddings(run)
    z, labels = step.stacked_embeddings()
    value = contrastive_term(run)(step)
    assert torch.equal(value, supcon_loss(z, labels, 0.1))
    assert math.isclose(float(value), slow_supcon(z, labels, 0.1), rel_tol=1e-9)
    rebalanced = rebalanced_supcon_loss(z, labels, run.class_counts, 0.1)
    assert abs(float(rebalanced) - float(value)) > 1e-3
    # the rest of RCL stays: its own LA-CE (alone), its metrics, its plugin object
    assert {"calinski-harabasz", "davies-bouldin"} <= set(run.metrics)
    assert run.plugin_object("rcl").terms == [contrastive_term(run)]


def test_prior_off_gives_no_bias(plugins):
    run = assemble(plugins, ["rcl"], "rcl.prior=false")
    step = step_with_embeddings(run)
    labels = step.targets("con0")
    contrast = ContrastSet(step, contrastive_term(run), labels, labels,
                           torch.zeros(len(labels), dtype=torch.bool))
    assert run.contrastive_bias(contrast) is None


def test_prior_off_on_bcl_is_plain_bcl(plugins):
    run = assemble(plugins, ["bcl", "rcl"], "rcl.prior=false")
    run.model.eval()
    step = step_with_embeddings(run, seed=4)
    z, labels = step.stacked_embeddings()
    prototypes = run.build("prototype-provider", "classifier-mlp").prototypes(step)
    expected = balanced_contrastive_loss(z, labels, prototypes, 0.1)
    assert torch.equal(contrastive_term(run)(step), expected)


def test_prior_off_keeps_feature_compression(plugins):
    run = assemble(plugins, ["rcl"], "rcl.prior=false", "rcl.compression_factor_below=0.5",
                   "rcl.compression_factor_others=0.25", epochs=2)
    run.hooks.epoch_start(run=run, stage=run.main_stage, epoch=1)
    factors = run.modules["rcl"].factors
    assert sorted(set(factors.tolist())) <= [0.25, 0.5] and run.plugin_object("rcl").record
    step = step_with_embeddings(run, seed=2)
    raw = {role: z.clone() for role, z in step.embeddings.items()}
    run.hooks.adjust_embeddings(step=step)
    for role, z in raw.items():
        scaled = z * factors[step.targets(role)].to(z.dtype)[:, None]
        torch.testing.assert_close(step.embeddings[role], scaled)
    compressed, labels = step.stacked_embeddings()
    value = contrastive_term(run)(step)
    assert torch.equal(value, supcon_loss(compressed, labels, 0.1))
    assert math.isclose(float(value), slow_supcon(compressed, labels, 0.1), rel_tol=1e-9)


def test_prior_off_accepts_a_class_without_training_images():
    from ltcore import DataError
    from ltcore_rcl.plugin import Options, _check

    class Fake:
        class_counts = torch.tensor([3, 0, 2])

    with pytest.raises(DataError, match="no training image"):
        _check(Fake(), Options())
    _check(Fake(), Options(prior=False, compression=False))
