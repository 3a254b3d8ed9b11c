"""CLIP image towers as backbones, and their text towers as zero-shot classifiers.

:func:`clip_backbone` builds an open_clip model (by name, or from an open_clip model
configuration) and wraps it in a :class:`ClipBackbone`: the image tower is the trained backbone,
everything else is frozen and kept in evaluation mode. The frozen text tower turns class names
into classifier weights (:meth:`ClipBackbone.zero_shot_weights`), which is what
``ltrun evaluate --zero-shot`` evaluates (:mod:`ltcore.zero_shot`). open_clip is imported only
when a CLIP model is built (``pip install 'ltcore[clip]'``). Published weights come from
open_clip's download cache (Hugging Face's); docs/clip.md.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

SIMPLE_TEMPLATE = "a photo of a {}."
"""The one template of the ``simple`` set (CLIP's basic prompt)."""

TEXT_BATCH = 256
"""Prompts encoded per forward pass of the text tower."""

def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError("clip: backbones need open_clip: pip install 'ltcore[clip]' "
                          f"(open-clip-torch); importing it failed: {exc}") from None
    return open_clip


def prompt_templates(entries: Sequence[str]) -> list[str]:
    """The templates ``clip.templates`` names, in order, each with ``{}`` for the class name:
    ``imagenet`` is CLIP's 80 ImageNet prompts (open_clip's ``OPENAI_IMAGENET_TEMPLATES``),
    ``simple`` is :data:`SIMPLE_TEMPLATE`, anything else is a template itself. Repeats are
    dropped."""
    out: list[str] = []
    for entry in entries:
        if entry == "imagenet":
            from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

            expanded = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
        elif entry == "simple":
            expanded = [SIMPLE_TEMPLATE]
        elif "{}" in entry:
            expanded = [entry]
        else:
            raise ConfigError(f"clip.templates: {entry!r} is neither imagenet, simple nor a "
                              "template with {} where the class name goes")
        out.extend(t for t in expanded if t not in out)
    return out


def class_prompt_name(name: str) -> str:
    """A class name as it goes into a prompt: underscores to spaces, spaces collapsed."""
    return " ".join(name.replace("_", " ").split())


def prompt_class_names(run) -> list[str]:
    """The class names ``run``'s prompts use (``clip.class_names``): the dataset's, or CLIP's
    curated ImageNet names for a dataset of the 1,000 ImageNet classes in their label order."""
    if run.config.clip.class_names == "dataset":
        return list(run.dataset.classes)
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if run.dataset.num_classes != len(IMAGENET_CLASSNAMES):
        raise ConfigError(f"clip.class_names = openai-imagenet names the 1,000 ImageNet classes; "
                          f"dataset {run.dataset.name!r} has {run.dataset.num_classes}")
    return list(IMAGENET_CLASSNAMES)


def read_clip_config(path: str | Path) -> dict:
    """An open_clip model configuration (JSON: ``embed_dim``, ``vision_cfg``, ``text_cfg``,
    ...) read from ``path``."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no CLIP model configuration file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"CLIP model configuration {str(path)!r} is not readable JSON: "
                          f"{exc}") from None
    if isinstance(config, dict) and isinstance(config.get("model_cfg"), dict):
        config = config["model_cfg"]  # open_clip_config.json of a published model
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg")
               if not isinstance(config, dict) or k not in config]
    if missing:
        raise ConfigError(f"CLIP model configuration {str(path)!r} lacks "
                          f"{', '.join(missing)} (an open_clip model configuration has "
                          "embed_dim, vision_cfg and text_cfg)")
    return config


# -- published weights ---------------------------------------------------------------------


def hub_cache_dir() -> str:
    """Hugging Face's download cache as the environment sets it now (``HF_HUB_CACHE``,
    ``HF_HOME``/hub, ``$XDG_CACHE_HOME``/huggingface/hub, ``~/.cache/huggingface/hub``)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        home = env.get("HF_HOME") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
        cache = os.path.join(home, "hub")
    return os.path.expanduser(cache)


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _first_tag(architecture: str) -> str | None:
    tags = _open_clip().list_pretrained_tags_by_model(architecture)
    return "openai" if "openai" in tags else (tags[0] if tags else None)


def published_preprocessing(architecture: str, options: dict) -> dict:
    """The mean, std and input size (timm's ``pretrained_cfg`` keys) of the weights
    ``pretrained=True`` loads into ``clip_backbone(architecture, **options)``, without building
    it: the tag's preprocessing, the input size of the configuration (``config`` in
    ``options``, else the architecture's) or ``force_image_size``."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    open_clip = _open_clip()
    config = options.get("config") or open_clip.get_model_config(architecture) or {}
    size = options.get("force_image_size") or config.get("vision_cfg", {}).get("image_size", 224)
    size = size if isinstance(size, int) else size[0]
    tag = None if "config" in options else _first_tag(architecture)
    cfg = open_clip.get_pretrained_cfg(architecture, tag) if tag else {}
    return {"mean": cfg.get("mean", OPENAI_DATASET_MEAN),
            "std": cfg.get("std", OPENAI_DATASET_STD), "input_size": (3, size, size)}


def default_tag(architecture: str) -> str:
    """``openai`` when open_clip has OpenAI's weights of ``architecture``, else its first tag."""
    tag = _first_tag(architecture)
    if tag is None:
        raise ConfigError(f"open_clip has no published weights for CLIP architecture "
                          f"{architecture!r}; use model.pretrained = none or another one")
    return tag


def cached_weights(architecture: str, tag: str, cache_dir: str | None = None) -> str | None:
    """The file of ``architecture``'s ``tag`` weights in the download cache, or None; looks in
    the cache only (no network)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip import get_pretrained_cfg
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    entry = get_pretrained_cfg(architecture, tag).get("hf_hub", "")
    if not entry:
        return None
    repo, filename = os.path.split(entry)  # 'org/name/' means open_clip's default file
    filename = filename or HF_WEIGHTS_NAME
    names = [filename]  # open_clip takes a safetensors file first where there is one
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=cache_dir or hub_cache_dir())
        if isinstance(found, str):
            return found
    return None


def missing_weights_message(architecture: str, tag: str, reason: str) -> str:
    """One line: where the weights are looked for, and how to bring them here."""
    from open_clip import get_pretrained_cfg

    cache = hub_cache_dir()
    repo = get_pretrained_cfg(architecture, tag).get("hf_hub", "").strip("/").split("/")
    folder = f"models--{repo[0]}--{repo[1]}" if len(repo) >= 2 else "its models--* folder"
    return (f"the {tag} weights of CLIP {architecture} are not in the download cache {cache} "
            f"and cannot be downloaded ({reason}): on a connected machine run python -c "
            f"\"import open_clip; open_clip.create_model('{architecture}', pretrained='{tag}')\" "
            f"and copy its {folder} from that machine's cache (~/.cache/huggingface/hub, or "
            f"$HF_HOME/hub) to {cache}")


def _create(open_clip, architecture: str, tag: str | None, options: dict):
    """open_clip's ``create_model`` with the ``tag`` weights, from the cache when they are
    there (no network), else downloaded by open_clip."""
    if tag is None:  # random weights as asked: open_clip's warning that none loaded is noise
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            return open_clip.create_model(architecture, **options)
        finally:
            logging.disable(previous)
    from open_clip import get_pretrained_cfg

    tags = open_clip.list_pretrained_tags_by_model(architecture)
    cfg = get_pretrained_cfg(architecture, tag)
    if not cfg:
        raise ConfigError(f"open_clip has no {tag!r} weights for CLIP {architecture}; its tags: "
                          f"{', '.join(tags) or 'none'}")
    cache = hub_cache_dir()
    found = cached_weights(architecture, tag, cache)
    if found is not None:
        preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                      if k in cfg}
        preprocess.update(options.pop("force_preprocess_cfg", None) or {})
        return open_clip.create_model(architecture, pretrained=found,
                                      force_preprocess_cfg=preprocess, **options)
    if _offline():
        raise ConfigError(missing_weights_message(architecture, tag, "HF_HUB_OFFLINE is set"))
    try:
        return open_clip.create_model(architecture, pretrained=tag, cache_dir=cache, **options)
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(missing_weights_message(architecture, tag, reason)) from None


def _from_config(open_clip, config: dict, options: dict):
    """An open_clip model built from a configuration dictionary, as ``create_model`` builds
    one from its own (the ``force_*`` options applied to a copy)."""
    from open_clip.model import set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = copy.deepcopy(config)
    cfg.setdefault("vision_cfg", {})
    cfg.setdefault("text_cfg", {})
    if options.pop("force_quick_gelu", False):
        cfg["quick_gelu"] = True
    for key, section, field in (("force_patch_dropout", "vision_cfg", "patch_dropout"),
                                ("force_image_size", "vision_cfg", "image_size"),
                                ("force_context_length", "text_cfg", "context_length")):
        value = options.pop(key, None)
        if value is not None:
            cfg[section][field] = value
    preprocess = options.pop("force_preprocess_cfg", None) or {}
    custom = (cfg.pop("custom_text", False) or options.pop("force_custom_text", False)
              or "hf_model_name" in cfg["text_cfg"])
    cfg.update(options)
    model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
    final = dataclasses.asdict(PreprocessCfg())
    final["size"] = model.visual.image_size
    set_model_preprocess_cfg(model, merge_preprocess_dict(final, preprocess))
    return model


def weights_options(architecture: str, tag: str | None = None) -> dict:
    """The ``create_model`` options that make ``architecture`` the network its ``tag`` weights
    (default: those ``pretrained=True`` loads) were trained with: ``force_quick_gelu`` for
    QuickGELU weights. Applied with or without the weights, so that a saved model is rebuilt
    as it was trained; an option given explicitly wins."""
    open_clip = _open_clip()
    tag = tag or _first_tag(architecture)
    if tag is None:
        return {}
    quick = open_clip.get_pretrained_cfg(architecture, tag).get("quick_gelu", False)
    if quick and not (open_clip.get_model_config(architecture) or {}).get("quick_gelu"):
        return {"force_quick_gelu": True}
    return {}


@contextlib.contextmanager
def _unsuitable_options(architecture: str):
    """An option open_clip's model does not take, as one line."""
    try:
        yield
    except TypeError as exc:
        raise ConfigError(f"model.backbone_options do not suit CLIP {architecture}: "
                          f"{exc}") from None


def check_architecture(architecture: str) -> None:
    """Refuse a name that is not an open_clip architecture, listing close matches."""
    names = _open_clip().list_models()
    if architecture not in names:
        close = difflib.get_close_matches(architecture, names, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown CLIP architecture {architecture!r}{hint} "
                          f"(open_clip.list_models() lists all {len(names)})")


def clip_backbone(architecture: str, in_channels: int = 3, *, config: dict | None = None,
                  pretrained: bool | str = False, **options) -> "ClipBackbone":
    """A :class:`ClipBackbone` of open_clip model ``architecture`` (``open_clip.list_models()``),
    or of the model configuration ``config`` (then ``architecture`` is only its label).
    ``pretrained``: False (random), True (the published weights: ``openai`` when there are,
    else open_clip's first tag) or a tag. ``options`` go to open_clip's ``create_model``
    (``force_image_size=384``, ...)."""
    if in_channels != 3:
        raise ConfigError(f"CLIP backbone {architecture} takes RGB images (3 channels); this "
                          f"dataset's have {in_channels}")
    open_clip = _open_clip()
    options = dict(options)
    if config is not None:
        if pretrained:
            raise ConfigError(f"CLIP model configuration {architecture!r} has no published "
                              "weights: model.pretrained must be none (or a weights file or run)")
        with _unsuitable_options(architecture):
            model = _from_config(open_clip, config, options)
        return ClipBackbone(model, architecture, config=config, tag=None)
    check_architecture(architecture)
    tag = (default_tag(architecture) if pretrained is True
           else (pretrained or None) if isinstance(pretrained, str) else None)
    options = {**weights_options(architecture, tag), **options}
    context = options.get("force_context_length")
    with _unsuitable_options(architecture):
        model = _create(open_clip, architecture, tag, options)
    return ClipBackbone(model, architecture, config=None, tag=tag, context_length=context)


@functools.lru_cache(maxsize=8)
def _named_tokenizer(architecture: str, context_length: int | None):
    return _open_clip().get_tokenizer(architecture, context_length=context_length)


@functools.lru_cache(maxsize=8)
def _config_tokenizer(context_length: int, hf_name: str, options: str):
    open_clip = _open_clip()
    kwargs = json.loads(options)
    if hf_name:
        return open_clip.tokenizer.HFTokenizer(hf_name, context_length=context_length, **kwargs)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length, **kwargs)


def _timm_style(preprocess: dict) -> dict:
    """open_clip's preprocessing configuration as timm's ``pretrained_cfg`` fields."""
    size = preprocess.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    mode = preprocess.get("resize_mode", "shortest")
    return {"mean": tuple(float(x) for x in preprocess.get("mean", ())),
            "std": tuple(float(x) for x in preprocess.get("std", ())),
            "input_size": (3, int(height), int(width)),
            "interpolation": preprocess.get("interpolation", "bicubic"),
            "crop_pct": 1.0,
            "crop_mode": {"squash": "squash", "longest": "border"}.get(mode, "center")}


def _prefixed(pattern: str, prefix: str) -> str:
    """A timm layer regex anchored at ``prefix`` instead of the start of the name."""
    return re.sub(r"(^|\||\()\^", lambda m: m.group(1) + "^" + re.escape(prefix), pattern)


class ClipBackbone(nn.Module):
    """An open_clip model (``clip``) used as a backbone: ``forward(images)`` is the image
    tower's features (``encode_image``, not normalised), ``feature_dim`` the joint embedding
    width. The text tower, its embeddings, ``ln_final``, ``text_projection`` and
    ``logit_scale`` are frozen and stay in evaluation mode; they give the class text features
    and zero-shot weights. ``pretrained_cfg`` is the preprocessing the model expects (timm's
    fields)."""

    def __init__(self, model: nn.Module, architecture: str, *, config: dict | None = None,
                 tag: str | None = None, context_length: int | None = None):
        super().__init__()
        self.clip = model
        self.architecture = architecture
        self.config = config
        """The model configuration it was built from (None: open_clip's own ``architecture``)."""
        self.tag = tag
        self.feature_dim = int(self._embed_dim())
        self.context_length = int(context_length or model.context_length)
        from open_clip.model import get_model_preprocess_cfg

        self.pretrained_cfg = _timm_style(get_model_preprocess_cfg(model))
        self._text_features: dict[tuple, torch.Tensor] = {}
        for name, module in model.named_children():
            if name != "visual":
                module.requires_grad_(False)
        for name, param in model.named_parameters(recurse=False):
            param.requires_grad_(False)
        self.register_load_state_dict_pre_hook(self._forget_text_features)
        self.train(True)

    def _embed_dim(self) -> int:
        proj = getattr(self.clip, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
        if isinstance(proj, (torch.Tensor, nn.Parameter)):
            return proj.shape[1]
        if self.config is not None:
            return self.config["embed_dim"]
        from open_clip import get_model_config

        return get_model_config(self.architecture)["embed_dim"]

    def _forget_text_features(self, *args, **kwargs) -> None:
        self._text_features.clear()

    def train(self, mode: bool = True) -> "ClipBackbone":
        """Training or evaluation mode for the image tower; the rest stays in evaluation mode."""
        super().train(mode)
        self.clip.eval()
        self.clip.visual.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def group_matcher(self, coarse: bool = False) -> dict:
        """The image tower's stem and blocks in timm's form (for ``optim.layer_decay``):
        ViT, ModifiedResNet and timm towers; the final norm and projection come last. The
        frozen rest of the model is matched with the stem, so that it adds no layer."""
        visual = self.clip.visual
        prefix, frozen = r"^clip\.visual\.", r"^clip\.(?!visual\.)|"
        if hasattr(visual, "trunk") and hasattr(visual.trunk, "group_matcher"):
            inner = dict(visual.trunk.group_matcher(coarse=coarse))

            def shift(spec):
                if isinstance(spec, str):
                    return _prefixed(spec, "clip.visual.trunk.")
                return [(_prefixed(p, "clip.visual.trunk."), suffix) for p, suffix in spec]
            layers = {key: shift(spec) for key, spec in inner.items()}
            if isinstance(layers.get("stem"), str):
                layers["stem"] = frozen + layers["stem"]
            return layers
        if hasattr(visual, "layer1"):  # ModifiedResNet: three-conv stem, four stages
            return {"stem": frozen + prefix + r"(?:conv[123]|bn[123])\.",
                    "blocks": prefix + (r"layer(\d+)" if coarse else r"layer(\d+)\.(\d+)")}
        return {"stem": frozen + prefix + r"(?:class_embedding|positional_embedding|conv1|ln_pre)",
                "blocks": [(prefix + r"transformer\.resblocks\.(\d+)", None),
                           (prefix + r"(?:ln_post|proj|attn_pool)", (99999,))]}

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def logit_scale(self) -> float:
        """The learned temperature ``exp(logit_scale)`` (100 for OpenAI's weights)."""
        return float(self.clip.logit_scale.detach().exp())

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids ``[N, context_length]`` of ``texts`` (the architecture's tokenizer; open_clip's
        BPE tokenizer for a configuration without a Hugging Face one)."""
        if self.config is None:
            tokenizer = _named_tokenizer(self.architecture, self.context_length)
        else:
            text_cfg = self.config.get("text_cfg", {})
            tokenizer = _config_tokenizer(self.context_length,
                                          text_cfg.get("hf_tokenizer_name", ""),
                                          json.dumps(text_cfg.get("tokenizer_kwargs", {}),
                                                     sort_keys=True))
        return tokenizer([texts] if isinstance(texts, str) else list(texts)).long()

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features ``[N, D]`` of ``texts`` (frozen tower, evaluation mode,
        full precision, in batches of :data:`TEXT_BATCH`, on the module's device)."""
        device, out = self.device, []
        self.clip.eval()
        try:
            with torch.autocast(device.type, enabled=False):  # full precision under autocast
                for start in range(0, len(texts), TEXT_BATCH):
                    tokens = self.tokenize(texts[start:start + TEXT_BATCH]).to(device)
                    out.append(F.normalize(self.clip.encode_text(tokens).float(), dim=-1))
        finally:
            self.train(self.training)
        return torch.cat(out) if out else torch.empty(0, self.feature_dim, device=device)

    def class_text_features(self, class_names: Sequence[str],
                            templates: Sequence[str] = ("imagenet",)) -> torch.Tensor:
        """Normalised text features ``[C, T, D]``: every class name (underscores to spaces) in
        every template of ``templates`` (``clip.templates``: set names or ``{}`` templates,
        :func:`prompt_templates`). Computed once per names and templates (and device)."""
        key = (tuple(class_names), tuple(templates), str(self.device))
        cached = self._text_features.get(key)
        if cached is not None:
            return cached
        expanded = prompt_templates(templates)
        prompts = [t.replace("{}", class_prompt_name(name))
                   for name in class_names for t in expanded]
        features = self.encode_text(prompts).reshape(len(class_names), len(expanded), -1)
        self._text_features[key] = features
        return features

    def zero_shot_weights(self, class_names: Sequence[str],
                          templates: Sequence[str] = ("imagenet",)) -> torch.Tensor:
        """CLIP's zero-shot classifier ``[C, D]``: each class's normalised text features
        averaged over the templates and normalised again."""
        return F.normalize(self.class_text_features(class_names, templates).mean(dim=1), dim=-1)

    def extra_repr(self) -> str:
        source = "configuration" if self.config is not None else (self.tag or "random")
        return (f"architecture={self.architecture!r}, weights={source}, "
                f"feature_dim={self.feature_dim}")

