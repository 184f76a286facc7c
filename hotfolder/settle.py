"""The settle rule of the intake: a file is complete once its size and mtime stayed unchanged long enough.

:class:`Settling` keeps the files waiting for that (their settle clocks and a heap of deadlines) for
:class:`hotfolder.watch.Intake`, which owns one and uses it from its settle thread only. A file that
inotify saw being written on this machine waits for its close-after-write event instead, and falls back
to the settle rule only after :data:`CLOSE_GRACE` (DESIGN.md §7.3: "no torn input").
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CLOSE_GRACE", "Settling", "Sig", "file_sig"]

# A file being written on this machine (inotify saw it) is taken at its close-after-write event; only a
# writer silent this long without closing falls back to the settle rule.
CLOSE_GRACE = 60.0


class Sig(NamedTuple):
    """Identity and state of a regular file: a change in any field is a change of the file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


def file_sig(path: str | os.PathLike[str]) -> Sig | None:
    """The file's signature, or None if it is missing or not a regular file (symlinks not followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Sig(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(slots=True)
class _Pending:
    """A file waiting for its size and mtime to stay unchanged for ``settle_seconds``."""

    sig: Sig
    since: float  # monotonic time the current sig was first seen
    token: int  # identifies the one live heap entry for this file
    reoffer_before: float | None  # from an explicit scan: hand again even if handed before this time
    local_writer: bool = False  # inotify saw it being written here: its close event says when it is done


class Settling:
    """The files waiting to settle, by name, and when each is due to be looked at again."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._pending: dict[str, _Pending] = {}
        self._deadlines: list[tuple[float, int, str]] = []  # heap of (deadline, token, name)
        self._next_token = 0

    def __contains__(self, name: str) -> bool:
        return name in self._pending

    def __len__(self) -> int:
        return len(self._pending)  # len() of a dict is atomic: other threads may ask

    def names(self) -> list[str]:
        return list(self._pending)

    def drop(self, name: str) -> None:
        """Stop the settle clock of ``name`` (taken, or gone)."""
        self._pending.pop(name, None)

    def _quiet_needed(self, entry: _Pending) -> float:
        """How long a pending file must stay unchanged. A file inotify saw being written on this machine
        gets its close-after-write event when the writer is done; a writer that pauses longer than
        ``settle_seconds`` (a slow copy) must not lose that race, so the settle rule then only applies
        after :data:`CLOSE_GRACE` (a writer that never closes, or a filesystem that reports no close)."""
        if entry.local_writer:
            return max(self.settle_seconds, CLOSE_GRACE)
        return self.settle_seconds

    def track(self, name: str, sig: Sig, *, reoffer_before: float | None, local_writer: bool = False) -> None:
        """Start or continue the settle clock for ``name``."""
        now = time.monotonic()
        entry = self._pending.get(name)
        if entry is None:
            entry = _Pending(sig=sig, since=now, token=self._new_token(), reoffer_before=reoffer_before,
                             local_writer=local_writer)
            self._pending[name] = entry
            heapq.heappush(self._deadlines, (now + self._quiet_needed(entry), entry.token, name))
        elif local_writer and not entry.local_writer:
            entry.local_writer = True
            entry.sig, entry.since = sig, now
        elif entry.sig != sig:
            # The existing heap entry fires at the old deadline and moves itself on (see pop_due).
            entry.sig = sig
            entry.since = now

    def next_deadline(self) -> float | None:
        """The earliest monotonic time a file is due, dropping heap entries that no longer count."""
        heap = self._deadlines
        while heap and self._stale(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _stale(self, item: tuple[float, int, str]) -> bool:
        entry = self._pending.get(item[2])
        return entry is None or entry.token != item[1]

    def pop_due(self, sig_of: Callable[[str], Sig | None]) -> tuple[str, Sig | None, float | None] | None:
        """The next file due now that settled or is gone: ``(name, sig, reoffer_before)``, with ``sig``
        None when it is gone; it is no longer pending. None when nothing more is due. ``sig_of(name)``
        looks at the file; one that changed starts its settle clock again."""
        heap = self._deadlines
        while heap:
            deadline, token, name = heap[0]
            now = time.monotonic()
            if deadline > now:
                return None
            heapq.heappop(heap)
            entry = self._pending.get(name)
            if entry is None or entry.token != token:
                continue
            sig = sig_of(name)
            if sig is None:
                del self._pending[name]
                return name, None, None
            if sig != entry.sig:
                entry.sig, entry.since, entry.token = sig, now, self._new_token()
                heapq.heappush(heap, (now + self._quiet_needed(entry), entry.token, name))
            elif now - entry.since >= self._quiet_needed(entry):
                del self._pending[name]
                return name, sig, entry.reoffer_before
            else:
                entry.token = self._new_token()
                heapq.heappush(heap, (entry.since + self._quiet_needed(entry), entry.token, name))
        return None

    def _new_token(self) -> int:
        self._next_token += 1
        return self._next_token
