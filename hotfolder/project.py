"""Library side of ``hotfolder check`` and ``hotfolder init``."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.comfy import reach
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.config import CONFIG_NAME, DEFAULT_SERVER, Settings
from hotfolder.errors import HotfolderError, ServerUnavailable, TemplateError
from hotfolder.spec import JobSpec
from hotfolder.templates import load, params, render, validate
from hotfolder.templates.problems import ERROR, Problem, ValidationError

EXAMPLES = "examples"


@dataclass
class Check:
    what: str
    ok: bool
    message: str


def list_templates(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    names = set()
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith("."):
            if path.name.endswith(".json.j2"):
                names.add(path.name[: -len(".json.j2")])
            elif path.suffix == ".json":
                names.add(path.stem)
    return sorted(names)


def check_setup(settings: Settings, *, hooks: Any = None) -> list[Check]:
    """Config (already loaded), folders, every server, every template. Never raises for a user mistake.

    Each reachable server's ``/object_info`` is read once; every template is rendered with its
    defaults (placeholders for parameters without one: ``""``, or ``0``/``false`` for a declared
    number or boolean; problems on inputs those fill are not reported) and validated against each of
    those servers. A template is reported invalid (not ok) when no reachable server would accept it;
    one that some servers refuse is ok with a note naming them. Every template is checked, so one run
    reports every invalid template. A UI-format template is converted with the first server's
    ``/object_info``.
    """
    results = [Check("config", True, f"loaded from {settings.config_file or 'defaults'}")]
    for folder, label in ((settings.inbox, "inbox"), (settings.outbox, "outbox"), (settings.templates, "templates")):
        if label == "outbox" and settings.outbox_url:
            results.append(Check(label, True, f"{settings.outbox_url} (object storage, staged in {folder})"))
            continue
        results.append(Check(label, folder.is_dir(), str(folder) if folder.is_dir() else f"{folder} does not exist (hotfolder init creates it)"))
    for destination in settings.destinations:  # [destinations]: what a scenario's destination: may pick
        label, folder = f"destination {destination.name}", destination.folder
        if destination.url:
            results.append(Check(label, True, f"{destination.url} (object storage, staged in {folder})"))
        else:
            results.append(Check(label, folder.is_dir(), str(folder) if folder.is_dir() else
                                 f"{folder} does not exist (hotfolder run creates it)"))
    if settings.inputs_root is not None:
        ok = settings.inputs_root.is_dir()
        results.append(Check("inputs_root", ok, str(settings.inputs_root) if ok else f"{settings.inputs_root} does not exist"))
    infos: list[tuple[str, Mapping[str, Any]]] = []
    for server in settings.servers:
        http = ComfyHTTP(server.display_url, display_url=server.display_url, headers=server.request_headers(),
                         verify=server.verify, connect_timeout=settings.connect_timeout, read_timeout=settings.http_timeout)
        what = f"server {server.display_url}"
        try:
            stats = http.system_stats()
            version = (stats.get("system") or {}).get("comfyui_version", "unknown version")
            try:
                info = http.object_info()
            except HotfolderError as err:
                results.append(Check(what, False, f"reachable, ComfyUI {version}, but /object_info failed: {err.message}"))
            else:
                infos.append((server.display_url, info))
                results.append(Check(what, True, f"reachable, ComfyUI {version}, {len(info)} node types"))
        except ServerUnavailable as err:
            failed, todo = reach.explain(err, server.display_url)
            results.append(Check(what, False, f"not answering: {failed}. {todo}"))
        except HotfolderError as err:
            results.append(Check(what, False, err.message))
        finally:
            http.close()
    names = list_templates(settings.templates)
    if not names:
        results.append(Check("templates", False, f"no templates in {settings.templates}"))
    for name in names:
        results.append(check_template(settings, name, infos, hooks=hooks))
    return results


def check_template(settings: Settings, name: str, servers: list[tuple[str, Mapping[str, Any]]], *,
                   hooks: Any = None) -> Check:
    """Load, render with defaults and validate template ``name`` against ``servers`` ((url, object_info)
    pairs; none: load and render only). See :func:`check_setup`."""
    what = f"template {name}"
    source: load.ObjectInfoSource | None = None
    if servers:
        first_url, first_info = servers[0]
        source = lambda: (first_info, (first_url, "check"))  # noqa: E731
    try:
        template = load.load_template(settings.templates, name, hooks=hooks, object_info=source)
    except load.ObjectInfoUnavailable:
        return Check(what, True, "a ComfyUI UI workflow: it is converted to API format with a server's "
                                 "/object_info, and no server answers now, so it is not checked further")
    except HotfolderError as err:
        return Check(what, False, str(err))
    missing = params.required_variables(template, hooks=hooks)
    placeholders = {variable: _placeholder(template, variable) for variable in sorted(missing)}
    spec = JobSpec(index=1, name="check", source=Path("check"), template=name, params=placeholders)
    notes: list[str] = []
    if template.source_format == "ui":
        notes.append(f"UI workflow, converted with the /object_info of {servers[0][0]}")
    if template.roles:
        notes.append("parameters found by role: " + ", ".join(f"{r}={a}" for r, a in template.roles.items()))
    if missing:
        notes.append("needs " + ", ".join(repr(v) for v in sorted(missing)) + " from each scenario (no default)")
    try:
        workflow, _ = render.render_workflow(template, spec, hooks=hooks)
    except TemplateError as err:
        if missing:
            return Check(what, True, "; ".join(notes) + f"; renders only with real values, so not validated ({err.message})")
        return Check(what, False, str(err))
    except HotfolderError as err:
        return Check(what, False, str(err))
    summary = f"valid, {len(workflow)} nodes"
    if not servers:
        return Check(what, True, "; ".join([summary + " (not validated: no server reachable)", *notes]))
    fields = params.scenario_fields(template, spec, workflow)
    filled = {f"params.{variable}" for variable in placeholders}
    refusals: list[tuple[str, list[Problem]]] = []
    for url, info in servers:
        problems = [p for p in validate.validate_workflow(workflow, info, scenario_fields=fields)
                    if p.severity == ERROR and not _filled_by(p, filled)]
        if problems:
            refusals.append((url, problems))
    if len(refusals) == len(servers):
        url, problems = refusals[0]
        refused = ValidationError.from_problems(problems, subject=f"Template {name!r} with its defaults", server=url)
        message = refused.message
        if len(refusals) > 1:
            message += "\n(The other servers refuse it too: " + ", ".join(u for u, _ in refusals[1:]) + ".)"
        return Check(what, False, f"{message}\nHint: {refused.hint}")
    accepted = len(servers) - len(refusals)
    summary += f", accepted by {accepted} of {len(servers)} server(s)" if len(servers) > 1 else f", accepted by {servers[0][0]}"
    for url, problems in refusals:
        notes.append(f"refused by {url}: {problems[0].describe()}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return Check(what, True, "; ".join([summary, *notes]))


def _placeholder(template: load.Template, variable: str) -> Any:
    """A stand-in value for a parameter without a default: typed if the sidecar declares a type."""
    param = template.params.get(variable)
    kind = param.type if param is not None else "any"
    return {"int": 0, "float": 0.0, "bool": False}.get(kind, "")


def _filled_by(problem: Problem, filled: set[str]) -> bool:
    return bool(problem.field) and any(part.strip() in filled for part in (problem.field or "").split(","))


CONFIG_TEMPLATE = f'''# hotfolder configuration. Every key is optional; these are the defaults.
inbox = "inbox"
outbox = "outbox"
templates = "templates"
plugins = "plugins"
servers = ["{DEFAULT_SERVER}"]
default_template = "invert"
settle_seconds = 1.0
queue_depth = 2
job_timeout = 3600.0
'''


def init_project(folder: Path) -> list[Path]:
    """Create the folders, a hotfolder.toml and the example templates; never overwrite. Returns what it made."""
    made = []
    for sub in ("inbox", "outbox", "templates", "plugins"):
        path = folder / sub
        if not path.exists():
            path.mkdir(parents=True)
            made.append(path)
    config = folder / CONFIG_NAME
    if not config.exists():
        config.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        made.append(config)
    for resource in importlib.resources.files("hotfolder").joinpath(EXAMPLES).iterdir():
        target = folder / "templates" / resource.name
        if resource.name.startswith(("_", ".")) or target.exists():
            continue
        target.write_bytes(resource.read_bytes())
        made.append(target)
    return made
