"""ltcore-iccl: Interpolative Centroid Contrastive Learning as an ltcore plugin.

The plain functions and classes are importable here for use outside a run
(``from ltcore_iccl import centroid_contrastive_loss``); they are loaded on first access so
that loading the plugin (``ltrun plugins``, ``ltrun --help``) does not import torch.
"""

_EXPORTS = {
    "centroid_contrastive_loss": "loss",
    "interpolative_cross_entropy": "loss",
    "interpolate": "loss",
    "sample_interpolation_weights": "loss",
    "distillation_loss": "loss",
    "EMACentroids": "centroids",
    "CentroidPrototypes": "centroids",
    "ClassAwareSampler": "samplers",
    "PairedSampler": "samplers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ltcore_iccl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
