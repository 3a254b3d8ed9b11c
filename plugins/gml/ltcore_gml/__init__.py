"""ltcore-gml: Gaussian Mixture Likelihood loss (Suh & Seo, ICML 2023) as an ltcore plugin.

The plain functions, the queue, the learned temperature and GML's run object (tau_g's parameter
group, the per-epoch temperature and queue filling) are importable here for use outside a run
and by other plugins (``from ltcore_gml import gml_loss``; ltcore-seg's dense GML); they are loaded on first access so that listing the
plugins does not import torch.
"""

__all__ = ["ClassWiseQueue", "GMLRun", "Temperature", "class_log_mean_exp", "class_queue_sizes",
           "gml_loss", "gml_loss_from_similarities", "temperature_loss",
           "temperature_loss_from_similarities"]

_HOMES = {
    "gml_loss": "loss",
    "gml_loss_from_similarities": "loss",
    "temperature_loss": "loss",
    "temperature_loss_from_similarities": "loss",
    "class_log_mean_exp": "loss",
    "ClassWiseQueue": "queue",
    "class_queue_sizes": "queue",
    "Temperature": "bank",
    "GMLRun": "plugin",
}


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'ltcore_gml' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
