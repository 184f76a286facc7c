"""The plugin loader: builds a pluggy manager from the hook specs, the built-ins, entry points and ``plugins/*.py``.

:func:`get_plugin_manager` builds a manager (nothing is loaded at import time), in this order: hook
specs, the built-ins (:data:`DEFAULT_PLUGINS`), the ``hotfolder`` entry-point group, every
``plugins/*.py``, then a check that every hook implementation names a known hook. Any problem is a
:class:`~hotfolder.errors.PluginError` naming the plugin, its file and the hook. Also here: what
``hotfolder plugins`` lists, and hook-call tracing.

Environment switches
    ``HOTFOLDER_LOAD_PLUGINS``: comma-separated distributions whose entry points load (empty: none;
    unset: all). Local ``plugins/*.py`` files are not affected.
    ``HOTFOLDER_DISABLE_PLUGINS``: comma-separated plugin names never to register (an entry point
    name, a distribution name, a local file as ``plugins/x.py`` or ``x``, a built-in module name).
    ``HOTFOLDER_TRACE_PLUGINS=1``: log every hook call, its arguments and results at DEBUG level
    (``hotfolder -v ...``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from hotfolder import hookspecs
from hotfolder.errors import PluginError
from hotfolder.plugin_api import LOCAL_MODULE_PREFIX

logger = logging.getLogger("hotfolder.plugins")  # one logger for the whole plugin system (traces, errors)

ENTRY_POINT_GROUP = "hotfolder"
#: Built-in plugins, registered like third-party ones (``hotfolder plugins --all`` lists them).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "hotfolder.default_plugins.scenario_formats",
    "hotfolder.default_plugins.ui_workflows",
    "hotfolder.default_plugins.contact_sheet",
)
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
            if spec is None or spec.spec is None:
                continue  # reported by check_unknown_hooks() once everything is loaded
            if opts.get("wrapper") or opts.get("hookwrapper"):
                if hook_name in ONE_BY_ONE_HOOKS:
                    raise PluginError(
                        f"Plugin {label!r} ({_function_location(function)}) declares a wrapper for hook {hook_name!r}, which "
                        "hotfolder calls one implementation at a time.",
                        hint="Drop wrapper=True/hookwrapper=True and implement the hook normally.",
                        where={"plugin": label, "hook": hook_name, "file": _function_location(function)},
                    )
            signature = inspect.signature(function)
            with_default = [p.name for p in signature.parameters.values() if p.default is not p.empty]
            if with_default:
                raise PluginError(
                    f"Plugin {label!r} ({_function_location(function)}) gives hook {hook_name!r} parameter(s) "
                    f"{', '.join(map(repr, with_default))} a default value.",
                    hint="pluggy does not pass parameters that have defaults; remove the defaults.",
                    where={"plugin": label, "hook": hook_name, "file": _function_location(function)},
                )
            allowed = spec.spec.argnames
            unknown = [
                p.name
                for p in signature.parameters.values()
                if p.name not in allowed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if unknown:
                raise PluginError(
                    f"Plugin {label!r} ({_function_location(function)}) implements hook {hook_name!r} with unknown "
                    f"parameter(s) {', '.join(map(repr, unknown))}; the hook is "
                    f"{hook_signature(hook_name)}.",
                    hint="A hook implementation may take any of the hook's parameters, by name, and no others.",
                    where={"plugin": label, "hook": hook_name, "file": _function_location(function)},
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
    return sorted(found, key=lambda item: item[1].__code__.co_firstlineno)


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
    # Only the distributions that offer a hotfolder plugin have their metadata read (a venv holds hundreds).
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        dist_name = (dist.metadata["Name"] if dist is not None else None) or "?"
        version = dist.version if dist is not None else "?"
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
                f"Plugin {ep.name!r} from {dist_name} {version} failed to import "
                f"({ep.value}): {type(err).__name__}: {err}",
                hint=f"Fix or uninstall {dist_name}, or disable it with {DISABLE_ENV}={ep.name}.",
                where={"plugin": ep.name, "distribution": dist_name},
            ) from err
        pm.register(plugin, name=ep.name)
        pm.origins[ep.name] = PluginOrigin(
            "entrypoint", path=_module_path(plugin), distribution=dist_name, version=version
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


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to a few hundred characters (for traces and error messages)."""
    text = repr(value)
    return text if len(text) <= _TRACE_REPR else text[:_TRACE_REPR] + "..."


def enable_tracing(pm: PluginManager) -> None:
    """Log each hook call (arguments, implementations, result) at DEBUG on ``hotfolder.plugins``."""
    pm.tracing = True

    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        logger.debug(
            "hook %s(%s) -> %s",
            hook_name,
            ", ".join(f"{k}={short_repr(v)}" for k, v in kwargs.items()),
            ", ".join(impl.plugin_name for impl in reversed(impls)) or "(no implementations)",
        )

    def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        if outcome.exception is not None:
            logger.debug("hook %s raised %s: %s", hook_name, type(outcome.exception).__name__, outcome.exception)
        else:
            logger.debug("hook %s returned %s", hook_name, short_repr(outcome.get_result()))

    pm.add_hookcall_monitoring(before, after)

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


def iter_hookimpls(pm: PluginManager) -> Iterator[tuple[str, Any]]:
    """Every registered hook implementation as ``(hook name, HookImpl)`` (for tests and ``check``)."""
    for name in hook_names(pm):
        for impl in getattr(pm.hook, name).get_hookimpls():
            yield name, impl


def error_location(err: BaseException) -> dict[str, Any]:
    """``{"raised_at": "file:line"}`` of the innermost frame of ``err``'s traceback (``{}`` without one)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return {}
    last = frames[-1]
    return {"raised_at": f"{last.filename}:{last.lineno}"}
