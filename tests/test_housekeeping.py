"""Retention for inbox/done/, outbox/ and uploads: what goes, and what must never be touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hotfolder.housekeeping import prune

DAY = 86400.0


def later(days: float) -> float:
    return time.time() + days * DAY


def touch(path: Path, text: str = "x", *, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_prune_done_removes_old_inputs_with_their_error_files(tmp_path: Path) -> None:
    done = tmp_path / "done"
    touch(done / "a.yaml")
    touch(done / "b.csv")
    touch(done / "b.csv.error.json")
    touch(done / "orphan.yaml.error.json")
    assert prune(done, 7 * DAY) == []  # all fresh
    removed = prune(done, 7 * DAY, now=later(8))
    assert sorted(p.name for p in removed) == ["a.yaml", "b.csv", "b.csv.error.json", "orphan.yaml.error.json"]
    assert list(done.iterdir()) == []


def test_prune_counts_age_from_arrival_not_from_an_old_producer_mtime(tmp_path: Path) -> None:
    done = tmp_path / "done"
    touch(done / "copied-with-cp-p.yaml", mtime=time.time() - 400 * DAY)  # archived by rename just now
    assert prune(done, 7 * DAY) == []
    assert (done / "copied-with-cp-p.yaml").exists()


def test_prune_keeps_an_input_whose_error_file_is_newer(tmp_path: Path) -> None:
    done = tmp_path / "done"
    touch(done / "c.yaml")
    touch(done / "c.yaml.error.json", mtime=later(6))
    assert prune(done, 7 * DAY, now=later(8)) == []
    assert prune(done, 7 * DAY, now=later(14))


def test_prune_outbox_removes_whole_job_folders_aged_by_their_newest_file(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    touch(outbox / "old" / "img_00001_.png")
    touch(outbox / "old" / "old.json")
    touch(outbox / "growing" / "first.png")
    touch(outbox / "growing" / "deep" / "added-later.png", mtime=later(5))
    removed = prune(outbox, 7 * DAY, now=later(8))
    assert [p.name for p in removed] == ["old"]
    assert sorted(p.name for p in outbox.iterdir()) == ["growing"]


def test_prune_never_touches_hidden_entries_or_symlinks(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outside = tmp_path / "outside"
    target_file = touch(outside / "precious.png")
    touch(outbox / ".hotfolder-staging" / "J1-000" / "part.png")
    touch(outbox / ".hidden-file")
    (outbox / "link-to-dir").symlink_to(outside, target_is_directory=True)
    (outbox / "link-to-file").symlink_to(target_file)
    (outbox / "dangling").symlink_to(tmp_path / "nowhere")
    job = outbox / "job"
    touch(job / "out.png")
    (job / "link-inside").symlink_to(target_file)
    removed = prune(outbox, 7 * DAY, now=later(8))
    assert [p.name for p in removed] == ["job"]
    assert sorted(p.name for p in outbox.iterdir()) == [".hidden-file", ".hotfolder-staging", "dangling",
                                                       "link-to-dir", "link-to-file"]
    assert (outbox / ".hotfolder-staging" / "J1-000" / "part.png").exists()
    assert target_file.read_text() == "x"  # a link inside a removed folder goes, its target stays


def test_prune_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert prune(tmp_path / "nope", DAY) == []
    with pytest.raises(ValueError):
        prune(tmp_path, 0)
