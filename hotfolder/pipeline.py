"""The pipeline: the one place where the stage order lives.

    watch → claim → parse → render → inject → submit → track → download → publish → archive

``watch`` (:mod:`hotfolder.watch`) finds complete files; :class:`Engine` runs everything after it.
Claiming happens on the caller's thread. Parsing and rendering, whose cost depends on the file (its size,
the loops its values drive), run under the budgets of :mod:`hotfolder.budgets`: in the daemon
(``accept(background=True)``) on ``PREPARE_THREADS`` threads of their own, so that the thread that
watches the inbox and answers signals never runs them and one slow file never holds up the others;
otherwise (``hotfolder process``, tests) on the caller's thread. Every job then goes to a pool of workers,
one per allowed in-flight prompt per server plus one, that submit and track it.
A job whose prompt ended is handed to its server's output workers, which download, post-process and
publish it; so the submitting side never waits for a download or a post-processor, and each server always
has the next prompt queued behind the running one (up to a backlog of finished jobs, see ``_handoff_cap``).
Each server starts with one output worker; more start (up to ``output_workers``) while finished jobs wait.

A job whose scenario has ``inputs:`` uploads those files to the server it was routed to right before
it is submitted (:mod:`hotfolder.stages.upload`; each server gets each content once). A job whose
template is a UI-format workflow while no server answers for its ``/object_info`` is rendered later,
by a worker, once one does.

Each job's state is recorded in its file's job folder before every step with an outside effect, so that
:meth:`Engine.recover` can resume after a crash without losing or repeating work. A server that is away
makes jobs wait; it never fails them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolder import __version__, budgets, failpoints, fsguard, plugins
from hotfolder.comfy.client import Cancelled, ComfyClient, PromptLost, PromptResult, PromptWatch
from hotfolder.comfy.object_info import ObjectInfoCache, StopAfterNone
from hotfolder.config import Settings
from hotfolder.errors import (
    FilesystemError,
    HotfolderError,
    JobTimeout,
    OutcomeUnknown,
    OutputError,
    ScenarioError,
    ServerError,
    ServerUnavailable,
    TemplateError,
    filesystem_error,
)
from hotfolder.events import Event, JobLog
from hotfolder.lease import Lease
from hotfolder.paths import UnsafeFolder, display_name, own_dir, rename_noreplace, safe_filename
from hotfolder.record import (
    RECORD_NAME,
    FileRecord,
    JobState,
    is_own_name,
    now_iso,
    read_file,
    write_json_private,
)
from hotfolder.redact import redact_data
from hotfolder.spec import JobSpec
from hotfolder.stages import archive, claim, download, parse, publish, submit, track, upload
from hotfolder.templates import load, validate
from hotfolder.templates.prepare import (
    chosen_postprocess,
    inputs_base,
    render_job,
    template_record,
)
from hotfolder.templates.problems import ERROR, ValidationError

logger = logging.getLogger(__name__)

MAX_RESUBMISSIONS = 5
MAX_DOWNLOAD_ERRORS = 5
OUTPUT_WAIT = 1.0  # seconds a finished job may wait for an output worker before another one starts
OUTPUT_IDLE = 60.0  # seconds without work after which an output worker beyond a server's first stops
PREPARE_THREADS = 2  # threads that parse and render claimed files (two: one slow file never stops intake)
RENDER_TIMEOUTS_PER_FILE = 2  # jobs of one file over render_timeout before the rest of that file is refused


class Engine:
    """Runs claimed files through the stages against one or more ComfyUI servers.

    ``hooks`` (from :func:`hotfolder.plugins.load_hooks`) lets plugins take part; ``None`` runs without.
    """

    def __init__(self, settings: Settings, *, listeners: list[Callable[[Event], None]] | None = None,
                 hooks: plugins.Hooks | None = None) -> None:
        self.settings = settings
        self.listeners = list(listeners or [])
        self.hooks = hooks  # also starts an empty template cache
        self.clients = [
            ComfyClient(
                server, connect_timeout=settings.connect_timeout, read_timeout=settings.http_timeout,
                poll_interval=settings.poll_interval, history_grace=settings.history_grace,
                lost_grace=settings.lost_grace, limits=budgets.Limits.from_settings(settings),
            )
            for server in settings.servers
        ]
        self._inflight = {c.name: threading.Semaphore(settings.queue_depth) for c in self.clients}
        self._object_info = {c.name: ObjectInfoCache(c.http.object_info, name=c.display_url)
                             for c in self.clients}
        self._load = {c.name: 0 for c in self.clients}
        self._uploaded: dict[str, dict[str, str]] = {c.name: {} for c in self.clients}  # sha256 -> name
        self._upload_locks = {c.name: threading.Lock() for c in self.clients}
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._running = 0  # jobs taken by a worker and not yet done: submitting, tracking, or with the output workers
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        # Each server has its own output workers (a server that went away with outputs still to fetch
        # holds up only its own), waiting on their own condition, woken one per finished job.
        self._outputs_ready = {c.name: threading.Condition(lock) for c in self.clients}
        self._tasks: list[tuple[FileRecord, JobState]] = []
        self._to_prepare: list[tuple[FileRecord, bool]] = []  # claimed files waiting for a prepare thread
        self._preparers = 0  # prepare threads started
        self._cancel_renders = threading.Event()  # set when stopping: renders give up, files stay claimed
        self._handoff: dict[str, list[_Finished]] = {c.name: [] for c in self.clients}  # prompt ended, outputs to fetch
        self._output_threads = {c.name: 0 for c in self.clients}  # output workers running, per server
        self._output_serial = 0  # numbers the output workers' thread names
        self._active: dict[str, FileRecord] = {}
        self._archiving: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._down_since: dict[str, float] = {}
        self.counts = {"published": 0, "failed": 0, "files_done": 0, "files_failed": 0}
        self.workers = (settings.queue_depth + 1) * len(self.clients)
        # Finished jobs may wait for the output workers up to this many; beyond it, submitting pauses (the
        # outputs cannot keep up, and a server's history, where they are listed, is not kept forever).
        self._handoff_cap = 8 * settings.output_workers * len(self.clients)
        self._backlog_logged = False
        if len(self.clients) > 1:
            for client in self.clients:
                client.reach.waiting = (f"Its jobs wait until it answers, or move to another server after "
                                        f"lost_grace = {settings.lost_grace:g} s; hotfolder keeps trying.")
        self.lease = Lease(settings.state_dir, settings.instance_id, timeout=settings.lease_timeout)
        # A full or read-only inbox or outbox pauses intake (see hotfolder.fsguard). What a fault cut off on
        # the intake side stays on disk and is taken up again, like after a crash, once it recovers.
        self.guard = fsguard.Guard({"inbox": settings.inbox, "outbox": settings.outbox},
                                   own=[settings.state_dir, settings.staging_dir])
        self._lease_pending = False  # the lease could not be written (read-only or full inbox at start)
        self._recover_pending = False  # job folders to take up again once the filesystem recovers
        self._uncounted: set[str] = set()  # files whose parse a fault cut off: not a crash, not counted

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def hooks(self) -> plugins.Hooks | None:
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: plugins.Hooks | None) -> None:
        """New plugins (SIGHUP) may compile templates differently: templates are loaded again."""
        self._hooks = hooks
        self._template_cache = load.TemplateCache()

    def start(self) -> None:
        """Take this instance's lease (ConfigError if another live daemon holds it) and start working.
        On a full or read-only inbox the lease is taken once it recovers; intake waits until then."""
        try:
            self.lease.acquire()
        except OSError as err:
            if not self.guard.check(err, fallback=self.settings.state_dir):
                raise filesystem_error(err, doing="write the lease") from err
            self._lease_pending = self._recover_pending = True
        for client in self.clients:
            client.start()
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"job-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        with self._cond:
            for client in self.clients:
                self._start_output_worker(client.name)
        t = threading.Thread(target=self._watch_outputs, name="output-watch", daemon=True)
        t.start()
        self._workers.append(t)
        for i in range(PREPARE_THREADS):
            t = threading.Thread(target=self._preparer, name=f"prepare-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        self._preparers = PREPARE_THREADS

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._cancel_renders.set()
        with self._cond:
            self._cond.notify_all()
            for ready in self._outputs_ready.values():
                ready.notify_all()
        end = time.monotonic() + timeout
        with self._cond:
            threads = list(self._workers)
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        for client in self.clients:
            client.close()
        if not self._lease_pending:
            self.lease.release()

    def busy(self) -> bool:
        with self._cond:
            return bool(self._active)

    def wait_idle(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._active:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block while enough jobs are waiting for workers (keeps memory flat with a large backlog).
        Returns False if there is still no room after ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while ((len(self._tasks) >= 2 * self.workers or len(self._to_prepare) >= max(1, self._preparers))
                   and not self._stop.is_set()):
                left = 1.0 if end is None else end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
        return True

    def healthy(self) -> tuple[bool, str]:
        """(True, "") while every worker thread and every server's WebSocket thread is alive. A server
        being down is not unhealthy: jobs wait for it."""
        with self._cond:
            dead = [t.name for t in self._workers if not t.is_alive()]
        if dead and not self._stop.is_set() and not self._draining.is_set():
            return False, f"worker thread(s) died: {', '.join(dead)}"
        for client in self.clients:
            if not client.stream.alive():
                return False, f"WebSocket thread for {client.display_url} died"
        return True, ""

    def intake_paused(self) -> bool:
        """Whether intake is paused by a full or read-only filesystem (probing it when due). When it has
        recovered: takes the lease if it could not, and resumes what the fault cut off (which may pause
        intake again). Called by the thread that claims files."""
        if self.guard.paused():
            return True
        if self._lease_pending:
            try:
                self.lease.acquire()
            except OSError as err:
                if self.guard.check(err, fallback=self.settings.state_dir):
                    return True
                raise filesystem_error(err, doing="write the lease") from err
            self._lease_pending = False
        if self._recover_pending:
            self._recover_pending = False
            self.recover()
        return self.guard.paused()

    def server_up(self, client: ComfyClient) -> bool:
        """Whether the server answered last time hotfolder asked (and its WebSocket is connected)."""
        with self._cond:
            down = client.name in self._down_since
        return not down and client.ws_connected

    def drain(self, budget: float, tick: Callable[[], None] | None = None) -> bool:
        """Stop starting jobs and let the ones in flight finish for up to ``budget`` seconds (calling
        ``tick`` about once a second). Returns True if none is left running; the others stay recorded."""
        self._draining.set()
        self._cancel_renders.set()  # a file still being read stays claimed for the next start
        end = time.monotonic() + budget
        with self._cond:
            self._cond.notify_all()
            while self._running and time.monotonic() < end:
                self._cond.wait(min(1.0, max(0.0, end - time.monotonic())))
                if tick:
                    self._cond.release()
                    try:
                        tick()
                    finally:
                        self._cond.acquire()
            return not self._running

    def _emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a display bug must never break a job
                logger.exception("Event listener failed")
        if self.hooks is not None:
            self.hooks.track_event(event)  # never raises: plugin failures are logged

    # -- intake side: claim, parse, render -------------------------------------------------------

    def accept(self, path: Path, *, move: bool = True, background: bool = False) -> FileRecord | None:
        """Claim ``path`` and queue its jobs. Returns None if it was gone or not a regular file, or could
        not be claimed (then it went to failed/ if it could). Raises IntakePaused when a full or read-only
        filesystem stopped it (the file stays in the inbox or its job folder until it recovers). With
        ``background`` (and the engine started), it is parsed and rendered on a prepare thread."""
        # The first record already counts the parse attempt that follows: one record write, not two.
        try:
            record = claim.claim_file(path, self.settings.jobs_dir, instance=self.settings.instance_id,
                                      move=move, parse_attempts=1)
        except OSError as err:
            self._intake_fault(err, path, None, move=move)
            return None
        if record is None:
            return None
        logger.info("[%s] claimed as job %s", record.input_name, record.job_id)
        self._emit(Event("claimed", record.input_name, record.job_id))
        self._queue_record(record, counted=True, background=background)
        return record

    def _queue_record(self, record: FileRecord, *, counted: bool = False, background: bool = True) -> None:
        """Start ``record`` on a prepare thread (with ``background`` once they run), else right here."""
        if not (background and self._preparers):
            self._start_record(record, counted=counted)
            return
        with self._cond:
            self._active[record.job_id] = record
            self._to_prepare.append((record, counted))
            self._cond.notify_all()

    def _preparer(self) -> None:
        """Parse and render claimed files, one at a time, until the engine stops."""
        while not self._stop.is_set():
            with self._cond:
                # stopping (draining): the files not started stay claimed for the next start
                while not self._stop.is_set() and (not self._to_prepare or self._draining.is_set()):
                    self._cond.wait(1.0)
                if self._stop.is_set():
                    return
                record, counted = self._to_prepare.pop(0)
                self._cond.notify_all()
            try:
                self._start_record(record, counted=counted)
            except fsguard.IntakePaused:
                pass  # a full or read-only inbox: left where the fault found it, taken up when it recovers
            except budgets.RenderCancelled:
                logger.info("[%s] stopping: left claimed, it is read again at the next start", record.input_name)
                self._uncount(record)
                self._forget(record)
            except Exception:  # noqa: BLE001 - as if hotfolder had stopped here: the next start reads it again
                logger.exception("[%s] reading the file failed unexpectedly; it stays claimed for the next start",
                                 record.input_name)
                self._forget(record)

    def _uncount(self, record: FileRecord) -> None:
        """A read cut short by a stop is no crash: it does not count toward ``max_parse_attempts``."""
        if record.state == "claimed" and record.parse_attempts > 0:
            record.parse_attempts -= 1
            try:
                record.save(durable=False)
            except OSError as err:  # counted, then: at worst the file is set aside one attempt early
                logger.warning("[%s] could not update its record: %s", record.input_name, err)

    def _forget(self, record: FileRecord) -> None:
        with self._cond:
            self._active.pop(record.job_id, None)
            self._cond.notify_all()

    def _start_record(self, record: FileRecord, *, counted: bool = False) -> None:
        """Queue the jobs of ``record`` (parsing it first if it is only claimed). ``counted``: the record
        on disk already counts this parse attempt (a fresh claim)."""
        with self._cond:
            self._active[record.job_id] = record
        try:
            try:
                if record.state == "claimed":
                    if not counted:
                        if record.parse_attempts >= self.settings.max_parse_attempts:
                            raise ScenarioError(
                                f"hotfolder stopped {record.parse_attempts} times while reading {record.input_name!r}; "
                                "it is set aside so that it cannot stop the daemon again.",
                                hint="Check the file (size, nesting, encoding) and the plugins that read it, then move it back to inbox/.",
                            )
                        record.parse_attempts += 1  # counted before the risky step, so a poison file cannot crash-loop
                        record.save()
                    self._prepare(record)
            except HotfolderError as err:
                self._fail_file(record, err)
                return
            pending = [job for job in record.jobs if not job.finished]
            if not pending:
                self._archive(record)
                return
        except OSError as err:
            self._intake_fault(err, record.folder, record)
            return
        with self._cond:
            self._tasks.extend((record, job) for job in pending)
            self._cond.notify_all()

    def _intake_fault(self, err: OSError, where: Path, record: FileRecord | None, *, move: bool = True) -> None:
        """An OSError on the intake side (claim, parse, record, archive). A failing filesystem (full,
        read-only) pauses intake: the file stays where the fault left it (the inbox, or its job folder)
        and is taken up again when it recovers; IntakePaused is raised. Any other fault is the file's
        own: it goes to failed/ with the cause (a file ``hotfolder process`` runs, ``move=False``, stays
        where it is)."""
        if self.guard.check(err, fallback=where):
            self._recover_pending = True
            if record is not None:
                self._uncounted.add(record.job_id)
                self._drop(record)
            raise fsguard.IntakePaused(str(err)) from err
        problem = filesystem_error(err, path=where, doing="take" if record is None else "process")
        if record is None:
            self._refuse(Path(where), problem, move=move)
            return
        with self._cond:
            self._active[record.job_id] = record
        record.archive_name = None  # planned for done/, maybe: chosen again in failed/
        try:
            self._fail_file(record, problem)
        except OSError as again:
            self._drop(record)
            logger.error("[%s] %s It stays in %s.", record.input_name, filesystem_error(again).message, record.folder)

    def _refuse(self, path: Path, problem: FilesystemError, *, move: bool) -> None:
        """A file that could not be claimed: to failed/ with its error file, if it is still in the inbox
        (``move``; else it stays where it is, and only the event says it failed)."""
        logger.error("[%s] %s", path.name, problem)
        if not move:
            self._emit(Event("archived", path.name, "", None, {"failed": True, "path": None, "error": problem.to_dict()}))
            return
        if not os.path.isfile(path) or os.path.islink(path):
            return
        shown = display_name(path.name)
        record = FileRecord(job_id="", input_name=safe_filename(path.name, portable=False), folder=path.parent)
        name = None
        try:
            error = {"file": shown, "original_name": shown, "failed_at": now_iso(), **problem.to_dict()}
            name = archive.plan_archive_name(record, self.settings.failed_dir, failed=True, error=error)
            rename_noreplace(path, self.settings.failed_dir / name)
        except (OSError, ValueError, UnsafeFolder) as err:  # ValueError: a name JSON cannot hold
            if name is not None:  # the plan's error file describes a file that is not there: never left behind
                with contextlib.suppress(OSError):
                    os.unlink(self.settings.failed_dir / f"{name}.error.json")
            logger.error("[%s] could not be moved to failed/ either (%s); it stays in the inbox", path.name, err)
            return
        with self._cond:
            self.counts["files_failed"] += 1
        self._emit(Event("archived", path.name, "", None,
                         {"failed": True, "path": str(self.settings.failed_dir / name), "error": problem.to_dict()}))

    def _drop(self, record: FileRecord) -> None:
        """Forget ``record`` (it stays on disk, to be taken up again later)."""
        with self._cond:
            self._active.pop(record.job_id, None)
            self._archiving.discard(record.job_id)
            self._cond.notify_all()

    def _prepare(self, record: FileRecord) -> None:
        path = record.input_path
        size = os.stat(path).st_size
        where = {"file": record.input_name}
        if size > self.settings.max_file_size:
            raise ScenarioError(
                f"Scenario file {record.input_name!r} is {size} bytes, over the limit of "
                f"{self.settings.max_file_size} bytes.",
                hint="Split it into smaller files, or raise max_file_size in hotfolder.toml.", where=where,
            )
        specs = parse.parse_scenario(path, read_file(path), default_template=self.settings.default_template,
                                     hooks=self.hooks, limits=budgets.Limits.from_settings(self.settings))
        failpoints.hit("mid_parse")
        templates: dict[str, load.Template] = {}
        source = StopAfterNone(lambda: self._object_info_source(include_down=False))
        read_inputs: dict[tuple[int, ...], Any] = {}  # the file's input files, each read once
        jobs = []
        timed_out = 0  # jobs of this file over render_timeout: past RENDER_TIMEOUTS_PER_FILE, the rest is refused
        for spec in specs:
            if self._cancel_renders.is_set():
                raise budgets.RenderCancelled("stopping")
            job = JobState(index=spec.index, name=spec.name, spec=spec.to_dict())
            jobs.append(job)
            try:
                if timed_out >= RENDER_TIMEOUTS_PER_FILE:
                    raise budgets.exceeded(
                        TemplateError, f"Job {spec.name!r} was not rendered: {timed_out} earlier jobs of "
                        f"{record.input_name!r} took longer than render_timeout, and the rest of the file is refused "
                        "so that it cannot hold up the other files", key="render_timeout",
                        limit=self.settings.render_timeout, where={"template": spec.template or ""},
                        hint="Check the values that make the template's loops large in this file's jobs.")
                self._render_into(record, job, spec, templates, source, defer=True, read_inputs=read_inputs)
            except HotfolderError as err:
                if err.where.get("limit") == "render_timeout" and timed_out < RENDER_TIMEOUTS_PER_FILE:
                    timed_out += 1
                err.where.setdefault("file", record.input_name)
                err.where.setdefault("job", spec.name)
                job.state, job.error = "failed", err.to_dict()
                logger.error("[%s %s] %s", record.input_name, spec.name, err,
                             extra={"file": record.input_name, "job": spec.name})
                with self._cond:
                    self.counts["failed"] += 1
                self._emit(Event("failed", record.input_name, record.job_id, spec.name, {"error": job.error}))
                continue
        record.jobs = jobs
        record.state = "parsed"
        record.save(durable=False)  # redone after a power cut, never repeated outside
        self._emit(Event("rendered", record.input_name, record.job_id, detail={"jobs": len(jobs)}))

    def _render_into(self, record: FileRecord, job: JobState, spec: JobSpec, templates: dict[str, load.Template],
                     source: Callable[[], tuple[Mapping[str, Any], Hashable] | None], *, defer: bool,
                     read_inputs: dict[tuple[int, ...], Any] | None = None) -> None:
        """Render ``spec`` into ``job``: its workflow file, template, params and inputs. With ``defer``,
        a UI template that no server can convert now leaves the job ``unrendered`` for a worker."""
        try:
            rendered = render_job(self.settings, spec, templates, hooks=self.hooks,
                                  base=inputs_base(self.settings, record), object_info=source,
                                  cache=self._template_cache, copy_dir=record.folder, read_inputs=read_inputs,
                                  cancel=self._cancel_renders)
        except load.ObjectInfoUnavailable:
            if not defer:
                raise
            job.state = "unrendered"
            logger.warning("[%s %s] template %r is a ComfyUI UI workflow and no server answers for its /object_info "
                           "to convert it; the job waits for a server", record.input_name, spec.name,
                           spec.template or self.settings.default_template,
                           extra={"file": record.input_name, "job": spec.name})
            return
        write_json_private(record.workflow_path(spec.index), rendered.workflow, indent=None)  # the record lists it later
        job.template = template_record(rendered)
        job.params = rendered.params
        job.inputs = [item.to_dict() for item in rendered.inputs]
        job.state = "pending"

    def _render_later(self, record: FileRecord, job: JobState, log: logging.LoggerAdapter) -> None:
        """Render a job left ``unrendered`` once a server answers for its /object_info (waits until then)."""
        spec = JobSpec.from_dict(job.spec)
        delay = 0.25
        while not self._stop.is_set():
            try:
                self._render_into(record, job, spec, {}, lambda: self._object_info_source(include_down=True),
                                  defer=False)
            except load.ObjectInfoUnavailable:
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except budgets.RenderCancelled:
                raise Cancelled(job.name) from None
            record.save()
            log.info("rendered now that a server answers (UI template converted)")
            return
        raise Cancelled(job.name)

    def _object_info_source(self, *, include_down: bool) -> tuple[Mapping[str, Any], Hashable] | None:
        """The /object_info of the first server that answers (a cached copy counts), with a version key
        for caching conversions; None if none does. Servers known to be down are skipped unless
        ``include_down``."""
        with self._cond:
            down = set(self._down_since)
        for client in self.clients:
            if client.name in down and not include_down:
                continue
            cache = self._object_info[client.name]
            try:
                info = cache.get()
            except Exception as err:  # noqa: BLE001 - any failure means: not this server, now
                logger.debug("No /object_info from %s: %s", client.display_url, err)
                continue
            return info, (client.display_url, cache.version)
        return None

    # -- workers: submit, track, download, publish ----------------------------------------------

    def _worker(self) -> None:
        """Submit and track jobs; hand each one whose prompt ended to the output workers."""
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and (not self._tasks or self._draining.is_set() or self._backlogged()):
                    self._cond.wait(1.0)
                if self._stop.is_set():
                    return
                record, job = self._tasks.pop(0)
                self._running += 1
                self._cond.notify_all()
            finished = None
            try:
                finished = self._at_boundary(record, job, lambda: self._run_job(record, job))
            finally:
                with self._cond:
                    if finished is None:
                        self._running -= 1
                        self._cond.notify_all()
                    else:  # still running: it is the output workers' now
                        self._handoff[finished.client.name].append(finished)
                        self._outputs_ready[finished.client.name].notify()

    def _backlogged(self) -> bool:
        """Whether finished jobs wait for the output workers in such numbers that submitting must pause
        (called with the lock held). Jobs waiting for a server that is away do not count: they wait for
        it, not for the output workers, and must not stop the other servers' work."""
        waiting = sum(len(jobs) for name, jobs in self._handoff.items() if name not in self._down_since)
        if waiting < self._handoff_cap:
            if waiting < self._handoff_cap // 2:
                self._backlog_logged = False  # warn again only after the backlog has cleared
            return False
        if not self._backlog_logged:
            self._backlog_logged = True
            logger.warning("%d finished jobs are waiting to be downloaded and published; new jobs wait until "
                           "fewer do (raise output_workers in hotfolder.toml if the outputs cannot keep up)",
                           waiting)
        return True

    def _start_output_worker(self, server: str) -> None:
        """One more output worker for ``server`` (called with the lock held)."""
        self._output_threads[server] += 1
        self._output_serial += 1
        t = threading.Thread(target=self._output_worker, args=(server,), daemon=True,
                             name=f"output-worker-{server}-{self._output_serial}")
        self._workers.append(t)
        t.start()

    def _grow_outputs(self, server: str) -> None:
        """Start another output worker for ``server`` when its oldest finished job has waited for one
        longer than OUTPUT_WAIT (up to ``output_workers``): one keeps up with most servers, slow
        downloads or post-processors get more. Called with the lock held."""
        waiting = self._handoff[server]
        if (waiting and self._output_threads[server] < self.settings.output_workers
                and time.monotonic() - waiting[0].since > OUTPUT_WAIT):
            self._start_output_worker(server)

    def _watch_outputs(self) -> None:
        """Twice per OUTPUT_WAIT, start output workers where finished jobs have waited too long (the
        busy workers cannot notice: they are inside a download or a post-processor)."""
        while not self._stop.wait(OUTPUT_WAIT / 2):
            with self._cond:
                for server in self._handoff:
                    self._grow_outputs(server)

    def _output_worker(self, server: str) -> None:
        """Download, post-process and publish the jobs whose prompt ended on ``server``; archive their
        files when done. A worker beyond the first stops after OUTPUT_IDLE seconds without work."""
        waiting, ready = self._handoff[server], self._outputs_ready[server]
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while not waiting and not self._stop.is_set():
                    if self._output_threads[server] > 1 and time.monotonic() - idle_since > OUTPUT_IDLE:
                        self._output_threads[server] -= 1
                        self._workers.remove(threading.current_thread())
                        return
                    ready.wait(1.0)
                if self._stop.is_set():
                    return  # what is left stays recorded ("submitted"): the next start downloads it
                finished = waiting.pop(0)
                self._cond.notify_all()  # a worker may wait for room in the handoff
            try:
                self._at_boundary(finished.record, finished.job, lambda: self._finish(finished))
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _at_boundary(self, record: FileRecord, job: JobState,
                     step: Callable[[], _Finished | None]) -> _Finished | None:
        """Run one part of a job at the job boundary: a HotfolderError fails the job, an OSError too (with
        its real cause: a name too long, no permission), and so does any other exception (a bug fails one
        job, never the daemon). A full or read-only filesystem fails nothing: the step waits until it
        recovers and runs again (:meth:`_through_faults`). ``Cancelled`` (stopping) leaves the job as
        recorded. Archives the file once all its jobs are finished. Returns what ``step`` hands on.
        Nothing escapes: a failure to record the failure or to archive is logged and leaves the file in
        its job folder for the next start, and the worker thread lives on."""
        try:
            handed = self._through_faults(record, step)
        except Cancelled:
            return None
        except HotfolderError as err:
            failure: HotfolderError | None = err
        except OSError as err:
            failure = _os_failure(err, job.staging or record.folder)
        except Exception as err:  # noqa: BLE001 - the job boundary
            logger.exception("[%s %s] internal error", record.input_name, job.name)
            failure = HotfolderError(
                f"Internal error in hotfolder: {type(err).__name__}: {err}",
                hint="This is a bug in hotfolder or a plugin; please report it with the log.",
            )
        else:
            if handed is not None:
                return handed
            failure = None
        try:
            self._through_faults(record, _Ending(self, record, job, failure))
        except Cancelled:
            pass
        except Exception as err:  # noqa: BLE001 - see the docstring
            if isinstance(err, OSError) and self._archive_as_failed(record, err):
                return None
            self._drop(record)
            if isinstance(err, (OSError, HotfolderError)):
                cause = _os_failure(err, record.folder).message if isinstance(err, OSError) else err.message
                logger.error("[%s %s] could not record the job's end or archive its file (%s); it stays in %s "
                             "and is taken up again at the next start", record.input_name, job.name, cause, record.folder)
            else:
                logger.exception("[%s %s] could not record the job's end or archive its file; it stays in %s "
                                 "and is taken up again at the next start", record.input_name, job.name, record.folder)
        return None

    def _archive_as_failed(self, record: FileRecord, err: OSError) -> bool:
        """An input that could not be moved to done/ (its name refused there, say) goes to failed/ with
        the cause instead; one already moved (its job folder's removal failed) is tidied once more.
        True if that worked."""
        if record.state != "archiving":
            return False
        if os.path.lexists(record.input_path):
            if record.error is not None:
                return False  # failed/ refused it too
            problem = filesystem_error(err, path=self.settings.done_dir, doing="archive")
            record.error, record.archive_name = problem.to_dict(), None
        try:
            self._through_faults(record, lambda: self._archive(record))
        except Exception:  # noqa: BLE001 - the caller logs the first cause
            return False
        return True

    def _through_faults(self, record: FileRecord, step: Callable[[], Any]) -> Any:
        """Run ``step``; while a full or read-only filesystem stops it, wait until that recovers (intake is
        paused meanwhile) and run it again. Every step can be redone, as after a crash: its state is in
        memory and, up to its last write, on disk."""
        while True:
            try:
                return step()
            except OSError as err:
                if not self.guard.check(err, fallback=record.folder):
                    raise
            while self.guard.paused():
                if self._stop.wait(0.2) or self._draining.is_set():  # stopping: it resumes at the next start
                    raise Cancelled(record.job_id)

    def _pick_client(self, job: JobState, workflow: dict[str, Any]) -> ComfyClient:
        """The server for this job: the one it was sent to, else the least loaded (by weight) of the
        servers it may use (a scenario's `server:` or `label:` pins it) that are up."""
        if job.server:
            for client in self.clients:
                if client.name == job.server:
                    return client
        spec = job.spec.get("options") or {}
        candidates = [c for c in self.clients if _matches_pin(c, spec.get("server"), spec.get("label"))]
        if not candidates:
            raise ServerError(
                f"No configured server matches the job's pin (server {spec.get('server')!r}, label {spec.get('label')!r}).",
                hint="Configured: " + ", ".join(f"{c.name} {list(c.server.labels)}" for c in self.clients),
            )
        if self.settings.validate:
            candidates = self._capable(job, workflow, candidates)
        with self._cond:
            up = [c for c in candidates if c.name not in self._down_since] or candidates
            return min(up, key=lambda c: ((self._load[c.name] + 1) / c.server.weight, self._load[c.name]))

    def _capable(self, job: JobState, workflow: dict[str, Any], candidates: list[ComfyClient]) -> list[ComfyClient]:
        """The candidates whose /object_info has every node class, input value and model file the
        workflow uses. A server whose /object_info cannot be read now stays a candidate (ComfyUI's own
        validation still applies when it answers). None capable: ValidationError, before anything is queued."""
        capable, refused = [], []
        fields = (job.template or {}).get("fields") or {}
        known = [item["name"] for item in job.inputs]  # uploaded right before submitting, under these names
        for client in candidates:
            try:
                problems = validate.validate_with_refresh(self._object_info[client.name], workflow, scenario_fields=fields,
                                                           known_files=known)
            except HotfolderError:
                capable.append(client)
                continue
            errors = [p for p in problems if p.severity == ERROR]
            if errors:
                refused.append((client, errors))
            else:
                capable.append(client)
        if capable:
            return capable
        client, errors = refused[0]
        err = ValidationError.from_problems(
            errors, subject=f"Job {job.name!r} (template {(job.template or {}).get('name')!r})",
            server=client.display_url,
        )
        if len(refused) > 1:
            err.message += "\n(The other servers refuse it too: " + ", ".join(c.display_url for c, _ in refused[1:]) + ".)"
        raise err

    def _run_job(self, record: FileRecord, job: JobState) -> _Finished:
        """Submit the job (or attach to its prompt) and follow it to its end, holding one of the server's
        in-flight places meanwhile; what is left (outputs) is handed on."""
        log = JobLog(logger, {"file": record.input_name, "job": job.name})
        if job.state == "unrendered":
            self._render_later(record, job, log)
        rendered = json.loads(read_file(record.workflow_path(job.index)))
        while True:
            client = self._pick_client(job, rendered)
            with self._cond:
                self._load[client.name] += 1
            try:
                workflow = self._with_inputs(record, job, client, rendered, log)
                result = None
                if job.state in {"pending", "submitting", "submitted"}:
                    with _Slot(self._inflight[client.name], self._stop):
                        result = self._submit_and_track(record, job, client, workflow, log)
                return _Finished(record, job, client, workflow, result, log)
            except _Failover:
                log.warning("%s has been down for over %g s; moving the job to another server (same prompt id)",
                            client.display_url, self.settings.lost_grace)
                if job.submissions:
                    job.resubmissions += 1
                job.server = None
                job.state = "submitting" if job.submissions else "pending"
                record.save()
            finally:
                with self._cond:
                    self._load[client.name] -= 1

    def _finish(self, finished: _Finished) -> None:
        """The output workers' part of a job: download its outputs (unless a run before the last crash
        did), then publish them."""
        record, job, client = finished.record, finished.job, finished.client
        if finished.result is not None:
            self._download(record, job, client, finished.result, finished.log)
            finished.result, finished.fresh = None, True  # run again (a full outbox): not downloaded twice
        if job.state == "downloaded":
            # run again after a try cut off mid-publish: that try's sidecar may be in the staging folder
            fresh, finished.fresh = finished.fresh, False
            self._publish(record, job, client, finished.workflow, finished.log, fresh=fresh)

    def _with_inputs(self, record: FileRecord, job: JobState, client: ComfyClient, rendered: dict[str, Any],
                     log: logging.LoggerAdapter) -> dict[str, Any]:
        """The workflow to submit to ``client``: ``rendered`` with the job's input files uploaded there
        and their names set. A job already submitted keeps the names recorded when it was."""
        if not job.inputs:
            return rendered
        items = [upload.InputFile.from_dict(item) for item in job.inputs]
        settled = job.state in {"submitted", "downloaded"} or (job.state == "submitting" and job.submissions > 0)
        if not (settled and all(item.uploaded and item.server == client.display_url for item in items)):
            for item in items:
                item.uploaded = self._upload(client, item, job, record, log)
                item.server = client.display_url
            job.inputs = [item.to_dict() for item in items]
            record.save()  # the names are on disk before the workflow using them is submitted
        workflow = json.loads(json.dumps(rendered))
        upload.inject_inputs(workflow, items, where={"file": record.input_name, "job": job.name})
        return workflow

    def _upload(self, client: ComfyClient, item: upload.InputFile, job: JobState, record: FileRecord,
                log: logging.LoggerAdapter) -> str:
        """Put ``item`` on ``client``'s server once: a content this daemon already uploaded there (since
        the server last came back) is not sent again. Waits while the server is away."""
        known = self._uploaded[client.name]
        where = {"file": record.input_name, "job": job.name, "server": client.display_url}
        while True:
            with self._upload_locks[client.name]:  # one upload of a content at a time per server
                name = known.get(item.sha256)
                if name is not None and _mark_used(client, name):
                    return name
                try:
                    name = upload.upload_input(client.http, item, folder=record.folder, where=where)
                except ServerUnavailable:
                    name = None
                if name is not None:
                    known[item.sha256] = name
                    _mark_used(client, name)
                    log.info("uploaded %s (%d bytes) to %s as %s", item.path, item.size, client.display_url, name)
                    return name
            self._wait_for_server(client, movable=True)

    def _submit_and_track(self, record: FileRecord, job: JobState, client: ComfyClient,
                          workflow: dict[str, Any], log: logging.LoggerAdapter) -> PromptResult:
        deadline = time.monotonic() + self.settings.job_timeout
        while True:
            fresh = False
            if job.state in {"pending", "submitting"}:
                fresh = self._submit(record, job, client, workflow, log)
                deadline = time.monotonic() + self.settings.job_timeout
            try:
                result = track.track_prompt(
                    client, job.prompt_id or "", workflow, deadline=deadline, cancel=self._stop,
                    on_progress=lambda w: self._progress(record, job, w), fresh=fresh,
                )
            except PromptLost:
                job.resubmissions += 1
                if job.resubmissions > MAX_RESUBMISSIONS:
                    raise ServerError(
                        f"Prompt {job.prompt_id} was lost by {client.display_url} {job.resubmissions} times.",
                        hint="ComfyUI keeps restarting or something clears its queue; check its log.",
                    ) from None
                log.warning("prompt %s vanished from %s (restart?); submitting it again with the same id",
                            job.prompt_id, client.display_url)
                self._emit(Event("resubmitted", record.input_name, record.job_id, job.name,
                                 {"server": client.name, "prompt_id": job.prompt_id}))
                job.state = "submitting"
                record.save()
                continue
            except ServerUnavailable:
                self._wait_for_server(client, movable=True)
                continue
            except TimeoutError:
                self._give_up(client, job, log)
                raise JobTimeout(
                    f"Job did not finish within job_timeout = {self.settings.job_timeout:g} s on {client.display_url}; it was interrupted.",
                    hint="Raise job_timeout in hotfolder.toml if such jobs are expected to take longer.",
                ) from None
            finally:
                client.forget(job.prompt_id or "")
            job.times["finished"] = now_iso()
            w = result.watch
            job.execution = {
                "started": now_iso(w.started) if w.started else None,
                "node_seconds": dict(w.node_seconds),
                "cached_nodes": list(w.cached),
                "comfyui_version": client.comfyui_version(),
                "ui_values": {},
                "outputs": result.outputs,
            }
            return result

    def _submit(self, record: FileRecord, job: JobState, client: ComfyClient, workflow: dict[str, Any],
                log: logging.LoggerAdapter) -> bool:
        """Queue the job's prompt (or attach to it if an earlier POST got there). True when this call's
        POST queued it just now, so its WebSocket messages are all still to come."""
        if job.prompt_id is None:
            job.prompt_id = str(uuid.uuid4())
        elif job.state == "submitting" and job.submissions > 0:
            # An earlier POST under this id may have reached the server (crash mid-POST): never run it twice.
            where = self._locate(client, job.prompt_id)
            if where != "absent":
                job.state = "submitted"
                record.save(durable=False)  # redone after a power cut, never repeated outside
                log.info("prompt %s is already on %s (%s); attaching to it", job.prompt_id, client.display_url, where)
                return False
        job.server = client.name
        job.state = "submitting"
        job.submissions += 1
        job.times["submitted"] = now_iso()
        record.save()  # the prompt_id is on disk before the POST
        extra = {"extra_pnginfo": {"hotfolder": {"job": f"{record.job_id}/{job.index}", "file": record.input_name}}}
        while True:
            try:
                client.wait_ws(2.0)
                where = submit.submit_prompt(client, workflow, prompt_id=job.prompt_id, extra_data=extra)
                failpoints.hit("after_post")
                break
            except ServerUnavailable:
                self._wait_for_server(client, movable=True)
            except OutcomeUnknown as err:
                log.warning("%s; checking again before resubmitting", err.message)
                self._stop.wait(1.0)
                if self._stop.is_set():
                    raise Cancelled(job.prompt_id) from None
        # No record write here: nothing outside happens before the next one ("downloaded", before the
        # publish). A record still saying "submitting" after a crash is looked up on the server first
        # (_locate), so the prompt is attached to, never sent twice.
        job.state = "submitted"
        log.info("submitted to %s as prompt %s (%s)", client.display_url, job.prompt_id, where)
        self._emit(Event("submitted", record.input_name, record.job_id, job.name,
                         {"prompt_id": job.prompt_id, "server": client.display_url}))
        return where == "queued"

    def _locate(self, client: ComfyClient, prompt_id: str) -> str:
        while True:
            try:
                return client.locate(prompt_id)
            except ServerUnavailable:
                self._wait_for_server(client)

    def _give_up(self, client: ComfyClient, job: JobState, log: logging.LoggerAdapter) -> None:
        log.error("job timed out; interrupting prompt %s", job.prompt_id)
        try:
            client.http.delete_pending(job.prompt_id or "")
            client.http.interrupt(job.prompt_id or "")
        except ServerError:
            pass

    def _wait_for_server(self, client: ComfyClient, *, movable: bool = False) -> None:
        """Wait until ``client`` answers again. With ``movable``, raise _Failover instead once it has been
        down for ``lost_grace`` seconds while another server is up."""
        delay = 0.25
        while not self._stop.is_set():
            try:
                client.http.system_stats()
                with self._cond:
                    if self._down_since.pop(client.name, None) is not None:
                        self._object_info[client.name].invalidate()  # it may have restarted with other nodes
                        self._uploaded[client.name].clear()  # ... or with an empty input folder
                client.reach.up()  # logs "is back" if it was away
                return
            except ServerError as err:
                with self._cond:
                    since = self._down_since.setdefault(client.name, time.monotonic())
                    others_up = any(c.name not in self._down_since for c in self.clients if c is not client)
                client.reach.down(err)  # logs only when it stops answering, not per retry
                if movable and others_up and time.monotonic() - since >= self.settings.lost_grace:
                    raise _Failover(client.name) from None
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)
        raise Cancelled(client.name)

    def _progress(self, record: FileRecord, job: JobState, watch: PromptWatch) -> None:
        """A progress event (ComfyClient.wait calls this when the node or its progress changed)."""
        p = watch.progress
        self._emit(Event("progress", record.input_name, record.job_id, job.name,
                         {"node": p.node, "value": p.value, "max": p.max}))

    def _download(self, record: FileRecord, job: JobState, client: ComfyClient, result: PromptResult,
                  log: logging.LoggerAdapter) -> None:
        refs, values = download.list_outputs(result.outputs, include_temp=self.settings.download_temp,
                                             server=client.display_url)
        job.execution["ui_values"] = values
        staging = self.settings.staging_dir / f"{record.job_id}-{job.index:03d}"
        job.staging = str(staging)
        own_dir(self.settings.staging_dir)  # before anything is removed or written below it
        errors = 0
        while True:
            # A download cut off (by a crash, a failed output, the server going away) starts over in an
            # empty folder: what the cut-off try left must not be published beside its second copy.
            if os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)
            try:
                job.outputs = download.download_outputs(client.http, refs, staging)
                break
            except ServerUnavailable:
                self._wait_for_server(client)
            except OutputError as err:
                errors += 1
                if errors >= MAX_DOWNLOAD_ERRORS or "limit" in err.where:  # over a budget: trying again cannot help
                    raise
                log.warning("%s; retrying", err.message)
                self._stop.wait(min(2.0 ** errors * 0.1, 5.0))
                if self._stop.is_set():
                    raise Cancelled(job.name) from None
        job.state = "downloaded"
        record.save(durable=False)  # redone after a power cut, never repeated outside
        log.debug("downloaded %d file(s)", len(job.outputs))  # the published line gives the count

    def _publish(self, record: FileRecord, job: JobState, client: ComfyClient, workflow: dict[str, Any],
                 log: logging.LoggerAdapter, *, fresh: bool = False) -> None:
        """``fresh``: the outputs were downloaded by this process just now (not before a restart)."""
        key = f"{record.job_id}/{job.index}"
        staging = Path(job.staging or "")
        # The publish rename moves the staging folder away: while it exists, nothing was published yet.
        # Only a run cut off after that rename has to look through the outbox for its result.
        staged = os.path.isdir(staging)
        existing = None if staged else publish.find_published(self.settings.outbox, job.name, key)
        if existing is None:
            if not staged:
                raise OutputError(f"The staged outputs of job {job.name!r} are gone ({staging}).",
                                  hint="Move the input file back to inbox/ to run it again.")
            sidecar = self._sidecar(record, job, client, workflow)
            if self.hooks is not None:
                plugins.run_postprocessors(self.hooks, chosen_postprocess(self.settings, job.spec), staging, sidecar)
            existing = publish.publish_folder(staging, self.settings.outbox, job.name, sidecar, fresh=fresh)
        job.published = str(existing)
        job.state = "published"
        # Counted and told before the record is saved: a save that a full inbox stops is redone without
        # the publish (the job is "published" in memory), so this is reached once.
        with self._cond:
            self.counts["published"] += 1
        log.info("published %d file(s) as %s", len(job.outputs), existing)
        self._emit(Event("published", record.input_name, record.job_id, job.name, {"path": str(existing)}))
        if not record.all_finished():
            record.save(durable=False)  # redone after a power cut, never repeated outside
        # else: the last job's state goes into the record with the archive name (_archive, called next).
        # Cut off before that, the job is "downloaded" with its staging folder gone, and _publish finds
        # its result in the outbox instead of publishing it again.

    def _sidecar(self, record: FileRecord, job: JobState, client: ComfyClient, workflow: dict[str, Any]) -> dict[str, Any]:
        spec = job.spec
        ex = job.execution
        return {
            "hotfolder_version": __version__,
            "job_key": f"{record.job_id}/{job.index}",
            "job_id": record.job_id,
            "job_index": job.index,
            "jobs_in_file": len(record.jobs),
            "name": job.name,
            "scenario": {"file": record.input_name, "original_name": record.original_name or record.input_name,
                         "sha256": record.sha256, "line": spec.get("line")},
            "template": job.template,
            "params": job.params,
            "set": spec.get("set") or {},
            "inputs": [
                {key: item.get(key) for key in ("address", "path", "local", "sha256", "size", "uploaded", "server")}
                for item in job.inputs
            ],
            "workflow": workflow,
            "server": client.display_url,
            "prompt_id": job.prompt_id,
            "comfyui_version": ex.get("comfyui_version"),
            "timestamps": {
                "claimed": record.claimed_at,
                "submitted": job.times.get("submitted"),
                "started": ex.get("started"),
                "finished": job.times.get("finished"),
                "published": now_iso(),
            },
            "node_seconds": ex.get("node_seconds") or {},
            "cached_nodes": ex.get("cached_nodes") or [],
            "outputs": job.outputs,
            "ui_values": redact_data(ex.get("ui_values") or {}),  # the server's text (a node may show a header)
            "attempts": record.attempts + 1,
            "submissions": job.submissions,
            "resubmissions": job.resubmissions,
        }

    # -- failure and archive ---------------------------------------------------------------------

    def _fail_job(self, record: FileRecord, job: JobState, err: HotfolderError) -> None:
        err.where.setdefault("file", record.input_name)
        err.where.setdefault("job", job.name)
        # A finished render that could not be published (a name too long, no permission, a post-processor
        # that failed) is kept staged, named in the error file: never thrown away.
        keep = job.staging is not None and _has_files(job.staging)
        if keep and "staged" not in err.where:
            err.where["staged"] = job.staging
            err.message += f" Its downloaded outputs are kept in {job.staging}."
        job.state = "failed"
        job.error = err.to_dict()
        record.save()
        if job.staging and not keep:
            shutil.rmtree(job.staging, ignore_errors=True)
        with self._cond:
            self.counts["failed"] += 1
        logger.error("[%s %s] %s", record.input_name, job.name, err)
        self._emit(Event("failed", record.input_name, record.job_id, job.name, {"error": job.error}))

    def _fail_file(self, record: FileRecord, err: HotfolderError) -> None:
        err.where.setdefault("file", record.input_name)
        record.error = err.to_dict()
        logger.error("[%s] %s", record.input_name, err)
        self._emit(Event("failed", record.input_name, record.job_id, None, {"error": record.error}))
        self._archive(record)

    def _archive(self, record: FileRecord) -> None:
        with self._cond:
            if record.job_id not in self._active or record.job_id in self._archiving:
                return
            self._archiving.add(record.job_id)
            record.state = "archiving"
        error = self._error_document(record)
        folder = self.settings.failed_dir if error else self.settings.done_dir
        kept = False
        try:
            with fsguard.at_path(folder):
                if record.archive_name is None:
                    record.archive_name = archive.plan_archive_name(record, folder, failed=bool(error), error=error)
                    record.save()
                target = archive.archive_input(record, folder=folder, name=record.archive_name, error=error)
        except UnsafeFolder as err:  # done/ or failed/ swapped for a symlink: never written through
            kept = True
            logger.error("[%s] not archived, it stays in %s: %s", record.input_name, record.folder, err)
        except BaseException:
            with self._cond:  # still active: the caller tries again, or drops it (taken up at the next start)
                self._archiving.discard(record.job_id)
            raise
        with self._cond:
            self._active.pop(record.job_id, None)
            self._archiving.discard(record.job_id)
            if not kept:
                self.counts["files_failed" if error else "files_done"] += 1
            self._cond.notify_all()
        if kept:
            return
        logger.info("[%s] %s%s", record.input_name, "failed" if error else "done",
                    f" -> {target}" if target else "")
        self._emit(Event("archived", record.input_name, record.job_id, None,
                         {"failed": bool(error), "path": str(target) if target else None, "error": error}))

    def _error_document(self, record: FileRecord) -> dict[str, Any] | None:
        failed = [job for job in record.jobs if job.state == "failed"]
        if record.error is None and not failed:
            return None
        doc: dict[str, Any] = {"file": record.input_name, "original_name": record.original_name or record.input_name,
                               "job_id": record.job_id, "failed_at": now_iso()}
        if record.error is not None:
            doc.update(record.error)
        else:
            first = failed[0].error or {}
            doc.update(first)
            if len(record.jobs) > 1:
                doc["message"] = f"{len(failed)} of {len(record.jobs)} jobs failed. First: {first.get('message')}"
        doc["jobs"] = [
            {"index": job.index, "name": job.name, "state": job.state, "published": job.published,
             "prompt_id": job.prompt_id, "error": job.error}
            for job in record.jobs
        ]
        return doc

    # -- recovery --------------------------------------------------------------------------------

    def recover(self) -> int:
        """Resume every job folder of this instance left by an earlier run, and adopt those of instances
        whose daemon is gone. Returns how many files were resumed. On a full or read-only inbox this
        waits for it to recover (:meth:`intake_paused` calls it again then)."""
        if self._lease_pending or self.guard.paused():
            self._recover_pending = True
            return 0
        self.lease.adopt()
        folder = self.settings.jobs_dir
        if not folder.is_dir():
            return 0
        try:
            own_dir(folder, levels=2)
        except UnsafeFolder as err:
            logger.error("Unfinished jobs are not resumed: %s", err)
            return 0
        count = 0
        for job_folder in sorted(p for p in folder.iterdir()
                                 if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
            with self._cond:
                if job_folder.name in self._active:
                    continue
            try:
                if self._resume(job_folder):
                    count += 1
            except fsguard.IntakePaused:
                break  # the rest when the filesystem has recovered
        return count

    def adopt_orphans(self) -> int:
        """Adopt and resume the jobs of other instances whose daemon died (called periodically)."""
        if self._lease_pending or self.guard.paused():
            return 0
        count = 0
        for folder in self.lease.adopt():
            try:
                count += self._resume(folder)
            except fsguard.IntakePaused:
                break  # adopted, in our folder: resumed when the filesystem has recovered
        return count

    def _resume(self, folder: Path) -> bool:
        record = None
        try:
            record = self._load_record(folder)
            if record is None:
                return False
            logger.info("[%s] resuming job %s (%s)", record.input_name, record.job_id, record.state)
            record.attempts += 1
            record.instance = self.settings.instance_id
            record.save()
        except OSError as err:
            self._intake_fault(err, folder, record)
            return False
        counted = record.job_id in self._uncounted  # a filesystem fault cut its parse off: not a crash
        self._uncounted.discard(record.job_id)
        self._queue_record(record, counted=counted)
        return True

    def _load_record(self, folder: Path) -> FileRecord | None:
        if (folder / RECORD_NAME).is_file():
            try:
                return FileRecord.load(folder)
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.error("Job record %s is unreadable (%s); re-reading its input", folder / RECORD_NAME, err)
        inputs = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
                  and not is_own_name(p.name)]
        if not inputs:  # only hotfolder's own files (a removal cut off by a crash): finish it
            shutil.rmtree(folder, ignore_errors=True)
            return None
        name = claim.job_folder_name(inputs[0].name)
        if name != inputs[0].name:  # claimed by an older version under the name it had in the inbox
            os.rename(inputs[0], folder / name)
        record = FileRecord(job_id=folder.name, input_name=name, folder=folder, instance=self.settings.instance_id,
                            original_name=display_name(inputs[0].name))
        record.sha256 = claim.file_sha256(folder / name)
        return record


class _Ending:
    """The end of a job at the boundary: fail it (once) if it failed, archive its file if it was the
    last one. Can be run again (a full inbox) without failing the job twice."""

    def __init__(self, engine: Engine, record: FileRecord, job: JobState, failure: HotfolderError | None) -> None:
        self.engine, self.record, self.job, self.failure = engine, record, job, failure

    def __call__(self) -> None:
        if self.failure is not None:
            self.engine._fail_job(self.record, self.job, self.failure)
            self.failure = None
        if self.record.all_finished():
            self.engine._archive(self.record)


def _has_files(folder: str) -> bool:
    try:
        return any(entry.is_file() for entry in os.scandir(folder))
    except OSError:
        return False


def _os_failure(err: OSError, path: str | os.PathLike[str]) -> HotfolderError:
    """The error a job fails with for an OSError that is not a failing filesystem: the real cause,
    never "a bug in hotfolder"."""
    if err.filename is None and isinstance(err, (ConnectionError, TimeoutError)):
        return ServerError(f"Connection failed: {err.strerror or err} ({type(err).__name__}).",
                           hint="Check that the ComfyUI server is reachable from this machine.")
    return filesystem_error(err, path=path)


@dataclass
class _Finished:
    """A job whose prompt ended (or was downloaded before a restart), on its way to the output workers."""

    record: FileRecord
    job: JobState
    client: ComfyClient
    workflow: dict[str, Any]
    result: PromptResult | None  # None: already downloaded, only the publish is left
    log: logging.LoggerAdapter
    fresh: bool = False  # downloaded by this process, and no publish tried since
    since: float = field(default_factory=time.monotonic)  # when it was handed on


def _mark_used(client: ComfyClient, name: str) -> bool:
    """For a server whose input folder is on this machine (``input_dir``): whether the uploaded file is
    still there, touching it so that upload retention counts its age from its last use. ComfyUI does
    not rewrite identical bytes, so the file's own time says when it was first uploaded. Other servers:
    True (nothing to check)."""
    if client.server.input_dir is None:
        return True
    local = client.server.input_dir / name
    try:
        os.utime(local)
    except OSError:
        return False  # deleted by retention (or by hand): upload it again
    return True


class _Failover(Exception):
    """The job's server has been down too long while another is up: move the job."""


def _matches_pin(client: ComfyClient, server: Any, label: Any) -> bool:
    if server is not None and str(server) not in {client.name, client.display_url, client.server.url}:
        return False
    return label is None or str(label) in client.server.labels


class _Slot:
    """Holds one of a server's in-flight places; waiting for one can be cancelled by the stop flag."""

    def __init__(self, sem: threading.Semaphore, stop: threading.Event) -> None:
        self.sem, self.stop = sem, stop

    def __enter__(self) -> None:
        while not self.sem.acquire(timeout=0.5):
            if self.stop.is_set():
                raise Cancelled("stopping")

    def __exit__(self, *exc: object) -> None:
        self.sem.release()
