"""ltcore-rcl: Rebalanced Contrastive Learning (RCL) as an ltcore plugin.

RCL puts the balanced-softmax prior inside whichever supervised contrastive loss a run trains
(SupCon, eq. 4; BCL, eq. 5) and compresses the contrastive features per class from mid-training.
``rebalanced_supcon_loss`` and ``class_prior_bias`` are importable here for use outside a run;
they are loaded on first access so that ``ltrun plugins`` does not import torch.
"""

__all__ = ["class_prior_bias", "rebalanced_supcon_loss"]


def __getattr__(name):
    if name in __all__:
        from . import loss

        return getattr(loss, name)
    raise AttributeError(f"module 'ltcore_rcl' has no attribute {name!r}")
