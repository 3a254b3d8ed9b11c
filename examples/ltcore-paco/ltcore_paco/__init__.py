"""ltcore-paco: Parametric Contrastive Learning (Cui et al., ICCV 2021) as an ltcore plugin.

``paco_loss`` is importable here for use outside a run; it is loaded on first access so that
``ltrun plugins`` does not import torch.
"""

__all__ = ["paco_loss"]


def __getattr__(name):
    if name == "paco_loss":
        from .loss import paco_loss

        return paco_loss
    raise AttributeError(f"module 'ltcore_paco' has no attribute {name!r}")
