"""Stage 1, intake: find complete files in the inbox and hand each one over once.

A file in ``inbox/`` is *complete* (DESIGN.md §7.3: "no torn input") when one of these holds:

* it was closed after writing (inotify ``IN_CLOSE_WRITE``, watchdog's ``FileClosedEvent``; Linux only).
  This is the fast path, with no extra delay;
* it was renamed or moved into the inbox (``upload.part`` -> ``upload.yaml``): a rename is atomic, so the
  content was written before;
* otherwise (created or modified events without a close, as on network shares and non-Linux systems, and
  files found by a scan) its size and mtime stayed unchanged for ``settle_seconds``. A file seen only as
  *created* is never taken (watchdog#586: the event fires when a copy starts, not when it ends).

Whatever the rule, a file that some program still has open for writing (asked of the kernel, see
:func:`hotfolder.paths.open_for_writing`; local Linux filesystems) is not taken: it is looked at again
after another ``settle_seconds``. This covers a copy that was under way when hotfolder started, and a
writer that pauses longer than ``settle_seconds``. Not in ``ready_marker`` mode, where the marker decides.

Files found by the startup scan or an explicit :meth:`Intake.rescan` are ready at once when their mtime is
already older than ``settle_seconds``; fresher ones go through the settle check, because a writer may be
mid-copy while hotfolder starts. The periodic safety-net scan (``poll_interval``) never takes that
shortcut: it is the path used on network shares, where the server's clock may disagree with ours.

With ``ready_marker=True`` a producer signals completeness itself: ``X`` is handed over when ``X.ready``
exists (any content), and the marker is deleted after the handoff. The marker is authoritative: when it
appears, ``X`` is taken at once. A marker whose file does not exist is left alone until the file arrives.

``use_observer=False`` turns off the watchdog observer and finds files by scanning the folder every
``poll_interval`` seconds (1 s when not given). Use it where file system events do not arrive: NFS, SMB/CIFS
and other network shares written by other machines, some FUSE and container bind mounts. Files are then
taken by the settle rule only, so a file is handed over between ``settle_seconds`` and
``settle_seconds + poll_interval`` after its last write.

Threads: watchdog's own threads run the observer; its handler only records events. One settle thread owns
all state (the settle clocks in :class:`hotfolder.settle.Settling`), does every ``lstat``, and calls
``on_ready(path)``. It sleeps on a :class:`threading.Condition` until an event arrives, a settle deadline
or the next poll is due, or :meth:`Intake.stop` is called.

watchdog is imported here and nowhere else in hotfolder (STYLE A3).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from hotfolder.errors import ConfigError
from hotfolder.paths import open_for_writing
from hotfolder.settle import Settling, Sig, file_sig

if TYPE_CHECKING:
    import types
    from collections.abc import Callable, Iterable

    from watchdog.observers.api import BaseObserver

__all__ = ["DEFAULT_POLL_INTERVAL", "MARKER_SUFFIX", "Intake", "is_candidate"]

logger = logging.getLogger(__name__)

MARKER_SUFFIX = ".ready"
"""Suffix of the marker files used with ``ready_marker=True``."""

DEFAULT_POLL_INTERVAL = 1.0
"""Seconds between scans when ``use_observer=False`` and no ``poll_interval`` is given."""

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", "~", ".swp", MARKER_SUFFIX)
"""Names ending like this are files still being written (or markers); compared case-insensitively."""

IGNORED_NAMES = frozenset({"done", "failed", "PAUSE"})
"""hotfolder's own archive folders inside the inbox, and its pause switch (``inbox/PAUSE``)."""

# Only these event types are asked for: no opened / closed-without-write / attrib events, so readers
# (the pipeline itself reads every file it claims) cause no wakeups.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
]


def is_candidate(name: str) -> bool:
    """Return True if a file called ``name`` may be handed over (the inbox's ignore rules).

    ``name`` is a bare file name, not a path. Ignored: names starting with ``.`` (hotfolder's own
    ``.hotfolder/`` among them), ending with ``.part``, ``.tmp``, ``.crdownload``, ``~``, ``.swp`` or
    ``.ready`` (in any letter case), the archive folders ``done`` and ``failed``, and ``PAUSE``. An ignored file is
    picked up as soon as it is renamed to an acceptable name. Directories and symlinks are ignored by
    :class:`Intake` whatever their names.
    """
    if not name or name.startswith(".") or "/" in name or name in IGNORED_NAMES:
        return False
    return not name.lower().endswith(IGNORED_SUFFIXES)


class _Kind(enum.Enum):
    """What an event says about a path in the inbox."""

    COMPLETE = "complete"  # closed after writing, or moved into the inbox
    CHANGED = "changed"  # created or modified: the settle clock (re)starts
    GONE = "gone"  # deleted or moved out: forget it, if it is really gone


@dataclass(slots=True)
class _Handed:
    """In-flight guard: what was handed over, and when. Cleared when the file disappears."""

    sig: Sig
    at: float


@dataclass(slots=True)
class _Touch:
    """The net effect of one batch of events on one name."""

    complete: bool = False
    changed: bool = False


class _Scan(enum.Enum):
    EXPLICIT = "explicit"  # startup or rescan(): old files are ready at once, handed files are offered again
    POLL = "poll"  # periodic safety net: settle rule only, handed files are not offered again


class _EventRecorder(FileSystemEventHandler):
    """Runs in watchdog's dispatcher thread. Only records events; never touches the disk, never raises.

    An exception here would end watchdog's observer thread, and with it every later event.
    """

    def __init__(self, watched_dir: str, record: Callable[[str, _Kind], None]) -> None:
        super().__init__()
        self._dir = watched_dir
        self._record = record

    def _name(self, path: bytes | str) -> str | None:
        text = os.fsdecode(path)
        if not text or os.path.dirname(text) != self._dir:
            return None  # the inbox itself, or something below it: top level only
        return os.path.basename(text)

    def _note(self, path: bytes | str, kind: _Kind) -> None:
        name = self._name(path)
        if name is not None:
            self._record(name, kind)

    def on_closed(self, event: FileClosedEvent) -> None:
        self._note(event.src_path, _Kind.COMPLETE)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(event.src_path, _Kind.CHANGED)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(event.src_path, _Kind.CHANGED)

    def on_deleted(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._note(event.src_path, _Kind.GONE)

    def on_moved(self, event: FileSystemEvent) -> None:
        # With generate_full_events, a move from outside has an empty src_path and a move out an empty
        # dest_path; other observers report a move in from outside as created (then settled).
        if event.is_directory:
            return
        if event.src_path:
            self._note(event.src_path, _Kind.GONE)
        if event.dest_path:
            self._note(event.dest_path, _Kind.COMPLETE)


class Intake:
    """Finds complete files in an inbox and hands each path once to ``on_ready``.

    :param inbox: the folder to watch; only its top level is looked at.
    :param on_ready: called with the file's path (``inbox / name``) from the intake's settle thread, one
        call at a time. It should claim the file promptly (the pipeline renames it away). An exception is
        logged and the intake carries on.
    :param settle_seconds: how long size and mtime must stay unchanged when no close or move event says
        the file is complete.
    :param use_observer: False: no watchdog observer, only scans (see the module docstring).
    :param ready_marker: True: ``X`` is handed over only once ``X.ready`` exists; the marker is deleted
        after the handoff.
    :param poll_interval: seconds between safety-net scans (None: none, unless ``use_observer=False``,
        which implies :data:`DEFAULT_POLL_INTERVAL`).

    Each file is handed over once per appearance. While a handed file is still in the inbox unchanged
    (same inode, size and mtime) events and the periodic scan do not hand it again; once it disappears,
    or changes, it counts as a new file. An explicit :meth:`rescan` is the exception: it offers again the
    files that were handed before it was called and are still in the inbox (a claim that did not happen).
    """

    def __init__(
        self,
        inbox: Path,
        on_ready: Callable[[Path], None],
        *,
        settle_seconds: float = 1.0,
        use_observer: bool = True,
        ready_marker: bool = False,
        poll_interval: float | None = None,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, got {settle_seconds!r}")
        if poll_interval is not None and poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 or None, got {poll_interval!r}")
        self.inbox = Path(os.path.abspath(inbox))
        self._on_ready = on_ready
        self.settle_seconds = float(settle_seconds)
        self.use_observer = use_observer
        self.ready_marker = ready_marker
        if poll_interval is None and not use_observer:
            poll_interval = DEFAULT_POLL_INTERVAL
        self.poll_interval = poll_interval

        self._cond = threading.Condition()
        # Shared between threads, guarded by _cond:
        self._events: list[tuple[str, _Kind]] = []
        self._scan_requests: list[float] = []  # monotonic times of explicit scan requests
        self._stopping = False
        self._busy = False  # the settle thread is working on a batch (and may be calling on_ready)

        # Owned by the settle thread alone:
        self._settling = Settling(self.settle_seconds)
        self._handed: dict[str, _Handed] = {}
        self._writing: set[str] = set()  # complete by the rules above, but still open for writing

        self._observer: BaseObserver | None = None
        self._close_events = False  # the observer reports close-after-write (inotify)
        self._scanned = threading.Event()  # the startup scan is over
        self._thread: threading.Thread | None = None
        self._started = False

    # -- public API ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching: the observer first, then the startup scan, so no file falls in between.

        Raises :class:`~hotfolder.errors.ConfigError` if the inbox is not a directory or cannot be
        watched.
        """
        if self._started:
            raise RuntimeError("Intake.start() called twice")
        if not self.inbox.is_dir():
            raise ConfigError(
                f"Inbox {str(self.inbox)!r} is not a directory.",
                hint="create it (hotfolder init) or set 'inbox' in hotfolder.toml.",
                where={"inbox": str(self.inbox)},
            )
        self._started = True
        if self.use_observer:
            self._observer = self._start_observer()
            self._close_events = "Inotify" in type(self._observer).__name__
        with self._cond:
            self._scan_requests.append(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="hotfolder-intake", daemon=True)
        self._thread.start()
        logger.info(
            "Watching %r (%s, settle %.3gs%s%s)",
            str(self.inbox),
            type(self._observer).__name__ if self._observer else "scanning only",
            self.settle_seconds,
            f", poll every {self.poll_interval:g}s" if self.poll_interval else "",
            ", .ready markers" if self.ready_marker else "",
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the observer and the settle thread and join them, each within ``timeout`` seconds.

        A handoff in progress finishes first; files not yet handed over stay in the inbox for the next
        start. Safe to call more than once, and from ``on_ready`` itself (then the settle thread is not
        joined).
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            with contextlib.suppress(RuntimeError):  # never started
                observer.join(timeout)
            if observer.is_alive():
                logger.warning("The inbox observer did not stop within %.3gs", timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("The intake thread did not stop within %.3gs (on_ready still running?)", timeout)

    def rescan(self) -> None:
        """Scan the inbox again, soon, in the settle thread; returns at once.

        Finds files whose events were missed, and offers again files that were handed over before this
        call and are still in the inbox unchanged (for instance after a server came back). Files older
        than ``settle_seconds`` are ready at once; fresher ones settle first. Safe to call from any
        thread, including a signal handler's.
        """
        with self._cond:
            self._scan_requests.append(time.monotonic())
            self._cond.notify_all()

    def pending_count(self) -> int:
        """How many files the intake has seen but not handed over yet; 0 when it is idle.

        Counts files waiting to settle, plus one for any events, scan or handoff not finished yet, so a
        just-started intake is not idle before its startup scan has run. Files complete but waiting for
        their ``.ready`` marker are not counted: they wait for the producer, not for the intake.
        """
        with self._cond:
            backlog = len(self._events) + len(self._scan_requests) + int(self._busy)
        return len(self._settling) + backlog  # _settling is the settle thread's; its len() is atomic

    def wait_scanned(self, timeout: float | None = None) -> bool:
        """Block until the startup scan has handed over (or started settling) every file present."""
        return self._scanned.wait(timeout)

    def healthy(self) -> bool:
        """True while the settle thread and, if used, the observer and its emitter threads are alive."""
        if not self._started or self._stopping:
            return False
        if self._thread is None or not self._thread.is_alive():
            return False
        if self.use_observer:
            observer = self._observer
            if observer is None or not observer.is_alive():
                return False
            # The emitter stops by itself when the inbox is deleted or moved away.
            if not all(emitter.is_alive() for emitter in observer.emitters):
                return False
        return True

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # -- observer ------------------------------------------------------------------------------------

    def _start_observer(self) -> BaseObserver:
        watched = os.path.realpath(self.inbox)  # inotify reports paths under the real directory
        observer = _new_observer()
        try:
            observer.schedule(
                _EventRecorder(watched, self._record),
                watched,
                recursive=False,
                event_filter=_EVENT_FILTER,
            )
            observer.start()
        except OSError as err:
            observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join()
            raise ConfigError(
                f"Cannot watch inbox {str(self.inbox)!r}: {err}",
                hint=(
                    "raise fs.inotify.max_user_watches / max_user_instances, or turn the observer off "
                    "(use_observer = false) to scan the folder instead."
                ),
                where={"inbox": str(self.inbox)},
            ) from err
        _unblock_moves_out(observer)
        return observer

    def _record(self, name: str, kind: _Kind) -> None:
        """Called by watchdog's thread for each event on a top-level name."""
        with self._cond:
            self._events.append((name, kind))
            self._cond.notify_all()

    # -- settle thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_interval if self.poll_interval else None
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._events or self._scan_requests:
                        break
                    now = time.monotonic()
                    wake = self._next_wakeup(next_poll)
                    if wake is not None and wake <= now:
                        break
                    self._cond.wait(None if wake is None else wake - now)
                events, self._events = self._events, []
                scans, self._scan_requests = self._scan_requests, []
                self._busy = True
            try:
                next_poll = self._work(events, scans, next_poll)
            finally:
                with self._cond:
                    self._busy = False

    def _work(self, events: list[tuple[str, _Kind]], scans: list[float], next_poll: float | None) -> float | None:
        """One round of the settle thread; returns when the next periodic scan is due."""
        batch_start = time.monotonic()
        if events:
            self._apply_events(events, batch_start)
        if scans:
            self._scan(_Scan.EXPLICIT, requested_at=scans[-1])
            self._scanned.set()
        if next_poll is not None and self.poll_interval and time.monotonic() >= next_poll:
            if not scans:
                self._scan(_Scan.POLL, requested_at=None)
            next_poll = time.monotonic() + self.poll_interval
        self._check_due()
        return next_poll

    def _next_wakeup(self, next_poll: float | None) -> float | None:
        """Earliest monotonic time something is due: a settle deadline or the next periodic scan."""
        times = [t for t in (self._settling.next_deadline(), next_poll) if t is not None]
        return min(times) if times else None

    def _apply_events(self, events: Iterable[tuple[str, _Kind]], batch_start: float) -> None:
        # Fold each name's events in order: the last close or move-in must come after the last change.
        touched: dict[str, _Touch] = {}
        for name, kind in events:
            touch = touched.setdefault(name, _Touch())
            if kind is _Kind.COMPLETE:
                touch.complete = True
            elif kind is _Kind.CHANGED:
                touch.complete = False
                touch.changed = True
            else:  # GONE: whatever comes next is a new file
                touch.complete = False
        for name, touch in touched.items():
            if self._stopping:
                return
            self._examine(name, touch, batch_start)

    def _examine(self, name: str, touch: _Touch, batch_start: float) -> None:
        if self.ready_marker and name.endswith(MARKER_SUFFIX):
            if touch.complete or touch.changed:
                self._marker_seen(name, reoffer_before=batch_start)
            return
        if not is_candidate(name):
            return
        sig = self._lstat(name)
        if sig is None:
            # Gone, or not a regular file. A late "gone" for an earlier file of the same name (watchdog
            # reports moves out of the inbox late) finds the new file here and changes nothing.
            self._forget(name)
            return
        if touch.complete:
            self._settling.drop(name)
            self._offer(name, sig, reoffer_before=None, why="closed or moved in")
        elif touch.changed or name in self._settling:
            self._settling.track(name, sig, reoffer_before=None, local_writer=touch.changed and self._close_events)

    def _check_due(self) -> None:
        """Hand over the files that settled; forget the ones that went away meanwhile."""
        while not self._stopping:
            due = self._settling.pop_due(self._lstat)
            if due is None:
                return
            name, sig, reoffer_before = due
            if sig is None:
                self._forget(name)
            else:
                self._offer(name, sig, reoffer_before=reoffer_before, why="settled")

    def _scan(self, mode: _Scan, *, requested_at: float | None) -> None:
        listing = self._list_inbox()
        if listing is None:
            return
        files, markers = listing
        reoffer_before = requested_at if mode is _Scan.EXPLICIT else None
        settle_ns = int(self.settle_seconds * 1e9)
        now_ns = time.time_ns()
        for name, sig in files:
            if self._stopping:
                return
            if name in self._settling or self.ready_marker:
                continue  # settling already; or, with markers, taken only when its marker exists (below)
            handed = self._handed.get(name)
            if handed is not None and handed.sig == sig and (reoffer_before is None or handed.at >= reoffer_before):
                continue  # in flight
            if mode is _Scan.EXPLICIT and now_ns - sig.mtime_ns >= settle_ns:
                self._offer(name, sig, reoffer_before=reoffer_before, why="found, unchanged for a while")
            else:
                self._settling.track(name, sig, reoffer_before=reoffer_before)
        for marker in markers:
            if self._stopping:
                return
            self._marker_seen(marker, reoffer_before=reoffer_before)

    def _list_inbox(self) -> tuple[list[tuple[str, Sig]], list[str]] | None:
        """Candidate regular files (oldest first: handed over in the order they were dropped) and markers.

        Also forgets every name that is no longer there. None if the inbox cannot be read.
        """
        try:
            names = os.listdir(self.inbox)
        except OSError as err:
            logger.error("Cannot scan inbox %r: %s", str(self.inbox), err)  # noqa: TRY400 - no traceback needed
            return None
        present = set(names)
        for name in [n for n in (*self._handed, *self._settling.names()) if n not in present]:
            self._forget(name)
        files: list[tuple[str, Sig]] = []
        markers: list[str] = []
        for name in names:
            if self.ready_marker and name.endswith(MARKER_SUFFIX):
                markers.append(name)
            elif is_candidate(name) and (sig := self._lstat(name)) is not None:
                files.append((name, sig))
        files.sort(key=lambda item: (item[1].mtime_ns, item[0]))
        return files, markers

    def _marker_seen(self, marker: str, *, reoffer_before: float | None) -> None:
        """``X.ready`` exists (or an event says so): hand ``X`` over now if it is there."""
        name = marker[: -len(MARKER_SUFFIX)]
        if not is_candidate(name) or not _exists(self.inbox / marker):
            return
        sig = self._lstat(name)
        if sig is None:
            return  # a marker without its file is left alone
        self._settling.drop(name)
        self._offer(name, sig, reoffer_before=reoffer_before, why="marker")

    def _offer(self, name: str, sig: Sig, *, reoffer_before: float | None, why: str) -> None:
        """Hand ``name`` over unless it is in flight already (or, in marker mode, has no marker yet)."""
        handed = self._handed.get(name)
        if handed is not None and handed.sig == sig and (reoffer_before is None or handed.at >= reoffer_before):
            logger.debug("Not handing %r again: already handed over and unchanged", name)
            return
        marker = self.inbox / (name + MARKER_SUFFIX)
        if self.ready_marker and not _exists(marker):
            logger.debug("%r is complete; waiting for %r", name, marker.name)
            return
        path = self.inbox / name
        if not self.ready_marker and open_for_writing(path):
            # the writer has not closed it yet (a copy that started before the daemon, or one paused past
            # settle_seconds): look again after another settle period
            if name not in self._writing:
                self._writing.add(name)
                logger.info("Not taking %r yet: a program still has it open for writing", name)
            self._settling.track(name, sig, reoffer_before=reoffer_before)
            return
        self._writing.discard(name)
        self._handed[name] = _Handed(sig=sig, at=time.monotonic())
        logger.debug("Ready (%s): %s", why, path)
        try:
            self._on_ready(path)
        except Exception:  # the consumer's boundary: log it with its traceback and keep watching
            logger.exception("Handing %r over failed; the intake keeps running", str(path))
        if self.ready_marker:
            try:
                marker.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.warning("Cannot delete marker %r: %s", str(marker), err)

    def _forget(self, name: str) -> None:
        self._writing.discard(name)
        self._settling.drop(name)
        self._handed.pop(name, None)

    def _lstat(self, name: str) -> Sig | None:
        return file_sig(self.inbox / name)


def _exists(path: Path) -> bool:
    """True if something that is not a directory exists at ``path`` (symlinks not followed)."""
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _new_observer() -> BaseObserver:
    """The platform's observer; on Linux, inotify reporting moves in from outside as moves.

    ``Observer`` is a platform-chosen alias, not a class (STYLE §7.6), hence the name test.
    """
    if getattr(Observer, "__name__", "") == "InotifyObserver":
        from watchdog.observers.inotify import InotifyObserver  # noqa: PLC0415 - exists on Linux only

        return InotifyObserver(generate_full_events=True)
    return Observer()


def _unblock_moves_out(observer: BaseObserver) -> bool:
    """Stop watchdog's inotify emitter from holding every event for 0.5 s after a move out of the inbox.

    watchdog keeps each ``IN_MOVED_FROM`` for up to 0.5 s to pair it with its ``IN_MOVED_TO``, and its
    delay queue is first-in first-out, so all later events wait behind it. Every claim (a rename into
    ``inbox/.hotfolder/``, which is not watched) is such a move, so without this a file closed right after
    a claim would be seen half a second late. The intake does not need the pairing: a move out counts as
    gone and a move in as complete either way. This reaches into watchdog internals (checked by a test);
    if they change, it logs and leaves the default delay in place.
    """
    changed = False
    for emitter in observer.emitters:
        queue = getattr(getattr(getattr(emitter, "_inotify", None), "_move_event_grouper", None), "_queue", None)
        if queue is None or not isinstance(getattr(queue, "delay", None), int | float):
            continue
        queue.delay = 0
        changed = True
    if not changed and type(observer).__name__ == "InotifyObserver":
        logger.warning("watchdog internals changed: events may arrive up to 0.5 s late after a claim")
    return changed
