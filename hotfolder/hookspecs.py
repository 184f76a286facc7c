"""Every hook a hotfolder plugin can implement, in pipeline order.

A plugin is a module (or any object) with functions marked ``@hotfolder.hookimpl`` whose names are hook
names from this module. An implementation may take any subset of a hook's arguments, by name, and must
give its parameters no defaults (pluggy does not pass arguments that have defaults; hotfolder refuses such
plugins at startup). Hooks are called with keyword arguments only, through :class:`hotfolder.plugins.Hooks`.

Hook names come from a closed vocabulary, one contract per verb:

``parse_*``
    a provider: the first implementation that returns something other than ``None`` wins
    (``firstresult``); the built-in implementation runs last (``trylast``).
``register_*``
    contribute named components through the ``register`` callback hotfolder passes in; the return value
    is ignored. Called once, at startup; a clash of names is a startup error naming both plugins.
``prepare_*``
    change the object passed in, in place; the return value is ignored.
``check_*``
    validate at startup; raise to refuse to start.
``track_*``
    a notification; the return value is ignored and an exception is only logged.

Errors: in ``parse_*``, ``prepare_*`` hooks and in post-processors an exception **fails the job** (or the
scenario file) with a :class:`~hotfolder.errors.PluginError` naming the plugin, unless the plugin raised a
:class:`~hotfolder.errors.HotfolderError` itself, which is reported as it is. In ``register_*`` and
``check_*`` hooks it stops hotfolder from starting. In ``track_event`` it is logged with the plugin's
name and nothing else happens. Each hook's docstring repeats its rule.

The user guide, with an example per hook, is ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from hotfolder.plugin_api import RegisterPostprocessor, RegisterScenarioKey

if TYPE_CHECKING:
    import jinja2

    from hotfolder.config import Settings
    from hotfolder.events import Event
    from hotfolder.plugin_api import Conversion, TemplateInfo
    from hotfolder.spec import JobSpec

__all__ = [
    "PROJECT",
    "RegisterPostprocessor",
    "RegisterScenarioKey",
    "hookimpl",
    "hookspec",
]

PROJECT = "hotfolder"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------
# startup


@hookspec
def check_settings(settings: Settings) -> None:
    """Startup: check hotfolder's settings, in particular your own table, before any file is taken.

    Called once when hotfolder starts with settings (``run``, ``process``, ``check``), after every
    plugin is loaded. Read your options with ``hotfolder.plugins.plugin_config(settings, "<name>")``
    (the ``[plugin_config.<name>]`` table of ``hotfolder.toml``).

    :param settings: the :class:`~hotfolder.config.Settings` (read-only).

    Raise ``ValueError`` (or :class:`~hotfolder.errors.PluginError`) with a message saying what is
    wrong to refuse to start; the message is shown with your plugin's name. The return value is ignored.
    """


# --------------------------------------------------------------------------------------------------
# stage 3: parse


@hookspec(firstresult=True)
def parse_scenario_file(path: Path, text: str) -> list[tuple[dict[str, Any], int | None]] | None:
    """Parse stage: read the jobs out of one claimed scenario file. Stops at the first non-None result.

    Called once per scenario file, after hotfolder has decoded it as UTF-8 (a BOM is removed; an empty or
    undecodable file is refused before any plugin sees it). The built-in formats (``.json``, ``.yaml``,
    ``.yml``, ``.toml``, ``.csv``, ``.jsonl``, ``.txt``) are a ``trylast`` implementation, so a plugin
    can add a suffix or take over a built-in one.

    :param path: the claimed file; decide by ``path.suffix`` (case-insensitively) whether it is yours.
        Only its name matters: the file has already been read.
    :param text: the file's text.
    :return: ``None`` if the file is not in your format; otherwise a list of raw job mappings, each a
        ``(mapping, line)`` pair (``line`` is where the job starts, or ``None``); a bare mapping counts
        as ``(mapping, None)``. The mappings then go through the same validation and expansion as the
        built-in formats (keys, ``jobs:``, ``matrix``, ``repeat``, random seeds, job names).

    Errors fail the scenario file: raise :class:`~hotfolder.errors.ScenarioError` with ``where={"file":
    path.name, "line": ...}`` for malformed input; any other exception is reported as a
    :class:`~hotfolder.errors.PluginError` naming your plugin.
    """


@hookspec
def register_scenario_keys(register: RegisterScenarioKey) -> None:
    """Parse stage, at startup: declare extra keys that scenario files may use.

    hotfolder refuses unknown scenario keys (a typo is never ignored). A plugin that reads its own key
    (for instance ``loras:`` for an injector) registers it here. The value of an extra key is checked
    to be plain JSON data, merged like ``template`` (a ``jobs:`` entry's value replaces the top level's)
    and handed to the rest of the pipeline as ``spec.options[name]``; jobs without the key have no entry.

    :param register: call ``register(name, description=..., check=...)`` once per key
        (:class:`~hotfolder.plugin_api.RegisterScenarioKey`).

    Called once when the plugins are loaded. An exception, or a key that is built in or registered by
    another plugin, stops hotfolder from starting.
    """


# --------------------------------------------------------------------------------------------------
# stage 4: render


@hookspec
def prepare_jinja2_environment(env: jinja2.Environment) -> None:
    """Render stage: add filters, tests and globals to a Jinja environment that templates render in.

    Called once for each environment hotfolder creates (one for ``.json`` templates, one for
    ``.json.j2`` templates), before the first template is compiled in it. The environment is sandboxed
    (``ImmutableSandboxedEnvironment``) and strict (``StrictUndefined``); keep it that way.

    :param env: change it in place, e.g. ``env.filters["slug"] = slugify``.

    The return value is ignored. An exception fails the job being rendered (as a ``PluginError``).
    """


@hookspec
def prepare_template_context(context: dict[str, Any], spec: JobSpec) -> None:
    """Render stage: change the variables one job's template is rendered with.

    Called once per job, after the parameters are resolved (template defaults, then the scenario's
    ``params``, random seeds drawn, declared types applied) and before the template is rendered.

    :param context: the variables, in place. New names are template-only variables; changed values of
        existing parameters are also what the sidecar records as ``params`` and what sidecar ``input``
        addresses receive.
    :param spec: the job (read-only): ``spec.params``, ``spec.options`` (extra scenario keys), ``spec.name``.

    The return value is ignored. An exception fails the job.
    """


# --------------------------------------------------------------------------------------------------
# stage 5: inject


@hookspec
def prepare_workflow(workflow: dict[str, Any], spec: JobSpec, template: TemplateInfo) -> None:
    """Inject stage: change one job's API workflow just before it is submitted (an injector).

    Called once per job after the template is rendered, the template sidecar's inputs are set and the
    scenario's ``set:`` overrides are applied; this is the last change before ``POST /prompt``. What
    you leave in ``workflow`` is exactly what is submitted and recorded in the sidecar, and what
    ``hotfolder render`` prints. hotfolder checks afterwards that it is still an API workflow.

    :param workflow: the API-format workflow (node id -> ``{"class_type", "inputs", "_meta"}``), in
        place. Add nodes with new string ids; a link is ``[node_id, output_slot]``.
    :param spec: the job (read-only); your scenario keys are in ``spec.options``.
    :param template: the template it came from (:class:`~hotfolder.plugin_api.TemplateInfo`: ``name``, ``path``).

    The return value is ignored. An exception fails the job: raise
    :class:`~hotfolder.errors.TemplateError` (or ``ScenarioError``) with a hint for a problem the user
    can fix; anything else is reported as a ``PluginError`` naming your plugin.
    """


# --------------------------------------------------------------------------------------------------
# stage 9: publish (post-processing between download and publish)


@hookspec
def register_postprocessors(register: RegisterPostprocessor) -> None:
    """Post-process stage, at startup: offer post-processors by name.

    A post-processor runs on a finished job's downloaded files in their hidden staging folder, after
    download and before the folder is published to ``outbox/<job>/``; it may change, add or remove
    files and add fields to the sidecar (:class:`~hotfolder.plugins.StagedJob`). Which ones run, in
    which order and with which options, is chosen by the scenario's ``postprocess:`` key, or else by
    ``postprocess`` in ``hotfolder.toml``.

    :param register: call ``register(name, function, description=..., check=...)`` once per
        post-processor (:class:`~hotfolder.plugin_api.RegisterPostprocessor`).

    Called once when the plugins are loaded; an exception or a duplicate name stops hotfolder from
    starting. An exception raised by a post-processor **fails the job** (nothing is published).
    """


# --------------------------------------------------------------------------------------------------
# every stage: events


@hookspec
def track_event(event: Event, settings: Settings | None) -> None:
    """Every stage: be told what happened to a file or a job (notifications, metrics, copies).

    Called on the engine's thread for each event, one frozen dataclass per kind from
    :mod:`hotfolder.events`, all with ``kind``, ``file``, ``job_id`` and ``job``: ``Claimed``,
    ``Rendered`` (``jobs``), ``Submitted`` (``prompt_id``, ``server``), ``Progress`` (``node``,
    ``value``, ``max``), ``Resubmitted``, ``Published`` (the job finished and its folder is in the
    outbox: ``path``), ``Failed`` (``error``; a job's failure has ``event.job``, a whole file's has
    ``event.job is None``) and ``Archived`` (the input went to ``done/`` or ``failed/``: ``failed``,
    ``path``, ``error``, ``published``: the folders of its published jobs; all its jobs have ended), plus any kind a later version adds: ignore kinds you don't know.
    ``event.detail`` gives the kind's own fields as a dict.
    ``progress`` comes many times a second, so return quickly; do slow work (network) on your own
    thread.

    :param event: the event (``kind``, ``file``, ``job_id``, ``job`` and its kind's fields); frozen.
    :param settings: hotfolder's settings, or ``None`` when running without them; read your own
        options with ``hotfolder.plugins.plugin_config(settings, "<name>")``.

    The return value is ignored. Implementations are called one by one; an exception is logged with
    the plugin's name and never reaches the job (a broken notifier cannot lose a result). Wrappers are
    not allowed on this hook.
    """


# --------------------------------------------------------------------------------------------------
# stage 4: render, when a template is loaded (appended here; its place in pipeline order is before
# prepare_jinja2_environment)


@hookspec(firstresult=True)
def parse_workflow(data: Any, name: str, object_info: Callable[[], Mapping[str, Any]]) -> Conversion | dict[str, Any] | None:
    """Render stage, when a template is loaded: turn a ``.json`` template that is not in API format into
    an API workflow. Stops at the first non-None result.

    Called when a template is loaded (again after it changes) and its JSON is not an API workflow (an
    object of nodes, each with ``class_type`` and ``inputs``). The built-in converter of ComfyUI UI
    workflows (``nodes``/``links``, what the plain Save button writes;
    :mod:`hotfolder.default_plugins.ui_workflows`) is a ``trylast`` implementation, so a plugin can read
    another format or take over UI workflows. The result is then checked and rendered like any
    ``.json`` template (its Jinja strings included).

    :param data: the template's parsed JSON (read-only).
    :param name: the template's name, for messages (``where={"template": name}``).
    :param object_info: call it for the ``/object_info`` of a server that answers (a mapping, shared:
        don't change it); call it only if you need it. When no server answers it raises
        :class:`~hotfolder.templates.load.ObjectInfoUnavailable`: let that through (the daemon keeps the
        job until a server answers).
    :return: ``None`` if the data is not in your format; otherwise the API workflow (a dict; the job
        record then says ``"format": "plugin"``), or a
        :class:`~hotfolder.plugin_api.Conversion` (the workflow with notes for the job record:
        ``warnings``, ``dropped``, ``controls``, ``source_format``).

    An exception fails the job: raise :class:`~hotfolder.errors.TemplateError` (e.g.
    :class:`~hotfolder.plugin_api.ConversionError`) for data you cannot convert faithfully;
    anything else is reported as a ``PluginError`` naming your plugin.
    """
