"""External storage: copy or move each finished job folder to another directory or a network share.

Configure it in ``hotfolder.toml``::

    [plugin_config.storage]
    path = "/mnt/nas/renders"     # required; relative paths are relative to hotfolder.toml's folder
    mode = "copy"                 # "copy" (default): outbox/<job>/ stays; "move": it goes

When a job is published to ``outbox/<job>/`` (the ``published`` event), its whole folder (files and
sidecar) is published again under ``path`` the way the outbox is: copied into a hidden staging folder
``<path>/.hotfolder-staging/`` on the destination, flushed to disk, then renamed into place in one step
as ``<path>/<job name>/``, or ``<job name>-2``, ``-3`` ... when the name is taken there. Nothing is ever
overwritten, and a consumer of the share never sees a half-copied folder. A folder already stored for
the same job (same ``job_key`` in its sidecar, e.g. after a restart) is not stored twice. With
``mode = "move"`` the outbox folder is removed once the copy is in place (a plain rename when both
are on the same filesystem).

A failure (share offline, disk full, no permission) is logged as an error naming the job; the job
stays done and its folder stays in the outbox, so nothing is lost. Copying runs on the worker that
finished the job.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from hotfolder import get_plugin_logger, hookimpl
from hotfolder.paths import move_unique
from hotfolder.plugins import plugin_config
from hotfolder.record import fsync_dir

logger = get_plugin_logger(__name__)

NAME = "storage"
MODES = ("copy", "move")
STAGING = ".hotfolder-staging"


class StorageConfigError(ValueError):
    """``[plugin_config.storage]`` is missing or wrong."""


def read_config(settings: Any) -> tuple[Path, str] | None:
    """``(destination, mode)`` from the settings, or ``None`` when storage is not configured."""
    config = plugin_config(settings, NAME)
    if not config:
        return None
    unknown = sorted(set(config) - {"path", "mode"})
    if unknown:
        raise StorageConfigError(f"[plugin_config.storage] has unknown key(s) {', '.join(map(repr, unknown))}")
    path = config.get("path")
    if not isinstance(path, str) or not path.strip():
        raise StorageConfigError('[plugin_config.storage] needs path = "/some/folder"')
    mode = config.get("mode", "copy")
    if mode not in MODES:
        raise StorageConfigError(f"[plugin_config.storage] mode must be 'copy' or 'move', not {mode!r}")
    destination = Path(path).expanduser()
    if not destination.is_absolute():
        config_file = getattr(settings, "config_file", None)
        destination = (config_file.parent if config_file else Path.cwd()) / destination
    return destination, mode


@hookimpl
def check_settings(settings):
    read_config(settings)  # a StorageConfigError (ValueError) stops hotfolder from starting


@hookimpl
def track_event(event, settings):
    if event.kind != "published":
        return
    config = read_config(settings)
    if config is None:
        return
    destination, mode = config
    source = Path(event.path)
    try:
        stored = store_folder(source, destination, name=event.job or source.name, move=mode == "move")
    except OSError as err:
        logger.error(
            "job %s: could not %s %s to %s: %s; the job's results stay in the outbox",
            event.job, mode, source, destination, err,
        )
        return
    logger.info("job %s: %s %s", event.job, "moved to" if mode == "move" else "copied to", stored)


def store_folder(source: Path, destination: Path, *, name: str | None = None, move: bool = False) -> Path:
    """Publish the job folder ``source`` under ``destination`` as ``name`` (default: the folder's
    name) atomically; return where it is.

    Never overwrites: a taken name gets ``-2``, ``-3``, ... A folder already there for the same job
    (same ``job_key``) is returned as it is.
    """
    name = name or source.name
    destination.mkdir(parents=True, exist_ok=True)
    key = _job_key(source)
    existing = _find_stored(destination, name, key)
    if existing is not None:
        if move:
            shutil.rmtree(source)
        return existing
    if move and _same_filesystem(source, destination):
        return _rename_unique(source, destination, name)
    staging_root = destination / STAGING
    staging_root.mkdir(exist_ok=True)
    staging = staging_root / f"{name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging, copy_function=_copy_synced)
        fsync_dir(staging)
        final = _rename_unique(staging, destination, name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if move:
        shutil.rmtree(source)
    return final


def _rename_unique(folder: Path, destination: Path, name: str) -> Path:
    final = move_unique(folder, destination, name)  # a taken name gets -2, -3: never an overwrite
    fsync_dir(destination)
    return final


def _copy_synced(src: str, dst: str) -> str:
    shutil.copy2(src, dst)
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())
    return dst


def _same_filesystem(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_dev == b.stat().st_dev
    except OSError:
        return False


def _job_key(folder: Path) -> str | None:
    sidecar = _read_json(folder / f"{folder.name}.json")
    key = sidecar.get("job_key") if isinstance(sidecar, dict) else None
    return key if isinstance(key, str) else None


def _find_stored(destination: Path, name: str, key: str | None) -> Path | None:
    if key is None:
        return None
    for entry in destination.iterdir():
        if entry.is_dir() and (entry.name == name or entry.name.startswith(f"{name}-")):
            for sidecar in entry.glob("*.json"):
                data = _read_json(sidecar)
                if isinstance(data, dict) and data.get("job_key") == key:
                    return entry
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
