"""`hotfolder process`: what it refuses, and what it shows on a terminal and in a pipe."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hotfolder.cli import _step
from hotfolder.testing import ComfyTestServer
from tests.conftest import invoke_cli

SLEEPY = {  # a node that reports float progress (TestSleep), so the display has steps to show
    "1": {"class_type": "EmptyImage", "inputs": {"width": "{{ width }}", "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.3}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sleepy", "images": ["2", 0]}},
}
ROWS = "template,width\nsleepy,8\nsleepy,0\nsleepy,9\n"  # three jobs; the second is refused by the server


@pytest.mark.timeout(30)
def test_process_refuses_what_is_not_a_regular_file_with_exit_1_and_never_blocks(project: Path) -> None:
    os.mkfifo(project / "pipe.yaml")
    (project / "folder.yaml").mkdir()
    (project / "real.yaml").write_text("params: {width: 8}\n")
    (project / "link.yaml").symlink_to(project / "real.yaml")
    cases = {
        "pipe.yaml": "FIFO",
        "/dev/null": "device",
        "folder.yaml": "directory",
        "link.yaml": "symbolic link",
        "missing.yaml": "does not exist",
    }
    for name, why in cases.items():
        result = invoke_cli("--server", "http://127.0.0.1:9", "--inbox", str(project / "inbox"),
                            "--outbox", str(project / "outbox"), "process", str(project / name), cwd=project)
        assert result.returncode == 1, (name, result.stderr)
        assert name in result.stderr and why in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert not any((project / "outbox").iterdir())


@pytest.mark.both_profiles
def test_piped_output_is_one_line_per_job_event_without_carriage_returns(
        project: Path, comfy: ComfyTestServer) -> None:
    (project / "templates" / "sleepy.json").write_text(json.dumps(SLEEPY))
    (project / "rows.csv").write_text(ROWS)
    result = invoke_cli("--server", comfy.url, "process", "rows.csv", cwd=project)
    assert result.returncode == 1, result.stderr
    out = result.stdout + result.stderr
    assert "\r" not in out and not re.search(r"node \S+ \d", out)  # no bar, no per-step lines
    lines = result.stderr.splitlines()
    for job in ("rows-001", "rows-003"):
        assert sum(1 for line in lines if line.startswith("started") and job in line) == 1, lines
        assert sum(1 for line in lines if line.startswith("done") and job in line) == 1, lines
    assert sum(1 for line in lines if line.startswith("failed") and "rows-002" in line) == 1, lines
    assert not any("ERROR" in line for line in lines), lines  # the summary has the whole error, once
    assert len(lines) < 20, lines


def _run_in_pty(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m hotfolder ARGS`` with stdin, stdout and stderr on a pseudo-terminal (120 columns)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    env.pop("COLUMNS", None)
    process = subprocess.Popen([sys.executable, "-m", "hotfolder", *args], cwd=cwd, env=env,
                               stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.both_profiles
def test_on_a_terminal_one_bar_counts_jobs_with_integer_steps_and_logs_above_it(
        project: Path, comfy: ComfyTestServer) -> None:
    (project / "templates" / "sleepy.json").write_text(json.dumps(SLEEPY))
    (project / "rows.csv").write_text(ROWS)
    status, out = _run_in_pty(["--server", comfy.url, "-v", "process", "rows.csv"], project)  # -v: every step logged
    assert status == 1, out
    shown = [segment.split("\r")[-1] for segment in out.replace("\r\n", "\n").split("\n")]  # what each row shows
    assert "3/3" in out and "1/1" not in out  # jobs counted, not files
    steps = re.findall(r"node 2 (\S+)", out)  # the running node and its step...
    assert steps and all(re.fullmatch(r"\d+(/\d+|%)", step) for step in steps), steps  # ...as integers
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    plain = uuid.sub("<prompt id>", out)  # a prompt id may hold "e-0" (CI saw "...932e-0428...")
    assert "e-0" not in plain and ".0/" not in plain  # no float steps (1e-05, 3.0/20)
    logged = [line for line in shown if " INFO " in line]
    assert len(logged) >= 6 and all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in logged), shown  # own lines
    assert [line for line in shown if line.startswith("failed   rows.csv rows-002: ")], shown


numbers = st.one_of(st.floats(), st.integers(min_value=-10**30, max_value=10**30), st.none(), st.text(max_size=5))


@given(value=numbers, total=numbers)
@example(value=5e-07, total=2)  # the report: "node 2 5e-07/2"
@example(value=3.0, total=20.0)
@example(value=float("nan"), total=0.3)
def test_a_step_is_shown_as_integers_whatever_the_server_reports(value: object, total: object) -> None:
    shown = _step({"value": value, "max": total})
    assert re.fullmatch(r"\d+/\d+|\d+%|\?", shown), shown
    if shown.endswith("%"):
        assert 0 <= int(shown[:-1]) <= 100
    elif "/" in shown:
        done, of = map(int, shown.split("/"))
        assert 0 <= done <= of


@pytest.mark.parametrize("name", ["job.json", "new\nline.yaml", "tab\there.yaml"])
def test_a_file_done_under_a_safe_name_is_reported_done_not_as_not_processed(
        project: Path, comfy: ComfyTestServer, name: str) -> None:
    """The engine names a file by its safe name (``_job.json``, ``new_line.yaml``); the summary must
    still match it to the file it was given, not count it as swapped away and exit 1."""
    text = '{"params": {"width": 8}}\n' if name.endswith(".json") else "params: {width: 8}\n"
    (project / name).write_text(text)
    result = invoke_cli("--server", comfy.url, "--default-template", "invert", "process", name, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not processed" not in result.stdout + result.stderr


@pytest.mark.timeout(30)
def test_render_refuses_what_is_not_a_regular_file_and_never_blocks_or_reads_without_end(project: Path) -> None:
    """Like process: a FIFO blocked 'hotfolder render' forever and /dev/zero was read until memory ran out."""
    os.mkfifo(project / "pipe.yaml")
    (project / "big.yaml").write_bytes(b"params: {width: 8}\n" + b"#" * 2048)
    for target, why in ((project / "pipe.yaml", "not a regular file"), (Path("/dev/zero"), "not a regular file"),
                        (project / "big.yaml", "over the limit")):
        result = invoke_cli("--server", "http://127.0.0.1:9", "--inbox", str(project / "inbox"),
                            "--outbox", str(project / "outbox"), "render", str(target),
                            cwd=project, env={"HOTFOLDER_MAX_FILE_SIZE": "1024"})
        assert result.returncode == 1, (target, result.stderr)
        assert why in result.stderr and "Traceback" not in result.stderr, (target, result.stderr)
