"""The generated hook reference (docs/plugins/hooks.md) is current and covers every hook."""

import importlib.util
import inspect
from pathlib import Path

import pluggy
import pytest

import ltcore.hookspecs as hookspecs
from ltcore.hookdocs import PAGE, hook_families, render_hook_reference

SPECS = [function for _, functions in hook_families() for function in functions]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.__name__)
def test_every_hook_spec_has_a_docstring(spec):
    assert len(inspect.getdoc(spec) or "") >= 20, f"{spec.__name__} needs a docstring"


def test_hook_reference_is_current():
    assert PAGE.read_text(encoding="utf-8") == render_hook_reference(), (
        "docs/plugins/hooks.md is stale: run `python -m ltcore.hookdocs`")


def test_hook_reference_names_every_hook_pluggy_knows():
    manager = pluggy.PluginManager("ltcore")
    manager.add_hookspecs(hookspecs)
    text = PAGE.read_text(encoding="utf-8")
    hooks = sorted(manager.hook.__dict__)
    assert len(hooks) == len(SPECS) > 20
    for name in hooks:
        assert f"### `{name}`" in text, name


def test_every_spec_lands_in_one_family():
    names = [spec.__name__ for spec in SPECS]
    assert len(names) == len(set(names))
    assert [title for title, _ in hook_families()] == [
        "Registration hooks", "Run assembly hooks", "Run-time hooks", "Lifecycle hooks"]


def load(path: Path, source: str):
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEADER = 'import pluggy\n\nhookspec = pluggy.HookspecMarker("ltcore")\n\n'


def test_a_spec_outside_every_family_is_an_error(tmp_path):
    module = load(tmp_path / "specs_above.py", HEADER + (
        "@hookspec\ndef orphan(run):\n    '''Above every family.'''\n\n\n"
        "# -- lifecycle ---\n\n\n@hookspec\ndef run_end(run):\n    '''The end.'''\n"))
    with pytest.raises(ValueError, match="orphan is not under a family comment"):
        hook_families(module)


def test_an_unknown_family_is_an_error(tmp_path):
    module = load(tmp_path / "specs_unknown.py", HEADER + (
        "# -- extras ---\n\n\n@hookspec\ndef extra(run):\n    '''An extra.'''\n"))
    with pytest.raises(ValueError, match="unknown hook family 'extras'"):
        hook_families(module)
