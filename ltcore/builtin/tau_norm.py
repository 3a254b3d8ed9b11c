"""``tau-norm``: post-hoc classifier normalisation (Kang et al. 2020), ``w_c / ||w_c||^tau``.

In the final evaluation of the run's last stage, tau is chosen on the validation split (never
the test split) as the grid value with the best validation accuracy (or harmonic mean), ties going
to the earlier grid value. The classifier's weight rows are replaced by ``w_c / ||w_c||^tau`` and
its bias is zeroed (Kang et al. score with ``w_c . f`` alone; ``tau-norm.bias = "keep"`` keeps it),
and that evaluation's figures are those of the normalised classifier, as are the saved model and
the reports; ``tau-norm/tau`` records the choice. Needs a linear classifier (a cosine classifier's
rows are normalised already).
"""

from __future__ import annotations

import attrs

from ltcore import doc, hookimpl

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
    fallback_tau: float | None = doc("the tau of data without a validation split (iNaturalist "
                                     "2018); unset: such data is refused, as tau is never "
                                     "chosen on the test split", default=None,
                                     validator=attrs.validators.optional(
                                         attrs.validators.ge(0)))


def normalised_weight(weight, tau: float):
    """``w_c / ||w_c||^tau`` for each row ``w_c`` of ``weight`` ``[C, D]``."""
    import torch

    norms = weight.norm(dim=1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    return weight / norms.pow(tau)


def choose_tau(run, validation, classifier, options: Options) -> tuple[float, dict[float, float]]:
    """The grid value with the best validation figure, and the figure of every grid value.

    ``validation`` holds the validation split's backbone features; each candidate's logits are
    ``f . (w_c / ||w_c||^tau) (+ b)``, post-hoc adjusted as every evaluation of the run is
    (``eval.posthoc_la_tau``).
    """
    import torch
    import torch.nn.functional as F

    from ltcore import EvalOutputs, accuracy_figures, posthoc_logit_adjustment

    weight = classifier.weight.detach().float()
    bias = classifier.bias.detach().float() if options.bias == "keep" else None
    features = validation.features.to(weight.device)
    cfg = run.config.eval
    scores = {}
    with torch.no_grad():
        for tau in options.grid:
            logits = posthoc_logit_adjustment(
                F.linear(features, normalised_weight(weight, tau), bias).cpu(),
                run.dataset.class_counts, cfg.posthoc_la_tau)
            out = EvalOutputs("val", logits, validation.labels, None, run.dataset.class_counts,
                              cfg.many_threshold, cfg.few_threshold)
            scores[tau] = accuracy_figures(out)[options.criterion]
    best = max(scores, key=lambda t: (scores[t], -options.grid.index(t)))
    return best, scores


class TauNormalisation:
    """Rebalancer ``tau-norm``: in the final evaluation of the run's last stage, chooses tau on
    the validation outputs of that evaluation, rescales the classifier's rows in place (so the
    saved model is the normalised one) and gives every split the rescaled classifier's logits.
    Later evaluations (``ltrun evaluate``) use the saved, normalised classifier as it is."""

    def __init__(self, run, options: Options):
        self.run = run
        self.options = options
        self.record: dict | None = None

    @hookimpl
    def adjust_eval_logits(self, evaluation):
        import torch

        from ltcore import DataError

        run = self.run
        if self.record is not None or not evaluation.final or evaluation.stage is not run.stages[-1]:
            return
        classifier = evaluation.model.classifier
        if "val" in evaluation.outputs:
            tau, scores = choose_tau(run, evaluation.outputs["val"], classifier, self.options)
        elif self.options.fallback_tau is not None:
            tau, scores = self.options.fallback_tau, {}
        else:
            raise DataError(f"tau-norm chooses tau on the validation split, but dataset "
                            f"{run.dataset.name!r} has none (set tau-norm.fallback_tau to "
                            "use one tau)")
        with torch.no_grad():
            classifier.weight.copy_(normalised_weight(classifier.weight.float(), tau))
            if self.options.bias == "zero" and classifier.bias is not None:
                classifier.bias.zero_()
            for outputs in evaluation.outputs.values():
                features = outputs.features.to(classifier.weight.device)
                outputs.logits = classifier(features).float().cpu()
        self.record = {"tau": tau, "criterion": self.options.criterion,
                       "validation": {str(t): v for t, v in scores.items()}}

    def saved_logit_adjustment(self, model):
        """Nothing: the normalised classifier is in the saved weights, and a saved model's
        evaluation leaves it as it is."""
        return None

    @hookimpl
    def epoch_end(self, run, stage, epoch, metrics):
        if self.record is not None and stage is run.stages[-1] and epoch == stage.epochs - 1:
            criterion = self.record["criterion"]
            metrics[f"{PLUGIN}/tau"] = self.record["tau"]
            if self.record["validation"]:  # not with tau-norm.fallback_tau
                metrics[f"{PLUGIN}/val_{criterion}"] = \
                    self.record["validation"][str(self.record["tau"])]

    def state_dict(self) -> dict:
        return {"record": self.record}

    def load_state_dict(self, state: dict) -> None:
        self.record = state["record"]


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_rebalancers(register):
    register("tau-norm", lambda run, **options: TauNormalisation(run, Options(**options)),
             "w_c / ||w_c||^tau with tau chosen on the validation split, at the end of the run "
             "(options of tau-norm)")


@hookimpl
def register_presets(register):
    from ltcore.builtin.crt import register_retraining_presets

    register_retraining_presets(register, PLUGIN)


@hookimpl
def setup_run(run):
    from torch import nn

    from ltcore import PluginError

    if "lws" in run.selected:
        raise PluginError("plugins 'tau-norm' and 'lws' both rescale the classifier's class "
                          "vectors after training (Kang et al. use one or the other); select one")
    classifier = run.model.classifier
    if not isinstance(classifier, nn.Linear):
        raise PluginError(f"tau-norm rescales the rows of a linear classifier, but "
                          f"model.classifier is {run.config.model.classifier!r} "
                          f"({type(classifier).__name__}); a cosine classifier's rows are "
                          "normalised already. Use --set model.classifier=linear")
    options = attrs.asdict(run.option(PLUGIN))
    run.register(run.build("rebalancer", "tau-norm", **options), PLUGIN)
