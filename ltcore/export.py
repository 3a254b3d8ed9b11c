"""``ltrun export``: a saved model in a format other tools read, its preprocessing beside it, and
a parity check.

Every format holds the network on preprocessed images (``[B, C, S, S]`` float32, batch size
free) to logits, as :class:`ltcore.standalone.TrainedModel` computes them; the JSON beside it
(``<file>.json``: ``model.onnx.json``) holds the class names and the preprocessing in the
fields of timm's ``pretrained_cfg`` (:meth:`~ltcore.standalone.Preprocessing.to_dict`). After writing, the file
is read back with its own runtime (TorchScript, onnxruntime, safetensors) and its logits on a
batch are compared with the PyTorch model's.
"""

from __future__ import annotations

import json
import warnings
from importlib import import_module
from pathlib import Path
from typing import Any

import attrs
import torch

from .errors import ConfigError
from .files import atomic_write, write_text

FORMATS = {"torchscript": (".torchscript.pt", ()),
           "onnx": (".onnx", ("onnx", "onnxscript")),
           "safetensors": (".safetensors", ("safetensors",))}
"""Each export format: the suffix of its default file name and the packages it needs."""

PARITY_BATCH = 8
"""Images in the batch the exported model is checked on."""


@attrs.frozen
class Exported:
    """What ``ltrun export`` wrote and how close the exported model's logits are."""

    path: Path
    config: Path
    max_abs_difference: float | None
    note: str = ""


def check_installed(fmt: str) -> None:
    """Refuse a format whose packages are missing, naming them and how to install them."""
    missing = []
    for package in FORMATS[fmt][1]:
        try:
            import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConfigError(f"export format {fmt!r} needs {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: pip install "
                          f"{' '.join(missing)} (or pip install 'ltcore[export]')")


def export_model(checkpoint: str, fmt: str, output: str | None = None) -> Exported:
    """Write the model of ``checkpoint`` in format ``fmt`` to ``output`` (default: beside
    the checkpoint, named after it) and its JSON beside it; check the parity."""
    from .standalone import load_record

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    check_installed(fmt)
    record, model = load_record(checkpoint)
    source = Path(checkpoint)
    target = Path(output) if output else source.with_name(source.name.split(".")[0]
                                                          + FORMATS[fmt][0])
    if target.resolve() == source.resolve():
        raise ConfigError(f"--output {str(target)!r} is the checkpoint itself; give another "
                          "file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    images = parity_batch(record)
    with torch.no_grad():
        expected = model(images)
    if fmt == "torchscript":
        outputs, note = write_torchscript(model, images, target), ""
    elif fmt == "onnx":
        outputs, note = write_onnx(model, images, target)
    else:
        outputs, note = write_safetensors(model, record, images, target), ""
    config = target.with_name(f"{target.name}.json")
    write_text(config, json.dumps(model_json(record, fmt, target), indent=2) + "\n")
    difference = None if outputs is None else float((outputs - expected).abs().max())
    return Exported(target, config, difference, note)


def parity_batch(record: dict[str, Any]) -> torch.Tensor:
    """:data:`PARITY_BATCH` preprocessed images of seeded random pixels."""
    from .standalone import Preprocessing

    preprocessing = Preprocessing.from_dict(record["preprocessing"])
    generator = torch.Generator().manual_seed(0)
    size = preprocessing.resize_size
    pixels = torch.randint(0, 256, (PARITY_BATCH, preprocessing.channels, size, size + 3),
                           dtype=torch.uint8, generator=generator)
    return preprocessing(pixels)


def model_json(record: dict[str, Any], fmt: str, target: Path) -> dict[str, Any]:
    """The JSON beside an exported model: its file, format, input and output, the
    architecture, the class names and the preprocessing."""
    preprocessing = record["preprocessing"]
    return {"file": target.name, "format": fmt, "architecture": record["architecture"],
            "input": {"name": "images", "shape": ["batch", *preprocessing["input_size"]],
                      "dtype": "float32"},
            "output": {"name": "logits", "shape": ["batch", len(record["classes"])]},
            "num_classes": len(record["classes"]), "label_names": record["classes"],
            "pretrained_cfg": preprocessing}


def write_torchscript(model, images: torch.Tensor, target: Path) -> torch.Tensor:
    """Trace ``model`` and save it; the saved module's logits on ``images``."""
    with warnings.catch_warnings():  # torch marks TorchScript as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, images)
        atomic_write(target, lambda tmp: torch.jit.save(traced, str(tmp)))
        with torch.no_grad():
            return torch.jit.load(str(target))(images)


def write_onnx(model, images: torch.Tensor, target: Path) -> tuple[torch.Tensor | None, str]:
    """Export ``model`` with torch's ONNX exporter (batch size dynamic) and save it; its
    logits on ``images`` under onnxruntime, or None and a note when that is not installed."""
    program = torch.onnx.export(model, (images,), dynamo=True, input_names=["images"],
                                output_names=["logits"], verbose=False,
                                dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    atomic_write(target, lambda tmp: program.save(str(tmp)))
    try:
        import onnxruntime
    except ImportError:
        return None, "parity not checked: install onnxruntime to run the ONNX file"
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0]), ""


def write_safetensors(model, record: dict[str, Any], images: torch.Tensor,
                      target: Path) -> torch.Tensor:
    """Save ``model``'s tensors with the record (without its tensors) as the file's metadata;
    the logits of the model ``ltcore.load_model`` makes of the file on ``images``."""
    from safetensors.torch import save_file

    from .standalone import STANDALONE, load_model

    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    described = {key: value for key, value in record.items() if not torch.is_tensor(value)}
    metadata = {STANDALONE: json.dumps(described)}
    atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    with torch.no_grad():
        return load_model(target)[0](images)


def describe(exported: Exported, fmt: str) -> list[str]:
    """The lines ``ltrun export`` prints."""
    lines = [f"exported {exported.path} ({fmt}) and its preprocessing {exported.config}"]
    if exported.max_abs_difference is None:
        lines.append(exported.note)
    else:
        lines.append(f"parity: max |logits - PyTorch's| on a batch of {PARITY_BATCH} images = "
                     f"{exported.max_abs_difference:.3g}")
    return lines

