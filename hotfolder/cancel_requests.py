"""Cancel requests through the shared folder: ``<name>.cancel`` in the inbox.

``hotfolder cancel NAME`` writes one (with who asked and when); a user of the shared folder may drop an
empty one. The daemon's watcher hands it over like any file; the daemon gives it to the engine as a
cancel (never claims it as a scenario) and removes it. NAME is a job's name (``night-003``) or a
file's name (``night.yaml`` or ``night``: all its jobs).

A request skips the files waiting to be claimed (:class:`HandOver`): with thousands of files in the inbox
and no room to claim more, a cancel is still taken within a fraction of a second. The files it names that
are still waiting are claimed at once, so that they are cancelled before anything of them is sent.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from hotfolder.engine.cancel import means_file
from hotfolder.paths import open_regular
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
        fd, st = open_regular(path)  # never a FIFO or a link, and only its first 4 KiB: what a request holds
        try:
            head = os.read(fd, 4096)
        finally:
            os.close(fd)
        at = _when(st.st_mtime)
        data = json.loads(head.decode("utf-8") or "{}")
    except (OSError, ValueError):
        data = None
    else:
        if isinstance(data, dict):
            by = str(data.get("by") or by)[:200]
            at = str(data.get("at") or at)[:40]
        return f"by {by} at {at}"
    return f"by {by} at {_when(time.time())}"


def name_of(path: Path) -> str:
    """The job's or file's name a request at ``path`` (``<name>.cancel``) means."""
    return path.name[: -len(SUFFIX)]


def handle(path: Path, cancel: Callable[[str | None, str], list[str]],
           claim_named: Callable[[str], list[str]] = lambda name: []) -> list[str]:
    """Give the request at ``path`` to ``cancel(name, reason)`` and remove it. Returns what was cancelled.
    ``claim_named(name)`` then claims the files of that name still waiting to be claimed, and returns
    their names: the cancel, already known, stops their jobs as they are made."""
    name = name_of(path)
    reason = reason_of(path)
    hits = cancel(name, reason)
    hits += [f"{claimed} (claimed from the files waiting; its jobs as they are made)" for claimed in claim_named(name)]
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


class HandOver:
    """What the watcher handed over and the daemon has not taken yet: files in the order they came, and
    cancel requests, which go before all of them. ``put`` is called on the watcher's thread."""

    def __init__(self) -> None:
        self._files: deque[Path] = deque()
        self._requests: deque[Path] = deque()
        self._cond = threading.Condition()

    def put(self, path: Path) -> None:
        with self._cond:
            (self._requests if is_request(path) else self._files).append(path)
            self._cond.notify_all()

    def get(self, timeout: float) -> Path | None:
        """The next cancel request, else the next file; None after ``timeout`` seconds without either."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._requests or self._files, timeout):
                return None
            return (self._requests or self._files).popleft()

    def requests(self) -> list[Path]:
        """Take the cancel requests waiting."""
        with self._cond:
            taken = list(self._requests)
            self._requests.clear()
            return taken

    def take_named(self, name: str) -> list[Path]:
        """Take the waiting files a cancel of ``name`` means (see :func:`~hotfolder.engine.cancel.means_file`)."""
        with self._cond:
            taken = [p for p in self._files if means_file(name, p.name)]
            if taken:
                self._files = deque(p for p in self._files if not means_file(name, p.name))
            return taken

    def empty(self) -> bool:
        with self._cond:
            return not (self._requests or self._files)
