"""Stage 8 of 10: download. Stream every output file listed in the prompt's history into staging.

Every entry that names a file (``filename``, with ``subfolder`` and ``type``) is downloaded, whatever its
key: ``images``, ``gifs``, ``videos``, ``audio``, ``3d`` or a custom node's own. Other UI values (text from
PreviewAny, numbers) are kept for the sidecar. Files are streamed through ``/view`` to disk with their
sha256 computed on the way; nothing is held in memory. Local names are the server's base names made safe
(never a path), with a suffix if two outputs share one.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder import failpoints
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.fsguard import at_path
from hotfolder.paths import safe_filename, unique_name


@dataclass
class OutputRef:
    node: str
    key: str
    filename: str
    subfolder: str
    type: str


def list_outputs(outputs: dict[str, Any], *, include_temp: bool = True) -> tuple[list[OutputRef], dict[str, Any]]:
    """Split a history ``outputs`` mapping into downloadable files and other UI values."""
    files: list[OutputRef] = []
    values: dict[str, Any] = {}
    for node_id, ui in (outputs or {}).items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            if not isinstance(items, list):
                values.setdefault(str(node_id), {})[key] = items
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str) and item["filename"]:
                    kind = str(item.get("type") or "output")
                    if kind == "temp" and not include_temp:
                        continue
                    files.append(OutputRef(str(node_id), key, item["filename"], str(item.get("subfolder") or ""), kind))
                elif not isinstance(item, dict) or "filename" not in item:
                    values.setdefault(str(node_id), {}).setdefault(key, []).append(item)
    return files, values


def _kind(key: str, filename: str) -> str:
    mime, _ = mimetypes.guess_type(filename)
    if mime:
        major = mime.split("/", 1)[0]
        if major in {"image", "video", "audio"}:
            return "image" if mime == "image/gif" and key in {"images"} else major
    return key.rstrip("s") or "file"


def download_outputs(http: ComfyHTTP, refs: list[OutputRef], staging: Path,
                     done: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Download ``refs`` into ``staging``; return one sidecar entry per file, in order.

    ``done`` maps ``node/type/subfolder/filename`` keys to entries already downloaded (after a restart),
    so a resumed download does not fetch those again.
    """
    staging.mkdir(parents=True, exist_ok=True)
    done = dict(done or {})
    taken = {entry["file"] for entry in done.values()}
    entries = []
    base = os.fspath(staging)
    for ref in refs:
        key = f"{ref.node}/{ref.type}/{ref.subfolder}/{ref.filename}"
        if key in done and (staging / done[key]["file"]).is_file():
            entries.append(done[key])
            continue
        local = unique_name(staging, safe_filename(ref.filename, fallback="output"), taken)
        taken.add(local)
        part = os.path.join(base, f".{local}.part")
        with at_path(part):  # a write refused (a full outbox) names the file
            size, sha = http.download(filename=ref.filename, subfolder=ref.subfolder, type_=ref.type, dest=part)
        os.rename(part, os.path.join(base, local))
        failpoints.hit("mid_download")
        entries.append({
            "file": local,
            "node": ref.node,
            "kind": _kind(ref.key, ref.filename),
            "key": ref.key,
            "type": ref.type,
            "server_filename": ref.filename,
            "subfolder": ref.subfolder,
            "size": size,
            "sha256": sha,
        })
    return entries
