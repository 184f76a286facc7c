"""Cancel requests through the shared folder: ``<name>.cancel`` in the inbox.

``hotfolder cancel NAME`` writes one (with who asked and when); a user of the shared folder may drop an
empty one. The daemon's watcher hands it over like any file; the daemon gives it to the engine as a
cancel (never claims it as a scenario) and removes it. NAME is a job's name (``night-003``) or a
file's name (``night.yaml`` or ``night``: all its jobs).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from hotfolder.watch import MARKER_SUFFIX

logger = logging.getLogger(__name__)

SUFFIX = ".cancel"


def is_request(path: Path) -> bool:
    """Whether ``path`` is a cancel request (``<name>.cancel``, any letter case)."""
    return path.name.lower().endswith(SUFFIX) and len(path.name) > len(SUFFIX)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def write_request(inbox: Path, name: str, *, by: str, ready_marker: bool = False) -> Path:
    """Drop ``<name>.cancel`` into ``inbox`` (written under a hidden name, then renamed: the watcher
    never sees half of it), and its ``.ready`` marker when the daemon waits for markers. Returns its path."""
    target = inbox / f"{name}{SUFFIX}"
    temp = inbox / f".{name}{SUFFIX}.{os.getpid()}.tmp"
    temp.write_text(json.dumps({"by": by, "at": _when(time.time())}) + "\n", encoding="utf-8")
    os.replace(temp, target)
    if ready_marker:
        Path(f"{target}{MARKER_SUFFIX}").touch()
    return target


def who_asks() -> str:
    """``hotfolder cancel (user@host)`` for the reason of a cancel given on the command line."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"`hotfolder cancel` ({user}@{socket.gethostname()})"


def reason_of(path: Path) -> str:
    """Who cancelled and when, from the request's content (``{"by", "at"}``) or, for a file dropped by
    hand, its name and time."""
    by = f"a {path.name} file dropped into the inbox"
    try:
        at = _when(path.stat().st_mtime)
        data = json.loads(path.read_text(encoding="utf-8")[:4096] or "{}")
    except (OSError, ValueError):
        data = None
    else:
        if isinstance(data, dict):
            by = str(data.get("by") or by)[:200]
            at = str(data.get("at") or at)[:40]
        return f"by {by} at {at}"
    return f"by {by} at {_when(time.time())}"


def handle(path: Path, cancel: Callable[[str | None, str], list[str]]) -> list[str]:
    """Give the request at ``path`` to ``cancel(name, reason)`` and remove it. Returns what was cancelled."""
    name = path.name[: -len(SUFFIX)]
    reason = reason_of(path)
    hits = cancel(name, reason)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.warning("Cancel request %s handled but not removed: %s", path, err)
    if hits:
        logger.info("Cancel request %s (%s): cancelling %s", path.name, reason, ", ".join(hits))
    else:
        logger.warning("Cancel request %s (%s): no job or file of that name is in progress now; it is "
                       "honoured if such a file is claimed within two minutes", path.name, reason)
    return hits
