"""The hook reference (``docs/plugins/hooks.md``), generated from :mod:`ltcore.hookspecs`, and
the comparison of hook signatures behind the hook-spec compatibility policy.

``python -m ltcore.hookdocs`` writes the page; ``python -m ltcore.hookdocs --check`` exits 1
when it is stale.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

from . import hookspecs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "hooks.md"
"""The generated page, relative to the repository root."""

FAMILIES = {
    "registration": "Registration hooks",
    "run assembly": "Run assembly hooks",
    "run time": "Run-time hooks",
    "lifecycle": "Lifecycle hooks",
}
"""Section titles, by the ``# -- name ---`` comment that opens each family in hookspecs.py."""

_SEPARATOR = re.compile(r"^# -- (.+?) -+$")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc):`(~?)([^`]+)`")
_SPEC_ATTRIBUTE = hookspecs.hookspec.project_name + "_spec"
"""Where pluggy's ``HookspecMarker`` stores a spec's options (``firstresult``, ``warn_on_impl``)."""


def hook_families(module: ModuleType = hookspecs) -> list[tuple[str, list]]:
    """The hook specs of ``module`` as ``(section title, [spec functions])``, in source order.

    A spec belongs to the family whose separator comment precedes it; a spec defined elsewhere
    or above every separator, and a separator not in :data:`FAMILIES`, are errors.
    """
    source = inspect.getsourcefile(module)
    lines, _ = inspect.getsourcelines(module)
    separators = []
    for number, line in enumerate(lines, start=1):
        match = _SEPARATOR.match(line.rstrip())
        if match:
            if match.group(1) not in FAMILIES:
                raise ValueError(f"{source}:{number}: unknown hook family {match.group(1)!r}; "
                                 f"known: {', '.join(FAMILIES)}")
            separators.append((number, FAMILIES[match.group(1)]))
    specs = [getattr(module, name) for name in dir(module)
             if hasattr(getattr(module, name), _SPEC_ATTRIBUTE)]
    families: dict[str, list] = {title: [] for _, title in separators}
    for function in sorted(specs, key=lambda f: f.__code__.co_firstlineno):
        first = function.__code__.co_firstlineno
        above = [title for number, title in separators if number < first]
        if inspect.getsourcefile(function) != source or not above:
            raise ValueError(f"hook spec {function.__name__} is not under a family comment "
                             f"(# -- name ---) of {source}")
        families[above[-1]].append(function)
    return [(title, functions) for title, functions in families.items() if functions]


def _markdown(text: str) -> str:
    """RST docstring text as Markdown: literals and roles as code, definition lists as bold
    terms leading their paragraph."""
    text = _ROLE.sub(lambda m: f"``{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}``", text)
    text = _LITERAL.sub(r"`\1`", text)
    blocks = []
    for block in text.split("\n\n"):
        term, _, body = block.partition("\n")
        if body and not term.startswith(" ") and body.startswith("    "):
            block = f"**{term}.**\n{inspect.cleandoc(body)}"
        blocks.append(block)
    return "\n\n".join(blocks)


def _signature(function) -> str:
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        text = parameter.name
        if parameter.annotation is not parameter.empty:
            text += f": {parameter.annotation}"
        if parameter.default is not parameter.empty:
            text += f" = {parameter.default!r}"
        parameters.append(text)
    returns = function.__annotations__.get("return")
    return f"{function.__name__}({', '.join(parameters)})" + (f" -> {returns}" if returns else "")


def _hook_section(function) -> str:
    options = getattr(function, _SPEC_ATTRIBUTE)
    parts = [f"### `{function.__name__}`", f"```python\n{_signature(function)}\n```"]
    flags = [f"`{flag}`" for flag in ("firstresult", "historic") if options.get(flag)]
    if flags:
        parts.append(f"Options: {', '.join(flags)}.")
    if options.get("warn_on_impl"):
        parts.append(f"**Deprecated:** {options['warn_on_impl']}")
    for name, warning in sorted((options.get("warn_on_impl_args") or {}).items()):
        parts.append(f"**Deprecated argument `{name}`:** {warning}")
    parts.append(_markdown(inspect.getdoc(function) or ""))
    return "\n\n".join(parts)


def render_hook_reference(module: ModuleType = hookspecs) -> str:
    """The Markdown text of ``docs/plugins/hooks.md`` (the reference of ``module``'s specs)."""
    parts = ["# Hook reference",
             "Generated from `ltcore/hookspecs.py` by `python -m ltcore.hookdocs`; do not edit.",
             _markdown(inspect.getdoc(module) or "")]
    for title, functions in hook_families(module):
        parts.append(f"## {title}")
        parts.extend(_hook_section(function) for function in functions)
    return "\n\n".join(parts) + "\n"


def hook_signatures(module: ModuleType = hookspecs) -> dict[str, dict]:
    """Every hook spec of ``module`` by name: its ``args`` in order, their ``annotations``,
    ``returns`` (the return annotation), whether it is ``deprecated`` and its
    ``deprecated_args``."""
    signatures = {}
    for _, functions in hook_families(module):
        for function in functions:
            options = getattr(function, _SPEC_ATTRIBUTE)
            annotations = dict(function.__annotations__)
            signatures[function.__name__] = {
                "args": list(inspect.signature(function).parameters),
                "returns": annotations.pop("return", None),
                "annotations": annotations,
                "deprecated": options.get("warn_on_impl") is not None,
                "deprecated_args": sorted(options.get("warn_on_impl_args") or {}),
            }
    return signatures


def signature_changes(recorded: dict[str, dict],
                      current: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Compare hook signatures (``args``, ``returns``, ``deprecated``, ``deprecated_args`` per
    hook) with recorded ones: ``(breaking, unrecorded)``.

    Breaking: a hook or an argument removed without having been recorded as deprecated (a
    renamed argument is a removal plus an addition), a changed return annotation. Unrecorded:
    compatible changes the record does not state yet (new hooks and arguments, deprecations,
    removals of deprecated hooks and arguments, reordered arguments).
    """
    breaking, unrecorded = [], []
    for name in sorted(recorded.keys() - current.keys()):
        if recorded[name]["deprecated"]:
            unrecorded.append(f"hook {name} was removed (it was deprecated)")
        else:
            breaking.append(f"hook {name} was removed without being deprecated first")
    for name in sorted(current.keys() - recorded.keys()):
        unrecorded.append(f"hook {name} is new")
    for name in sorted(recorded.keys() & current.keys()):
        old, new = recorded[name], current[name]
        added = [arg for arg in new["args"] if arg not in old["args"]]
        removed = [arg for arg in old["args"] if arg not in new["args"]]
        for arg in removed:
            if arg in old["deprecated_args"]:
                unrecorded.append(f"{name}: argument {arg} was removed (it was deprecated)")
            else:
                rename = (f" (renaming it to {', '.join(added)} is a removal plus an addition)"
                          if added else "")
                breaking.append(f"{name}: argument {arg} was removed without being deprecated "
                                f"first{rename}")
        unrecorded.extend(f"{name}: argument {arg} is new" for arg in added)
        if not added and not removed and old["args"] != new["args"]:
            unrecorded.append(f"{name}: arguments reordered to {new['args']}")
        if old["returns"] != new["returns"]:
            breaking.append(f"{name}: return annotation changed from {old['returns']!r} to "
                            f"{new['returns']!r}")
        if old["deprecated"] != new["deprecated"]:
            state = "deprecated" if new["deprecated"] else "no longer deprecated"
            unrecorded.append(f"hook {name} is {state}")
        for arg in sorted(set(new["deprecated_args"]) - set(old["deprecated_args"])):
            unrecorded.append(f"{name}: argument {arg} is deprecated")
        for arg in sorted(set(old["deprecated_args"]) - set(new["deprecated_args"])):
            if arg in new["args"]:
                unrecorded.append(f"{name}: argument {arg} is no longer deprecated")
    return breaking, unrecorded


def main(argv: list[str] | None = None) -> int:
    """Write ``docs/plugins/hooks.md`` and print its path; with ``--check``, exit 1 when the
    page differs from what would be written."""
    parser = argparse.ArgumentParser(prog="python -m ltcore.hookdocs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the page is stale")
    args = parser.parse_args(argv)
    text = render_hook_reference()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is stale: run `python -m ltcore.hookdocs`", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    print(PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
