"""Stage 10 of 10: archive. Move the input to ``inbox/done/`` or ``inbox/failed/`` (+ ``.error.json``).

The error file is written first and the input moved after it, both without overwriting anything that is
already there, and the job folder is removed last: a crash at any point leaves the input in exactly one
place. Moving a failed file back into ``inbox/`` retries it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hotfolder.paths import move_unique, unique_name
from hotfolder.record import FileRecord, write_json_atomic


def archive_input(record: FileRecord, *, done_dir: Path, failed_dir: Path, error: dict[str, Any] | None) -> Path | None:
    """Archive the claimed input of ``record``; return where it went (None for a copied input)."""
    target: Path | None = None
    if record.archive and record.input_path.exists():
        if error is None:
            target = move_unique(record.input_path, done_dir, record.input_name)
        else:
            failed_dir.mkdir(parents=True, exist_ok=True)
            name = record.input_name
            # pick a name free for both the input and its error file
            taken: set[str] = set()
            while True:
                name = unique_name(failed_dir, record.input_name, taken)
                if not (failed_dir / f"{name}.error.json").exists():
                    break
                taken.add(name)
            write_json_atomic(failed_dir / f"{name}.error.json", dict(error, archived_as=name))
            target = move_unique(record.input_path, failed_dir, name)
    shutil.rmtree(record.folder, ignore_errors=True)
    return target
