"""Configuration as text: ``--set KEY=VALUE`` assignments, dotted keys and nested trees, the
TOML files ``--config`` reads and ``--print-config`` writes (headed by the plugin selection), and
the imbalance factor's two forms (a number, or ``natural``)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError


NATURAL = "natural"
"""The ``imbalance_factor`` that keeps a dataset's training images as they are."""


def imbalance_factor_value(value: Any) -> float | str:
    """``natural``, or the imbalance factor as a float (numbers written as text included)."""
    if isinstance(value, str) and value.strip().lower() == NATURAL:
        return NATURAL
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number < math.inf:
        raise ValueError(f"'imbalance_factor' must be a number > 0 or {NATURAL!r}, got {value!r}")
    return number


def parse_assignment(text: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is read as a TOML value, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"optim.lr": 0.1}`` into ``{"optim": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key {key!r} goes below a value that is not a section")
        node[leaf] = value
    return out


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dump_toml(tree: dict[str, Any]) -> str:
    """Write a two-level configuration tree as TOML (the format ``--config`` reads)."""
    # TOML has no null: an unset optional value is left out, so reading the file keeps its default.
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items()
             if not isinstance(v, dict) and v is not None]
    for section, values in tree.items():
        if isinstance(values, dict):
            lines.append("")
            lines.append(f'[{section}]' if section.replace("_", "").replace("-", "").isalnum()
                         else f'["{section}"]')
            lines.extend(f"{k} = {_toml_value(val)}" for k, val in flatten(values).items()
                         if val is not None)
    return "\n".join(lines) + "\n"


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.loads(fh.read().decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {str(path)!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is a directory") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is not UTF-8 text (byte "
                          f"{exc.start}); save it as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {str(path)!r} is not valid TOML: {exc}") from exc


PLUGINS_KEY = "plugins"
"""The top-level key of a configuration file that holds the plugin selection, in order."""


def plugins_in_file(path: str | Path) -> list[str]:
    """The plugin selection a configuration file records (``plugins = [...]``), or []."""
    selection = read_toml(path).get(PLUGINS_KEY, [])
    if not isinstance(selection, list) or not all(isinstance(p, str) for p in selection):
        raise ConfigError(f"configuration file {str(path)!r}: {PLUGINS_KEY} must be a list of "
                          f"plugin names, not {selection!r}")
    return selection
