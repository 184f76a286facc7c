"""The engine's face: :class:`Engine` builds the parts and is what the daemon, the CLI and the tests
call. What each part does is in its module: intake (claim, parse, render), the one job (job.py), the
scheduler, routing, endings (failure, archive) and recovery."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hotfolder import plugins
from hotfolder.comfy.client import ComfyClient
from hotfolder.config import Settings
from hotfolder.engine.cancel import Cancels
from hotfolder.engine.core import Core, logger
from hotfolder.engine.ending import Endings
from hotfolder.engine.intake import Intake
from hotfolder.engine.job import Outputs, Services, run_job
from hotfolder.engine.pause import PauseSwitch
from hotfolder.engine.recovery import Recovery
from hotfolder.engine.routing import Router
from hotfolder.engine.scheduler import Scheduler
from hotfolder.events import Event, JobLog
from hotfolder.record import FileRecord, JobState
from hotfolder.stages.context import JobContext


class Engine:
    """Runs claimed files through the stages against one or more ComfyUI servers.

    ``hooks`` (from :func:`hotfolder.plugins.load_hooks`) lets plugins take part; ``None`` runs without.
    ``listeners`` are called with every :mod:`hotfolder.events` event.
    """

    def __init__(self, settings: Settings, *, listeners: list[Callable[[Event], None]] | None = None,
                 hooks: plugins.Hooks | None = None) -> None:
        self.listeners = list(listeners or [])
        core = self._core = Core(settings, self.listeners, hooks)
        self._router = Router(core)
        self.clients = self._router.clients
        self._endings = Endings(core)
        self._pause = PauseSwitch(core)
        self._scheduler = Scheduler(core, [c.name for c in self.clients], submit_side=self._submit_side,
                                    output_side=self._output_side, is_down=self._router.is_down,
                                    held=self._pause.held,
                                    ended=lambda record, job: self._cancels.flag(record, job).is_set())
        self._intake = Intake(core, self._router, self._endings, self._scheduler)
        self._recovery = Recovery(core, self._intake)
        self._cancels = Cancels(core)
        self._services = Services(self._router, self._scheduler.slots, self._intake.render_later, self._pause.hold)
        self.lease = self._recovery.lease
        self.guard = core.guard
        self.counts = core.counts
        self.workers = self._scheduler.workers

    @property
    def settings(self) -> Settings:
        return self._core.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Reloaded settings (SIGHUP; the keys daemon.RELOADABLE allows) apply from now on."""
        self._core.settings = settings

    @property
    def hooks(self) -> plugins.Hooks | None:
        return self._core.hooks

    @hooks.setter
    def hooks(self, hooks: plugins.Hooks | None) -> None:
        """New plugins (SIGHUP) may compile templates differently: templates are loaded again."""
        self._core.hooks = hooks
        self._intake.template_cache = type(self._intake.template_cache)()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Take this instance's lease (ConfigError if another live daemon holds it) and start working.
        On a full or read-only inbox the lease is taken once it recovers; intake waits until then."""
        self._recovery.take_lease()
        for client in self.clients:
            client.start()
        self._pause.start()
        self._router.start()
        self._scheduler.start()
        self._intake.start()

    def stop(self, timeout: float = 10.0) -> None:
        core = self._core
        core.stop.set()
        core.cancel_renders.set()
        with core.cond:
            self._scheduler.wake_all()
        end = time.monotonic() + timeout
        with core.cond:
            threads = list(core.threads)
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        for client in self.clients:
            client.close()
        self._recovery.release_lease()

    def stop_submitting(self) -> None:
        """Start no job and send no prompt from now on (the first step of a stop; see :meth:`drain`)."""
        with self._core.cond:
            self._core.draining.set()
            self._core.cancel_renders.set()  # a file still being read stays claimed for the next start
            self._core.cond.notify_all()

    def drain(self, budget: float, tick: Callable[[], object] | None = None) -> bool:
        """Stop starting jobs and let the ones in flight finish for up to ``budget`` seconds (calling
        ``tick`` about once a second). Returns True if none is left running; the others stay recorded."""
        self.stop_submitting()
        return self._scheduler.drain(budget, tick)

    # -- state -----------------------------------------------------------------------------------

    def paused_since(self) -> float | None:
        """When submitting was paused (``inbox/PAUSE``, wall clock seconds), None if it is not."""
        return self._pause.since

    def busy(self) -> bool:
        with self._core.cond:
            return bool(self._core.active)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no file is in progress; False if one still is after ``timeout`` seconds."""
        core = self._core
        end = None if timeout is None else time.monotonic() + timeout
        with core.cond:
            while core.active:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                core.cond.wait(left if left is not None else 1.0)
        return True

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block while enough jobs are waiting for workers (keeps memory flat with a large backlog).
        Returns False if there is still no room after ``timeout`` seconds."""
        core = self._core
        end = None if timeout is None else time.monotonic() + timeout
        with core.cond:
            while (self._scheduler.full() or self._intake.full()) and not core.stop.is_set():
                left = 1.0 if end is None else end - time.monotonic()
                if left <= 0:
                    return False
                core.cond.wait(min(left, 1.0))
        return True

    def healthy(self) -> tuple[bool, str]:
        """(True, "") while every worker thread and every server's WebSocket thread is alive. A server
        being down is not unhealthy: jobs wait for it."""
        core = self._core
        with core.cond:
            dead = [t.name for t in core.threads if not t.is_alive()]
        if dead and not core.stop.is_set() and not core.draining.is_set():
            return False, f"worker thread(s) died: {', '.join(dead)}"
        for client in self.clients:
            if not client.stream.alive():
                return False, f"WebSocket thread for {client.display_url} died"
        return True, ""

    def server_up(self, client: ComfyClient) -> bool:
        """Whether the server answered last time hotfolder asked (and its WebSocket is connected)."""
        return self._router.server_up(client)

    # -- intake and recovery ---------------------------------------------------------------------

    def accept(self, path: Path, *, move: bool = True, background: bool = False) -> FileRecord | None:
        """Claim ``path`` and queue its jobs (see :meth:`Intake.accept`)."""
        return self._intake.accept(path, move=move, background=background)

    def intake_paused(self) -> bool:
        """Whether intake is paused by a full or read-only filesystem (see :meth:`Recovery.intake_paused`).
        Called by the thread that claims files."""
        return self._recovery.intake_paused()

    def recover(self) -> int:
        """Resume the job folders left by an earlier run; how many (see :meth:`Recovery.recover`)."""
        return self._recovery.recover()

    def adopt_orphans(self) -> int:
        """Adopt and resume the jobs of instances whose daemon died (called periodically)."""
        return self._recovery.adopt_orphans()

    def cancel(self, name: str | None, reason: str) -> list[str]:
        """Cancel the jobs ``name`` means (a job's or a file's name; None: all), see :mod:`.cancel`."""
        hits = self._cancels.cancel(name, reason)
        self._scheduler.end_now()  # the cancelled jobs still waiting for a worker end now
        return hits

    # -- the two halves of a job, at the job boundary ---------------------------------------------

    def _submit_side(self, record: FileRecord, job: JobState) -> Outputs | None:
        """On a job worker: run the job up to its hand-off (see :func:`run_job`)."""
        core = self._core
        ctx = JobContext(record=record, job=job, log=JobLog(logger, {"file": record.input_name, "job": job.name}),
                         get_settings=lambda: core.settings, get_hooks=lambda: core.hooks, stop=core.stop, emit=core.emit,
                         count=core.count, wait_for_server=self._router.wait_for_server, uploads=self._router.uploads,
                         restarts=self._router, cancel=self._cancels.flag(record, job))

        def first_half() -> Outputs:
            steps = run_job(ctx, self._services)
            try:
                return next(steps)
            finally:
                steps.close()

        return self._endings.at_boundary(record, job, first_half)

    def _output_side(self, outputs: Outputs) -> None:
        """On an output worker: the rest of the job, from its hand-off."""
        ctx = outputs.ctx

        def second_half() -> None:
            for _ in run_job(ctx, self._services, outputs):
                pass

        self._endings.at_boundary(ctx.record, ctx.job, second_half)
