"""Tests for hotfolder.watch: a real watchdog observer on a real temp folder, no mocks, no fixed sleeps.

Fast paths (close, rename) are tested with a settle time far longer than the wait, so only the event can
explain the handoff. Negative checks ("nothing more is handed over") wait a bounded time on the handoff
queue, a few times the settle time.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hotfolder import paths as hotfolder_paths
from hotfolder import watch
from hotfolder.errors import ConfigError
from hotfolder.watch import Intake, is_candidate
from tests.conftest import wait_until

MakeIntake = Callable[..., Intake]

LONG_SETTLE = 30.0  # far beyond any wait below: a handoff within a test must come from an event
SETTLE = 0.3
WAIT = 5.0  # deadline for things that must happen

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="close-after-write is inotify only")


# -- helpers ------------------------------------------------------------------------------------------


class Handoffs:
    """An ``on_ready`` that records each path with the file's content at the moment it was handed over."""

    def __init__(self, *, fail_first: int = 0, when: Callable[[], object] | None = None) -> None:
        self._queue: queue.Queue[tuple[Path, bytes | None, object]] = queue.Queue()
        self.fail_first = fail_first
        self.when = when  # snapshot taken at handoff time (e.g. "had the writer finished?")

    def __call__(self, path: Path) -> None:
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        self._queue.put((path, data, self.when() if self.when else None))
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RuntimeError(f"boom on {path.name}")

    def next(self, timeout: float = WAIT) -> tuple[Path, bytes | None, object]:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"nothing was handed over within {timeout}s")

    def none_within(self, seconds: float) -> None:
        try:
            item = self._queue.get(timeout=seconds)
        except queue.Empty:
            return
        pytest.fail(f"unexpected handoff: {item[0].name!r}")


class SlowWriter(threading.Thread):
    """Writes ``chunks`` into ``path`` one every ``interval`` seconds, keeping the file open throughout.

    With ``presize``, the file first gets its full size (zeros), then is filled in place, as copy tools
    that preallocate do.
    """

    def __init__(self, path: Path, chunks: list[bytes], *, interval: float, presize: bool = False) -> None:
        super().__init__(name="test-slow-writer")
        self.path, self.chunks, self.interval, self.presize = path, chunks, interval, presize
        self.started_writing = threading.Event()
        self.done = threading.Event()
        self._pause = threading.Event()  # never set: used for interruptible pacing only

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks)

    def run(self) -> None:
        with self.path.open("wb") as f:
            if self.presize:
                f.truncate(len(self.content))
                f.flush()
            for i, chunk in enumerate(self.chunks):
                if i:
                    self._pause.wait(self.interval)
                f.write(chunk)
                f.flush()
                self.started_writing.set()
            self.done.set()  # before close: a handoff seeing done=False was too early


def write(path: Path, data: bytes = b"prompt: a red fox\n") -> Path:
    path.write_bytes(data)
    return path


def make_old(path: Path) -> None:
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_until(lambda: set(threading.enumerate()) <= before, timeout=2.0)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def make_intake(inbox: Path) -> Iterator[MakeIntake]:
    """Build and start an Intake on ``inbox``; every one is stopped at teardown."""
    made: list[Intake] = []

    def make(on_ready: Callable[[Path], None], **options: object) -> Intake:
        intake = Intake(inbox, on_ready, **options)  # type: ignore[arg-type]
        made.append(intake)
        intake.start()
        return intake

    yield make
    for intake in made:
        intake.stop()


# -- ignore rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.yaml", "job.csv", "x", "notes.txt", "a.ready.yaml", "done.json", "über.toml"])
def test_is_candidate_accepts_scenario_names(name: str) -> None:
    assert is_candidate(name)


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.yaml",
        ".hotfolder",
        "a.yaml.part",
        "a.tmp",
        "A.TMP",
        "a.crdownload",
        "a.yaml~",
        ".a.swp",
        "a.swp",
        "a.yaml.ready",
        "done",
        "failed",
        "",
    ],
)
def test_is_candidate_rejects_temporary_hidden_and_marker_names(name: str) -> None:
    assert not is_candidate(name)


# -- startup scan --------------------------------------------------------------------------------------


def test_startup_scan_hands_over_files_already_present_oldest_first(inbox: Path, make_intake: MakeIntake) -> None:
    old = write(inbox / "old.yaml", b"old")
    make_old(old)
    write(inbox / "fresh.yaml", b"fresh")
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=SETTLE)

    first, second = handoffs.next(), handoffs.next()
    assert (first[0], first[1]) == (inbox / "old.yaml", b"old")
    assert (second[0], second[1]) == (inbox / "fresh.yaml", b"fresh")
    handoffs.none_within(SETTLE * 2)


def test_startup_scan_hands_over_an_old_file_at_once_without_settling(inbox: Path, make_intake: MakeIntake) -> None:
    make_old(write(inbox / "a.yaml"))
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=LONG_SETTLE)
    assert handoffs.next()[0] == inbox / "a.yaml"


@pytest.mark.parametrize("use_observer", [True, False], ids=["observer", "polling"])
def test_startup_scan_waits_for_a_file_still_being_written(
    inbox: Path, make_intake: MakeIntake, use_observer: bool
) -> None:
    writer = SlowWriter(inbox / "copy.yaml", [b"x" * 100] * 6, interval=0.1)
    handoffs = Handoffs(when=writer.done.is_set)
    writer.start()
    writer.started_writing.wait(WAIT)
    make_intake(handoffs, settle_seconds=SETTLE, use_observer=use_observer, poll_interval=0.05)

    _, data, writer_done = handoffs.next()
    writer.join()
    assert writer_done
    assert data == writer.content


# -- events --------------------------------------------------------------------------------------------


@linux_only
def test_file_written_and_closed_is_handed_over_once(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    # The periodic scan runs too, and must not hand the file again while it stays in the inbox.
    make_intake(handoffs, settle_seconds=SETTLE, poll_interval=0.05)
    with (inbox / "a.yaml").open("wb") as f:
        f.write(b"prompt: one\n")
        f.flush()  # created + modified: the settle clock starts...
        f.write(b"seed: 1\n")
    # ...and the close hands it over; the settle clock racing it must not hand it a second time.

    assert handoffs.next() == (inbox / "a.yaml", b"prompt: one\nseed: 1\n", None)
    handoffs.none_within(SETTLE * 3)


@linux_only
def test_close_after_write_hands_over_without_waiting_for_settle(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=LONG_SETTLE)
    write(inbox / "a.json", b"{}")
    assert handoffs.next()[:2] == (inbox / "a.json", b"{}")


@pytest.mark.parametrize("use_observer", [True, False], ids=["observer", "polling"])
def test_slow_writer_is_handed_over_only_after_its_last_chunk(
    inbox: Path, make_intake: MakeIntake, use_observer: bool
) -> None:
    writer = SlowWriter(inbox / "slow.csv", [f"row {i}\n".encode() for i in range(10)], interval=0.1)
    handoffs = Handoffs(when=writer.done.is_set)
    make_intake(handoffs, settle_seconds=SETTLE, use_observer=use_observer, poll_interval=0.05)
    writer.start()

    path, data, writer_done = handoffs.next()
    writer.join()
    assert path == inbox / "slow.csv"
    assert writer_done, "handed over before the last chunk was written"
    assert data == writer.content
    handoffs.none_within(SETTLE * 2)


@linux_only
def test_local_writer_pausing_longer_than_settle_is_taken_only_at_its_close(
    inbox: Path, make_intake: MakeIntake
) -> None:
    # A copy over a slow link stalls for longer than settle_seconds while the file is open: with
    # close-after-write events the file must wait for the close, not be taken torn.
    writer = SlowWriter(inbox / "stall.yaml", [b"params:\n", b"  width: 8\n", b"  height: 8\n"], interval=SETTLE * 4)
    handoffs = Handoffs(when=writer.done.is_set)
    make_intake(handoffs, settle_seconds=SETTLE)
    writer.start()

    path, data, writer_done = handoffs.next()
    writer.join()
    assert path == inbox / "stall.yaml"
    assert writer_done, "handed over while the writer was paused mid-file"
    assert data == writer.content


@pytest.mark.parametrize("use_observer", [True, False], ids=["observer", "polling"])
def test_pre_sized_file_filled_later_is_handed_over_complete(
    inbox: Path, make_intake: MakeIntake, use_observer: bool
) -> None:
    writer = SlowWriter(inbox / "big.jsonl", [b"%d\n" % i * 50 for i in range(8)], interval=0.1, presize=True)
    handoffs = Handoffs(when=writer.done.is_set)
    make_intake(handoffs, settle_seconds=SETTLE, use_observer=use_observer, poll_interval=0.05)
    writer.start()

    _, data, writer_done = handoffs.next()
    writer.join()
    assert writer_done, "a full-size file still being filled was taken"
    assert data == writer.content
    assert b"\0" not in data


def test_part_file_renamed_to_final_name_is_handed_over_at_once(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=LONG_SETTLE)
    part = write(inbox / "upload.yaml.part", b"prompt: done\n")
    part.rename(inbox / "upload.yaml")

    assert handoffs.next()[:2] == (inbox / "upload.yaml", b"prompt: done\n")
    handoffs.none_within(0.3)


@linux_only
def test_file_moved_in_from_another_folder_is_handed_over_at_once(
    tmp_path: Path, inbox: Path, make_intake: MakeIntake
) -> None:
    outside = write(tmp_path / "staged.yaml", b"moved")
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=LONG_SETTLE)
    outside.rename(inbox / "staged.yaml")
    assert handoffs.next()[:2] == (inbox / "staged.yaml", b"moved")


def test_ignored_names_directories_and_symlinks_are_never_handed_over(
    tmp_path: Path, inbox: Path, make_intake: MakeIntake
) -> None:
    target = write(tmp_path / "target.yaml")
    ignored = [
        ".{p}hidden.yaml",
        "{p}a.part",
        "{p}b.tmp",
        "{p}c.crdownload",
        "{p}d.yaml~",
        "{p}e.swp",
        "{p}f.yaml.ready",
    ]

    def populate(prefix: str) -> None:
        for name in ignored:
            make_old(write(inbox / name.format(p=prefix)))
        (inbox / f"{prefix}subdir").mkdir()
        (inbox / f"{prefix}link.yaml").symlink_to(target)

    populate("")  # found by the startup scan
    for folder in ("done", "failed"):
        (inbox / folder).mkdir()
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=SETTLE, poll_interval=0.05)
    populate("late-")  # seen through events
    write(inbox / "z-sentinel.yaml")

    assert handoffs.next()[0] == inbox / "z-sentinel.yaml"
    handoffs.none_within(SETTLE * 2)


def test_ignored_file_is_handed_over_once_renamed_to_an_acceptable_name(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=SETTLE)
    tmp = write(inbox / ".incoming.yaml", b"hidden first")
    handoffs.none_within(SETTLE * 2)
    tmp.rename(inbox / "incoming.yaml")
    assert handoffs.next()[:2] == (inbox / "incoming.yaml", b"hidden first")


@pytest.mark.parametrize("before_start", [False, True], ids=["event", "startup-scan"])
def test_zero_byte_file_is_handed_over(inbox: Path, make_intake: MakeIntake, before_start: bool) -> None:
    if before_start:
        (inbox / "empty.yaml").touch()
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=SETTLE)
    if not before_start:
        (inbox / "empty.yaml").touch()
    assert handoffs.next()[:2] == (inbox / "empty.yaml", b"")


@pytest.mark.parametrize("removal", ["claimed", "deleted"])
def test_file_that_reappears_after_removal_is_handed_over_again(
    tmp_path: Path, inbox: Path, make_intake: MakeIntake, removal: str
) -> None:
    claimed = tmp_path / "claimed"
    claimed.mkdir()
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=SETTLE)

    for round_ in range(2):
        write(inbox / "again.yaml", b"same content")
        path, data, _ = handoffs.next()
        assert (path, data) == (inbox / "again.yaml", b"same content"), f"round {round_}"
        if removal == "claimed":
            path.rename(claimed / f"again-{round_}.yaml")  # what the pipeline's claim does
        else:
            path.unlink()
    handoffs.none_within(SETTLE * 2)


def test_rescan_offers_again_a_file_left_in_the_inbox_after_its_handoff(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    intake = make_intake(handoffs, settle_seconds=SETTLE, poll_interval=0.05)
    staged = write(inbox.parent / "kept.yaml")
    make_old(staged)  # before it appears: touching it afterwards would make it a changed file
    staged.rename(inbox / "kept.yaml")
    assert handoffs.next()[0] == inbox / "kept.yaml"
    handoffs.none_within(SETTLE * 2)  # the periodic scan leaves it alone

    intake.rescan()  # e.g. after a server came back
    assert handoffs.next()[0] == inbox / "kept.yaml"
    handoffs.none_within(SETTLE * 2)


def test_rescan_finds_a_file_whose_events_were_missed(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    intake = make_intake(handoffs, settle_seconds=SETTLE, use_observer=False, poll_interval=3600)
    assert intake.wait_scanned(10)  # the startup scan is over: nothing will look again
    make_old(write(inbox / "missed.yaml"))
    handoffs.none_within(0.2)
    intake.rescan()
    assert handoffs.next()[0] == inbox / "missed.yaml"


# -- ready markers -------------------------------------------------------------------------------------


def test_ready_marker_mode_hands_over_a_file_only_once_its_marker_exists(inbox: Path, make_intake: MakeIntake) -> None:
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=0.1, ready_marker=True)
    write(inbox / "a.yaml", b"a")
    handoffs.none_within(0.5)  # complete, but no marker yet

    (inbox / "a.yaml.ready").touch()
    assert handoffs.next()[:2] == (inbox / "a.yaml", b"a")
    wait_until(lambda: not (inbox / "a.yaml.ready").exists())
    assert (inbox / "a.yaml").exists()  # the file is left to on_ready's claim


def test_ready_marker_without_its_file_is_left_alone_until_the_file_arrives(
    inbox: Path, make_intake: MakeIntake
) -> None:
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=0.1, ready_marker=True)
    write(inbox / "b.csv.ready", b"any content")
    handoffs.none_within(0.5)
    assert (inbox / "b.csv.ready").exists()

    write(inbox / "b.csv", b"prompt\nfox\n")
    assert handoffs.next()[:2] == (inbox / "b.csv", b"prompt\nfox\n")
    wait_until(lambda: not (inbox / "b.csv.ready").exists())


def test_ready_marker_mode_startup_scan_takes_marked_files_only(inbox: Path, make_intake: MakeIntake) -> None:
    write(inbox / "marked.yaml")
    (inbox / "marked.yaml.ready").touch()
    write(inbox / "unmarked.yaml")
    handoffs = Handoffs()
    make_intake(handoffs, settle_seconds=0.1, ready_marker=True, use_observer=False, poll_interval=0.05)

    assert handoffs.next()[0] == inbox / "marked.yaml"
    handoffs.none_within(0.5)
    assert not (inbox / "marked.yaml.ready").exists()


# -- threads, errors, modes ----------------------------------------------------------------------------


def test_stop_joins_every_thread_it_started(inbox: Path) -> None:
    before = set(threading.enumerate())
    handoffs = Handoffs()
    intake = Intake(inbox, handoffs, settle_seconds=SETTLE, poll_interval=0.05)
    intake.start()
    assert intake.healthy()
    assert len(set(threading.enumerate()) - before) >= 2  # observer thread(s) and the settle thread
    write(inbox / "a.yaml")
    handoffs.next()

    intake.stop()
    assert set(threading.enumerate()) == before
    assert not intake.healthy()
    intake.stop()  # idempotent


def test_context_manager_starts_and_stops(inbox: Path) -> None:
    before = set(threading.enumerate())
    handoffs = Handoffs()
    with Intake(inbox, handoffs, settle_seconds=SETTLE) as intake:
        assert intake.healthy()
        write(inbox / "a.yaml")
        handoffs.next()
    assert set(threading.enumerate()) == before


def test_on_ready_exception_is_logged_and_does_not_stop_the_intake(
    inbox: Path, make_intake: MakeIntake, caplog: pytest.LogCaptureFixture
) -> None:
    handoffs = Handoffs(fail_first=1)
    with caplog.at_level(logging.ERROR, logger="hotfolder.watch"):
        intake = make_intake(handoffs, settle_seconds=SETTLE)
        write(inbox / "bad.yaml")
        assert handoffs.next()[0] == inbox / "bad.yaml"
        write(inbox / "good.yaml")
        assert handoffs.next()[0] == inbox / "good.yaml"
    assert intake.healthy()
    assert any("bad.yaml" in r.getMessage() and r.exc_info for r in caplog.records)


def test_polling_mode_finds_new_files_without_an_observer(inbox: Path, make_intake: MakeIntake) -> None:
    before = set(threading.enumerate())
    handoffs = Handoffs()
    intake = make_intake(handoffs, settle_seconds=0.2, use_observer=False, poll_interval=0.05)
    assert [t.name for t in set(threading.enumerate()) - before] == ["hotfolder-intake"]
    write(inbox / "a.yaml", b"polled")

    assert handoffs.next()[:2] == (inbox / "a.yaml", b"polled")
    handoffs.none_within(0.5)
    assert intake.healthy()


def test_pending_count_is_zero_only_once_every_file_is_handed_over(inbox: Path) -> None:
    write(inbox / "fresh.yaml")  # fresh mtime: found by the startup scan, then settles
    handoffs = Handoffs()
    with Intake(inbox, handoffs, settle_seconds=SETTLE, use_observer=False) as intake:
        assert intake.pending_count() >= 1  # counted from start(), before the scan has even run
        wait_until(lambda: intake.pending_count() == 1)  # scanned, waiting to settle
        assert handoffs.next()[0] == inbox / "fresh.yaml"
        wait_until(lambda: intake.pending_count() == 0)


def test_start_refuses_a_missing_inbox(tmp_path: Path) -> None:
    intake = Intake(tmp_path / "nope", Handoffs())
    with pytest.raises(ConfigError, match="nope"):
        intake.start()
    intake.stop()


@linux_only
def test_moves_out_of_the_inbox_do_not_hold_back_later_events(make_intake: MakeIntake) -> None:
    # watchdog holds an unpaired move-out for 0.5 s and everything queued behind it; every claim is one.
    # Checked structurally (timing is the benchmark's job): the intake must have switched that delay off.
    intake = make_intake(Handoffs(), settle_seconds=SETTLE)
    assert watch._unblock_moves_out(intake._observer)  # noqa: SLF001


# -- a writer that has not closed the file ----------------------------------------------------------


@linux_only
@pytest.mark.parametrize("use_observer", [True, False], ids=["observer", "polling"])
def test_a_file_still_open_for_writing_at_start_is_not_taken_until_its_writer_closes_it(
    inbox: Path, make_intake: MakeIntake, use_observer: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = inbox / "half.yaml"
    writer = open(path, "wb")  # noqa: SIM115 - held open on purpose, like a copy under way
    try:
        writer.write(b"prompt: a red")
        writer.flush()
        make_old(path)  # old enough that the startup scan would take it at once
        if hotfolder_paths.open_for_writing(path) is None:
            pytest.skip("this filesystem gives no read leases")
        handoffs = Handoffs()
        with caplog.at_level(logging.INFO, logger="hotfolder.watch"):
            make_intake(handoffs, settle_seconds=SETTLE, use_observer=use_observer, poll_interval=0.05)
            wait_until(lambda: "still has it open for writing" in caplog.text)
            handoffs.none_within(3 * SETTLE)  # looked at again at least twice, still open
        writer.write(b" fox\n")
    finally:
        writer.close()
    handed, data, _ = handoffs.next()
    assert handed == path and data == b"prompt: a red fox\n"
