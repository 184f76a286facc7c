"""Stage 2 of 10: claim. Take a complete inbox file by one atomic rename into its own job folder.

The job folder lives in ``inbox/.hotfolder/`` (the inbox's own filesystem), so the rename either happens
or not: two hotfolder instances on one inbox can never both take a file. Symlinks and non-files are never
claimed (nor followed).

The claim moves exactly what was checked: the file is opened first (:func:`hotfolder.paths.open_regular`:
no link followed, no FIFO waited on, a regular file by ``fstat``), then renamed, and the renamed path must
still be that same file (device and inode); anything swapped in between is put back where it was. Its
hash is read through the opened descriptor. In the job folder the file gets a safe name
(:func:`hotfolder.paths.safe_filename`, with ``_`` before a name that hotfolder's own files in the job folder
could have: ``job.json``, ``workflow-001.json``); the name it had is kept in the record as ``original_name``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

from hotfolder import failpoints
from hotfolder.paths import (
    NotRegular,
    UnsafeFolder,
    display_name,
    move_unique,
    open_regular,
    own_dir,
    rename_noreplace,
    safe_filename,
    same_file,
    write_all,
)
from hotfolder.record import FileRecord, fsync_dir, is_own_name

logger = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
HASH_LIMIT = 64 * 1024 * 1024  # a moved file larger than this is not hashed at claim time


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the regular file at ``path`` (opened by :func:`open_regular`: no link followed)."""
    fd, _ = open_regular(path)
    try:
        return fd_sha256(fd)
    finally:
        os.close(fd)


def fd_sha256(fd: int) -> str:
    """The sha256 of what the open ``fd`` holds, read from its start."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, READ_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def job_folder_name(name: str) -> str:
    """The name a claimed file has in its job folder (and then in done/ or failed/): its safe name,
    with ``_`` before one that hotfolder's own files could have (job.json, workflow-001.json)."""
    safe = safe_filename(name, portable=False)
    return "_" + safe if is_own_name(safe) else safe


def claim_file(path: Path, jobs_dir: Path, *, instance: str = "", move: bool = True,
               parse_attempts: int = 0) -> FileRecord | None:
    """Move ``path`` into a new job folder and write its first record. Returns None when the file is gone
    (another instance claimed it), is a symlink, or is not a regular file (or was swapped for one while
    being claimed), or when the job folders are not hotfolder's own (logged). ``move=False`` copies
    instead, through the opened descriptor (``hotfolder process`` leaves the user's file where it is).
    ``parse_attempts`` goes into that first record (a caller about to parse the file counts the attempt
    in the same write)."""
    try:
        fd, st = open_regular(path)
    except (FileNotFoundError, NotRegular):
        return None
    except OSError as err:  # unreadable (permissions), or held by a lease: left where it is
        logger.warning("[%s] cannot be opened to claim it: %s", display_name(path.name), err.strerror or err)
        return None
    try:
        return _claim_open(path, fd, st, jobs_dir, instance=instance, move=move, parse_attempts=parse_attempts)
    finally:
        os.close(fd)


def _claim_open(path: Path, fd: int, st: os.stat_result, jobs_dir: Path, *, instance: str, move: bool,
                parse_attempts: int) -> FileRecord | None:
    try:
        own_dir(jobs_dir, levels=2)  # inbox/.hotfolder/<instance>
    except UnsafeFolder as err:
        logger.error("[%s] not claimed: %s", display_name(path.name), err)
        return None
    name = job_folder_name(path.name)
    job_id = new_job_id()
    folder = os.path.join(jobs_dir, job_id)
    os.mkdir(folder)
    target = os.path.join(folder, name)
    failpoints.hit("claim_checked")
    if move:
        try:
            os.rename(path, target)
        except FileNotFoundError:  # the file is gone (another instance took it)
            with contextlib.suppress(OSError):
                os.rmdir(folder)
            return None
        except OSError:  # a full or read-only inbox: nothing is claimed
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if not same_file(os.lstat(target), st):
            _put_back(target, path)
            with contextlib.suppress(OSError):
                os.rmdir(folder)
            return None
    else:
        try:
            copied_sha = _copy(fd, target)
        except OSError:  # a full or read-only inbox: nothing is claimed (the partial copy is gone)
            shutil.rmtree(folder, ignore_errors=True)
            raise
    try:
        fsync_dir(folder)
        if move:
            fsync_dir(os.path.dirname(path) or ".")
        failpoints.hit("after_claim")
        record = FileRecord(job_id=job_id, input_name=name, folder=Path(folder), instance=instance,
                            original_path=display_name(str(path)), original_name=display_name(path.name),
                            archive=move, parse_attempts=parse_attempts)
        if not move:
            record.sha256 = copied_sha
        elif st.st_size <= HASH_LIMIT:  # a rename keeps the file; a copy is taken after it settled
            record.sha256 = fd_sha256(fd)
        record.save(durable=False)  # nothing has happened outside yet: after a power cut, recovery re-reads the input
        failpoints.hit("after_record")
    except OSError:
        _undo_claim(path, folder, target, move=move)  # a full inbox: the claim happens whole or not at all
        raise
    return record


def _put_back(target: str, path: Path) -> None:
    """Something else was swapped in for the checked file between the check and the rename: return it
    to the inbox unread (under its own name, or a free variant of its safe name if that is taken)."""
    logger.warning("[%s] was replaced while being claimed (a symlink, a FIFO or another file); left in the inbox",
                   display_name(path.name))
    try:
        rename_noreplace(target, path)
    except FileExistsError:
        with contextlib.suppress(OSError):
            move_unique(Path(target), path.parent, safe_filename(path.name, portable=False))
    except OSError as err:
        logger.error("[%s] could not be put back into the inbox (%s); it stays in %s",
                     display_name(path.name), err, os.path.dirname(target))


def _copy(fd: int, target: str) -> str:
    """Copy what ``fd`` holds to a new file ``target`` (never through a link); return its sha256."""
    digest = hashlib.sha256()
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        offset = 0
        while chunk := os.pread(fd, READ_CHUNK, offset):
            write_all(out, chunk)
            digest.update(chunk)
            offset += len(chunk)
    except BaseException:
        os.unlink(target)  # never a partial copy that a restart would take for the whole file
        raise
    finally:
        os.close(out)
    return digest.hexdigest()


def _undo_claim(path: Path, folder: str, target: str, *, move: bool) -> None:
    """Put a file whose claim could not be recorded back where it was and remove its job folder. If it
    cannot go back (a new file of that name arrived), the folder stays: recovery takes it up."""
    try:
        if move:
            rename_noreplace(target, path)
        shutil.rmtree(folder)
    except OSError:
        pass
