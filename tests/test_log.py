"""Log formats: text, JSON lines, and journald priority prefixes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder.errors import ConfigError
from hotfolder.log import configure_logging, priority, stream_is_journal

log = logging.getLogger("hotfolder.test_log")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger("hotfolder")
    saved = (root.handlers[:], root.level, root.propagate)
    try:
        yield
    finally:
        root.handlers[:], root.level, root.propagate = saved


@pytest.fixture
def journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.TextIOWrapper]:
    """A file standing in for journald's stream: JOURNAL_STREAM names its device and inode."""
    with open(tmp_path / "journal", "w+", encoding="utf-8") as fh:
        st = os.fstat(fh.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield fh


def lines_of(fh: io.TextIOWrapper) -> list[str]:
    fh.flush()
    fh.seek(0)
    return fh.read().splitlines()


def test_text_format_has_time_level_logger_and_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging(0, stream=out)
    log.info("[%s %s] published", "a.yaml", "a-001")
    log.debug("hidden at verbosity 0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    hotfolder.test_log: \[a.yaml a-001\] published\n",
                        out.getvalue())


def test_json_format_has_fields_and_the_record_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging(1, fmt="json", stream=out)
    log.info("submitted to %s", "http://gpu1:8188", extra={"file": "a.yaml", "job": "a-001", "job_id": "J1"})
    log.debug("no extras")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("internal error", extra={"file": "b.yaml"})
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("time"))
    assert first == {"level": "INFO", "logger": "hotfolder.test_log", "message": "submitted to http://gpu1:8188",
                     "file": "a.yaml", "job": "a-001", "job_id": "J1"}
    assert set(second) == {"time", "level", "logger", "message"} and second["level"] == "DEBUG"
    assert third["file"] == "b.yaml" and "ValueError: boom" in third["exception"]


def test_journal_stream_drops_timestamps_and_prefixes_priorities(journal_file: io.TextIOWrapper) -> None:
    configure_logging(0, stream=journal_file)
    log.info("claimed")
    log.warning("server away")
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        log.exception("failed")
    lines = lines_of(journal_file)
    assert lines[:3] == ["<6>hotfolder.test_log: claimed", "<4>hotfolder.test_log: server away",
                         "<3>hotfolder.test_log: failed"]
    assert all(line.startswith("<3>") for line in lines[3:])  # the traceback keeps the error priority
    assert lines[-1] == "<3>  RuntimeError: bad"  # traceback lines are indented: none passes for a record


def test_json_under_journald_keeps_one_json_object_after_the_prefix(journal_file: io.TextIOWrapper) -> None:
    configure_logging(0, fmt="json", stream=journal_file)
    log.error("failed", extra={"file": "a.yaml"})
    (line,) = lines_of(journal_file)
    assert line.startswith("<3>{")
    assert json.loads(line[3:])["file"] == "a.yaml"


def test_journal_stream_of_another_file_is_ignored(journal_file: io.TextIOWrapper, tmp_path: Path) -> None:
    with open(tmp_path / "redirected.log", "w+", encoding="utf-8") as other:
        assert not stream_is_journal(other)
        configure_logging(0, stream=other)
        log.info("hello")
        (line,) = lines_of(other)
    assert not line.startswith("<") and line.endswith("hotfolder.test_log: hello")
    assert stream_is_journal(journal_file)
    assert not stream_is_journal(io.StringIO())  # no file descriptor


def test_configure_logging_keeps_its_verbosity_levels_and_refuses_unknown_formats() -> None:
    configure_logging(-1)
    assert logging.getLogger("hotfolder").level == logging.WARNING
    configure_logging()
    assert logging.getLogger("hotfolder").level == logging.INFO
    configure_logging(2)
    assert logging.getLogger("hotfolder").level == logging.DEBUG
    with pytest.raises(ConfigError, match="Unknown log format 'xml'"):
        configure_logging(0, fmt="xml")
    assert [priority(level) for level in (5, 10, 20, 25, 30, 40, 50)] == [7, 7, 6, 6, 4, 3, 2]
