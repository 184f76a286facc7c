"""What every part of the engine shares: settings, plugins, listeners, the lock, the stop flags, the
files in progress and the counts. One :class:`Core` per engine; the parts get it when they are made."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hotfolder import fsguard, plugins
from hotfolder.comfy.client import Cancelled
from hotfolder.config import Settings
from hotfolder.events import Event
from hotfolder.record import FileRecord

#: The logger of every engine module (one name: ``hotfolder process`` filters its failure lines).
logger = logging.getLogger("hotfolder.engine")


class Core:
    """Shared engine state. ``cond`` guards ``active``, ``archiving`` and ``counts`` (and the parts'
    own queues); ``stop`` ends every thread, ``draining`` stops starting jobs, ``cancel_renders`` makes
    renders give up (the file stays claimed)."""

    def __init__(self, settings: Settings, listeners: list[Callable[[Event], None]], hooks: plugins.Hooks | None) -> None:
        self.settings = settings
        self.listeners = listeners
        self.hooks = hooks
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.draining = threading.Event()
        self.cancel_renders = threading.Event()
        self.active: dict[str, FileRecord] = {}  # files claimed and not archived, by job id
        self.archiving: set[str] = set()
        self.threads: list[threading.Thread] = []  # every thread the engine started, for health and stop
        self.counts = {"published": 0, "failed": 0, "files_done": 0, "files_failed": 0}
        # A full or read-only inbox or outbox pauses intake (see hotfolder.fsguard). What a fault cut off on
        # the intake side stays on disk and is taken up again, like after a crash, once it recovers.
        local = settings.local_destinations
        self.guard = fsguard.Guard({"inbox": settings.inbox, "outbox": settings.outbox,
                                    **{f"destination {d.name}": d.folder for d in local}},
                                   own=[settings.state_dir, settings.staging_dir, *(d.staging_dir for d in local)])
        self.recover_pending = False  # job folders to take up again once the filesystem recovers
        self.uncounted: set[str] = set()  # files whose parse a fault cut off: not a crash, not counted

    def emit(self, event: Event) -> None:
        """Tell every listener and plugin; a listener's failure is logged, never raised."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a display bug must never break a job
                logger.exception("Event listener failed")
        if self.hooks is not None:
            self.hooks.track_event(event)  # never raises: plugin failures are logged

    def count(self, name: str) -> None:
        with self.cond:
            self.counts[name] += 1

    def forget(self, record: FileRecord) -> None:
        """Forget ``record`` (it stays on disk, to be taken up again later)."""
        with self.cond:
            self.active.pop(record.job_id, None)
            self.archiving.discard(record.job_id)
            self.cond.notify_all()

    def through_faults(self, record: FileRecord, step: Callable[[], Any]) -> Any:
        """Run ``step``; while a full or read-only filesystem stops it, wait until that recovers (intake is
        paused meanwhile) and run it again. Every step can be redone, as after a crash: its state is in
        memory and, up to its last write, on disk. Raises Cancelled when stopping meanwhile."""
        while True:
            try:
                return step()
            except OSError as err:
                if not self.guard.check(err, fallback=record.folder):
                    raise
            while self.guard.paused():
                if self.stop.wait(0.2) or self.draining.is_set():  # stopping: it resumes at the next start
                    raise Cancelled(record.job_id)
