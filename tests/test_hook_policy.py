"""The hook-spec compatibility policy: specs only gain hooks and arguments; a hook or an
argument is removed only after a release in which it was deprecated (pluggy's
``warn_on_impl`` / ``warn_on_impl_args``). ``hook_signatures.json`` records the current specs;
re-record it with ``LTCORE_RECORD_HOOKS=1 pytest tests/test_hook_policy.py``."""

import importlib.util
import json
import os
from pathlib import Path

import pluggy
import pytest

from ltcore.hookdocs import hook_signatures, render_hook_reference, signature_changes

RECORD = Path(__file__).with_name("hook_signatures.json")
RECORDED_KEYS = ("args", "returns", "deprecated", "deprecated_args")
RERECORD = "re-record with `LTCORE_RECORD_HOOKS=1 pytest tests/test_hook_policy.py`"


def test_hook_specs_stay_compatible_with_the_record():
    """Checked before recording, so recording never makes a removal look compatible."""
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    current = {name: {key: signature[key] for key in RECORDED_KEYS}
               for name, signature in hook_signatures().items()}
    breaking, unrecorded = signature_changes(recorded, current)
    assert not breaking, ("hook specs changed incompatibly (deprecate first, remove a release "
                          "later):\n" + "\n".join(breaking))
    if os.environ.get("LTCORE_RECORD_HOOKS") == "1":
        RECORD.write_text(json.dumps(current, sort_keys=True, indent=1) + "\n",
                          encoding="utf-8")
    else:
        assert not unrecorded, (f"{RECORD.name} does not record these changes ({RERECORD}):\n"
                                + "\n".join(unrecorded))


def hook(*args, returns="None", deprecated=False, deprecated_args=()):
    return {"args": list(args), "returns": returns, "deprecated": deprecated,
            "deprecated_args": list(deprecated_args)}


RECORDED = {"stage_end": hook("run", "stage"),
            "epoch_end": hook("run", "epoch", deprecated_args=["epoch"]),
            "old_hook": hook("run", deprecated=True)}


def changed(**hooks):
    """``RECORDED`` with some hooks replaced (or removed, given None)."""
    current = {**RECORDED, **hooks}
    return signature_changes(RECORDED, {name: h for name, h in current.items() if h})


def test_unchanged_specs_are_neither_breaking_nor_unrecorded():
    assert signature_changes(RECORDED, RECORDED) == ([], [])


@pytest.mark.parametrize(("hooks", "breaking", "unrecorded"), [
    ({"stage_end": hook("run")},
     ["stage_end: argument stage was removed without being deprecated first"], []),
    ({"epoch_end": hook("run")}, [], ["epoch_end: argument epoch was removed (it was deprecated)"]),
    ({"stage_end": hook("run", "phase")},
     ["stage_end: argument stage was removed without being deprecated first (renaming it to "
      "phase is a removal plus an addition)"], ["stage_end: argument phase is new"]),
    ({"stage_end": hook("run", "stage", "metrics")}, [], ["stage_end: argument metrics is new"]),
    ({"new_hook": hook("step")}, [], ["hook new_hook is new"]),
    ({"stage_end": None}, ["hook stage_end was removed without being deprecated first"], []),
    ({"old_hook": None}, [], ["hook old_hook was removed (it was deprecated)"]),
    ({"stage_end": hook("run", "stage", returns="bool")},
     ["stage_end: return annotation changed from 'None' to 'bool'"], []),
    ({"stage_end": hook("run", "stage", deprecated=True)}, [], ["hook stage_end is deprecated"]),
    ({"stage_end": hook("run", "stage", deprecated_args=["stage"])}, [],
     ["stage_end: argument stage is deprecated"]),
    ({"stage_end": hook("stage", "run")}, [],
     ["stage_end: arguments reordered to ['stage', 'run']"]),
], ids=["removed-arg", "removed-deprecated-arg", "renamed-arg", "new-arg", "new-hook",
        "removed-hook", "removed-deprecated-hook", "changed-return", "deprecated-hook",
        "deprecated-arg", "reordered-args"])
def test_signature_changes(hooks, breaking, unrecorded):
    assert changed(**hooks) == (breaking, unrecorded)


DEPRECATED_SPECS = '''
"""Specs with deprecations."""

import pluggy

hookspec = pluggy.HookspecMarker("ltcore")


# -- lifecycle ---


@hookspec(warn_on_impl=DeprecationWarning("use stage_end"))
def old_end(run) -> None:
    """The old end of a stage."""


@hookspec(warn_on_impl_args={"epoch": DeprecationWarning("epoch is run.epoch")})
def epoch_end(run, epoch) -> None:
    """An epoch ended."""
'''


def test_deprecation_uses_pluggys_markers(tmp_path):
    """The record and the reference see pluggy's deprecations, and pluggy warns an
    implementation that still uses a deprecated hook or argument."""
    path = tmp_path / "deprecated_specs.py"
    path.write_text(DEPRECATED_SPECS)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    specs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(specs)
    signatures = hook_signatures(specs)
    assert (signatures["old_end"]["deprecated"], signatures["old_end"]["deprecated_args"]) == (
        True, [])
    assert (signatures["epoch_end"]["deprecated"], signatures["epoch_end"]["deprecated_args"]) == (
        False, ["epoch"])
    text = render_hook_reference(specs)
    assert "**Deprecated:** use stage_end" in text
    assert "**Deprecated argument `epoch`:** epoch is run.epoch" in text

    class Plugin:
        @pluggy.HookimplMarker("ltcore")
        def epoch_end(self, run, epoch):
            pass

        @pluggy.HookimplMarker("ltcore")
        def old_end(self, run):
            pass

    manager = pluggy.PluginManager("ltcore")
    manager.add_hookspecs(specs)
    with pytest.warns(DeprecationWarning) as warnings:
        manager.register(Plugin())
    assert sorted(str(w.message) for w in warnings) == ["epoch is run.epoch", "use stage_end"]
