"""RCL's per-run state: the class prior it adds to contrastive logits and the compression factors.

:class:`RebalancingState` is attached to the run as the module ``rcl``, so the per-class
compression factors are saved in every checkpoint and restored on resume; the record of which
classes got which factor lives in ``run.state["rcl"]`` (plain Python, also checkpointed).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

MODULE = "rcl"
"""Name of the :class:`RebalancingState` module in ``run.modules``."""

STATE = "rcl"
"""Key of RCL's record in ``run.state``."""

TAG_LIMIT = 4000
"""Longest class list written into one MLflow tag (the full table is an artifact)."""


class RebalancingState(nn.Module):
    """``log n_j`` per class (rebuilt from the dataset) and the compression factor per class.

    ``factors`` is a persistent buffer (all ones until compression switches on); ``targets``
    holds the ``(plugin, loss)`` names of the contrastive terms RCL rebalances.
    """

    def __init__(self, class_counts: Tensor, *, prototype_prior: bool,
                 targets: set[tuple[str, str]]):
        super().__init__()
        counts = class_counts.detach().to(torch.float32)
        self.register_buffer("log_counts", torch.log(counts), persistent=False)
        self.register_buffer("factors", torch.ones_like(counts))
        self.prototype_prior = prototype_prior
        self.targets = set(targets)

    def bias(self, contrast) -> Tensor | None:
        """``[1, M]`` logit bias ``log n_{y_k}`` for the columns of a rebalanced loss, else None.

        Prototype columns get the prior too unless ``prototype_prior`` is off (then 0).
        """
        if (contrast.plugin, contrast.loss) not in self.targets:
            return None
        bias = self.log_counts[contrast.column_labels]
        if not self.prototype_prior:
            bias = bias.masked_fill(contrast.is_prototype, 0.0)
        return bias.unsqueeze(0)

    def compress(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``z_i * s_{y_i}``: each row scaled by its class's compression factor."""
        return embeddings * self.factors[labels].to(embeddings.dtype).unsqueeze(1)


def assign_factors(val_accuracy: Tensor, threshold: float, factor_below: float,
                   factor_others: float) -> tuple[Tensor, Tensor]:
    """Per-class factors from per-class validation accuracy (fractions in [0, 1]).

    Classes with accuracy strictly below ``threshold`` get ``factor_below``, the others
    ``factor_others``. A class without validation images (accuracy NaN) counts as below:
    nothing shows it has been learnt. Returns ``(factors [C] float32, below [C] bool)``.
    """
    below = ~(val_accuracy >= threshold)
    factors = torch.where(below, torch.tensor(float(factor_below)),
                          torch.tensor(float(factor_others))).to(torch.float32)
    return factors, below


def measure_and_switch(run, stage, epoch: int, options) -> dict[str, Any]:
    """Measure per-class validation accuracy of ``stage.model``, set the factors, record them.

    Returns the record stored in ``run.state["rcl"]["compression"]``.
    """
    from ltcore.engine import model_outputs
    from ltcore.metrics import per_class_accuracy

    dataset = run.dataset
    logits, _ = model_outputs(run, stage.model, dataset.val, keep_features=False)
    tau = run.config.eval.posthoc_la_tau
    if tau:
        counts = dataset.class_counts.float()
        logits = logits - tau * torch.log(counts / counts.sum())
    accuracy = per_class_accuracy(logits.argmax(dim=1), dataset.val.labels,
                                  dataset.num_classes).float()
    factors, below = assign_factors(accuracy, options.compression_threshold,
                                    options.compression_factor_below,
                                    options.compression_factor_others)
    module: RebalancingState = run.modules[MODULE]
    module.factors.copy_(factors.to(module.factors.device))
    record = {
        "epoch": epoch,
        "stage": stage.name,
        "threshold": options.compression_threshold,
        "factor_below": options.compression_factor_below,
        "factor_others": options.compression_factor_others,
        "val_accuracy": [float(a) for a in accuracy.tolist()],
        "below_threshold": below.nonzero().flatten().tolist(),
        "others": (~below).nonzero().flatten().tolist(),
        "factors": [options.compression_factor_below if b else options.compression_factor_others
                    for b in below.tolist()],
    }
    run.state[STATE]["compression"] = record
    _log(run, record)
    return record


def _class_list(indices: list[int]) -> str:
    text = ",".join(map(str, indices))
    return text if len(text) <= TAG_LIMIT else f"{len(indices)} classes (see rcl/compression.csv)"


def _log(run, record: dict[str, Any]) -> None:
    """Tags on the run's MLflow parent run and a per-class CSV artifact."""
    tracker, parent = run.tracker, run.state.get("mlflow_run_id")
    if tracker is None or parent is None:
        return
    tracker.set_tags(parent, {
        "rcl.compression.epoch": record["epoch"],
        "rcl.compression.threshold": record["threshold"],
        "rcl.compression.factor_below": record["factor_below"],
        "rcl.compression.factor_others": record["factor_others"],
        "rcl.compression.below_threshold": _class_list(record["below_threshold"]),
        "rcl.compression.others": _class_list(record["others"]),
    })
    folder = Path(run.config.output) / parent / "artifacts" / "rcl"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "compression.csv"
    counts = run.dataset.class_counts.tolist()
    below = set(record["below_threshold"])
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class_index", "class", "train_count", "val_accuracy", "below_threshold",
                         "factor"])
        for i, (name, n, acc, factor) in enumerate(zip(run.dataset.classes, counts,
                                                       record["val_accuracy"], record["factors"])):
            writer.writerow([i, name, n, f"{100 * acc:.4f}", i in below, f"{factor:g}"])
    tracker.log_artifact(parent, str(path), "rcl")
