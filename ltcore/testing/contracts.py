"""Contract checks a plugin's tests call (re-exported by :mod:`ltcore.testing`): what every loss,
every contrastive method and every stateful plugin must hold."""

from __future__ import annotations

from pathlib import Path

from ltcore import hookimpl

from . import assemble_run, assert_finite_with_gradients, forward, training_step


def check_loss_matches_reference(loss, reference, make_inputs, trials: int = 5,
                                 rtol: float = 1e-6, atol: float = 1e-9) -> None:
    """Assert that ``loss(*inputs)`` equals ``reference(*inputs)`` on ``trials`` random inputs.

    ``make_inputs(generator)`` draws one set of inputs (a tuple) from a seeded
    ``torch.Generator``; ``reference`` is a direct, slow computation of the paper's formula
    (loops over anchors in float64). Each trial uses its own seed, named in the failure.
    """
    import torch

    for trial in range(trials):
        inputs = make_inputs(torch.Generator().manual_seed(trial))
        got, expected = float(loss(*inputs)), float(reference(*inputs))
        assert abs(got - expected) <= atol + rtol * abs(expected), \
            f"trial {trial} (seed {trial}): loss {got!r}, reference {expected!r}"


LABEL_EDGE_CASES = {
    "one class only": [2, 2, 2, 2],
    "a single sample": [1],
    "most classes absent": [0, 0, 3, 3, 3],
    "each class once": [0, 1, 2, 3, 4],
    "one sample of a class": [0, 0, 0, 0, 4],
}
"""Batches of labels (over 5 classes) on which a long-tailed loss must stay finite: the
batches a class-balanced or long-tailed sampler produces at the tail."""


def check_loss_finite_on_label_edge_cases(make_loss, num_classes: int = 5) -> None:
    """Assert finite values and gradients on every batch of :data:`LABEL_EDGE_CASES`.

    ``make_loss(labels, num_classes, generator)`` returns ``(loss, inputs)``: the loss for a
    batch with those labels and the tensors (``requires_grad``) it was computed from.
    """
    import torch

    for case, labels in LABEL_EDGE_CASES.items():
        generator = torch.Generator().manual_seed(0)
        loss, inputs = make_loss(torch.tensor(labels), num_classes, generator)
        try:
            assert_finite_with_gradients(loss, *inputs)
        except AssertionError as exc:
            raise AssertionError(f"{case} (labels {labels}): {exc}") from exc


class _BiasProbe:
    """A run plugin object that records the contrastive terms asking for a logit bias."""

    def __init__(self):
        self.terms: list[str] = []

    @hookimpl
    def contrastive_logit_bias(self, contrast):
        self.terms.append(contrast.term.name)


def check_composes_with_rcl(plugin: str, *assignments: str) -> None:
    """Assert that ``plugin`` composes with RCL: a run of ``[plugin, "rcl"]`` assembles, every
    rebalanceable contrastive term of its stages asks the ``contrastive_logit_bias`` hook (which
    is how RCL reaches it), and one step's losses and gradients are finite. Skips when rcl is
    not installed."""
    import torch

    run = assemble_run([plugin, "rcl"], *assignments)
    rebalanceable = [t.name for stage in run.stages for t in stage.losses
                     if t.kind == "contrastive" and t.rebalanceable]
    probe = run.register(_BiasProbe(), "contract-probe")
    for stage in run.stages:
        step = training_step(run, stage)
        losses = forward(run, step)
        for term, value in zip(stage.losses, losses):
            assert torch.isfinite(value).all(), f"{stage.name}: loss {term.name} is {value}"
        total = sum(t.weight * value for t, value in zip(stage.losses, losses))
        if total.requires_grad:
            total.backward()
        for name, parameter in stage.model.named_parameters():
            assert parameter.grad is None or torch.isfinite(parameter.grad).all(), \
                f"{stage.name}: non-finite gradient of {name}"
    missing = sorted(set(rebalanceable) - set(probe.terms))
    assert not missing, (f"rebalanceable contrastive terms {missing} never called "
                         "step.contrastive_bias, so RCL cannot rebalance them")


def check_state_round_trip(selected: list[str], *assignments: str) -> None:
    """Assert that a run's state survives a checkpoint: one optimisation step of the main stage
    (so queues, EMA models and plugin objects change), the state written as the engine writes
    checkpoints and loaded as ``ltcore.load_safely`` loads them (tensors and plain values
    only), restored into a fresh run of the same settings, which then holds the same state."""
    import torch

    from ..engine.checkpoints import read, restore_run_state, run_state, write

    run = assemble_run(selected, *assignments)
    stage = run.main_stage
    step = training_step(run, stage)
    optimizer = torch.optim.SGD([p for p in stage.model.parameters() if p.requires_grad], lr=0.1)
    losses = forward(run, step)
    optimizer.zero_grad()
    sum(t.weight * value for t, value in zip(stage.losses, losses)).backward()
    optimizer.step()
    run.hooks.step_end(step=step)
    path = Path("state-round-trip.pt")
    write(path, run_state(run))
    fresh = assemble_run(selected, *assignments, plugins=run.plugins)
    restore_run_state(fresh, read(path))
    _assert_same_state(run_state(fresh), run_state(run), "run state")


def _assert_same_state(actual, expected, where: str) -> None:
    import torch

    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _assert_same_state(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same_state(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
