"""Segmentation on two gloo ranks equals one process on the same global batches.

The segmentation task makes its batches with its own joint views (``ltcore_seg``'s
``JointViews``: image and mask through one pipeline, per image, keyed by the image's position in
the epoch): each rank takes its consecutive share of a global batch and the masks of the whole
batch. Two training steps of the small FCN, with the per-pixel CE and with GML's dense form
(pixels sampled from the gathered features, the class-wise queues filled alike on every rank),
give the same losses and parameters as one process (modules in eval mode, as
tests/distributed/test_gathered_losses.py explains), and the evaluation, sharded over the ranks
and its confusion matrices summed, is exactly the one process's.
"""

import pytest
import torch

from ltcore.testing import plugins_holding
from ltcore.testing.distributed import run_on_ranks, train_steps

SEG = ["dataset=digits-seg", "model.backbone=fcn-small", "model.pretrained=none",
       "seg.interval_steps=0", "views.image_size=0"]
CASES = {"seg": (["seg"], []),
         "seg+gml": (["seg", "gml"], ["model.classifier=cosine", "gml.queue_size=64",
                                      "gml.queue_min=2", "seg.gml_pixels=8"])}


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_train_and_evaluate_segmentation_as_one_process(case):
    selected, assignments = CASES[case]
    plugins_holding(*selected)  # skips when a plugin is not installed
    args = (selected, [*SEG, *assignments], 2, 8, True)  # 2 steps of 8 scenes, the task's views
    single = train_steps(*args)
    ranks = run_on_ranks(train_steps, *args, world_size=2)
    assert len(single["losses"]) == 2 and single["val"].confusion.sum() > 0
    for rank, result in enumerate(ranks):
        assert result["terms"] == single["terms"]
        for step, (theirs, ours) in enumerate(zip(result["losses"], single["losses"])):
            assert theirs == pytest.approx(ours, rel=1e-5, abs=1e-6), (rank, step)
        assert result["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            theirs = result["state"][key]
            if value.is_floating_point():
                assert torch.allclose(theirs, value, rtol=1e-5, atol=1e-5), (rank, key)
            else:
                assert torch.equal(theirs, value), (rank, key)
        assert torch.equal(result["val"].confusion, single["val"].confusion), rank
