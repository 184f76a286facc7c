"""Finding, reading and checking templates: :func:`load_template`, :class:`TemplateCache`.

Templates (``templates/<name>.json`` is looked up before ``templates/<name>.json.j2``)
    ``<name>.json`` (kind ``"json"``): a ComfyUI workflow in API format, valid JSON. Any string value
    (never a key) containing ``{{`` or ``{%`` is Jinja (rendering: :mod:`hotfolder.templates.render`).

    ``<name>.json.j2`` (kind ``"jinja"``): the whole file is Jinja and must render to JSON.

    A ``.json`` template that is not in API format is offered to the ``parse_workflow`` plugins
    (:meth:`hotfolder.plugins.Hooks.parse_workflow`); the built-in one
    (:mod:`hotfolder.default_plugins.ui_workflows`) converts a ComfyUI *UI* workflow (``nodes``/``links``,
    what the plain Save button writes) with :func:`hotfolder.templates.convert.convert_ui_workflow`,
    given a server's ``/object_info`` (``object_info=``); conversions are cached by (template sha256,
    object_info version). Without one it is refused (:class:`ObjectInfoUnavailable`) with directions
    for exporting the API format.

Sidecar ``<name>.toml`` (optional, beside the template): a description and parameters
(:mod:`hotfolder.templates.sidecar`).

Roles (a ``.json`` template with no sidecar and no Jinja: a plain export)
    :func:`hotfolder.templates.roles.find_roles` finds the usual parameters in the graph (``prompt``,
    ``negative``, ``seed``, ``steps``, ``cfg``, ``sampler``, ``scheduler``, ``denoise``, ``width``,
    ``height``, ``batch_size``, ``checkpoint``, ``prefix``, ``image``), and each found role is a
    parameter as if the sidecar had ``[params] prompt = "6.text"``: ``params.prompt`` fills the
    positive prompt, whatever the node ids are. A sidecar, when there is one, wins (no roles then).

Every failure is a :class:`~hotfolder.errors.TemplateError` whose ``where`` holds ``template`` and, as
far as known, ``line``, ``column``, ``node``, ``input``, ``variable``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import jinja2

from hotfolder.errors import TemplateError
from hotfolder.paths import display_name, fits
from hotfolder.templates import roles
from hotfolder.templates.cache import compiler_for
from hotfolder.templates.sidecar import ParamSpec, TemplateSidecar, decode_text, load_sidecar
from hotfolder.templates.workflow import (
    API_FORMAT_HINT,
    check_leaves,
    compile_checked,
    is_api_workflow,
    jinja_leaves,
    parse_json,
    parse_workflow,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hotfolder.spec import JobSpec
    from hotfolder.templates import convert

logger = logging.getLogger(__name__)

#: ``/object_info`` for converting UI templates: a mapping, or a callable returning ``(object_info,
#: version key)`` or ``None`` when no server answers (:mod:`hotfolder.comfy.object_info` has such
#: callables). The key (e.g. server name and ``ObjectInfoCache.version``) lets conversions be cached.
ObjectInfoSource: TypeAlias = "Mapping[str, Any] | Callable[[], tuple[Mapping[str, Any], Hashable] | None]"

#: Template file suffixes, in lookup order.
TEMPLATE_SUFFIXES: tuple[str, ...] = (".json", ".json.j2")


@dataclass(frozen=True)
class Template:
    """A loaded, checked template. ``kind`` is ``"json"`` or ``"jinja"``; ``sha256`` is of the file's bytes.

    ``source_format`` is ``"api"``, or for a template converted to API format by a ``parse_workflow``
    plugin what it was (``"ui"`` for a UI workflow; ``text`` is then the converted API workflow and
    ``conversion`` says with which ``/object_info`` and what the converter noted). ``roles`` maps role names to node inputs for a plain export without a
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


class RenderHooks(Protocol):
    """What loading and rendering need from the plugin system (:class:`hotfolder.plugins.Hooks` provides it)."""

    def prepare_jinja2_environment(self, *, env: jinja2.Environment) -> None: ...

    def parse_workflow(self, *, data: Any, name: str,
                       object_info: Callable[[], Mapping[str, Any]]) -> convert.Conversion | None: ...

    def prepare_template_context(self, *, context: dict[str, Any], spec: JobSpec) -> None: ...

    def prepare_workflow(self, *, workflow: dict[str, Any], spec: JobSpec, template: Template) -> None: ...


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
    filters are known). A ``.json`` template in another format (a UI workflow) is converted, with
    ``object_info`` (a mapping, or a callable giving ``(object_info, version key)`` or ``None``; called
    only when a conversion needs it). Raise :class:`TemplateError` if the name is not a plain file name,
    no such template exists (the hint lists those that do), or the template or its sidecar is
    malformed; :class:`~hotfolder.templates.convert.ConversionError` if a UI workflow cannot be
    converted faithfully, and :class:`ObjectInfoUnavailable` if it needs ``object_info`` and there is none.
    """
    base, suffixes = split_name(name)
    for suffix in suffixes:
        path = templates_dir / f"{base}{suffix}"
        if path.is_file():
            break
    else:
        raise _not_found(templates_dir, name)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TemplateError(
            f"Template {base!r} cannot be read ({path.name!r}): {err.strerror or err}",
            hint="Check the file's permissions.",
            where={"template": base},
        ) from err
    text = decode_text(data, f"Template {base!r} ({path.name!r})", {"template": base})
    kind = "jinja" if suffix == ".json.j2" else "json"
    sha256 = hashlib.sha256(data).hexdigest()
    source_format, conversion = "api", None
    if kind == "json":
        parsed = parse_json(text, base)
        if not is_api_workflow(parsed):
            converted = _converted(parsed, base, sha256, object_info, hooks)
            if converted is not None:
                text, conversion = converted
                source_format = conversion["from"]
    compiler = compiler_for(hooks)
    if kind == "json":
        check_leaves(parse_workflow(text, base), base, compiler)
    else:
        compile_checked(text, base, compiler)
    sidecar = load_sidecar(templates_dir / f"{base}.toml", base)
    found = roles.RoleMap()
    if sidecar is None and kind == "json":
        workflow = parse_workflow(text, base)
        if not any(True for _ in jinja_leaves(workflow, ())):
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


def _not_found(templates_dir: Path, name: str) -> TemplateError:
    available = available_templates(templates_dir)
    if available:
        hint = "Available templates: " + ", ".join(repr(n) for n in available) + "."
    elif templates_dir.is_dir():
        hint = f"The templates folder {str(templates_dir)!r} has no *.json or *.json.j2 files yet."
    else:
        hint = f"The templates folder {str(templates_dir)!r} does not exist; check 'templates' in hotfolder.toml."
    return TemplateError(
        f"Template {name!r} not found in {str(templates_dir)!r}",
        hint=hint,
        where={"template": name},
        details={"available": available},
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
            base, suffixes = split_name(name)
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



def split_name(name: Any) -> tuple[str, tuple[str, ...]]:
    """``(base name, suffixes to try)`` of a template name; raise :class:`TemplateError` for a name
    that is not a plain, usable file name."""
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


# --------------------------------------------------------------------------------------------------
# templates in another format (UI workflows)


class ObjectInfoUnavailable(TemplateError):
    """A UI-format template needs a server's ``/object_info`` to be converted and none was available."""


class _ObjectInfoOnce:
    """The ``object_info`` argument of ``parse_workflow``: reads the source on first call, then gives the
    same copy; raises :class:`ObjectInfoUnavailable` when there is none. ``key`` is the copy's version key."""

    def __init__(self, source: ObjectInfoSource | None, name: str) -> None:
        self._source = source
        self._name = name
        self.called = False
        self.info: Mapping[str, Any] | None = None
        self.key: Hashable = None

    def __call__(self) -> Mapping[str, Any]:
        if not self.called:
            self.called = True
            if isinstance(self._source, Mapping):
                self.info = self._source
            elif self._source is not None:
                found = self._source()
                if found is not None:
                    self.info, self.key = found
        if self.info is None:
            raise ObjectInfoUnavailable(
                f"Template {self._name!r} is a ComfyUI UI workflow, not API format",
                hint="hotfolder converts UI workflows with a ComfyUI server's /object_info, and no server answered "
                     "(start ComfyUI, or check 'servers' in hotfolder.toml). " + API_FORMAT_HINT.format(name=self._name),
                where={"template": self._name},
            )
        return self.info


#: Converted templates: sha256 -> object_info version key -> (API text, description of the conversion).
_CONVERSIONS: dict[str, dict[Hashable, tuple[str, dict[str, Any]]]] = {}
_CONVERSIONS_LOCK = threading.Lock()
_MAX_CONVERSIONS = 256


def _converted(data: Any, name: str, sha256: str, object_info: ObjectInfoSource | None,
               hooks: RenderHooks | None) -> tuple[str, dict[str, Any]] | None:
    """The API text of template ``name`` (parsed: ``data``, not API format) and a description of the
    conversion, or ``None`` when no ``parse_workflow`` plugin (the built-in converter without ``hooks``)
    knows its format. Cached by (sha256, object_info version key) when the source gives a key."""
    access = _ObjectInfoOnce(object_info, name)
    with _CONVERSIONS_LOCK:
        known = _CONVERSIONS.get(sha256)
    if known is not None:  # converted before with an /object_info: the current one's version picks the copy
        access()
        cached = known.get(access.key) if access.key is not None else None
        if cached is not None:
            return cached
    if hooks is None:
        from hotfolder.templates import convert  # noqa: PLC0415 - UI workflows only: spares every start its import

        result = convert.convert_if_ui(data, name, access)
    else:
        result = hooks.parse_workflow(data=data, name=name, object_info=access)
    if result is None:
        return None
    for warning in result.warnings:
        logger.info("Template %r (UI workflow) converted: %s", name, warning)
    key = access.key
    described = {
        "from": result.source_format,
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
            _CONVERSIONS.setdefault(sha256, {})[key] = out
    return out
