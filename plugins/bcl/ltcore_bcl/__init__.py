"""ltcore-bcl: Balanced Contrastive Learning (Zhu et al., CVPR 2022) as an ltcore plugin.

``balanced_contrastive_loss`` is importable here for use outside a run; it is loaded on first
access so that ``ltrun plugins`` does not import torch.
"""

__all__ = ["balanced_contrastive_loss"]


def __getattr__(name):
    if name == "balanced_contrastive_loss":
        from .loss import balanced_contrastive_loss

        return balanced_contrastive_loss
    raise AttributeError(f"module 'ltcore_bcl' has no attribute {name!r}")
