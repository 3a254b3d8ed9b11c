"""Distributed training on two gloo ranks equals one process on the same global batches.

Each case (BCL, SupCon + RCL, GML, ICCL's interpolative branch with its paired sampler, CoGloAT
with its momentum encoder, queue and k-global sampler) trains three steps of a method on fixed
global batches of 24 samples (12 per rank) through the engine's step (DistributedDataParallel
over the trained modules, the step's outputs gathered from both ranks), and the same three
steps in this process: the loss terms agree to 1e-5 relative, the parameters after the SGD
steps to 1e-5, and both ranks hold exactly the same state, memory banks included.
"""

import pytest
import torch

from ltcore.testing import plugins_holding
from ltcore.testing.distributed import run_on_ranks, train_steps

CASES = {
    "bcl": (["bcl"], []),
    "supcon+rcl": (["supcon", "rcl"], []),
    "gml": (["gml"], ["gml.teacher_epochs=1", "gml.queue_size=40"]),
    "iccl": (["iccl"], ["iccl.warmup_epochs=0"]),
    # the key encoder normalises with the running statistics: with "batch" it uses each
    # rank's own key batch, as MoCo's key encoder does per GPU
    "cogloat": (["cogloat"], ["cogloat.queue_size=64", "cogloat.key_batchnorm=running"]),
}


def assert_close_state(ours: dict, theirs: dict, what: str) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:
        a, b = ours[key], theirs[key]
        if a.is_floating_point():
            scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * scale), f"{what}: {key}"
        else:
            assert torch.equal(a, b), f"{what}: {key}"


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process(case):
    selected, assignments = CASES[case]
    plugins_holding(*selected)  # skips when a plugin is not installed
    single = train_steps(selected, assignments)
    ranks = run_on_ranks(train_steps, selected, assignments, world_size=2)
    for rank, result in enumerate(ranks):
        assert result["terms"] == single["terms"]
        for step, (theirs, ours) in enumerate(zip(result["losses"], single["losses"])):
            assert theirs == pytest.approx(ours, rel=1e-5, abs=1e-6), (rank, step)
        assert_close_state(result["state"], single["state"], f"rank {rank} vs one process")
    for key, value in ranks[0]["state"].items():  # both ranks hold the very same state
        assert torch.equal(value, ranks[1]["state"][key]), key
    # the evaluation sharded over the ranks and gathered: every rank has all of it, in order
    assert torch.equal(ranks[0]["val"].logits, ranks[1]["val"].logits)
    assert torch.allclose(ranks[0]["val"].logits, single["val"].logits, rtol=1e-4, atol=1e-4)
    moved = [k for k, v in single["state"].items() if v.is_floating_point()]
    assert moved, "the run has no floating-point state to compare"
