"""Run configuration: attrs classes, layered sources and validation.

Sources are applied in this order, later ones winning: the defaults below, each selected plugin's
``default`` preset (its own defaults for core keys, e.g. BCL's views), the presets named with
``--preset`` (every selected plugin's preset of that name, in ``--plugin`` order; keys of plugins
that are not selected are skipped, so a preset can carry the settings of a combination), a TOML file
(``--config``), ``--set key=value`` and finally the dedicated CLI options (``--epochs``...).
Keys are dotted: ``epochs``, ``optim.lr``, ``views.classifier``, and ``<plugin>.<option>`` for
the options a plugin declares (``bcl.temperature``). An unknown key or an invalid value raises
:class:`~ltcore.errors.ConfigError` naming the key and what is allowed. The text forms (``--set``
assignments, TOML files) are :mod:`ltcore.config_text`.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

import attrs
from attrs import field, validators as v

from .config_fields import (doc, fraction_or_off, interval, keyword_options, moment_decays,
                            needs_pretrained, non_negative, per_channel, positive,
                            prompt_templates)
from .config_text import (PLUGINS_KEY, dump_toml, flatten, imbalance_factor_value, merge, nest,
                          parse_assignment, read_toml)
from .config_sections import DistributedConfig, LimitConfig, SpeedConfig, TrackingConfig
from .errors import ConfigError

INT_LIMIT = 2 ** 63
"""Integer settings must be smaller than this in size (they reach 64-bit C code)."""

FLOAT_LIMIT = 1e300
"""Float settings beyond this size are refused like infinity (they overflow at the first use)."""


@attrs.define(kw_only=True)
class OptimConfig:
    """The optimiser: SGD with momentum (every recipe in the papers) or another registered one,
    and how its updates are made."""

    name: str = doc("optimiser: sgd | adamw (ltcore's) | any name timm.optim.list_optimizers() "
                    "gives (lamb, lars, lion, adan, ...), or timm:NAME for timm's own where "
                    "the names clash (timm:sgd is Nesterov SGD)", default="sgd")
    lr: float = doc("peak learning rate (after warm-up)", default=0.1, validator=positive)
    momentum: float = doc("SGD momentum (and timm optimisers that take one)", default=0.9,
                          validator=non_negative)
    weight_decay: float = doc("weight decay (L2 for SGD, decoupled for AdamW)", default=5e-4,
                              validator=non_negative)
    nesterov: bool = doc("Nesterov momentum (SGD)", default=False)
    betas: tuple[float, ...] = doc("AdamW's moment decay rates (beta1, beta2); also given to "
                                   "timm optimisers that take betas",
                                   default=(0.9, 0.999), validator=moment_decays)
    fused: str = doc("auto | on | off: torch's fused optimiser kernel (fused=True: one kernel "
                     "for every parameter; auto: on when every parameter is on CUDA)",
                     default="auto", validator=v.in_(("auto", "on", "off")))
    options: dict[str, Any] = doc("further keyword options of a timm optimiser, e.g. "
                                  "{eps = 1e-6, trust_clip = true}", factory=dict,
                                  validator=keyword_options)
    accumulate: int = doc("micro-batches whose gradients are summed before each optimiser "
                          "update (the effective batch is batch_size x accumulate); refused "
                          "with contrastive losses, which need the whole batch at once",
                          default=1, validator=[v.ge(1), v.le(4096)])
    clip_grad_norm: float = doc("clip the gradients' total L2 norm to this before each update "
                                "(0 = no clipping)", default=0.0, validator=non_negative)
    backbone_lr_scale: float = doc("the backbone's learning rate as a share of lr (e.g. 0.1 to "
                                   "fine-tune a pretrained backbone gently)", default=1.0,
                                   validator=positive)
    layer_decay: float = doc("layer-wise learning-rate decay (timm/BEiT): with L the backbone's "
                             "layers, layer i trains at lr x layer_decay^(L - i), the classifier "
                             "and heads at lr; 1 = off", default=1.0,
                             validator=interval(0, 1, include_low=False))


SCHEDULES = ("cosine", "step", "constant", "polynomial")
"""ltcore's own learning-rate schedules (``schedule.kind``); any other name is timm's."""


@attrs.define(kw_only=True)
class ScheduleConfig:
    """Learning-rate schedule per epoch: linear warm-up, then cosine, step or constant, or
    one of timm's schedulers."""

    kind: str = doc("cosine | step | constant | polynomial (ltcore's; polynomial: (lr - min_lr) "
                    "(1 - e / E) ** power + min_lr, mmsegmentation's poly) | tanh | "
                    "multistep | poly | wsd | "
                    "rsqrt | plateau (timm's create_scheduler_v2; plateau follows "
                    "checkpoint.monitor), or timm:NAME for timm's own cosine, step or constant "
                    "(cycles, k-decay, noise through schedule.options)", default="cosine")
    warmup_epochs: int = doc("epochs of linear warm-up from lr/warmup_epochs", default=0,
                             validator=non_negative)
    milestones: tuple[int, ...] = doc("epochs where a step schedule multiplies lr by gamma",
                                      default=())
    gamma: float = doc("step-schedule decay factor", default=0.1, validator=positive)
    cosine_offset: int = doc("k of ltcore's cosine: 0.5 (1 + cos(pi (e - w + k) / (E - w + k))) "
                             "after w warm-up epochs; 1 is BCL's official code", default=0,
                             validator=non_negative)
    min_lr: float = doc("the lowest learning rate of a timm schedule and of polynomial",
                        default=0.0, validator=non_negative)
    power: float = doc("the exponent of the polynomial schedule", default=0.9,
                       validator=positive)
    per_step: bool = doc("set the learning rate before every optimiser step, at the epoch's "
                         "fraction done (ltcore's schedules; an iteration-based recipe such as "
                         "mmsegmentation's 160k-step poly decay), not once per epoch",
                         default=False)
    options: dict[str, Any] = doc("further keyword options of timm's create_scheduler_v2, e.g. "
                                  "{cycle_limit = 2, patience_epochs = 5}", factory=dict,
                                  validator=keyword_options)


@attrs.define(kw_only=True)
class ModelConfig:
    """Backbone and heads."""

    backbone: str = doc("a registered backbone (ltrun plugins lists them), timm:NAME (any model "
                        "timm creates), torchvision:NAME (any classification model of "
                        "torchvision.models) or clip:NAME (an open_clip architecture, or an "
                        "open_clip model .json); docs/backbones.md", default="resnet32")
    backbone_options: dict[str, Any] = doc("keyword options of the backbone's factory, e.g. "
                                           "{drop_path_rate = 0.1}", factory=dict,
                                           validator=keyword_options)
    pretrained: str = doc("the backbone's initial weights: none (random) | hub (the published "
                          "weights of a timm:, torchvision: or clip: model, from its library's "
                          "download cache) | a .safetensors, .pt or .pth state dict | an earlier "
                          "run (its id, folder name or folder)", default="none",
                          validator=v.min_len(1))
    pretrained_strict: bool = doc("refuse weights whose keys or shapes do not match the "
                                  "backbone's (false: load what fits and report the rest)",
                                  default=True)
    freeze: str = doc("none | backbone | backbone-except-norm: the part of a pretrained backbone "
                      "kept fixed (in eval mode and out of the optimiser)", default="none",
                      validator=[v.in_(("none", "backbone", "backbone-except-norm")),
                                 needs_pretrained])
    classifier: str = doc("classifier head: linear | cosine", default="linear")
    classifier_init: str = doc("initialisation of the linear classifier: auto (the backbone's "
                               "choice: kaiming_normal for the CIFAR ResNets as in their "
                               "reference code, default for torchvision's) | default | "
                               "kaiming_normal", default="auto",
                               validator=v.in_(("auto", "default", "kaiming_normal")))
    cosine_scale: float = doc("logit scale of the cosine classifier", default=30.0,
                              validator=positive)
    projection_hidden: int = doc("hidden width of the projection MLP", default=512,
                                 validator=positive)
    projection_dim: int = doc("output width of the projection MLP", default=128,
                              validator=positive)


@attrs.define(kw_only=True)
class ViewsConfig:
    """Augmentation pipelines per branch and how they run."""

    classifier: str = doc("view pipeline of the classifier branch (auto = the dataset's: "
                          "standard for small images, imagenet-standard for image files)",
                          default="auto")
    contrastive: str = doc("view pipeline of the contrastive branches (auto = the dataset's: "
                           "simaugment for small images, imagenet-simaugment for image files)",
                           default="auto")
    contrastive_second: str = doc("view pipeline of the second contrastive view con1 ('' = "
                                  "views.contrastive; auto = the dataset's), e.g. BCL's "
                                  "sim-rand views", default="")
    image_size: int = doc("side of the training and evaluation views (0 = the dataset's: its "
                          "images' side in memory, for image files the pretrained weights' input "
                          "size, else 224); only datasets of image files can change it",
                          default=0, validator=[non_negative, v.le(4096)])
    mean: tuple[float, ...] = doc("per-channel mean the views subtract from pixels in [0, 1] "
                                  "([] = the pretrained weights' when model.pretrained states "
                                  "one, else the dataset's)", default=(),
                                  validator=per_channel(False))
    std: tuple[float, ...] = doc("per-channel standard deviation the views divide by ([] as "
                                 "for mean)", default=(), validator=per_channel(True))
    backend: str = doc("auto | reference (per-image torchvision in DataLoader workers) | "
                       "batched (per-sample randomness on whole batches on the training "
                       "device; image files are decoded there) ", default="auto",
                       validator=v.in_(("auto", "reference", "batched")))
    workers: int = doc("DataLoader workers that decode and augment (-1 = one per usable CPU "
                       "core)", default=-1, validator=v.ge(-1))

    @property
    def loader_workers(self) -> int:
        """``workers`` with -1 resolved to the CPU cores this process may use."""
        if self.workers >= 0:
            return self.workers
        import os

        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


@attrs.define(kw_only=True)
class EvalConfig:
    """Evaluation after every epoch."""

    many_threshold: int = doc("classes with more training images are 'many' (counts)", default=100)
    few_threshold: int = doc("classes with fewer training images are 'few' (counts)", default=20)
    shot_groups: str = doc("the many/medium/few groups: counts (by the thresholds) | thirds "
                           "(the classes by training images, most first, ties by index, in "
                           "three equal groups, the first ones a class larger if need be)",
                           default="counts", validator=v.in_(("counts", "thirds")))
    every: int = doc("evaluate every N epochs (the last epoch always)", default=1,
                     validator=positive)
    metrics: tuple[str, ...] = doc("extra registered metrics to compute (e.g. "
                                   "calinski-harabasz)", default=())
    posthoc_la_tau: float = doc("post-hoc logit adjustment at evaluation: logits - tau*log(pi); "
                                "0 disables", default=0.0, validator=non_negative)
    protocol: str = doc("heldout: the test figures leave out the validation images where "
                        "the validation split is carved from the official test split (CIFAR) "
                        "| paper: the test figures are of the whole official test split at the "
                        "last epoch, as the papers report (the plan says what the validation "
                        "split is then)", default="heldout",
                        validator=v.in_(("heldout", "paper")))
    batch_size: int = doc("evaluation batch size", default=512, validator=positive)
    use_ema: bool = doc("with ema.decay set: evaluate, select and save the EMA weights (false: "
                        "the trained weights; the EMA is still kept in checkpoints)",
                        default=True)


@attrs.define(kw_only=True)
class ClipConfig:
    """The text side of a clip: backbone (zero-shot evaluation, GML's text centres)."""

    templates: tuple[str, ...] = doc(
        "prompt templates the class names are put in: imagenet (CLIP's 80 ImageNet prompts), "
        "simple ('a photo of a {}.') or templates with {} for the name", default=("imagenet",),
        validator=[v.min_len(1), prompt_templates])
    class_names: str = doc(
        "the class names put in the prompts: dataset (the dataset's) | openai-imagenet (CLIP's "
        "curated names of the 1,000 ImageNet classes in ImageNet's label order, for "
        "imagenet-lt)", default="dataset", validator=v.in_(("dataset", "openai-imagenet")))


@attrs.define(kw_only=True)
class EmaConfig:
    """An exponential moving average of the trained model's weights (timm's ModelEmaV3)."""

    decay: float = doc("weight of the average at each update: ema = decay * ema + (1 - decay) "
                       "* weights, in (0, 1); 0 = no EMA", default=0.0,
                       validator=fraction_or_off)


@attrs.define(kw_only=True)
class LossConfig:
    """Settings every classifier loss of the cross-entropy family honours."""

    label_smoothing: float = doc("smoothed targets (1 - e) one-hot + e / classes for the "
                                 "cross-entropy family (ce, la-ce, balanced-softmax and the "
                                 "retraining stages' CE); refused with other classifier losses",
                                 default=0.0, validator=interval(0, 1, include_high=False))


@attrs.define(kw_only=True)
class MixConfig:
    """Mixup and CutMix of the classifier view's images, batched on the training device."""

    mixup_alpha: float = doc("Beta(alpha, alpha) of mixup's weight (0 = no mixup)",
                             default=0.0, validator=non_negative)
    cutmix_alpha: float = doc("Beta(alpha, alpha) of CutMix's area (0 = no CutMix)",
                              default=0.0, validator=non_negative)
    prob: float = doc("probability that a batch is mixed", default=1.0,
                      validator=interval(0, 1))
    switch_prob: float = doc("with both alphas set: probability of CutMix rather than mixup "
                             "for a mixed batch", default=0.5, validator=interval(0, 1))

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


@attrs.define(kw_only=True)
class CheckpointConfig:
    """Which epoch ``model_best.pt`` keeps."""

    monitor: str = doc("the recorded per-epoch figure that picks the best epoch of a stage, "
                       "e.g. val/acc, val/hmean, val/few, train/loss", default="val/acc",
                       validator=v.matches_re(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+"))
    mode: str = doc("auto (min for a loss, else max) | max | min", default="auto",
                    validator=v.in_(("auto", "max", "min")))

    @property
    def maximise(self) -> bool:
        """Whether a larger monitored figure is better."""
        if self.mode == "auto":
            return "loss" not in self.monitor
        return self.mode == "max"


@attrs.define(kw_only=True)
class EarlyStopConfig:
    """Ending a stage whose monitored figure (checkpoint.monitor) stopped improving."""

    patience: int = doc("end a stage after this many epochs without a better "
                        "checkpoint.monitor figure (0 = never)", default=0,
                        validator=non_negative)


def _fractions_leave_training_images(instance, attribute, value):
    if instance.val_fraction + instance.test_fraction >= 1:
        raise ValueError(f"'val_fraction' + 'test_fraction' must be below 1, got "
                         f"{instance.val_fraction:g} + {instance.test_fraction:g}")


@attrs.define(kw_only=True)
class RunConfig:
    """Everything a run needs besides the plugins' own options."""

    dataset: str = doc("registered dataset name (ltrun datasets lists them)", default="digits-lt")
    data_dir: str = doc("where the dataset's files are ('' = the dataset's default; manifest-lt: "
                        "the manifest file)", default="")
    imbalance_factor: str | float = doc(  # read as text, then converted
        "n_max / n_min of the long tail imposed on the training images (the plan says how many "
        "it dropped), or natural: every training image as it is", default=10.0,
        converter=imbalance_factor_value)
    val_fraction: float = doc("share of each class's training images split off as the "
                              "validation split of data with neither a val nor a test split "
                              "(ImageFolder trees, manifests); at least one image per class; "
                              "0 = none", default=0.1, validator=interval(0, 1, include_high=False))
    test_fraction: float = doc("the same for the test split", default=0.2, validator=[
        interval(0, 1, include_high=False), _fractions_leave_training_images])
    split_seed: int = doc("seed of the val_fraction/test_fraction split", default=0,
                          validator=interval(0, 2 ** 63, include_high=False))
    epochs: int = doc("epochs of the main stage", default=10, validator=positive)
    batch_size: int = doc("training batch size (images, before views; over all ranks of a "
                          "distributed run)", default=128,
                          validator=positive)
    sampler: str = doc("registered training sampler", default="instance-balanced")
    seed: int = doc("seed of initialisation, sampling and augmentation (0 <= seed < 2^63)",
                    default=0, validator=interval(0, 2 ** 63, include_high=False))
    device: str = doc("auto | cpu | cuda | cuda:N", default="auto")
    precision: str = doc("auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 "
                         "(float16 autocast with a gradient scaler)",
                         default="auto", validator=v.in_(("auto", "fp32", "bf16", "fp16")))
    output: str = doc("directory for checkpoints and reports", default="runs")
    check_finite_every: int = doc("steps between reads of the on-device flags that catch a NaN "
                                  "or infinite loss term or gradient (no host synchronisation "
                                  "in between; also at the end of every epoch)", default=50,
                                  validator=positive)
    optim: OptimConfig = field(factory=OptimConfig)
    schedule: ScheduleConfig = field(factory=ScheduleConfig)
    model: ModelConfig = field(factory=ModelConfig)
    views: ViewsConfig = field(factory=ViewsConfig)
    eval: EvalConfig = field(factory=EvalConfig)
    ema: EmaConfig = field(factory=EmaConfig)
    clip: ClipConfig = field(factory=ClipConfig)
    loss: LossConfig = field(factory=LossConfig)
    mix: MixConfig = field(factory=MixConfig)
    checkpoint: CheckpointConfig = field(factory=CheckpointConfig)
    early_stop: EarlyStopConfig = field(factory=EarlyStopConfig)
    tracking: TrackingConfig = field(factory=TrackingConfig)
    distributed: DistributedConfig = field(factory=DistributedConfig)
    speed: SpeedConfig = field(factory=SpeedConfig)
    limit: LimitConfig = field(factory=LimitConfig)


# -- structuring ----------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if attrs.has(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} is a section; set its keys ({key}.<name>) instead")
        return structure(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = typing.get_args(tp)[0]
        return tuple(_coerce(x, item, key) for x in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or abs(value) > FLOAT_LIMIT:
                raise ConfigError(f"invalid value {value!r} for {key}: expected a finite number")
            return float(value)
    elif tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= INT_LIMIT:
                raise ConfigError(f"invalid value {value} for {key}: integers must be below "
                                  f"2^63 in size")
            return value
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise ConfigError(f"invalid value {value!r} for {key}: expected {tp.__name__}")


def structure(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build the attrs class ``cls`` from nested ``data``, validating every key."""
    attrs.resolve_types(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            allowed = ", ".join(f"{prefix}.{k}" if prefix else k for k in fields)
            raise ConfigError(f"unknown configuration key {full!r}; allowed here: {allowed}")
        kwargs[key] = _coerce(value, fields[key].type, full)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        name = _failing_field(message, fields)
        full = f"{prefix}.{name}" if prefix and name else (name or prefix or cls.__name__)
        raise ConfigError(f"invalid value for {full}: {message}") from exc


def _failing_field(text: str, fields: dict) -> str | None:
    for name in fields:
        if f"'{name}'" in text:
            return name
    return None


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) for every leaf option of ``cls``, nested sections flattened."""
    attrs.resolve_types(cls)
    rows = []
    for f in attrs.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if attrs.has(f.type):
            rows.extend(field_docs(f.type, key))
            continue
        default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
        type_name = getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
        rows.append((key, type_name, default, f.metadata.get("doc", "")))
    return rows


# -- the resolved configuration -------------------------------------------------------------


@attrs.define
class Settings:
    """The resolved configuration of one run: the core's and each selected plugin's options."""

    run: RunConfig
    plugins: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self.run)
        for name, options in self.plugins.items():
            out[name] = attrs.asdict(options)
        return out

    def to_toml(self, selected: list[str] | None = None) -> str:
        """The settings as TOML (what ``--config`` reads), headed by the plugin selection
        (``plugins = [...]``) when ``selected`` is given, so the file alone reruns the run."""
        tree = self.to_dict()
        if selected is not None:
            tree = {PLUGINS_KEY: list(selected), **tree}
        return dump_toml(tree)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for MLflow params."""
        return flatten(self.to_dict())


def _for_selected(settings: dict[str, Any], plugins, selected: list[str]) -> dict[str, Any]:
    """A preset's keys without those of plugins that are not selected, so one plugin's recipe
    can also say how to set another plugin it is combined with."""
    others = (set(plugins.options) | set(plugins.info)) - set(selected)
    return {k: v for k, v in settings.items() if k.split(".", 1)[0] not in others}


DEFAULT_PRESET = "default"
"""A plugin's preset of this name is applied whenever the plugin is selected, before the others."""


def resolve(plugins, selected: list[str], presets: list[str] = (), config_file: str | None = None,
            assignments: list[str] = (), overrides: dict[str, Any] | None = None) -> Settings:
    """Merge every source into validated :class:`Settings` for the ``selected`` plugins."""
    layers: list[dict] = [nest(plugins.presets[p][DEFAULT_PRESET].settings) for p in selected
                          if DEFAULT_PRESET in plugins.presets.get(p, {})]
    for preset in presets:
        found = [plugins.presets[p][preset] for p in selected if preset in plugins.presets.get(p, {})]
        if not found:
            known = sorted({n for p in selected for n in plugins.presets.get(p, {})})
            raise ConfigError(f"no selected plugin has a preset {preset!r}; presets of "
                              f"{', '.join(selected) or 'the selected plugins'}: "
                              f"{', '.join(known) or 'none'}")
        layers.extend(nest(_for_selected(p.settings, plugins, selected)) for p in found)
    if config_file:
        layer = read_toml(config_file)
        layer.pop(PLUGINS_KEY, None)  # the selection: read by plugins_in_file
        layers.append(layer)
    layers.append(nest(dict(parse_assignment(a) for a in assignments)))
    layers.append(nest(overrides or {}))
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)

    plugin_options = {}
    for name in selected:
        cls = plugins.options.get(name)
        values = merged.pop(name, {})
        if cls is None:
            if values:
                raise ConfigError(f"plugin {name!r} has no options, but {name}.* keys were set")
            continue
        plugin_options[name] = structure(cls, values, name)
    for key in list(merged):
        if key in plugins.options or key in plugins.info:
            raise ConfigError(f"options of plugin {key!r} were set, but it is not selected; "
                              f"add --plugin {key}")
    run = structure(RunConfig, merged)
    check_components(plugins, run)
    return Settings(run=run, plugins=plugin_options)


def check_components(plugins, run: RunConfig) -> None:
    """Refuse component names nothing registered, naming the key and the registered names."""
    from .errors import PluginError

    named = [("dataset", "dataset", run.dataset),
             ("model.classifier", "head", run.model.classifier),
             ("sampler", "sampler", run.sampler),
             *[(f"views.{branch}", "view", name) for branch, name in
               (("classifier", run.views.classifier), ("contrastive", run.views.contrastive),
                ("contrastive_second", run.views.contrastive_second))
               if name not in ("auto", "")],
             *[("eval.metrics", "metric", name) for name in run.eval.metrics]]
    for key, kind, name in named:
        try:
            plugins.component(kind, name)
        except PluginError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    from .backbones import resolve

    try:
        resolve(plugins, run.model.backbone, run.model.backbone_options)
    except ConfigError as exc:
        raise ConfigError(f"model.backbone: {exc}") from None
    from .engine.timm_factories import check_schedule, optimizer_factory

    try:
        optimizer_factory(plugins, run.optim.name)
    except PluginError as exc:
        raise ConfigError(f"optim.name: {exc}") from None
    check_schedule(run.schedule)
