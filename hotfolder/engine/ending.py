"""How jobs and files end: the job boundary (any failure fails one job, never the daemon), failing a
job or a whole file, and archiving a file's input to done/ or failed/ once all its jobs are finished."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TypeVar

from hotfolder import documents, fsguard
from hotfolder.comfy.client import Cancelled
from hotfolder.config import Settings
from hotfolder.engine.core import Core, logger
from hotfolder.errors import HotfolderError, ServerError, filesystem_error
from hotfolder.events import Archived, Failed
from hotfolder.paths import UnsafeFolder
from hotfolder.record import FileRecord, JobState
from hotfolder.stages import archive

T = TypeVar("T")


class Endings:
    """Fails jobs and files and archives files, keeping the engine's books (active files, counts)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    @property
    def settings(self) -> Settings:
        """The engine's settings now (a reload may change them)."""
        return self.core.settings

    def at_boundary(self, record: FileRecord, job: JobState, step: Callable[[], T | None]) -> T | None:
        """Run one part of a job at the job boundary: a HotfolderError fails the job, an OSError too (with
        its real cause: a name too long, no permission), and so does any other exception (a bug fails one
        job, never the daemon). A full or read-only filesystem fails nothing: the step waits until it
        recovers and runs again (:meth:`Core.through_faults`). ``Cancelled`` (stopping) leaves the job as
        recorded. Archives the file once all its jobs are finished. Returns what ``step`` hands on.
        Nothing escapes: a failure to record the failure or to archive is logged and leaves the file in
        its job folder for the next start, and the worker thread lives on."""
        try:
            handed = self.core.through_faults(record, step)
        except Cancelled:
            return None
        except HotfolderError as err:
            failure: HotfolderError | None = err
        except OSError as err:
            failure = os_failure(err, job.staging or record.folder)
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
            self.core.through_faults(record, _Ending(self, record, job, failure))
        except Cancelled:
            pass
        except Exception as err:  # noqa: BLE001 - see the docstring
            if isinstance(err, OSError) and self._archive_as_failed(record, err):
                return None
            self.core.forget(record)
            if isinstance(err, (OSError, HotfolderError)):
                cause = os_failure(err, record.folder).message if isinstance(err, OSError) else err.message
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
            self.core.through_faults(record, lambda: self.archive(record))
        except Exception:  # noqa: BLE001 - the caller logs the first cause
            return False
        return True

    def fail_job(self, record: FileRecord, job: JobState, err: HotfolderError) -> None:
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
        self.core.count("failed")
        logger.error("[%s %s] %s", record.input_name, job.name, err)
        self.core.emit(Failed(file=record.input_name, job_id=record.job_id, job=job.name, error=job.error))

    def fail_file(self, record: FileRecord, err: HotfolderError) -> None:
        err.where.setdefault("file", record.input_name)
        record.error = err.to_dict()
        logger.error("[%s] %s", record.input_name, err)
        self.core.emit(Failed(file=record.input_name, job_id=record.job_id, error=record.error))
        self.archive(record)

    def archive(self, record: FileRecord) -> None:
        """Move the file's input to done/ (or failed/, with its error document) and forget it."""
        core = self.core
        with core.cond:
            if record.job_id not in core.active or record.job_id in core.archiving:
                return
            core.archiving.add(record.job_id)
            record.state = "archiving"
        error = documents.error_document(record)
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
            with core.cond:  # still active: the caller tries again, or drops it (taken up at the next start)
                core.archiving.discard(record.job_id)
            raise
        with core.cond:
            core.active.pop(record.job_id, None)
            core.archiving.discard(record.job_id)
            if not kept:
                core.counts["files_failed" if error else "files_done"] += 1
            core.cond.notify_all()
        if kept:
            return
        logger.info("[%s] %s%s", record.input_name, "failed" if error else "done",
                    f" -> {target}" if target else "")
        core.emit(Archived(file=record.input_name, job_id=record.job_id, failed=bool(error),
                           path=str(target) if target else None, error=error,
                           published=tuple(job.published for job in record.jobs
                                           if job.state == "published" and job.published)))


class _Ending:
    """The end of a job at the boundary: fail it (once) if it failed, archive its file if it was the
    last one. Can be run again (a full inbox) without failing the job twice."""

    def __init__(self, endings: Endings, record: FileRecord, job: JobState, failure: HotfolderError | None) -> None:
        self.endings, self.record, self.job, self.failure = endings, record, job, failure

    def __call__(self) -> None:
        if self.failure is not None:
            self.endings.fail_job(self.record, self.job, self.failure)
            self.failure = None
        if self.record.all_finished():
            self.endings.archive(self.record)


def _has_files(folder: str) -> bool:
    try:
        return any(entry.is_file() for entry in os.scandir(folder))
    except OSError:
        return False


def os_failure(err: OSError, path: str | os.PathLike[str]) -> HotfolderError:
    """The error a job fails with for an OSError that is not a failing filesystem: the real cause,
    never "a bug in hotfolder"."""
    if err.filename is None and isinstance(err, (ConnectionError, TimeoutError)):
        return ServerError(f"Connection failed: {err.strerror or err} ({type(err).__name__}).",
                           hint="Check that the ComfyUI server is reachable from this machine.")
    return filesystem_error(err, path=path)
