"""ltcore: long-tailed visual recognition with contrastive learning, composed from plugins.

This module is the public API: everything a plugin, a script or a notebook needs is imported
from here (``from ltcore import hookimpl, LossTerm, doc``), plus the loss and metric libraries
:mod:`ltcore.losses` and :mod:`ltcore.metrics`, the component protocols
:mod:`ltcore.protocols` and the test kit :mod:`ltcore.testing`. Names are loaded on first use,
so importing ltcore (and a plugin's entry point) does not import torch. ``docs/api.md``
describes each name.
"""

from importlib import import_module

import pluggy

__version__ = "1.4.0"

hookimpl = pluggy.HookimplMarker("ltcore")
"""Marker for hook implementations: decorate a plugin's functions with ``@ltcore.hookimpl``."""

_EXPORTS = {
    # assembling a run and what loss terms see
    "Run": "run", "Stage": "run", "ViewSpec": "run", "LossTerm": "run", "Step": "run",
    "ContrastSet": "run", "RunRecorder": "run", "CLASSIFIER_ROLE": "run", "epoch_seed": "run",
    "World": "distributed",
    "classifier_term": "terms", "cross_entropy_term": "terms", "logit_adjusted_term": "terms",
    "supcon_term": "terms",
    # options and configuration
    "doc": "config", "interval": "config", "OptimConfig": "config", "ScheduleConfig": "config",
    "RunConfig": "config", "Settings": "config", "resolve": "config",
    # evaluation
    "Evaluation": "evaluation", "EvalOutputs": "evaluation", "Metric": "evaluation",
    "accuracy_figures": "evaluation", "posthoc_logit_adjustment": "evaluation",
    # components
    "ViewPipeline": "views", "seed_image_randomness": "views", "ModelBundle": "models", "MLPHead": "models",
    "LinearClassifier": "models", "CosineClassifier": "models",
    "ClipBackbone": "clip", "clip_backbone": "clip", "read_clip_config": "clip",
    "prompt_templates": "clip", "prompt_class_names": "clip", "class_prompt_name": "clip",
    "ClassPowerSampler": "samplers", "InstanceBalancedSampler": "samplers",
    "Dataset": "data", "Split": "data", "load_image": "data", "read_digits": "data",
    "cache_dir": "data", "split_per_class": "data", "IMAGENET_STATS": "data",
    # plugins, training and saved runs
    "Task": "tasks", "PerClassTable": "tasks", "Batch": "engine.backends",
    "batch_rows": "engine.backends", "EpochKeys": "engine.backends",
    "shut_down_workers": "engine.backends", "worker_options": "launch",
    "PaperTable": "tables", "TableRow": "tables", "TableColumn": "tables",
    "record_figure": "figures", "save_figure": "files", "run_colours": "plots",
    "RUN_MARKERS": "plots",
    "Plugins": "plugins", "prepare": "engine.runs", "train": "engine.runs",
    "resume": "engine.runs", "Result": "engine.runs", "load_saved_run": "engine.runs",
    "find_run_folder": "engine.runs",
    "load_safely": "engine.checkpoints",
    "load_model": "standalone", "TrainedModel": "standalone", "Preprocessing": "standalone",
    # errors users see
    "LtcoreError": "errors", "ConfigError": "errors", "PluginError": "errors",
    "DataError": "errors", "NonFiniteLossError": "errors", "RunStopped": "errors",
    "RunFinished": "errors", "RunBusy": "errors",
    "DeviceMemoryError": "errors", "TrackingError": "errors", "StorageError": "errors",
}

__all__ = ["__version__", "hookimpl", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f"ltcore.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ltcore' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
