"""`hotfolder run` as a real process watching a real inbox, against the test ComfyUI server.

The same cases run against a real ComfyUI in test_integration_comfyui.py when COMFYUI_URL is set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.scenarios import BAD_INPUTS, GOOD_INPUTS, check_good_results, write_inputs

pytestmark = pytest.mark.timeout(240)


def start_daemon(project: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    env.update({"HOTFOLDER_SETTLE_SECONDS": "0.2", "HOTFOLDER_POLL_INTERVAL": "0.5", "HOTFOLDER_LOST_GRACE": "2"})
    return subprocess.Popen(
        [sys.executable, "-m", "hotfolder", "--server", url, "--default-template", "invert", "run", *extra],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def settled(project: Path, names: list[str]) -> bool:
    done, failed = project / "inbox" / "done", project / "inbox" / "failed"
    return all((done / n).exists() or (failed / n).exists() for n in names)


@pytest.mark.both_profiles
def test_daemon_processes_every_format_and_every_bad_input(project: Path, comfy) -> None:
    proc = start_daemon(project, comfy.url)
    try:
        good = write_inputs(project, GOOD_INPUTS)
        bad = write_inputs(project, BAD_INPUTS)
        # ignored things: a directory, a symlink, a dot file, a .part file
        (project / "inbox" / "a-folder").mkdir()
        (project / "inbox" / "link.yaml").symlink_to(project / "templates" / "invert.toml")
        (project / "inbox" / ".hidden.yaml").write_text("params: {}\n")
        (project / "inbox" / "upload.yaml.part").write_text("params: {}\n")
        wait_until(lambda: settled(project, good + bad), timeout=150, message="all inputs archived")
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    check_good_results(project, good)
    for name in bad:
        error_file = project / "inbox" / "failed" / f"{name}.error.json"
        assert error_file.is_file(), f"{name} has no error file\n{log}"
        error = json.loads(error_file.read_text())
        assert error["message"] and error["file"] == name, error
        assert BAD_INPUTS[name][1] in json.dumps(error, ensure_ascii=False), (name, error)
    inbox = project / "inbox"
    assert (inbox / "a-folder").is_dir() and (inbox / "link.yaml").is_symlink()
    assert (inbox / ".hidden.yaml").exists() and (inbox / "upload.yaml.part").exists()
    assert "Traceback" not in log


def test_part_file_renamed_into_place_is_taken(project: Path, comfy) -> None:
    proc = start_daemon(project, comfy.url)
    try:
        part = project / "inbox" / "late.yaml.part"
        part.write_text("params: {width: 9}\n")
        part.rename(project / "inbox" / "late.yaml")
        wait_until(lambda: settled(project, ["late.yaml"]), message="late.yaml archived")
    finally:
        stop(proc)
    assert (project / "inbox" / "done" / "late.yaml").exists()


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(project: Path, comfy) -> None:
    comfy.faults.node_delay("ImageInvert", 0.4)
    names = [f"k{i}.yaml" for i in range(6)]
    for i, name in enumerate(names):
        (project / "inbox" / name).write_text(f"params: {{width: {10 + i}}}\n")
    proc = start_daemon(project, comfy.url)
    wait_until(lambda: len(comfy.executed_prompt_ids) >= 2, message="two prompts running")
    stop(proc, signal.SIGKILL)
    proc = start_daemon(project, comfy.url)
    try:
        wait_until(lambda: settled(project, names), timeout=120, message="all archived after restart")
    finally:
        stop(proc)
    assert sorted(p.name for p in (project / "inbox" / "done").iterdir()) == sorted(names)
    published = [p for p in (project / "outbox").iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in published) == sorted(n[:-5] for n in names)
    assert len(comfy.executed_prompt_ids) == len(set(comfy.executed_prompt_ids)) == 6


@pytest.mark.slow
def test_sigterm_exits_zero_and_leaves_jobs_to_resume(project: Path, comfy) -> None:
    comfy.faults.node_delay("ImageInvert", 2.0)
    (project / "inbox" / "t.yaml").write_text("params: {width: 8}\n")
    proc = start_daemon(project, comfy.url)
    wait_until(lambda: comfy.executed_prompt_ids, message="prompt running")
    log = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, log
    assert not (project / "inbox" / "failed").exists() or not any((project / "inbox" / "failed").iterdir())
    comfy.faults.clear()
    proc = start_daemon(project, comfy.url)
    try:
        wait_until(lambda: settled(project, ["t.yaml"]), message="t.yaml archived after restart")
    finally:
        stop(proc)
    assert (project / "inbox" / "done" / "t.yaml").exists()
    assert len(comfy.executed_prompt_ids) == 1


def test_a_bug_while_taking_one_file_does_not_stop_the_daemon_or_lose_the_file(project: Path, comfy) -> None:
    from hotfolder import failpoints
    from hotfolder.daemon import run_daemon
    from tests.conftest import make_settings

    (project / "inbox" / "a.yaml").write_text("params: {width: 8}\n")
    (project / "inbox" / "b.yaml").write_text("params: {width: 9}\n")
    calls = []

    def boom() -> None:  # the first claim meets a bug (any exception that is not an OSError)
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")

    failpoints.on("claim_checked", boom)
    try:
        counts = run_daemon(make_settings(project, comfy.url), once=True)
    finally:
        failpoints.on("claim_checked", None)
    assert counts["files_done"] == 1
    left = sorted(p.name for p in (project / "inbox").iterdir() if p.suffix == ".yaml")
    done = sorted(p.name for p in (project / "inbox" / "done").iterdir())
    assert len(left) == 1 and len(done) == 1 and sorted(left + done) == ["a.yaml", "b.yaml"]
