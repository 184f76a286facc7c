"""Stage 2 of 10: claim. Take a complete inbox file by one atomic rename into its own job folder.

The job folder lives in ``inbox/.hotfolder/`` (the inbox's own filesystem), so the rename either happens
or not: two hotfolder instances on one inbox can never both take a file. Symlinks and non-files are never
claimed (nor followed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

from hotfolder import failpoints
from hotfolder.paths import rename_noreplace
from hotfolder.record import FileRecord, fsync_dir

READ_CHUNK = 1024 * 1024


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, READ_CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def claim_file(path: Path, jobs_dir: Path, *, instance: str = "", move: bool = True,
               parse_attempts: int = 0) -> FileRecord | None:
    """Move ``path`` into a new job folder and write its first record. Returns None when the file is gone
    (another instance claimed it), is a symlink, or is not a regular file. ``move=False`` copies instead
    (``hotfolder process`` leaves the user's file where it is). ``parse_attempts`` goes into that first
    record (a caller about to parse the file counts the attempt in the same write)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    job_id = new_job_id()
    folder = os.path.join(jobs_dir, job_id)
    try:
        os.mkdir(folder)
    except FileNotFoundError:  # the first claim (or the folder was removed): make the parents
        jobs_dir.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder)
    target = os.path.join(folder, path.name)
    try:
        if move:
            os.rename(path, target)
        else:
            shutil.copyfile(path, target, follow_symlinks=False)
    except FileNotFoundError:  # the file is gone (another instance took it), or the new folder is
        with contextlib.suppress(OSError):
            os.rmdir(folder)
        return None
    except OSError:  # a full or read-only inbox: nothing is claimed (a partial copy goes)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        fsync_dir(folder)
        if move:
            fsync_dir(os.path.dirname(path) or ".")
        failpoints.hit("after_claim")
        record = FileRecord(job_id=job_id, input_name=path.name, folder=Path(folder), instance=instance,
                            original_path=str(path), archive=move, parse_attempts=parse_attempts)
        if st.st_size <= 64 * 1024 * 1024:  # a rename keeps the file; a copy is taken after it settled
            record.sha256 = file_sha256(target)
        record.save(durable=False)  # nothing has happened outside yet: after a power cut, recovery re-reads the input
        failpoints.hit("after_record")
    except OSError:
        _undo_claim(path, folder, target, move=move)  # a full inbox: the claim happens whole or not at all
        raise
    return record


def _undo_claim(path: Path, folder: str, target: str, *, move: bool) -> None:
    """Put a file whose claim could not be recorded back where it was and remove its job folder. If it
    cannot go back (a new file of that name arrived), the folder stays: recovery takes it up."""
    try:
        if move:
            rename_noreplace(target, path)
        shutil.rmtree(folder)
    except OSError:
        pass
