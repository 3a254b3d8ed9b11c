"""``tau-norm``: post-hoc classifier normalisation (Kang et al. 2020), ``w_c / ||w_c||^tau``.

At the end of the run's last epoch, tau is chosen on the validation split (never the test split)
as the grid value with the best validation accuracy (or harmonic mean), ties going to the earlier
grid value. The classifier's weight rows are replaced by ``w_c / ||w_c||^tau`` and its bias is
zeroed (Kang et al. score with ``w_c . f`` alone; ``tau-norm.bias = "keep"`` keeps it). The
epoch's figures are then re-evaluated, so the logged metrics, the saved model and the reports
are those of the normalised classifier; ``tau-norm/tau`` records the choice. Needs a linear
classifier (a cosine classifier's rows are normalised already).
"""

from __future__ import annotations

import attrs

from ltcore import hookimpl
from ltcore.config import doc

PLUGIN = "tau-norm"
DEFAULT_GRID = tuple(round(0.1 * i, 1) for i in range(21))


def _grid(instance, attribute, value):
    if not value or any(t < 0 for t in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of values >= 0, got {value!r}")


@attrs.define(kw_only=True)
class Options:
    """Options of ``tau-norm``: the search and the bias."""

    grid: tuple[float, ...] = doc("candidate tau values (0 to 2 by 0.1, as Kang et al. search)",
                                  default=DEFAULT_GRID, validator=_grid)
    criterion: str = doc("validation figure maximised: acc (overall) | hmean (harmonic mean)",
                         default="acc", validator=attrs.validators.in_(("acc", "hmean")))
    bias: str = doc("zero | keep: the classifier bias after normalisation (Kang et al.: zero)",
                    default="zero", validator=attrs.validators.in_(("zero", "keep")))


def normalised_weight(weight, tau: float):
    """``w_c / ||w_c||^tau`` for each row ``w_c`` of ``weight`` ``[C, D]``."""
    import torch

    norms = weight.norm(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    return weight / norms.pow(tau)


def search_tau(run, model, options: Options) -> tuple[float, dict[float, float]]:
    """The grid value with the best validation figure, and the figure of every grid value.

    Features of the validation split are computed once; each candidate's logits are
    ``f . (w_c / ||w_c||^tau) (+ b)``, post-hoc adjusted as every evaluation of the run is
    (``eval.posthoc_la_tau``).
    """
    import torch
    import torch.nn.functional as F

    from ltcore.engine import model_outputs
    from ltcore.errors import DataError
    from ltcore.evaluation import EvalOutputs, accuracy_figures

    split = run.dataset.val
    if split is None:
        raise DataError(f"tau-norm chooses tau on the validation split, but dataset "
                        f"{run.dataset.name!r} has none")
    _, features = model_outputs(run, model, split, keep_features=True)
    classifier = model.classifier
    weight = classifier.weight.detach().float()
    bias = classifier.bias.detach().float() if options.bias == "keep" else None
    features = features.to(weight.device)
    cfg = run.config.eval
    counts = run.dataset.class_counts
    adjustment = cfg.posthoc_la_tau * torch.log(counts.float() / counts.sum())
    scores = {}
    with torch.no_grad():
        for tau in options.grid:
            logits = F.linear(features, normalised_weight(weight, tau), bias).cpu() - adjustment
            out = EvalOutputs("val", logits, split.labels, None, run.dataset.class_counts,
                              cfg.many_threshold, cfg.few_threshold)
            scores[tau] = accuracy_figures(out)[options.criterion]
    best = max(scores, key=lambda t: (scores[t], -options.grid.index(t)))
    return best, scores


def apply_tau_norm(run, model, options: Options) -> dict[str, float]:
    """Choose tau on validation, normalise ``model``'s classifier in place, return the record."""
    import torch

    tau, scores = search_tau(run, model, options)
    classifier = model.classifier
    with torch.no_grad():
        classifier.weight.copy_(normalised_weight(classifier.weight.float(), tau))
        if options.bias == "zero" and classifier.bias is not None:
            classifier.bias.zero_()
    run.state["tau_norm"] = {"tau": tau, "criterion": options.criterion,
                             "validation": {str(t): v for t, v in scores.items()}}
    return {f"{PLUGIN}/tau": tau, f"{PLUGIN}/val_{options.criterion}": scores[tau]}


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_presets(register):
    from ltcore.builtin.crt import register_retraining_presets

    register_retraining_presets(register, PLUGIN)


@hookimpl
def setup_run(run):
    from torch import nn

    from ltcore.errors import PluginError

    if "lws" in run.selected:
        raise PluginError("plugins 'tau-norm' and 'lws' both rescale the classifier's class "
                          "vectors after training (Kang et al. use one or the other); select one")
    classifier = run.model.classifier
    if not isinstance(classifier, nn.Linear):
        raise PluginError(f"tau-norm rescales the rows of a linear classifier, but "
                          f"model.classifier is {run.config.model.classifier!r} "
                          f"({type(classifier).__name__}); a cosine classifier's rows are "
                          "normalised already. Use --set model.classifier=linear")


@hookimpl
def epoch_end(run, stage, epoch, metrics):
    if stage is not run.stages[-1] or epoch != stage.epochs - 1:
        return
    from ltcore.engine import evaluate

    metrics.update(apply_tau_norm(run, stage.model, run.option(PLUGIN)))
    figures, _ = evaluate(run, stage.model, "final")
    metrics.update(figures)
