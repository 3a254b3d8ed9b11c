"""Finding, loading and registering plugins.

Installed plugins come from the ``ltcore`` entry-point group; the built-in ones (the core's
datasets, models, views and the baseline methods) are registered the same way from
``BUILTIN_PLUGINS``. A module can also be loaded as a plugin without installing it, like pytest's
``-p``: ``--plugin ./path/to/method.py`` or ``--plugin package.module`` (its name is the file's
or module's last name), and ``LTCORE_PLUGINS`` names such modules to load in every process.
:class:`Plugins` loads them all, validates their hooks, and collects their components, options,
presets and reference results; :class:`RunPlugins` is the plugin manager of one run: the core,
the plugins it selected and the plugin objects it registers.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import attrs
import pluggy

from . import __version__, hookspecs
from .errors import PluginError
from .tables import PaperTable

ENTRY_POINT_GROUP = "ltcore"

DISABLE_ENV = "LTCORE_DISABLE_PLUGINS"
"""Environment variable naming installed plugins to leave unloaded, separated by commas."""

MODULES_ENV = "LTCORE_PLUGINS"
"""Environment variable naming modules to load as plugins in every process (paths of ``.py``
files or importable module names), separated by commas."""

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
    "mixup": "ltcore.builtin.mixup",
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
    "task": "register_tasks",
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
class PluginSource:
    """Where a plugin loaded from a module (not installed) came from: the ``reference`` it was
    loaded by (an absolute ``.py`` path or a module name), its file and the file's SHA-256."""

    name: str
    reference: str
    file: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


def is_module_reference(reference: str) -> bool:
    """Whether ``--plugin REFERENCE`` names a module to load (a ``.py`` path, or a dotted module
    name) rather than an installed plugin."""
    return reference.endswith(".py") or "/" in reference or os.sep in reference or (
        "." in reference and not reference.startswith("."))


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
        self._check_hooks()
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in COMPONENT_HOOKS}
        self.options: dict[str, type] = {}
        self.presets: dict[str, dict[str, Preset]] = {}
        self.reference_results: list[dict[str, Any]] = []
        self.tables: dict[str, PaperTable] = {}
        """The papers' tables and figures by id (``<plugin>:<name>``)."""
        self.sources: dict[str, PluginSource] = {}
        """The plugins loaded from modules (``--plugin ./file.py``, ``LTCORE_PLUGINS``), by name."""
        self._collect()
        for reference in os.environ.get(MODULES_ENV, "").split(","):
            if reference.strip():
                self.load_module(reference.strip())

    def _check_hooks(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {self._name_of(exc.plugin)!r} implements a hook that "
                              f"does not exist: {exc}") from exc

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

    def _call_each(self, hook_name: str, make_register: Callable[[str], Callable],
                   only: str | None = None) -> None:
        """Call ``hook_name`` on every plugin (or on plugin ``only``) with a ``register`` bound
        to that plugin's name.

        A third-party plugin whose registration fails is disabled and reported like one that
        failed to import; a failing built-in plugin is a bug and raises.
        """
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            name = impl.plugin_name
            if only is not None and name != only:
                continue
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
        self.tables = {k: t for k, t in self.tables.items() if not k.startswith(f"{name}:")}

    def _collect(self, only: str | None = None) -> None:
        for kind, hook_name in COMPONENT_HOOKS.items():
            self._call_each(hook_name, lambda plugin, kind=kind: self._component_registrar(kind, plugin),
                            only)
        self._call_each("register_options", self._options_registrar, only)
        self._call_each("register_presets", self._preset_registrar, only)
        self._call_each("register_reference_results", self._reference_registrar, only)
        self._call_each("register_tables", self._table_registrar, only)

    def load_module(self, reference: str) -> str:
        """Load a module as a plugin (a ``.py`` file's path or an importable module name) and
        return its name; loading the same module again returns the name it has."""
        path = Path(reference).expanduser()
        if reference.endswith(".py") or "/" in reference or os.sep in reference:
            if not path.is_file():
                raise PluginError(f"--plugin {reference}: no such file (a plugin module is a "
                                  f"path to a .py file or an importable module name)")
            path = path.resolve()
            name, resolved = path.stem, str(path)
        else:
            name, resolved = reference.rsplit(".", 1)[-1], reference
        known = self.sources.get(name)
        if known is not None and known.reference == resolved:
            return name
        try:
            if resolved.endswith(".py"):
                module_name = f"ltcore_plugin_{name}_{file_digest(path)[:12]}"
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(resolved)
        except Exception as exc:
            raise PluginError(f"plugin module {reference!r} failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        file = getattr(module, "__file__", None)
        if not file:
            raise PluginError(f"plugin module {reference!r} has no file to record")
        digest = file_digest(file)
        self._load(name, lambda: module, resolved, f"module {resolved}", digest[:12],
                   builtin=False)
        if self.info[name].error:
            raise PluginError(f"plugin module {reference!r} failed to load: "
                              f"{self.info[name].error}")
        self._check_hooks()
        self._collect(only=name)
        if self.info[name].error:
            raise PluginError(f"plugin module {reference!r} failed to register: "
                              f"{self.info[name].error}")
        self.sources[name] = PluginSource(name, resolved, str(Path(file).resolve()), digest)
        return name

    def load_recorded(self, recorded: dict[str, dict] | None, copies: Path) -> list[str]:
        """Load the plugin modules a saved run recorded (:meth:`PluginSource.to_dict` by name)
        that are not loaded yet: from their reference, else from the run's ``copies`` folder.
        Returns a warning line for each loaded from its copy or changed since the run began."""
        notes = []
        for name, record in (recorded or {}).items():
            source = PluginSource(**record)
            copy = copies / Path(source.file).name
            if name not in self.sources:
                if name in self.info:
                    raise PluginError(f"the run's plugin {name!r} came from {source.reference}, "
                                      f"but an installed plugin has that name now")
                reference = source.reference
                if reference.endswith(".py") and not Path(reference).is_file():
                    if not copy.is_file():
                        raise PluginError(f"the run's plugin {name!r} came from {reference}, "
                                          "which no longer exists, and the run has no copy")
                    notes.append(f"plugin {name!r}: {reference} no longer exists; loaded the "
                                 f"run's copy {copy}")
                    reference = str(copy)
                self.load_module(reference)
            current = self.sources[name]
            if current.sha256 != source.sha256:
                notes.append(f"plugin {name!r} ({current.file}) changed since the run began "
                             f"(sha256 {source.sha256[:12]} then, {current.sha256[:12]} now) and "
                             f"runs as it is now; the run's copy of the first is {copy}")
        return notes

    def references(self, names: list[str]) -> list[str]:
        """``names`` with each plugin loaded from a module given by its reference (what
        ``--plugin`` and a configuration file's ``plugins`` take)."""
        return [self.sources[n].reference if n in self.sources else n for n in names]

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
        def register(*, plugins: str, dataset: str, imbalance_factor: float | str,
                     metrics: dict[str, float], source: str,
                     match: dict[str, Any] | None = None) -> None:
            self.reference_results.append({"plugins": plugins, "dataset": dataset,
                                           "imbalance_factor": imbalance_factor,
                                           **(match or {}), **metrics,
                                           "source": source, "plugin": plugin})
        return register

    def _table_registrar(self, plugin: str) -> Callable:
        def register(table: PaperTable) -> None:
            if not isinstance(table, PaperTable):
                raise PluginError(f"plugin {plugin!r} registered a table that is not a "
                                  "ltcore.PaperTable")
            key = f"{plugin}:{table.name}"
            if key in self.tables:
                raise PluginError(f"plugin {plugin!r} registered table {table.name!r} twice")
            self.tables[key] = table
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
        """Check the names given with ``--plugin`` (module references are loaded, see
        :meth:`load_module`); raise naming what is installed."""
        names = [self.load_module(n) if is_module_reference(n) and n not in self.info else n
                 for n in names]
        for name in names:
            info = self.info.get(name)
            if info is not None and info.disabled:
                raise PluginError(f"plugin {name!r} ({info.distribution}) is switched off "
                                  f"(--disable-plugin or {DISABLE_ENV}); select it without that")
            if name in self.sources and name not in self.available():
                kinds = sorted({c.kind for c in self.components_of(name)})
                raise PluginError(f"plugin module {self.sources[name].reference} only registers "
                                  f"components ({', '.join(kinds) or 'none'}), so it cannot "
                                  f"take part in a run: load it with {MODULES_ENV}="
                                  f"{self.sources[name].reference} and name its components "
                                  "in the settings")
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
