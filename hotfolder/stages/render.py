"""Stage 4 of 10: render. Fill a workflow template with one job's parameters.

:func:`load_template` finds and checks a template in the templates folder; :func:`render_workflow`
turns it plus a :class:`~hotfolder.spec.JobSpec` into an API-format workflow (a new dict) and the
resolved parameters. Every failure is a :class:`~hotfolder.errors.TemplateError` (or its subclass
:class:`~hotfolder.errors.AddressError`) whose ``where`` holds ``template`` and, as far as known,
``file`` and ``job`` (the scenario), ``variable``, ``node``, ``input``, ``line`` and ``column``.

Templates (``templates/<name>.json`` is looked up before ``templates/<name>.json.j2``)
    ``<name>.json`` (kind ``"json"``): a ComfyUI workflow in API format, valid JSON. Any string value
    (never a key) containing ``{{`` or ``{%`` is Jinja. A string that is exactly one ``{{ expr }}``
    (surrounding whitespace ignored) becomes the expression's value with its type, so ``"{{ seed }}"``
    is submitted as an integer; any other string renders as text, so quotes and newlines in a prompt
    never break the JSON.

    ``<name>.json.j2`` (kind ``"jinja"``): the whole file is Jinja and must render to JSON. Every
    ``{{ ... }}`` is emitted as a JSON value (``json.dumps``), so ``"text": {{ prompt }}`` is safe for
    any prompt (write ``{{ "a photo of " ~ subject }}`` to build a string). A value that is already
    JSON text from ``| tojson`` is emitted as is. Use ``{% for %}`` to add nodes.

    Rendering is sandboxed (``ImmutableSandboxedEnvironment``: no ``_``-attributes, no Python
    internals, no mutating of lists or dicts) and strict (``StrictUndefined``: an undefined variable
    is an error naming the variable, the template, the scenario and the job). Parameter values are
    data: Jinja inside a prompt is never evaluated.

    A ComfyUI *UI* workflow (``nodes``/``links``, what the plain Save button writes) in a ``.json``
    template is converted to API format with :func:`hotfolder.convert.convert_ui_workflow` when
    :func:`load_template` is given a server's ``/object_info`` (``object_info=``); conversions are
    cached by (template sha256, object_info version). Without one it is refused
    (:class:`ObjectInfoUnavailable`) with directions for exporting the API format.

Sidecar ``<name>.toml`` (optional, beside the template)::

    description = "Classic SD1.5 text to image"

    [params.prompt]
    default = "a red fox"          # optional
    type = "string"                # string | int | float | bool | any (the default)
    input = "6.text"               # optional; or a list: ["6.text", "Negative.text"]
    description = "positive prompt"

    [params.seed]
    default = "random"             # a seed-like param may default to "random": drawn per job
    type = "int"
    input = "KSampler.seed"

and the short form, a parameter that only names node inputs (no default, type ``any``)::

    [params]
    steps = "KSampler.steps"
    width = ["5.width", "Upscale.width"]

Unknown keys, bad types and malformed addresses in the sidecar are errors.

Roles (a ``.json`` template with no sidecar and no Jinja: a plain export)
    :func:`hotfolder.roles.find_roles` finds the usual parameters in the graph (``prompt``,
    ``negative``, ``seed``, ``steps``, ``cfg``, ``sampler``, ``scheduler``, ``denoise``, ``width``,
    ``height``, ``batch_size``, ``checkpoint``, ``prefix``, ``image``), and each found role is a
    parameter as if the sidecar had ``[params] prompt = "6.text"``: ``params.prompt`` fills the
    positive prompt, whatever the node ids are. A sidecar, when there is one, wins (no roles then).

Rendering one job
    0. Every scenario param must land somewhere: a param that no Jinja variable reads and that is no
       sidecar parameter or role, or a role the workflow has more than once, is an error naming it,
       the close matches and the candidate nodes (:func:`check_params_used`), unless the scenario
       lists it under ``allow_unused`` (``spec.options``).
    1. Context: sidecar defaults, overridden by ``spec.params``. A seed-like parameter (name ending in
       ``seed``) whose value is ``"random"`` gets a number drawn from ``random.SystemRandom`` in
       ``0 .. 2**32-1``. Parameters with a declared type are coerced (``int("20")``, ``float``, ``bool``
       from ``true``/``false``/``1``/``0``, ``str()``).
    2. Render the template (above) and check the result is an API workflow.
    3. Every sidecar (or role) parameter with ``input`` addresses and a value sets those node inputs.
    4. ``spec.set`` overrides are applied last. (``spec.inputs``, the file uploads, are set afterwards by
       :func:`hotfolder.stages.prepare.render_job`; see :mod:`hotfolder.stages.upload`.)

The resolved parameters (including drawn seeds) are returned next to the workflow, for the sidecar.

Plugins (``hooks=``, a :class:`RenderHooks`, in practice :class:`hotfolder.plugins.Hooks`)
    :func:`load_template` and :func:`render_workflow` then compile in environments that
    ``hooks.prepare_jinja2_environment`` has prepared (filters, tests, globals; one pair of
    environments per ``hooks`` object, made on first use). :func:`render_workflow` also lets
    ``hooks.prepare_template_context`` change a copy of the resolved parameters before rendering (the
    changed values of existing parameters are the ones returned and set through sidecar inputs; new
    names are template-only) and, after step 4, ``hooks.prepare_workflow`` change the workflow (the
    injectors); the result is checked to still be an API workflow.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import tomllib
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import jinja2
import jinja2.exceptions
import jinja2.meta
import jinja2.nodes
import jinja2.runtime
import jinja2.sandbox
from markupsafe import Markup

from hotfolder import budgets, convert, roles
from hotfolder.errors import AddressError, PluginError, TemplateError
from hotfolder.paths import display_name, fits
from hotfolder.spec import JobSpec
from hotfolder.stages import inject

logger = logging.getLogger(__name__)

#: Template file suffixes, in lookup order.
TEMPLATE_SUFFIXES: tuple[str, ...] = (".json", ".json.j2")
#: Parameter types a sidecar may declare.
PARAM_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "any")
SIDECAR_KEYS: tuple[str, ...] = ("description", "params")
PARAM_KEYS: tuple[str, ...] = ("default", "type", "input", "description")
#: Random seeds are drawn from ``range(0, SEED_RANGE)``.
SEED_RANGE = 2**32

API_FORMAT_HINT = (
    "In ComfyUI, turn on the dev mode option in the settings (gear icon: 'Enable Dev mode Options'), "
    "then use 'Save (API Format)' (newer versions: Workflow > Export (API)) and save that file as "
    "templates/{name}.json."
)


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: Marks a sidecar parameter without a default.
MISSING: Any = _Missing.MISSING


@dataclass(frozen=True)
class ParamSpec:
    """One parameter declared in a template sidecar. ``default`` is :data:`MISSING` when not given."""

    name: str
    default: Any = MISSING
    type: str = "any"
    inputs: list[str] = field(default_factory=list)
    description: str = ""


@dataclass(frozen=True)
class TemplateSidecar:
    """A template's ``<name>.toml``: description and parameters. ``sha256`` is of the file's bytes."""

    path: Path
    description: str
    params: dict[str, ParamSpec]
    sha256: str


@dataclass(frozen=True)
class Template:
    """A loaded, checked template. ``kind`` is ``"json"`` or ``"jinja"``; ``sha256`` is of the file's bytes.

    ``source_format`` is ``"ui"`` for a UI workflow converted to API format (``text`` is then the
    converted API workflow and ``conversion`` says with which ``/object_info`` and what the converter
    noted), else ``"api"``. ``roles`` maps role names to node inputs for a plain export without a
    sidecar (module docstring, "Roles"); ``role_reasons`` says why each other role is not there and
    ``ambiguous_roles`` lists the node inputs of each role found more than once.
    """

    name: str
    path: Path
    kind: str
    text: str
    sha256: str
    sidecar: TemplateSidecar | None = None
    source_format: str = "api"
    conversion: dict[str, Any] | None = None
    roles: dict[str, str] = field(default_factory=dict)
    role_reasons: dict[str, str] = field(default_factory=dict)
    ambiguous_roles: dict[str, list[str]] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, ParamSpec]:
        """The template's parameters: the sidecar's, else one per role (an address, no default)."""
        if self.sidecar is not None:
            return self.sidecar.params
        return {
            role: ParamSpec(name=role, inputs=[address], description=f"role found in the workflow: {address}")
            for role, address in self.roles.items()
        }


class ObjectInfoUnavailable(TemplateError):
    """A UI-format template needs a server's ``/object_info`` to be converted and none was available."""


#: ``/object_info`` for converting UI templates: a mapping, or a callable returning ``(object_info,
#: version key)`` or ``None`` when no server answers. The key (e.g. server name and
#: :attr:`hotfolder.validate.ObjectInfoCache.version`) lets conversions be cached.
ObjectInfoSource: TypeAlias = "Mapping[str, Any] | Callable[[], tuple[Mapping[str, Any], Hashable] | None]"


class RenderHooks(Protocol):
    """What rendering needs from the plugin system (:class:`hotfolder.plugins.Hooks` provides it)."""

    def prepare_jinja2_environment(self, *, env: jinja2.Environment) -> None: ...

    def prepare_template_context(self, *, context: dict[str, Any], spec: JobSpec) -> None: ...

    def prepare_workflow(self, *, workflow: dict[str, Any], spec: JobSpec, template: Template) -> None: ...


# --------------------------------------------------------------------------------------------------
# public API


def make_environment(*, json_output: bool = False) -> jinja2.sandbox.SandboxedEnvironment:
    """Return a new strict, sandboxed Jinja environment as hotfolder renders with.

    With ``json_output=True`` every ``{{ ... }}`` is emitted as a JSON value (the ``.json.j2`` mode).
    """
    return budgets.BudgetedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_emit_json if json_output else None,
    )


def available_templates(templates_dir: Path) -> list[str]:
    """Names of the templates in ``templates_dir`` (sorted; hidden files ignored)."""
    names: set[str] = set()
    try:
        entries = list(templates_dir.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        for suffix in TEMPLATE_SUFFIXES:
            if entry.name.endswith(suffix) and len(entry.name) > len(suffix) and entry.is_file():
                names.add(entry.name[: -len(suffix)])
    return sorted(names)


def load_template(templates_dir: Path, name: str, *, hooks: RenderHooks | None = None,
                  object_info: ObjectInfoSource | None = None) -> Template:
    """Find template ``name`` (with or without ``.json``/``.json.j2``) in ``templates_dir`` and check it.

    A ``.json`` template is parsed and checked as an API workflow and its Jinja strings compiled; a
    ``.json.j2`` template is compiled (with ``hooks``, in the environments plugins prepared, so their
    filters are known). A ``.json`` UI workflow is converted to API format with ``object_info`` (a
    mapping, or a callable giving ``(object_info, version key)`` or ``None``; called only for UI
    workflows). Raise :class:`TemplateError` if the name is not a plain file name, no such template
    exists (the hint lists those that do), or the template or its sidecar is malformed;
    :class:`~hotfolder.convert.ConversionError` if a UI workflow cannot be converted faithfully, and
    :class:`ObjectInfoUnavailable` if it needs ``object_info`` and there is none.
    """
    base, suffixes = _split_name(name)
    for suffix in suffixes:
        path = templates_dir / f"{base}{suffix}"
        if path.is_file():
            break
    else:
        available = available_templates(templates_dir)
        if available:
            hint = "Available templates: " + ", ".join(repr(n) for n in available) + "."
        elif templates_dir.is_dir():
            hint = f"The templates folder {str(templates_dir)!r} has no *.json or *.json.j2 files yet."
        else:
            hint = f"The templates folder {str(templates_dir)!r} does not exist; check 'templates' in hotfolder.toml."
        raise TemplateError(
            f"Template {name!r} not found in {str(templates_dir)!r}",
            hint=hint,
            where={"template": name},
            details={"available": available},
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TemplateError(
            f"Template {base!r} cannot be read ({path.name!r}): {err.strerror or err}",
            hint="Check the file's permissions.",
            where={"template": base},
        ) from err
    text = _decode(data, f"Template {base!r} ({path.name!r})", {"template": base})
    kind = "jinja" if suffix == ".json.j2" else "json"
    sha256 = hashlib.sha256(data).hexdigest()
    source_format, conversion = "api", None
    if kind == "json" and convert.is_ui_workflow(_parse_json(text, base)):
        text, conversion = _converted(text, base, sha256, object_info)
        source_format = "ui"
    if hooks is None:
        if kind == "json":
            _json_workflow(text, base)
        else:
            _compile_checked(text, base, _DEFAULT_COMPILER)
    elif kind == "json":
        _check_leaves(_parse_workflow(text, base), base, _compiler_for(hooks))
    else:
        _compile_checked(text, base, _compiler_for(hooks))
    sidecar = _load_sidecar(templates_dir / f"{base}.toml", base)
    found = roles.RoleMap()
    if sidecar is None and kind == "json":
        workflow = _parse_workflow(text, base)
        if not any(True for _ in _jinja_leaves(workflow, ())):
            found = roles.find_roles(workflow)
    return Template(
        name=base,
        path=path,
        kind=kind,
        text=text,
        sha256=sha256,
        sidecar=sidecar,
        source_format=source_format,
        conversion=conversion,
        roles=found.roles,
        role_reasons=found.reasons,
        ambiguous_roles=found.ambiguous,
    )


class TemplateCache:
    """Loaded templates by name, reused while their files are unchanged: a job costs a few ``stat``
    calls instead of reading, parsing and checking the template and its sidecar again. An edit (new
    mtime, size or inode of the template, its other-suffix twin or its sidecar) loads it anew.
    Templates converted from UI workflows are not kept: their conversion depends on a server's
    ``/object_info``."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[tuple[Any, ...], Template]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _stamp(templates_dir: Path, name: str) -> tuple[Any, ...] | None:
        try:
            base, suffixes = _split_name(name)
        except TemplateError:
            return None
        stamp: list[Any] = []
        folder = os.fspath(templates_dir)
        for candidate in (*(f"{base}{suffix}" for suffix in suffixes), f"{base}.toml"):
            try:
                st = os.stat(os.path.join(folder, candidate))
            except OSError:
                stamp.append(None)
                continue
            stamp.append((st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
        return tuple(stamp)

    def get(self, templates_dir: Path, name: str, *, hooks: RenderHooks | None = None,
            object_info: ObjectInfoSource | None = None) -> Template:
        """:func:`load_template`, or the template loaded before if none of its files changed since."""
        key = (str(templates_dir), name)
        stamp = self._stamp(templates_dir, name)  # taken before loading: an edit during the load reloads next time
        with self._lock:
            entry = self._entries.get(key)
        if stamp is not None and entry is not None and entry[0] == stamp:
            return entry[1]
        template = load_template(templates_dir, name, hooks=hooks, object_info=object_info)
        if stamp is not None and template.source_format == "api":
            with self._lock:
                self._entries[key] = (stamp, template)
        return template


def required_variables(template: Template, *, hooks: RenderHooks | None = None) -> set[str]:
    """The variables the template's Jinja uses that have no default (each scenario must give them);
    names the Jinja environment defines (``range``, plugin globals) are left out."""
    defaults = {name for name, param in template.params.items() if param.default is not MISSING}
    env_globals = set(_compiler_for(hooks).env(json_output=template.kind == "jinja").globals)
    return set(_template_variables(template)) - defaults - env_globals


_CONVERSIONS: dict[tuple[str, Hashable], tuple[str, dict[str, Any]]] = {}
_CONVERSIONS_LOCK = threading.Lock()
_MAX_CONVERSIONS = 256


def _converted(text: str, name: str, sha256: str, object_info: ObjectInfoSource | None) -> tuple[str, dict[str, Any]]:
    """The API text of UI template ``name`` and a description of the conversion (cached by
    (sha256, object_info version key) when the source gives a key)."""
    info: Mapping[str, Any] | None = None
    key: Hashable = None
    if isinstance(object_info, Mapping):
        info = object_info
    elif object_info is not None:
        found = object_info()
        if found is not None:
            info, key = found
    if info is None:
        raise ObjectInfoUnavailable(
            f"Template {name!r} is a ComfyUI UI workflow, not API format",
            hint="hotfolder converts UI workflows with a ComfyUI server's /object_info, and no server answered "
                 "(start ComfyUI, or check 'servers' in hotfolder.toml). " + API_FORMAT_HINT.format(name=name),
            where={"template": name},
        )
    if key is not None:
        with _CONVERSIONS_LOCK:
            cached = _CONVERSIONS.get((sha256, key))
        if cached is not None:
            return cached
    result = convert.convert_ui_workflow(_parse_json(text, name), info, name=name)
    for warning in result.warnings:
        logger.info("Template %r (UI workflow) converted: %s", name, warning)
    described = {
        "from": "ui",
        "object_info": str(key[0]) if isinstance(key, tuple) and key else None,
        "warnings": list(result.warnings),
        "dropped": list(result.dropped),
        "controls": dict(result.controls),
    }
    out = (json.dumps(result.workflow, ensure_ascii=False, indent=1), described)
    if key is not None:
        with _CONVERSIONS_LOCK:
            if len(_CONVERSIONS) >= _MAX_CONVERSIONS:
                _CONVERSIONS.clear()
            _CONVERSIONS[(sha256, key)] = out
    return out


def render_workflow(
    template: Template, spec: JobSpec, *, hooks: RenderHooks | None = None,
    budget: budgets.RenderBudget | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Render ``template`` for one job; return ``(API workflow, resolved params)``.

    The workflow is a new dict (the template is never changed). Raise :class:`TemplateError` for an
    undefined variable, a sandbox violation, a parameter that does not fit its declared type, output
    that is not an API workflow, or a node address (sidecar ``input``, ``spec.set``) that does not
    resolve (:class:`AddressError`). With ``hooks``, plugins take part (module docstring, "Plugins");
    what they raise is passed on (:class:`~hotfolder.errors.PluginError` for their own failures).
    The Jinja part runs under ``budget`` (the default limits when None): a :class:`TemplateError`
    naming ``render_timeout`` or ``max_render_size`` when it is used up (:mod:`hotfolder.budgets`).
    """
    where: dict[str, Any] = {"file": spec.source.name, "job": spec.name, "template": template.name}
    check_params_used(template, spec, where)
    resolved = _resolve_params(template, spec, where)
    compiler = _compiler_for(hooks)
    context = resolved
    if hooks is not None:
        context = dict(resolved)
        hooks.prepare_template_context(context=context, spec=spec)
        resolved = {name: context[name] for name in resolved if name in context}
    if template.kind not in ("json", "jinja"):
        raise TemplateError(
            f"Template {template.name!r} has unknown kind {template.kind!r}",
            hint="Load templates with load_template().",
            where=where,
        )
    with (budget or budgets.RenderBudget()).running(where):
        if template.kind == "json":
            source = _parse_workflow(template.text, template.name)
            workflow = _LeafRenderer(template, context, where, compiler).render(source)
        else:
            workflow = _render_whole(template, context, where, compiler)
    _check_api_format(workflow, template.name, where, rendered=template.kind == "jinja")
    for param in template.params.values():
        if param.inputs and param.name in resolved:
            for address in param.inputs:
                inject.set_input(workflow, address, resolved[param.name], where={**where, "variable": param.name})
    inject.apply_overrides(workflow, spec.set, where=where)
    if hooks is not None:
        hooks.prepare_workflow(workflow=workflow, spec=spec, template=template)
        try:
            _check_api_format(workflow, template.name, where, rendered=True)
        except TemplateError as err:
            raise PluginError(
                f"The workflow of job {spec.name!r} is no longer an API workflow after the plugins' "
                f"prepare_workflow changed it: {err.message}",
                hint="A plugin injector broke it; 'hotfolder plugins --hook prepare_workflow' lists them.",
                where={**err.where, "hook": "prepare_workflow"},
            ) from err
    return workflow, resolved


# --------------------------------------------------------------------------------------------------
# names, files, sidecars


def _split_name(name: Any) -> tuple[str, tuple[str, ...]]:
    if not isinstance(name, str) or not name.strip():
        raise TemplateError(
            f"Template name {name!r} is empty or not a string",
            hint="Name a template by its file name in the templates folder, e.g. 'txt2img'.",
            where={"template": repr(name)},
        )
    name = name.strip()
    if "/" in name or "\\" in name or "\0" in name or ".." in name or name.startswith("."):
        raise TemplateError(
            f"Template name {name!r} is not a plain file name",
            hint="Templates are looked up only in the templates folder: give the bare name, "
            "without folders, '..' or a leading dot (e.g. 'txt2img').",
            where={"template": name},
        )
    if not fits(name, room=len(".json.j2")):
        shown = display_name(name)
        size = len(shown.encode("utf-8"))
        raise TemplateError(
            f"Template name {shown[:60] + ('...' if len(shown) > 60 else '')!r} is not a usable file name ("
            + (f"{size} bytes; a file name holds at most 255 with its extension)" if shown == name
               else "it is not valid text)"),
            hint="Name a template by its file name in the templates folder, e.g. 'txt2img'.",
            where={"template": shown[:200]},
        )
    for suffix in (".json.j2", ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], (suffix,)
    return name, TEMPLATE_SUFFIXES


def _decode(data: bytes, what: str, where: dict[str, Any]) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TemplateError(
            f"{what} is not UTF-8 text (invalid byte at line {line})",
            hint="Save the file as UTF-8.",
            where={**where, "line": line},
        ) from err


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


def _load_sidecar(path: Path, template_name: str) -> TemplateSidecar | None:
    if not path.is_file():
        return None
    where: dict[str, Any] = {"template": template_name, "sidecar": path.name}
    label = f"Template sidecar {path.name!r}"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TemplateError(f"{label} cannot be read: {err.strerror or err}", where=where) from err
    text = _decode(raw, label, where)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        match = _TOML_POSITION.search(message)
        fields = dict(where)
        if match:
            fields.update(line=int(match.group(1)), column=int(match.group(2)))
            message = _TOML_POSITION.sub("", message) + f" at line {match.group(1)}, column {match.group(2)}"
        raise TemplateError(
            f"{label} is not valid TOML: {message}",
            hint='Strings need quotes (default = "a red fox"); a parameter table is written [params.prompt].',
            where=fields,
        ) from err
    _check_keys(data, SIDECAR_KEYS, f"{label} has", where)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{label}: 'description' must be a string", where=where)
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        raise TemplateError(
            f"{label}: 'params' must be a table",
            hint='Write [params.<name>] tables, or [params] with name = "<node>.<input>" lines.',
            where=where,
        )
    params = {name: _param_spec(name, value, label, where) for name, value in raw_params.items()}
    return TemplateSidecar(path=path, description=description, params=params, sha256=hashlib.sha256(raw).hexdigest())


def _param_spec(name: str, value: Any, label: str, where: dict[str, Any]) -> ParamSpec:
    fields = {**where, "variable": name}
    if isinstance(value, (str, list)):
        return ParamSpec(name=name, inputs=_addresses(value, name, label, fields, short=True))
    if not isinstance(value, dict):
        raise TemplateError(
            f"{label}: parameter {name!r} must be a table or a node address, not {type(value).__name__}",
            hint=(
                f"Write [params.{name}] with default/type/input/description, "
                f'or {name} = "<node>.<input>" under [params].'
            ),
            where=fields,
        )
    _check_keys(value, PARAM_KEYS, f"{label}: parameter {name!r} has", fields)
    type_name = value.get("type", "any")
    if type_name not in PARAM_TYPES:
        raise TemplateError(
            f"{label}: parameter {name!r} has type {type_name!r}",
            hint=f"Use one of: {', '.join(PARAM_TYPES)}.",
            where=fields,
        )
    description = value.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{label}: parameter {name!r} has a 'description' that is not a string", where=fields)
    default = value.get("default", MISSING)
    if isinstance(default, (datetime.date, datetime.time)):
        default = default.isoformat()
    if default is not MISSING and not (_is_seed_name(name) and _is_random(default)):
        try:
            default = _coerce(default, type_name)
        except ValueError as err:
            raise TemplateError(
                f"{label}: the default of parameter {name!r} is not {_TYPE_WORDS[type_name]}: {default!r}",
                hint=f"Change the default or the type of {name!r}.",
                where=fields,
            ) from err
    inputs = _addresses(value.get("input", []), name, label, fields, short=False)
    return ParamSpec(name=name, default=default, type=type_name, inputs=inputs, description=description)


def _addresses(value: Any, name: str, label: str, where: dict[str, Any], *, short: bool) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise TemplateError(
            f"{label}: parameter {name!r} has an 'input' that is not an address or a list of addresses",
            hint='Write input = "6.text" or input = ["6.text", "7.text"].',
            where=where,
        )
    for address in items:
        try:
            inject.parse_address(address)
        except AddressError as err:
            hint = err.hint or ""
            if short:
                hint = (
                    f'Under [params], {name} = "<node>.<input>" maps the parameter to a node input; '
                    f"to give it a default write [params.{name}] with default = ... instead. " + hint
                )
            raise TemplateError(
                f"{label}: parameter {name!r} has a bad node address: {err.message}",
                hint=hint,
                where={**where, "address": address},
            ) from err
    return list(items)


def _check_keys(data: dict[str, Any], valid: tuple[str, ...], prefix: str, where: dict[str, Any]) -> None:
    unknown = [key for key in data if key not in valid]
    if unknown:
        raise TemplateError(
            f"{prefix} unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}",
            hint=f"Valid keys: {', '.join(valid)}.",
            where=where,
        )


# --------------------------------------------------------------------------------------------------
# parameters


_TYPE_WORDS = {"string": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "any": "any value"}


def _is_random(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "random"


def _is_seed_name(name: str) -> bool:
    return name.lower().endswith("seed")


def _coerce(value: Any, type_name: str) -> Any:
    """Convert ``value`` to the declared type; raise ValueError if it does not fit."""
    if type_name == "any":
        return value
    if value is None or isinstance(value, (list, dict)):
        raise ValueError(type_name)
    if type_name == "string":
        return value if isinstance(value, str) else str(value)
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ValueError(type_name)
    if isinstance(value, bool):
        raise ValueError(type_name)
    if type_name == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(type_name)
    if type_name == "float":
        number = float(value.strip()) if isinstance(value, str) else float(value)
        if not math.isfinite(number):
            raise ValueError(type_name)
        return number
    raise ValueError(type_name)


_system_random = random.SystemRandom()


def _resolve_params(template: Template, spec: JobSpec, where: dict[str, Any]) -> dict[str, Any]:
    declared = template.params
    resolved = {name: param.default for name, param in declared.items() if param.default is not MISSING}
    resolved.update(spec.params)
    for name, value in resolved.items():
        if _is_seed_name(name) and _is_random(value):
            resolved[name] = _system_random.randrange(0, SEED_RANGE)
    for name, param in declared.items():
        if name not in resolved or param.type == "any":
            continue
        try:
            resolved[name] = _coerce(resolved[name], param.type)
        except (ValueError, OverflowError) as err:
            raise TemplateError(
                f"Parameter {name!r} of template {template.name!r} must be {_TYPE_WORDS[param.type]}, "
                f"got {resolved[name]!r} (scenario {where['file']!r}, job {where['job']!r})",
                hint=f"Give {name!r} {_TYPE_WORDS[param.type]} in the scenario's params.",
                where={**where, "variable": name},
            ) from err
    return resolved


def _template_variables(template: Template) -> frozenset[str]:
    return _variables_of(template.kind, template.text, template.name)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Names Jinja reads as constants, operators or its own objects, never as plain variables.
_JINJA_NAMES = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
                          "else", "self", "loop", "super", "varargs", "kwargs", "caller"})


@functools.lru_cache(maxsize=4096)
def string_variables(value: str) -> tuple[str, ...]:
    """The undeclared variables of one Jinja string, in order of first use (``()`` if it does not
    parse). Cached: every job of a template asks about the same strings."""
    try:
        names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(value))
    except jinja2.TemplateSyntaxError:
        return ()
    return tuple(dict.fromkeys(m.group(0) for m in _NAME.finditer(value) if m.group(0) in names))


@functools.lru_cache(maxsize=64)
def _variables_of(kind: str, text: str, name: str) -> frozenset[str]:
    env = _env(json_output=kind == "jinja")
    sources = [text] if kind == "jinja" else [leaf for _path, leaf in _jinja_leaves(_parse_workflow(text, name), ())]
    found: set[str] = set()
    for source in sources:
        try:
            found |= jinja2.meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
    return frozenset(found)


#: Scenario key listing params a job gives that the template may leave unused (parse stage).
ALLOW_UNUSED_KEY = "allow_unused"
_MAX_LISTED = 30


def check_params_used(template: Template, spec: JobSpec, where: dict[str, Any]) -> None:
    """Raise :class:`TemplateError` if a param of ``spec`` lands nowhere in ``template``.

    A param is used when the template's Jinja reads it or it is a sidecar parameter or a role. Names
    in ``spec.options["allow_unused"]`` are exempt. The error names each param with the close matches
    among the template's names, or, for a role the workflow has more than once, the node inputs.
    """
    allowed = set(spec.options.get(ALLOW_UNUSED_KEY) or ())
    variables = _names_read(template.kind, template.text, template.name)
    declared = template.params
    unused = [name for name in spec.params if name not in declared and name not in variables and name not in allowed]
    if not unused:
        return
    known = sorted({*declared, *variables, *template.ambiguous_roles})
    problems: list[str] = []
    hints: list[str] = []
    details: dict[str, Any] = {"unused": {}, "ambiguous": {}, "template_params": known}
    for name in unused:
        nodes = template.ambiguous_roles.get(name)
        if nodes:
            problems.append(_ambiguous_role(template, name, nodes, details, hints))
            continue
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.7)
        details["unused"][name] = {"candidates": close}
        reason = template.role_reasons.get(name)
        if reason:
            problems.append(f"param {name!r} is not used: the workflow has no {name} role ({reason})")
        else:
            problems.append(f"param {name!r} is not used (no Jinja variable, sidecar parameter or role of that name)")
        if close:
            hints.append(f"Did you mean {' or '.join(repr(c) for c in close)} instead of {name!r}?")
    shown = ", ".join(known[:_MAX_LISTED]) + (", ..." if len(known) > _MAX_LISTED else "")
    hints.append(f"Template {template.name!r} takes: {shown}." if known else
                 f"Template {template.name!r} takes no params (no Jinja variables, no sidecar, no roles): "
                 'set node inputs with set: {"<node>.<input>": value}.')
    if details["unused"]:
        names = [name for name in details["unused"] if not details["unused"][name]["candidates"]]
        names = names or list(details["unused"])
        hints.append(f"A param given on purpose (a note for people) is listed under allow_unused: "
                     f"[{', '.join(names)}]; in a CSV, start its column name with '#' (#{names[0]}).")
    raise TemplateError(
        f"Template {template.name!r} cannot place every param of scenario {where['file']!r}, job "
        f"{where['job']!r}: " + "; ".join(problems),
        hint=" ".join(hints),
        where={**where, "variable": unused[0]},
        details={key: value for key, value in details.items() if value},
    )


@functools.lru_cache(maxsize=64)
def _names_read(kind: str, text: str, name: str) -> frozenset[str]:
    """Every variable name the template's Jinja reads (a loop's own variables too): the names a param
    can be used as. Only parsed, never compiled, so filters a plugin adds need not be known here."""
    sources = [text] if kind == "jinja" else [leaf for _path, leaf in _jinja_leaves(_parse_workflow(text, name), ())]
    found: set[str] = set()
    for source in sources:
        try:
            tree = _env(json_output=kind == "jinja").parse(source)
        except jinja2.TemplateSyntaxError:
            continue
        found.update(node.name for node in tree.find_all(jinja2.nodes.Name) if node.ctx == "load")
    return frozenset(found)


def _ambiguous_role(template: Template, name: str, nodes: list[str], details: dict[str, Any],
                    hints: list[str]) -> str:
    """The sentence for a role that several node inputs play; adds its details and hint."""
    workflow = _parse_workflow(template.text, template.name)
    titles = [inject.describe_node(workflow, n)["title"] for n in workflow]
    described = []
    example = ""
    for address in nodes:
        node_id, _, input_name = address.rpartition(".")
        node = inject.describe_node(workflow, node_id)
        described.append(f"{address} ({node['class_type']}" + (f", {node['title']!r})" if node["title"] else ")"))
        if not example and node["title"] and titles.count(node["title"]) == 1 and node["title"] not in workflow:
            example = f' or by title, set: {{"{node["title"]}.{input_name}": ...}}'
    details["ambiguous"][name] = {"nodes": nodes, "described": described}
    hints.append(
        f'{name!r} is {len(nodes)} node inputs in this workflow: set the one you mean by address under '
        f'set:, e.g. set: {{"{nodes[0]}": ...}}{example}; or name the inputs in a sidecar '
        f'{template.name}.toml ([params] {name} = "{nodes[0]}", or a list to fill several).')
    return f"param {name!r} is ambiguous: {len(nodes)} node inputs play that role: {', '.join(described)}"


# --------------------------------------------------------------------------------------------------
# Jinja


@functools.cache
def _env(*, json_output: bool) -> jinja2.sandbox.SandboxedEnvironment:
    return make_environment(json_output=json_output)


class _NotJSONError(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__(type(value).__name__)
        self.value = value


def _emit_json(value: Any) -> str:
    """``finalize`` of the ``.json.j2`` environment: every ``{{ }}`` becomes a JSON value."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the variable
    if isinstance(value, Markup):
        return str(value)  # already JSON text (| tojson)
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise _NotJSONError(value) from err


@functools.lru_cache(maxsize=4096)
def _compile_text(source: str) -> jinja2.Template:
    return _env(json_output=False).from_string(source)


@functools.lru_cache(maxsize=4096)
def _compile_expression(expression: str) -> Any:
    return _env(json_output=False).compile_expression(expression, undefined_to_none=False)


@functools.lru_cache(maxsize=64)
def _compile_whole(source: str) -> jinja2.Template:
    return _env(json_output=True).from_string(source)


class _Compiler:
    """Compiles template sources in hotfolder's own environments, or in a pair prepared by plugins.

    ``hooks=None`` uses the module's shared, cached environments. Otherwise the two environments are
    made on first use and passed to ``hooks.prepare_jinja2_environment``; compiled sources are cached
    per compiler (a plugin filter is resolved at compile time, so caches cannot be shared).
    """

    MAX_CACHED = 4096

    def __init__(self, hooks: RenderHooks | None) -> None:
        self._hooks = hooks
        self._envs: dict[bool, jinja2.sandbox.SandboxedEnvironment] = {}
        self._cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()

    def env(self, *, json_output: bool) -> jinja2.sandbox.SandboxedEnvironment:
        if self._hooks is None:
            return _env(json_output=json_output)
        with self._lock:
            env = self._envs.get(json_output)
            if env is None:
                env = make_environment(json_output=json_output)
                self._hooks.prepare_jinja2_environment(env=env)
                self._envs[json_output] = env
            return env

    def _cached(self, kind: str, source: str, make: Any) -> Any:
        with self._lock:
            found = self._cache.get((kind, source))
            if found is None:
                found = make()
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[(kind, source)] = found
            return found

    def text(self, source: str) -> jinja2.Template:
        if self._hooks is None:
            return _compile_text(source)
        return self._cached("text", source, lambda: self.env(json_output=False).from_string(source))

    def expression(self, expression: str) -> Any:
        if self._hooks is None:
            return _compile_expression(expression)
        return self._cached(
            "expression",
            expression,
            lambda: self.env(json_output=False).compile_expression(expression, undefined_to_none=False),
        )

    def whole(self, source: str) -> jinja2.Template:
        if self._hooks is None:
            return _compile_whole(source)
        return self._cached("whole", source, lambda: self.env(json_output=True).from_string(source))


_DEFAULT_COMPILER = _Compiler(None)
_COMPILERS: weakref.WeakKeyDictionary[Any, _Compiler] = weakref.WeakKeyDictionary()
_COMPILERS_LOCK = threading.Lock()


def _compiler_for(hooks: RenderHooks | None) -> _Compiler:
    if hooks is None:
        return _DEFAULT_COMPILER
    with _COMPILERS_LOCK:
        try:
            compiler = _COMPILERS.get(hooks)
            if compiler is None:
                compiler = _COMPILERS[hooks] = _Compiler(hooks)
        except TypeError:  # not weak-referenceable: no caching across calls
            compiler = _Compiler(hooks)
    return compiler


_SINGLE_EXPRESSION = re.compile(r"\{\{-?(?P<expr>.*?)-?\}\}", re.DOTALL)
_DELIMITERS = ("{{", "}}", "{%", "%}", "{#", "#}")


def _single_expression(text: str) -> str | None:
    """The expression inside ``text`` if ``text`` (stripped) is exactly one ``{{ expr }}``."""
    match = _SINGLE_EXPRESSION.fullmatch(text.strip())
    if match is None:
        return None
    expression = match.group("expr")
    if any(delimiter in expression for delimiter in _DELIMITERS) or not expression.strip():
        return None
    return expression.strip()


#: What rendering may raise: Jinja's own errors, and Python errors from expressions and filters.
_RENDER_ERRORS = (
    jinja2.TemplateError,
    ArithmeticError,
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    RuntimeError,
)


def _plain_value(value: Any) -> Any:
    """A native expression result as plain JSON data; raise _NotJSONError otherwise."""
    if value is None or type(value) in (bool, int):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJSONError(value)
        return value
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise _NotJSONError(value) from err


class _LeafRenderer:
    """Renders the Jinja strings of a ``.json`` template into a new structure."""

    def __init__(
        self, template: Template, context: dict[str, Any], where: dict[str, Any], compiler: _Compiler
    ) -> None:
        self.template = template
        self.context = context
        self.where = where
        self.compiler = compiler
        # a plugin may give the environment its own context class (variable lookup): then Jinja decides
        self.plain_lookup = compiler.env(json_output=False).context_class is jinja2.runtime.Context

    def render(self, value: Any, path: tuple[Any, ...] = ()) -> Any:
        if isinstance(value, str):
            if "{{" in value or "{%" in value:
                return self._render_string(value, path)
            return value
        if isinstance(value, dict):
            return {key: self.render(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.render(item, (*path, index)) for index, item in enumerate(value)]
        return value

    def _render_string(self, text: str, path: tuple[Any, ...]) -> Any:
        expression = _single_expression(text)
        try:
            if expression is not None:
                if (self.plain_lookup and expression in self.context and expression not in _JINJA_NAMES
                        and _NAME.fullmatch(expression)
                        and not isinstance(value := self.context[expression], jinja2.Undefined)):
                    # "{{ name }}", the commonest leaf: the value itself, as Jinja would give it (a plain
                    # variable reads the context as is), without a Jinja context per leaf
                    return _plain_value(value)
                result = self.compiler.expression(expression)(**self.context)
                if isinstance(result, jinja2.Undefined):
                    str(result)  # raises UndefinedError / SecurityError
                return _plain_value(result)
            rendered = self.compiler.text(text).render(self.context)
            budgets.current().emitted(len(rendered))
            return rendered
        except _NotJSONError as err:
            raise TemplateError(
                f"Template {self.template.name!r} produced a {type(err.value).__name__} value"
                f"{_located(path, None)}, which JSON cannot hold{_scenario(self.where)}",
                hint="An expression must give a string, number, boolean, null, list or mapping.",
                where={**self.where, **_path_fields(path)},
            ) from err
        except _RENDER_ERRORS as err:
            raise _render_error(err, self.template.name, self.where, path=path) from err


def _render_whole(template: Template, context: dict[str, Any], where: dict[str, Any], compiler: _Compiler) -> Any:
    try:
        rendered = compiler.whole(template.text).render(context)
        budgets.current().emitted(len(rendered))
    except _NotJSONError as err:
        line = _template_line(err)
        raise TemplateError(
            f"Template {template.name!r} emits a {type(err.value).__name__} value{_located((), line)}, "
            f"which JSON cannot hold{_scenario(where)}",
            hint="Every {{ ... }} in a .json.j2 template must give a string, number, boolean, null, list or mapping.",
            where={**where, **({"line": line} if line else {})},
        ) from err
    except _RENDER_ERRORS as err:
        raise _render_error(err, template.name, where, line=_template_line(err)) from err
    try:
        return json.loads(rendered)
    except json.JSONDecodeError as err:
        lines = rendered.split("\n")
        shown = lines[err.lineno - 1] if 0 < err.lineno <= len(lines) else ""
        if len(shown) > 200:
            start = max(0, err.colno - 100)
            shown = ("..." if start else "") + shown[start : start + 200] + "..."
        raise TemplateError(
            f"Template {template.name!r} rendered invalid JSON: {err.msg} at line {err.lineno}, column "
            f"{err.colno} of the rendered text{_scenario(where)}\n  {shown}",
            hint=(
                "In a .json.j2 template every {{ ... }} is emitted as a JSON value, quotes included: write "
                '"text": {{ prompt }}, not "text": "{{ prompt }}"; build strings inside the braces '
                "({{ 'a photo of ' ~ subject }}). Check the commas around {% for %} loops "
                "({% if not loop.last %},{% endif %})."
            ),
            where={**where, "line": err.lineno, "column": err.colno},
        ) from err


def _compile_checked(text: str, name: str, compiler: _Compiler) -> None:
    try:
        compiler.whole(text)
    except jinja2.TemplateSyntaxError as err:
        raise _render_error(err, name, {"template": name}, line=err.lineno) from err


def _template_line(err: BaseException) -> int | None:
    """The template line an error was raised on (Jinja rewrites tracebacks to template lines)."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return err.lineno
    line = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


def _render_error(
    err: BaseException,
    name: str,
    where: dict[str, Any],
    *,
    path: tuple[Any, ...] = (),
    line: int | None = None,
) -> TemplateError:
    fields = {**where, **_path_fields(path)}
    if line is not None and not path:
        fields["line"] = line
    located = _located(path, line) + _scenario(where)
    if isinstance(err, jinja2.exceptions.SecurityError):
        message = f"Template {name!r} tried an unsafe operation{located}: {err}"
        hint = (
            "Templates are sandboxed: attributes starting with '_', Python internals and changing "
            "lists or dicts are not allowed. Use the parameters' values only."
        )
    elif isinstance(err, jinja2.UndefinedError):
        match = _UNDEFINED_NAME.match(str(err.message or ""))
        if match:
            variable = match.group(1)
            fields["variable"] = variable
            message = f"Template {name!r} uses undefined variable {variable!r}{located}"
            hint = (
                f"Add {variable!r} under 'params:' in the scenario, or give it a default in the "
                f"template's sidecar {name}.toml ([params.{variable}] default = ...)."
            )
        else:
            message = f"Template {name!r} uses something undefined{located}: {err.message}"
            hint = "Check the attribute or key name against the params the scenario gives."
    elif isinstance(err, jinja2.TemplateSyntaxError):
        message = f"Template {name!r} has a Jinja syntax error{located}: {err.message}"
        hint = "Check the {{ ... }} / {% ... %} tags near that line: every tag needs its closing braces."
    else:
        message = f"Template {name!r} failed to render{located}: {type(err).__name__}: {err}"
        hint = "Check the expressions in the template against the parameter values given."
    return TemplateError(message, hint=hint, where=fields)


def _path_fields(path: tuple[Any, ...]) -> dict[str, Any]:
    if not path:
        return {}
    fields: dict[str, Any] = {"node": str(path[0])}
    if len(path) >= 3 and path[1] == "inputs":
        fields["input"] = str(path[2])
    elif len(path) >= 2:
        fields["key"] = ".".join(str(part) for part in path[1:])
    return fields


def _located(path: tuple[Any, ...], line: int | None) -> str:
    if path:
        fields = _path_fields(path)
        text = f" in node {fields['node']!r}"
        if "input" in fields:
            text += f" input {fields['input']!r}"
        elif "key" in fields:
            text += f" at {fields['key']!r}"
        return text
    if line is not None:
        return f" at line {line}"
    return ""


def _scenario(where: dict[str, Any]) -> str:
    if "file" in where and "job" in where:
        return f" (scenario {where['file']!r}, job {where['job']!r})"
    return ""


# --------------------------------------------------------------------------------------------------
# JSON and the API format


@functools.lru_cache(maxsize=64)
def _json_workflow(text: str, name: str) -> dict[str, Any]:
    """Parse and check a ``.json`` template, compiling its Jinja strings in the default environment
    (cached; callers must not mutate the result)."""
    workflow = _parse_workflow(text, name)
    _check_leaves(workflow, name, _DEFAULT_COMPILER)
    return workflow


@functools.lru_cache(maxsize=64)
def _parse_json(text: str, name: str) -> Any:
    """Parse a ``.json`` template's text (cached; do not mutate the result)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TemplateError(
            f"Template {name!r} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
            hint="Fix the JSON (a missing comma or quote, or a trailing comma, near that position), "
            "or export the workflow again with 'Save (API Format)'.",
            where={"template": name, "line": err.lineno, "column": err.colno},
        ) from err


@functools.lru_cache(maxsize=64)
def _parse_workflow(text: str, name: str) -> dict[str, Any]:
    """Parse a ``.json`` template and check it is an API workflow (cached; do not mutate the result)."""
    data = _parse_json(text, name)
    _check_api_format(data, name, {"template": name}, rendered=False)
    workflow: dict[str, Any] = data
    return workflow


def _check_leaves(workflow: dict[str, Any], name: str, compiler: _Compiler) -> None:
    """Compile every Jinja string of a ``.json`` template; raise :class:`TemplateError` on a syntax error."""
    for path, source in _jinja_leaves(workflow, ()):
        expression = _single_expression(source)
        try:
            if expression is not None:
                compiler.expression(expression)
            else:
                compiler.text(source)
        except jinja2.TemplateSyntaxError as err:
            raise _render_error(err, name, {"template": name}, path=path) from err


def _jinja_leaves(value: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _jinja_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _jinja_leaves(item, (*path, index))


def _check_api_format(data: Any, name: str, where: dict[str, Any], *, rendered: bool) -> None:
    what = "rendered to" if rendered else "is"
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise TemplateError(
            f"Template {name!r} is a ComfyUI UI workflow, not API format",
            hint=API_FORMAT_HINT.format(name=name),
            where=where,
        )
    if not isinstance(data, dict):
        raise TemplateError(
            f"Template {name!r} {what} a JSON {type(data).__name__}, not an API workflow (an object of nodes)",
            hint=API_FORMAT_HINT.format(name=name),
            where=where,
        )
    if not data:
        raise TemplateError(
            f"Template {name!r} {what} an empty workflow (no nodes)",
            hint=API_FORMAT_HINT.format(name=name),
            where=where,
        )
    for node_id, node in data.items():
        if not isinstance(node, dict):
            problem = f"is a JSON {type(node).__name__}, not a node object"
        elif not isinstance(node.get("class_type"), str):
            problem = "has no 'class_type' string"
        elif not isinstance(node.get("inputs"), dict):
            problem = "has no 'inputs' object"
        else:
            continue
        hint = 'An API workflow maps node ids to {"class_type": ..., "inputs": {...}}. ' + API_FORMAT_HINT.format(
            name=name
        )
        if node_id == "prompt" and len(data) <= 3 and isinstance(node, dict):
            hint = "This looks like a /prompt request body: save only the value of its 'prompt' key. " + hint
        raise TemplateError(
            f"Template {name!r} {what} not a ComfyUI API workflow: node {node_id!r} {problem}",
            hint=hint,
            where={**where, "node": node_id},
        )
