"""A trained model on its own: what ``model.pt`` carries for it, and :func:`load_model`.

``model.pt`` and ``model_best.pt`` hold, besides the run's state, a ``standalone`` record: the
class names and training counts, the preprocessing (:class:`Preprocessing`), the architecture
(the registered backbone and classifier with their options), where the weights are among the
run's modules, what the run's evaluation does to the logits beyond the classifier, and the
run's ``eval.posthoc_la_tau``. :func:`load_model` builds the network from it with the core's
components (a backbone or head that another installed plugin registers comes from that
plugin), loads the weights as tensors only and returns it in evaluation mode with its
preprocessing: no dataset, no method plugin and no network are needed.

Plugins that change evaluation logits (``adjust_eval_logits``) say what they do to a saved
model through ``saved_logit_adjustment(model)`` on the object that implements the hook: None
(nothing beyond the weights: tau-norm's choice is written into the classifier) or a per-class
``(scale, bias)`` (LWS's learnt scales), which the standalone model applies as evaluation does.
A run whose evaluation depends on an implementation that does not say is recorded as not
usable on its own; :func:`load_model` refuses it naming the plugin, and ``ltrun evaluate``
(with the plugin installed) still evaluates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import LIBRARIES
from .errors import DataError

STANDALONE = "standalone"
"""The key of the record in ``model.pt``."""

FORMAT = 1
"""The version of the record; a file with a later one needs a newer ltcore."""

DESCRIBED_VIEWS = ("eval", "imagenet-eval")
"""The evaluation views a record can state: ``eval`` takes images at the view size as they are
(any other size is resized to it), ``imagenet-eval`` resizes the shorter side to
``round(S * 256 / 224)`` and crops ``S`` at the centre."""


@attrs.frozen
class Preprocessing:
    """How an image becomes the model's input, in steps any library can follow: convert it to
    ``channel_order``, resize its shorter side to ``resize_size`` (``interpolation``,
    antialiased; the longer side to ``int(resize_size * long / short)``), crop ``crop_size``
    square at the centre (offsets ``round((size - crop_size) / 2)``, halves to even), scale the
    pixels to [0, 1], subtract ``mean`` and divide by ``std`` per channel. An image already
    ``resize_size`` on its shorter side comes out of the resize unchanged.

    Call it on a PIL image (torchvision's transforms, as evaluation applies them to image
    files) or on uint8 pixels ``[C, H, W]`` / ``[B, C, H, W]`` (:class:`PixelPreprocess`)."""

    crop_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"
    interpolation: str = "bilinear"

    @classmethod
    def of_dataset(cls, dataset) -> "Preprocessing | None":
        """The evaluation transform of ``dataset`` (None for a view this class cannot state)."""
        if dataset.eval_view not in DESCRIBED_VIEWS:
            return None
        from .views.batched import imagenet_resize_size

        size = dataset.image_size
        resize = size if dataset.eval_view == "eval" else imagenet_resize_size(size)
        return cls(size, resize, tuple(map(float, dataset.mean)),
                   tuple(map(float, dataset.std)), "L" if dataset.channels == 1 else "RGB")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """The fields of timm's ``pretrained_cfg`` (``input_size``, ``interpolation``,
        ``crop_pct``, ``crop_mode``, ``mean``, ``std``) and the exact ``resize_size``,
        ``channel_order`` and ``pixel_range`` (the range ``mean`` and ``std`` apply to)."""
        return {"input_size": [self.channels, self.crop_size, self.crop_size],
                "interpolation": self.interpolation, "antialias": True,
                "resize_size": self.resize_size, "crop_pct": self.crop_size / self.resize_size,
                "crop_mode": "center", "mean": list(self.mean), "std": list(self.std),
                "channel_order": self.channel_order, "pixel_range": [0.0, 1.0]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(int(data["input_size"][-1]), int(data["resize_size"]),
                   tuple(data["mean"]), tuple(data["std"]), data["channel_order"],
                   data["interpolation"])

    def __call__(self, image) -> torch.Tensor:
        """A PIL image -> ``[C, S, S]``; uint8 pixels ``[C, H, W]`` or ``[B, C, H, W]`` -> the
        same with ``S x S`` images."""
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.dim() not in (3, 4):
                raise DataError(f"preprocessing takes uint8 pixels [C, H, W] or [B, C, H, W], "
                                f"not a {image.dtype} tensor of shape {list(image.shape)}")
            batch = image if image.dim() == 4 else image.unsqueeze(0)
            out = PixelPreprocess(self).to(image.device)(batch)
            return out if image.dim() == 4 else out[0]
        from torchvision import transforms as T

        resize = T.Resize(self.resize_size, T.InterpolationMode(self.interpolation))
        return T.Compose([resize, T.CenterCrop(self.crop_size), T.ToTensor(),
                          T.Normalize(self.mean, self.std)])(image.convert(self.channel_order))


def centre_offset(excess):
    """torchvision's centre-crop offset ``int(round(excess / 2))`` (halves to even) in integer
    arithmetic, so that it holds for the symbolic sizes of an exported graph."""
    half = excess // 2
    return half + (excess % 2) * (half % 2)


class PixelPreprocess(nn.Module):
    """:class:`Preprocessing` as tensor operations: uint8 pixels ``[B, C, H, W]`` of any size
    -> float32 ``[B, C, S, S]``. Sizes stay symbolic (no branch on them), so
    ``torch.export`` keeps the batch and image sizes dynamic."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.resize_size = preprocessing.resize_size
        self.crop_size = preprocessing.crop_size
        self.interpolation = preprocessing.interpolation
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2], pixels.shape[-1]
        short = torch.sym_min(height, width)
        size = (self.resize_size * height // short, self.resize_size * width // short)
        x = F.interpolate(pixels.float(), size=size, mode=self.interpolation,
                          align_corners=False, antialias=True).round().clamp(0, 255)
        crop = torch.arange(self.crop_size, device=pixels.device)
        x = x.index_select(2, crop + centre_offset(size[0] - self.crop_size))
        x = x.index_select(3, crop + centre_offset(size[1] - self.crop_size))
        return (x / 255 - self.mean) / self.std


class TrainedModel(nn.Module):
    """A saved run's network on its own: preprocessed images ``[B, C, S, S]`` -> logits
    ``[B, classes]``, as ``ltrun evaluate`` computes them: ``classifier(backbone(x))``, then
    the plugins' per-class ``logit_scale`` and ``logit_bias``, then post-hoc logit adjustment
    ``- posthoc_la_tau * log_prior``. ``classes`` names the columns."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, classes: list[str],
                 class_counts: torch.Tensor):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.classes = list(classes)
        count = len(self.classes)
        self.register_buffer("logit_scale", torch.ones(count))
        self.register_buffer("logit_bias", torch.zeros(count))
        # as evaluation's post-hoc adjustment computes it; a class without training images
        # counts as one (its log would be -inf, and 0 * -inf is NaN without adjustment)
        self.register_buffer("log_prior", torch.log(class_counts.float().clamp_min(1)
                                                    / class_counts.sum()))
        self.register_buffer("posthoc_la_tau", torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(images)).float()
        return logits * self.logit_scale + self.logit_bias - self.posthoc_la_tau * self.log_prior


# -- what model.pt records -----------------------------------------------------------------


def standalone_record(run, model) -> dict[str, Any]:
    """The record of ``model`` (the run's final model) that :func:`load_model` builds from;
    ``not_standalone`` says why it cannot be used without the run, or is None."""
    dataset = run.dataset
    preprocessing = Preprocessing.of_dataset(dataset)
    weights = next((name for name, module in run.modules.items() if module is model), None)
    scale, bias, unsaid = saved_logit_adjustment(run, model)
    reasons = []
    if not run.task.standalone:
        reasons.append(f"it is a {run.task.name} model; a saved model on its own (load_model, "
                       "ltrun predict, ltrun export) is an image classifier")
    elif preprocessing is None:
        reasons.append(f"the dataset's evaluation view {dataset.eval_view!r} is not one a "
                       f"saved model can describe ({', '.join(DESCRIBED_VIEWS)})")
    if getattr(model, "architecture", None) is None or weights is None:
        reasons.append("its final model was not built by Run.build_model, so its architecture "
                       "is unknown")
    if unsaid:
        reasons.append(f"its evaluation applies adjust_eval_logits of plugin(s) "
                       f"{', '.join(map(repr, unsaid))}, which do not say what that does to a "
                       "saved model (saved_logit_adjustment)")
    architecture = dict(getattr(model, "architecture", None) or {})
    if "classifier_options" in architecture and hasattr(model.classifier, "scale"):
        architecture["classifier_options"] = {**architecture["classifier_options"],
                                              "scale": float(model.classifier.scale)}
    return {"format": FORMAT, "classes": list(dataset.classes),
            "class_counts": dataset.class_counts.tolist(),
            "preprocessing": preprocessing.to_dict() if preprocessing else None,
            "architecture": architecture, "weights": weights, "logit_scale": scale,
            "logit_bias": bias, "posthoc_la_tau": float(run.config.eval.posthoc_la_tau),
            "not_standalone": "; ".join(reasons) or None}


def saved_logit_adjustment(run, model) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The per-class scale and bias that the run's ``adjust_eval_logits`` implementations
    apply to ``model``'s logits, composed in the order they are called, and the plugins whose
    implementation does not say (no ``saved_logit_adjustment``)."""
    count = run.dataset.num_classes
    scale, bias, unsaid = torch.ones(count), torch.zeros(count), []
    for implementation in reversed(run.hooks.adjust_eval_logits.get_hookimpls()):
        describe = getattr(implementation.plugin, "saved_logit_adjustment", None)
        if describe is None:  # a run's plugin object is registered as run:<its name>
            unsaid.append(implementation.plugin_name.removeprefix("run:"))
            continue
        adjustment = describe(model)
        if adjustment is not None:
            step_scale, step_bias = (t.detach().float().cpu() for t in adjustment)
            scale, bias = scale * step_scale, bias * step_scale + step_bias
    return scale, bias, unsaid


# -- loading ---------------------------------------------------------------------------------


def load_model(path: str | Path, posthoc_la_tau: float | None = None,
               plugins=None) -> tuple[TrainedModel, Preprocessing]:
    """The model saved in ``path`` (a run's ``model.pt`` / ``model_best.pt``, or a
    ``.safetensors`` file ``ltrun export`` wrote) in evaluation mode on the CPU, and its
    preprocessing. ``posthoc_la_tau`` replaces the run's ``eval.posthoc_la_tau``. Components
    come from ``plugins`` when given, else from the core (or the installed plugin that
    registered them). A file that is missing, unsafe, older or not usable on its own raises a
    :class:`DataError` saying so."""
    record, model = load_record(path, plugins)
    if posthoc_la_tau is not None:
        model.posthoc_la_tau.fill_(posthoc_la_tau)
    return model, Preprocessing.from_dict(record["preprocessing"])


def load_record(path: str | Path, plugins=None) -> tuple[dict[str, Any], TrainedModel]:
    """The standalone record of the model file ``path`` and its :class:`TrainedModel` in
    evaluation mode (see :func:`load_model`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        record, state = read_safetensors(path)
        model = build_model(record, plugins, str(path))
        load_weights(model, state, str(path), strict=True)
    else:
        from .engine.checkpoints import read

        saved = read(path)
        record = standalone_of(saved, str(path))
        model = saved_model(saved, record, plugins, str(path))
    return record, model.eval()


def saved_model(saved: dict[str, Any], record: dict[str, Any], plugins,
                path: str) -> TrainedModel:
    """The :class:`TrainedModel` of a ``model.pt``'s contents and its standalone record."""
    model = build_model(record, plugins, path)
    prefix = f"{record['weights']}."
    load_weights(model, {k[len(prefix):]: v for k, v in saved["modules"].items()
                         if k.startswith(prefix)}, path)
    with torch.no_grad():
        model.logit_scale.copy_(record["logit_scale"])
        model.logit_bias.copy_(record["logit_bias"])
        model.posthoc_la_tau.fill_(record["posthoc_la_tau"])
    return model


def standalone_of(saved: dict[str, Any], path: str) -> dict[str, Any]:
    """The record in a loaded ``model.pt``, or a :class:`DataError` saying why there is none
    to use."""
    record = saved.get(STANDALONE)
    if record is None:
        kind = "a training checkpoint" if "saved" in saved else "a model"
        raise DataError(f"{path!r} is {kind} saved by ltcore "
                        f"{saved.get('ltcore_version', '1.0')} without the class names, "
                        "preprocessing and architecture a model needs on its own; with the "
                        f"run's training data in place, ltrun evaluate --checkpoint {path} "
                        "--save-model NEW.pt writes a copy that has them")
    if record["format"] > FORMAT:
        raise DataError(f"{path!r} was saved by a newer ltcore (model format "
                        f"{record['format']}, this one reads {FORMAT}); upgrade ltcore")
    if record["not_standalone"]:
        raise DataError(f"{path!r} cannot be used without its run: {record['not_standalone']}; "
                        f"evaluate it with ltrun evaluate --checkpoint {path}")
    return record


def build_model(record: dict[str, Any], plugins, path: str) -> TrainedModel:
    """A fresh :class:`TrainedModel` of the architecture ``record`` describes."""
    arch = record["architecture"]
    backbone = backbone_spec(arch, plugins, path)
    head = component("head", arch["classifier"], arch["classifier_plugin"], plugins, path)
    with torch.random.fork_rng(devices=[]):  # the initial weights, replaced, draw privately
        net = backbone.build(arch["in_channels"])
        classifier = head(net.feature_dim, len(record["classes"]), **arch["classifier_options"])
    return TrainedModel(net, classifier, record["classes"], torch.tensor(record["class_counts"]))


def backbone_spec(arch: dict[str, Any], plugins, path: str):
    """The backbone an architecture record names: by specification (``timm:``,
    ``torchvision:``, ``clip:``, with its recorded options), else a registered one."""
    from .backbones import BackboneSpec, resolve

    options = arch.get("backbone_options", {})
    if arch["backbone_plugin"] in LIBRARIES:
        return resolve(None, arch["backbone"], options)
    factory = component("backbone", arch["backbone"], arch["backbone_plugin"], plugins, path)
    return BackboneSpec(arch["backbone"], factory, arch["backbone_plugin"], options)


def component(kind: str, name: str, plugin: str, plugins, path: str):
    """The factory of the backbone or head ``name``: from ``plugins`` when given, from the
    core's registrations (no plugin imported) when the core registered it, else from the
    installed plugins."""
    from .plugins import CORE, Plugins

    if plugins is None and plugin == CORE:
        from .builtin import core

        table: dict[str, Any] = {}
        hook = core.register_backbones if kind == "backbone" else core.register_heads
        hook(register=lambda key, factory, doc="": table.__setitem__(key, factory))
        if name in table:
            return table[name]
    plugins = plugins if plugins is not None else Plugins()
    if name not in plugins.components.get(kind, {}):
        raise DataError(f"{path!r} needs the {kind} {name!r} that plugin {plugin!r} registers, "
                        "which is not installed here; install that plugin's distribution")
    return plugins.component(kind, name).obj


def load_weights(model: TrainedModel, state: dict[str, torch.Tensor], path: str,
                 strict: bool = False) -> None:
    """Load the backbone and classifier weights in ``state`` (keys ``backbone.*``,
    ``classifier.*``; with ``strict``, every buffer of the model too). A classifier parameter a
    plugin added (LWS's scales) is left out: its effect is in the record's logit adjustment."""
    try:
        if strict:
            model.load_state_dict(state)
            return
        backbone = {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
        model.backbone.load_state_dict(backbone)
        own = model.classifier.state_dict()
        model.classifier.load_state_dict({k[11:]: v for k, v in state.items()
                                          if k.startswith("classifier.") and k[11:] in own})
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DataError(f"the weights in {path!r} do not fit the architecture it names: "
                        f"{detail}") from exc


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The record (the file's ``ltcore`` metadata) and tensors of an exported safetensors
    file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
    if STANDALONE not in metadata:
        raise DataError(f"{str(path)!r} has no ltcore model record in its metadata; it was not "
                        "written by ltrun export")
    return json.loads(metadata[STANDALONE]), state
