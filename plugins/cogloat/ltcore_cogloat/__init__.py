"""ltcore-cogloat: Global Contrastive Learning for long-tailed classification (Bach et al., TMLR
2023) as two ltcore plugins, ``cogloat`` (k-global positives, adaptive temperature, MoCo v2) and
``proco`` (prototypes from a per-class coreset).

The plain functions below are importable here for use outside a run; they are loaded on first
access so that ``ltrun plugins`` does not import torch.
"""

_EXPORTS = {
    "adaptive_temperatures": ".loss",
    "global_contrastive_loss": ".loss",
    "prototype_loss": ".loss",
    "class_prototypes": ".loss",
    "GlobalPositiveSampler": ".positives",
    "LabelledQueue": ".moco",
    "momentum_update": ".moco",
    "k_center_greedy": ".coreset",
    "select_coreset": ".coreset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ltcore_cogloat' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
