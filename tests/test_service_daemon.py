"""The daemon as a systemd service: a real process with a real notify socket, signals and status."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from hotfolder.testing import ComfyTestServer
from tests.conftest import invoke_cli, wait_until

pytestmark = pytest.mark.timeout(120)

SLEEPY = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": "{{ color }}"}},
    "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": "{{ seconds }}"}, "_meta": {"title": "Nap"}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sleepy", "images": ["2", 0]}},
}


def start(project: Path, url: str, env: dict[str, str] | None = None, *args: str,
          log: IO[str] | int = subprocess.PIPE) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HOTFOLDER_", "NOTIFY_", "WATCHDOG_"))}
    full.update({"HOTFOLDER_SETTLE_SECONDS": "0.1", "HOTFOLDER_POLL_INTERVAL": "0.5", "HOTFOLDER_STATUS_INTERVAL": "0.2"})
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "hotfolder", *args, "--server", url, "run"], cwd=project, env=full,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return out


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(line in m.splitlines() for m in self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} in {self.messages}")
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue


def test_daemon_tells_systemd_ready_watchdog_status_and_stopping(project: Path, comfy: ComfyTestServer, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    names = [f"x{i:03d}.yaml" for i in range(500)]  # a scan long enough that one after READY could not win the race below
    for i, name in enumerate(names):
        (project / "inbox" / name).write_text("template: invert\n")
        os.utime(project / "inbox" / name, (time.time() - 600 + i,) * 2)  # settled: handed over by the scan itself
    log_path = tmp_path / "daemon.log"  # a file, not a pipe: the daemon never waits for the test to read its lines
    with log_path.open("w") as log:
        proc = start(project, comfy.url, {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}, "-v", log=log)
    try:
        notify.wait_for("READY=1")
        logged = log_path.read_text()  # every line logged before READY was sent
        # READY comes only after the startup scan: every file present at start was already handed over
        handed = set(re.findall(r"Ready \(found[^)]*\): \S*/(x\d+\.yaml)$", logged, re.M))
        assert handed == set(names), f"READY was sent before the startup scan handed over {len(set(names) - handed)} file(s)"
        notify.wait_for("WATCHDOG=1")
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in notify.messages)
        wait_until(lambda: (project / "inbox" / "done" / "x000.yaml").exists(), message="x000.yaml done")
    finally:
        finish(proc)
    notify.wait_for("STOPPING=1")
    assert proc.returncode == 0, log_path.read_text()[-3000:]


def test_sighup_with_a_broken_config_keeps_the_old_one(project: Path, comfy: ComfyTestServer) -> None:
    config = project / "hotfolder.toml"
    config.write_text('default_template = "invert"\n')
    proc = start(project, comfy.url, None, "--config", str(config))
    lines: list[str] = []  # read all along: each SIGHUP must be answered before the next is sent
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()

    def said(text: str) -> bool:
        return any(text in line for line in list(lines))

    try:
        (project / "inbox" / "a.yaml").write_text("params: {width: 8}\n")
        wait_until(lambda: (project / "inbox" / "done" / "a.yaml").exists(), message="a done")
        config.write_text("default_template = \n")  # not TOML
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: said("not valid TOML"), message="the bad reload refused")
        (project / "inbox" / "b.yaml").write_text("params: {width: 9}\n")
        wait_until(lambda: (project / "inbox" / "done" / "b.yaml").exists(), message="b done after a bad reload")
        config.write_text('default_template = "invert"\njob_timeout = 99\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: said("configuration reloaded; changed: job_timeout"), message="the good reload")
        (project / "inbox" / "c.yaml").write_text("params: {width: 10}\n")
        wait_until(lambda: (project / "inbox" / "done" / "c.yaml").exists(), message="c done after a good reload")
        (project / "plugins" / "broken.py").write_text("def oops(:\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: said("broken.py"), message="the broken plugin refused")
        (project / "inbox" / "d.yaml").write_text("params: {width: 11}\n")
        wait_until(lambda: (project / "inbox" / "done" / "d.yaml").exists(), message="d done after a broken plugin")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "new configuration or plugins are refused" in out


def test_status_shows_a_running_jobs_progress(project: Path, comfy: ComfyTestServer) -> None:
    (project / "templates" / "sleepy.json").write_text(json.dumps(SLEEPY))
    (project / "inbox" / "nap.yaml").write_text("template: sleepy\nparams: {color: 1, seconds: 4}\n")
    proc = start(project, comfy.url, {"HOTFOLDER_STOP_BUDGET": "0.5"})  # the stop need not wait for the nap
    try:
        def progressing() -> bool:
            path = next((project / "inbox" / ".hotfolder" / "status").glob("*.json"), None)
            if path is None:
                return False
            running = json.loads(path.read_text()).get("running") or []
            return any(job.get("node") == "2" and (job.get("percent") or 0) > 0 for job in running)

        wait_until(progressing, timeout=30, message="progress in the status file")
        result = invoke_cli("status", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "nap.yaml" in result.stdout and "%" in result.stdout
        as_json = json.loads(invoke_cli("status", "--json", cwd=project).stdout)
        assert as_json["running"][0]["file"] == "nap.yaml"
    finally:
        finish(proc)
    stopped = invoke_cli("status", cwd=project)
    assert stopped.returncode == 1


def test_sigterm_lets_a_running_job_finish_within_the_budget(project: Path, comfy: ComfyTestServer) -> None:
    (project / "templates" / "sleepy.json").write_text(json.dumps(SLEEPY))
    (project / "inbox" / "short.yaml").write_text("template: sleepy\nparams: {color: 2, seconds: 1.5}\n")
    proc = start(project, comfy.url)
    try:
        wait_until(lambda: comfy.executed_prompt_ids, message="job running")
    finally:
        out = finish(proc)
    assert proc.returncode == 0, out
    assert (project / "inbox" / "done" / "short.yaml").exists(), out
    # the watcher is stopped on purpose while the job finishes: no health alarm for it
    assert "Not sending watchdog pings" not in out, out


def test_sigterm_sends_no_new_prompt_and_a_job_waiting_for_its_place_resumes_at_the_next_start(
        project: Path, comfy: ComfyTestServer) -> None:
    """A stopping daemon lets the prompt it sent finish and sends no new one: the job that waited for the
    in-flight place (queue_depth 1) stays recorded, unsent, and runs after the restart."""
    (project / "templates" / "sleepy.json").write_text(json.dumps(SLEEPY))
    for i, name in enumerate(("first.yaml", "second.yaml")):
        (project / "inbox" / name).write_text(f"template: sleepy\nparams: {{color: {i + 1}, seconds: 3}}\n")
    posts = lambda: [r for r in comfy.requests if r.method == "POST" and r.path == "/prompt"]  # noqa: E731
    proc = start(project, comfy.url, {"HOTFOLDER_QUEUE_DEPTH": "1"})
    try:
        wait_until(lambda: comfy.executed_prompt_ids, message="the first job running")
        wait_until(lambda: len(list((project / "inbox" / ".hotfolder").glob("*/*/job.json"))) == 2,
                   message="both files claimed")
    finally:
        out = finish(proc)
    assert proc.returncode == 0, out
    assert len(posts()) == 1, out  # the second job was not sent after SIGTERM
    assert len(list((project / "inbox" / "done").iterdir())) == 1, out
    assert len(list((project / "inbox" / ".hotfolder").glob("*/*/job.json"))) == 1, "the unsent job is not recorded"
    proc = start(project, comfy.url)
    try:
        wait_until(lambda: len(list((project / "inbox" / "done").iterdir())) == 2, timeout=60,
                   message="both done after the restart")
    finally:
        finish(proc)
    assert len(posts()) == 2 and len(set(comfy.executed_prompt_ids)) == 2


def test_systemd_unit_command_prints_a_unit_for_the_config(project: Path) -> None:
    (project / "hotfolder.toml").write_text('servers = ["http://127.0.0.1:8188"]\n')
    result = invoke_cli("--config", "hotfolder.toml", "systemd-unit", "--user", "render", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in result.stdout and "User=render" in result.stdout
    assert f"--config {project / 'hotfolder.toml'}" in result.stdout or str(project / "hotfolder.toml") in result.stdout
    no_config = invoke_cli("systemd-unit", cwd=project.parent)
    assert no_config.returncode == 1 and "hotfolder.toml" in no_config.stderr


@pytest.mark.slow
def test_sigterm_past_the_stop_budget_leaves_jobs_recorded_and_they_finish_after_a_restart(
        project: Path, comfy: ComfyTestServer) -> None:
    (project / "templates" / "sleepy.json").write_text(json.dumps(SLEEPY))
    names = [f"long{i}.yaml" for i in range(3)]
    for i, name in enumerate(names):
        (project / "inbox" / name).write_text(f"template: sleepy\nparams: {{color: {10 + i}, seconds: 2}}\n")
    proc = start(project, comfy.url, {"HOTFOLDER_STOP_BUDGET": "0.3"})
    try:
        wait_until(lambda: comfy.executed_prompt_ids, message="first job running")
    finally:
        out = finish(proc)
    assert proc.returncode == 0, out
    assert "Stop budget of 0.3 s used up" in out
    failed = project / "inbox" / "failed"
    assert not failed.exists() or not any(failed.iterdir()), "a stop sent files to failed/"
    assert list((project / "inbox" / ".hotfolder").glob("*/*/job.json")), "nothing left recorded"
    proc = start(project, comfy.url)
    try:
        wait_until(lambda: all((project / "inbox" / "done" / n).exists() for n in names), timeout=60,
                   message="all done after the restart")
    finally:
        finish(proc)
    published = sorted(p.name for p in (project / "outbox").iterdir() if not p.name.startswith("."))
    assert published == ["long0", "long1", "long2"]
    assert len(comfy.executed_prompt_ids) == len(set(comfy.executed_prompt_ids)) == 3
