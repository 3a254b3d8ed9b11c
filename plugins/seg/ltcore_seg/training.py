"""What ``--plugin seg`` adds to a run: the heads' per-pixel losses and, with ``--plugin gml``,
GML's dense form."""

from __future__ import annotations

import torch
from torch import nn

from ltcore import ConfigError, CosineClassifier, LinearClassifier, LossTerm, PluginError

from .losses import pixel_cross_entropy, pixel_gml_loss, pixel_similarities, sample_pixels
from .task import AUX_HEAD, AUX_LOGITS

PLUGIN = "seg"
CLASSIFY_ROLE = "cls"
TEMPERATURE_HEAD = "seg_gml_temperature"
QUEUE_MODULE = "seg_gml_queue"


def setup_segmentation(run, options) -> None:
    """The main stage's losses: L_cls per pixel on the segmentation head (CE, or logit-adjusted
    CE), the auxiliary head's at ``seg.aux_weight``; with ``gml`` selected, GML's dense form."""
    stage = run.main_stage
    model = stage.model
    crop = run.dataset.image_size
    if options.eval_mode == "slide" and options.slide_stride > crop:
        raise ConfigError(f"seg.slide_stride = {options.slide_stride} leaves pixels between "
                          f"sliding windows of the crop size {crop}; use at most {crop} (0: two "
                          f"thirds of it)")
    if options.interval_steps:
        stage.sampler, stage.sampler_options = "seg-steps", {"steps": options.interval_steps}
    role = stage.add_view(CLASSIFY_ROLE, options.view or run.dataset.classifier_view, classify=True)
    gml = run.option("gml") if "gml" in run.selected else None
    tau = gml.classifier_la_tau if gml is not None else options.la_tau
    weight = gml.classifier_weight if gml is not None else 1.0
    log_prior = torch.log(run.class_prior.float().clamp_min(1e-12))
    name = "pixel-la-ce" if tau else "pixel-ce"
    stage.set_classifier_loss(LossTerm(
        name, lambda step: pixel_cross_entropy(step.logits[role], step.targets(role),
                                               log_prior, tau),
        PLUGIN, weight=weight, kind="classifier"), default=True)
    aux_dim = getattr(model.backbone, "aux_dim", 0)
    if options.aux_weight > 0:
        if not aux_dim:
            raise PluginError(f"seg.aux_weight = {options.aux_weight:g} trains an auxiliary "
                              f"head, but backbone {run.config.model.backbone!r} has none; "
                              f"set seg.aux_weight = 0")
        model.heads[AUX_HEAD] = aux_classifier(run, aux_dim).to(run.device)
        stage.add_loss(LossTerm(
            f"aux-{name}", lambda step: pixel_cross_entropy(
                step.extras[AUX_LOGITS][role], step.targets(role), log_prior, tau),
            PLUGIN, weight=options.aux_weight * weight))
    if gml is not None:
        setup_pixel_gml(run, options, gml, role)


def aux_classifier(run, in_dim: int) -> nn.Module:
    """The auxiliary head's per-pixel classifier, of the run's classifier kind."""
    cfg = run.config.model
    classes = run.dataset.num_classes
    if cfg.classifier == "cosine":
        return CosineClassifier(in_dim, classes, scale=cfg.cosine_scale)
    if cfg.classifier == "linear":
        return LinearClassifier(in_dim, classes)
    raise PluginError(f"model.classifier = {cfg.classifier!r}: segmentation's heads take "
                      f"linear or cosine")


class PixelGML:
    """L_GML on the segmentation head's pixel features and, when tau_g is learned, its
    temperature loss (the similarities detached, pixels of the query's own image left out)."""

    def __init__(self, run, role: str, options, gml):
        from ltcore_gml import ClassWiseQueue, Temperature

        self.run, self.role, self.options, self.gml = run, role, options, gml
        dim = run.main_stage.model.feature_dim
        self.queue = run.add_module(QUEUE_MODULE, ClassWiseQueue.from_class_counts(
            run.class_counts.cpu(), gml.queue_size, gml.queue_min, dim,
            overflow=gml.queue_overflow))
        self.temperature = Temperature(gml.temperature, gml.learn_temperature)
        run.main_stage.model.heads[TEMPERATURE_HEAD] = self.temperature.to(run.device)

    def gml_term(self, step) -> torch.Tensor:
        stage = step.stage
        generator = torch.Generator(device=self.run.device).manual_seed(
            (self.run.epoch_seed(stage, step.epoch) * 7919 + step.iteration) % (2 ** 63))
        features, labels, images = sample_pixels(
            step.features[self.role], step.targets(self.role), self.options.gml_pixels,
            generator)
        query = torch.nn.functional.normalize(features.float(), dim=1)
        indices = step.indices[stage.views[self.role].source][images]
        self.queue.enqueue(query, labels, indices)
        tau = self.temperature()
        similarities = pixel_similarities(query, self.queue)
        step.extras["seg_gml"] = (similarities, labels, indices)
        return pixel_gml_loss(query, labels, self.queue, self.run.class_prior.float(),
                              tau.detach() if self.gml.learn_temperature else tau,
                              self.gml.gml_alpha, similarities=similarities)

    def temperature_term(self, step) -> torch.Tensor:
        from ltcore_gml import temperature_loss_from_similarities

        similarities, labels, indices = step.extras["seg_gml"]
        queue = self.queue
        return temperature_loss_from_similarities(
            similarities, labels, queue.labels(), queue.indices(), indices,
            self.run.class_prior.float(), self.temperature.log_temperature, self.gml.gml_alpha,
            bank_valid=queue.valid())


def setup_pixel_gml(run, options, gml, role: str) -> None:
    """GML's dense form: cosine heads, L_GML on pixel features (``gml.*`` options: queue_size
    k, queue_min k_m, temperature tau_g, gml_alpha, gml_weight beta)."""
    if run.config.model.classifier != "cosine":
        raise PluginError(f"seg with gml trains cosine-similarity heads (GML paper, sec. 4.7); "
                          f"model.classifier is {run.config.model.classifier!r}: set "
                          f"model.classifier = cosine (the ade20k-fcn-r50 preset does)")
    if gml.gml_weight <= 0:
        return
    from ltcore_gml import GMLRun

    pixel = PixelGML(run, role, options, gml)
    stage = run.main_stage
    # GML's run object: tau_g's group without weight decay, its value and the queues' filling
    # after every epoch (no teacher)
    run.register(GMLRun(stage, None, pixel.temperature, pixel.queue), "seg_gml")
    stage.add_loss(LossTerm("pixel-gml", pixel.gml_term, "gml", weight=gml.gml_weight,
                            kind="contrastive"))
    if gml.learn_temperature:
        stage.add_loss(LossTerm("pixel-gml-temperature", pixel.temperature_term, "gml",
                                weight=gml.gml_weight))
