"""Crash recovery and adoption: take up the job folders an earlier run of this instance left, and those
of instances whose daemon died (their lease expired), from what their records say. Also holds this
instance's lease, which a full or read-only inbox may keep it from taking at start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hotfolder import fsguard
from hotfolder.config import Settings
from hotfolder.engine.core import Core, logger
from hotfolder.engine.intake import Intake
from hotfolder.errors import filesystem_error
from hotfolder.lease import Lease
from hotfolder.paths import UnsafeFolder, display_name, own_dir
from hotfolder.record import RECORD_NAME, FileRecord, is_own_name
from hotfolder.stages import claim


class Recovery:
    """Resumes recorded files; owns the instance's lease."""

    def __init__(self, core: Core, intake: Intake) -> None:
        self.core, self.intake = core, intake
        settings = core.settings
        self.lease = Lease(settings.state_dir, settings.instance_id, timeout=settings.lease_timeout)
        self.lease_pending = False  # the lease could not be written (read-only or full inbox at start)

    @property
    def settings(self) -> Settings:
        """The engine's settings now (a reload may change them)."""
        return self.core.settings

    def take_lease(self) -> None:
        """Take this instance's lease (ConfigError if another live daemon holds it). On a full or
        read-only inbox it is taken once that recovers (:meth:`intake_paused`)."""
        try:
            self.lease.acquire()
        except OSError as err:
            if not self.core.guard.check(err, fallback=self.settings.state_dir):
                raise filesystem_error(err, doing="write the lease") from err
            self.lease_pending = self.core.recover_pending = True

    def release_lease(self) -> None:
        if not self.lease_pending:
            self.lease.release()

    def intake_paused(self) -> bool:
        """Whether intake is paused by a full or read-only filesystem (probing it when due). When it has
        recovered: takes the lease if it could not, and resumes what the fault cut off (which may pause
        intake again)."""
        guard = self.core.guard
        if guard.paused():
            return True
        if self.lease_pending:
            try:
                self.lease.acquire()
            except OSError as err:
                if guard.check(err, fallback=self.settings.state_dir):
                    return True
                raise filesystem_error(err, doing="write the lease") from err
            self.lease_pending = False
        if self.core.recover_pending:
            self.core.recover_pending = False
            self.recover()
        return guard.paused()

    def recover(self) -> int:
        """Resume every job folder of this instance left by an earlier run, and adopt those of instances
        whose daemon is gone. Returns how many files were resumed. On a full or read-only inbox this
        waits for it to recover (:meth:`intake_paused` calls it again then)."""
        if self.lease_pending or self.core.guard.paused():
            self.core.recover_pending = True
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
            with self.core.cond:
                if job_folder.name in self.core.active:
                    continue
            try:
                if self._resume(job_folder):
                    count += 1
            except fsguard.IntakePaused:
                break  # the rest when the filesystem has recovered
        return count

    def adopt_orphans(self) -> int:
        """Adopt and resume the jobs of other instances whose daemon died (called periodically)."""
        if self.lease_pending or self.core.guard.paused():
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
            self.intake.fault(err, folder, record)
            return False
        counted = record.job_id in self.core.uncounted  # a filesystem fault cut its parse off: not a crash
        self.core.uncounted.discard(record.job_id)
        self.intake.queue(record, counted=counted)
        return True

    def _load_record(self, folder: Path) -> FileRecord | None:
        """The folder's record; a new one from its input if it has none, or an unreadable one."""
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
