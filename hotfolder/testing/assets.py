"""Asset ids on output entries, as a 0.4x ComfyUI with its asset manager adds them.

comfy_execution/asset_enrichment.py@228da558 (called from execution.py@04e2a914 ``execute()``) registers
every output entry that names a file on disk inside its folder as an asset and adds its ``id``, plus a
``preview_id`` when the asset has a preview (a still image is its own preview). The ``executed`` message
and the history both carry the enriched entry. ``metadata`` (media_enrichment.py) is left out: the
shape of what it adds is not in the evidence (see docs/comfy-protocol/PROFILES.md).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["with_asset_ids"]


def _file_of(entry: dict[str, Any], dirs: dict[str, Path]) -> str | None:
    """The file an output entry names, if it is on disk inside its folder."""
    base = dirs.get(str(entry.get("type")))
    if base is None or not isinstance(entry.get("filename"), str):
        return None
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, str(entry.get("subfolder") or ""), entry["filename"]))
    if os.path.commonpath((root, path)) != root or not os.path.isfile(path):
        return None
    return path


def with_asset_ids(ui: dict[str, Any], dirs: dict[str, Path]) -> dict[str, Any]:
    """A copy of a node's UI output whose file entries carry ``id`` (and ``preview_id`` for stills)."""
    animated = bool(ui.get("animated")) and any(ui.get("animated") or ())
    out: dict[str, Any] = {}
    for key, entries in ui.items():
        if not isinstance(entries, list):
            out[key] = entries
            continue
        enriched = []
        for entry in entries:
            if isinstance(entry, dict) and "filename" in entry and "type" in entry and _file_of(entry, dirs):
                entry = {**entry, "id": str(uuid.uuid4())}
                if key == "images" and not animated:
                    entry["preview_id"] = entry["id"]
            enriched.append(entry)
        out[key] = enriched
    return out
