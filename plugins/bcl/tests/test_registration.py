"""The installed bcl distribution is found through its entry point and listed by ltrun."""

from ltcore import PluginError, Plugins


def test_entry_point_plugins_are_found():
    plugins = Plugins()
    assert plugins.info["bcl"].distribution == "ltcore-bcl"
    assert not plugins.info["bcl"].builtin


def test_unknown_plugin_lists_installed_names():
    try:
        Plugins().select(["nope"])
    except PluginError as exc:
        message = str(exc)
    assert "nope" in message and "bcl" in message and "la" in message


def test_ltrun_plugins_lists_entry_point_plugins(ltrun):
    result = ltrun("plugins")
    assert result.exit_code == 0, result.stderr
    assert "bcl 0.1.0 (ltcore-bcl; ltcore >=1.0,<2)" in result.output
