"""Durable job state: the record kept in each job folder under ``inbox/.hotfolder/``.

A record is rewritten atomically (temp file, fsync, rename, fsync of the folder) before each step that
has an effect outside the process, so a daemon killed at any moment finds, at its next start, what it
had done and what it had promised to do.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolder.paths import rename_noreplace, write_and_close
from hotfolder.spec import JobSpec

RECORD_NAME = "job.json"
SPARE_NAME = ".job.json.spare"  # the next record, written here and renamed over the record (FileRecord.save)
COPY_PREFIX = "input-"  # private copies of a scenario's input files (stages.upload): input-<16 hex><ext>
_OWN = re.compile(r"workflow-\d{3,}\.json|input-[0-9a-f]{16}(\.[a-z0-9]{1,10})?")


def is_own_name(name: str) -> bool:
    """Whether ``name`` is (or could be) one of hotfolder's own files in a job folder."""
    return name in (RECORD_NAME, SPARE_NAME) or _OWN.fullmatch(name) is not None


def workflow_name(index: int) -> str:
    return f"workflow-{index:03d}.json"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The whole file at ``path``, read with plain system calls (``open()`` adds an fstat, an isatty
    ioctl and lseeks per file; a job reads and writes a few small files, and every system call is a
    chance for another thread to take the GIL)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def json_bytes(data: Any, *, indent: int | None = 2) -> bytes:
    """``data`` as UTF-8 JSON. A lone surrogate (a server's ``"\\udc80"``, an undecodable file name)
    cannot be UTF-8: then the text is written with ASCII escapes, which JSON reads back the same."""
    text = json.dumps(data, ensure_ascii=False, indent=indent, default=str) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(data, indent=indent, default=str) + "\n").encode("ascii")


def write_json_private(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, fsync: bool = False) -> None:
    """Write ``data`` as JSON straight to ``path``, for a file in a folder only this job uses that
    nothing reads before a later step commits it (a job's workflow before the record that lists it, a
    sidecar in staging before the folder is moved into the outbox). A crash mid-write leaves a torn
    file that the redone step writes again; no temp file and rename needed (creating a file is the
    dearest thing a job does to the file system). Plain system calls, as in :func:`read_file`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    write_and_close(fd, json_bytes(data, indent=indent), fsync=fsync)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, durable: bool = True,
                      mode: int | None = None, replace: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old or the new file, never a torn one.
    ``durable`` also fsyncs the file and its folder (job state); ``mode`` sets the file's permissions;
    without ``replace``, a file already at ``path`` is kept and FileExistsError raised."""
    folder, name = os.path.split(os.fspath(path))
    # dumps, not dump: json.dump always takes the pure-Python encoder; dumps with indent=None the C one
    text = json_bytes(data, indent=indent)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        write_and_close(fd, text, fsync=durable)
        if mode is not None:
            os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            rename_noreplace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(folder)


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, reused within that second


def now_iso(ts: float | None = None) -> str:
    global _second
    ts = time.time() if ts is None else ts
    whole = int(ts)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int(ts % 1 * 1000):03d}Z"


@dataclass
class JobState:
    """One job of a claimed file."""

    index: int
    name: str
    # unrendered (a UI template waiting for a server's /object_info), pending, submitting, submitted,
    # downloaded, published, failed
    state: str = "pending"
    prompt_id: str | None = None
    server: str | None = None
    submissions: int = 0
    resubmissions: int = 0
    published: str | None = None
    staging: str | None = None
    error: dict[str, Any] | None = None
    times: dict[str, str] = field(default_factory=dict)
    spec: JobSpec | None = None  # a dict only in the record's JSON
    template: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # the scenario's uploads (stages.upload.InputFile)

    @property
    def finished(self) -> bool:
        return self.state in {"published", "failed"}


@dataclass
class FileRecord:
    """The record of one claimed input file and its jobs."""

    job_id: str
    input_name: str
    folder: Path
    sha256: str = ""
    state: str = "claimed"  # claimed, parsed, archived
    attempts: int = 0
    claimed_at: str = field(default_factory=now_iso)
    instance: str = ""
    original_path: str = ""
    original_name: str = ""  # the name the file had when claimed (paths.display_name), if input_name differs
    archive: bool = True
    archive_name: str | None = None
    parse_attempts: int = 0
    error: dict[str, Any] | None = None
    jobs: list[JobState] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # the record and its temp file as strings, made once (a record's folder never changes)
    _record_file: str = field(init=False, repr=False, compare=False)
    _spare_file: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = os.fspath(self.folder)
        self._record_file = os.path.join(base, RECORD_NAME)
        self._spare_file = os.path.join(base, SPARE_NAME)

    @property
    def input_path(self) -> Path:
        return self.folder / self.input_name

    @property
    def path(self) -> Path:
        return self.folder / RECORD_NAME

    def workflow_path(self, index: int) -> Path:
        return self.folder / workflow_name(index)

    def own_files(self) -> list[str]:
        """The names of the files hotfolder keeps in the job folder (besides the input), in the order
        they may be removed: the record last."""
        copies = dict.fromkeys(item["copy"] for job in self.jobs for item in job.inputs if item.get("copy"))
        return [*(workflow_name(job.index) for job in self.jobs), *copies, SPARE_NAME, RECORD_NAME]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "job_id": self.job_id,
            "input": self.input_name,
            "sha256": self.sha256,
            "state": self.state,
            "attempts": self.attempts,
            "claimed_at": self.claimed_at,
            "instance": self.instance,
            "original_path": self.original_path,
            "original_name": self.original_name or self.input_name,
            "archive": self.archive,
            "archive_name": self.archive_name,
            "parse_attempts": self.parse_attempts,
            "error": self.error,
            "jobs": [
                {**vars(job), "spec": job.spec.to_dict() if job.spec is not None else {}} for job in self.jobs
            ],
        }

    def save(self, *, durable: bool = True) -> None:
        """Replace the record atomically: written to a temp file (:data:`SPARE_NAME`; one name, as saves
        of a record take turns under its lock) and renamed over it, so a killed process leaves the old or
        the new one. ``durable`` also fsyncs the file before the rename and the folder after it, for the
        states that must survive a power cut too: the prompt_id before its POST, the archive name.
        Compact JSON: the C encoder (an indented dump runs the pure-Python one)."""
        with self._lock:
            data = json_bytes(self.to_dict(), indent=None)
            try:
                fd = os.open(self._spare_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                             | getattr(os, "O_NOFOLLOW", 0), 0o600)
                write_and_close(fd, data, fsync=durable)
                os.replace(self._spare_file, self._record_file)
            except OSError as err:  # a write refused (a full inbox) names the record, not a descriptor
                if err.filename is None:
                    err.filename = self._record_file
                raise
            if durable:
                fsync_dir(self.folder)

    @classmethod
    def load(cls, folder: Path) -> FileRecord:
        data = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
        rec = cls(
            job_id=data["job_id"], input_name=data["input"], folder=folder, sha256=data.get("sha256", ""),
            state=data.get("state", "claimed"), attempts=data.get("attempts", 0),
            claimed_at=data.get("claimed_at", ""), instance=data.get("instance", ""),
            original_path=data.get("original_path", ""), original_name=data.get("original_name", ""),
            archive=data.get("archive", True),
            archive_name=data.get("archive_name"), parse_attempts=data.get("parse_attempts", 0),
            error=data.get("error"),
        )
        rec.jobs = [JobState(**{**job, "spec": JobSpec.from_dict(job["spec"]) if job.get("spec") else None})
                    for job in data.get("jobs", [])]
        return rec

    def all_finished(self) -> bool:
        return all(job.finished for job in self.jobs)
