"""Full and read-only filesystems: intake pauses until they recover; no job fails and nothing is lost.

A write refused because a filesystem is full (ENOSPC, EDQUOT) or read-only (EROFS) says nothing about the
job that was writing: it is the filesystem's state. :class:`Guard` pauses intake with one log line naming
the errno, the path and the fix; the jobs already taken wait where they are (a finished render stays
staged) and go on once a probe (a small file written and removed in the same folder, every few seconds)
succeeds, with another log line. Other errnos that may come from the filesystem as a whole (EACCES, EPERM,
EIO, too many open files, ...) pause it too when the probe fails as well; when the probe succeeds, the fault
was the job's own (a file it may not read, a name too long) and the job fails with the real cause
(:func:`hotfolder.errors.filesystem_error`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from hotfolder import failpoints
from hotfolder.errors import errno_name

logger = logging.getLogger(__name__)

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY = frozenset({errno.EROFS})
# The filesystem's state, whatever the job: always a pause, never a job failure.
SYSTEMIC = FULL | READ_ONLY
# The filesystem's state or one file's: a pause only if the probe of its folder fails too.
MAYBE_SYSTEMIC = frozenset({errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
                            errno.EAGAIN, errno.EBUSY, errno.ESTALE})
PROBE_BYTES = 64 * 1024  # a write this size must succeed before intake resumes (not just a few free bytes)
PROBE_FIRST, PROBE_MAX = 0.5, 2.0  # seconds between probes: doubling from the first up to the most
# A side paused again this soon after it resumed (a probe fits, the write that needs room does not): not
# logged again, and probed less and less often, up to REPEAT_MAX seconds apart.
REPEAT_WINDOW, REPEAT_MAX = 60.0, 30.0


class IntakePaused(Exception):
    """Raised by the intake side when a failing filesystem interrupted it; what it was doing stays on disk
    where it was and is taken up again when the filesystem recovers."""


@contextlib.contextmanager
def at_path(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name ``path`` in an OSError raised inside that has no file name (a write through a descriptor),
    so that the log line and the error file say where the filesystem refused."""
    try:
        yield
    except OSError as err:
        if not isinstance(err.filename, (str, bytes, os.PathLike)):
            err.filename = os.fspath(path)
        raise


class _Pause:
    def __init__(self, side: str, err: OSError, path: str, *, delay: float = 0.0) -> None:
        self.side, self.errno, self.path = side, err.errno, path
        self.since = time.monotonic()
        self.repeat = delay > 0  # paused again soon after a resume: not logged again
        self.delay = delay or PROBE_FIRST
        self.next_probe = self.since + self.delay

    def reason(self) -> str:
        return f"{self.side} filesystem {_what(self.errno)} ({errno_name(self.errno)}) at {self.path}"


class Guard:
    """Knows which filesystems are failing. ``roots`` maps a side ("inbox", "outbox") to its folder: a path
    belongs to the side whose root holds it (the longest match), else to the first side. A probe is written
    in the nearest existing folder of the path that failed, or, for a path inside one of ``own`` (hotfolder's
    own folders: job folders, staging), in that folder itself, never inside a job's folder."""

    def __init__(self, roots: Mapping[str, Path], own: Iterable[Path] = ()) -> None:
        self.roots = sorted(((side, os.path.abspath(root)) for side, root in roots.items()),
                            key=lambda item: -len(item[1]))
        self.first = next(iter(roots))
        self.own = [os.path.abspath(folder) for folder in own]
        self._pauses: dict[str, _Pause] = {}
        self._resumed: dict[str, tuple[float, float]] = {}  # side -> (when it last resumed, its probe delay then)
        self._lock = threading.Lock()

    def side_of(self, path: str) -> str:
        for side, root in self.roots:
            if _inside(path, root):
                return side
        return self.first

    def check(self, err: OSError, *, fallback: str | os.PathLike[str]) -> bool:
        """Whether ``err`` comes from a failing filesystem: then intake is paused (logged once per pause)
        and True is returned. False: the fault is the job's own, to be reported with its cause."""
        name = err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else fallback
        path = os.path.abspath(os.fsdecode(name))
        if err.errno not in SYSTEMIC and (err.errno not in MAYBE_SYSTEMIC or self._probe(path)):
            return False
        side = self.side_of(path)
        with self._lock:
            if side not in self._pauses:
                when, delay = self._resumed.get(side, (-REPEAT_WINDOW, 0.0))
                soon = time.monotonic() - when < REPEAT_WINDOW
                pause = self._pauses[side] = _Pause(side, err, path, delay=min(delay * 2, REPEAT_MAX) if soon else 0.0)
                logger.log(logging.DEBUG if pause.repeat else logging.ERROR, "%s: intake paused until %s; %s",
                           pause.reason(), _until(err.errno), _fix(err.errno, path, side))
        return True

    def paused(self) -> bool:
        """Whether intake is paused; probes the failing filesystems that are due and resumes those that
        recovered (with a log line)."""
        with self._lock:
            for side, pause in list(self._pauses.items()):
                now = time.monotonic()
                if now < pause.next_probe:
                    continue
                if self._probe(pause.path):
                    del self._pauses[side]
                    self._resumed[side] = (now, pause.delay)
                    logger.log(logging.DEBUG if pause.repeat else logging.INFO,
                               "%s filesystem is writable again (%s): intake resumed after %.0f s",
                               side, self._probe_folder(pause.path), now - pause.since)
                else:
                    pause.delay = min(pause.delay * 2, max(PROBE_MAX, pause.delay))
                    pause.next_probe = time.monotonic() + pause.delay
            return bool(self._pauses)

    def reason(self) -> str | None:
        """Why intake is paused, for the status file; None when it is not."""
        with self._lock:
            return "; ".join(p.reason() for p in self._pauses.values()) or None

    def _probe_folder(self, path: str) -> str:
        for folder in self.own:
            if _inside(path, folder):
                return folder
        folder = path
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        return folder

    def _probe(self, path: str) -> bool:
        """Whether a small file can be written (and removed again) where ``path`` is."""
        folder = self._probe_folder(path)
        probe = os.path.join(folder, f".hotfolder-probe-{os.getpid()}-{threading.get_ident()}")
        try:
            failpoints.hit("probe")
            os.makedirs(folder, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                os.write(fd, bytes(PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _what(code: int | None) -> str:
    if code in FULL:
        return "full"
    if code in READ_ONLY:
        return "read-only"
    if code in {errno.EACCES, errno.EPERM}:
        return "not writable"
    return "failing"


def _until(code: int | None) -> str:
    if code in FULL:
        return "it has room"
    return "it is writable again"


def _fix(code: int | None, path: str, side: str) -> str:
    work = ("jobs already taken wait in their job folders" if side == "inbox"
            else "finished jobs wait, staged, to be published")
    folder = os.path.dirname(path) or path
    if code in FULL:
        how = f"free space there (df {folder} shows how much is left)"
    elif code in READ_ONLY:
        how = f"remount it read-write (mount -o remount,rw on the mount point that findmnt -T {folder} names)"
    elif code in {errno.EACCES, errno.EPERM}:
        how = f"give the user hotfolder runs as (uid {os.getuid()}) write access to {folder}"
    else:
        how = f"check the filesystem that holds {folder} (the system log, dmesg, says more)"
    return f"{how}; {work}, nothing is lost, and hotfolder resumes on its own"
