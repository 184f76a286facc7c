"""Housekeeping: optional retention for ``inbox/done/``, ``outbox/`` and the files hotfolder uploaded to
ComfyUI's input folder.

Nothing here runs unless the daemon is configured to (``retention_done_days``,
``retention_outbox_days``, ``retention_uploads_days``). Every function is safe against what a shared
folder can hold: symlinks are never followed (a link is never deleted, nor what it points to), hidden
entries (``.hotfolder/``, ``.hotfolder-staging/``, a producer's ``.name.part``) are never touched, and
an entry that vanishes or cannot be deleted is skipped with a warning, never an error.

An entry's age is the time since it last changed *or was moved*: ``max(mtime, ctime)``. A file keeps its
producer's mtime when it is archived by a rename, and that mtime may be years old (``cp -p``,
``rsync -t``); the rename updates its ctime, so a file is kept ``older_than`` seconds after it arrived in
``done/``. A folder's age is that of the newest thing inside it, so an outbox folder a consumer is still
adding to stays.

Uploads: ComfyUI has no endpoint that deletes an input file (see PROTOCOL.md: only ``/upload/image``
and ``/upload/mask`` write there, nothing removes). So the daemon prunes uploads only where a server's
input folder is a local path (``input_dir``, ComfyUI on the same machine or a shared mount): its
``hotfolder/`` subfolder, with :func:`prune` like the other folders.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ERROR_SUFFIX = ".error.json"


def _age_stamp(st: os.stat_result) -> float:
    return max(st.st_mtime, st.st_ctime)


def _newest(path: Path, st: os.stat_result) -> float:
    """The newest change of a folder and everything in it, without following symlinks."""
    newest = _age_stamp(st)
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        est = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    newest = max(newest, _age_stamp(est))
                    if stat.S_ISDIR(est.st_mode):
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return newest


def _remove(path: Path, st: os.stat_result) -> bool:
    try:
        if stat.S_ISDIR(st.st_mode):
            # rmtree removes links inside the folder without following them (and, on Linux, resists
            # a folder swapped for a link while it works: rmtree.avoids_symlink_attacks)
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as err:
        logger.warning("Cannot remove %s for retention: %s", path, err)
        return False
    return True


def prune(folder: Path, older_than_seconds: float, *, now: float | None = None) -> list[Path]:
    """Delete the top-level entries of ``folder`` (``inbox/done/`` or ``outbox/``) older than
    ``older_than_seconds``; return what was deleted.

    Regular files and folders only. ``X`` and its ``X.error.json`` go together, aged by the newer of the
    two; a folder (an outbox job folder) goes as a whole, aged by the newest thing inside. Symlinks and
    hidden names are left alone; so is anything but files and folders (sockets, FIFOs).
    """
    if older_than_seconds <= 0:
        raise ValueError("older_than_seconds must be positive")
    now = time.time() if now is None else now
    cutoff = now - older_than_seconds
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    found: dict[str, os.stat_result] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            found[entry.name] = st
    removed: list[Path] = []
    for name in sorted(found):
        st = found[name]
        base = found.get(name[: -len(ERROR_SUFFIX)]) if name.endswith(ERROR_SUFFIX) else None
        if base is not None and stat.S_ISREG(base.st_mode) and stat.S_ISREG(st.st_mode):
            continue  # goes with its input
        group = [name]
        error = name + ERROR_SUFFIX
        if stat.S_ISREG(st.st_mode) and error in found and stat.S_ISREG(found[error].st_mode):
            group.append(error)
        if stat.S_ISDIR(st.st_mode):
            stamp = _newest(folder / name, st)
        else:
            stamp = max(_age_stamp(found[n]) for n in group)
        if stamp >= cutoff:
            continue
        for n in group:
            if _remove(folder / n, found[n]):
                removed.append(folder / n)
    if removed:
        logger.info("Retention: removed %d entr%s older than %s from %s", len(removed),
                    "y" if len(removed) == 1 else "ies", _days(older_than_seconds), folder)
    return removed


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} day{'s' if days != 1 else ''}" if days >= 1 else f"{seconds:g} s"
