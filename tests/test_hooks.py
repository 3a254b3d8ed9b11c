"""Every hook spec earns its place: the core calls each one, with the arguments the spec names,
and each is implemented by a built-in, a method plugin or the example plugin."""

import ast
from pathlib import Path

import click
import pytest
import torch

import ltcore.hookspecs as specs
from ltcore import hookimpl
from ltcore.config import resolve
from ltcore.engine.runs import train
from ltcore.errors import LtcoreError
from ltcore.plugins import Plugins
from ltcore.testing import FAST_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(name for name in dir(specs) if hasattr(getattr(specs, name), "ltcore_spec"))


class Spy:
    """Implements every hook and records the calls (registration hooks register nothing)."""

    def __init__(self, fail_at_epoch_end: bool = False):
        self.calls: dict[str, list] = {}
        self.fail_at_epoch_end = fail_at_epoch_end

    def seen(self, name, **arguments):
        self.calls.setdefault(name, []).append(arguments)


def _make_hook(name):
    parameters = [p for p in getattr(specs, name).__code__.co_varnames[
        :getattr(specs, name).__code__.co_argcount]]
    namespace = {}
    source = (f"def {name}(self, {', '.join(parameters)}):\n"
              f"    self.seen({name!r}, {', '.join(f'{p}={p}' for p in parameters)})\n")
    exec(source, namespace)  # noqa: S102 - the signature must match the spec's names
    return hookimpl(namespace[name])


for _name in SPECS:
    setattr(Spy, _name, _make_hook(_name))


def _epoch_end(self, run, stage, epoch, metrics):
    self.seen("epoch_end", run=run, stage=stage, epoch=epoch, metrics=metrics)
    if self.fail_at_epoch_end:
        raise RuntimeError("the spy stops this run")


Spy.epoch_end = hookimpl(_epoch_end)


def settings(plugins, selected, tmp_path, *assignments):
    return resolve(plugins, selected, assignments=[
        *FAST_SETTINGS, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"output={tmp_path}/runs",
        "device=cpu", *assignments], overrides={"epochs": 1})


def test_the_core_calls_every_hook(tmp_path):
    spy = Spy()
    plugins = Plugins(extra={"spy": spy})
    plugins.pm.hook.register_commands(cli=click.Group())
    selected = ["supcon", "crt", "spy"]
    result = train(plugins, selected, settings(plugins, selected, tmp_path, "crt.epochs=1"),
                   progress=False)
    failing = Spy(fail_at_epoch_end=True)
    plugins = Plugins(extra={"spy": failing})
    with pytest.raises(RuntimeError, match="the spy stops"):
        train(plugins, ["ce", "spy"], settings(plugins, ["ce", "spy"], tmp_path), progress=False)

    called = set(spy.calls) | set(failing.calls)
    assert called == set(SPECS), f"never called: {sorted(set(SPECS) - called)}"
    # the arguments are what the specs say
    (failed,) = failing.calls["run_failed"]
    assert isinstance(failed["error"], RuntimeError)
    assert "run_failed" not in spy.calls
    stages = [c["stage"].name for c in spy.calls["stage_start"]]
    assert stages == ["train", "classifier"] == [c["stage"].name for c in spy.calls["stage_end"]]
    groups = spy.calls["adjust_parameter_groups"]
    assert [c["stage"].name for c in groups] == stages and all(c["groups"] for c in groups)
    evaluations = spy.calls["adjust_eval_logits"]
    assert {"val", "test"} <= set(evaluations[-1]["evaluation"].outputs)
    assert evaluations[-1]["evaluation"].final
    bias = spy.calls["contrastive_logit_bias"][0]["contrast"]
    assert bias.term.name == "supcon" and bias.anchor_labels.ndim == 1
    step = spy.calls["adjust_classifier_logits"][0]["step"]
    assert "cls" in step.logits and isinstance(step.logits["cls"], torch.Tensor)
    assert spy.calls["setup_run"][0]["run"] is spy.calls["compose_run"][0]["run"]
    assert "val/acc" in result.metrics


def implemented_hooks(folder: Path) -> dict[str, list[str]]:
    """Hook name -> the files that implement it (``@hookimpl`` functions and methods)."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*.py"):
        if "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if getattr(target, "id", None) == "hookimpl":
                    found.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_hook_is_implemented_by_a_builtin_a_method_or_the_example():
    if not (ROOT / "plugins").is_dir():
        pytest.skip("plugins/ is not in this copy; test_the_core_calls_every_hook exercises "
                    "every hook with a test plugin")
    implemented: dict[str, list[str]] = {}
    for folder in (ROOT / "ltcore" / "builtin", ROOT / "plugins", ROOT / "examples"):
        for name, files in implemented_hooks(folder).items():
            implemented.setdefault(name, []).extend(files)
    missing = [name for name in SPECS if name not in implemented]
    assert not missing, f"hook specs without an implementation: {missing}"
    unknown = sorted(set(implemented) - set(SPECS))
    assert not unknown, f"implementations of hooks that do not exist: {unknown}"


class Misspelt:
    @hookimpl
    def epoch_ende(self, run, stage, epoch, metrics):
        pass


class WrongArguments:
    @hookimpl
    def epoch_end(self, run, stage, epoch, metric):
        pass


@pytest.mark.parametrize("name, obj", [("misspelt", Misspelt()),
                                       ("wrong-arguments", WrongArguments())])
def test_a_run_plugin_object_with_an_invalid_hook_is_refused(tmp_path, name, obj):
    from ltcore.engine.runs import prepare

    plugins = Plugins()
    run = prepare(plugins, ["ce"], settings(plugins, ["ce"], tmp_path))
    with pytest.raises(LtcoreError, match=name):
        run.register(obj, name)
    assert name not in run.run_plugins.objects
