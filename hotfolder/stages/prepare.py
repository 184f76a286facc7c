"""Preparing a job before routing, with or without a daemon: render a scenario's jobs (template, params,
node inputs and input files; for the daemon and for ``hotfolder render`` and ``check``) and describe the
template a job used."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder import budgets, plugins
from hotfolder.config import Settings
from hotfolder.errors import ScenarioError, TemplateError
from hotfolder.paths import open_regular
from hotfolder.record import FileRecord
from hotfolder.spec import JobSpec
from hotfolder.stages import parse, upload
from hotfolder.templates import load, render
from hotfolder.templates.params import scenario_fields


@dataclass
class Rendered:
    """One job rendered: the workflow to submit (input files under their server names), the resolved
    params, the template, the input files and the scenario fields of the workflow's inputs."""

    spec: JobSpec
    workflow: dict[str, Any]
    params: dict[str, Any]
    template: load.Template
    inputs: list[upload.InputFile]
    fields: dict[str, str]


def inputs_base(settings: Settings, record: FileRecord) -> Path:
    """The folder a claimed file's ``inputs:`` paths are relative to: the one it was dropped into."""
    return Path(record.original_path).parent if record.original_path else settings.inbox


def input_roots(settings: Settings) -> list[Path]:
    """The folders ``inputs:`` files may come from: the inbox, and ``inputs_root`` if set."""
    return [settings.inbox] + ([settings.inputs_root] if settings.inputs_root is not None else [])


def render_job(settings: Settings, spec: JobSpec, templates: dict[str, load.Template],
               hooks: plugins.Hooks | None = None, *, base: Path | None = None,
               object_info: load.ObjectInfoSource | None = None,
               cache: load.TemplateCache | None = None, copy_dir: Path | None = None,
               read_inputs: dict[tuple[int, ...], Any] | None = None,
               cancel: threading.Event | None = None) -> Rendered:
    """Render one job's workflow (template, node inputs); ``templates`` caches loaded templates by name.

    With ``hooks``, plugins take part and the job's choice of post-processors is checked now, before
    anything is submitted. ``inputs:`` paths are relative to ``base`` (default: the inbox); each file
    is found, checked and hashed, and its node input set to the name it will have on the server; with
    ``copy_dir`` (the job folder) a private copy is taken to upload from (``read_inputs``: what the
    file's earlier jobs read, see :func:`hotfolder.stages.upload.resolve_inputs`).
    ``object_info`` converts a UI-format template (:func:`hotfolder.templates.load.load_template`);
    ``cache`` keeps templates loaded across files while they are unchanged. The template renders under
    the settings' render budget (``cancel`` set: it gives up with :class:`hotfolder.budgets.RenderCancelled`)."""
    name = spec.template or settings.default_template
    where = {"file": spec.source.name, "job": spec.name}
    if not name:
        raise TemplateError(
            f"Job {spec.name!r} names no template and no default_template is configured.",
            hint="Add 'template: <name>' to the scenario or default_template to hotfolder.toml.", where=where,
        )
    if hooks is not None:
        plugins.parse_postprocess(hooks, chosen_postprocess(settings, spec.to_dict()))
    inputs = upload.resolve_inputs(spec.inputs, base=base or settings.inbox, roots=input_roots(settings), where=where,
                                   copy_dir=copy_dir, cache=read_inputs)
    if name not in templates:
        if cache is not None:
            templates[name] = cache.get(settings.templates, name, hooks=hooks, object_info=object_info)
        else:
            templates[name] = load.load_template(settings.templates, name, hooks=hooks, object_info=object_info)
    template = templates[name]
    budget = budgets.RenderBudget(budgets.Limits.from_settings(settings), cancel=cancel)
    workflow, params = render.render_workflow(template, spec, hooks=hooks, budget=budget)
    upload.inject_inputs(workflow, inputs, where={**where, "template": template.name})
    return Rendered(spec=spec, workflow=workflow, params=params, template=template, inputs=inputs,
                    fields=scenario_fields(template, spec, workflow))


def template_record(rendered: Rendered) -> dict[str, Any]:
    """What the job record and the sidecar say about the template a job used."""
    template = rendered.template
    out: dict[str, Any] = {
        "name": template.name, "file": template.path.name, "sha256": template.sha256,
        "sidecar_sha256": template.sidecar.sha256 if template.sidecar else None,
        "format": template.source_format,
        "fields": rendered.fields,
    }
    if template.roles:
        out["roles"] = dict(template.roles)
    if template.conversion is not None:
        out["conversion"] = template.conversion
    return out


def chosen_postprocess(settings: Settings, spec: dict[str, Any]) -> Any:
    """The job's ``postprocess:`` if its scenario has one, else ``postprocess`` from hotfolder.toml."""
    options = spec.get("options") or {}
    return options["postprocess"] if "postprocess" in options else settings.postprocess


def render_file_jobs(settings: Settings, path: Path, hooks: plugins.Hooks | None = None, *,
                     object_info: load.ObjectInfoSource | None = None) -> list[Rendered]:
    """Every job of scenario ``path``, rendered as the daemon would before routing (input files under
    the names they will get on the server; nothing is uploaded)."""
    # Like the daemon's intake: opened without following a link or blocking (a FIFO, a device), regular
    # files only, and no larger than max_file_size (/dev/zero read until memory ran out).
    try:
        fd, st = open_regular(path)
    except OSError as err:
        raise ScenarioError(f"Cannot read scenario file {str(path)!r}: {err.strerror}.", where={"file": str(path)}) from err
    try:
        if st.st_size > settings.max_file_size:
            raise ScenarioError(
                f"Scenario file {str(path)!r} is {st.st_size} bytes, over the limit of {settings.max_file_size} bytes.",
                hint="Split it into smaller files, or raise max_file_size in hotfolder.toml.", where={"file": str(path)})
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    specs = parse.parse_scenario(path, data, default_template=settings.default_template, hooks=hooks,
                                 limits=budgets.Limits.from_settings(settings), destinations=settings.destination_names)
    templates: dict[str, load.Template] = {}
    base = path.absolute().parent
    read_inputs: dict[tuple[int, ...], Any] = {}  # each input file read once for all the file's jobs
    return [render_job(settings, spec, templates, hooks, base=base, object_info=object_info, read_inputs=read_inputs)
            for spec in specs]
