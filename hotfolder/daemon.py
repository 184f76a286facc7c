"""The long-running daemon: recover, scan, watch, process; report to systemd; stop and reload cleanly.

The watcher's threads only hand paths over; the main thread claims them, beats the systemd watchdog while
everything is healthy, answers signals and handles reloads; the engine's prepare threads parse and render
the claimed files (untrusted work, under budgets) and its workers talk to ComfyUI. ``once=True`` drains what is in the inbox and returns, which is also how tests
drive the daemon without signals.

Signals: SIGTERM and SIGINT stop taking files, give running jobs ``stop_budget`` seconds to finish and
leave the rest recorded for the next start (never in ``failed/``); the exit status is 0. SIGHUP reloads
the configuration (and with it templates, which are read per file); a configuration that does not load
is refused and the old one kept.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotfolder import cancel_requests, fsguard, housekeeping, plugins, server_jobs, service, status, status_file, watch
from hotfolder.comfy.client import ComfyClient
from hotfolder.config import Settings, with_changes
from hotfolder.engine import Engine
from hotfolder.engine.cancel import means_file
from hotfolder.errors import HotfolderError, filesystem_error
from hotfolder.events import Archived
from hotfolder.paths import UnsafeFolder, own_dir

logger = logging.getLogger(__name__)

SERVER_STATE_INTERVAL = 2.0
RETENTION_INTERVAL = 3600.0
# Settings a SIGHUP can change in a running daemon; the others need a restart.
RELOADABLE = {
    "postprocess", "plugin_config",
    "default_template", "settle_seconds", "job_timeout", "history_grace", "lost_grace", "poll_interval",
    "max_file_size", "download_temp", "max_parse_attempts", "render_timeout", "max_render_size", "max_scenario_lines",
    "max_jobs_per_file", "max_scenario_depth", "stop_budget", "retention_done_days",
    "retention_outbox_days", "retention_uploads_days", "status_interval", "templates", "validate", "inputs_root",
}


def ensure_folders(settings: Settings) -> None:
    """Make the folders. hotfolder's own must be real folders of its user (:func:`own_dir`):
    ``inbox/.hotfolder`` otherwise stops the start (UnsafeFolder); ``done/`` or ``failed/`` is logged,
    and files wait in their job folders until it is fixed. One that cannot be made now (a read-only or
    full inbox) is made when first needed; the daemon starts and says why its intake waits."""
    outboxes = (settings.outbox, *(d.folder for d in settings.local_destinations))
    for folder in (settings.inbox, *outboxes, settings.state_dir, settings.done_dir, settings.failed_dir):
        try:
            if folder == settings.inbox or folder in outboxes:
                folder.mkdir(parents=True, exist_ok=True)
            elif folder == settings.state_dir:
                own_dir(folder)
            else:
                _own(folder)
        except UnsafeFolder:
            raise
        except OSError as err:
            if folder == settings.inbox or err.errno not in fsguard.SYSTEMIC | fsguard.MAYBE_SYSTEMIC:
                raise filesystem_error(err, doing="create the folder") from err
            logger.warning("%s", filesystem_error(err, doing="create the folder").message)


def _own(folder: Path) -> bool:
    """Whether ``folder`` is hotfolder's own (made if missing); logs why not."""
    try:
        own_dir(folder)
    except UnsafeFolder as err:
        logger.error("%s", err)
        return False
    return True


class Signals:
    """What the signal handlers ask the main loop to do."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()


def install_signal_handlers(signals: Signals) -> None:
    """SIGTERM/SIGINT ask for a graceful stop, SIGHUP for a reload; the main loop does the work."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, _frame: Any) -> None:
        logger.info("Received %s; stopping (jobs still running get stop_budget, the rest resume at the next start)",
                    signal.Signals(signum).name)
        signals.stop.set()

    def reload(_signum: int, _frame: Any) -> None:
        signals.reload.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def run_daemon(settings: Settings, *, once: bool = False, stop: threading.Event | None = None,
               listeners: list[Any] | None = None, signals: Signals | None = None,
               reload_settings: Callable[[], Settings] | None = None,
               notifier: service.Notifier | None = None, hooks: plugins.Hooks | None = None) -> dict[str, int]:
    """Run until asked to stop (or, with ``once``, until the inbox is drained). Returns the counts."""
    signals = signals or Signals()
    if stop is not None:
        signals.stop = stop
    notifier = notifier or service.Notifier()
    ensure_folders(settings)
    engine = Engine(settings, listeners=listeners, hooks=hooks)
    board = status.StatusBoard(servers=[(c.name, c.display_url) for c in engine.clients],
                               instance=settings.instance_id)
    engine.listeners.append(board)
    metrics_server = None
    if settings.metrics_port and not once:
        from hotfolder import metrics

        metrics.require()
        collector = metrics.Metrics(board=board)
        for client in engine.clients:
            collector.watch_reconnects(client.name, _reconnects_of(client))
        engine.listeners.append(collector)
        metrics_server = metrics.start_metrics_server(settings.metrics_port, settings.metrics_host, metrics=collector)
        logger.info("Metrics on %s", metrics_server.url)
    writer = status_file.StatusWriter(board, status_file.status_path(settings.state_dir, settings.instance_id), interval=settings.status_interval,
                                 on_write=lambda snap: notifier.status(snap.get("summary", "")))
    jobs_poller = server_jobs.ServerJobsPoller(board, engine.clients, interval=settings.status_interval)
    heartbeat = service.Heartbeat(notifier)
    handed = cancel_requests.HandOver()
    engine.start()
    writer.start()
    jobs_poller.start()
    intake = watch.Intake(
        settings.inbox, handed.put, settle_seconds=settings.settle_seconds,
        use_observer=settings.use_observer and not once, ready_marker=settings.ready_marker,
        poll_interval=None if once else settings.rescan_interval,
    )
    retention = _Retention(settings) if not once else None
    try:
        resumed = engine.recover()
        if resumed:
            logger.info("Resumed %d job folder(s) from an earlier run", resumed)
        intake.start()
        intake.wait_scanned(30)
        board.set_state("running")
        writer.flush()
        notifier.ready(board.summary())
        logger.info("Watching %s -> %s with %s", settings.inbox, settings.outbox_url or settings.outbox,
                    ", ".join(c.display_url for c in engine.clients))
        if retention:
            retention.start()
        _main_loop(engine, intake, handed, board, heartbeat, signals, once=once, notifier=notifier,
                   reload_settings=reload_settings)
        if signals.stop.is_set():
            notifier.stopping()
            engine.stop_submitting()  # before anything that may take a while: no new prompt from here on
            board.set_state("stopping")
            writer.flush()
            intake.stop()
            # the watcher was stopped on purpose: only the running jobs' health counts while they finish
            finished = engine.drain(engine.settings.stop_budget, tick=lambda: heartbeat.beat(*engine.healthy()))
            if not finished:
                logger.info("Stop budget of %g s used up; the jobs still running resume at the next start",
                            engine.settings.stop_budget)
    finally:
        if retention:
            retention.stop()
        intake.stop()
        jobs_poller.stop()
        engine.stop()
        writer.stop()
        if metrics_server is not None:
            metrics_server.close()
    return dict(engine.counts)


def _health(engine: Engine, intake: watch.Intake) -> tuple[bool, str]:
    if not intake.healthy():
        return False, "the inbox watcher stopped"
    return engine.healthy()


def _main_loop(engine: Engine, intake: watch.Intake, handed: cancel_requests.HandOver, board: status.StatusBoard,
               heartbeat: service.Heartbeat, signals: Signals, *, once: bool, notifier: service.Notifier,
               reload_settings: Callable[[], Settings] | None) -> None:
    quiet_since: float | None = None
    next_adoption = time.monotonic() + engine.lease.interval
    next_states = 0.0
    waiting: Path | None = None
    while not signals.stop.is_set():
        heartbeat.beat(*_health(engine, intake))
        now = time.monotonic()
        board.set_submit_paused(engine.paused_since())
        if now >= next_states:
            for client in engine.clients:
                board.server_state(client.name, client.display_url, up=engine.server_up(client))
            next_states = now + SERVER_STATE_INTERVAL
        if now >= next_adoption:
            engine.adopt_orphans()
            next_adoption = now + engine.lease.interval
        if signals.reload.is_set():
            signals.reload.clear()
            _reload(engine, board, notifier, reload_settings)
        if engine.intake_paused():  # a full or read-only filesystem (logged): files wait in the inbox
            reason = engine.guard.reason()
            if reason != board.paused:
                board.set_paused(reason)
            signals.stop.wait(0.2)
            continue
        if board.paused:  # resumed (logged): files handed over before or during the pause are offered again
            board.set_paused(None)
            intake.rescan()
        for request in handed.requests():  # before the files waiting for room: a cancel never waits its turn
            waiting = _cancel(engine, handed, request, waiting)
        if waiting is None:
            waiting = handed.get(timeout=0.2)
            if waiting is None:
                if once:
                    if handed.empty() and intake.pending_count() == 0 and not engine.busy():
                        quiet_since = quiet_since or time.monotonic()
                        if time.monotonic() - quiet_since > 0.3:
                            return
                    else:
                        quiet_since = None
                continue
        if cancel_requests.is_request(waiting):  # <name>.cancel: a cancel, never a scenario
            waiting = _cancel(engine, handed, waiting, None)
            continue
        quiet_since = None
        if not engine.wait_for_room(timeout=0.2):
            continue  # keep beating the watchdog and taking cancels while the backlog is full
        if signals.stop.is_set():
            return
        path, waiting = waiting, None
        _take(engine, path)


def _take(engine: Engine, path: Path) -> None:
    """Claim ``path`` and queue it for a prepare thread."""
    try:
        engine.accept(path, background=True)  # parsed and rendered on a prepare thread, never on this one
    except fsguard.IntakePaused:
        pass  # the file stays in the inbox (or its job folder) and is offered again when intake resumes
    except Exception:  # noqa: BLE001 - the daemon's boundary: one file's bug never stops the others
        logger.exception("Taking %r failed unexpectedly; this is a bug in hotfolder. The file stays where it is "
                         "(the inbox or its job folder) and is taken up again at the next start", str(path))


def _cancel(engine: Engine, handed: cancel_requests.HandOver, request: Path, waiting: Path | None) -> Path | None:
    """Take the cancel request at ``request``. The files it names that wait to be claimed (``waiting``, the
    one the main loop holds, among them) are claimed right after the cancel is known, past the files
    before them, so it stops them before anything of them is sent. Returns what the main loop holds now."""
    name = cancel_requests.name_of(request)
    named = handed.take_named(name)  # out of the queue now; claimed once the cancel is known (below)
    if waiting is not None and means_file(name, waiting.name):
        named, waiting = [waiting, *named], None

    def claim_named(_: str) -> list[str]:
        for path in named:
            _take(engine, path)
        return [path.name for path in named]

    cancel_requests.handle(request, engine.cancel, claim_named)
    return waiting


def _reload(engine: Engine, board: status.StatusBoard, notifier: service.Notifier,
            reload_settings: Callable[[], Settings] | None) -> None:
    notifier.reloading()
    board.set_state("reloading")
    try:
        if reload_settings is None:
            logger.warning("SIGHUP: this daemon was started without a way to reload its settings")
            return
        try:
            new = reload_settings()
            hooks = plugins.load_hooks(new) if engine.hooks is not None else None
        except HotfolderError as err:
            logger.error("SIGHUP: the new configuration or plugins are refused, the old ones stay in force:\n%s", err)
            return
        old = engine.settings
        changed = {k for k in vars(new) if getattr(new, k) != getattr(old, k) and k != "instance_id"}
        fixed = sorted(changed - RELOADABLE)
        applied = {k: getattr(new, k) for k in changed & RELOADABLE}
        engine.settings = with_changes(old, **applied)
        if hooks is not None:
            engine.hooks = hooks  # jobs already rendered keep their workflows; new files use the new plugins
        logger.info("SIGHUP: configuration reloaded%s%s",
                    f"; changed: {', '.join(sorted(applied))}" if applied else "; nothing changed",
                    f"; these need a restart to change: {', '.join(fixed)}" if fixed else "")
    finally:
        board.set_state("running")
        notifier.ready(board.summary())


class _Retention:
    """Deletes old entries from inbox/done/ and outbox/ once an hour, on its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        if self._folders():
            self._thread.start()

    def _folders(self) -> list[tuple[Path, float]]:
        """(folder, days) pairs to prune: inbox/done/, outbox/, and the hotfolder/ subfolder (where
        hotfolder's uploads go) of each server's local input_dir."""
        s = self.settings
        pairs = [(s.done_dir, s.retention_done_days), (s.outbox, 0 if s.outbox_url else s.retention_outbox_days)]
        pairs += [(server.input_dir / "hotfolder", s.retention_uploads_days) for server in s.servers if server.input_dir]
        return [(folder, days) for folder, days in pairs if days]

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.prune_once()
            self._stop.wait(RETENTION_INTERVAL)

    def prune_once(self) -> None:
        """One pass. ``done/`` is pruned only while it is hotfolder's own folder: the files behind a
        symlink put in its place are never deleted."""
        for folder, days in self._folders():
            if folder == self.settings.done_dir and not _own(folder):
                continue
            if folder.is_dir():
                try:
                    removed = housekeeping.prune(folder, days * 86400)
                except OSError as err:
                    logger.warning("Retention in %s failed: %s", folder, err)
                    continue
                if removed:
                    logger.info("Retention: removed %d old entr%s from %s", len(removed),
                                "y" if len(removed) == 1 else "ies", folder)


def process_files(settings: Settings, paths: list[Path], *, listeners: list[Any] | None = None,
                  hooks: plugins.Hooks | None = None, interrupt: threading.Event | None = None) -> list[Archived]:
    """Run scenario files now, in the foreground, leaving them where they are. Returns the 'archived'
    events, one per file, in completion order. Once ``interrupt`` is set (Ctrl-C), no further file is
    taken and every job of this run is cancelled (its prompt dequeued or interrupted on the server)."""
    ensure_folders(settings)
    # its own instance: runs beside a daemon on the same inbox; if it is killed, the daemon adopts its jobs
    settings = with_changes(settings, instance_id=f"{settings.instance_id}.process-{os.getpid()}")
    done: list[Archived] = []
    engine = Engine(settings, listeners=[*(listeners or []), lambda e: done.append(e) if isinstance(e, Archived) else None],
                    hooks=hooks)
    engine.start()
    interrupted = _Interrupted(engine, interrupt)
    try:
        for path in paths:
            while not engine.wait_for_room(0.2) and not interrupted():
                pass
            if interrupted():
                break
            while True:
                try:
                    engine.accept(path.absolute(), move=False)  # inputs: paths are relative to its folder
                    break
                except fsguard.IntakePaused:  # a full or read-only inbox (logged): try again once it recovers
                    while engine.intake_paused():
                        time.sleep(0.5)
        while engine.intake_paused() or not engine.wait_idle(0.2):
            interrupted()
            time.sleep(0.2)  # what a fault cut off is taken up again once the filesystem recovers
    finally:
        engine.stop()
    return done


class _Interrupted:
    """Called: whether ``event`` is set; the first time it is, every job of ``engine`` is cancelled."""

    def __init__(self, engine: Engine, event: threading.Event | None) -> None:
        self.engine, self.event, self.done = engine, event, False

    def __call__(self) -> bool:
        if self.event is None or not self.event.is_set():
            return False
        if not self.done:
            self.done = True
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            self.engine.cancel(None, f"by Ctrl-C in `hotfolder process` (pid {os.getpid()}) at {when}")
        return True


def _reconnects_of(client: ComfyClient) -> Callable[[], int]:
    """How many times ``client``'s WebSocket has reconnected, read when called (for the metrics)."""
    return lambda: client.stream.reconnects
