"""The trust boundary for names and untrusted files (hotfolder/paths.py): any file name, any swap between
check and use, and hotfolder's own folders replaced by symlinks. Generated names (Hypothesis) go to one
running daemon; the races are driven through the ``claim_checked`` and ``inputs_checked`` failpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from hotfolder import daemon, failpoints, housekeeping
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import ScenarioError
from hotfolder.lease import Lease
from hotfolder.paths import (
    MAX_NAME_BYTES,
    NAME_MAX,
    SUFFIX_ROOM,
    UnsafeFolder,
    display_name,
    open_regular,
    safe_filename,
)
from hotfolder.stages import claim, upload
from hotfolder.stages.publish import publish_folder
from hotfolder.testing import ComfyTestServer
from hotfolder.watch import is_candidate
from tests.conftest import make_settings, wait_until
from tests.test_daemon import start_daemon

pytestmark = pytest.mark.timeout(120)
# Examples per run (tests/conftest.py: HOTFOLDER_HYPOTHESIS_EXAMPLES raises every budget for a longer hunt).
BUDGET = int(os.environ.get("HOTFOLDER_HYPOTHESIS_EXAMPLES", "0") or 0)

# -- the name function ----------------------------------------------------------------------------

BIDI = "\u202e\u202d\u200f\u2067"  # right-to-left overrides and marks
LETTERS = st.characters(categories=["L", "M", "N", "S", "Zs"], exclude_characters="/\\")
ANY_TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs", "Cc", "Mn", "Zl", "Zp"]),
                             st.sampled_from(BIDI + "🦊👨‍👩‍👧\u05d0\u0627.")), max_size=300)
RAW = st.binary(max_size=NAME_MAX)


@given(name=st.one_of(RAW, ANY_TEXT, RAW.map(lambda b: b.decode("utf-8", "surrogateescape"))))
@example(name=b"caf\xe9.yaml")
@example(name=". .hidden")
@example(name="\U0001f98a" * 100 + ".png")
@example(name="a\u202egnp.exe")
@settings(max_examples=BUDGET or 300)
def test_a_safe_name_is_one_bounded_valid_component_whatever_it_came_from(name: str | bytes) -> None:
    safe = safe_filename(name)
    data = safe.encode("utf-8")  # valid UTF-8: no surrogate left
    assert safe and "/" not in safe and "\0" not in safe and safe not in {".", ".."} and not safe.startswith(".")
    assert len(data) <= MAX_NAME_BYTES and len(data) + SUFFIX_ROOM <= NAME_MAX
    assert not any(unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} or c in BIDI for c in safe)
    assert safe_filename(safe) == safe  # idempotent
    assert safe_filename(name, portable=False).encode("utf-8")  # the inbox's variant: same guarantees
    assert len(safe_filename(name, portable=False).encode("utf-8")) <= MAX_NAME_BYTES


@given(stem=st.text(LETTERS, min_size=1, max_size=400).filter(lambda s: any(c.isalpha() for c in s.strip())),
       ext=st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True))
@example(stem="é" * 300, ext="png")
@settings(max_examples=BUDGET or 150)
def test_a_short_extension_is_kept_when_a_name_is_shortened(stem: str, ext: str) -> None:
    assert safe_filename(f"{stem}.{ext}").endswith(f".{ext}")


def test_display_name_keeps_every_original_readable_as_valid_text() -> None:
    assert display_name(b"caf\xe9.yaml") == "caf\\xe9.yaml"
    assert display_name("caf\udce9.yaml") == "caf\\xe9.yaml"  # os.listdir's surrogate escape
    assert display_name("fox 🦊.yaml") == "fox 🦊.yaml"


# -- any file name, dropped into one running daemon -----------------------------------------------

SUFFIXES = [b".yaml", b".json", b".txt", b".yml", b""]
GOOD = b"params: {width: 8, height: 8}\n"


def _name(raw: bytes, suffix: bytes) -> bytes:
    raw = raw.replace(b"/", b"_").replace(b"\0", b"_")
    return raw[: NAME_MAX - len(suffix)] + suffix


NAMES = st.builds(_name, st.one_of(
    st.binary(min_size=1, max_size=NAME_MAX),
    ANY_TEXT.filter(bool).map(lambda t: t.encode("utf-8", "surrogatepass")),  # lone surrogates: invalid UTF-8
    st.integers(200, NAME_MAX).map(lambda n: "é".encode() * (n // 2)),  # near the limit once a suffix is added
), st.sampled_from(SUFFIXES)).filter(lambda n: is_candidate(os.fsdecode(n)))
CONTENTS = st.one_of(st.just(GOOD), st.binary(max_size=64), st.sampled_from([b"", b"template: nope\n", b"- a list\n"]))


def _walk_names(root: Path) -> list[bytes]:
    return [os.path.join(d, f) for d, dirs, files in os.walk(os.fsencode(root)) for f in [*files, *dirs]]


def test_any_file_name_ends_in_done_or_failed_with_its_original_name_kept(project: Path, comfy: ComfyTestServer) -> None:
    proc = start_daemon(project, comfy.url)
    output: list[str] = []  # read all along: a full pipe would block the daemon's logging
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()

    def stop() -> str:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(10)
        return "".join(output)
    inbox = os.fsencode(project / "inbox")
    before = {p for p in _walk_names(project) if not p.startswith(inbox) and b"/outbox" not in p}
    dropped: dict[int, tuple[bytes, bytes]] = {}  # inode -> (name, content)
    counter = iter(range(10**9))

    @given(files=st.dictionaries(NAMES, CONTENTS, min_size=1, max_size=4))
    @example(files={b"caf\xe9.yaml": GOOD, b"new\nline.yaml": GOOD, b"x" * 250 + b".yaml": b"- no\n",
                    "é".encode() * 125 + b".yaml": GOOD})
    @example(files={b"job.json": b'{"params": {"width": 9}}', b"workflow-001.json": b"{}", b"input-a.yaml": GOOD})
    # Two long names with one safe name, failing at once on the two prepare threads: both planned the same
    # archive name, and the second wrote its .error.json over the first's (found by generation).
    @example(files={b"\xf4\x8b\x8b\x8al\xf2\x98\xbc\xa7.yaml": b"\xee\xcd\x14\xa5\xe6\xe2(\xad]\xfaQ\xfe\\\x8cB",
                    "é".encode() * 101 + b".json": b"\xce\xfa", "é".encode() * 104 + b".yml": b"- a list\n",
                    "é".encode() * 105 + b".yml": b""})
    # No shrinking: every step would be a real drop and a wait; a failure is reported as it was found.
    @settings(max_examples=BUDGET or 25, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    def drop(files: dict[bytes, bytes]) -> None:
        inodes = []
        for name, content in files.items():
            tmp = os.path.join(inbox, f".drop-{next(counter)}.tmp".encode())
            with open(tmp, "wb") as fh:
                fh.write(content)
            inode = os.stat(tmp).st_ino
            os.rename(tmp, os.path.join(inbox, name))
            dropped[inode] = (name, content)
            inodes.append(inode)
        wait_until(lambda: all(_where(project, i) for i in inodes), timeout=10,
                   message=f"every dropped file archived: {[dropped[i][0] for i in inodes if not _where(project, i)]!r}")
        assert proc.poll() is None, "the daemon died"
        for inode in inodes:
            places = _where(project, inode)
            assert len(places) == 1, (dropped[inode][0], places)  # exactly one of done/ or failed/
            _check_archived(project, places[0], *dropped[inode])

    try:
        drop()
        assert proc.poll() is None, "the daemon died"
        assert len(dropped) > 15, len(dropped)  # every example ran against this daemon
    except BaseException:
        print(stop())  # the daemon's log, shown with the failure
        raise
    log = stop()
    assert proc.returncode == 0, log[-3000:]
    after = {p for p in _walk_names(project) if not p.startswith(inbox) and b"/outbox" not in p}
    assert after == before, "something was written outside outbox/ and the inbox"
    for path in _walk_names(project / "inbox") + _walk_names(project / "outbox"):
        rel = os.path.relpath(path, os.fsencode(project))
        assert rel.startswith((b"inbox/done", b"inbox/failed", b"inbox/.hotfolder", b"outbox/")), rel
        rel.decode("utf-8")  # every name hotfolder wrote is valid UTF-8


def _where(project: Path, inode: int) -> list[Path]:
    found = []
    for sub in ("done", "failed"):
        folder = project / "inbox" / sub
        if folder.is_dir():  # (the daemon's own temp files come and go: d_ino, no stat)
            found += [Path(e.path) for e in os.scandir(folder) if e.inode() == inode and not e.name.startswith(".")]
    return found


def _check_archived(project: Path, path: Path, name: bytes, content: bytes) -> None:
    assert path.read_bytes() == content
    assert len(os.fsencode(path.name + ".error.json")) <= NAME_MAX  # a safe name, maybe with a -N suffix
    original = display_name(name)
    if path.parent.name == "failed":
        error = json.loads(path.with_name(path.name + ".error.json").read_text(encoding="utf-8"))
        assert error["original_name"] == original and error["file"] and error["message"]
    else:
        sidecars = [json.loads(p.read_text(encoding="utf-8")) for p in (project / "outbox").glob("*/*.json")]
        assert any(s["scenario"]["original_name"] == original and s["scenario"]["sha256"] == hashlib.sha256(content).hexdigest()
                   for s in sidecars), original


# -- the claim moves exactly what was checked ---------------------------------------------------

@pytest.fixture
def swap(tmp_path: Path):
    """Register a swap to run at the ``claim_checked`` failpoint (file opened, not yet renamed)."""
    def arm(action) -> None:
        failpoints.on("claim_checked", action)
    yield arm
    failpoints.on("claim_checked", None)


def _secret(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"root:x:0:0:secret\n")
    return outside / "secret.txt"


@pytest.mark.parametrize("move", [True, False])
def test_a_symlink_swapped_in_after_the_check_is_never_claimed_nor_read(tmp_path: Path, swap, move: bool) -> None:
    inbox, jobs = tmp_path / "inbox", tmp_path / "inbox" / ".hotfolder" / "me"
    inbox.mkdir()
    secret = _secret(tmp_path)
    path = inbox / "a.yaml"
    path.write_bytes(b"params: {}\n")
    swap(lambda: (os.rename(path, inbox / "aside"), os.symlink(secret, path)))
    record = claim.claim_file(path, jobs, instance="me", move=move)
    if move:
        assert record is None and path.is_symlink()  # put back, unread
    else:  # a copy is taken through the descriptor that was checked: the original bytes
        assert record is not None and record.input_path.read_bytes() == b"params: {}\n"
        assert record.sha256 == hashlib.sha256(b"params: {}\n").hexdigest()
    for file in jobs.rglob("*"):
        assert not file.is_symlink() and b"secret" not in (file.read_bytes() if file.is_file() else b"")


def test_a_fifo_swapped_in_after_the_check_is_put_back_without_hanging(tmp_path: Path, swap) -> None:
    inbox, jobs = tmp_path / "inbox", tmp_path / "inbox" / ".hotfolder" / "me"
    inbox.mkdir()
    path = inbox / "b.yaml"
    path.write_bytes(b"params: {}\n")
    swap(lambda: (os.rename(path, inbox / "aside"), os.mkfifo(path)))
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(claim.claim_file(path, jobs, instance="me")), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "the claim hangs on a FIFO"
    assert result == [None] and path.is_fifo()


def test_a_fifo_or_a_symlink_in_the_inbox_is_not_claimed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "f.yaml")
    (inbox / "l.yaml").symlink_to(_secret(tmp_path))
    assert claim.claim_file(inbox / "f.yaml", inbox / ".hotfolder" / "me") is None
    assert claim.claim_file(inbox / "l.yaml", inbox / ".hotfolder" / "me") is None
    with pytest.raises(OSError):
        open_regular(inbox / "f.yaml")


# -- inputs: read once, through one descriptor, uploaded from that copy ---------------------------

PNG_BYTES = b"\x89PNG\r\n\x1a\nnot really a png, but bytes"


def test_an_input_swapped_for_a_symlink_after_it_was_read_uploads_what_was_read(tmp_path: Path, comfy: ComfyTestServer) -> None:
    inbox, job = tmp_path / "inbox", tmp_path / "job"
    (inbox / "photos").mkdir(parents=True)
    job.mkdir()
    secret = _secret(tmp_path)
    (inbox / "photos" / "cat.png").write_bytes(PNG_BYTES)
    (item,) = upload.resolve_inputs({"LoadImage.image": "photos/cat.png"}, base=inbox, roots=[inbox], copy_dir=job)
    os.unlink(inbox / "photos" / "cat.png")
    os.symlink(secret, inbox / "photos" / "cat.png")
    http = ComfyHTTP(comfy.url)
    try:
        try:
            upload.upload_input(http, item, folder=job)
        except ScenarioError:
            pass
    finally:
        http.close()
    sent = [p.read_bytes() for p in comfy.input_dir.rglob("*") if p.is_file()]
    assert sent and all(b"secret" not in data for data in sent)
    assert PNG_BYTES in sent


@pytest.mark.parametrize("what", ["file", "folder"])
def test_an_input_swapped_while_being_checked_is_refused_unread(tmp_path: Path, what: str) -> None:
    inbox, job = tmp_path / "inbox", tmp_path / "job"
    (inbox / "photos").mkdir(parents=True)
    job.mkdir()
    secret = _secret(tmp_path)
    (secret.parent / "cat.png").write_bytes(b"outside secret bytes")
    (inbox / "photos" / "cat.png").write_bytes(PNG_BYTES)

    def swap() -> None:
        if what == "file":
            os.unlink(inbox / "photos" / "cat.png")
            os.symlink(secret, inbox / "photos" / "cat.png")
        else:
            os.rename(inbox / "photos", inbox / "aside")
            os.symlink(secret.parent, inbox / "photos")

    failpoints.on("inputs_checked", swap)
    try:
        with pytest.raises(ScenarioError, match="not a regular file|replaced while being read"):
            upload.resolve_inputs({"LoadImage.image": "photos/cat.png"}, base=inbox, roots=[inbox], copy_dir=job)
    finally:
        failpoints.on("inputs_checked", None)
    assert all(b"secret" not in p.read_bytes() for p in job.iterdir())


# -- hotfolder's own folders, names from scenarios and servers -----------------------------------

def test_done_and_failed_replaced_by_symlinks_are_never_written_through(
        project: Path, comfy: ComfyTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = make_settings(project, comfy.url)
    (project / "inbox" / "done").symlink_to(elsewhere)
    (project / "inbox" / "failed").symlink_to(elsewhere)
    (project / "inbox" / "good.yaml").write_text("params: {width: 8}\n")
    (project / "inbox" / "bad.yaml").write_text("- a list\n")
    with caplog.at_level(logging.ERROR):
        daemon.run_daemon(settings, once=True)
    assert list(elsewhere.iterdir()) == []
    assert "is a symlink" in caplog.text and "not archived" in caplog.text
    kept = sorted(p.name for p in (project / "inbox" / ".hotfolder").rglob("*.yaml"))
    assert kept == ["bad.yaml", "good.yaml"]  # waiting in their job folders
    for link in ("done", "failed"):
        (project / "inbox" / link).unlink()
    daemon.run_daemon(settings, once=True)  # fixed: the next start archives them
    assert (project / "inbox" / "done" / "good.yaml").is_file() and (project / "inbox" / "failed" / "bad.yaml").is_file()
    assert list(elsewhere.iterdir()) == []


def test_long_names_from_a_scenario_and_from_the_server_are_bounded_and_kept(project: Path, comfy: ComfyTestServer) -> None:
    fox = "\U0001f98a" * 60  # 240 bytes: the server's output name is 251, and hotfolder adds .part
    (project / "inbox" / "emoji.yaml").write_text(f'set:\n  "Save Image.filename_prefix": "{fox}"\n', encoding="utf-8")
    (project / "inbox" / "tmpl.yaml").write_text("template: " + "t" * 300 + "\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["files_done"] == 1 and counts["files_failed"] == 1
    error = json.loads((project / "inbox" / "failed" / "tmpl.yaml.error.json").read_text())
    assert error["error"] == "TemplateError" and "not a usable file name" in error["message"]
    sidecar = json.loads((project / "outbox" / "emoji" / "emoji.json").read_text(encoding="utf-8"))
    (output,) = sidecar["outputs"]
    assert output["server_filename"].startswith(fox) and len(output["file"].encode()) <= MAX_NAME_BYTES
    assert (project / "outbox" / "emoji" / output["file"]).is_file()


def test_an_output_named_like_the_sidecar_is_never_overwritten(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    staging = outbox / ".hotfolder-staging" / "j1"
    staging.mkdir(parents=True)
    (staging / "fox.json").write_text('{"from": "ComfyUI"}')
    final = publish_folder(staging, outbox, "fox", {"job_key": "j1/1"}, fresh=True)
    assert final == outbox / "fox-2"
    assert json.loads((final / "fox.json").read_text()) == {"from": "ComfyUI"}
    assert json.loads((final / "fox-2.json").read_text())["job_key"] == "j1/1"


def test_job_folders_replaced_by_a_symlink_are_never_written_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    (inbox / ".hotfolder").mkdir(parents=True)
    elsewhere.mkdir()
    (inbox / ".hotfolder" / "me").symlink_to(elsewhere)
    (inbox / "a.yaml").write_text("params: {}\n")
    with caplog.at_level(logging.ERROR):
        assert claim.claim_file(inbox / "a.yaml", inbox / ".hotfolder" / "me", instance="me") is None
    assert "is a symlink" in caplog.text
    assert list(elsewhere.iterdir()) == [] and (inbox / "a.yaml").is_file()  # left in the inbox


def test_a_job_folder_left_with_an_unsafe_name_and_no_record_is_resumed_under_a_safe_name(
        project: Path, comfy: ComfyTestServer) -> None:
    settings = make_settings(project, comfy.url)
    folder = os.fsencode(settings.jobs_dir / "20260101T000000-00000000")
    os.makedirs(folder)
    name = b"caf\xe9-" + b"x" * 240 + b".yaml"  # as an older version claimed it, before dying at its first record
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(GOOD)
    counts = daemon.run_daemon(settings, once=True)
    assert counts["files_done"] == 1
    (done,) = (project / "inbox" / "done").iterdir()
    assert done.read_bytes() == GOOD and done.name == safe_filename(name, portable=False)


def test_retention_never_deletes_behind_a_done_folder_replaced_by_a_symlink(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("not hotfolder's")
    (project / "inbox" / "done").symlink_to(elsewhere)
    real = housekeeping.prune
    monkeypatch.setattr(housekeeping, "prune", lambda folder, seconds: real(folder, seconds, now=time.time() + 30 * 86400))
    daemon._Retention(make_settings(project, "http://127.0.0.1:9", retention_done_days=1)).prune_once()
    assert (elsewhere / "precious.txt").exists()


def test_an_instance_folder_that_is_a_symlink_is_never_adopted(tmp_path: Path) -> None:
    state, elsewhere = tmp_path / "inbox" / ".hotfolder", tmp_path / "elsewhere"
    (elsewhere / "20260101T000000-00000000").mkdir(parents=True)
    (elsewhere / "20260101T000000-00000000" / "job.json").write_text("{}")
    (state / "me").mkdir(parents=True)
    (state / "gone").symlink_to(elsewhere)  # looks like the folder of a daemon that died
    assert Lease(state, "me").adopt() == []
    assert (elsewhere / "20260101T000000-00000000" / "job.json").exists()
    (state / "leases").symlink_to(elsewhere)
    with pytest.raises(UnsafeFolder, match="symlink"):
        Lease(state, "me").acquire()


def test_the_jobs_of_a_file_read_each_input_content_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox, job = tmp_path / "inbox", tmp_path / "job"
    (inbox / "photos").mkdir(parents=True)
    job.mkdir()
    (inbox / "photos" / "cat.png").write_bytes(PNG_BYTES)
    reads = []
    real = upload._read
    monkeypatch.setattr(upload, "_read", lambda *args: reads.append(args[0]) or real(*args))
    cache: dict = {}
    for _ in range(3):  # three jobs of one scenario file (repeat: 3)
        (item,) = upload.resolve_inputs({"LoadImage.image": "photos/cat.png"}, base=inbox, roots=[inbox],
                                        copy_dir=job, cache=cache)
    assert len(reads) == 1 and [p.name for p in job.iterdir()] == [item.copy]
    assert (job / item.copy).read_bytes() == PNG_BYTES and item.sha256 == hashlib.sha256(PNG_BYTES).hexdigest()


def test_a_sidecar_cut_off_mid_write_by_a_crash_is_written_again_under_the_job_name(tmp_path: Path) -> None:
    # a run killed while writing the sidecar into the staging folder leaves a torn one: it is not an output
    outbox = tmp_path / "outbox"
    staging = outbox / ".hotfolder-staging" / "j1"
    staging.mkdir(parents=True)
    (staging / "out.png").write_bytes(b"png")
    (staging / "fox.json").write_text('{"job_key": "j1/1", "outp')
    sidecar = {"job_key": "j1/1", "outputs": [{"file": "out.png"}]}
    final = publish_folder(staging, outbox, "fox", sidecar, fresh=False)
    assert final == outbox / "fox"
    assert json.loads((final / "fox.json").read_text())["job_key"] == "j1/1"
    assert sorted(p.name for p in final.iterdir()) == ["fox.json", "out.png"]


def test_an_output_named_like_the_sidecar_is_kept_also_when_publishing_resumes(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    staging = outbox / ".hotfolder-staging" / "j1"
    staging.mkdir(parents=True)
    (staging / "fox.json").write_text('{"job_key": "j1/1"}')  # what the server made, listed as an output
    final = publish_folder(staging, outbox, "fox", {"job_key": "j1/1", "outputs": [{"file": "fox.json"}]}, fresh=False)
    assert final == outbox / "fox-2"
    assert json.loads((final / "fox.json").read_text()) == {"job_key": "j1/1"}


def test_a_file_that_can_neither_be_claimed_nor_moved_to_failed_leaves_no_error_file_behind(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the daemon may read but not move (another user's file in a sticky-bit shared inbox: EPERM
    while the inbox itself is writable) stays in the inbox and is offered again at every rescan. Each
    offer must not leave one more orphan ``.error.json`` in failed/ (x.yaml.error.json,
    x-2.yaml.error.json, ...) describing a file that is not there."""
    import errno

    from hotfolder.engine import Engine
    from hotfolder.engine import intake as intake_module
    from hotfolder.stages import claim as claim_module

    settings = make_settings(project, "http://127.0.0.1:9")
    path = project / "inbox" / "x.yaml"
    path.write_text("params: {width: 8}\n")

    def refused(src, dst, *args, **kwargs):
        if os.fspath(src) == os.fspath(path):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), os.fspath(src), os.fspath(dst))
        return real_rename(src, dst, *args, **kwargs)

    real_rename = os.rename
    monkeypatch.setattr(claim_module.os, "rename", refused)
    monkeypatch.setattr(intake_module, "rename_noreplace", refused)
    engine = Engine(settings)
    for _ in range(3):  # three rescans
        assert engine.accept(path) is None
    assert path.is_file()
    failed = settings.failed_dir
    assert not failed.exists() or sorted(p.name for p in failed.iterdir()) == []


def test_a_file_that_cannot_be_claimed_while_failed_is_a_symlink_is_reported_not_raised(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """failed/ replaced by a symlink is the user's to fix (UnsafeFolder says how); refusing a file then
    must not raise out of accept into the daemon's 'this is a bug in hotfolder' line."""
    import errno

    from hotfolder.engine import Engine
    from hotfolder.stages import claim as claim_module

    settings = make_settings(project, "http://127.0.0.1:9")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings.failed_dir.symlink_to(elsewhere)
    path = project / "inbox" / "x.yaml"
    path.write_text("params: {width: 8}\n")

    def refused(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), os.fspath(src), os.fspath(dst))

    monkeypatch.setattr(claim_module.os, "rename", refused)
    assert Engine(settings).accept(path) is None
    assert path.is_file() and list(elsewhere.iterdir()) == []
