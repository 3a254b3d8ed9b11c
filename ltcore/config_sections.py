"""Configuration sections of the run's operation rather than its method: tracking, distributed
training, the fast path's switches and the caps for trying a configuration out
(re-exported by :mod:`ltcore.config`)."""

from __future__ import annotations

import attrs
from attrs import validators as v

from .config_fields import doc, experiment_name, non_negative, positive


def _registrable(instance, attribute, value):
    if value and not instance.log_model:
        raise ValueError(f"'{attribute.name}' needs tracking.log_model = true (the model "
                         "registered is the logged one)")


@attrs.define(kw_only=True)
class TrackingConfig:
    """Where runs are recorded, and how their final model is."""

    uri: str = doc("MLflow tracking URI ('' = MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
                   default="")
    experiment: str = doc("MLflow experiment name", default="ltcore", validator=experiment_name)
    log_model: bool = doc("log the final model as an MLflow Model (runs:/<id>/model: network "
                          "and preprocessing exported with torch.export, loadable without "
                          "ltcore; 0.5 to 1 s a run on a CPU, 2 s the first in a process; "
                          "none for a task whose model does not stand alone, as segmentation's)",
                          default=True)
    register_model: str = doc("also register the logged model in the MLflow Model Registry "
                              "under this name ('' = no)", default="",
                              validator=_registrable)


@attrs.define(kw_only=True)
class DistributedConfig:
    """Training over several processes started by torchrun (docs/distributed.md)."""

    backend: str = doc("auto (nccl on CUDA, gloo on the CPU) | nccl | gloo", default="auto",
                       validator=v.in_(("auto", "nccl", "gloo")))
    timeout_s: float = doc("seconds a rank waits for the others in a collective before the "
                           "run fails (a crashed or hung rank)", default=300.0,
                           validator=positive)
    sync_batchnorm: bool = doc("BatchNorm statistics over the global batch (SyncBatchNorm; "
                               "CUDA only)", default=False)
    find_unused_parameters: bool = doc("let DistributedDataParallel skip parameters a step "
                                       "does not use (a plugin whose terms switch branches on "
                                       "and off sets it in its default preset; false is "
                                       "faster)", default=False)


SWITCH = ("auto", "on", "off")
"""Values of a fast-path switch: ``auto`` is on with a CUDA device and off on the CPU."""


@attrs.define(kw_only=True)
class SpeedConfig:
    """The fast path's switches (docs/performance.md). ``auto`` turns each on with a CUDA device
    and off on the CPU, where the plain path and its numbers stay as they are."""

    channels_last: str = doc("auto | on | off: images and convolution weights in the NHWC "
                             "memory layout (what tensor-core convolutions read)",
                             default="auto", validator=v.in_(SWITCH))
    tf32: str = doc("auto | on | off: TF32 tensor-core matrix products and convolutions for "
                    "what runs in fp32 (CUDA only)", default="auto", validator=v.in_(SWITCH))
    cudnn_benchmark: str = doc("auto | on | off: cuDNN times its convolution algorithms for "
                               "each new shape and keeps the fastest (CUDA only)",
                               default="auto", validator=v.in_(SWITCH))
    compile: str = doc("auto | on | off: torch.compile of every backbone (auto: on CUDA, and a "
                       "function that fails to compile runs eagerly with a warning; on: "
                       "compilation errors stop the run)", default="auto",
                       validator=v.in_(SWITCH))
    compile_mode: str = doc("torch.compile mode: default | reduce-overhead (CUDA graphs) | "
                            "max-autotune", default="default",
                            validator=v.in_(("default", "reduce-overhead", "max-autotune")))
    background_checkpoints: str = doc("auto | on | off: write checkpoint files in a background "
                                      "thread while the next epoch trains (the state is taken "
                                      "at the epoch's end; a signal, an error or the run's end "
                                      "waits for the write)", default="auto",
                                      validator=v.in_(SWITCH))


@attrs.define(kw_only=True)
class LimitConfig:
    """Caps for trying a configuration out in seconds (``ltrun reproduce --smoke``): they cut
    every stage short, so a capped run is not a result."""

    epochs: int = doc("train at most this many epochs of each stage (0 = no cap)", default=0,
                      validator=non_negative)
    steps: int = doc("train at most this many steps of each epoch (0 = no cap)", default=0,
                     validator=non_negative)
    eval_images: int = doc("evaluate on the first N images of each evaluation split (0 = all "
                           "of them)", default=0, validator=non_negative)
    plots: bool = doc("draw the stage-end plots (confusion matrix, per-class accuracy); false "
                      "saves a second or two a stage", default=True)
