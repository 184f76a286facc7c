"""Library side of ``hotfolder check`` and ``hotfolder init``."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.config import CONFIG_NAME, DEFAULT_SERVER, Settings
from hotfolder.errors import HotfolderError, TemplateError
from hotfolder.models import JobSpec
from hotfolder.stages import render

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
    """Config (already loaded), every template, every server. Never raises for a user mistake."""
    results = [Check("config", True, f"loaded from {settings.config_file or 'defaults'}")]
    for folder, label in ((settings.inbox, "inbox"), (settings.outbox, "outbox"), (settings.templates, "templates")):
        results.append(Check(label, folder.is_dir(), str(folder) if folder.is_dir() else f"{folder} does not exist (hotfolder init creates it)"))
    names = list_templates(settings.templates)
    if not names:
        results.append(Check("templates", False, f"no templates in {settings.templates}"))
    for name in names:
        results.append(_check_template(settings, name, hooks))
    for server in settings.servers:
        http = ComfyHTTP(server.display_url, display_url=server.display_url, headers=server.request_headers(),
                         verify=server.verify, connect_timeout=settings.connect_timeout, read_timeout=settings.http_timeout)
        try:
            stats = http.system_stats()
            version = (stats.get("system") or {}).get("comfyui_version", "unknown version")
            results.append(Check(f"server {server.display_url}", True, f"reachable, ComfyUI {version}"))
        except HotfolderError as err:
            results.append(Check(f"server {server.display_url}", False, err.message))
        finally:
            http.close()
    return results


def _check_template(settings: Settings, name: str, hooks: Any = None) -> Check:
    what = f"template {name}"
    try:
        template = render.load_template(settings.templates, name, hooks=hooks)
        spec = JobSpec(index=1, name="check", source=Path("check"), template=name)
        workflow, _ = render.render_workflow(template, spec, hooks=hooks)
    except TemplateError as err:
        variable = err.where.get("variable")
        if variable:
            return Check(what, True, f"valid; needs parameter {variable!r} from each scenario (no default)")
        return Check(what, False, str(err))
    except HotfolderError as err:
        return Check(what, False, str(err))
    return Check(what, True, f"valid, {len(workflow)} nodes")


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
