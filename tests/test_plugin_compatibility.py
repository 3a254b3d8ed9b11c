"""Plugins built for another ltcore, and plugins switched off: both are listed, neither is
imported, and the rest of ltrun works."""

from __future__ import annotations

import sys

import pytest

from ltcore import __version__
from ltcore.plugins import Plugins, supported_core_versions

PLUGIN = '''
from ltcore import hookimpl

@hookimpl
def setup_run(run):
    pass
'''


def install_fake_plugin(site, name: str, requires: str | None) -> str:
    """A distribution ``ltcore-<name>`` 0.3 on ``site`` with an ``ltcore`` entry point ``name``,
    requiring ``ltcore<requires>``; its module's name."""
    module = f"ltcore_{name}_plugin"
    (site / f"{module}.py").write_text(PLUGIN)
    info = site / f"ltcore_{name}-0.3.dist-info"
    info.mkdir(parents=True)
    requirement = f"Requires-Dist: ltcore{requires}\n" if requires is not None else ""
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ltcore-{name}\nVersion: 0.3\n"
                                   f"{requirement}")
    (info / "entry_points.txt").write_text(f"[ltcore]\n{name} = {module}\n")
    return module


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_a_plugin_for_another_core_is_named_with_both_versions_and_not_imported(site, ltrun):
    module = install_fake_plugin(site, "old", "<1.0,>=0.1")
    listed = ltrun("plugins")
    assert listed.exit_code == 0, listed.stderr
    assert "old 0.3 (ltcore-old; ltcore >=0.1,<1.0)" in listed.output
    expected = f"it supports ltcore >=0.1,<1.0, and this is ltcore {__version__}"
    assert expected in listed.output and expected in listed.stderr  # listed, and warned
    selected = ltrun("--plugin", "old", "--print-config")
    assert selected.exit_code == 2
    assert expected in selected.stderr and "--disable-plugin old" in selected.stderr
    assert module not in sys.modules
    others = ltrun("--plugin", "ce", "--plugin", "crt", "--print-config")
    assert others.exit_code == 0 and others.output.startswith('plugins = ["ce", "crt"]')


def test_a_compatible_plugin_loads_and_shows_its_range_and_hooks(site, ltrun):
    install_fake_plugin(site, "fits", f">={__version__}")
    listed = ltrun("plugins")
    assert listed.exit_code == 0, listed.stderr
    assert f"fits 0.3 (ltcore-fits; ltcore >={__version__})\n    hooks: setup_run\n" \
        in listed.output
    assert "fits" in Plugins().available()


def test_a_plugin_without_a_range_loads_and_says_so(site, ltrun):
    install_fake_plugin(site, "loose", None)
    listed = ltrun("plugins")
    assert "loose 0.3 (ltcore-loose; no ltcore range declared)" in listed.output
    assert "loose" in Plugins().available()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_plugin_switched_off_is_listed_but_not_imported(site, ltrun, monkeypatch, how):
    module = install_fake_plugin(site, "broken", "<1.0")
    (site / f"{module}.py").write_text("raise RuntimeError('this plugin is broken')\n")
    if how == "option":
        args = ["--disable-plugin", "broken"]
    else:
        monkeypatch.setenv("LTCORE_DISABLE_PLUGINS", "broken, ")
        args = []
    listed = ltrun(*args, "plugins")
    assert listed.exit_code == 0 and listed.stderr == ""  # no warning for a plugin turned off
    assert "broken 0.3 (ltcore-broken; ltcore <1.0)\n    switched off" in listed.output
    selected = ltrun(*args, "--plugin", "broken", "--print-config")
    assert selected.exit_code == 2 and "plugin 'broken' (ltcore-broken) is switched off" \
        in selected.stderr
    assert module not in sys.modules


def test_switching_off_a_name_nothing_installs_is_an_error(ltrun):
    result = ltrun("--disable-plugin", "nothing", "plugins")
    assert result.exit_code == 2
    assert "cannot switch off nothing" in result.stderr
    assert "built-in plugins cannot be switched off" in result.stderr


def test_the_range_comes_from_the_requirement_on_ltcore_alone():
    class Distribution:
        requires = ["torch>=2", "ltcore<2,>=1.0", "ltcore==0.1; python_version < '3'"]

    assert supported_core_versions(Distribution()) == ">=1.0,<2"
    assert supported_core_versions(None) == ""
