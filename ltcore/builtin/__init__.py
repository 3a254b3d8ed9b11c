"""Plugins that ship with the core: infrastructure (``core``) and the baseline methods."""
