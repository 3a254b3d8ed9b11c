"""Plugin discovery, registration, validation and the ``ltrun plugins`` listing."""

import types

import pytest

from ltcore import __version__, hookimpl
from ltcore.errors import PluginError
from ltcore.plugins import Plugins

BASELINES = ("ce", "la", "balanced-softmax", "supcon")


def plugin(**hooks):
    """A plugin object with the given hook implementations."""
    module = types.ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_builtin_baselines_and_components_are_registered():
    plugins = Plugins()
    for name in BASELINES:
        assert name in plugins.available()
        assert plugins.info[name].builtin
    assert plugins.component("loss", "la-ce").plugin == "la"
    assert plugins.component("dataset", "digits-lt").plugin == "core"
    assert plugins.component("backbone", "resnet32").plugin == "core"
    assert [a.name for a in plugins.options["la"].__attrs_attrs__] == ["tau", "weight"]


def test_component_name_clash_names_both_plugins():
    clash = plugin(register_losses=lambda register: register("la-ce", lambda run: None))
    with pytest.raises(PluginError, match=r"'la'.*'mine'"):
        Plugins(extra={"mine": clash})


def test_unknown_hook_is_an_error_naming_the_plugin():
    bad = plugin(registr_losses=lambda register: None)
    with pytest.raises(PluginError, match="typo-plugin"):
        Plugins(extra={"typo-plugin": bad})


def test_hook_with_wrong_arguments_is_an_error():
    bad = plugin(setup_run=lambda runn: None)
    with pytest.raises(PluginError, match="wrongargs"):
        Plugins(extra={"wrongargs": bad})


def test_broken_registration_disables_only_that_plugin():
    def explode(register):
        raise RuntimeError("boom")

    plugins = Plugins(extra={"broken": plugin(register_losses=explode)})
    assert "boom" in plugins.info["broken"].error
    assert "broken" not in plugins.available()
    with pytest.raises(PluginError, match="broken.*boom"):
        plugins.select(["broken"])
    assert plugins.select(["la"]) == ["la"]


def test_unknown_plugin_lists_installed_names():
    with pytest.raises(PluginError) as info:
        Plugins().select(["nope"])
    message = str(info.value)
    assert "nope" in message and "la" in message


def test_run_hooks_reach_only_selected_plugins():
    calls = []
    a = plugin(run_start=lambda run: calls.append("a"))
    b = plugin(run_start=lambda run: calls.append("b"))
    plugins = Plugins(extra={"a": a, "b": b})
    plugins.for_run(["a"]).hook.run_start(run=None)
    assert calls == ["a"]


def test_ltrun_plugins_lists_baselines_with_components(ltrun):
    result = ltrun("plugins")
    assert result.exit_code == 0, result.stderr
    for name in BASELINES:
        assert f"\n{name} {__version__} (built-in; ltcore =={__version__})" in "\n" + result.output
    assert "loss: la-ce" in result.output


def test_ltrun_plugins_options_shows_tau(ltrun):
    result = ltrun("plugins", "--options", "la")
    assert result.exit_code == 0
    assert "la.tau (float, default 1.0)" in result.output


def test_unknown_plugin_cli_error_is_one_paragraph(ltrun):
    result = ltrun("--plugin", "nope")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: unknown plugin 'nope'")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_assembly_runs_in_plugin_order_and_composition_after_every_setup(order):
    calls = []
    a = plugin(setup_run=lambda run: calls.append("setup a"),
               compose_run=lambda run: calls.append("compose a"))
    b = plugin(setup_run=lambda run: calls.append("setup b"),
               compose_run=lambda run: calls.append("compose b"))
    hooks = Plugins(extra={"a": a, "b": b}).for_run(order).hook
    hooks.setup_run(run=None)
    hooks.compose_run(run=None)
    assert calls == [f"setup {n}" for n in order] + [f"compose {n}" for n in order]
