"""Stage 10 of 10: archive. Move the input to ``inbox/done/`` or ``inbox/failed/`` (+ ``.error.json``).

The archive name is chosen first and recorded by the caller, so a crash between writing the error file
and moving the input resumes with the same name instead of leaving an orphan error file. A failure's name
is taken by creating its ``.error.json`` (never over an existing one): two files with one safe name that
fail at the same moment (two prepare threads, two daemons on a shared inbox) get two names, each with its
own error file. Nothing that is already there is overwritten, and the job folder is removed last: a crash
at any point leaves the input in exactly one place. Moving a failed file back into ``inbox/`` retries it.

``done/`` and ``failed/`` must be hotfolder's own folders (:func:`hotfolder.paths.own_dir`): a symlink or
a file put in their place is refused with :class:`~hotfolder.paths.UnsafeFolder`, nothing is written
through it, and the input stays in its job folder until the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from hotfolder import failpoints
from hotfolder.paths import move_unique, own_dir, rename_noreplace, unique_name
from hotfolder.record import RECORD_NAME, FileRecord, write_json_atomic
from hotfolder.redact import redact_data


def plan_archive_name(record: FileRecord, folder: Path, *, failed: bool,
                      error: dict[str, Any] | None = None) -> str:
    """A name free in ``folder`` for the input. For a failure, its ``.error.json`` (``error``) is written
    there now, where none was: that takes the name, which another file planning at the same moment then
    skips. Raises UnsafeFolder if ``folder`` is not hotfolder's own."""
    own_dir(folder)
    taken: set[str] = set()
    while True:
        name = unique_name(folder, record.input_name, taken)
        if not failed:
            return name
        try:
            _write_error(folder, name, error or {}, replace=False)
            return name
        except FileExistsError:  # another file's error document: its name
            taken.add(name)


_NAME_FIELDS = ("file", "original_name", "archived_as")  # file names the user chose: shown as they are


def _write_error(folder: Path, name: str, error: dict[str, Any], *, replace: bool = True) -> None:
    """The error document, redacted, except the names of the file it describes (a file called
    ``api_key=night.yaml`` is a name, not a credential, and the document must name the file beside it)."""
    doc = redact_data(dict(error, archived_as=name))
    for key in _NAME_FIELDS:
        if key in error or key == "archived_as":
            doc[key] = name if key == "archived_as" else error[key]
    where = error.get("where")
    if isinstance(where, dict) and isinstance(doc.get("where"), dict) and "file" in where:
        doc["where"]["file"] = where["file"]
    write_json_atomic(folder / f"{name}.error.json", doc, replace=replace)


def archive_input(record: FileRecord, *, folder: Path, name: str, error: dict[str, Any] | None) -> Path | None:
    """Move the claimed input of ``record`` to ``folder/name``; return where it went (None if it was a
    copy or is already gone, after a crash)."""
    target: Path | None = None
    source = os.path.join(record.folder, record.input_name)
    if record.archive and os.path.lexists(source):
        own_dir(folder)  # checked again right before writing: it may have been swapped since the plan
        if error is not None:  # the plan's own error file, written again (also after a restart)
            _write_error(folder, name, error)
        failpoints.hit("mid_archive")
        try:
            try:
                rename_noreplace(source, os.path.join(folder, name))
            except FileNotFoundError:  # done/ or failed/ removed meanwhile
                own_dir(folder)
                rename_noreplace(source, os.path.join(folder, name))
            target = folder / name
        except FileExistsError:  # a file put there since the plan
            target = _move_elsewhere(record, Path(source), folder, name, error)
    remove_job_folder(record)
    return target


def _move_elsewhere(record: FileRecord, source: Path, folder: Path, name: str, error: dict[str, Any] | None) -> Path:
    """Move ``source`` under the next free name when ``name`` was taken; a failure takes that name as the
    plan does, and its error file planned for ``name`` (which describes another file now) goes."""
    if error is None:
        return move_unique(source, folder, name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / f"{name}.error.json")
    while True:
        other = plan_archive_name(record, folder, failed=True, error=error)
        try:
            rename_noreplace(source, folder / other)
            return folder / other
        except FileExistsError:  # taken again meanwhile: its error file is ours, the name is not
            os.unlink(folder / f"{other}.error.json")


def remove_job_folder(record: FileRecord) -> None:
    """Remove the job folder: its files one by one, the record last (a run cut off before that must not
    find an input without its record, and run it again: the copy ``hotfolder process`` takes stays
    here), or the whole tree when something else is in it."""
    base = os.fspath(record.folder)
    for name in [record.input_name, *record.own_files()]:
        if name == RECORD_NAME:
            failpoints.hit("mid_cleanup")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(base, name))
    try:
        os.rmdir(base)
    except FileNotFoundError:
        pass
    except OSError:  # not empty: an input not archived (a copy), or a file of a crashed run
        shutil.rmtree(base, ignore_errors=True)
