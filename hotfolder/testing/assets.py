"""Asset ids on output entries, and the asset scanner's WebSocket messages, as a 0.4x ComfyUI started
with ``--enable-assets`` sends them (without that flag a real one sends neither: docs/comfy-protocol/
REAL-SERVERS.md).

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

__all__ = ["enrich_pass_events", "full_scan_events", "with_asset_ids"]

#: The scanner's roots when ``GET /object_info`` starts a scan (server.py ``asset_seeder.start``).
SCAN_ROOTS = ["models", "input", "output"]


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


def full_scan_events(total: int, elapsed: float) -> list[tuple[str, dict[str, Any]]]:
    """The messages of a full scan that found ``total`` files, all new: a fast pass then an enrich
    pass, as ComfyUI 0.33.0 broadcasts them (app/assets/seeder.py ``_run_scan``, ``_run_fast_phase``,
    ``_run_enrich_phase``; seen on the wire, REAL-SERVERS.md)."""
    return [
        ("assets.seed.started", {"roots": SCAN_ROOTS, "total": total, "phase": "fast"}),
        ("assets.seed.fast_complete", {"roots": SCAN_ROOTS, "created": total, "skipped": 0, "total": total}),
        ("assets.seed.started", {"roots": SCAN_ROOTS, "phase": "enrich"}),
        ("assets.seed.enrich_complete", {"roots": SCAN_ROOTS, "enriched": total}),
        ("assets.seed.completed", {"phase": "full", "total": total, "created": total, "enriched": total,
                                   "skipped": 0, "elapsed": round(elapsed, 3)}),
    ]


def enrich_pass_events(enriched: int, elapsed: float) -> list[tuple[str, dict[str, Any]]]:
    """The messages of the enrich pass over ``output`` that ComfyUI 0.33.0 runs after a prompt (at most
    every 10 s: main.py ``prompt_worker``, ``asset_seeder.enqueue_enrich`` after the garbage collection)."""
    return [
        ("assets.seed.started", {"roots": ["output"], "phase": "enrich"}),
        ("assets.seed.enrich_complete", {"roots": ["output"], "enriched": enriched}),
        ("assets.seed.completed", {"phase": "enrich", "total": 0, "created": 0, "enriched": enriched,
                                   "skipped": 0, "elapsed": round(elapsed, 3)}),
    ]
