"""Full and read-only filesystems, on real small ones: a tmpfs mounted in the test for the outbox or the
inbox, filled up or remounted read-only while hotfolder runs. The daemon stays up, intake pauses with one
log line and resumes on its own, no finished render is lost, every input ends in done/ exactly once. And
generated faults: any errno at any named step ends that job or file with its real cause, never the
daemon, and never as "a bug in hotfolder".

Mounting needs root; without it (or where mount is refused) the tmpfs tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotfolder import daemon, failpoints, fsguard, status_report
from hotfolder.config import Settings
from hotfolder.testing import ComfyTestServer
from tests.conftest import make_settings, wait_until
from tests.scenarios import png_size

pytestmark = pytest.mark.timeout(120)

PAGE = 4096


# -- small filesystems ---------------------------------------------------------------------------


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[..., Path]]:
    """Mounts a small tmpfs on a folder (made if missing); every mount is undone at the end, even when
    the test failed. Skips the test if this process may not mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (these tests fill and remount real filesystems)")
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], check=False,
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in reversed(mounted):
            if subprocess.run(["umount", str(folder)], check=False, capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def fill(folder: Path, *, leave_pages: int = 0) -> None:
    """Fill the filesystem of ``folder`` (a dot file hotfolder ignores), leaving ``leave_pages`` pages free."""
    fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 64 * 1024, PAGE):
            while True:
                try:
                    os.write(fd, bytes(chunk))
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    if leave_pages:
        os.truncate(folder / ".filler", os.path.getsize(folder / ".filler") - leave_pages * PAGE)


def free(folder: Path) -> None:
    (folder / ".filler").unlink()


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


# -- the daemon in-process ----------------------------------------------------------------------


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[threading.Thread]:
    """run_daemon on a thread (the real main loop, intake and engine), stopped at the end; an exception
    that ends it fails the test."""
    stop = threading.Event()
    died: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run_daemon(settings, stop=stop)
        except BaseException as err:  # noqa: BLE001 - reported below
            died.append(err)

    thread = threading.Thread(target=run, name="daemon-under-test")
    thread.start()
    try:
        wait_until(lambda: (settings.state_dir / "status").is_dir() or died or not thread.is_alive(),
                   message="the daemon to start")
        yield thread
    finally:
        stop.set()
        thread.join(30)
    assert not died, f"the daemon died: {died[0]!r}"


def drop(inbox: Path, name: str, content: str = "params: {width: 8, height: 8}\n") -> None:
    tmp = inbox / f".{name}.tmp"
    tmp.write_text(content)
    tmp.rename(inbox / name)


def where(inbox: Path, name: str) -> list[str]:
    """Where the input ``name`` is now: any of done, failed, inbox, claimed (in a job folder)."""
    places = [folder for folder in ("done", "failed") if (inbox / folder / name).exists()]
    if (inbox / name).exists():
        places.append("inbox")
    if list((inbox / ".hotfolder").glob(f"*/*/{name}")):
        places.append("claimed")
    return places


def archived(inbox: Path, names: list[str]) -> bool:
    return all(set(where(inbox, n)) & {"done", "failed"} for n in names)


def published(outbox: Path, name: str) -> list[Path]:
    """The outbox folders whose sidecar says they came from input ``name``."""
    out = []
    for folder in outbox.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            sidecar = json.loads((folder / f"{folder.name}.json").read_text())
            if sidecar["scenario"]["file"] == name:
                out.append(folder)
    return out


def assert_done_once(project: Path, names: list[str]) -> None:
    inbox, outbox = project / "inbox", project / "outbox"
    for name in names:
        assert where(inbox, name) == ["done"], f"{name} is in {where(inbox, name)}"
        (folder,) = published(outbox, name)
        (png,) = folder.glob("*.png")
        png_size(png)
    staging = outbox / ".hotfolder-staging"
    assert not staging.exists() or not [p for p in staging.iterdir() if not p.name.startswith(".hotfolder-probe")]
    assert not list((inbox / ".hotfolder").glob("*/*/job.json")), "job folders left behind"


def status_file(settings: Settings) -> dict:
    (path,) = (settings.state_dir / "status").glob("*.json")
    return json.loads(path.read_text())


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.fixture(autouse=True)
def _quick_probes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    monkeypatch.setattr(fsguard, "PROBE_FIRST", 0.05)
    monkeypatch.setattr(fsguard, "PROBE_MAX", 0.2)
    monkeypatch.setattr(fsguard, "REPEAT_WINDOW", 0.0)  # each generated fault is its own episode, logged
    caplog.set_level(logging.INFO)
    yield
    failpoints.clear()


# -- the classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "says"), [
    (errno.ENOSPC, "the filesystem is full (ENOSPC)"), (errno.EROFS, "read-only (EROFS)"),
    (errno.EACCES, "permission denied (EACCES)"), (errno.ENAMETOOLONG, "name is too long for this filesystem"),
    (errno.EIO, "input/output error (EIO)"), (errno.EDQUOT, "quota"), (errno.ELOOP, "(ELOOP)"),
])
def test_an_oserror_is_explained_with_its_path_and_a_fix_never_as_a_bug(code: int, says: str) -> None:
    from hotfolder.errors import filesystem_error

    err = filesystem_error(OSError(code, os.strerror(code), "/srv/outbox/fox/fox.json"))
    text = str(err)
    assert says in text and "/srv/outbox/fox/fox.json" in text and "Hint: " in text, text
    assert "bug" not in text.lower()
    assert err.to_dict()["where"] == {"path": "/srv/outbox/fox/fox.json", "errno": errno.errorcode[code]}


def test_a_full_or_read_only_filesystem_pauses_other_errnos_only_if_the_folder_fails_too(tmp_path: Path) -> None:
    guard = fsguard.Guard({"inbox": tmp_path / "inbox", "outbox": tmp_path / "outbox"})
    (tmp_path / "inbox").mkdir()
    path = str(tmp_path / "inbox" / "a.yaml")
    assert not guard.check(OSError(errno.EACCES, "denied", path), fallback=tmp_path)  # the folder is fine: the file's
    assert not guard.check(OSError(errno.ENAMETOOLONG, "too long", path), fallback=tmp_path)
    assert not guard.paused() and guard.reason() is None
    failpoints.inject("probe", errno.EACCES, times=-1)  # now the folder refuses writes too
    assert guard.check(OSError(errno.EACCES, "denied", path), fallback=tmp_path)
    assert guard.check(OSError(errno.ENOSPC, "full", str(tmp_path / "outbox" / "x")), fallback=tmp_path)
    assert guard.paused()
    assert guard.reason() == (f"inbox filesystem not writable (EACCES) at {path}; "
                              f"outbox filesystem full (ENOSPC) at {tmp_path / 'outbox' / 'x'}")
    failpoints.clear()
    wait_until(lambda: not guard.paused(), message="the probes to succeed")


def test_a_filesystem_that_fails_again_right_after_it_resumed_is_not_logged_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Nearly full: the probe fits, the render does not. Paused again at once, it is not logged again
    (one line, not one per probe) and probed less often."""
    monkeypatch.setattr(fsguard, "REPEAT_WINDOW", 60.0)
    guard = fsguard.Guard({"outbox": tmp_path})
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "big.png"))
    delays = []
    for _ in range(3):
        assert guard.check(full, fallback=tmp_path)
        delays.append(guard._pauses["outbox"].delay)
        wait_until(lambda: not guard.paused(), message="the probe to succeed")
    assert len(lines(caplog, "intake paused")) == 1 and len(lines(caplog, "intake resumed")) == 1
    assert delays[0] < delays[1] < delays[2]


# -- the outbox ----------------------------------------------------------------------------------


def test_full_outbox_keeps_the_render_staged_and_publishes_it_once_there_is_room(
        project: Path, comfy: ComfyTestServer, mount_tmpfs: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = mount_tmpfs(project / "outbox")
    settings = make_settings(project, comfy.url, status_interval=0.3)
    fill(outbox, leave_pages=1)  # the render fits, its sidecar does not: full in the middle of the publish
    with running(settings) as thread:
        drop(project / "inbox", "fox.yaml")
        wait_until(lambda: lines(caplog, "intake paused") or not thread.is_alive(), message="the pause")
        assert thread.is_alive(), "the daemon died"
        (line,) = lines(caplog, "intake paused")
        assert "outbox filesystem full (ENOSPC)" in line and str(outbox) in line and "free space" in line
        staged = list((outbox / ".hotfolder-staging").glob("*/*.png"))
        assert len(staged) == 1, "the finished render is kept staged"
        assert where(project / "inbox", "fox.yaml") == ["claimed"]
        wait_until(lambda: "ENOSPC" in (status_file(settings).get("intake_paused") or ""), message="status")
        assert "INTAKE PAUSED: outbox filesystem full (ENOSPC)" in status_report.format_status(status_file(settings))
        free(outbox)
        wait_until(lambda: archived(project / "inbox", ["fox.yaml"]), message="the publish after freeing space")
        assert thread.is_alive()
        wait_until(lambda: not status_file(settings).get("intake_paused"), message="status: resumed")
    assert_done_once(project, ["fox.yaml"])
    assert len(lines(caplog, "intake paused")) == 1 and len(lines(caplog, "intake resumed")) == 1
    assert not lines(caplog, "bug")
    assert comfy.executed_prompt_ids and len(set(comfy.executed_prompt_ids)) == len(comfy.executed_prompt_ids)


def test_read_only_outbox_pauses_until_it_is_writable_again(
        project: Path, comfy: ComfyTestServer, mount_tmpfs: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    outbox = mount_tmpfs(project / "outbox")
    settings = make_settings(project, comfy.url)
    with running(settings) as thread:
        remount(outbox, "ro")
        for name in ("owl.yaml", "elk.yaml"):
            drop(project / "inbox", name)
        wait_until(lambda: lines(caplog, "intake paused") or not thread.is_alive(), message="the pause")
        assert thread.is_alive(), "the daemon died"
        (line,) = lines(caplog, "intake paused")
        assert "outbox filesystem read-only (EROFS)" in line and str(outbox) in line and "remount" in line
        assert not archived(project / "inbox", ["owl.yaml"]) and not (project / "inbox" / "failed" / "owl.yaml").exists()
        remount(outbox, "rw")
        wait_until(lambda: archived(project / "inbox", ["owl.yaml", "elk.yaml"]), message="the publish after rw")
        assert thread.is_alive()
    assert_done_once(project, ["owl.yaml", "elk.yaml"])
    assert len(lines(caplog, "intake paused")) == 1
    assert not lines(caplog, "bug")


# -- the inbox -----------------------------------------------------------------------------------


def test_full_inbox_pauses_intake_and_resumes_when_space_is_freed(
        project: Path, comfy: ComfyTestServer, mount_tmpfs: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    inbox = mount_tmpfs(project / "inbox")
    settings = make_settings(project, comfy.url)
    comfy.faults.node_delay("ImageInvert", 0.5)  # the first files are still running when the inbox fills
    first, then = ["a1.yaml", "a2.yaml"], ["b1.yaml", "b2.yaml", "b3.yaml"]
    with running(settings) as thread:
        for name in first:
            drop(inbox, name)
        wait_until(lambda: all(where(inbox, n) == ["claimed"] for n in first), message="the first claims")
        (inbox / ".incoming").mkdir()
        for name in then:  # written while there is room, moved in once there is none (a rename needs none)
            (inbox / ".incoming" / name).write_text("params: {width: 8, height: 8}\n")
        fill(inbox)
        for name in then:
            (inbox / ".incoming" / name).rename(inbox / name)
        wait_until(lambda: lines(caplog, "intake paused") or not thread.is_alive(), message="the pause")
        assert thread.is_alive(), "the daemon died"
        (line,) = lines(caplog, "intake paused")
        assert "inbox filesystem full (ENOSPC)" in line and str(inbox) in line
        wait_until(lambda: all(where(inbox, n) == ["inbox"] for n in then), message="b files back in the inbox")
        assert not archived(inbox, first)  # their records cannot be saved: they wait, nothing fails
        free(inbox)
        wait_until(lambda: archived(inbox, first + then), message="everything after freeing space")
        assert thread.is_alive()
    assert_done_once(project, first + then)
    assert len(lines(caplog, "intake paused")) == 1 and len(lines(caplog, "intake resumed")) == 1
    assert len(comfy.executed_prompt_ids) == 5 == len(set(comfy.executed_prompt_ids))
    assert not lines(caplog, "bug")


def run_daemon_process(project: Path, url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    env.update({"HOTFOLDER_SETTLE_SECONDS": "0.1", "HOTFOLDER_POLL_INTERVAL": "0.5"})
    with open(project / "daemon.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hotfolder", "--server", url, "--default-template", "invert", "run"],
            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_daemon_restarted_on_a_read_only_inbox_waits_and_resumes_when_it_is_writable(
        project: Path, comfy: ComfyTestServer, mount_tmpfs: Callable[..., Path]) -> None:
    """The daemon killed with a job in flight, the inbox remounted read-only, the daemon started again:
    it used to die at every start (the lease, then the job folder's record). Now it starts, says why it
    waits, and finishes everything once the inbox is writable."""
    inbox = mount_tmpfs(project / "inbox")
    names = ["c1.yaml", "c2.yaml"]
    comfy.faults.node_delay("ImageInvert", 1.0)
    first = run_daemon_process(project, comfy.url)
    try:
        drop(inbox, "c1.yaml")
        wait_until(lambda: comfy.executed_prompt_ids or any(r["path"].endswith("/prompt") for r in comfy.requests),
                   message="c1 submitted")
    finally:
        first.kill()
        first.wait(30)
    comfy.faults.node_delay("ImageInvert", 0)
    assert where(inbox, "c1.yaml") == ["claimed"]
    drop(inbox, "c2.yaml")
    remount(inbox, "ro")
    log_path = project / "daemon.log"
    start = log_path.stat().st_size
    proc = run_daemon_process(project, comfy.url)
    try:
        wait_until(lambda: "intake paused" in log_path.read_text()[start:] or proc.poll() is not None,
                   message="the pause")
        text = log_path.read_text()[start:]
        assert proc.poll() is None, text
        assert "inbox filesystem read-only (EROFS)" in text and "remount" in text, text
        assert "Traceback" not in text, text
        remount(inbox, "rw")
        wait_until(lambda: archived(inbox, names), message="the files after rw")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()[start:]
    assert proc.returncode == 0, text
    assert "intake resumed" in text and text.count("intake paused") == 1, text
    assert_done_once(project, names)
    assert len(comfy.executed_prompt_ids) == len(set(comfy.executed_prompt_ids)) == 2


def test_sigterm_while_paused_stops_at_once_and_the_next_start_publishes_once(
        project: Path, comfy: ComfyTestServer, mount_tmpfs: Callable[..., Path]) -> None:
    """A job waiting for a read-only outbox does not hold up a stop for stop_budget: it stays recorded,
    and the next start publishes it once."""
    outbox = mount_tmpfs(project / "outbox")
    remount(outbox, "ro")
    log_path = project / "daemon.log"
    proc = run_daemon_process(project, comfy.url)
    try:
        drop(project / "inbox", "yak.yaml")
        wait_until(lambda: "intake paused" in log_path.read_text() or proc.poll() is not None, message="the pause")
        assert proc.poll() is None, log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)  # not stop_budget (60 s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, log_path.read_text()
    assert where(project / "inbox", "yak.yaml") == ["claimed"]
    remount(outbox, "rw")
    proc = run_daemon_process(project, comfy.url)
    try:
        wait_until(lambda: archived(project / "inbox", ["yak.yaml"]), message="the publish after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert_done_once(project, ["yak.yaml"])
    assert len(comfy.executed_prompt_ids) == 1


# -- what a post-processor meets -----------------------------------------------------------------


OS_PLUGIN = '''
import errno

from hotfolder import hookimpl


def denied(job):
    raise PermissionError(errno.EACCES, "Permission denied", str(job.folder / "converted.webp"))


def full_once(job):
    marker = job.folder.parent / "was-full"
    if not marker.exists():
        marker.touch()
        raise OSError(errno.ENOSPC, "No space left on device", str(job.folder / "converted.webp"))


@hookimpl
def register_postprocessors(register):
    register("denied", denied)
    register("full_once", full_once)
'''


def test_a_post_processor_oserror_is_reported_as_what_it_is_and_a_full_disk_is_waited_for(
        project: Path, comfy: ComfyTestServer, caplog: pytest.LogCaptureFixture) -> None:
    from hotfolder import plugins

    (project / "plugins" / "os_faults.py").write_text(OS_PLUGIN)
    inbox = project / "inbox"
    drop(inbox, "denied.yaml", "params: {width: 8, height: 8}\npostprocess: [denied]\n")
    drop(inbox, "full.yaml", "params: {width: 8, height: 8}\npostprocess: [full_once]\n")
    settings = make_settings(project, comfy.url)
    daemon.run_daemon(settings, once=True, hooks=plugins.load_hooks(settings))
    assert where(inbox, "full.yaml") == ["done"] and len(published(project / "outbox", "full.yaml")) == 1
    assert len(lines(caplog, "intake paused")) == 1 and len(lines(caplog, "intake resumed")) == 1
    assert where(inbox, "denied.yaml") == ["failed"]
    doc = json.loads((inbox / "failed" / "denied.yaml.error.json").read_text())
    assert "permission denied (EACCES)" in doc["message"] and "converted.webp" in doc["message"], doc
    assert "bug" not in json.dumps(doc).lower()
    (staged,) = [job["error"]["where"]["staged"] for job in doc["jobs"]]
    assert list(Path(staged).glob("*.png")), "the finished render is kept"


# -- any errno at any step -----------------------------------------------------------------------


SYSTEMIC = sorted(fsguard.SYSTEMIC)
# Read at import: the autouse fixture clears HOTFOLDER_* variables before each test runs.
EXAMPLES = int(os.environ.get("HOTFOLDER_FS_EXAMPLES", "14"))


def test_an_oserror_at_any_step_ends_that_job_or_file_never_the_daemon(
        project: Path, comfy: ComfyTestServer, caplog: pytest.LogCaptureFixture) -> None:
    """One daemon, many generated faults: an OSError of a generated errno at a generated step (after
    some passes, once or until cleared). A full or read-only filesystem (ENOSPC, EDQUOT, EROFS) fails
    nothing: the file stays claimed while the fault lasts and is done after it; any other errno ends the
    job or file in failed/ with the cause. Every time: the daemon alive, the input in exactly one of
    done/ or failed/, a render that had been downloaded published or kept staged, no "bug" for an OSError."""
    settings_ = make_settings(project, comfy.url)
    inbox, outbox = project / "inbox", project / "outbox"
    serial = iter(range(10_000))
    with running(settings_) as thread:

        @settings(max_examples=EXAMPLES)
        @given(point=st.sampled_from(failpoints.POINTS),
               code=st.one_of(st.sampled_from(SYSTEMIC), st.sampled_from(sorted(errno.errorcode))),
               skip=st.integers(0, 1), lasting=st.booleans(), jobs=st.integers(1, 2))
        @example(point="mid_publish", code=errno.ENAMETOOLONG, skip=0, lasting=False, jobs=1)
        @example(point="mid_download", code=errno.EACCES, skip=0, lasting=False, jobs=1)
        @example(point="after_record", code=errno.ENOSPC, skip=0, lasting=True, jobs=1)
        @example(point="mid_archive", code=errno.EROFS, skip=0, lasting=True, jobs=1)
        @example(point="after_post", code=errno.ECONNRESET, skip=0, lasting=False, jobs=1)
        @example(point="mid_cleanup", code=errno.ENOENT, skip=0, lasting=False, jobs=1)
        @example(point="after_post", code=errno.EPERM, skip=0, lasting=True, jobs=1)
        @example(point="mid_publish", code=errno.ENOSPC, skip=1, lasting=True, jobs=2)
        @example(point="mid_download", code=errno.EISDIR, skip=1, lasting=False, jobs=2)
        def one_fault(point: str, code: int, skip: int, lasting: bool, jobs: int) -> None:
            try:
                check_one(f"g{next(serial):04d}.yaml", point, code, skip, lasting, jobs)
            finally:
                failpoints.clear()

        def check_one(name: str, point: str, code: int, skip: int, lasting: bool, jobs: int) -> None:
            systemic = code in fsguard.SYSTEMIC
            lasting = lasting and systemic  # a fault that never clears is a filesystem's, not a job's
            first = len(caplog.records)
            failpoints.inject(point, code, skip=skip, times=-1 if lasting else 1)
            if lasting:
                failpoints.inject("probe", code, times=-1)  # the filesystem stays failing until cleared
            drop(inbox, name, "params: {width: 8, height: 8}\n" + ("repeat: 2\n" if jobs == 2 else ""))
            if lasting:
                wait_until(lambda: archived(inbox, [name])
                           or any("intake paused" in r.getMessage() for r in caplog.records[first:]),
                           message=f"{name}: the pause or the end")
                if not archived(inbox, [name]):  # the fault was reached: the file waits, claimed or in the inbox
                    assert set(where(inbox, name)) <= {"inbox", "claimed"}, where(inbox, name)
                failpoints.clear()
            wait_until(lambda: archived(inbox, [name]), timeout=30, message=f"{name} archived")
            failpoints.clear()
            wait_until(lambda: not list((inbox / ".hotfolder").glob("*/*/job.json")), message=f"{name} cleaned up")
            wait_until(lambda: len(lines(caplog, "intake paused")) == len(lines(caplog, "intake resumed")),
                       message="intake resumed")
            assert thread.is_alive()
            assert all(t.is_alive() for t in threading.enumerate() if t.name.startswith("job-worker"))
            places = where(inbox, name)
            assert places in (["done"], ["failed"]), places
            outputs = published(outbox, name)
            assert len(outputs) <= jobs
            if systemic:
                assert places == ["done"] and len(outputs) == jobs, "a full or read-only filesystem fails nothing"
            if places == ["done"]:
                assert len(outputs) == jobs
            else:
                doc = json.loads((inbox / "failed" / f"{name}.error.json").read_text())
                assert "bug" not in json.dumps(doc).lower(), doc
                staged = [(job.get("error") or {}).get("where", {}).get("staged") for job in doc.get("jobs", [])]
                for folder in filter(None, staged):
                    assert list(Path(folder).glob("*.png")), "a kept render is in its staging folder"
                if point in {"mid_download", "mid_publish"} and len(outputs) < jobs:
                    assert any(staged), f"the downloaded render was thrown away: {doc}"
                for job in doc.get("jobs", []):  # each job of the file: published (exactly once) or failed
                    assert job["state"] in {"published", "failed"}, doc
                    if job["state"] == "published":
                        assert Path(job["published"]).is_dir()
            assert not any("bug" in r.getMessage() for r in caplog.records[first:])

        one_fault()


def test_a_full_inbox_while_an_input_is_copied_pauses_intake_and_fails_nothing(
        project: Path, comfy: ComfyTestServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An ``inputs:`` file is copied into the job folder (the inbox's filesystem) as it is read. A write
    refused there because the inbox is full is the filesystem's state, like any other write of the
    intake: intake pauses and the file is done once there is room, never failed as 'cannot be read,
    check the file's permissions'."""
    from hotfolder.stages import upload
    from hotfolder.testing.png import encode_png

    template = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "img", "images": ["2", 0]}},
    }
    (project / "templates" / "img2img.json").write_text(json.dumps(template))
    (project / "inbox" / "photos").mkdir()
    (project / "inbox" / "photos" / "cat.png").write_bytes(encode_png(2, 2, bytes(12)))
    real_write_all, refused = upload.write_all, []

    def full_once(fd: int, data: bytes) -> None:
        if not refused:
            refused.append(True)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a descriptor write: no file name
        real_write_all(fd, data)

    monkeypatch.setattr(upload, "write_all", full_once)
    inbox = project / "inbox"
    with running(make_settings(project, comfy.url)):
        drop(inbox, "cat.yaml", "template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
        wait_until(lambda: archived(inbox, ["cat.yaml"]), timeout=30, message="cat.yaml archived")
    assert refused, "the copy was never written"
    assert where(inbox, "cat.yaml") == ["done"], (inbox / "failed" / "cat.yaml.error.json").read_text()
    assert len(lines(caplog, "intake paused")) == 1
