"""GML's visual-linguistic variant (sec. 3.4, Table 4): text features as the mixture centres.

With ``gml.centres = text`` the backbone is a CLIP image tower (``model.backbone = clip:...``);
the mixture centres of class ``c`` are the frozen text tower's L2-normalised features of ``c``'s
prompts (``clip.templates``), and the query is the L2-normalised image feature of the classifier
view (the backbone's output, no projection MLP). The loss is ``L_GML`` of eq. 4/10 over those
``C x T`` centres, next to the cosine classifier's ``L_cls``. There is no teacher, queue or
distillation: the centres come from the text tower, not from a teacher's contrast features.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltcore import ConfigError, Step

from .bank import Temperature
from .loss import gml_loss_from_similarities
from .student import MixtureTerms

EXTRA = "gml"
"""Key of this step's tensors in ``step.extras`` (as the contrast variant's)."""


def refuse_text_mode_conflicts(options) -> None:
    """One ``ConfigError`` line for a teacher setting, which ``gml.centres = text`` has no use
    for."""
    teacher_settings = (("gml.teacher", options.teacher), ("gml.teacher_backbone",
                        options.teacher_backbone), ("gml.key_view", options.key_view))
    for key, value in teacher_settings:
        if value:
            raise ConfigError(f"{key} = {value!r} sets up a teacher, but gml.centres = text has "
                              "none (its centres are text features): leave it unset")
    if options.teacher_epochs:
        raise ConfigError("gml.teacher_epochs sets up a teacher stage, but gml.centres = text "
                          "has no teacher: leave it at 0")
    if options.distill and options.kd_weight > 0:
        raise ConfigError("gml.distill = true distils a teacher, but gml.centres = text has "
                          "none: set gml.distill = false")


def refuse_contrast_mode_text_options(options) -> None:
    """``gml.text_classifier_init`` only means something with text centres."""
    if options.text_classifier_init != "zero-shot":
        raise ConfigError(f"gml.text_classifier_init = {options.text_classifier_init!r} applies "
                          "to gml.centres = text only; this run has contrast centres")


def clip_tower(backbone, name: str):
    """The CLIP backbone (through a compiled wrapper), or a ConfigError naming model.backbone."""
    tower = getattr(backbone, "_orig_mod", backbone)
    if not hasattr(tower, "class_text_features"):
        raise ConfigError(f"gml.centres = text takes the mixture centres from a CLIP text tower, "
                          f"but model.backbone = {name!r} has none: set model.backbone = "
                          "clip:RN50 (or another clip: architecture)")
    return tower


def flat_centres(class_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, T, D]`` text features as the ``[C * T, D]`` centres and their ``[C * T]`` labels."""
    classes, templates, width = class_features.shape
    labels = torch.arange(classes, device=class_features.device).repeat_interleave(templates)
    return class_features.reshape(classes * templates, width).float(), labels


def text_centre_loss(image_features: torch.Tensor, labels: torch.Tensor,
                     class_features: torch.Tensor, class_prior: torch.Tensor,
                     temperature: torch.Tensor | float, alpha: float = 1.0) -> torch.Tensor:
    """``L_GML`` (eq. 4/10) with the text features ``[C, T, D]`` as the centres: per query and
    class, ``s_c = log mean_t exp(z . t_{c,t} / tau_g)``, then CE of ``s_c + alpha log pi_c``.
    ``image_features`` ``[B, D]`` are normalised here; ``class_features`` must already be."""
    centres, centre_labels = flat_centres(class_features)
    query = F.normalize(image_features.float(), dim=1)
    return gml_loss_from_similarities(query @ centres.T, labels, centre_labels, class_prior,
                                      temperature, alpha)


def describe_prompts(run, names: list[str], templates) -> None:
    """A line of the plan with the centres' count and a prompt; a warning when the classes are
    named by their indices (more than ten of them: the digits' names are their numbers), as the
    split-list benchmarks' are, so the prompts name no object."""
    from ltcore import class_prompt_name, prompt_templates

    expanded = prompt_templates(templates)
    example = expanded[0].replace("{}", class_prompt_name(names[0]))
    run.model_notes.append(f"gml text centres: {len(names)} classes x {len(expanded)} prompts, "
                           f"e.g. {example!r}")
    if len(names) > 10 and names == [str(i) for i in range(len(names))]:
        run.dataset.warnings.append(
            f"gml.centres = text: the classes of {run.dataset.name} are named by number, so the "
            f"prompts read {example!r}; the text centres need the classes' names")


def init_zero_shot_classifier(model, tower, names, templates) -> None:
    """The cosine classifier's weights set to CLIP's zero-shot classifier."""
    weight = getattr(model.classifier, "weight", None)
    with torch.no_grad():
        zero_shot = tower.zero_shot_weights(names, templates)
        if weight is None or weight.shape != zero_shot.shape:
            raise ConfigError("gml.text_classifier_init = zero-shot needs model.classifier = "
                              "cosine (a [classes, embed dim] weight); set it, or "
                              "gml.text_classifier_init = random")
        weight.copy_(zero_shot.to(weight.dtype))


class TextCentreStudent(MixtureTerms):
    """The loss terms of the text-centre variant for one run.

    Args:
        run: the run being assembled.
        tower: the CLIP backbone (``class_text_features``).
        names, templates: the class names and ``clip.templates`` of the prompts.
        temperature: the ``tau_g`` module.
        classifier_role: the view whose image features are the queries.
        alpha: logit-adjustment strength of eq. 10.
    """

    def __init__(self, run, tower, names: list[str], templates, temperature: Temperature,
                 classifier_role: str, alpha: float):
        self.run = run
        self.tower = tower
        self.names = names
        self.templates = tuple(templates)
        self.temperature = temperature
        self.classifier_role = classifier_role
        self.alpha = alpha
        self._last: tuple[Step, dict[str, Any]] | None = None

    def centres(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``[C * T, D]`` text centres and labels (the tower caches its text features and
        forgets them when its weights are loaded)."""
        return flat_centres(self.tower.class_text_features(self.names, self.templates))

    def outputs(self, step: Step) -> dict[str, Any]:
        """This step's query, centres and similarities (computed once per step)."""
        if self._last is not None and self._last[0] is step:
            return self._last[1]
        centres, centre_labels = self.centres()
        query = F.normalize(step.features[self.classifier_role].float(), dim=1)
        labels = step.targets(self.classifier_role)
        # no centre comes from an image: none is the query's own, none is left out
        out = {"query": query, "labels": labels, "indices": torch.zeros_like(labels),
               "bank": centres, "bank_labels": centre_labels,
               "bank_indices": torch.full_like(centre_labels, -1), "bank_valid": None,
               "similarities": query @ centres.T,
               "temperature": self.temperature().detach(), "losses": {}}
        self._last = (step, out)
        extras = getattr(step, "extras", None)
        if extras is not None:
            extras[EXTRA] = out
        return out


def setup_text_centres(run, options, plugin: str = "gml") -> Temperature:
    """Assemble the text-centre variant in the run's main stage; returns ``tau_g``'s module."""
    from ltcore import logit_adjusted_term, prompt_class_names

    refuse_text_mode_conflicts(options)
    stage = run.main_stage
    model = stage.model
    tower = clip_tower(model.backbone, run.config.model.backbone)
    names, templates = prompt_class_names(run), tuple(run.config.clip.templates)
    classifier_role = run.classifier_view(stage)
    stage.set_classifier_loss(logit_adjusted_term(run, options.classifier_la_tau,
                                                  options.classifier_weight, plugin=plugin),
                              default=True)
    describe_prompts(run, names, templates)
    if options.text_classifier_init == "zero-shot":
        init_zero_shot_classifier(model, tower, names, templates)
    temperature = Temperature(options.temperature, options.learn_temperature).to(run.device)
    student = TextCentreStudent(run, tower, names, templates, temperature, classifier_role,
                                options.gml_alpha)
    if options.gml_weight > 0:
        stage.add_loss(student.gml_term(options.gml_weight, plugin))
        if options.learn_temperature:
            stage.add_loss(student.temperature_term(options.gml_weight, plugin))
    return temperature
