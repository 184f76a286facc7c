"""The intake's settle clocks (hotfolder.settle), without an inbox or watchdog."""

from __future__ import annotations

import time
from pathlib import Path

from hotfolder.settle import CLOSE_GRACE, Settling, Sig, file_sig

A = Sig(1, 10, 5, 1000)
B = Sig(1, 10, 6, 2000)


def test_a_file_is_due_once_unchanged_for_settle_seconds_and_then_no_longer_pending() -> None:
    settling = Settling(0.0)
    settling.track("a.yaml", A, reoffer_before=12.5)
    assert "a.yaml" in settling and len(settling) == 1
    assert settling.pop_due(lambda name: A) == ("a.yaml", A, 12.5)
    assert "a.yaml" not in settling and settling.pop_due(lambda name: A) is None


def test_a_file_that_changed_or_went_away_is_not_handed_as_settled() -> None:
    settling = Settling(30.0)
    settling.track("a.yaml", A, reoffer_before=None)
    assert settling.pop_due(lambda name: A) is None  # not quiet for 30 s yet
    deadline = settling.next_deadline()
    assert deadline is not None and deadline > time.monotonic() + 25
    gone = Settling(0.0)
    gone.track("a.yaml", A, reoffer_before=None)
    assert gone.pop_due(lambda name: None) == ("a.yaml", None, None) and len(gone) == 0
    changed = Settling(0.0)
    changed.track("a.yaml", A, reoffer_before=None)
    assert changed.pop_due(lambda name: B) == ("a.yaml", B, None)  # its clock restarted with the new size


def test_a_file_written_on_this_machine_waits_for_its_close_up_to_the_grace() -> None:
    settling = Settling(0.0)
    settling.track("a.yaml", A, reoffer_before=None, local_writer=True)
    assert settling.pop_due(lambda name: A) is None
    deadline = settling.next_deadline()
    assert deadline is not None and deadline > time.monotonic() + CLOSE_GRACE - 5
    settling.drop("a.yaml")
    assert settling.next_deadline() is None


def test_file_sig_is_none_for_anything_but_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    sig = file_sig(tmp_path / "f")
    assert sig is not None and sig.size == 5
    assert file_sig(tmp_path / "link") is None and file_sig(tmp_path) is None and file_sig(tmp_path / "no") is None
