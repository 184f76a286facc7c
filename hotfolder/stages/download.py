"""Stage 8 of 10: download. Stream every output file listed in the prompt's history into staging.

Every entry that names a file (``filename``, with ``subfolder`` and ``type``) is downloaded, whatever its
key: ``images``, ``gifs``, ``videos``, ``audio``, ``3d`` or a custom node's own. Other UI values (text from
PreviewAny, numbers, entries without a ``filename`` string) are kept for the sidecar. An entry that names a
file ``/view`` cannot serve (a path in the name, a subfolder that leaves the server's folder, a type other
than output, temp or input) is the server's malformed answer: an :class:`OutputError` that names it. Files are streamed through ``/view`` to disk with their
sha256 computed on the way; nothing is held in memory. Local names are the server's base names made safe
(:func:`hotfolder.paths.safe_filename`: never a path, bounded in bytes), with a suffix if two outputs
share one; the server's name is kept in the entry (``server_filename``, as valid text). Each entry gets
the file's media facts (``media``: kind, format, size, frame rate, frame count, duration) from
:func:`hotfolder.media.probe`, with the entry's ``metadata`` when the server gave one; a file that cannot
be probed has no ``media`` (the facts are a courtesy, never a reason to fail the job).
:func:`download_job` does it for a job, retrying a failed output and waiting while the server is away.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder import failpoints, media
from hotfolder.comfy.client import ComfyClient, PromptResult
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import OutputError, ServerUnavailable
from hotfolder.fsguard import at_path
from hotfolder.paths import display_name, own_dir, safe_filename, unique_name
from hotfolder.stages.context import JobContext

logger = logging.getLogger(__name__)

MAX_DOWNLOAD_ERRORS = 5


def download_job(ctx: JobContext, client: ComfyClient, result: PromptResult) -> None:
    """Download the outputs of the job's finished prompt into its staging folder; the job becomes
    ``downloaded``. An output that fails is tried again (up to MAX_DOWNLOAD_ERRORS, not over a budget)."""
    job, record, settings = ctx.job, ctx.record, ctx.settings
    refs, values = list_outputs(result.outputs, include_temp=settings.download_temp, server=client.display_url)
    job.execution["ui_values"] = values
    staging_dir = ctx.destination.staging_dir  # the outbox's, or the scenario's destination's
    staging = staging_dir / f"{record.job_id}-{job.index:03d}"
    job.staging = str(staging)
    own_dir(staging_dir)  # before anything is removed or written below it
    errors = 0
    while True:
        # A download cut off (by a crash, a failed output, the server going away) starts over in an
        # empty folder: what the cut-off try left must not be published beside its second copy.
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)
        try:
            job.outputs = download_outputs(client.http, refs, staging)
            break
        except ServerUnavailable:
            ctx.wait_for_server(client)
        except OutputError as err:
            errors += 1
            if errors >= MAX_DOWNLOAD_ERRORS or "limit" in err.where:  # over a budget: trying again cannot help
                raise
            ctx.log.warning("%s; retrying", err.message)
            ctx.pause(min(2.0 ** errors * 0.1, 5.0))
    job.state = "downloaded"
    ctx.save(durable=False)  # redone after a power cut, never repeated outside
    ctx.log.debug("downloaded %d file(s)", len(job.outputs))  # the published line gives the count


@dataclass
class OutputRef:
    node: str
    key: str
    filename: str
    subfolder: str
    type: str
    metadata: dict[str, Any] | None = None  # the server's media facts for the file (ComfyUI 0.4x), if any


#: The folders ComfyUI's ``/view`` serves files from (its ``type`` parameter).
VIEW_TYPES = ("output", "temp", "input")


def list_outputs(outputs: dict[str, Any], *, include_temp: bool = True,
                 server: str | None = None) -> tuple[list[OutputRef], dict[str, Any]]:
    """Split a history ``outputs`` mapping into downloadable files and other UI values. ``server``
    (its display URL) is named in the error for an entry that cannot be downloaded."""
    files: list[OutputRef] = []
    values: dict[str, Any] = {}
    for node_id, ui in (outputs or {}).items():
        if not isinstance(ui, dict):
            values[str(node_id)] = ui
            continue
        for key, items in ui.items():
            if not isinstance(items, list):
                values.setdefault(str(node_id), {})[key] = items
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str) and item["filename"]:
                    if item.get("type") != "temp" or include_temp:
                        files.append(_file_ref(str(node_id), str(key), item, server))
                else:
                    values.setdefault(str(node_id), {}).setdefault(key, []).append(item)
    return files, values


def _file_ref(node: str, key: str, item: dict[str, Any], server: str | None) -> OutputRef:
    """The file a history entry names, checked to be one ``/view`` can serve."""
    filename, subfolder, kind = item["filename"], item.get("subfolder") or "", item.get("type") or "output"
    parts = subfolder.replace("\\", "/").split("/") if isinstance(subfolder, str) else []
    if any(c in filename for c in "/\\\0") or filename in (".", ".."):
        problem = "a file name that is a path"
    elif not isinstance(subfolder, str) or "\0" in subfolder:
        problem = "a subfolder that is not a folder name"
    elif ".." in parts or subfolder.startswith(("/", "\\")):
        problem = "a subfolder that leaves the server's folder"
    elif kind not in VIEW_TYPES:
        problem = f"the type {kind!r} (/view serves {', '.join(VIEW_TYPES)})"
    else:
        metadata = item.get("metadata")
        return OutputRef(node, key, filename, subfolder, kind, metadata if isinstance(metadata, dict) else None)
    shown = {k: item.get(k) for k in ("filename", "subfolder", "type") if k in item}
    raise OutputError(
        f"ComfyUI{f' at {server}' if server else ''} listed an output of node {node} ({key}) with {problem}: "
        f"{str(shown)[:300]}; it cannot be downloaded.",
        hint="The server (or a custom node on it) reported an output file that ComfyUI's /view cannot serve; "
             "check that node on the server. The job's other outputs are not published.",
        where={"server": server, "node": node, "output": str(filename)[:200]},
    )


def _kind(key: str, filename: str) -> str:
    mime, _ = mimetypes.guess_type(filename)
    if mime:
        major = mime.split("/", 1)[0]
        if major in {"image", "video", "audio"}:
            return "image" if mime == "image/gif" and key in {"images"} else major
    return key.rstrip("s") or "file"


def download_outputs(http: ComfyHTTP, refs: list[OutputRef], staging: Path) -> list[dict[str, Any]]:
    """Download ``refs`` into ``staging`` (an empty folder: a download cut off starts over); return one
    sidecar entry per file, in order."""
    own_dir(staging, levels=2)  # outbox/.hotfolder-staging/<job>: never written through a symlink
    taken: set[str] = set()
    entries = []
    base = os.fspath(staging)
    for ref in refs:
        local = unique_name(staging, safe_filename(ref.filename, fallback="output"), taken)
        taken.add(local)
        part = os.path.join(base, f".{local}.part")
        with at_path(part):  # a write refused (a full outbox) names the file
            size, sha = http.download(filename=ref.filename, subfolder=ref.subfolder, type_=ref.type, dest=part)
        os.rename(part, os.path.join(base, local))
        failpoints.hit("mid_download")
        entry: dict[str, Any] = {
            "file": local,
            "node": ref.node,
            "kind": _kind(ref.key, ref.filename),
            "key": ref.key,
            "type": ref.type,
            "server_filename": display_name(ref.filename),
            "subfolder": ref.subfolder,
            "size": size,
            "sha256": sha,
        }
        facts = _media_facts(os.path.join(base, local), ref)
        if facts:
            entry["media"] = facts
        entries.append(entry)
    return entries


def _media_facts(path: str, ref: OutputRef) -> dict[str, Any] | None:
    """The sidecar's ``media`` object for a downloaded file; None (and a debug line) if it cannot be read."""
    try:
        return media.probe(path, ref.metadata).to_dict()
    except Exception as err:  # a courtesy: never the job's failure
        logger.debug("media facts of %s left out: %s: %s", display_name(ref.filename), type(err).__name__, err)
        return None
