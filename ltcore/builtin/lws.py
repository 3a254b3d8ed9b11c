"""``lws``: learnable weight scaling (Kang et al. 2020), a second stage any run can add.

The classifier's logits are multiplied by one learnable scale per class,
``s_c * (w_c . f + b_c)``. The scales are ones (no effect) until the stage ``lws`` after the main
stage (after ``classifier`` when ``crt`` is selected too) learns them with cross-entropy and
class-balanced sampling on the frozen encoder and the frozen classifier. They are the classifier's
parameter ``lws_scale``, so the saved model carries them; the ``lws`` rebalancer applies them to
the classifier's logits in training (``adjust_classifier_logits``) and in every evaluation
(``adjust_eval_logits``).
"""

from __future__ import annotations

import attrs

from ltcore import hookimpl
from ltcore.builtin import crt

PLUGIN = "lws"
STAGE = "lws"
SCALE = "lws_scale"


@attrs.define(kw_only=True)
class Options(crt.Options):
    """Options of ``lws``: the scaling stage (the same settings as ``crt``'s stage)."""


class ScaledLogits:
    """Rebalancer ``lws``: multiplies the logits of ``classifier`` by its per-class parameter
    ``lws_scale`` (created as frozen ones), which the stage ``stage`` alone trains."""

    def __init__(self, run, classifier, stage=None):
        import torch
        from torch import nn

        from ltcore import PluginError

        if hasattr(classifier, SCALE):
            raise PluginError(f"the classifier already has a parameter {SCALE!r}")
        classifier.register_parameter(SCALE, nn.Parameter(
            torch.ones(run.dataset.num_classes, device=run.device), requires_grad=False))
        self.classifier = classifier
        self.stage = stage

    @property
    def scale(self):
        return getattr(self.classifier, SCALE)

    @hookimpl
    def adjust_classifier_logits(self, step):
        if step.stage.model.classifier is not self.classifier:
            return
        for role, view in step.stage.views.items():
            if view.classify and role in step.logits:
                step.logits[role] = step.logits[role] * self.scale

    @hookimpl
    def adjust_eval_logits(self, evaluation):
        if evaluation.model.classifier is not self.classifier:
            return
        scale = self.scale.detach().cpu()
        for outputs in evaluation.outputs.values():
            outputs.logits = outputs.logits * scale

    def saved_logit_adjustment(self, model):
        """What evaluation does to a saved model's logits: the per-class scales, no bias."""
        if model.classifier is not self.classifier:
            return None
        scale = self.scale.detach().float().cpu()
        return scale, scale.new_zeros(scale.shape)

    @hookimpl
    def adjust_parameter_groups(self, run, stage, groups):
        if stage is self.stage:
            groups[:] = [{"params": [self.scale]}]


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_rebalancers(register):
    register("lws", lambda run, classifier, stage=None: ScaledLogits(run, classifier, stage),
             "per-class learnable scales on a classifier's logits (options classifier, stage: "
             "the stage that trains them)")


@hookimpl
def register_presets(register):
    crt.register_retraining_presets(register, PLUGIN, {"lws.epochs": 10, "lws.lr": 0.2})


@hookimpl
def setup_run(run):
    from ltcore import cross_entropy_term

    options = run.option(PLUGIN)
    stage = run.build("stage", "classifier-retraining", name=STAGE, plugin=PLUGIN,
                      epochs=options.epochs, lr=options.lr, sampler=options.sampler,
                      view=options.view)
    stage.epochs_setting = f"{PLUGIN}.epochs"
    stage.set_classifier_loss(cross_entropy_term("lws-ce", PLUGIN))
    after = crt.STAGE if any(s.name == crt.STAGE for s in run.stages) else run.main_stage.name
    run.add_stage(stage, after=after)
    run.register(run.build("rebalancer", "lws", classifier=run.model.classifier, stage=stage),
                 PLUGIN)
