"""Evaluation: model outputs on a split and the metrics computed from them.

Figures are percentages. Overall accuracy is over samples; ``many``/``medium``/``few`` are the
unweighted means of per-class accuracies within each shot group (many: more than
``eval.many_threshold`` training images, few: fewer than ``eval.few_threshold``); ``hmean`` is
the harmonic mean of per-class accuracies. Metric components (``register_metrics``) add more.
"""

from __future__ import annotations

from typing import Callable

import attrs
import torch

from . import metrics as M


@attrs.define(eq=False)
class EvalOutputs:
    """Everything a metric may use: logits, labels, backbone features, the training counts."""

    split: str
    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None
    class_counts: torch.Tensor
    many_threshold: int
    few_threshold: int

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    def per_class_accuracy(self) -> torch.Tensor:
        return M.per_class_accuracy(self.predictions, self.labels, self.num_classes)

    def groups(self) -> dict[str, torch.Tensor]:
        return M.shot_groups(self.class_counts, self.many_threshold, self.few_threshold)


@attrs.define
class Metric:
    """A registered metric: ``fn(outputs) -> {name: value}``.

    ``when`` is ``epoch`` (every evaluation) or ``final`` (end of each stage, for costly ones);
    ``needs_features`` asks the evaluator to keep the backbone features.
    """

    fn: Callable[[EvalOutputs], dict[str, float]]
    when: str = attrs.field(default="epoch", validator=attrs.validators.in_(("epoch", "final")))
    needs_features: bool = False
    doc: str = ""

    def __call__(self, outputs: EvalOutputs) -> dict[str, float]:
        return self.fn(outputs)


def accuracy_figures(outputs: EvalOutputs) -> dict[str, float]:
    """Overall top-1, many/medium/few and harmonic-mean accuracy (percent)."""
    per_class = outputs.per_class_accuracy()
    figures = {"acc": 100.0 * float((outputs.predictions == outputs.labels).float().mean())}
    for group, value in M.group_accuracy(per_class, outputs.groups()).items():
        figures[group] = 100.0 * float(value)
    figures["hmean"] = 100.0 * float(M.harmonic_mean_accuracy(per_class))
    return figures
