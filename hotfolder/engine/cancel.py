"""Cancelling jobs: which jobs a name means, and the flag each job's stages check.

A name is a job's name (``night-003``: that job) or a file's name (``night.yaml`` or ``night``: all its
jobs). A job already queued is stopped by its own stages (:mod:`hotfolder.stages.track` dequeues or
interrupts its prompt); one not submitted yet is never submitted. A name that matches no file in
progress is kept for :data:`WAIT_SECONDS`, so a cancel dropped just after its file is still honoured
once the file is claimed.
"""

from __future__ import annotations

import time
from pathlib import PurePath

from hotfolder.comfy.client import Dequeue
from hotfolder.engine.core import Core, logger
from hotfolder.record import FileRecord, JobState
from hotfolder.stages.context import CancelFlag

#: How long a cancel that matched nothing waits for a file of that name to be claimed.
WAIT_SECONDS = 120.0


def file_names(record: FileRecord) -> set[str]:
    """The names that mean the whole file: its name and its original name, with and without suffix."""
    return {meant for name in (record.input_name, record.original_name) if name for meant in _meaning(name)}


def means_file(name: str, file_name: str) -> bool:
    """Whether a cancel of ``name`` means the whole file called ``file_name`` (with or without suffix)."""
    return name in _meaning(file_name)


def _meaning(file_name: str) -> tuple[str, str]:
    return file_name, PurePath(file_name).stem


class Cancels:
    """The cancel flags of the jobs in progress and the cancels still waiting for their file."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._flags: dict[tuple[str, int], CancelFlag] = {}
        self._waiting: list[tuple[str, str, float]] = []  # (name, reason, until)
        self._everything: str | None = None  # everything was cancelled (Ctrl-C): jobs to come too

    def flag(self, record: FileRecord, job: JobState) -> CancelFlag:
        """The job's flag (made on first use, and set at once if a waiting cancel names it)."""
        with self.core.cond:
            key = (record.job_id, job.index)
            flag = self._flags.get(key)
            if flag is None:
                flag = self._flags[key] = CancelFlag()
                now = time.monotonic()
                self._waiting = [w for w in self._waiting if w[2] > now]
                names = file_names(record) | {job.name}
                reason = next((r for name, r, _ in self._waiting if name in names), self._everything)
                if reason is not None:
                    flag.set(reason)
            return flag

    def cancel(self, name: str | None, reason: str) -> list[str]:
        """Cancel the jobs ``name`` means (None: every job in progress) with ``reason`` (who and when).
        Returns the jobs cancelled ("file job") and the claimed files whose jobs will be; a name that
        matches none waits for its file."""
        core = self.core
        with core.cond:
            if name is None:
                self._everything = reason
            records = list(core.active.values())
            self._flags = {key: f for key, f in self._flags.items() if key[0] in core.active}  # files ended
        due = []
        unparsed = []  # claimed files not read yet: their jobs are cancelled as they are made
        for record in records:
            whole = name is None or name in file_names(record)
            if whole and not record.jobs:
                unparsed.append(f"{record.input_name} (its jobs, once it is read)")
            due += [(record, job) for job in list(record.jobs) if not job.finished and (whole or job.name == name)]
        # every prompt of the request is known before any job acts on it: per server, the first of its jobs
        # takes all of them off the queue in one request, before any stops its own, so the server starts none
        on_server: dict[str, list[str]] = {}
        for _, job in due:
            if job.prompt_id and job.server:
                on_server.setdefault(job.server, []).append(job.prompt_id)
        together = {server: Dequeue(server, tuple(ids)) for server, ids in on_server.items()}
        hits = [f"{record.input_name} {job.name}" for record, job in due
                if self.flag(record, job).set(reason, together.get(job.server or ""))]
        if name is not None and (not hits or unparsed):
            with core.cond:
                self._waiting.append((name, reason, time.monotonic() + WAIT_SECONDS))
        for hit in hits:
            logger.warning("[%s] cancel requested: %s", hit, reason)
        return hits + unparsed
