"""Numbers: a NaN or infinite loss term or gradient is caught within ``check_finite_every``
steps (on-device flags, read every k steps), naming the term and the checkpoint that is kept;
NaN and infinity are refused as settings."""

import pytest
import torch

from ltcore import LossTerm, hookimpl
from ltcore.config import resolve
from ltcore.engine import trainer as trainer_module
from ltcore.engine.runs import train
from ltcore.errors import NonFiniteLossError
from ltcore.plugins import Plugins
from ltcore.testing import FAST, FAST_SETTINGS, recorded_runs


class NanFromStep:
    """A loss term that becomes NaN from one step (counted over the run) on."""

    def __init__(self, step):
        self.step = step

    @hookimpl
    def setup_run(self, run):
        def fn(step):
            value = step.logits["cls"].mean() * 0
            return value + float("nan") if step.iteration >= self.step else value

        run.main_stage.add_loss(LossTerm("exploding", fn, "nan"))


class InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class GradientBlowsUp:
    """A finite loss term whose gradient is infinite from the first step."""

    @hookimpl
    def setup_run(self, run):
        def fn(step):
            return InfiniteGradient.apply(step.logits["cls"]).mean() * 0

        run.main_stage.add_loss(LossTerm("finite-value", fn, "grad"))


def settings(plugins, selected, *assignments):
    return resolve(plugins, selected, assignments=[*FAST_SETTINGS, *assignments],
                   overrides={"epochs": 2})


def test_a_nan_term_is_caught_within_k_steps_naming_it_and_the_kept_checkpoint(isolated):
    plugins = Plugins(extra={"nan": NanFromStep(3)})
    with pytest.raises(NonFiniteLossError) as info:
        train(plugins, ["ce", "nan"], settings(plugins, ["ce", "nan"], "check_finite_every=2"),
              progress=False)
    message = str(info.value)
    assert "loss term 'exploding' (plugin 'nan')" in message and "epoch 1" in message
    assert "at step 4 (caught after step 4)" in message  # iteration 3 is the 4th step
    assert "checkpoint from before training" in message
    (parent,) = recorded_runs(nested=False)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["ltcore.error"] == f"NonFiniteLossError: {message}"


def test_an_infinite_gradient_is_caught_though_every_loss_is_finite(isolated):
    plugins = Plugins(extra={"grad": GradientBlowsUp()})
    with pytest.raises(NonFiniteLossError, match="the gradients .every loss term finite."):
        train(plugins, ["ce", "grad"], settings(plugins, ["ce", "grad"]), progress=False)


def test_the_flags_are_read_every_k_steps_and_at_the_end_of_each_epoch(isolated, monkeypatch):
    reads = []
    check = trainer_module.NonFinite.check
    monkeypatch.setattr(trainer_module.NonFinite, "check",
                        lambda self, epoch, step, trainer: reads.append((epoch, step)) or
                        check(self, epoch, step, trainer))
    plugins = Plugins()
    train(plugins, ["ce"], settings(plugins, ["ce"], "check_finite_every=4"), progress=False)
    steps = 1 + max(step for _, step in reads)  # steps per epoch
    expected = [s for s in range(steps) if (s + 1) % 4 == 0 or s + 1 == steps]
    assert reads == [(e, s) for e in (0, 1) for s in expected]
    assert len(expected) < steps  # not every step


@pytest.mark.parametrize("assignment", ["optim.lr=nan", "optim.lr=inf", "optim.lr=-inf",
                                        "eval.posthoc_la_tau=nan", "la.tau=inf",
                                        "optim.lr=1e400"])
def test_nan_and_infinity_are_refused_as_settings(ltrun, assignment):
    result = ltrun("--plugin", "la", "--set", assignment, "--print-config")
    assert result.exit_code == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "finite number" in error and assignment.split("=")[0] in error
    assert "Traceback" not in result.stderr


def test_huge_integers_and_seeds_are_refused(ltrun):
    for args in (["--seed", "99999999999999999999"], ["--seed", "-1"],
                 ["--set", "epochs=99999999999999999999999"]):
        result = ltrun(*args, "--print-config")
        assert result.exit_code == 2 and "Traceback" not in result.stderr, args
        assert [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_a_config_file_that_is_not_utf8_is_one_line(ltrun, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('epochs = 3\n# caf\xe9\n'.encode("latin-1"))
    result = ltrun("--config", str(path), *FAST, "--print-config")
    assert result.exit_code == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "not UTF-8" in error and "latin1.toml" in error
