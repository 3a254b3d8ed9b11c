"""``ltrun new-plugin``: the distribution it writes installs, passes its own tests, is listed by
``ltrun plugins`` and composes with RCL, in a fresh environment."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet

from ltcore import __version__
from ltcore.scaffold import supported_range, write_plugin


def test_a_new_plugin_installs_passes_its_tests_and_composes(author_environment):
    env = author_environment
    env.run("ltrun new-plugin demo")
    env.run("pip install -e ltcore-demo")
    tests = env.run("pytest -q -p no:cacheprovider ltcore-demo/tests")
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    listed = env.run("ltrun plugins").stdout
    assert f"demo 0.1.0 (ltcore-demo; ltcore {supported_range()})" in listed
    if not _rcl_installed():
        pytest.skip("ltcore-rcl is not installed: the composed run needs it")
    composed = env.run("ltrun --plugin demo --plugin rcl --epochs 1 --no-progress "
                       "--set model.backbone=resnet8").stdout
    assert "finished (demo+rcl-digits-lt-s0-" in composed


def _rcl_installed() -> bool:
    from importlib import metadata

    return any(ep.name == "rcl" for ep in metadata.entry_points(group="ltcore"))


def test_the_range_is_this_minor_release_up_to_the_next_major():
    assert supported_range("1.0.0") == ">=1.0,<2"
    assert supported_range("1.4.2") == ">=1.4,<2"
    assert __version__ in SpecifierSet(supported_range())


def test_names_and_folders_are_checked(tmp_path, ltrun):
    from ltcore.errors import ConfigError

    for bad in ("Demo", "my_method", "1st", "a--b", "-a"):
        with pytest.raises(ConfigError, match="lowercase letters and digits"):
            write_plugin(bad, tmp_path)
    with pytest.raises(ConfigError, match="already installed"):
        write_plugin("ce", tmp_path, taken={"ce"})
    folder = write_plugin("two-words", tmp_path)
    assert (folder / "ltcore_two_words" / "plugin.py").is_file()
    assert 'two-words = "ltcore_two_words.plugin"' in (folder / "pyproject.toml").read_text()
    result = ltrun("new-plugin", "two-words", "--dir", str(tmp_path))
    assert result.exit_code == 2 and "already exists" in result.stderr
    taken = ltrun("new-plugin", "crt")
    assert taken.exit_code == 2 and "a plugin named 'crt' is already installed" in taken.stderr


def test_every_template_placeholder_is_filled(tmp_path):
    folder = write_plugin("demo", tmp_path)
    for path in folder.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(), path
            assert not path.name.endswith(".tmpl"), path
