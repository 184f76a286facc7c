"""Pause: while a file called ``PAUSE`` is in the inbox, nothing new is submitted to any server.

The file is the one switch: ``hotfolder pause`` creates it, ``hotfolder resume`` removes it, and
anyone on a shared folder may do either by hand. So a pause holds across a daemon restart and every
daemon (and ``hotfolder process``) on the inbox honours it. While paused, files are still claimed,
parsed, rendered and recorded, and prompts already on a server are followed to their end, downloaded
and published; jobs still to be submitted wait before their POST, holding no in-flight place.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hotfolder.comfy.client import Cancelled
from hotfolder.engine.core import Core, logger
from hotfolder.record import JobState, now_iso

PAUSE_NAME = "PAUSE"  # in the inbox; the watcher never claims it (hotfolder.watch.IGNORED_NAMES)
CHECK_INTERVAL = 0.25  # seconds between looks at the file
#: Job states whose next step is a POST /prompt (or, for "unrendered", a render and then a POST). A job
#: "submitting" that was sent before may be on the server already: it is looked up there (and followed
#: if it is), and waits only right before its POST (see :meth:`PauseSwitch.hold`).
HELD_STATES = frozenset({"unrendered", "pending"})


def pause_path(inbox: Path) -> Path:
    return inbox / PAUSE_NAME


def pause_inbox(inbox: Path) -> bool:
    """Create ``inbox/PAUSE`` (saying who paused and when); False if it was there already."""
    path = pause_path(inbox)
    text = (f"Paused by {_who()} at {now_iso()} (hotfolder pause).\n"
            "Nothing new is submitted while this file is here; remove it or run 'hotfolder resume' to resume.\n")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def resume_inbox(inbox: Path) -> bool:
    """Remove ``inbox/PAUSE``; False if it was not there."""
    try:
        pause_path(inbox).unlink()
    except FileNotFoundError:
        return False
    return True


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


class PauseSwitch:
    """Whether submitting is paused, from ``inbox/PAUSE``: looked at every CHECK_INTERVAL seconds by
    its own thread, read by the scheduler (which hands held jobs to no worker) and by :meth:`hold`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.since: float | None = None  # wall clock seconds the pause was seen, None: not paused
        self.refresh()

    @property
    def paused(self) -> bool:
        return self.since is not None

    def held(self, job: JobState, *, posting: bool = False) -> bool:
        """Whether ``job`` must wait now: paused, and its next step would submit a prompt (``posting``:
        the job is about to POST it)."""
        if self.since is None:
            return False
        return posting or job.state in HELD_STATES or (job.state == "submitting" and not job.submissions)

    def refresh(self) -> bool:
        """Look at the file now; log a change and wake the waiting workers. Returns whether paused."""
        path = pause_path(self.core.settings.inbox)
        try:
            there = path.is_file()
        except OSError:
            there = self.since is not None  # an unreadable inbox changes nothing
        if there != (self.since is not None):
            with self.core.cond:
                self.since = time.time() if there else None
                self.core.cond.notify_all()
            if there:
                logger.warning("Paused: %s is there; nothing new is submitted until it is removed "
                               "(hotfolder resume). Running prompts finish and are published.", path)
            else:
                logger.warning("Resumed: %s was removed; submitting again", path)
        return there

    def start(self) -> None:
        t = threading.Thread(target=self._run, name="pause-watch", daemon=True)
        t.start()
        self.core.threads.append(t)

    def _run(self) -> None:
        while not self.core.stop.wait(CHECK_INTERVAL):
            self.refresh()

    def hold(self, job: JobState, *, posting: bool = False, give_up: Callable[[], None] = lambda: None) -> None:
        """Wait while paused and ``job`` is held (see :meth:`held`). Raises Cancelled when the engine
        stops or drains meanwhile, and right before a POST (``posting``) once it does, paused or not:
        a stopping daemon lets the prompts it sent finish and sends no new one. The job stays recorded
        and is taken up again at the next start. ``give_up()`` is called while waiting: it raises to
        stop waiting (the job was cancelled; a held job has sent nothing)."""
        core = self.core
        with core.cond:
            while True:
                held = self.held(job, posting=posting)
                if (held or posting) and (core.stop.is_set() or core.draining.is_set()):
                    raise Cancelled(job.name)
                if not held:
                    return
                give_up()
                core.cond.wait(1.0)
