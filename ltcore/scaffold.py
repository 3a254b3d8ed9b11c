"""``ltrun new-plugin``: a new plugin distribution from the template in ``templates/plugin``."""

from __future__ import annotations

import re
from pathlib import Path

from . import __version__
from .errors import ConfigError

TEMPLATE = Path(__file__).parent / "templates" / "plugin"
NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def supported_range(version: str = __version__) -> str:
    """The ltcore versions a new plugin declares: this minor release up to the next major one
    (``>=1.0,<2`` for 1.0.0), the versions whose hook specs only gain arguments."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return f">={major}.{minor},<{major + 1}"


def write_plugin(name: str, directory: str | Path = ".", taken: set[str] = frozenset()) -> Path:
    """Write the distribution ``ltcore-<name>`` under ``directory``: pyproject with the entry
    point and the supported ltcore range, the package ``ltcore_<name>`` (options, a loss term,
    a preset, ``setup_run``), a README and tests using ``ltcore.testing``. Returns its folder.
    ``taken`` are plugin names already installed, which would clash."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"plugin name {name!r}: use lowercase letters and digits, words "
                          "joined by '-' (e.g. 'my-method')")
    if name in taken:
        raise ConfigError(f"a plugin named {name!r} is already installed; choose another name")
    module = "ltcore_" + name.replace("-", "_")
    target = Path(directory) / f"ltcore-{name}"
    if target.exists():
        raise ConfigError(f"{str(target)!r} already exists; remove it or choose --dir")
    values = {"name": name, "module": module, "supported": supported_range(),
              "title": name.replace("-", " ").title()}
    for source in sorted(p for p in TEMPLATE.rglob("*") if p.is_file()):
        relative = source.relative_to(TEMPLATE)
        parts = [module if part == "package" else part for part in relative.parts]
        destination = target.joinpath(*parts).with_name(parts[-1].removesuffix(".tmpl"))
        text = source.read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text)
    return target
