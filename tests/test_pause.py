"""Pause and resume: ``inbox/PAUSE`` (``hotfolder pause`` / ``resume``) holds every POST /prompt while
files are still claimed, rendered and recorded and running prompts finish; it holds across a daemon
killed and started again; resuming runs what waited; the PAUSE file itself is never taken."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from hotfolder.engine.pause import PAUSE_NAME
from hotfolder.status_file import read_all_status
from hotfolder.testing import ComfyTestServer
from hotfolder.watch import is_candidate
from tests.conftest import invoke_cli, wait_until
from tests.test_faults import archived, audit, daemon, drop, kill

#: A broken pause would have sent a held job's POST well within this (they go out in milliseconds).
MARGIN = 0.5


def posts(comfy: ComfyTestServer) -> int:
    return sum(1 for r in comfy.requests if r.method == "POST" and r.path == "/prompt")


def snapshot(project: Path) -> dict[str, Any]:
    found = read_all_status(project / "inbox" / ".hotfolder")
    return next(iter(found.values()), {})


def rendered(project: Path, name: str) -> bool:
    """Whether ``name`` was claimed into a job folder, its job rendered and recorded, still pending."""
    for record in (project / "inbox" / ".hotfolder").glob("*/*/job.json"):
        data = json.loads(record.read_text())
        if data.get("input") == name and data["jobs"]:
            return all(job["state"] == "pending" and (record.parent / f"workflow-{job['index']:03d}.json").exists()
                       for job in data["jobs"])
    return False


def held_for_a_while(project: Path, names: list[str], pid: int, *, shown: list[str]) -> dict[str, Any]:
    """Wait until ``names`` are claimed and rendered and the daemon ``pid`` says it is paused with ``shown``
    waiting, in a status written at least MARGIN seconds after; return that status. (A file resumed from
    a job folder is not listed as waiting.)"""
    wait_until(lambda: all(rendered(project, n) for n in names), message=f"{names} claimed, rendered and still pending")
    since = time.time()

    def written() -> dict[str, Any] | None:
        snap = snapshot(project)
        waiting = {w["file"] for w in snap.get("waiting_files") or []}
        ok = (snap.get("pid") == pid and snap.get("paused") and set(shown) <= waiting
              and snap.get("updated_unix", 0) >= since + MARGIN)
        return snap if ok else None

    return wait_until(written, message=f"{shown} waiting in a paused daemon's status")  # type: ignore[return-value]


def test_the_pause_file_is_never_a_scenario() -> None:
    assert not is_candidate(PAUSE_NAME)
    assert is_candidate("PAUSE.yaml")


@pytest.mark.slow
def test_pause_holds_submissions_across_a_daemon_restart_and_resume_continues(
        project: Path, comfy: ComfyTestServer) -> None:
    inbox, done = project / "inbox", project / "inbox" / "done"
    cli = ("--server", comfy.url)
    comfy.faults.node_delay("ImageInvert", 1.5)
    env = {"HOTFOLDER_STATUS_INTERVAL": "0.2"}
    proc = daemon(project, comfy.url, extra_env=env)
    try:
        drop(project, ["a.yaml", "x.yaml"])  # one runs, the other waits in the server's queue behind it
        wait_until(lambda: comfy.executed_prompt_ids and posts(comfy) == 2, message="one running, one queued")
        out = invoke_cli(*cli, "pause", cwd=project)
        assert out.returncode == 0 and "paused" in out.stdout, out
        assert (inbox / PAUSE_NAME).is_file()
        wait_until(lambda: snapshot(project).get("paused"), message="the daemon paused")
        assert not list(done.glob("*.yaml")), "a prompt finished before the pause took hold: make it slower"
        comfy.faults.node_delay("ImageInvert", 5)  # the second prompt still runs when the daemon is killed

        drop(project, ["b.yaml"])
        wait_until(lambda: len(list(done.glob("*.yaml"))) == 1, message="the running prompt published while paused")
        wait_until(lambda: len(comfy.executed_prompt_ids) == 2, message="the queued prompt running")
        snap = held_for_a_while(project, ["b.yaml"], proc.pid, shown=["b.yaml"])
        assert posts(comfy) == 2, "a job was submitted while paused"
        assert "PAUSED" in snap["summary"]
        status = invoke_cli(*cli, "status", cwd=project)
        assert "PAUSED" in status.stdout, status.stdout

        # killed while the second prompt runs: the next daemon follows it to its end, still paused
        assert len(list(done.glob("*.yaml"))) == 1
        kill(proc)
        comfy.faults.node_delay("ImageInvert", 0.05)
        proc = daemon(project, comfy.url, extra_env=env)
        drop(project, ["c.yaml"])
        held_for_a_while(project, ["b.yaml", "c.yaml"], proc.pid, shown=["c.yaml"])
        wait_until(lambda: (done / "a.yaml").exists() and (done / "x.yaml").exists(),
                   message="the prompt running at the kill published by the next daemon while paused")
        assert posts(comfy) == 2, "a job was submitted while paused, after the restart"
        assert (inbox / PAUSE_NAME).is_file() and not list((inbox / "failed").iterdir())

        out = invoke_cli(*cli, "resume", cwd=project)
        assert out.returncode == 0 and "resumed" in out.stdout, out
        names = ["a.yaml", "x.yaml", "b.yaml", "c.yaml"]
        wait_until(lambda: archived(project, names), timeout=60, message="all archived after resume")
        wait_until(lambda: not snapshot(project).get("paused"), message="the status says resumed")
    finally:
        kill(proc, signal.SIGTERM)
    audit(project, names, comfy)
    assert posts(comfy) == 4
    assert not (inbox / PAUSE_NAME).exists()


def test_a_job_waiting_out_a_pause_gives_up_when_it_is_cancelled(project: Path) -> None:
    """``PauseSwitch.hold``: a job held by the pause stops waiting as soon as its ``give_up`` raises (the
    engine's cancel wakes it), instead of waiting for a resume."""
    import threading

    from hotfolder.engine.core import Core
    from hotfolder.engine.pause import PauseSwitch
    from hotfolder.errors import JobCancelled
    from hotfolder.record import JobState
    from tests.conftest import make_settings

    (project / "inbox" / PAUSE_NAME).write_text("")
    core = Core(make_settings(project, "http://127.0.0.1:9"), [], None)
    switch = PauseSwitch(core)
    assert switch.paused
    cancelled = threading.Event()
    ended: list[BaseException] = []
    asked: list[float] = []

    def give_up() -> None:
        asked.append(time.monotonic())
        if cancelled.is_set():
            raise JobCancelled("cancelled by the test")

    def wait() -> None:
        try:
            switch.hold(JobState(index=1, name="held"), give_up=give_up)
        except JobCancelled as err:
            ended.append(err)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    wait_until(lambda: asked, message="the job waiting in the pause")
    assert waiter.is_alive() and not ended, "the pause did not hold the job"
    cancelled.set()
    with core.cond:
        core.cond.notify_all()  # what the engine's cancel does (Scheduler.end_now)
    waiter.join(5)
    assert not waiter.is_alive() and len(ended) == 1
