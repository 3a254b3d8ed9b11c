"""Options of the paper's ablations: the two interpolative weights apart (Table 4), lambda ~
Beta(a, b) (Table 5) and the uniform draw of x^t (Table 6)."""

import pytest
import torch
from ltcore_iccl import sample_interpolation_weights
from ltcore_iccl.samplers import PairedSampler

from ltcore import ConfigError, Plugins, resolve
from ltcore.testing import forward, training_step

COUNTS = [40, 20, 10, 5, 2]


def labels_of(counts=COUNTS):
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


# -- Table 4: L_ce^it and L_cc^it with their own weights ----------------------------------------


def term_weights(run, epoch):
    state = run.plugin_object("iccl")
    state.set_phase(epoch)
    return {t.name: t.weight for t in run.main_stage.losses}


def test_interpolative_terms_default_to_the_shared_weight(make_run):
    run = make_run(["iccl"], "iccl.warmup_epochs=1", "iccl.interpolative_weight=0.7",
                   "iccl.classifier_epochs=0", epochs=2)
    assert term_weights(run, 0) == {"ce": 1.0, "iccl-cc-warmup": 1.0, "iccl-ce-it": 0.0,
                                    "iccl-cc-it": 0.0}
    assert term_weights(run, 1) == {"ce": 1.0, "iccl-cc-warmup": 0.0, "iccl-ce-it": 0.7,
                                    "iccl-cc-it": 0.7}


def test_each_interpolative_term_takes_its_own_weight(make_run):
    run = make_run(["iccl"], "iccl.warmup_epochs=1", "iccl.interpolative_weight=0.7",
                   "iccl.interpolative_ce_weight=0", "iccl.interpolative_centroid_weight=0.25",
                   "iccl.uniform_weight=0", "iccl.classifier_epochs=0", epochs=2)
    assert term_weights(run, 0)["iccl-ce-it"] == 0.0 and term_weights(run, 0)["iccl-cc-it"] == 0.0
    assert term_weights(run, 1) == {"ce": 0.0, "iccl-cc-warmup": 0.0, "iccl-ce-it": 0.0,
                                    "iccl-cc-it": 0.25}
    # Table 4, "L_ce^it only" without warm-up: eq. 8 with w_u = 0 and no L_cc^it from epoch 0
    only_ce_it = make_run(["iccl"], "iccl.warmup_epochs=0", "iccl.uniform_weight=0",
                          "iccl.interpolative_centroid_weight=0", "iccl.classifier_epochs=0")
    assert term_weights(only_ce_it, 0) == {"ce": 0.0, "iccl-cc-warmup": 0.0, "iccl-ce-it": 1.0,
                                           "iccl-cc-it": 0.0}


def test_the_weighted_total_is_eq8_with_separate_weights(make_run):
    run = make_run(["iccl"], "iccl.warmup_epochs=0", "iccl.interpolative_ce_weight=0.5",
                   "iccl.interpolative_centroid_weight=2", "iccl.classifier_epochs=0")
    state = run.plugin_object("iccl")
    run.hooks.epoch_start(run=run, stage=run.main_stage, epoch=0)
    step = training_step(run, batch_size=16)
    losses = dict(zip([t.name for t in run.main_stage.losses], forward(run, step)))
    total = sum(t.weight * losses[t.name] for t in run.main_stage.losses)
    expected = losses["ce"] + 0.5 * losses["iccl-ce-it"] + 2.0 * losses["iccl-cc-it"]
    torch.testing.assert_close(total, expected)
    assert state.options.interpolative_weights() == (0.5, 2.0)
    assert losses["iccl-ce-it"] > 0 and losses["iccl-cc-it"] > 0


# -- Table 5: lambda ~ Beta(a, b) ----------------------------------------------------------------


def test_equal_parameters_keep_the_symmetric_draw_bit_for_bit():
    """Beta(a, a) through ``beta=`` is the draw made before the option existed."""
    for alpha in (1.0, 0.2):
        old = torch._standard_gamma(torch.full((2, 50), alpha, dtype=torch.float64),
                                    generator=torch.Generator().manual_seed(3))
        expected = (old[0] / old.sum(0)).float()
        drawn = sample_interpolation_weights(50, alpha, torch.Generator().manual_seed(3),
                                             beta=alpha)
        assert torch.equal(drawn, expected)


@pytest.mark.parametrize(("a", "b"), [(0.2, 1.0), (2.0, 0.5)])
def test_asymmetric_weights_follow_beta_moments(a, b):
    draws = sample_interpolation_weights(100_000, a, torch.Generator().manual_seed(0),
                                         dtype=torch.float64, beta=b)
    mean = a / (a + b)
    variance = a * b / ((a + b) ** 2 * (a + b + 1))
    assert draws.mean().item() == pytest.approx(mean, abs=4e-3)
    assert draws.var().item() == pytest.approx(variance, rel=3e-2)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    if (a, b) == (0.2, 1.0):  # P(lam < x) = x^0.2: small lambda, mostly the class-aware image
        assert (draws < 0.1).double().mean().item() == pytest.approx(0.1 ** 0.2, abs=5e-3)


def test_beta_options_default_to_alpha_and_reject_bad_values():
    plugins = Plugins()
    options = resolve(plugins, ["iccl"]).plugins["iccl"]
    assert (options.beta_a, options.beta_b, options.beta) == (None, None, (1.0, 1.0))
    options = resolve(plugins, ["iccl"], assignments=["iccl.alpha=2", "iccl.beta_a=0.2"])
    assert options.plugins["iccl"].beta == (0.2, 2.0)
    with pytest.raises(ConfigError, match="iccl.beta_b"):
        resolve(plugins, ["iccl"], assignments=["iccl.beta_b=0"])


def test_the_run_mixes_with_beta_a_b(make_run):
    run = make_run(["iccl"], "iccl.warmup_epochs=0", "iccl.beta_a=0.2", "iccl.beta_b=1.0",
                   "iccl.classifier_epochs=0")
    state = run.plugin_object("iccl")
    run.hooks.epoch_start(run=run, stage=run.main_stage, epoch=0)
    generator = torch.Generator().set_state(state.generator.get_state())
    step = training_step(run, batch_size=16)
    run.hooks.adjust_images(step=step)
    expected = sample_interpolation_weights(16, 0.2, generator, beta=1.0)
    assert torch.equal(step.extras["iccl.lambda"], expected)


# -- Table 6: the uniform sampler of x^t ---------------------------------------------------------


def test_uniform_column_is_an_independent_permutation_of_the_images():
    labels = labels_of()
    sampler = PairedSampler(labels, 0.0, uniform=True)
    rows = sampler.epoch_indices(0, torch.Generator().manual_seed(0))
    assert rows.shape == (len(labels), 2) and sampler.gamma == 0.0
    # every image once per epoch: classes in proportion n_k, the long-tailed distribution
    assert torch.equal(torch.sort(rows[:, 1]).values, torch.arange(len(labels)))
    assert torch.equal(torch.sort(rows[:, 0]).values, torch.arange(len(labels)))
    assert not torch.equal(rows[:, 0], rows[:, 1])
    again = sampler.epoch_indices(0, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)
    with pytest.raises(ValueError, match="gamma"):
        PairedSampler(labels, 0.5, uniform=True)


class Longer:
    """A class-agnostic sampler with more rows than images."""

    def __init__(self, n):
        self.n = n

    def epoch_indices(self, epoch, generator):
        return torch.arange(self.n) % 7

    def __len__(self):
        return self.n


def test_uniform_column_covers_a_longer_epoch_with_whole_permutations():
    labels = labels_of()
    rows = PairedSampler(labels, agnostic=Longer(2 * len(labels) + 5), uniform=True).epoch_indices(
        0, torch.Generator().manual_seed(1))
    second = rows[:, 1]
    n = len(labels)
    assert len(second) == 2 * n + 5
    for part in (second[:n], second[n:2 * n]):
        assert torch.equal(torch.sort(part).values, torch.arange(n))


def test_tail_sampler_option_reaches_the_stage(make_run):
    run = make_run(["iccl"], "iccl.tail_sampler=uniform", "iccl.classifier_epochs=0")
    stage = run.main_stage
    assert stage.sampler_options == {"gamma": 0.0, "agnostic": "instance-balanced",
                                     "tail": "uniform"}
    sampler = run.build("sampler", stage.sampler, **stage.sampler_options)
    assert sampler.uniform and isinstance(sampler, PairedSampler)
    default = make_run(["iccl"], "iccl.classifier_epochs=0").main_stage
    assert "tail" not in default.sampler_options
    with pytest.raises(ConfigError, match="tail_sampler=uniform"):
        resolve(Plugins(), ["iccl"], assignments=["iccl.tail_sampler=uniform", "iccl.gamma=1"])
    with pytest.raises(ConfigError, match="iccl.tail_sampler"):
        resolve(Plugins(), ["iccl"], assignments=["iccl.tail_sampler=reverse"])
