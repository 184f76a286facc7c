"""Intake: claim a file, parse it and render its jobs, then queue them for the scheduler.

Claiming happens on the caller's thread. Parsing and rendering, whose cost depends on the file (its
size, the loops its values drive), run under the budgets of :mod:`hotfolder.budgets`: in the daemon
(``accept(background=True)``) on PREPARE_THREADS threads of their own, so that the thread that watches
the inbox and answers signals never runs them and one slow file never holds up the others; otherwise
(``hotfolder process``, tests) on the caller's thread. A job whose template is a UI-format workflow
while no server answers for its ``/object_info`` is left ``unrendered``, to be rendered by its job
worker once one does (:meth:`Intake.render_later`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

from hotfolder import budgets, failpoints, fsguard
from hotfolder.comfy.client import Cancelled
from hotfolder.comfy.object_info import StopAfterNone
from hotfolder.config import Settings
from hotfolder.engine.core import Core, logger
from hotfolder.engine.ending import Endings
from hotfolder.engine.routing import Router
from hotfolder.engine.scheduler import Scheduler
from hotfolder.errors import FilesystemError, HotfolderError, ScenarioError, TemplateError, filesystem_error
from hotfolder.events import Archived, Claimed, Failed, Rendered
from hotfolder.paths import UnsafeFolder, display_name, rename_noreplace, safe_filename
from hotfolder.record import FileRecord, JobState, now_iso, read_file, write_json_private
from hotfolder.spec import JobSpec
from hotfolder.stages import archive, claim, parse
from hotfolder.stages.context import JobContext
from hotfolder.stages.prepare import inputs_base, render_job, template_record
from hotfolder.templates import load

PREPARE_THREADS = 2  # threads that parse and render claimed files (two: one slow file never stops intake)
RENDER_TIMEOUTS_PER_FILE = 2  # jobs of one file over render_timeout before the rest of that file is refused

ObjectInfo = tuple[Mapping[str, Any], Hashable]


class Intake:
    """Claims, parses and renders files, and hands their jobs to the scheduler."""

    def __init__(self, core: Core, router: Router, endings: Endings, scheduler: Scheduler) -> None:
        self.core, self.router, self.endings, self.scheduler = core, router, endings, scheduler
        self._to_prepare: list[tuple[FileRecord, bool]] = []  # claimed files waiting for a prepare thread
        self._preparers = 0  # prepare threads started
        self.template_cache = load.TemplateCache()

    @property
    def settings(self) -> Settings:
        """The engine's settings now (a reload may change them)."""
        return self.core.settings

    def start(self) -> None:
        for i in range(PREPARE_THREADS):
            t = threading.Thread(target=self._preparer, name=f"prepare-{i}", daemon=True)
            t.start()
            self.core.threads.append(t)
        self._preparers = PREPARE_THREADS

    def full(self) -> bool:
        """Whether enough claimed files wait for a prepare thread (called with the lock held)."""
        return len(self._to_prepare) >= max(1, self._preparers)

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
            self.fault(err, path, None, move=move)
            return None
        if record is None:
            return None
        logger.info("[%s] claimed as job %s", record.input_name, record.job_id)
        self.core.emit(Claimed(file=record.input_name, job_id=record.job_id))
        self.queue(record, counted=True, background=background)
        return record

    def queue(self, record: FileRecord, *, counted: bool = False, background: bool = True) -> None:
        """Start ``record`` on a prepare thread (with ``background`` once they run), else right here."""
        if not (background and self._preparers):
            self._start_record(record, counted=counted)
            return
        with self.core.cond:
            self.core.active[record.job_id] = record
            self._to_prepare.append((record, counted))
            self.core.cond.notify_all()

    def _preparer(self) -> None:
        """Parse and render claimed files, one at a time, until the engine stops."""
        core = self.core
        while not core.stop.is_set():
            with core.cond:
                # stopping (draining): the files not started stay claimed for the next start
                while not core.stop.is_set() and (not self._to_prepare or core.draining.is_set()):
                    core.cond.wait(1.0)
                if core.stop.is_set():
                    return
                record, counted = self._to_prepare.pop(0)
                core.cond.notify_all()
            try:
                self._start_record(record, counted=counted)
            except fsguard.IntakePaused:
                pass  # a full or read-only inbox: left where the fault found it, taken up when it recovers
            except budgets.RenderCancelled:
                logger.info("[%s] stopping: left claimed, it is read again at the next start", record.input_name)
                _uncount(record)
                core.forget(record)
            except Exception:  # noqa: BLE001 - as if hotfolder had stopped here: the next start reads it again
                logger.exception("[%s] reading the file failed unexpectedly; it stays claimed for the next start",
                                 record.input_name)
                core.forget(record)

    def _start_record(self, record: FileRecord, *, counted: bool = False) -> None:
        """Queue the jobs of ``record`` (parsing it first if it is only claimed). ``counted``: the record
        on disk already counts this parse attempt (a fresh claim)."""
        with self.core.cond:
            self.core.active[record.job_id] = record
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
                self.endings.fail_file(record, err)
                return
            pending = [job for job in record.jobs if not job.finished]
            if not pending:
                self.endings.archive(record)
                return
        except OSError as err:
            self.fault(err, record.folder, record)
            return
        self.scheduler.add([(record, job) for job in pending])

    def fault(self, err: OSError, where: Path, record: FileRecord | None, *, move: bool = True) -> None:
        """An OSError on the intake side (claim, parse, record, archive). A failing filesystem (full,
        read-only) pauses intake: the file stays where the fault left it (the inbox, or its job folder)
        and is taken up again when it recovers; IntakePaused is raised. Any other fault is the file's
        own: it goes to failed/ with the cause (a file ``hotfolder process`` runs, ``move=False``, stays
        where it is)."""
        core = self.core
        if core.guard.check(err, fallback=where):
            core.recover_pending = True
            if record is not None:
                core.uncounted.add(record.job_id)
                core.forget(record)
            raise fsguard.IntakePaused(str(err)) from err
        problem = filesystem_error(err, path=where, doing="take" if record is None else "process")
        if record is None:
            self._refuse(Path(where), problem, move=move)
            return
        with core.cond:
            core.active[record.job_id] = record
        record.archive_name = None  # planned for done/, maybe: chosen again in failed/
        try:
            self.endings.fail_file(record, problem)
        except OSError as again:
            core.forget(record)
            logger.error("[%s] %s It stays in %s.", record.input_name, filesystem_error(again).message, record.folder)

    def _refuse(self, path: Path, problem: FilesystemError, *, move: bool) -> None:
        """A file that could not be claimed: to failed/ with its error file, if it is still in the inbox
        (``move``; else it stays where it is, and only the event says it failed)."""
        logger.error("[%s] %s", path.name, problem)
        if not move:
            self.core.emit(Archived(file=path.name, job_id="", failed=True, path=None, error=problem.to_dict()))
            return
        if not os.path.isfile(path) or os.path.islink(path):
            return
        shown = display_name(path.name)
        record = FileRecord(job_id="", input_name=safe_filename(path.name, portable=False), folder=path.parent)
        failed_dir = self.settings.failed_dir
        name = None
        try:
            error = {"file": shown, "original_name": shown, "failed_at": now_iso(), **problem.to_dict()}
            name = archive.plan_archive_name(record, failed_dir, failed=True, error=error)
            rename_noreplace(path, failed_dir / name)
        except (OSError, ValueError, UnsafeFolder) as err:  # ValueError: a name JSON cannot hold
            if name is not None:  # the plan's error file describes a file that is not there: never left behind
                with contextlib.suppress(OSError):
                    os.unlink(failed_dir / f"{name}.error.json")
            logger.error("[%s] could not be moved to failed/ either (%s); it stays in the inbox", path.name, err)
            return
        self.core.count("files_failed")
        self.core.emit(Archived(file=path.name, job_id="", failed=True, path=str(failed_dir / name),
                                error=problem.to_dict()))

    def _prepare(self, record: FileRecord) -> None:
        """Parse the claimed file and render its jobs; the record becomes ``parsed``."""
        path = record.input_path
        size = os.stat(path).st_size
        if size > self.settings.max_file_size:
            raise ScenarioError(
                f"Scenario file {record.input_name!r} is {size} bytes, over the limit of "
                f"{self.settings.max_file_size} bytes.",
                hint="Split it into smaller files, or raise max_file_size in hotfolder.toml.",
                where={"file": record.input_name},
            )
        specs = parse.parse_scenario(path, read_file(path), default_template=self.settings.default_template,
                                     hooks=self.core.hooks, limits=budgets.Limits.from_settings(self.settings),
                                     destinations=self.settings.destination_names)
        failpoints.hit("mid_parse")
        templates: dict[str, load.Template] = {}
        source = StopAfterNone(lambda: self.router.object_info_source(include_down=False))
        read_inputs: dict[tuple[int, ...], Any] = {}  # the file's input files, each read once
        jobs = []
        timed_out = 0  # jobs of this file over render_timeout: past RENDER_TIMEOUTS_PER_FILE, the rest is refused
        for spec in specs:
            if self.core.cancel_renders.is_set():
                raise budgets.RenderCancelled("stopping")
            job = JobState(index=spec.index, name=spec.name, spec=spec)
            jobs.append(job)
            try:
                if timed_out >= RENDER_TIMEOUTS_PER_FILE:
                    raise budgets.exceeded(
                        TemplateError, f"Job {spec.name!r} was not rendered: {timed_out} earlier jobs of "
                        f"{record.input_name!r} took longer than render_timeout, and the rest of the file is refused "
                        "so that it cannot hold up the other files", key="render_timeout",
                        limit=self.settings.render_timeout, where={"template": spec.template or ""},
                        hint="Check the values that make the template's loops large in this file's jobs.")
                self._render_into(record, job, templates, source, defer=True, read_inputs=read_inputs)
            except HotfolderError as err:
                if err.where.get("limit") == "render_timeout" and timed_out < RENDER_TIMEOUTS_PER_FILE:
                    timed_out += 1
                err.where.setdefault("file", record.input_name)
                err.where.setdefault("job", spec.name)
                job.state, job.error = "failed", err.to_dict()
                logger.error("[%s %s] %s", record.input_name, spec.name, err,
                             extra={"file": record.input_name, "job": spec.name})
                self.core.count("failed")
                self.core.emit(Failed(file=record.input_name, job_id=record.job_id, job=spec.name, error=job.error))
                continue
        record.jobs = jobs
        record.state = "parsed"
        record.save(durable=False)  # redone after a power cut, never repeated outside
        self.core.emit(Rendered(file=record.input_name, job_id=record.job_id, jobs=len(jobs)))

    def _render_into(self, record: FileRecord, job: JobState, templates: dict[str, load.Template],
                     source: Callable[[], ObjectInfo | None], *, defer: bool,
                     read_inputs: dict[tuple[int, ...], Any] | None = None) -> None:
        """Render the job's spec into ``job``: its workflow file, template, params and inputs. With
        ``defer``, a UI template that no server can convert now leaves the job ``unrendered``."""
        spec: JobSpec = job.spec  # type: ignore[assignment]  # always set by _prepare
        try:
            rendered = render_job(self.settings, spec, templates, hooks=self.core.hooks,
                                  base=inputs_base(self.settings, record), object_info=source,
                                  cache=self.template_cache, copy_dir=record.folder, read_inputs=read_inputs,
                                  cancel=self.core.cancel_renders)
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

    def render_later(self, ctx: JobContext) -> None:
        """Render a job left ``unrendered`` once a server answers for its /object_info (waits until then)."""
        stop = self.core.stop
        delay = 0.25
        while not stop.is_set():
            try:
                self._render_into(ctx.record, ctx.job, {}, lambda: self.router.object_info_source(include_down=True),
                                  defer=False)
            except load.ObjectInfoUnavailable:
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except budgets.RenderCancelled:
                raise Cancelled(ctx.job.name) from None
            ctx.save()
            ctx.log.info("rendered now that a server answers (UI template converted)")
            return
        raise Cancelled(ctx.job.name)


def _uncount(record: FileRecord) -> None:
    """A read cut short by a stop is no crash: it does not count toward ``max_parse_attempts``."""
    if record.state == "claimed" and record.parse_attempts > 0:
        record.parse_attempts -= 1
        try:
            record.save(durable=False)
        except OSError as err:  # counted, then: at worst the file is set aside one attempt early
            logger.warning("[%s] could not update its record: %s", record.input_name, err)
