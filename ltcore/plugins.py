"""Finding, loading and registering plugins.

Installed plugins come from the ``ltcore`` entry-point group; the built-in ones (the core's
datasets, models, views and the baseline methods) are registered the same way from
``BUILTIN_PLUGINS``. :class:`Plugins` loads them all, validates their hooks, and collects their
components, options, presets and reference results; :class:`RunPlugins` is the plugin manager of
one run: the core, the plugins it selected and the plugin objects it registers.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata
from typing import Any, Callable

import attrs
import pluggy

from . import __version__, hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "ltcore"

DISABLE_ENV = "LTCORE_DISABLE_PLUGINS"
"""Environment variable naming installed plugins to leave unloaded, separated by commas."""

CORE = "core"
"""Name of the built-in plugin that provides datasets, models, views, samplers and metrics."""

BUILTIN_PLUGINS = {
    CORE: "ltcore.builtin.core",
    "ce": "ltcore.builtin.ce",
    "la": "ltcore.builtin.la",
    "balanced-softmax": "ltcore.builtin.balanced_softmax",
    "supcon": "ltcore.builtin.supcon",
    "focal": "ltcore.builtin.focal",
    "cb": "ltcore.builtin.cb",
    "ldam-drw": "ltcore.builtin.ldam_drw",
    "kcl": "ltcore.builtin.kcl",
    "crt": "ltcore.builtin.crt",
    "tau-norm": "ltcore.builtin.tau_norm",
    "lws": "ltcore.builtin.lws",
    "experiments": "ltcore.builtin.experiments",
}

COMPONENT_HOOKS = {
    "dataset": "register_datasets",
    "backbone": "register_backbones",
    "head": "register_heads",
    "view": "register_views",
    "sampler": "register_samplers",
    "loss": "register_losses",
    "memory-bank": "register_memory_banks",
    "prototype-provider": "register_prototype_providers",
    "rebalancer": "register_rebalancers",
    "metric": "register_metrics",
    "stage": "register_stages",
    "optimizer": "register_optimizers",
}
"""Component kind -> the registration hook that declares components of that kind."""


@attrs.define
class Component:
    """A named thing a plugin registered: a dataset, a loss, a view pipeline, ..."""

    kind: str
    name: str
    obj: Any
    plugin: str
    doc: str = ""


@attrs.define
class Preset:
    """A named recipe of configuration values declared by a plugin."""

    name: str
    plugin: str
    settings: dict
    doc: str = ""


@attrs.define
class PluginInfo:
    """What ``ltrun plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str
    version: str
    builtin: bool
    error: str | None = None
    supports: str = ""
    """The ltcore versions the plugin declares it supports (``>=1.0,<2``), from its
    distribution's requirement on ``ltcore``; empty when it declares none."""
    disabled: bool = False


def supported_core_versions(distribution: metadata.Distribution | None) -> str:
    """The version range of ``ltcore`` that ``distribution`` requires (``">=1.0,<2"``), or ""."""
    from packaging.requirements import Requirement

    for line in (distribution.requires or []) if distribution else []:
        requirement = Requirement(line)
        if requirement.name == "ltcore" and not requirement.marker:  # lower bounds first
            return ",".join(sorted(map(str, requirement.specifier),
                                   key=lambda s: (not s.startswith(">"), s)))
    return ""


def core_mismatch(supports: str) -> str | None:
    """Why this ltcore cannot load a plugin built for ``supports``, or None when it can."""
    from packaging.specifiers import SpecifierSet

    if supports and not SpecifierSet(supports).contains(__version__, prereleases=True):
        return f"it supports ltcore {supports}, and this is ltcore {__version__}"
    return None


def disabled_by_environment() -> set[str]:
    """The plugin names listed in ``LTCORE_DISABLE_PLUGINS``."""
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


class Plugins:
    """All installed plugins with their components, options and presets.

    ``extra`` maps names to plugin objects registered in addition to the installed ones (tests and
    notebooks use it to add a plugin without packaging it). Installed plugins named in
    ``disable`` or in ``LTCORE_DISABLE_PLUGINS`` are listed but not imported; an installed
    plugin whose declared ltcore range excludes this version is not imported either, and
    selecting it says why.
    """

    def __init__(self, extra: dict[str, object] | None = None, disable: tuple[str, ...] = ()):
        self.pm = pluggy.PluginManager("ltcore")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        for name, module in BUILTIN_PLUGINS.items():
            self._load(name, lambda module=module: importlib.import_module(module),
                       module, "ltcore", __version__, builtin=True, supports=f"=={__version__}")
        disabled = set(disable) | disabled_by_environment()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            self._load(ep.name, ep.load, ep.value, dist, version, builtin=False,
                       supports=supported_core_versions(ep.dist), disabled=ep.name in disabled)
        installed = sorted(name for name, info in self.info.items() if not info.builtin)
        unknown = sorted(disabled - set(installed))
        if unknown:
            raise PluginError(f"cannot switch off {', '.join(unknown)} (--disable-plugin or "
                              f"{DISABLE_ENV}): no installed plugin has that name; installed: "
                              f"{', '.join(installed) or 'none'} (built-in plugins cannot be "
                              "switched off)")
        for name, obj in (extra or {}).items():
            self._load(name, lambda obj=obj: obj, repr(obj), "-", "-", builtin=False)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {self._name_of(exc.plugin)!r} implements a hook that "
                              f"does not exist: {exc}") from exc
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in COMPONENT_HOOKS}
        self.options: dict[str, type] = {}
        self.presets: dict[str, dict[str, Preset]] = {}
        self.reference_results: list[dict[str, Any]] = []
        self._collect()

    # -- loading ----------------------------------------------------------------------------

    def _load(self, name: str, load: Callable[[], object], module: str, distribution: str,
              version: str, builtin: bool, supports: str = "", disabled: bool = False) -> None:
        if name in self.info:
            raise PluginError(f"two plugins are named {name!r}: {self.info[name].module} "
                              f"({self.info[name].distribution}) and {module} ({distribution})")
        info = PluginInfo(name, module, distribution, version, builtin, supports=supports,
                          disabled=disabled)
        self.info[name] = info
        if disabled:
            return
        mismatch = core_mismatch(supports)
        if mismatch:
            info.error = (f"{distribution} {version} was built for another ltcore: {mismatch}; "
                          f"install a release of {distribution} that supports ltcore "
                          f"{__version__}, or switch it off with --disable-plugin {name}")
            return
        try:
            self.pm.register(load(), name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} has an invalid hook implementation: {exc}") from exc
        except Exception as exc:  # a broken third-party plugin must not take the CLI down
            info.error = f"{type(exc).__name__}: {exc}"

    def _name_of(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or repr(plugin)

    def _call_each(self, hook_name: str, make_register: Callable[[str], Callable]) -> None:
        """Call ``hook_name`` on every plugin with a ``register`` bound to that plugin's name.

        A third-party plugin whose registration fails is disabled and reported like one that
        failed to import; a failing built-in plugin is a bug and raises.
        """
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            name = impl.plugin_name
            try:
                impl.function(register=make_register(name))
            except PluginError:
                raise
            except Exception as exc:
                if self.info[name].builtin:
                    raise
                self._disable(name, f"{hook_name} raised {type(exc).__name__}: {exc}")

    def _disable(self, name: str, error: str) -> None:
        self.info[name].error = error
        self.pm.unregister(name=name)
        for table in self.components.values():
            for key in [k for k, c in table.items() if c.plugin == name]:
                del table[key]
        self.options.pop(name, None)
        self.presets.pop(name, None)
        self.reference_results = [r for r in self.reference_results if r["plugin"] != name]

    def _collect(self) -> None:
        for kind, hook_name in COMPONENT_HOOKS.items():
            self._call_each(hook_name, lambda plugin, kind=kind: self._component_registrar(kind, plugin))
        self._call_each("register_options", self._options_registrar)
        self._call_each("register_presets", self._preset_registrar)
        self._call_each("register_reference_results", self._reference_registrar)

    def _component_registrar(self, kind: str, plugin: str) -> Callable:
        def register(name: str, obj: Any, doc: str = "") -> None:
            table = self.components[kind]
            if name in table:
                raise PluginError(f"{kind} {name!r} is registered by both plugin "
                                  f"{table[name].plugin!r} and plugin {plugin!r}; uninstall one "
                                  "of them or rename the component")
            table[name] = Component(kind, name, obj, plugin, doc or (obj.__doc__ or "").strip())
        return register

    def _options_registrar(self, plugin: str) -> Callable:
        def register(options_class: type) -> None:
            if not attrs.has(options_class):
                raise PluginError(f"plugin {plugin!r} registered options that are not an attrs class")
            if plugin in self.options:
                raise PluginError(f"plugin {plugin!r} registered its options twice")
            self.options[plugin] = options_class
        return register

    def _preset_registrar(self, plugin: str) -> Callable:
        def register(name: str, settings: dict, doc: str = "") -> None:
            self.presets.setdefault(plugin, {})[name] = Preset(name, plugin, dict(settings), doc)
        return register

    def _reference_registrar(self, plugin: str) -> Callable:
        def register(*, plugins: str, dataset: str, imbalance_factor: float,
                     metrics: dict[str, float], source: str) -> None:
            self.reference_results.append({"plugins": plugins, "dataset": dataset,
                                           "imbalance_factor": imbalance_factor, **metrics,
                                           "source": source, "plugin": plugin})
        return register

    # -- queries ----------------------------------------------------------------------------

    def available(self) -> list[str]:
        """Names of the plugins that can be selected with ``--plugin``: those that take part in
        a run (``setup_run``, run-time or lifecycle hooks). Plugins that only register components
        or commands, such as ``core``, are always on and not selectable."""
        return sorted(name for name, info in self.info.items()
                      if not info.error and not info.disabled and self._takes_part_in_runs(name))

    def _takes_part_in_runs(self, name: str) -> bool:
        plugin = self.pm.get_plugin(name)
        callers = self.pm.get_hookcallers(plugin) or []
        return any(not c.name.startswith("register_") for c in callers)

    def select(self, names: list[str]) -> list[str]:
        """Check the names given with ``--plugin``; raise naming what is installed."""
        for name in names:
            info = self.info.get(name)
            if info is not None and info.disabled:
                raise PluginError(f"plugin {name!r} ({info.distribution}) is switched off "
                                  f"(--disable-plugin or {DISABLE_ENV}); select it without that")
            if info is None or (not info.error and name not in self.available()):
                raise PluginError(f"unknown plugin {name!r}; installed plugins: "
                                  f"{', '.join(self.available())}")
            if info.error:
                raise PluginError(f"plugin {name!r} ({info.module}, distribution "
                                  f"{info.distribution}) failed to load: {info.error}")
        if len(set(names)) != len(names):
            raise PluginError(f"a plugin is given twice in --plugin {' '.join(names)}")
        return list(names)

    def broken(self) -> list[PluginInfo]:
        """Plugins that failed to load: their import or registration failed, or they were built
        for another ltcore version."""
        return [info for info in self.info.values() if info.error]

    def component(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; raise listing the registered names otherwise."""
        table = self.components[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise PluginError(f"unknown {kind} {name!r}; registered {kind}s: {known}")
        return table[name]

    def hooks_of(self, plugin: str) -> list[str]:
        """The hooks ``plugin`` implements (none when it did not load)."""
        loaded = self.pm.get_plugin(plugin)
        return sorted(c.name for c in self.pm.get_hookcallers(loaded) or []) if loaded else []

    def components_of(self, plugin: str) -> list[Component]:
        """Every component ``plugin`` registered, by kind."""
        return [c for table in self.components.values() for c in table.values() if c.plugin == plugin]

    def for_run(self, selected: list[str]) -> "RunPlugins":
        """The plugin manager of a run with the ``selected`` plugins."""
        return RunPlugins(self, selected)


class RunPlugins:
    """The plugins taking part in one run and the run's own plugin objects.

    A plugin manager of its own, holding the core, the ``selected`` plugins and every object a
    plugin registers for the run (:meth:`register`), as pytest registers plugin objects per
    session; ``hook`` calls only them. The selected plugins are registered from the last to the
    first, so that (pluggy calling the last registered first) hooks run in ``--plugin`` order.
    """

    def __init__(self, plugins: Plugins, selected: list[str]):
        self.pm = pluggy.PluginManager("ltcore")
        self.pm.add_hookspecs(hookspecs)
        for name in [CORE, *reversed(selected)]:
            self.pm.register(plugins.pm.get_plugin(name), name=name)
        self.hook = self.pm.hook
        self.objects: dict[str, object] = {}

    def register(self, obj: object, name: str) -> object:
        """Add a plugin object for this run; its ``@hookimpl`` methods take part from now on.

        ``name`` identifies the object's state in checkpoints (``state_dict`` /
        ``load_state_dict``, when the object has them), so it must be the same when the run is
        rebuilt.
        """
        if name in self.objects:
            raise PluginError(f"a run plugin object named {name!r} is already registered")
        try:
            self.pm.register(obj, name=f"run:{name}")
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            raise PluginError(f"run plugin object {name!r} ({type(obj).__name__}) has an invalid "
                              f"hook implementation: {exc}") from exc
        self.objects[name] = obj
        return obj

    def state_dict(self) -> dict[str, Any]:
        """The state of every registered object that has one, by name."""
        return {name: obj.state_dict() for name, obj in self.objects.items()
                if callable(getattr(obj, "state_dict", None))}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for name, state in states.items():
            if name not in self.objects:
                raise PluginError(f"the saved run has state of a plugin object {name!r} that "
                                  "this run does not register")
            self.objects[name].load_state_dict(state)
