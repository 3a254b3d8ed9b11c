"""Backbones by specification: ``model.backbone`` names a registered backbone (``ltrun plugins``
lists them), ``timm:NAME`` (any model timm creates), ``torchvision:NAME`` (any classification
model of ``torchvision.models``) or ``clip:NAME`` (an open_clip architecture's towers, or
``clip:path/to/config.json``, an open_clip model configuration).

Every factory is called as ``factory(in_channels, **model.backbone_options)``, plus
``pretrained=True`` for ``model.pretrained = hub``; a factory that does not take an option says
so in one line. The libraries' weights come from their own download caches
(:func:`missing_weights` words the line when they are not there and cannot be fetched).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Callable

import attrs
from torch import nn

from .errors import ConfigError
from .models import RESNET_LAYERS, VIT_LAYERS, layer_matcher

LIBRARIES = ("timm", "torchvision", "clip")
"""The prefixes of backbones named by specification (the plugin a record names for them)."""


@attrs.frozen
class BackboneSpec:
    """A resolved ``model.backbone``: what builds it and what a saved model records."""

    name: str
    """As configured: ``resnet32``, ``timm:resnet18``, ``clip:RN50``."""
    factory: Callable[..., nn.Module]
    plugin: str
    """The plugin that registered it, or the library (``timm``, ``torchvision``, ``clip``)."""
    options: dict[str, Any]
    """The factory's keyword options (a ``clip:`` configuration file's contents included), so
    that a saved model rebuilds without the file."""

    @property
    def by_specification(self) -> bool:
        return self.plugin in LIBRARIES

    def build(self, in_channels: int, pretrained: bool = False) -> nn.Module:
        """A new backbone; ``pretrained`` asks its library for the published weights."""
        options = dict(self.options)
        if pretrained:
            options["pretrained"] = True
        try:
            return self.factory(in_channels, **options)
        except TypeError as exc:
            unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if unknown is None or unknown.group(1) not in options:
                raise
            if unknown.group(1) == "pretrained":
                raise ConfigError(f"model.pretrained = hub: backbone {self.name!r} (plugin "
                                  f"{self.plugin!r}) has no published weights; give a weights "
                                  "file or an earlier run, or a timm:, torchvision: or clip: "
                                  "backbone") from None
            raise ConfigError(f"model.backbone_options: backbone {self.name!r} (plugin "
                              f"{self.plugin!r}) takes no option {unknown.group(1)!r}") from None


def resolve(plugins, name: str, options: dict[str, Any] | None = None) -> BackboneSpec:
    """The backbone ``name`` names (see the module's text); an unknown name lists close
    matches."""
    options = dict(options or {})
    library, _, model = name.partition(":")
    if library in LIBRARIES and model:
        if library == "clip" and model.endswith(".json"):
            from .clip import read_clip_config

            if "config" not in options:  # a saved model's options hold it: no file needed
                options["config"] = read_clip_config(model)
        check = {"timm": _check_timm, "torchvision": _check_torchvision,
                 "clip": _check_clip}[library]
        check(model, options)
        factory = {"timm": timm_backbone, "torchvision": torchvision_backbone,
                   "clip": _clip_factory}[library]
        return BackboneSpec(name, _bind(factory, model), library, options)
    registered = plugins.components.get("backbone", {})
    if name not in registered:
        close = difflib.get_close_matches(name, list(registered), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown backbone {name!r}{hint} Registered: "
                          f"{', '.join(sorted(registered))}; or timm:NAME, torchvision:NAME, "
                          "clip:NAME (docs/backbones.md)")
    component = plugins.component("backbone", name)
    return BackboneSpec(name, component.obj, component.plugin, options)


def _bind(factory, model: str):
    def bound(in_channels: int = 3, **options) -> nn.Module:
        return factory(model, in_channels, **options)
    bound.__doc__ = factory.__doc__
    return bound


def _close(name: str, names: list[str], library: str) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return (f"{library} has no model {name!r}" + (f"; did you mean {', '.join(close)}?"
                                                   if close else ""))


def _check_timm(model: str, options: dict) -> None:
    import timm

    if not timm.is_model(model.split(".")[0]):
        raise ConfigError(_close(model.split(".")[0], timm.list_models(), "timm")
                          + " (timm.list_models() lists them)")


def _check_torchvision(model: str, options: dict) -> None:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if model not in names:
        raise ConfigError(_close(model, names, "torchvision") + " among its classification "
                          "models (torchvision.models.list_models(module=torchvision.models))")


def _check_clip(model: str, options: dict) -> None:
    if "config" not in options:
        from .clip import check_architecture

        check_architecture(model)


def _clip_factory(model: str, in_channels: int = 3, **options) -> nn.Module:
    from .clip import clip_backbone

    if "config" in options:
        model = Path(model).stem
    return clip_backbone(model, in_channels, **options)


# -- the libraries' factories ---------------------------------------------------------------


def timm_backbone(name: str, in_channels: int = 3, pretrained: bool = False,
                  **options) -> nn.Module:
    """``timm.create_model(name)`` without its classifier (``num_classes=0``): the pooled
    feature, ``feature_dim`` wide; ``pretrained`` loads timm's published weights."""
    import timm

    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0,
                                  in_chans=in_channels, **options)
    except TypeError as exc:
        raise ConfigError(f"model.backbone_options do not suit timm:{name}: {exc}") from None
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        if not isinstance(exc, OSError) and "pretrained" in str(exc).lower():
            raise ConfigError(f"model.pretrained = hub: timm publishes no weights for {name} "
                              f"({' '.join(str(exc).split())[:160]}); name a tagged model "
                              "(timm.list_pretrained()) or give a weights file") from None
        missing_weights(f"timm:{name}", exc, _hf_cache(),
                        f"import timm; timm.create_model('{name}', pretrained=True)")
    model.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model


def torchvision_backbone(name: str, in_channels: int = 3, pretrained: bool = False,
                         **options) -> nn.Module:
    """``torchvision.models.get_model(name)`` with its final linear classifier replaced by an
    identity (``removed_classifier`` names it); ``pretrained`` loads its DEFAULT weights
    through torch hub's cache."""
    import torch
    import torchvision

    if in_channels != 3:
        raise ConfigError(f"torchvision:{name} takes 3-channel images, the dataset has "
                          f"{in_channels}")
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights, **options)
    except TypeError as exc:
        raise ConfigError(f"model.backbone_options do not suit torchvision:{name}: "
                          f"{exc}") from None
    except OSError as exc:  # the download failed: no network, or no cached file
        missing_weights(f"torchvision:{name}", exc, Path(torch.hub.get_dir()) / "checkpoints",
                        f"import torchvision; torchvision.models.get_model('{name}', "
                        f"weights='DEFAULT')")
    linear = [(key, m) for key, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError(f"torchvision:{name} has no final linear classifier to take off; "
                          "use a model that has one")
    key, last = linear[-1]
    parent = model.get_submodule(key.rpartition(".")[0]) if "." in key else model
    setattr(parent, key.rpartition(".")[2], nn.Identity())
    model.feature_dim = last.in_features
    model.removed_classifier = (key,)
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        model.group_matcher = layer_matcher(RESNET_LAYERS)
    elif name.startswith("vit_"):
        model.group_matcher = layer_matcher(VIT_LAYERS)
    return model


def _hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def missing_weights(backbone: str, error: Exception, cache: Path | str, fetch: str):
    """Raise the one line that says published weights are neither cached nor downloadable:
    the cache it looked in and how to fill it on a connected machine."""
    detail = " ".join(str(error).split())[:160]
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    raise ConfigError(f"model.pretrained = hub: the weights of {backbone} are not in the cache "
                      f"{cache} and could not be downloaded{offline} ({detail}); on a connected "
                      f"machine run python -c \"{fetch}\" and copy that cache folder here, or "
                      "give model.pretrained a weights file") from None


def published_preprocessing(spec: BackboneSpec) -> dict[str, Any] | None:
    """The mean, std and input size (timm's ``pretrained_cfg`` keys) of the weights
    ``model.pretrained = hub`` loads into ``spec`` (None when its library states none)."""
    model = spec.name.partition(":")[2]
    options = spec.options
    if spec.plugin == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model)
        if cfg is None:
            return None
        size = options.get("img_size", cfg.input_size[-1])
        return {"mean": cfg.mean, "std": cfg.std, "input_size": (3, size, size)}
    if spec.plugin == "torchvision":
        import torchvision

        transform = torchvision.models.get_model_weights(model).DEFAULT.transforms()
        return {"mean": transform.mean, "std": transform.std,
                "input_size": (3, transform.crop_size[0], transform.crop_size[0])}
    if spec.plugin == "clip":
        from .clip import published_preprocessing as clip_preprocessing

        return clip_preprocessing(model, options)
    return None
