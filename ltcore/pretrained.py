"""A backbone's initial weights (``model.pretrained``): ``none``, ``hub`` (its library's
published weights, loaded by the factory), a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin``
state dict, or an earlier ltcore run (its id, folder name or folder: the backbone of its
``model.pt``).

Files are read without running code (safetensors, or ``torch.load`` with ``weights_only``).
Keys are matched through the common prefixes (``module.``, ``model.``, ``backbone.``,
``encoder.``, ``_orig_mod.``, and the backbone's own single top-level prefix); the keys of a
classifier the backbone took off (``fc.*`` of a torchvision ResNet, a timm model's head) are
left out. Missing keys, unexpected keys and tensors of another shape refuse the weights unless
``model.pretrained_strict = false``, which loads what fits and reports the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from .errors import ConfigError, DataError

PREFIXES = ("module.", "model.", "backbone.", "encoder.", "_orig_mod.", "net.")
"""Prefixes that wrappers and training scripts put in front of a network's keys."""
CONTAINERS = ("state_dict", "model", "model_state_dict", "model_state", "net", "module")
"""Keys under which training scripts save the state dict in a larger checkpoint."""
FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@attrs.define
class InitialWeights:
    """Where a run's backbone starts: ``hub``, a file's tensors or an earlier run's."""

    source: str
    kind: str
    """``hub``, ``file`` or ``run``."""
    state: dict[str, torch.Tensor] | None = None
    preprocessing: dict[str, Any] | None = None
    """An earlier run's recorded preprocessing (mean, std, sizes), which the run takes over."""

    @property
    def hub(self) -> bool:
        return self.kind == "hub"

    def describe(self) -> str:
        return {"hub": "hub (the library's published weights)",
                "file": f"file {self.source}",
                "run": f"run {self.source}"}[self.kind]


def initial_weights(value: str, output: str | Path) -> InitialWeights | None:
    """What ``model.pretrained = value`` names (``output``: where runs are looked up); None for
    ``none``. A name that is neither a file, a folder nor a run is refused in one line."""
    if value == "none":
        return None
    if value == "hub":
        return InitialWeights(value, "hub")
    path = Path(value).expanduser()
    if path.is_file():
        contents = read_weights(path)
        if _is_ltcore_model(contents):
            return _of_run(contents, str(path))
        return InitialWeights(str(path), "file", state_dict_of(contents, path))
    if path.is_dir():
        return _of_run_folder(path)
    if path.suffix in FILE_SUFFIXES or "/" in value:
        raise ConfigError(f"model.pretrained = {value}: no such file or folder")
    from .engine.runs import find_run_folder

    try:
        folder, _ = find_run_folder(output, value)
    except DataError:
        raise ConfigError(f"model.pretrained = {value} is neither none, hub, a weights file "
                          f"({', '.join(FILE_SUFFIXES)}) nor a run under {str(output)!r} (its "
                          "id, folder name or folder)") from None
    return _of_run_folder(folder)


def read_weights(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{str(path)!r} is not a readable safetensors file: {exc}") from None
    from .engine.checkpoints import load_safely

    return load_safely(path)


def _is_ltcore_model(contents: Any) -> bool:
    return isinstance(contents, dict) and "modules" in contents and "settings" in contents


def state_dict_of(contents: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded weights file: the dict itself, or the one under a usual
    container key (``state_dict``, ``model``, ...)."""
    for _ in range(3):
        if isinstance(contents, dict) and contents and all(
                torch.is_tensor(v) for v in contents.values()):
            return contents
        inner = next((contents[k] for k in CONTAINERS
                      if isinstance(contents, dict) and isinstance(contents.get(k), dict)), None)
        if inner is None:
            break
        contents = inner
    raise DataError(f"{str(path)!r} holds no state dict (a mapping of names to tensors, "
                    f"directly or under one of {', '.join(CONTAINERS)})")


def _of_run_folder(folder: Path) -> InitialWeights:
    for name in ("model.pt", "model_best.pt"):
        if (folder / name).is_file():
            return _of_run(read_weights(folder / name), str(folder / name))
    raise ConfigError(f"model.pretrained = {folder}: the run has no model.pt yet (it has not "
                      "finished a stage); resume it first, or name its checkpoint's weights")


def _of_run(saved: dict[str, Any], path: str) -> InitialWeights:
    record = saved.get("standalone") or {}
    prefix = f"{record.get('weights', 'model')}.backbone."
    state = {k[len(prefix):]: v for k, v in saved["modules"].items() if k.startswith(prefix)}
    if not state:
        raise DataError(f"{path!r} holds no backbone weights under {prefix!r}")
    return InitialWeights(path, "run", state, record.get("preprocessing"))


def load_into(backbone: nn.Module, weights: InitialWeights, strict: bool, name: str) -> str:
    """Copy ``weights`` into ``backbone`` (``name``: its ``model.backbone``); returns the line
    the plan prints. Refused when keys or shapes do not match, unless not ``strict``."""
    own = backbone.state_dict()
    removed = tuple(f"{key}." for key in getattr(backbone, "removed_classifier", ()))
    mapped = align(weights.state, own)
    fitting = {k: v for k, v in mapped.items() if k in own and v.shape == own[k].shape}
    missing = sorted(k for k in own if k not in mapped)
    unexpected = sorted(k for k in mapped if k not in own and not k.startswith(removed)
                        and not _is_head(k))
    reshaped = sorted(k for k in mapped if k in own and mapped[k].shape != own[k].shape)
    problems = _problems(missing, unexpected, reshaped, mapped, own)
    source = weights.describe()
    if problems and strict:
        raise ConfigError(f"model.pretrained = {weights.source} does not fit backbone {name}: "
                          f"{problems}; set model.pretrained_strict = false to load the "
                          f"{len(fitting)} tensors that fit")
    with torch.no_grad():
        for key, value in fitting.items():
            own[key].copy_(value)
    line = f"{source}: {len(fitting)} of {len(own)} tensors loaded"
    return f"{line}; not loaded: {problems}" if problems else line


def _is_head(key: str) -> bool:
    """A classifier's keys in a full model's state dict (timm ``head.*`` / ``fc.*``,
    torchvision ``classifier.*`` / ``heads.*``), which a backbone without one does not take."""
    return key.split(".")[0] in ("head", "fc", "classifier", "heads", "last_linear")


def _problems(missing, unexpected, reshaped, mapped, own) -> str:
    def some(keys):
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({some(unexpected)})")
    if reshaped:
        first = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape ({first}: file "
                     f"{list(mapped[first].shape)}, model {list(own[first].shape)})")
    return "; ".join(parts)


def align(state: dict[str, torch.Tensor], own: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` with its keys renamed to match ``own``'s as well as the common prefixes allow:
    the renaming that matches most keys wins (none when nothing is gained)."""
    def strip(keys: dict, prefix: str) -> dict:
        return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in keys.items()}

    candidates = [state]
    for _ in range(2):
        candidates += [strip(c, p) for c in list(candidates) for p in PREFIXES
                       if any(k.startswith(p) for k in c)]
    tops = {k.split(".")[0] for k in own}
    if len(tops) == 1:  # a wrapper module: clip's towers under one attribute
        top = f"{tops.pop()}."
        candidates += [{top + k: v for k, v in c.items()} for c in list(candidates)]
    return max(candidates, key=lambda c: sum(k in own for k in c))


def with_pretrained_preprocessing(plugins, settings,
                                  weights: InitialWeights | None, dataset) -> Any:
    """``settings`` with the pretrained weights' mean, std and input size as ``views.mean``,
    ``views.std`` and ``views.image_size`` where those are not set (an in-memory dataset keeps
    its size, and its notes say so)."""
    from .backbones import published_preprocessing, resolve

    if weights is None:
        return settings
    model = settings.run.model
    stated = (published_preprocessing(resolve(plugins, model.backbone, model.backbone_options))
              if weights.hub else weights.preprocessing)
    if stated is None:
        return settings
    views = settings.run.views
    changes: dict[str, Any] = {}
    if not views.mean:
        changes["mean"] = tuple(map(float, stated["mean"]))
    if not views.std:
        changes["std"] = tuple(map(float, stated["std"]))
    size = int(stated["input_size"][-1])
    if not views.image_size and size != dataset.image_size:
        if dataset.in_memory:
            dataset.notes.append(f"the pretrained weights take {size} px images; {dataset.name} "
                                 f"holds {dataset.image_size} px images in memory, used as "
                                 "they are")
        else:
            changes["image_size"] = size
    return attrs.evolve(settings, run=attrs.evolve(settings.run,
                                                   views=attrs.evolve(views, **changes)))
