"""``ltrun evaluate --zero-shot``: a CLIP model evaluated without training.

The run is assembled as a training run would be (same configuration sources, dataset and
``Run.build_model``) with a cosine classifier whose class vectors are the CLIP text tower's
zero-shot weights of the class names (:meth:`ltcore.clip.ClipBackbone.zero_shot_weights`, with
``clip.templates``) and whose scale is the model's learned ``logit_scale``; it is then
evaluated through the one evaluation path, so its figures compare with a trained model's.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .errors import ConfigError

CLIP_PREFIX = "clip:"


def zero_shot_settings(plugins, presets: Sequence[str] = (), config_file: str | None = None,
                       assignments: Sequence[str] = (), overrides: dict | None = None):
    """The selected plugins (the configuration file's, else ``ce``) and the settings of a
    zero-shot evaluation: the configuration sources as for training, the classifier
    ``cosine``; ``model.backbone`` must be a ``clip:`` backbone."""
    from .config import resolve
    from .config_text import plugins_in_file
    from .engine.runs import DEFAULT_PLUGINS

    recorded = plugins_in_file(config_file) if config_file else []
    selected = plugins.select(recorded or DEFAULT_PLUGINS)
    values = {**(overrides or {}), "model.classifier": "cosine"}
    settings = resolve(plugins, selected, presets, config_file, assignments, values)
    backbone = settings.run.model.backbone
    if not backbone.startswith(CLIP_PREFIX):
        raise ConfigError(f"--zero-shot evaluates a CLIP model, but model.backbone is "
                          f"{backbone!r}: give --set model.backbone=clip:NAME (an open_clip "
                          "model, e.g. clip:ViT-B-32, with --set model.pretrained=hub) or "
                          "clip:FILE.json")
    return selected, settings


def zero_shot_classifier(run, model=None) -> float:
    """Set ``model``'s cosine classifier (default: the run's model) to the zero-shot weights of
    the dataset's class names and its scale to the model's logit scale; return the scale."""
    from .clip import ClipBackbone, prompt_class_names
    from .models import CosineClassifier

    model = model if model is not None else run.model
    backbone, classifier = model.backbone, model.classifier
    if not isinstance(backbone, ClipBackbone) or not isinstance(classifier, CosineClassifier):
        raise ConfigError("--zero-shot needs a CLIP backbone (model.backbone = clip:...) and the "
                          "cosine classifier; this run's model has "
                          f"{type(backbone).__name__} and {type(classifier).__name__}")
    import torch

    names = prompt_class_names(run)
    weights = backbone.zero_shot_weights(names, run.config.clip.templates)
    with torch.no_grad():
        classifier.weight.copy_(weights.to(classifier.weight))
    classifier.scale = backbone.logit_scale()
    if model is run.model:  # the settings a saved model is rebuilt from carry the scale
        import attrs

        cfg = attrs.evolve(run.config.model, cosine_scale=classifier.scale)
        run.settings = attrs.evolve(run.settings, run=attrs.evolve(run.config, model=cfg))
        run.config = run.settings.run
    return classifier.scale


def zero_shot_run(plugins, presets: Sequence[str] = (), config_file: str | None = None,
                  assignments: Sequence[str] = (), overrides: dict | None = None,
                  echo: Callable[[str], None] | None = None):
    """The run of a zero-shot evaluation, its model's classifier set
    (:func:`zero_shot_classifier`); ``echo`` is told what it evaluates."""
    from .clip import prompt_templates
    from .engine.runs import prepare

    selected, settings = zero_shot_settings(plugins, presets, config_file, assignments,
                                            overrides)
    run = prepare(plugins, selected, settings)
    scale = zero_shot_classifier(run)
    if echo is not None:
        if run.config.model.pretrained == "none":
            echo("warning: model.pretrained = none: the CLIP model's weights are random, so its "
                 "zero-shot figures are at chance (model.pretrained = hub loads the published "
                 "ones)")
        count = len(prompt_templates(run.config.clip.templates))
        echo(f"zero-shot: {run.config.model.backbone}, {run.dataset.num_classes} class names in "
             f"{count} prompt template(s), logit scale {scale:.4g}")
    return run


def evaluate_zero_shot(plugins, presets: Sequence[str] = (), config_file: str | None = None,
                       assignments: Sequence[str] = (), overrides: dict | None = None,
                       echo: Callable[[str], None] | None = None):
    """The zero-shot model's final evaluation on the dataset's evaluation splits: an
    :class:`~ltcore.Evaluation`, whose ``figures()`` ``ltrun evaluate`` prints (its ``run``
    is what ``--save-model`` writes)."""
    run = zero_shot_run(plugins, presets, config_file, assignments, overrides, echo)
    return run.evaluate(run.model, final=True)


def evaluate_zero_shot_shifted(plugins, presets: Sequence[str] = (),
                               config_file: str | None = None, assignments: Sequence[str] = (),
                               overrides: dict | None = None, ratios=None, seed: int = 0,
                               draws: int = 1, echo: Callable[[str], None] | None = None) -> dict:
    """Figures of the zero-shot model on long-tailed resamplings of the balanced test split."""
    from .shift import DEFAULT_RATIOS, evaluate_shifted

    run = zero_shot_run(plugins, presets, config_file, assignments, overrides, echo)
    result = evaluate_shifted(run, run.model, ratios or DEFAULT_RATIOS, seed, draws)
    result["checkpoint"] = f"zero-shot {run.config.model.backbone}"
    return result

