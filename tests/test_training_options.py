"""The training options (optim.accumulate, ema.decay, optim.clip_grad_norm, loss.label_smoothing,
mix.*, precision fp16, checkpoint.monitor, early_stop.patience, timm's optimisers and schedules),
each checked against a direct computation, and the runs that train with them."""

import math

import pytest
import torch
import torch.nn.functional as F

from ltcore import ConfigError, hookimpl
from ltcore.config import MixConfig, OptimConfig, ScheduleConfig, resolve
from ltcore.engine.mixing import draw, loss_value
from ltcore.engine.runs import train
from ltcore.engine.schedule import LearningRate, learning_rate, parameter_groups, trained_parameters
from ltcore.engine.checkpoints import copy_state
from ltcore.engine.step import forward
from ltcore.engine.updates import Updates
from ltcore.run import Stage, Step
from ltcore.testing import FAST_SETTINGS, assemble_run, mlflow_client, plugins_holding, recorded_runs


class TinyMLP(torch.nn.Module):
    """A backbone without BatchNorm (so that micro-batches and one batch see the same model)."""

    feature_dim = 16

    def __init__(self, channels):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                       torch.nn.Linear(channels * 16, 16), torch.nn.ReLU())

    def forward(self, x):
        return self.net(x)


class TinyBackbone:
    @hookimpl
    def register_backbones(self, register):
        register("tiny-mlp", TinyMLP, "test backbone without BatchNorm")


def tiny_run(*assignments, selected=("ce",), epochs=1):
    plugins = plugins_holding(*selected, extra={"tiny": TinyBackbone()})
    return assemble_run(list(selected), "model.backbone=tiny-mlp", "optim.momentum=0",
                        "optim.weight_decay=0", *assignments, epochs=epochs, plugins=plugins)


def fixed_step(run, rows: slice) -> Step:
    """A step of the main stage on un-augmented training images ``rows``."""
    ds = run.dataset
    images = ds.train.images[rows].float().div(255)
    labels = ds.train.labels[rows]
    return Step(run, run.main_stage, 0, 0, {"sample": torch.arange(len(labels))},
                {"sample": labels}, {"cls": images})


def test_accumulated_micro_batches_make_the_update_of_one_batch_k_times_larger(isolated):
    run = tiny_run("optim.accumulate=4")
    stage = run.main_stage
    groups = parameter_groups(run, stage)
    with trained_parameters(stage, groups):
        start = copy_state(stage.model)
        updates = Updates(run, stage, groups)
        for i in range(4):
            first, last, size = updates.group(i, 4)
            assert (first, last, size) == (i == 0, i == 3, 4)
            if first:
                updates.optimizer.zero_grad(set_to_none=True)
            losses = forward(run, fixed_step(run, slice(8 * i, 8 * i + 8)))
            updates.backward(sum(losses), size)
        updates.step()
        accumulated = copy_state(stage.model)

        stage.model.load_state_dict(start)
        whole = Updates(run, stage, groups)
        assert whole.group(0, 1) == (True, True, 1)
        whole.optimizer.zero_grad(set_to_none=True)
        whole.backward(sum(forward(run, fixed_step(run, slice(0, 32)))), 1)
        whole.step()
    for key, value in copy_state(stage.model).items():
        assert torch.allclose(accumulated[key], value, atol=1e-6), key
    assert not torch.equal(start["backbone.net.2.weight"], accumulated["backbone.net.2.weight"])
    # an epoch of 10 steps in groups of 4: the last group holds the 2 steps left
    assert [updates.group(i, 10) for i in (8, 9)] == [(True, False, 2), (False, True, 2)]


def test_ema_weights_are_the_closed_form_average_of_the_weights(isolated):
    decay = 0.7
    run = tiny_run(f"ema.decay={decay}", "optim.lr=1")
    stage = run.main_stage
    groups = parameter_groups(run, stage)
    with trained_parameters(stage, groups):
        updates = Updates(run, stage, groups)
        params = [p for g in updates.optimizer.param_groups for p in g["params"]]
        weights = [[p.detach().clone() for p in params]]
        for t in (1, 2, 3):
            for p in params:
                p.grad = torch.full_like(p, float(t))
            updates.step()
            weights.append([p.detach().clone() for p in params])
    names = dict(zip(map(id, stage.model.parameters()),
                     (n for n, _ in stage.model.named_parameters())))
    averaged = dict(updates.ema.module.named_parameters())
    for k, p in enumerate(params):
        # ema_T = d^T w_0 + sum_t (1 - d) d^(T - t) w_t, and w_t = w_0 - (1 + ... + t)
        expected = decay ** 3 * weights[0][k] + sum((1 - decay) * decay ** (3 - t) * weights[t][k]
                                                    for t in (1, 2, 3))
        assert torch.allclose(averaged[names[id(p)]], expected, atol=1e-6)
        assert torch.allclose(weights[3][k], weights[0][k] - 6.0)


def test_clipping_bounds_the_gradient_norm_and_reports_it_before(isolated):
    run = tiny_run("optim.clip_grad_norm=0.5", "optim.lr=1")
    stage = run.main_stage
    groups = parameter_groups(run, stage)
    with trained_parameters(stage, groups):
        updates = Updates(run, stage, groups)
        params = [p for g in updates.optimizer.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.full_like(p, 3.0)
        norm = updates.step()
    count = sum(p.numel() for p in params)
    assert float(norm) == pytest.approx(3.0 * math.sqrt(count), rel=1e-5)
    assert float(torch.nn.utils.get_total_norm([p.grad for p in params])) == pytest.approx(0.5,
                                                                                           rel=1e-5)
    for p, b in zip(params, before):  # the step is lr times the clipped gradient
        assert torch.allclose(b - p.detach(), torch.full_like(p, 0.5 / math.sqrt(count)))


def test_label_smoothing_matches_its_formula_for_the_cross_entropy_family(isolated):
    run = tiny_run("loss.label_smoothing=0.1", selected=("ce",))
    step = fixed_step(run, slice(0, 2))
    step.logits = {"cls": torch.tensor([[2.0, 0.0] + [0.0] * 8, [0.0, 1.0] + [0.0] * 8])}
    step.labels = {"sample": torch.tensor([0, 1])}
    term = run.main_stage.classifier_loss
    log_p = F.log_softmax(step.logits["cls"], dim=1)
    expected = -(0.9 * log_p[[0, 1], [0, 1]] + 0.1 * log_p.mean(dim=1)).mean()
    assert float(term(step)) == pytest.approx(float(expected), rel=1e-6)
    # by hand for the first sample: 0.9 * log(e^2 + 9) - 0.9 * 2 + 0.1 * (log(e^2 + 9) - 0.2)
    first = math.log(math.exp(2) + 9)
    assert float(-(0.9 * log_p[0, 0] + 0.1 * log_p[0].mean())) == pytest.approx(
        0.9 * first - 1.8 + 0.1 * (first - 0.2), rel=1e-6)
    la = tiny_run("loss.label_smoothing=0.1", selected=("la",))
    step.run, step.stage = la, la.main_stage
    adjusted = step.logits["cls"] + torch.log(la.class_prior.float())
    log_q = F.log_softmax(adjusted, dim=1)
    expected = -(0.9 * log_q[[0, 1], [0, 1]] + 0.1 * log_q.mean(dim=1)).mean()
    assert float(la.main_stage.classifier_loss(step)) == pytest.approx(float(expected), rel=1e-6)


def test_mixup_and_cutmix_mix_images_and_labels_as_their_formulas(isolated):
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8)
    mixup = draw(MixConfig(mixup_alpha=0.4), seed=11, shares=[4], height=8, width=8)
    assert mixup.box is None and 0 < mixup.lam < 1 and sorted(mixup.partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixup.images(x), mixup.lam * x + (1 - mixup.lam) * x[mixup.partner])
    assert draw(MixConfig(mixup_alpha=0.4), 11, [4], 8, 8).lam == mixup.lam  # seeded

    cutmix = draw(MixConfig(cutmix_alpha=1.0), seed=5, shares=[2, 2], height=8, width=8)
    top, bottom, left, right = cutmix.box
    assert cutmix.lam == 1 - (bottom - top) * (right - left) / 64
    assert sorted(cutmix.partner[:2].tolist()) == [0, 1] and sorted(cutmix.partner[2:].tolist()) == [2, 3]
    second_rank = cutmix.images(x[2:], offset=2)  # each rank mixes within its share
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert inside.any()
    partner = x[cutmix.partner[2:]]
    assert torch.equal(second_rank[..., inside], partner[..., inside])
    assert torch.equal(second_rank[..., ~inside], x[2:][..., ~inside])
    assert draw(MixConfig(mixup_alpha=1.0, prob=0.0), 3, [4], 8, 8) is None

    run = tiny_run("mix.mixup_alpha=0.4")
    step = fixed_step(run, slice(0, 4))
    step.mix = mixup
    step.logits = {"cls": torch.randn(4, 10, generator=torch.Generator().manual_seed(0))}
    y = step.labels["sample"]
    targets = mixup.lam * F.one_hot(y, 10) + (1 - mixup.lam) * F.one_hot(y[mixup.partner], 10)
    expected = -(targets * F.log_softmax(step.logits["cls"], dim=1)).sum(dim=1).mean()
    assert float(loss_value(run.main_stage.classifier_loss, step)) == pytest.approx(
        float(expected), rel=1e-6)
    assert torch.equal(step.labels["sample"], y)  # the step's labels are left as they were


def timm_rates(kind: str, epochs: int, lr: float, warmup: int) -> list[float]:
    """The rate of each epoch of timm's scheduler ``kind``, stepped on a real optimiser."""
    from timm.scheduler import create_scheduler_v2

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler, _ = create_scheduler_v2(optimizer, sched=kind, num_epochs=epochs,
                                       warmup_epochs=warmup, warmup_prefix=True,
                                       warmup_lr=lr / max(1, warmup))
    rates = []
    for epoch in range(epochs):
        scheduler.step(epoch)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_timm_schedules_give_timms_rates_per_epoch_and_plateau_resumes():
    def stage(kind, epochs=10, **options):
        return Stage(name="s", epochs=epochs, model=None, optim=OptimConfig(lr=1.0),
                     schedule=ScheduleConfig(kind=kind, warmup_epochs=2, options=options),
                     sampler="instance-balanced", plugin="t")

    assert [learning_rate(stage("tanh"), e) for e in range(10)] == timm_rates("tanh", 10, 1.0, 2)
    multistep = stage("multistep", decay_milestones=[4, 7], decay_rate=0.1)
    assert [round(learning_rate(multistep, e), 6) for e in range(10)] == [
        0.5, 0.75, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]  # timm counts after the warm-up

    plateau = stage("plateau", patience_epochs=1)
    first = LearningRate(plateau, "val/acc", maximise=True)
    rates = []
    for epoch in range(6):
        rates.append(first.at(epoch))
        first.observe(epoch, {"val/acc": 50.0})
        if epoch == 3:
            second = LearningRate(plateau, "val/acc", maximise=True)
            second.load_state_dict(first.state_dict())
    for epoch in (4, 5):
        assert second.at(epoch) == rates[epoch]
        second.observe(epoch, {"val/acc": 50.0})
    assert rates[:3] == [0.5, 0.75, 1.0] and rates[5] < rates[3]  # lowered on the plateau


def official_bcl_rate(lr, epoch, epochs, warmup):
    """The BCL reference code's per-epoch rate (``adjust_lr`` of its ImageNet / iNaturalist
    script), written out: linear warm-up, then ``0.5 (1 + cos(pi (e - w + 1) / (E - w + 1)))``."""
    if epoch < warmup:
        return lr / warmup * (epoch + 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup + 1) / (epochs - warmup + 1)))


@pytest.mark.parametrize("warmup", [0, 3])
def test_cosine_offset_one_is_the_bcl_reference_schedule_and_zero_is_unchanged(warmup):
    def stage(offset):
        return Stage(name="s", epochs=12, model=None, optim=OptimConfig(lr=0.2),
                     schedule=ScheduleConfig(kind="cosine", warmup_epochs=warmup,
                                             cosine_offset=offset),
                     sampler="instance-balanced", plugin="t")

    official = [official_bcl_rate(0.2, e, 12, warmup) for e in range(12)]
    rates = [learning_rate(stage(1), e) for e in range(12)]
    assert rates == pytest.approx(official, rel=1e-12, abs=0)
    assert rates[-1] > 0  # the reference never reaches 0: its last epoch is (E-w)/(E-w+1)
    plain = [learning_rate(stage(0), e) for e in range(12)]
    assert plain[warmup] == 0.2 and plain[-1] == pytest.approx(0.2 * 0.5 * (1 + math.cos(
        math.pi * (11 - warmup) / (12 - warmup))), rel=1e-15)
    assert plain != rates


def test_cosine_offset_is_validated():
    with pytest.raises(ConfigError, match="schedule.cosine_offset"):
        resolve(plugins_holding("ce"), ["ce"], assignments=["schedule.cosine_offset=-1"])


def test_fp16_trains_on_the_cpu_with_a_gradient_scaler(isolated):
    plugins = plugins_holding("ce", extra={"tiny": TinyBackbone()})
    settings = resolve(plugins, ["ce"], assignments=[*FAST_SETTINGS, "model.backbone=tiny-mlp",
                                                     "precision=fp16", "device=cpu"],
                       overrides={"epochs": 2})
    lines = []
    result = train(plugins, ["ce"], settings, progress=False, echo=lines.append)
    assert any("compute float16 with a gradient scaler" in line for line in lines)
    assert any(line.startswith("warning: precision fp16 on the CPU") for line in lines)
    saved = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert saved["updates"]["scaler"]["scale"] > 0
    assert math.isfinite(result.metrics["val/acc"])


def test_early_stopping_ends_a_stage_whose_monitored_figure_stopped_improving(isolated):
    plugins = plugins_holding("ce", extra={"tiny": TinyBackbone()})
    settings = resolve(plugins, ["ce"], assignments=[
        *FAST_SETTINGS, "model.backbone=tiny-mlp", "device=cpu", "optim.lr=1e-12",
        "checkpoint.monitor=val/hmean", "early_stop.patience=2"], overrides={"epochs": 6})
    lines = []
    result = train(plugins, ["ce"], settings, progress=False, echo=lines.append)
    assert any("stops early after epoch 3/6: val/hmean has not improved for 2 epochs"
               in line for line in lines)
    client = mlflow_client()
    (stage,) = recorded_runs(client, nested=True)
    assert [m.step for m in client.get_metric_history(stage.info.run_id, "val/acc")] == [0, 1, 2]
    assert client.get_run(result.run_id).data.metrics["test/acc"] == result.metrics["test/acc"]
    assert stage.data.tags["ltcore.stopped_early"] == "after epoch 3"
    assert result.metrics["best/epoch"] == 1.0
    best = torch.load(result.run_dir / "model_best.pt", weights_only=True)
    assert tuple(best["best_epoch"]) == ("train", 1)


def test_the_options_train_together_on_digits_and_are_recorded(ltrun, isolated):
    from ltcore.testing import FAST

    result = ltrun("--epochs", "2", *FAST, "--set", "optim.accumulate=2", "--set",
                   "ema.decay=0.9", "--set", "optim.clip_grad_norm=5", "--set",
                   "loss.label_smoothing=0.1", "--set", "mix.mixup_alpha=0.2", "--set",
                   "mix.cutmix_alpha=1.0", "--set", "checkpoint.monitor=val/hmean", "--set",
                   "optim.name=lamb", "--set", "optim.lr=0.01", "--set", "schedule.kind=tanh")
    assert result.exit_code == 0, result.stderr
    (line,) = [l for l in result.output.splitlines() if l.startswith("training: ")]
    for part in ("gradients of 2 batches per update (effective batch 128)",
                 "gradient norm clipped at 5", "label smoothing 0.1",
                 "mixup alpha 0.2 and CutMix alpha 1", "weights EMA 0.9 (evaluated and saved)",
                 "best epoch by val/hmean (max)"):
        assert part in line, part
    assert "8 batches (4 updates) per epoch" in result.output and "lamb lr 0.01 tanh" in result.output
    client = mlflow_client()
    (parent,) = recorded_runs(client, nested=False)
    params = parent.data.params
    assert (params["optim.accumulate"], params["ema.decay"], params["mix.cutmix_alpha"],
            params["checkpoint.monitor"]) == ("2", "0.9", "1.0", "val/hmean")
    (stage,) = recorded_runs(client, nested=True)
    rates = [m.value for m in client.get_metric_history(stage.info.run_id, "train/lr")]
    assert rates == timm_rates("tanh", 2, 0.01, 0)
    (folder,) = isolated.glob("runs/*")
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)
    model = torch.load(folder / "model.pt", weights_only=True)
    ema = saved["updates"]["ema"]
    for key, value in ema.items():  # the saved model holds the EMA weights
        assert torch.equal(model["modules"][f"model.{key}"], value), key
    assert not all(torch.equal(saved["updates"]["trained"][k], v) for k, v in ema.items())


@pytest.mark.parametrize("args, message", [
    (("--set", "ema.decay=1.5"), "invalid value for ema.decay: 'decay' must be in (0, 1)"),
    (("--set", "optim.name=nope"), "optim.name: unknown optimizer 'nope'"),
    (("--set", "schedule.kind=sawtooth"), "schedule.kind: unknown schedule 'sawtooth'"),
    (("--set", "schedule.kind=multistep", "--set", "schedule.milestones=[30]"),
     "timm's 'multistep' takes its own (decay_milestones"),
])
def test_print_config_refuses_settings_training_would_refuse(ltrun, args, message):
    result = ltrun(*args, "--print-config")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line, line


@pytest.mark.parametrize("args, message", [
    (("--plugin", "supcon", "--set", "optim.accumulate=2"),
     "optim.accumulate = 2 splits each batch into micro-batches, but stage 'train' trains the "
     "contrastive loss 'supcon' (plugin 'supcon')"),
    (("--plugin", "focal", "--set", "loss.label_smoothing=0.1"),
     "loss.label_smoothing applies to the cross-entropy family"),
])
def test_options_that_contradict_the_method_are_one_clear_line(ltrun, args, message):
    result = ltrun(*args, "--epochs", "1", "--no-progress")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line, line
    assert recorded_runs(mlflow_client(), nested=False) == []  # refused before anything ran


def test_a_run_with_the_options_stopped_inside_an_epoch_resumes_to_the_same_numbers(isolated):
    """EMA, the accumulation groups, the mixing draws, the clipped updates and a plateau
    schedule's state all continue from the checkpoint as if the run had not stopped."""
    from ltcore import RunStopped, resume
    from ltcore.testing import SignalAtStep

    stopper = SignalAtStep("train", 12)  # inside the second epoch of 8 steps, after a group
    plugins = plugins_holding("ce", extra={"tiny": TinyBackbone(), "signal": stopper})
    settings = resolve(plugins, ["ce"], assignments=[
        *FAST_SETTINGS, "model.backbone=tiny-mlp", "device=cpu", "optim.accumulate=3",
        "ema.decay=0.8", "mix.mixup_alpha=0.4", "mix.cutmix_alpha=1.0",
        "optim.clip_grad_norm=0.5", "loss.label_smoothing=0.1", "schedule.kind=plateau",
        "schedule.options={patience_epochs = 0}"], overrides={"epochs": 3})
    full = train(plugins, ["ce"], settings, progress=False)
    with pytest.raises(RunStopped):
        train(plugins, ["ce", "signal"], settings, progress=False)
    assert stopper.sent
    (stopped,) = [p for p in (isolated / "runs").iterdir()
                  if (p / "run_id").read_text().strip() != full.run_id]
    saved = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert saved["epoch_progress"]["step"] == 6 and saved["updates"]["ema"] is not None
    assert resume(plugins, stopped.name, progress=False).metrics == full.metrics
