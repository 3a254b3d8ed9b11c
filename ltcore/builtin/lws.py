"""``lws``: learnable weight scaling (Kang et al. 2020), a second stage any run can add.

The classifier's logits are multiplied by one learnable scale per class,
``s_c * (w_c . f + b_c)``. The scales are ones (no effect) until the stage ``lws`` after the main
stage (after ``classifier`` when ``crt`` is selected too) learns them with cross-entropy and
class-balanced sampling on the frozen encoder and the frozen classifier. They live in the
classifier as the parameter ``lws_scale``, so every evaluation and the saved model use them.
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


def _scale_logits(module, inputs, output):
    return output * getattr(module, SCALE)


def attach_scales(classifier, num_classes: int, device) -> None:
    """Give ``classifier`` a frozen all-ones ``lws_scale`` and multiply its output by it."""
    import torch
    from torch import nn

    from ltcore.errors import PluginError

    if hasattr(classifier, SCALE):
        raise PluginError(f"the classifier already has a parameter {SCALE!r}")
    classifier.register_parameter(
        SCALE, nn.Parameter(torch.ones(num_classes, device=device), requires_grad=False))
    classifier.register_forward_hook(_scale_logits)


def _train_scales_only(classifier, on: bool) -> None:
    for name, param in classifier.named_parameters():
        param.requires_grad_(on if name == SCALE else not on)


@hookimpl
def register_options(register):
    register(Options)


@hookimpl
def register_presets(register):
    crt.register_retraining_presets(register, PLUGIN, {"lws.epochs": 10, "lws.lr": 0.2})


@hookimpl
def setup_run(run):
    import torch.nn.functional as F

    from ltcore.terms import classifier_term

    options = run.option(PLUGIN)
    attach_scales(run.model.classifier, run.dataset.num_classes, run.device)
    stage = crt.retraining_stage(run, STAGE, PLUGIN, options.epochs, options.lr,
                                 options.sampler, options.view)
    stage.set_classifier_loss(classifier_term("lws-ce", PLUGIN, F.cross_entropy))
    after = crt.STAGE if any(s.name == crt.STAGE for s in run.stages) else run.main_stage.name
    run.add_stage(stage, after=after)


@hookimpl
def stage_start(run, stage):
    if stage.plugin == PLUGIN:
        _train_scales_only(stage.model.classifier, True)


@hookimpl
def stage_end(run, stage):
    if stage.plugin == PLUGIN:
        _train_scales_only(stage.model.classifier, False)
