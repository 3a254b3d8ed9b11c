"""The baselines' loss terms inside assembled runs, against direct computations of the formulas.

No training here: runs are assembled with ``prepare`` and each term is called on a step built
from random logits or embeddings, as the engine would call it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcore import hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import prepare
from ltcore.errors import PluginError
from ltcore.plugins import Plugins
from ltcore.run import Step
from ltcore.testing import FAST_SETTINGS

RTOL = 1e-5
BATCH = 24


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def assemble(plugins, selected, *assignments, epochs=4):
    settings = resolve(plugins, selected, assignments=[*FAST_SETTINGS, "device=cpu", *assignments],
                       overrides={"epochs": epochs})
    return prepare(plugins, selected, settings)


def make_step(run, epoch, logits=None, targets=None, embeddings=None):
    stage = run.main_stage
    step = Step(run, stage, epoch, 0, {"sample": torch.arange(len(targets))},
                {"sample": targets}, {})
    if logits is not None:
        step.logits["cls"] = logits
    for role, z in (embeddings or {}).items():
        step.embeddings[role] = z
    return step


def random_batch(run, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(BATCH, run.dataset.num_classes, generator=generator,
                               dtype=torch.float64)
    targets = torch.randint(0, run.dataset.num_classes, (BATCH,), generator=generator)
    return logits, targets


def close(actual, expected):
    return math.isclose(float(actual), float(expected), rel_tol=RTOL, abs_tol=1e-12)


# -- direct formulas ------------------------------------------------------------------------


def log_softmax_entry(row, index):
    return row[index] - math.log(sum(math.exp(v) for v in row))


def weighted_mean(per_sample, targets, weights):
    if weights is None:
        return sum(per_sample) / len(per_sample)
    return (sum(weights[y] * l for l, y in zip(per_sample, targets))
            / sum(weights[y] for y in targets))


def effective_number_weights(counts, beta):
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [w * len(raw) / sum(raw) for w in raw]


def direct_ce(logits, targets, weights=None):
    per = [-log_softmax_entry(row, y) for row, y in zip(logits.tolist(), targets.tolist())]
    return weighted_mean(per, targets.tolist(), weights)


def direct_focal(logits, targets, gamma, weights=None):
    """Cui et al.'s class-balanced focal loss: -w_y (1 - p_y)^gamma log p_y, weighted mean."""
    per = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        per.append(-((1 - p) ** gamma) * math.log(p))
    return weighted_mean(per, targets.tolist(), weights)


def direct_ldam(cosines, targets, counts, max_margin, s, weights=None):
    """-log softmax(s * (z - m_y e_y))_y with m_j = C / n_j^(1/4), C such that max m = max_margin."""
    constant = max_margin * min(counts) ** 0.25
    margins = [constant / n ** 0.25 for n in counts]
    per = []
    for row, y in zip(cosines.tolist(), targets.tolist()):
        adjusted = [s * (v - (margins[y] if j == y else 0.0)) for j, v in enumerate(row)]
        per.append(-log_softmax_entry(adjusted, y))
    return weighted_mean(per, targets.tolist(), weights)


# -- focal and class-balanced ---------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_term_matches_the_formula(plugins, gamma):
    run = assemble(plugins, ["focal"], f"focal.gamma={gamma}")
    term = run.main_stage.classifier_loss
    assert (term.name, term.plugin, term.kind) == ("focal", "focal", "classifier")
    logits, targets = random_batch(run)
    assert close(term(make_step(run, 0, logits, targets)), direct_focal(logits, targets, gamma))


@pytest.mark.parametrize("loss", ["ce", "focal"])
@pytest.mark.parametrize("beta", [0.9, 0.999, 0.9999])
def test_class_balanced_terms_match_the_formula(plugins, loss, beta):
    run = assemble(plugins, ["cb"], f"cb.loss={loss!r}", f"cb.beta={beta}", "cb.gamma=0.5")
    term = run.main_stage.classifier_loss
    assert term.name == f"cb-{loss}"
    counts = run.dataset.class_counts.tolist()
    weights = effective_number_weights(counts, beta)
    logits, targets = random_batch(run, seed=1)
    expected = (direct_ce(logits, targets, weights) if loss == "ce"
                else direct_focal(logits, targets, 0.5, weights))
    assert close(term(make_step(run, 0, logits, targets)), expected)


def test_class_balanced_weights_can_be_deferred(plugins):
    run = assemble(plugins, ["cb"], "cb.start_epoch=2")
    term = run.main_stage.classifier_loss
    weights = effective_number_weights(run.dataset.class_counts.tolist(), 0.9999)
    logits, targets = random_batch(run, seed=2)
    assert close(term(make_step(run, 1, logits, targets)), direct_ce(logits, targets))
    assert close(term(make_step(run, 2, logits, targets)), direct_ce(logits, targets, weights))


# -- LDAM-DRW -------------------------------------------------------------------------------


def cosine_logits(run, seed):
    generator = torch.Generator().manual_seed(seed)
    cosines = 2 * torch.rand(BATCH, run.dataset.num_classes, generator=generator,
                             dtype=torch.float64) - 1
    targets = torch.randint(0, run.dataset.num_classes, (BATCH,), generator=generator)
    return cosines, targets


def test_ldam_uses_the_normalised_classifier_and_fourth_root_margins(plugins):
    run = assemble(plugins, ["ldam-drw"], "ldam-drw.drw=false")
    assert run.config.model.classifier == "cosine"
    classifier = run.model.classifier
    term = run.main_stage.classifier_loss
    assert term.name == "ldam" and term.kind == "classifier"
    counts = run.dataset.class_counts.tolist()
    cosines, targets = cosine_logits(run, 3)
    logits = classifier.scale * cosines  # what the cosine classifier outputs
    expected = direct_ldam(cosines, targets, counts, 0.5, 30.0)
    assert close(term(make_step(run, 0, logits, targets)), expected)


def test_ldam_margin_and_scale_options(plugins):
    run = assemble(plugins, ["ldam-drw"], "ldam-drw.drw=false", "ldam-drw.max_margin=0.3",
                   "ldam-drw.scale=16", "model.cosine_scale=10")
    term = run.main_stage.classifier_loss
    cosines, targets = cosine_logits(run, 4)
    expected = direct_ldam(cosines, targets, run.dataset.class_counts.tolist(), 0.3, 16.0)
    assert close(term(make_step(run, 0, 10.0 * cosines, targets)), expected)


def test_ldam_with_a_linear_classifier_puts_margins_on_the_raw_logits(plugins):
    run = assemble(plugins, ["ldam-drw"], "ldam-drw.drw=false", "model.classifier='linear'")
    term = run.main_stage.classifier_loss
    logits, targets = random_batch(run, seed=5)
    expected = direct_ldam(logits, targets, run.dataset.class_counts.tolist(), 0.5, 1.0)
    assert close(term(make_step(run, 0, logits, targets)), expected)


def test_drw_switches_at_the_configured_epoch(plugins):
    run = assemble(plugins, ["ldam-drw"], "ldam-drw.drw_epoch=3", "ldam-drw.beta=0.999")
    term = run.main_stage.classifier_loss
    assert term.name == "ldam-drw"
    counts = run.dataset.class_counts.tolist()
    weights = effective_number_weights(counts, 0.999)
    cosines, targets = cosine_logits(run, 6)
    logits = 30.0 * cosines
    plain = direct_ldam(cosines, targets, counts, 0.5, 30.0)
    weighted = direct_ldam(cosines, targets, counts, 0.5, 30.0, weights)
    assert not close(plain, weighted)
    for epoch in (0, 2):
        assert close(term(make_step(run, epoch, logits, targets)), plain)
    for epoch in (3, 7):
        assert close(term(make_step(run, epoch, logits, targets)), weighted)


def test_drw_that_never_starts_warns(plugins):
    with pytest.warns(UserWarning, match="ldam-drw.drw_epoch"):
        assemble(plugins, ["ldam-drw"], epochs=4)


# -- KCL ------------------------------------------------------------------------------------


def direct_contrastive(z, positives, temperature, bias=None):
    rows = z.tolist()
    n = len(rows)

    def s(i, j):
        value = sum(a * b for a, b in zip(rows[i], rows[j])) / temperature
        return value + (float(bias[i][j]) if bias is not None else 0.0)

    losses = []
    for i in range(n):
        if not positives[i]:
            continue
        denominator = sum(math.exp(s(i, a)) for a in range(n) if a != i)
        losses.append(sum(-math.log(math.exp(s(i, p)) / denominator) for p in positives[i])
                      / len(positives[i]))
    return sum(losses) / len(losses)


def contrastive_batch(seed, batch=12, classes=3, dim=8):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    views = [F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
             for _ in range(2)]
    return labels, views


class ConstantBias:
    """A plugin that adds a fixed bias to every contrastive loss (as RCL does with log n_j)."""

    def __init__(self, bias):
        self.bias = bias
        self.seen = []

    @hookimpl
    def contrastive_logit_bias(self, contrast):
        self.seen.append(contrast.term.name)
        return self.bias


@pytest.mark.parametrize("k", [0, 2, 6])
def test_kcl_term_matches_the_formula_on_its_drawn_positives(plugins, k):
    from ltcore.losses.contrastive import kcl_positive_mask

    run = assemble(plugins, ["kcl"], f"kcl.k={k}", "kcl.temperature=0.2")
    stage = run.main_stage
    term = stage.loss("kcl")
    assert term.kind == "contrastive" and term.rebalanceable
    assert stage.classifier_loss.name == "ce"
    assert [r for r, v in stage.views.items() if v.embed] == ["con0", "con1"]
    labels, views = contrastive_batch(k)
    step = make_step(run, 0, targets=labels, embeddings={"con0": views[0], "con1": views[1]})
    torch.manual_seed(11)
    value = term(step)
    torch.manual_seed(11)
    stacked = torch.cat([labels, labels])
    mask = kcl_positive_mask(stacked, k, n_views=2)
    positives = [mask[i].nonzero().flatten().tolist() for i in range(len(stacked))]
    batch = len(labels)
    for i, pos in enumerate(positives):
        others = int((stacked == stacked[i]).sum()) - 2
        assert (i + batch) % (2 * batch) in pos  # the other view of the same image
        assert len(pos) == 1 + min(k, others)
        assert all(int(stacked[p]) == int(stacked[i]) for p in pos)
    assert close(value, direct_contrastive(torch.cat(views), positives, 0.2))


def test_kcl_term_takes_other_plugins_contrastive_bias():
    from ltcore.losses.contrastive import kcl_positive_mask

    labels, views = contrastive_batch(3)
    bias = torch.randn(2 * len(labels), 2 * len(labels), dtype=torch.float64,
                       generator=torch.Generator().manual_seed(0))
    spy = ConstantBias(bias)
    plugins = Plugins(extra={"bias": spy})
    run = assemble(plugins, ["kcl", "bias"], "kcl.k=3")
    step = make_step(run, 0, targets=labels, embeddings={"con0": views[0], "con1": views[1]})
    torch.manual_seed(5)
    value = run.main_stage.loss("kcl")(step)
    torch.manual_seed(5)
    mask = kcl_positive_mask(torch.cat([labels, labels]), 3, n_views=2)
    positives = [row.nonzero().flatten().tolist() for row in mask]
    assert spy.seen == ["kcl"]
    assert close(value, direct_contrastive(torch.cat(views), positives, 0.1, bias.tolist()))


# -- retraining stages ----------------------------------------------------------------------


@pytest.mark.parametrize("order", [["ce", "crt", "lws"], ["lws", "crt"]])
def test_crt_and_lws_stages_follow_the_main_stage(plugins, order):
    run = assemble(plugins, order, "crt.epochs=3", "crt.lr=0.05", "lws.epochs=2")
    assert [s.name for s in run.stages] == ["train", "classifier", "lws"]
    crt, lws = run.stages[1], run.stages[2]
    assert crt.trainable == lws.trainable == "classifier"
    assert crt.sampler == lws.sampler == "class-balanced"
    assert (crt.epochs, crt.optim.lr, crt.schedule.kind, crt.schedule.warmup_epochs) == (3, 0.05, "cosine", 0)
    assert crt.classifier_loss.name == "crt-ce" and lws.classifier_loss.name == "lws-ce"
    assert crt.model is run.model and lws.model is run.model
    assert crt.views["cls"].pipeline == run.config.views.classifier


def test_crt_reinitialisation_is_seeded_and_fresh(plugins):
    from ltcore.builtin.crt import reinitialise

    run = assemble(plugins, ["ce", "crt"], "model.classifier_init=default")
    classifier = run.model.classifier
    with torch.no_grad():
        classifier.weight.fill_(3.0)
        classifier.bias.fill_(3.0)
    state = torch.get_rng_state()
    reinitialise(classifier, 123)
    assert torch.equal(torch.get_rng_state(), state)  # the run's random stream is untouched
    first = {k: v.clone() for k, v in classifier.state_dict().items()}
    bound = 1 / math.sqrt(classifier.in_features)
    assert first["weight"].abs().max() <= bound and first["bias"].abs().max() <= bound
    reinitialise(classifier, 123)
    assert all(torch.equal(first[k], v) for k, v in classifier.state_dict().items())
    reinitialise(classifier, 124)
    assert not torch.equal(first["weight"], classifier.weight)


def test_crt_reinitialises_with_the_classifiers_own_init(plugins):
    from ltcore.builtin.crt import reinitialise
    from ltcore.models import LinearClassifier

    run = assemble(plugins, ["ce", "crt"])  # a CIFAR ResNet: Kaiming-normal classifier
    classifier = run.model.classifier
    assert classifier.init == "kaiming_normal"
    reinitialise(classifier, 123)
    torch.manual_seed(123)
    expected = LinearClassifier(classifier.in_features, classifier.out_features,
                                init="kaiming_normal")
    assert torch.equal(classifier.weight, expected.weight)
    assert torch.equal(classifier.bias, expected.bias)


def test_crt_reinitialises_a_cosine_classifier_too(plugins):
    from ltcore.builtin.crt import reinitialise

    run = assemble(plugins, ["ldam-drw", "crt"], "ldam-drw.drw_epoch=1")
    classifier = run.model.classifier
    with torch.no_grad():
        classifier.weight.fill_(1.0)
    reinitialise(classifier, 0)
    assert classifier.weight.std() > 0


def test_lws_scales_multiply_the_classifier_logits(plugins):
    from ltcore.evaluation import model_outputs

    run = assemble(plugins, ["ce", "lws"])
    classifier = run.model.classifier
    assert not classifier.lws_scale.requires_grad
    features = torch.randn(5, classifier.in_features)

    def scaled(logits):
        """Training logits and evaluation logits, each after the plugins' adjustments."""
        step = make_step(run, 0, logits.clone(), torch.zeros(len(logits), dtype=torch.long))
        run.hooks.adjust_classifier_logits(step=step)
        return step.logits["cls"]

    plain = F.linear(features, classifier.weight, classifier.bias)
    assert torch.allclose(scaled(plain), plain)  # ones until the stage learns them
    raw, _ = model_outputs(run, run.model, run.dataset.val, keep_features=False)
    assert torch.allclose(run.evaluate(splits=["val"]).outputs["val"].logits, raw)
    with torch.no_grad():
        classifier.lws_scale.copy_(torch.linspace(0.5, 2.0, run.dataset.num_classes))
    assert torch.allclose(scaled(plain), plain * classifier.lws_scale)
    assert torch.allclose(run.evaluate(splits=["val"]).outputs["val"].logits,
                          raw * classifier.lws_scale)


def test_tau_norm_needs_a_linear_classifier_and_excludes_lws(plugins):
    with pytest.raises(PluginError, match="linear classifier"):
        assemble(plugins, ["ldam-drw", "tau-norm"], "ldam-drw.drw_epoch=1")
    with pytest.raises(PluginError, match="'tau-norm' and 'lws'"):
        assemble(plugins, ["ce", "lws", "tau-norm"])


# -- post-hoc logit adjustment ----------------------------------------------------------------


def test_posthoc_logit_adjustment_is_logits_minus_tau_log_prior(plugins):
    from ltcore.evaluation import evaluate

    raw_run = assemble(plugins, ["ce"])
    raw = evaluate(raw_run, raw_run.model, final=True).outputs
    adjusted_run = assemble(plugins, ["ce"], "eval.posthoc_la_tau=1.5")
    assert all(torch.equal(a, b) for a, b in zip(raw_run.model.state_dict().values(),
                                                  adjusted_run.model.state_dict().values()))
    evaluation = evaluate(adjusted_run, adjusted_run.model, final=True)
    figures, adjusted = evaluation.figures(), evaluation.outputs
    counts = raw_run.dataset.class_counts.double()
    prior = counts / counts.sum()
    for split in ("val", "test"):
        expected = raw[split].logits.double() - 1.5 * torch.log(prior)
        assert torch.allclose(adjusted[split].logits.double(), expected, atol=1e-5)
        predictions = expected.argmax(dim=1)
        assert torch.equal(adjusted[split].predictions, predictions)
        assert not torch.equal(raw[split].predictions, predictions)
        accuracy = 100.0 * float((predictions == adjusted[split].labels).double().mean())
        assert close(figures[f"{split}/acc"], accuracy)


# -- loss weights of la and supcon (RCL's LC+SCL ablation: alpha 2, beta 1) -----------------


def direct_la(logits, targets, counts, tau):
    """Menon et al.'s logit-adjusted CE: -log softmax(f + tau log pi)_y, pi = n / sum n."""
    total = sum(counts)
    shift = [tau * math.log(n / total) for n in counts]
    per = [-log_softmax_entry([v + b for v, b in zip(row, shift)], y)
           for row, y in zip(logits.tolist(), targets.tolist())]
    return sum(per) / len(per)


def total_loss(stage, step):
    """The step's loss as the trainer sums it: sum of weight * term."""
    return sum(term.weight * term(step) for term in stage.losses)


@pytest.mark.parametrize("weight", [None, 0.0, 0.5, 2.0])
def test_la_weight_scales_the_la_ce_term(plugins, weight):
    extra = [] if weight is None else [f"la.weight={weight}"]
    run = assemble(plugins, ["la"], "la.tau=1.3", *extra)
    stage = run.main_stage
    term = stage.classifier_loss
    assert (term.name, term.plugin, term.weight) == ("la-ce", "la", 1.0 if weight is None
                                                     else weight)
    assert [t.name for t in stage.losses] == ["la-ce"]
    logits, targets = random_batch(run, seed=7)
    direct = direct_la(logits, targets, run.dataset.class_counts.tolist(), 1.3)
    step = make_step(run, 0, logits, targets)
    assert close(term(step), direct)
    assert close(total_loss(stage, step), (1.0 if weight is None else weight) * direct)


def direct_supcon(z, labels, temperature):
    """Khosla et al.'s L_out: the positives of an anchor are the other rows of its class."""
    stacked = labels.tolist()
    positives = [[p for p in range(len(stacked)) if p != i and stacked[p] == stacked[i]]
                 for i in range(len(stacked))]
    return direct_contrastive(z, positives, temperature)


@pytest.mark.parametrize("alpha, beta", [(2.0, 1.0), (1.0, 0.25), (0.0, 3.0)])
def test_la_plus_supcon_is_alpha_la_ce_plus_beta_supcon(plugins, alpha, beta):
    run = assemble(plugins, ["la", "supcon"], "la.tau=1.3", f"la.weight={alpha}",
                   f"supcon.weight={beta}", "supcon.temperature=0.2")
    stage = run.main_stage
    assert sorted((t.name, t.plugin, t.weight) for t in stage.losses) == [
        ("la-ce", "la", alpha), ("supcon", "supcon", beta)]
    labels, views = contrastive_batch(8, batch=BATCH)
    logits, _ = random_batch(run, seed=8)
    step = make_step(run, 0, logits, labels, {"con0": views[0], "con1": views[1]})
    la = direct_la(logits, labels, run.dataset.class_counts.tolist(), 1.3)
    supcon = direct_supcon(torch.cat(views), torch.cat([labels, labels]), 0.2)
    assert close(stage.loss("supcon")(step), supcon)
    assert close(total_loss(stage, step), alpha * la + beta * supcon)


def test_supcon_alone_keeps_the_default_ce_at_weight_one(plugins):
    run = assemble(plugins, ["supcon"], "supcon.weight=0.5")
    stage = run.main_stage
    assert (stage.classifier_loss.name, stage.classifier_loss.weight) == ("ce", 1.0)
    assert stage.loss("supcon").weight == 0.5


@pytest.mark.parametrize("assignment", ["la.weight=-1", "supcon.weight=-0.5"])
def test_negative_loss_weights_are_config_errors(plugins, assignment):
    from ltcore.errors import ConfigError

    with pytest.raises(ConfigError, match=assignment.split("=")[0]) as info:
        resolve(plugins, [assignment.split(".")[0]], assignments=[assignment])
    assert "\n" not in str(info.value)


class DefaultClassifierLoss:
    """A method plugin whose recipe sets the classifier loss (as BCL's LA-CE does)."""

    @hookimpl(tryfirst=True)
    def setup_run(self, run):
        from ltcore.terms import cross_entropy_term

        run.classifier_view()
        run.main_stage.set_classifier_loss(cross_entropy_term("recipe-ce", "recipe", 2.0),
                                           default=True)


def test_la_weight_that_a_recipe_would_override_is_an_error():
    from ltcore.errors import ConfigError

    plugins = Plugins(extra={"recipe": DefaultClassifierLoss()})
    run = assemble(plugins, ["recipe", "la"])  # la takes over the recipe's weight, as before
    assert (run.main_stage.classifier_loss.name, run.main_stage.classifier_loss.weight) == (
        "la-ce", 2.0)
    assert assemble(plugins, ["recipe", "la"], "la.weight=2").main_stage.classifier_loss.weight \
        == 2.0
    with pytest.raises(ConfigError, match="la.weight = 3.*'recipe'"):
        assemble(plugins, ["recipe", "la"], "la.weight=3")
