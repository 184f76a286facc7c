"""The long-running daemon: recover, scan, watch, process; stop cleanly on SIGTERM/SIGINT.

The watcher's threads only hand paths over; the main thread claims, parses and renders them (fast,
local work) and the engine's workers talk to ComfyUI. ``once=True`` drains what is in the inbox and
returns, which is also how tests drive the daemon without signals.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from hotfolder import watch
from hotfolder.config import Settings, with_changes
from hotfolder.pipeline import Engine, Event

logger = logging.getLogger(__name__)


def ensure_folders(settings: Settings) -> None:
    for folder in (settings.inbox, settings.outbox, settings.state_dir, settings.done_dir, settings.failed_dir):
        folder.mkdir(parents=True, exist_ok=True)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask for a graceful stop: jobs in flight stay recorded and resume next start."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: Any) -> None:
        logger.info("Received %s; stopping (jobs in flight resume at the next start)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_daemon(settings: Settings, *, once: bool = False, stop: threading.Event | None = None,
               listeners: list[Any] | None = None) -> dict[str, int]:
    """Run until ``stop`` is set (or, with ``once``, until the inbox is drained). Returns the counts."""
    stop = stop or threading.Event()
    ensure_folders(settings)
    engine = Engine(settings, listeners=listeners)
    ready: queue.Queue[Path] = queue.Queue()
    engine.start()
    intake = watch.Intake(
        settings.inbox, ready.put, settle_seconds=settings.settle_seconds,
        use_observer=settings.use_observer and not once, ready_marker=settings.ready_marker,
        poll_interval=None if once else settings.rescan_interval,
    )
    try:
        resumed = engine.recover()
        if resumed:
            logger.info("Resumed %d job folder(s) from an earlier run", resumed)
        intake.start()
        logger.info(
            "Watching %s -> %s with %s", settings.inbox, settings.outbox,
            ", ".join(c.display_url for c in engine.clients),
        )
        quiet_since: float | None = None
        next_adoption = time.monotonic() + engine.lease.interval
        while not stop.is_set():
            if time.monotonic() >= next_adoption:
                engine.adopt_orphans()
                next_adoption = time.monotonic() + engine.lease.interval
            try:
                path = ready.get(timeout=0.2)
            except queue.Empty:
                if once:
                    if ready.empty() and intake.pending_count() == 0 and not engine.busy():
                        quiet_since = quiet_since or time.monotonic()
                        if time.monotonic() - quiet_since > 0.3:
                            break
                    else:
                        quiet_since = None
                continue
            quiet_since = None
            engine.wait_for_room()
            if stop.is_set():
                break
            engine.accept(path)
    finally:
        intake.stop()
        engine.stop()
    return dict(engine.counts)


def process_files(settings: Settings, paths: list[Path], *, listeners: list[Any] | None = None) -> list[Event]:
    """Run scenario files now, in the foreground, leaving them where they are. Returns the 'archived'
    events, one per file, in completion order."""
    ensure_folders(settings)
    # its own instance: runs beside a daemon on the same inbox; if it is killed, the daemon adopts its jobs
    settings = with_changes(settings, instance_id=f"{settings.instance_id}.process-{os.getpid()}")
    done: list[Event] = []
    engine = Engine(settings, listeners=[*(listeners or []), lambda e: done.append(e) if e.kind == "archived" else None])
    engine.start()
    try:
        for path in paths:
            engine.wait_for_room()
            engine.accept(path, move=False)
        engine.wait_idle()
    finally:
        engine.stop()
    return done
