"""ltcore: long-tailed visual recognition with contrastive learning, composed from plugins."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ltcore")
"""Marker for hook implementations: decorate a plugin's functions with ``@ltcore.hookimpl``."""
