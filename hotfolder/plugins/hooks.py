"""The typed facade over the hooks: :class:`Hooks`, one method per hook in :mod:`hotfolder.hookspecs`.

hotfolder calls plugins only through :class:`Hooks`: it runs the startup hooks (``check_settings``,
``register_*``) when it is built and keeps what they registered, and turns a plugin's unexpected
exception into a :class:`~hotfolder.errors.PluginError` naming the plugin and the hook.
:func:`load_hooks` builds one from the settings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotfolder import fsguard
from hotfolder.errors import HotfolderError, PluginError, filesystem_error
from hotfolder.plugin_api import Conversion
from hotfolder.plugins.loader import DISABLE_ENV, PluginManager, error_location, get_plugin_manager, short_repr
from hotfolder.plugins.postprocess import Postprocessor, parse_postprocess

if TYPE_CHECKING:
    import jinja2

    from hotfolder.config import Settings
    from hotfolder.events import Event
    from hotfolder.plugin_api import RegisterPostprocessor, RegisterScenarioKey, StagedJob, TemplateInfo
    from hotfolder.spec import JobSpec

logger = logging.getLogger("hotfolder.plugins")

# --------------------------------------------------------------------------------------------------
# registered components


@dataclass(frozen=True)
class ScenarioKey:
    """A scenario key a plugin declared; ``check`` (or ``None``) validates and normalises its value."""

    name: str
    plugin: str
    description: str = ""
    check: Callable[[Any], Any] | None = None


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
                         "allow_unused", "destination")
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
                    where={"plugin": impl.plugin_name, "hook": "check_settings", **error_location(err)},
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
                    f"A parse_scenario_file plugin returned {short_repr(item)} for {path.name!r} as a job; "
                    "expected a mapping or a (mapping, line) pair.",
                    hint=self._impls_hint("parse_scenario_file"),
                    where={"file": path.name, "hook": "parse_scenario_file"},
                )
        return jobs

    def register_scenario_keys(self) -> dict[str, ScenarioKey]:
        """Call ``register_scenario_keys`` on every plugin; return the keys by name."""
        keys: dict[str, ScenarioKey] = {}

        def make(plugin: str) -> RegisterScenarioKey:
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

    def prepare_workflow(self, *, workflow: dict[str, Any], spec: JobSpec, template: TemplateInfo) -> None:
        """Let the injectors change one job's workflow in place, just before it is submitted."""
        self._call("prepare_workflow", workflow=workflow, spec=spec, template=template)

    # -- post-process ----------------------------------------------------------------------------

    def register_postprocessors(self) -> dict[str, Postprocessor]:
        """Call ``register_postprocessors`` on every plugin; return the post-processors by name."""
        found: dict[str, Postprocessor] = {}

        def make(plugin: str) -> RegisterPostprocessor:
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
                        f"Plugin {plugin!r} registers post-processor {name!r} with {short_repr(function)}, "
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
                where={"plugin": plugin, "hook": hook_name, **error_location(err)},
            ) from err
        except Exception as err:  # noqa: BLE001 - a plugin's bug fails the job with the plugin named
            plugin = _blame(caller, err) or "unknown"
            raise PluginError(
                f"Plugin {plugin!r} failed in hook {hook_name!r}: {type(err).__name__}: {err}",
                hint=f"This is a bug in the plugin or a value it cannot handle; disable it with {DISABLE_ENV}="
                f"{plugin} if needed.",
                where={"plugin": plugin, "hook": hook_name, **error_location(err)},
            ) from err

    def _each(self, hook_name: str, kwargs_for: Callable[[str], dict[str, Any]], *, startup: bool) -> None:
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            kwargs = kwargs_for(impl.plugin_name)
            if self.pm.tracing:
                logger.debug(
                    "hook %s(%s) -> %s",
                    hook_name,
                    ", ".join(f"{k}={short_repr(v)}" for k, v in kwargs.items()),
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
                        where={"plugin": impl.plugin_name, "hook": hook_name, **error_location(err)},
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
