"""RCL in a run: the class prior it adds to contrastive logits and the compression factors.

:class:`Rebalancing` is RCL's plugin object in a run (its hooks act only in that run). The
per-class compression factors are the run module ``rcl`` (:class:`RebalancingState`), saved in
every checkpoint and in the final model; the record of which classes got which factor is the
object's state, checkpointed too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ltcore import hookimpl

MODULE = "rcl"
"""Name of the :class:`RebalancingState` module in ``run.modules``."""

TAG_LIMIT = 4000
"""Longest class list written into one MLflow tag (the full table is an artifact)."""


class RebalancingState(nn.Module):
    """``log n_j`` per class (rebuilt from the dataset) and the compression factor per class.

    ``factors`` is a persistent buffer (all ones until compression switches on).
    """

    def __init__(self, class_counts: Tensor, *, prototype_prior: bool):
        super().__init__()
        counts = class_counts.detach().to(torch.float32)
        self.register_buffer("log_counts", torch.log(counts), persistent=False)
        self.register_buffer("factors", torch.ones_like(counts))
        self.prototype_prior = prototype_prior

    def bias(self, contrast) -> Tensor:
        """``[1, M]`` logit bias ``log n_{y_k}`` for the contrast columns; prototype columns get
        the prior too unless ``prototype_prior`` is off (then 0)."""
        bias = self.log_counts[contrast.column_labels]
        if not self.prototype_prior:
            bias = bias.masked_fill(contrast.is_prototype, 0.0)
        return bias.unsqueeze(0)

    def compress(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``z_i * s_{y_i}``: each row scaled by its class's compression factor."""
        return embeddings * self.factors[labels].to(embeddings.dtype).unsqueeze(1)


class Rebalancing:
    """RCL in one run: the plugin object whose hooks add the prior to every rebalanceable
    contrastive term, switch compression on and compress the contrastive embeddings.

    The factors are the run module ``rcl`` (:class:`RebalancingState`); the record of the
    measurement is this object's state.
    """

    def __init__(self, run, options, terms, start: int):
        self.options = options
        self.stage = run.main_stage
        self.terms = list(terms)
        """The contrastive terms RCL found (or added) when it composed the run."""
        self.start = start
        self.module: RebalancingState = run.add_module(
            MODULE, RebalancingState(run.class_counts, prototype_prior=options.prototype_prior))
        self.record: dict[str, Any] | None = None

    @hookimpl
    def contrastive_logit_bias(self, contrast):
        term = contrast.term
        if self.options.prior and term.kind == "contrastive" and term.rebalanceable:
            return self.module.bias(contrast)
        return None

    @hookimpl
    def adjust_embeddings(self, step):
        if step.stage is not self.stage or self.record is None:
            return
        for role in step.embedding_roles():
            step.embeddings[role] = self.module.compress(step.embeddings[role], step.targets(role))

    @hookimpl
    def epoch_start(self, run, stage, epoch):
        if (self.options.compression and stage is self.stage and self.record is None
                and epoch >= self.start):
            self.record = measure_and_switch(run, stage, epoch, self.options)

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if stage is not self.stage:
            return
        metrics["rcl/compression"] = 1.0 if self.record else 0.0
        if self.record and self.record["epoch"] == epoch:
            metrics["rcl/classes_below_threshold"] = float(len(self.record["below_threshold"]))
            for c, factor in enumerate(self.record["factors"]):
                metrics[f"rcl/factor/{c}"] = factor

    @hookimpl
    def run_start(self, run):
        run.recorder.tags({"rcl.rebalanced": ", ".join(f"{t.plugin}:{t.name}" for t in self.terms)})

    def state_dict(self) -> dict[str, Any]:
        return {"record": self.record}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.record = state["record"]


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
    """Measure per-class validation accuracy of ``stage.model`` (through the run's evaluation
    path), set the factors of the run module ``rcl``, log and return the record."""
    from ltcore.metrics import per_class_accuracy

    dataset = run.dataset
    logits = run.evaluate(stage.model, ["val"]).outputs["val"].logits
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
    _log(run, record)
    return record


def _class_list(indices: list[int]) -> str:
    text = ",".join(map(str, indices))
    return text if len(text) <= TAG_LIMIT else f"{len(indices)} classes (see rcl/compression.csv)"


def _log(run, record: dict[str, Any]) -> None:
    """Tags on the run and a per-class table (``rcl/compression.csv``)."""
    run.recorder.tags({
        "rcl.compression.epoch": record["epoch"],
        "rcl.compression.threshold": record["threshold"],
        "rcl.compression.factor_below": record["factor_below"],
        "rcl.compression.factor_others": record["factor_others"],
        "rcl.compression.below_threshold": _class_list(record["below_threshold"]),
        "rcl.compression.others": _class_list(record["others"]),
    })
    below = set(record["below_threshold"])
    rows = [[i, name, n, f"{100 * acc:.4f}", i in below, f"{factor:g}"]
            for i, (name, n, acc, factor) in enumerate(zip(
                run.dataset.classes, run.dataset.class_counts.tolist(), record["val_accuracy"],
                record["factors"]))]
    run.recorder.table("rcl/compression.csv", ["class_index", "class", "train_count",
                                               "val_accuracy", "below_threshold", "factor"], rows)
