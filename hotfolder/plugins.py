"""The plugin system: loading plugins, calling hooks, running post-processors.

Quick start for plugin authors (the full guide is ``docs/plugins.md``). Drop a file into ``plugins/``::

    # plugins/shout.py
    from hotfolder import hookimpl

    @hookimpl
    def prepare_jinja2_environment(env):
        env.filters["shout"] = lambda text: str(text).upper() + "!"

and write ``"{{ prompt | shout }}"`` in a template. To share it, package it with an entry point in the
``hotfolder`` group: ``[project.entry-points.hotfolder] shout = "hotfolder_shout"``. Hooks and their
contracts are in :mod:`hotfolder.hookspecs`.

For hotfolder itself: :func:`get_plugin_manager` builds a manager (nothing is loaded at import time),
in this order: hook specs, the built-ins (:data:`DEFAULT_PLUGINS`), the ``hotfolder`` entry-point
group, every ``plugins/*.py``, then a check that every hook implementation names a known hook. Any
problem is a :class:`~hotfolder.errors.PluginError` naming the plugin, its file and the hook.
:class:`Hooks` is the typed facade the pipeline calls (one method per hook), and
:func:`run_postprocessors` runs the post-processors a job chose.

Environment switches
    ``HOTFOLDER_LOAD_PLUGINS``: comma-separated distributions whose entry points load (empty: none;
    unset: all). Local ``plugins/*.py`` files are not affected.
    ``HOTFOLDER_DISABLE_PLUGINS``: comma-separated plugin names never to register (an entry point
    name, a distribution name, a local file as ``plugins/x.py`` or ``x``, a built-in module name).
    ``HOTFOLDER_TRACE_PLUGINS=1``: log every hook call, its arguments and results at DEBUG level
    (``hotfolder -v ...``).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from hotfolder import fsguard, hookspecs
from hotfolder.errors import HotfolderError, PluginError, filesystem_error
from hotfolder.paths import safe_filename, unique_name
from hotfolder.templates.convert import Conversion

if TYPE_CHECKING:
    import jinja2

    from hotfolder.config import Settings
    from hotfolder.events import Event
    from hotfolder.spec import JobSpec
    from hotfolder.templates.load import Template

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Hooks",
    "PluginManager",
    "Postprocessor",
    "ScenarioKey",
    "StagedJob",
    "get_plugin_logger",
    "get_plugin_manager",
    "list_plugins",
    "load_hooks",
    "parse_postprocess",
    "plugin_config",
    "run_postprocessors",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hotfolder"
#: Built-in plugins, registered like third-party ones (``hotfolder plugins --all`` lists them).
DEFAULT_PLUGINS: tuple[str, ...] = ("hotfolder.default_plugins.scenario_formats",
                                     "hotfolder.default_plugins.ui_workflows")
#: Local plugin files are imported under this private package name, as ``<prefix>.<stem>``.
LOCAL_MODULE_PREFIX = "hotfolder._local_plugins"
LOAD_ENV = "HOTFOLDER_LOAD_PLUGINS"
DISABLE_ENV = "HOTFOLDER_DISABLE_PLUGINS"
TRACE_ENV = "HOTFOLDER_TRACE_PLUGINS"
#: Hooks whose implementations hotfolder calls one at a time (to know who did what); no wrappers there.
ONE_BY_ONE_HOOKS = frozenset({"check_settings", "register_scenario_keys", "register_postprocessors", "track_event"})
_TRACE_REPR = 400


# --------------------------------------------------------------------------------------------------
# the manager


@dataclass(frozen=True)
class PluginOrigin:
    """Where a registered plugin came from: ``kind`` is ``builtin``, ``entrypoint`` or ``local``."""

    kind: str
    path: Path | None = None
    distribution: str | None = None
    version: str | None = None


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with hotfolder's checks at registration and a record of each plugin's origin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.origins: dict[str, PluginOrigin] = {}
        self.tracing = False

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register ``plugin`` after checking its hook implementations; raise :class:`PluginError`."""
        label = name or self.get_canonical_name(plugin)
        self._check_impls(plugin, label)
        try:
            return super().register(plugin, name)
        except pluggy.PluginValidationError as err:
            raise PluginError(
                f"Plugin {label!r} ({_where(plugin)}) does not fit hotfolder's hooks: {err}",
                hint="Compare each hook function with its signature in docs/plugins.md.",
                where={"plugin": label, "file": _where(plugin)},
            ) from err
        except ValueError as err:  # already registered under this name
            raise PluginError(
                f"Plugin {label!r} ({_where(plugin)}) cannot be registered: {err}",
                hint="Two plugins have the same name; rename one of them or disable one "
                f"with {DISABLE_ENV}.",
                where={"plugin": label},
            ) from err

    def _check_impls(self, plugin: Any, label: str) -> None:
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            function = getattr(plugin, attr)
            hook_name = opts.get("specname") or attr
            spec = getattr(self.hook, hook_name, None)
            located = _function_location(function)
            if spec is None or spec.spec is None:
                continue  # reported by check_unknown_hooks() once everything is loaded
            if opts.get("wrapper") or opts.get("hookwrapper"):
                if hook_name in ONE_BY_ONE_HOOKS:
                    raise PluginError(
                        f"Plugin {label!r} ({located}) declares a wrapper for hook {hook_name!r}, which "
                        "hotfolder calls one implementation at a time.",
                        hint="Drop wrapper=True/hookwrapper=True and implement the hook normally.",
                        where={"plugin": label, "hook": hook_name, "file": located},
                    )
            signature = inspect.signature(function)
            with_default = [p.name for p in signature.parameters.values() if p.default is not p.empty]
            if with_default:
                raise PluginError(
                    f"Plugin {label!r} ({located}) gives hook {hook_name!r} parameter(s) "
                    f"{', '.join(map(repr, with_default))} a default value.",
                    hint="pluggy does not pass parameters that have defaults; remove the defaults.",
                    where={"plugin": label, "hook": hook_name, "file": located},
                )
            allowed = spec.spec.argnames
            unknown = [
                p.name
                for p in signature.parameters.values()
                if p.name not in allowed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if unknown:
                raise PluginError(
                    f"Plugin {label!r} ({located}) implements hook {hook_name!r} with unknown "
                    f"parameter(s) {', '.join(map(repr, unknown))}; the hook is "
                    f"{hook_signature(hook_name)}.",
                    hint="A hook implementation may take any of the hook's parameters, by name, and no others.",
                    where={"plugin": label, "hook": hook_name, "file": located},
                )

    def check_unknown_hooks(self) -> None:
        """Raise :class:`PluginError` for an implementation whose name matches no hook (a typo)."""
        known = sorted(hook_names(self))
        for name, caller in vars(self.hook).items():
            if name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                raise PluginError(
                    f"Plugin {impl.plugin_name!r} ({_function_location(impl.function)}) implements unknown "
                    f"hook {name!r}.",
                    hint=hint + "Hooks: " + ", ".join(known) + ".",
                    where={"plugin": impl.plugin_name, "hook": name, "file": _function_location(impl.function)},
                )
        self.check_pending()


def hook_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of the hooks hotfolder defines, in the order of :mod:`hotfolder.hookspecs`."""
    return [name for name, _ in _spec_functions() if getattr(pm.hook, name, None) is not None]


def _spec_functions() -> list[tuple[str, Callable[..., Any]]]:
    marker = f"{hookspecs.PROJECT}_spec"
    found = [(name, obj) for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker)]
    return sorted(found, key=lambda item: inspect.getsourcelines(item[1])[1])


def hook_signature(name: str) -> str:
    """``"name(arg, arg)"``, the exact signature string docs/plugins.md shows for a hook."""
    function = dict(_spec_functions())[name]
    return f"{name}({', '.join(inspect.signature(function).parameters)})"


def get_plugin_manager(
    *,
    load_entrypoints: bool = True,
    plugins_dir: Path | None = None,
    blocked: Iterable[str] = (),
) -> PluginManager:
    """Build a plugin manager: specs, built-ins, entry points, ``plugins_dir/*.py``, then checks.

    ``load_entrypoints=False`` skips installed packages entirely; ``$HOTFOLDER_LOAD_PLUGINS`` narrows
    them to listed distributions. ``blocked`` and ``$HOTFOLDER_DISABLE_PLUGINS`` name plugins never to
    register. Raise :class:`PluginError` naming the plugin and file for anything that does not load or
    does not fit the hooks.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in [*blocked, *_env_list(DISABLE_ENV)]:
        pm.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if pm.is_blocked(module_name):
            continue
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        pm.origins[module_name] = PluginOrigin("builtin", path=_module_path(module))
    if load_entrypoints:
        allow = os.environ.get(LOAD_ENV)
        _load_entrypoints(pm, None if allow is None else {_normalize(n) for n in _split(allow)})
    if plugins_dir is not None:
        load_local_plugins(pm, plugins_dir)
    pm.check_unknown_hooks()
    if os.environ.get(TRACE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        enable_tracing(pm)
    return pm


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _env_list(name: str) -> list[str]:
    return _split(os.environ.get(name, ""))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _load_entrypoints(pm: PluginManager, allow: set[str] | None) -> None:
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            if allow is not None and _normalize(dist_name) not in allow:
                logger.debug("Plugin %r of %s not loaded: not in %s", ep.name, dist_name, LOAD_ENV)
                continue
            if ep.name in seen or pm.get_plugin(ep.name) is not None:
                continue  # the same distribution twice on sys.path
            seen.add(ep.name)
            if pm.is_blocked(ep.name) or pm.is_blocked(dist_name):
                logger.info("Plugin %r of %s is disabled by %s", ep.name, dist_name, DISABLE_ENV)
                continue
            try:
                plugin = ep.load()
            except Exception as err:  # noqa: BLE001 - any import failure of a plugin is a startup error
                raise PluginError(
                    f"Plugin {ep.name!r} from {dist_name} {dist.version} failed to import "
                    f"({ep.value}): {type(err).__name__}: {err}",
                    hint=f"Fix or uninstall {dist_name}, or disable it with {DISABLE_ENV}={ep.name}.",
                    where={"plugin": ep.name, "distribution": dist_name},
                ) from err
            pm.register(plugin, name=ep.name)
            pm.origins[ep.name] = PluginOrigin(
                "entrypoint", path=_module_path(plugin), distribution=dist_name, version=dist.version
            )
    if allow:
        found = {_normalize(o.distribution or "") for o in pm.origins.values() if o.kind == "entrypoint"}
        for missing in sorted(allow - found):
            logger.warning("%s names %r, but no installed plugin distribution has that name", LOAD_ENV, missing)


def load_local_plugins(pm: PluginManager, folder: Path) -> list[str]:
    """Import and register every ``folder/*.py`` (not ``_*``), sorted by name; return their names.

    Each file is imported under ``hotfolder._local_plugins.<stem>`` (a fresh module every time) and
    registered as ``plugins/<file>``. A file that fails to import is a :class:`PluginError` carrying
    the path and the original error.
    """
    if not folder.is_dir():
        return []
    names = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_") or not path.is_file():
            continue
        name = f"plugins/{path.name}"
        if pm.is_blocked(name) or pm.is_blocked(path.stem):
            logger.info("Local plugin %s is disabled by %s", path, DISABLE_ENV)
            continue
        module = _import_file(path)
        pm.register(module, name=name)
        pm.origins[name] = PluginOrigin("local", path=path.resolve())
        names.append(name)
    return names


def _import_file(path: Path) -> ModuleType:
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"{LOCAL_MODULE_PREFIX}.{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"Plugin file {str(path)!r} cannot be imported.", where={"file": str(path)})
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        _restore(module_name, previous)
        raise PluginError(
            f"Plugin file {str(path)!r} has a syntax error at line {err.lineno}: {err.msg}",
            hint="Fix the file, or move it out of the plugins folder (or rename it to start with '_').",
            where={"file": str(path), "line": err.lineno},
        ) from err
    except Exception as err:  # noqa: BLE001 - any import failure of a plugin file is a startup error
        _restore(module_name, previous)
        line = _traceback_line(err, path)
        at = f" (line {line})" if line else ""
        raise PluginError(
            f"Plugin file {str(path)!r} failed to import{at}: {type(err).__name__}: {err}",
            hint="Fix the file, or move it out of the plugins folder (or rename it to start with '_').",
            where={"file": str(path), **({"line": line} if line else {})},
        ) from err
    return module


def _restore(module_name: str, previous: ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(module_name, None)
    else:
        sys.modules[module_name] = previous


def _traceback_line(err: BaseException, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


def _module_path(plugin: Any) -> Path | None:
    file = getattr(plugin, "__file__", None)
    return Path(file).resolve() if file else None


def _where(plugin: Any) -> str:
    path = _module_path(plugin)
    if path is None:
        try:
            path = Path(inspect.getfile(type(plugin)))
        except TypeError:
            return type(plugin).__name__
    return str(path)


def _function_location(function: Any) -> str:
    try:
        file = inspect.getsourcefile(function)
        line = inspect.getsourcelines(function)[1]
    except (OSError, TypeError):
        return getattr(function, "__qualname__", repr(function))
    return f"{file}:{line}"


# --------------------------------------------------------------------------------------------------
# tracing


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _TRACE_REPR else text[:_TRACE_REPR] + "..."


def enable_tracing(pm: PluginManager) -> None:
    """Log each hook call (arguments, implementations, result) at DEBUG on ``hotfolder.plugins``."""
    pm.tracing = True

    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        logger.debug(
            "hook %s(%s) -> %s",
            hook_name,
            ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items()),
            ", ".join(impl.plugin_name for impl in reversed(impls)) or "(no implementations)",
        )

    def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        if outcome.exception is not None:
            logger.debug("hook %s raised %s: %s", hook_name, type(outcome.exception).__name__, outcome.exception)
        else:
            logger.debug("hook %s returned %s", hook_name, _short(outcome.get_result()))

    pm.add_hookcall_monitoring(before, after)


# --------------------------------------------------------------------------------------------------
# registered components


@dataclass(frozen=True)
class ScenarioKey:
    """A scenario key a plugin declared; ``check`` (or ``None``) validates and normalises its value."""

    name: str
    plugin: str
    description: str = ""
    check: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Postprocessor:
    """A post-processor a plugin offered: ``function(job)`` and its options ``check``."""

    name: str
    plugin: str
    function: Callable[[StagedJob], None]
    description: str = ""
    check: Callable[[dict[str, Any]], Any] | None = None


def _guard_check(check: Callable[..., Any] | None, what: str, plugin: str) -> Callable[..., Any] | None:
    """Let ``ValueError``/``TypeError`` through (the user's input is wrong); anything else is the
    plugin's bug and becomes a :class:`PluginError` naming it."""
    if check is None:
        return None

    def guarded(value: Any) -> Any:
        try:
            return check(value)
        except (ValueError, TypeError, HotfolderError):
            raise
        except Exception as err:  # noqa: BLE001 - a plugin bug must name the plugin
            raise PluginError(
                f"Plugin {plugin!r} failed while checking {what}: {type(err).__name__}: {err}",
                hint="This is a bug in the plugin; its check should raise ValueError for bad values.",
                where={"plugin": plugin},
            ) from err

    return guarded


BUILTIN_SCENARIO_KEYS = ("template", "name", "params", "set", "inputs", "repeat", "matrix", "jobs", "postprocess",
                         "allow_unused")
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------------------------------
# the facade


class Hooks:
    """The typed way to call plugins: one method per hook in :mod:`hotfolder.hookspecs`.

    Building it calls ``check_settings`` (when ``settings`` are given) and the ``register_*`` hooks,
    so that a plugin's refusal or a clash of names is a startup error, and keeps what they registered
    in :attr:`scenario_keys` and :attr:`postprocessors`. ``settings`` is also handed to ``track_event``.
    Stage hooks turn a plugin's unexpected exception into a :class:`~hotfolder.errors.PluginError`
    naming the plugin and the hook; ``track_event`` never raises.
    """

    def __init__(self, pm: PluginManager, settings: Settings | None = None) -> None:
        self.pm = pm
        self.settings = settings
        if settings is not None:
            self.check_settings(settings=settings)
        self.scenario_keys: dict[str, ScenarioKey] = self.register_scenario_keys()
        self.postprocessors: dict[str, Postprocessor] = self.register_postprocessors()

    # -- startup ---------------------------------------------------------------------------------

    def check_settings(self, *, settings: Settings) -> None:
        """Let every plugin check the settings; raise :class:`PluginError` naming the first that refuses."""
        caller = self.pm.hook.check_settings
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*[{"settings": settings}[name] for name in impl.argnames])
            except ValueError as err:
                raise PluginError(
                    f"Plugin {impl.plugin_name!r} refuses the settings: {err}",
                    hint="Fix its table in hotfolder.toml (see the plugin's documentation), or disable it "
                    f"with {DISABLE_ENV}={impl.plugin_name}.",
                    where={"plugin": impl.plugin_name, "hook": "check_settings"},
                ) from err
            except PluginError as err:
                err.where.setdefault("plugin", impl.plugin_name)
                raise
            except Exception as err:  # noqa: BLE001 - any failure here refuses the start, naming the plugin
                raise PluginError(
                    f"Plugin {impl.plugin_name!r} failed in hook 'check_settings': {type(err).__name__}: {err}",
                    hint=f"Fix the plugin or disable it with {DISABLE_ENV}={impl.plugin_name}.",
                    where={"plugin": impl.plugin_name, "hook": "check_settings", **_error_location(err)},
                ) from err

    # -- parse -----------------------------------------------------------------------------------

    def parse_scenario_file(self, *, path: Path, text: str) -> list[tuple[dict[str, Any], int | None]] | None:
        """The raw jobs of a scenario file from the first plugin that reads its format, or ``None``."""
        found = self._call("parse_scenario_file", path=path, text=text)
        if found is None:
            return None
        if not isinstance(found, list):
            raise PluginError(
                f"A parse_scenario_file plugin returned {type(found).__name__} for {path.name!r}, not a list "
                "of (mapping, line) pairs.",
                hint=self._impls_hint("parse_scenario_file"),
                where={"file": path.name, "hook": "parse_scenario_file"},
            )
        jobs: list[tuple[dict[str, Any], int | None]] = []
        for item in found:
            if isinstance(item, dict):
                jobs.append((item, None))
            elif (
                isinstance(item, tuple)
                and len(item) == 2
                and (item[1] is None or (isinstance(item[1], int) and not isinstance(item[1], bool)))
            ):
                jobs.append((item[0], item[1]))
            else:
                raise PluginError(
                    f"A parse_scenario_file plugin returned {_short(item)} for {path.name!r} as a job; "
                    "expected a mapping or a (mapping, line) pair.",
                    hint=self._impls_hint("parse_scenario_file"),
                    where={"file": path.name, "hook": "parse_scenario_file"},
                )
        return jobs

    def register_scenario_keys(self) -> dict[str, ScenarioKey]:
        """Call ``register_scenario_keys`` on every plugin; return the keys by name."""
        keys: dict[str, ScenarioKey] = {}

        def make(plugin: str) -> hookspecs.RegisterScenarioKey:
            def register(name: str, *, description: str = "", check: Callable[[Any], Any] | None = None) -> None:
                if not isinstance(name, str) or not _KEY_NAME.match(name):
                    raise PluginError(
                        f"Plugin {plugin!r} registers the scenario key {name!r}, which is not a plain name.",
                        hint="Use letters, digits, '_' and '-', starting with a letter.",
                        where={"plugin": plugin, "hook": "register_scenario_keys"},
                    )
                if name in BUILTIN_SCENARIO_KEYS:
                    raise PluginError(
                        f"Plugin {plugin!r} registers the scenario key {name!r}, which is built in.",
                        hint="Choose another name.",
                        where={"plugin": plugin, "hook": "register_scenario_keys"},
                    )
                if name in keys:
                    raise PluginError(
                        f"Plugins {keys[name].plugin!r} and {plugin!r} both register the scenario key {name!r}.",
                        hint=f"Disable one of them with {DISABLE_ENV}.",
                        where={"plugin": plugin, "hook": "register_scenario_keys"},
                    )
                keys[name] = ScenarioKey(
                    name, plugin, description, _guard_check(check, f"the scenario key {name!r}", plugin)
                )

            return register

        self._each("register_scenario_keys", lambda plugin: {"register": make(plugin)}, startup=True)
        return keys

    # -- render ----------------------------------------------------------------------------------

    def prepare_jinja2_environment(self, *, env: jinja2.Environment) -> None:
        """Let plugins add filters, tests and globals to a new template environment."""
        self._call("prepare_jinja2_environment", env=env)

    def prepare_template_context(self, *, context: dict[str, Any], spec: JobSpec) -> None:
        """Let plugins change one job's template variables in place."""
        self._call("prepare_template_context", context=context, spec=spec)

    def parse_workflow(self, *, data: Any, name: str,
                       object_info: Callable[[], Mapping[str, Any]]) -> Conversion | None:
        """The API workflow the first plugin that reads a (non-API) template's format makes of it, or ``None``."""
        found = self._call("parse_workflow", data=data, name=name, object_info=object_info)
        if found is None or isinstance(found, Conversion):
            return found
        if isinstance(found, dict):
            return Conversion(workflow=found, source_format="plugin")
        raise PluginError(
            f"A parse_workflow plugin returned {type(found).__name__} for template {name!r}, not an API "
            "workflow (a dict) or a Conversion.",
            hint=self._impls_hint("parse_workflow"),
            where={"template": name, "hook": "parse_workflow"},
        )

    # -- inject ----------------------------------------------------------------------------------

    def prepare_workflow(self, *, workflow: dict[str, Any], spec: JobSpec, template: Template) -> None:
        """Let the injectors change one job's workflow in place, just before it is submitted."""
        self._call("prepare_workflow", workflow=workflow, spec=spec, template=template)

    # -- post-process ----------------------------------------------------------------------------

    def register_postprocessors(self) -> dict[str, Postprocessor]:
        """Call ``register_postprocessors`` on every plugin; return the post-processors by name."""
        found: dict[str, Postprocessor] = {}

        def make(plugin: str) -> hookspecs.RegisterPostprocessor:
            def register(
                name: str,
                function: Callable[[StagedJob], None],
                *,
                description: str = "",
                check: Callable[[dict[str, Any]], Any] | None = None,
            ) -> None:
                if not isinstance(name, str) or not _KEY_NAME.match(name):
                    raise PluginError(
                        f"Plugin {plugin!r} registers a post-processor named {name!r}, which is not a plain name.",
                        hint="Use letters, digits, '_' and '-', starting with a letter.",
                        where={"plugin": plugin, "hook": "register_postprocessors"},
                    )
                if not callable(function):
                    raise PluginError(
                        f"Plugin {plugin!r} registers post-processor {name!r} with {_short(function)}, "
                        "which is not callable.",
                        where={"plugin": plugin, "hook": "register_postprocessors"},
                    )
                if name in found:
                    raise PluginError(
                        f"Plugins {found[name].plugin!r} and {plugin!r} both register a post-processor {name!r}.",
                        hint=f"Disable one of them with {DISABLE_ENV}.",
                        where={"plugin": plugin, "hook": "register_postprocessors"},
                    )
                found[name] = Postprocessor(
                    name, plugin, function, description,
                    _guard_check(check, f"the options of post-processor {name!r}", plugin),
                )

            return register

        self._each("register_postprocessors", lambda plugin: {"register": make(plugin)}, startup=True)
        return found

    # -- events ----------------------------------------------------------------------------------

    def track_event(self, event: Event) -> None:
        """Tell every plugin about ``event``, one by one. Never raises: failures are logged."""
        self._each("track_event", lambda plugin: {"event": event, "settings": self.settings}, startup=False)

    # -- plumbing --------------------------------------------------------------------------------

    def _call(self, hook_name: str, **kwargs: Any) -> Any:
        caller = getattr(self.pm.hook, hook_name)
        try:
            return caller(**kwargs)
        except HotfolderError as err:
            plugin = _blame(caller, err)
            if plugin is not None:
                err.where.setdefault("plugin", plugin)
                err.where.setdefault("hook", hook_name)
            raise
        except OSError as err:
            if err.errno in fsguard.SYSTEMIC:
                raise  # a full or read-only filesystem: intake pauses and the step is done again later
            plugin = _blame(caller, err) or "unknown"
            problem = filesystem_error(err, doing="use")
            raise PluginError(
                f"Plugin {plugin!r} failed in hook {hook_name!r}: {problem.message}", hint=problem.hint,
                where={"plugin": plugin, "hook": hook_name, **_error_location(err)},
            ) from err
        except Exception as err:  # noqa: BLE001 - a plugin's bug fails the job with the plugin named
            plugin = _blame(caller, err) or "unknown"
            raise PluginError(
                f"Plugin {plugin!r} failed in hook {hook_name!r}: {type(err).__name__}: {err}",
                hint=f"This is a bug in the plugin or a value it cannot handle; disable it with {DISABLE_ENV}="
                f"{plugin} if needed.",
                where={"plugin": plugin, "hook": hook_name, **_error_location(err)},
            ) from err

    def _each(self, hook_name: str, kwargs_for: Callable[[str], dict[str, Any]], *, startup: bool) -> None:
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            kwargs = kwargs_for(impl.plugin_name)
            if self.pm.tracing:
                logger.debug(
                    "hook %s(%s) -> %s",
                    hook_name,
                    ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items()),
                    impl.plugin_name,
                )
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except Exception as err:  # noqa: BLE001 - see below: startup error, or only logged
                if startup:
                    if isinstance(err, PluginError):
                        raise
                    raise PluginError(
                        f"Plugin {impl.plugin_name!r} failed in hook {hook_name!r}: {type(err).__name__}: {err}",
                        hint=f"Fix the plugin or disable it with {DISABLE_ENV}={impl.plugin_name}.",
                        where={"plugin": impl.plugin_name, "hook": hook_name, **_error_location(err)},
                    ) from err
                logger.error(
                    "Plugin %r failed in hook %r (ignored): %s: %s",
                    impl.plugin_name, hook_name, type(err).__name__, err,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )

    def _impls_hint(self, hook_name: str) -> str:
        names = [impl.plugin_name for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls())]
        return f"Plugins implementing {hook_name}: {', '.join(names)}."


def _blame(caller: Any, err: BaseException) -> str | None:
    """The plugin whose hook implementation the exception ``err`` came out of, from its traceback."""
    codes = {}
    for impl in caller.get_hookimpls():
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    tb = err.__traceback__
    while tb is not None:
        name = codes.get(tb.tb_frame.f_code)
        if name is not None:
            return name
        tb = tb.tb_next
    return None


def _error_location(err: BaseException) -> dict[str, Any]:
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return {}
    last = frames[-1]
    return {"raised_at": f"{last.filename}:{last.lineno}"}


def load_hooks(settings: Settings, *, load_entrypoints: bool = True, blocked: Iterable[str] = ()) -> Hooks:
    """The :class:`Hooks` for ``settings``: plugins from ``settings.plugins``, then the configured
    default ``postprocess`` (if the settings have one) checked against the registered post-processors.
    Raise :class:`PluginError` for anything that would fail later."""
    pm = get_plugin_manager(load_entrypoints=load_entrypoints, plugins_dir=settings.plugins, blocked=blocked)
    hooks = Hooks(pm, settings)
    default = getattr(settings, "postprocess", None)
    if default:
        try:
            parse_postprocess(hooks, default)
        except PluginError as err:
            err.where.setdefault("setting", "postprocess")
            raise PluginError(
                f"Setting 'postprocess' in hotfolder.toml: {err.message}", hint=err.hint, where=err.where
            ) from err
    return hooks


# --------------------------------------------------------------------------------------------------
# listing


def list_plugins(pm: PluginManager, all: bool = False, hook: str | None = None) -> list[dict[str, Any]]:  # noqa: A002
    """What ``hotfolder plugins`` prints: one entry per plugin, sorted by name (JSON-able).

    Each entry has ``name``, ``hooks`` (sorted) and, as known, ``version`` and ``distribution``
    (installed packages) or ``path`` (files). Built-ins are listed only with ``all``; ``hook`` keeps
    the plugins that implement that hook.
    """
    if hook is not None and hook not in hook_names(pm):
        raise PluginError(
            f"There is no hook named {hook!r}.",
            hint="Hooks: " + ", ".join(hook_names(pm)) + ".",
            where={"hook": hook},
        )
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        origin = pm.origins.get(name, PluginOrigin("registered"))
        if origin.kind == "builtin" and not all:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        if hook is not None and hook not in hooks:
            continue
        entry: dict[str, Any] = {"name": name, "hooks": hooks}
        if origin.distribution:
            entry["distribution"] = origin.distribution
            entry["version"] = origin.version
        if origin.path is not None:
            entry["path"] = str(origin.path)
        out.append(entry)
    return sorted(out, key=lambda e: e["name"])


# --------------------------------------------------------------------------------------------------
# post-processing


@dataclass
class StagedJob:
    """A finished job just before it is published: what a post-processor works on.

    ``folder`` is the job's hidden staging folder, holding the downloaded files; it becomes
    ``outbox/<job>/`` when every post-processor has run. ``sidecar`` is the dict that will be written as
    ``<job>.json``: change it in place (``sidecar["outputs"]`` lists the files). ``options`` are this
    post-processor's options from the scenario or ``hotfolder.toml`` (after its ``check``).
    """

    folder: Path
    sidecar: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The job name (the outbox folder's name)."""
        return str(self.sidecar.get("name") or self.folder.name)

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The sidecar's output entries (``file``, ``node``, ``kind``, ``size``, ``sha256``, ...)."""
        outputs = self.sidecar.setdefault("outputs", [])
        assert isinstance(outputs, list)
        return outputs

    def path(self, entry: Mapping[str, Any]) -> Path:
        """The staged file of an output entry."""
        return self.folder / safe_filename(str(entry["file"]))

    def free_name(self, name: str) -> str:
        """``name`` made safe and unique in the folder (``x.webp``, ``x-2.webp``, ...)."""
        return unique_name(self.folder, safe_filename(name))

    def add_output(self, path: Path, **fields: Any) -> dict[str, Any]:
        """Record a file you wrote into :attr:`folder` as an output; return its new entry."""
        if path.parent.resolve() != self.folder.resolve() or not path.is_file():
            raise PluginError(
                f"Post-processor output {str(path)!r} is not a file directly inside the job's folder.",
                hint="Write new files into StagedJob.folder (use StagedJob.free_name for a name).",
            )
        entry = {"file": path.name, **fields}
        self.outputs.append(entry)
        self.refresh_output(entry)
        return entry

    def refresh_output(self, entry: dict[str, Any]) -> None:
        """Recompute ``size`` and ``sha256`` of an entry whose file changed (or was renamed)."""
        size, sha = file_digest(self.path(entry))
        entry["size"], entry["sha256"] = size, sha

    def remove_output(self, entry: dict[str, Any]) -> None:
        """Delete an output's file and its entry."""
        self.path(entry).unlink(missing_ok=True)
        self.outputs[:] = [e for e in self.outputs if e is not entry]


def file_digest(path: Path) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def parse_postprocess(hooks: Hooks, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """Turn a ``postprocess`` value into ``[(name, options), ...]``, checking names and options.

    ``value`` is ``None`` (nothing), a name, a list of names and ``{"name": ..., **options}`` tables, or
    a mapping ``{name: options}``. Raise :class:`PluginError` for an unknown name (listing the known
    ones) or options the post-processor's ``check`` refuses.
    """
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, Mapping):
        items = []
        for name, options in value.items():
            if options is not None and not isinstance(options, Mapping):
                raise _postprocess_error(f"'postprocess' gives {name!r} the options {_short(options)}, not a table")
            items.append({**(options or {}), "name": name})
    elif isinstance(value, list):
        items = value
    else:
        raise _postprocess_error(f"'postprocess' is {type(value).__name__}; expected a list of names or tables")
    chosen = []
    for item in items:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name = item["name"]
            options = {k: copy.deepcopy(v) for k, v in item.items() if k != "name"}
        else:
            raise _postprocess_error(
                f"'postprocess' entry {_short(item)} is neither a name nor a table with a 'name'"
            )
        processor = hooks.postprocessors.get(name)
        if processor is None:
            close = difflib.get_close_matches(name, list(hooks.postprocessors), n=1, cutoff=0.6)
            known = ", ".join(sorted(hooks.postprocessors)) or "(none: no plugin registers one)"
            raise _postprocess_error(
                f"Unknown post-processor {name!r}",
                hint=(f"Did you mean {close[0]!r}? " if close else "") + f"Post-processors: {known}.",
                name=name,
            )
        if processor.check is not None:
            try:
                replaced = processor.check(copy.deepcopy(options))
            except (ValueError, TypeError) as err:
                raise _postprocess_error(
                    f"Post-processor {name!r} does not accept its options: {err}", name=name, plugin=processor.plugin
                ) from err
            if replaced is not None:
                options = dict(replaced)
        chosen.append((name, options))
    return chosen


def _postprocess_error(message: str, *, hint: str | None = None, **where: Any) -> PluginError:
    return PluginError(
        message + ".",
        hint=hint or "Write postprocess: [name, {name: other, option: value}] (see docs/plugins.md).",
        where={"key": "postprocess", **where},
    )


def run_postprocessors(hooks: Hooks, postprocess: Any, staging_dir: Path, sidecar: dict[str, Any]) -> None:
    """Run the chosen post-processors, in order, on a finished job's staging folder and sidecar.

    ``postprocess`` is the job's choice (its scenario ``postprocess:`` or else the configured default;
    see :func:`parse_postprocess`). Records ``sidecar["postprocess"]`` (name, plugin, options of each).
    A failing post-processor fails the job: its :class:`~hotfolder.errors.HotfolderError` passes
    through, anything else becomes a :class:`PluginError` naming the post-processor and its plugin.
    """
    chosen = parse_postprocess(hooks, postprocess)
    if not chosen:
        return
    done = sidecar.setdefault("postprocess", [])
    for name, options in chosen:
        processor = hooks.postprocessors[name]
        job = StagedJob(folder=staging_dir, sidecar=sidecar, options=options)
        logger.debug("[%s] post-processor %s (%s) %s", job.name, name, processor.plugin, options)
        try:
            processor.function(job)
        except HotfolderError as err:
            err.where.setdefault("postprocessor", name)
            err.where.setdefault("plugin", processor.plugin)
            raise
        except OSError as err:
            if err.errno in fsguard.SYSTEMIC:
                raise  # a full or read-only outbox: the job waits, staged, and runs this again once it recovers
            problem = filesystem_error(err, path=staging_dir)
            raise PluginError(
                f"Post-processor {name!r} (plugin {processor.plugin!r}) failed: {problem.message}",
                hint=problem.hint,
                where={"postprocessor": name, "plugin": processor.plugin, **_error_location(err)},
            ) from err
        except Exception as err:  # noqa: BLE001 - a post-processor's failure fails the job, named
            raise PluginError(
                f"Post-processor {name!r} (plugin {processor.plugin!r}) failed: {type(err).__name__}: {err}",
                hint="Check the post-processor's options; if they are right, this is a bug in the plugin.",
                where={"postprocessor": name, "plugin": processor.plugin, **_error_location(err)},
            ) from err
        done.append({"name": name, "plugin": processor.plugin, "options": _jsonable(options)})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------------------------------
# helpers for plugins


def plugin_config(settings: Any, name: str) -> dict[str, Any]:
    """The ``[plugin_config.<name>]`` table of ``hotfolder.toml`` (``{}`` if there is none or no settings)."""
    tables = getattr(settings, "plugin_config", None) or {}
    table = tables.get(name) or {}
    return dict(table)


_PLUGIN_MODULE_PREFIXES = (f"{LOCAL_MODULE_PREFIX}.", "hotfolder.default_plugins.")


class _PluginLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{(self.extra or {}).get('plugin')}] {msg}", kwargs


def get_plugin_logger(name: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger for a plugin: ``hotfolder.plugins.<name>``, every line prefixed ``[<name>]``.

    Pass your module's ``__name__``; hotfolder's private prefix of local plugin modules is removed.
    """
    for prefix in _PLUGIN_MODULE_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return _PluginLogger(logging.getLogger(f"hotfolder.plugins.{name}"), {"plugin": name})


def iter_hookimpls(pm: PluginManager) -> Iterator[tuple[str, Any]]:
    """Every registered hook implementation as ``(hook name, HookImpl)`` (for tests and ``check``)."""
    for name in hook_names(pm):
        for impl in getattr(pm.hook, name).get_hookimpls():
            yield name, impl

