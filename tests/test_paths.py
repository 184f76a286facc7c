"""Safe names, no-replace renames, atomic publish and archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotfolder.paths import move_unique, rename_noreplace, safe_filename, unique_name
from hotfolder.record import SPARE_NAME, FileRecord, JobState
from hotfolder.stages.archive import archive_input, plan_archive_name
from hotfolder.stages.download import list_outputs
from hotfolder.stages.publish import find_published, publish_folder

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("raw, safe", [
    ("../../etc/passwd", "passwd"),
    ("/abs/file.png", "file.png"),
    ("..", "file"),
    ("a\x00b\x1fc.png", "a_b_c.png"),
    ("..\\..\\win.png", "win.png"),
    (".hidden", "hidden"),
    ("fox 🦊.png", "fox 🦊.png"),
    ("", "file"),
])
def test_safe_filename_never_escapes(raw: str, safe: str) -> None:
    assert safe_filename(raw) == safe


def test_safe_filename_keeps_the_extension_when_truncating() -> None:
    name = safe_filename("x" * 300 + ".png")
    assert len(name) == 120 and name.endswith(".png")


def test_unique_name_and_move_never_overwrite(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("old")
    assert unique_name(tmp_path, "a.yaml") == "a-2.yaml"
    src = tmp_path / "src.yaml"
    src.write_text("new")
    moved = move_unique(src, tmp_path, "a.yaml")
    assert moved.name == "a-2.yaml" and (tmp_path / "a.yaml").read_text() == "old"


def test_rename_noreplace_refuses_an_existing_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "src", tmp_path / "dst")


def test_publish_renames_staging_into_place_with_sidecar_and_suffix(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    (outbox / "fox").mkdir(parents=True)
    staging = outbox / ".hotfolder-staging" / "j1"
    staging.mkdir(parents=True)
    (staging / "img.png").write_bytes(b"png")
    final = publish_folder(staging, outbox, "fox", {"job_key": "j1/1"})
    assert final == outbox / "fox-2" and not staging.exists()
    assert json.loads((final / "fox-2.json").read_text())["job_key"] == "j1/1"
    assert find_published(outbox, "fox", "j1/1") == final
    assert find_published(outbox, "fox", "other/1") is None


def test_publish_makes_a_missing_outbox(tmp_path: Path) -> None:
    staging = tmp_path / "staging" / "j1"
    staging.mkdir(parents=True)
    (staging / "img.png").write_bytes(b"png")
    final = publish_folder(staging, tmp_path / "gone" / "outbox", "fox", {"job_key": "j1/1"}, fresh=True)
    assert final == tmp_path / "gone" / "outbox" / "fox"
    assert sorted(p.name for p in final.iterdir()) == ["fox.json", "img.png"]


def test_archive_makes_done_and_removes_the_job_folder_with_whatever_is_left_in_it(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "job"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("params: {}")
    record = FileRecord(job_id="job", input_name="a.yaml", folder=folder, jobs=[JobState(1, "a")])
    record.save()
    (folder / SPARE_NAME).write_text("{}")  # a save cut off before its rename
    (folder / "workflow-001.json").write_text("{}")
    target = archive_input(record, folder=tmp_path / "done", name="a.yaml", error=None)
    assert target == tmp_path / "done" / "a.yaml" and target.read_text() == "params: {}"
    assert not folder.exists()
    folder.mkdir()
    (folder / "b.yaml").write_text("x")
    (folder / "stray.part").write_text("left by a crash")
    record = FileRecord(job_id="job", input_name="b.yaml", folder=folder, jobs=[JobState(1, "b")])
    archive_input(record, folder=tmp_path / "done", name="b.yaml", error=None)
    assert not folder.exists() and (tmp_path / "done" / "b.yaml").exists()


def test_archive_writes_error_file_beside_a_unique_failed_name(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "a.yaml").write_text("earlier failure")
    folder = tmp_path / "state" / "job"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("params: {}")
    record = FileRecord(job_id="job", input_name="a.yaml", folder=folder, jobs=[JobState(1, "a")])
    name = plan_archive_name(record, failed, failed=True)
    target = archive_input(record, folder=failed, name=name, error={"message": "bad"})
    assert target == failed / "a-2.yaml"
    assert json.loads((failed / "a-2.yaml.error.json").read_text())["message"] == "bad"
    assert (failed / "a.yaml").read_text() == "earlier failure" and not folder.exists()


def test_two_failures_with_one_safe_name_planned_at_once_keep_their_own_error_files(tmp_path: Path) -> None:
    # Two long names cut to the same safe name, failing at once (two prepare threads, two daemons): each
    # plan takes its name, and no error file is written over another's.
    failed = tmp_path / "failed"
    records = []
    for i, original in enumerate(["é" * 104 + ".yml", "é" * 105 + ".yml"]):
        folder = tmp_path / "state" / f"job{i}"
        folder.mkdir(parents=True)
        (folder / "x.yml").write_text(f"file {i}")
        records.append(FileRecord(job_id=f"job{i}", input_name="x.yml", original_name=original, folder=folder))
    errors = [{"message": "bad", "original_name": r.original_name} for r in records]
    names = [plan_archive_name(r, failed, failed=True) for r in records]
    assert names == ["x.yml", "x-2.yml"]
    (failed / "x-2.yml").write_text("put there by hand meanwhile")
    targets = [archive_input(r, folder=failed, name=n, error=e) for r, n, e in zip(records, names, errors, strict=False)]
    assert [t.name for t in targets] == ["x.yml", "x-3.yml"]
    for record, target in zip(records, targets, strict=False):
        error = json.loads((failed / f"{target.name}.error.json").read_text(encoding="utf-8"))
        assert error["original_name"] == record.original_name and error["archived_as"] == target.name
        assert target.read_text() == f"file {record.job_id[-1]}"
    assert sorted(p.name for p in failed.iterdir()) == ["x-2.yml", "x-3.yml", "x-3.yml.error.json", "x.yml",
                                                        "x.yml.error.json"]


def test_every_output_kind_with_a_filename_is_downloadable() -> None:
    outputs = {
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
        "10": {"gifs": [{"filename": "b.mp4", "subfolder": "v", "type": "output", "format": "video/h264-mp4"}]},
        "11": {"audio": [{"filename": "c.flac", "subfolder": "", "type": "output"}]},
        "12": {"text": ["40"]},
        "13": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
        "14": {"animated": [True]},
    }
    files, values = list_outputs(outputs)
    assert [f.filename for f in files] == ["a.png", "b.mp4", "c.flac", "p.png"]
    assert values == {"12": {"text": ["40"]}, "14": {"animated": [True]}}
    files, _ = list_outputs(outputs, include_temp=False)
    assert "p.png" not in [f.filename for f in files]


def test_shipped_templates_match_the_examples_init_copies() -> None:
    for path in (ROOT / "hotfolder" / "examples").iterdir():
        assert (ROOT / "templates" / path.name).read_bytes() == path.read_bytes(), path.name
