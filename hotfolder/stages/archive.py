"""Stage 10 of 10: archive. Move the input to ``inbox/done/`` or ``inbox/failed/`` (+ ``.error.json``).

The archive name is chosen first and recorded by the caller, so a crash between writing the error file
and moving the input resumes with the same name instead of leaving an orphan error file. Nothing that is
already there is overwritten, and the job folder is removed last: a crash at any point leaves the input in
exactly one place. Moving a failed file back into ``inbox/`` retries it.

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


def plan_archive_name(record: FileRecord, folder: Path, *, failed: bool) -> str:
    """A name free in ``folder`` for the input (and, for failures, its ``.error.json``). Raises
    UnsafeFolder if ``folder`` is not hotfolder's own."""
    own_dir(folder)
    taken: set[str] = set()
    while True:
        name = unique_name(folder, record.input_name, taken)
        if not failed or not (folder / f"{name}.error.json").exists():
            return name
        taken.add(name)


def archive_input(record: FileRecord, *, folder: Path, name: str, error: dict[str, Any] | None) -> Path | None:
    """Move the claimed input of ``record`` to ``folder/name``; return where it went (None if it was a
    copy or is already gone, after a crash)."""
    target: Path | None = None
    source = os.path.join(record.folder, record.input_name)
    if record.archive and os.path.lexists(source):
        own_dir(folder)  # checked again right before writing: it may have been swapped since the plan
        if error is not None:
            write_json_atomic(folder / f"{name}.error.json", redact_data(dict(error, archived_as=name)))
        failpoints.hit("mid_archive")
        try:
            try:
                rename_noreplace(source, os.path.join(folder, name))
            except FileNotFoundError:  # done/ or failed/ removed meanwhile
                own_dir(folder)
                rename_noreplace(source, os.path.join(folder, name))
            target = folder / name
        except FileExistsError:
            target = move_unique(Path(source), folder, name)
            if error is not None:
                write_json_atomic(folder / f"{target.name}.error.json", redact_data(dict(error, archived_as=target.name)))
    remove_job_folder(record)
    return target


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
