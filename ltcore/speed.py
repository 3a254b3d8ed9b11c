"""The fast path's switches (``speed.*``, ``optim.fused``), resolved for the run's device.

Each switch is ``auto``, ``on`` or ``off``; ``auto`` is on with a CUDA device and off on the
CPU, so that the CPU's plain path, and every number recorded on it, stays as it is.
:class:`Speed` holds what a run resolved; :meth:`Speed.apply_backend_flags` sets torch's
process-wide TF32 and cuDNN flags, :meth:`Speed.prepare_model` lays out and compiles a model
built by :meth:`ltcore.Run.build_model`, :meth:`Speed.layout` puts a batch of images in the
layout the model expects. docs/performance.md measures what each one buys.
"""

from __future__ import annotations

import attrs
import torch

from .config import SpeedConfig
from .errors import ConfigError


def switched_on(value: str, device: torch.device) -> bool:
    """Whether a switch of :data:`ltcore.config_sections.SWITCH` is on for ``device``."""
    return value == "on" or (value == "auto" and device.type == "cuda")


@attrs.frozen
class Speed:
    """The resolved switches of one run."""

    channels_last: bool = False
    tf32: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False
    compile_strict: bool = False
    """Whether a compilation error stops the run (``compile = "on"``) rather than falling back
    to eager execution (``auto``)."""
    compile_mode: str = "default"
    background_checkpoints: bool = False

    @classmethod
    def resolve(cls, cfg: SpeedConfig, device: torch.device) -> "Speed":
        for name in ("tf32", "cudnn_benchmark"):
            if getattr(cfg, name) == "on" and device.type != "cuda":
                raise ConfigError(f"speed.{name} = 'on' needs a CUDA device (the run is on "
                                  f"{device}); use auto or off")
        return cls(channels_last=switched_on(cfg.channels_last, device),
                   tf32=switched_on(cfg.tf32, device),
                   cudnn_benchmark=switched_on(cfg.cudnn_benchmark, device),
                   compile=switched_on(cfg.compile, device), compile_strict=cfg.compile == "on",
                   compile_mode=cfg.compile_mode,
                   background_checkpoints=switched_on(cfg.background_checkpoints, device))

    def apply_backend_flags(self, device: torch.device) -> None:
        """Set torch's TF32 and cuDNN autotuning flags for a CUDA run (the CPU has none)."""
        if device.type != "cuda":
            return
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def prepare_model(self, model: torch.nn.Module) -> None:
        """Put ``model``'s convolution weights in the channels-last layout and compile its
        ``backbone`` in place (``nn.Module.compile``: the state dict keeps its keys)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            if not self.compile_strict:
                from torch._dynamo import config as dynamo_config

                dynamo_config.suppress_errors = True
            mode = None if self.compile_mode == "default" else self.compile_mode
            model.backbone.compile(mode=mode)

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the layout the models were prepared for."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> str:
        """The switches that are on, for the run's plan."""
        on = [name for name in ("channels_last", "tf32", "cudnn_benchmark")
              if getattr(self, name)]
        if self.compile:
            on.append(f"compile ({self.compile_mode})")
        if self.background_checkpoints:
            on.append("background checkpoints")
        return ", ".join(on) or "none"
