"""Fault injection: a real daemon process killed at every named step and at random moments, a test
ComfyUI restarted mid-run, several daemons on one inbox. Afterwards every input is in exactly one of
done/ or failed/, every done job has exactly one complete published result, nothing runs twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hotfolder import failpoints
from hotfolder.testing import ComfyTestServer
from tests.conftest import wait_until
from tests.scenarios import png_size

pytestmark = pytest.mark.timeout(300)


def daemon(project: Path, url: str, *, failpoint: str | None = None, instance: str | None = None,
           extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    env.update({"HOTFOLDER_SETTLE_SECONDS": "0.1", "HOTFOLDER_POLL_INTERVAL": "0.5", "HOTFOLDER_LOST_GRACE": "1.5",
                "HOTFOLDER_LEASE_TIMEOUT": "3", "HOTFOLDER_HTTP_TIMEOUT": "2"})
    if failpoint:
        env["HOTFOLDER_FAILPOINT"] = failpoint
    if instance:
        env["HOTFOLDER_INSTANCE_ID"] = instance
    env.update(extra_env or {})
    log = open(project / "daemon.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "hotfolder", "--server", url, "--default-template", "invert", "run"],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(30)


def drop(project: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        tmp = project / "inbox" / f".{name}.tmp"
        tmp.write_text(f"params: {{width: {8 + i % 200}, height: {8 + i // 200}}}\n")
        tmp.rename(project / "inbox" / name)


def archived(project: Path, names: list[str]) -> bool:
    done, failed = project / "inbox" / "done", project / "inbox" / "failed"
    return all((done / n).exists() or (failed / n).exists() for n in names)


def audit(project: Path, names: list[str], comfy: ComfyTestServer | None = None, *, reruns_allowed: bool = False) -> Counter[str]:
    """The promises, checked. Returns how many results each input published."""
    inbox, outbox = project / "inbox", project / "outbox"
    done = {p.name for p in (inbox / "done").iterdir()} if (inbox / "done").exists() else set()
    failed = {p.name for p in (inbox / "failed").iterdir() if not p.name.endswith(".error.json")} if (inbox / "failed").exists() else set()
    log = (project / "daemon.log").read_text(errors="replace") if (project / "daemon.log").exists() else ""
    assert not failed, f"failed: {sorted(failed)}\n{log[-3000:]}"
    assert done == set(names), f"missing: {sorted(set(names) - done)}, extra: {sorted(done - set(names))}"
    assert not [p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix == ".yaml"], "left in inbox"
    assert not list((inbox / ".hotfolder").glob("*/*/job.json")), "job folders left behind"
    staging = outbox / ".hotfolder-staging"
    assert not staging.exists() or not any(staging.iterdir()), f"orphan staging: {list(staging.iterdir())}"
    published: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    for folder in outbox.iterdir():
        if folder.name.startswith("."):
            continue
        sidecar = json.loads((folder / f"{folder.name}.json").read_text())
        published[sidecar["scenario"]["file"]] += 1
        keys[sidecar["job_key"]] += 1
        assert sidecar["outputs"], folder
        for entry in sidecar["outputs"]:
            assert (folder / entry["file"]).stat().st_size == entry["size"]
            png_size(folder / entry["file"])
    assert set(published) == set(names)
    duplicated = {k: v for k, v in published.items() if v != 1}
    assert not duplicated, f"published more than once: {duplicated}"
    assert all(v == 1 for v in keys.values())
    if comfy is not None and not reruns_allowed:
        runs = Counter(comfy.executed_prompt_ids)
        assert all(v == 1 for v in runs.values()), f"prompts executed twice: {[k for k, v in runs.items() if v > 1]}"
    return published


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_killed_at_each_named_step_then_restarted(project: Path, comfy: ComfyTestServer, point: str) -> None:
    names = [f"f{i}.yaml" for i in range(4)]
    drop(project, names)
    first = daemon(project, comfy.url, failpoint=point)
    first.wait(60)
    assert first.returncode == -signal.SIGKILL, f"failpoint {point} was not reached"
    second = daemon(project, comfy.url)
    try:
        wait_until(lambda: archived(project, names), timeout=60, message=f"archive after a kill at {point}")
    finally:
        kill(second, signal.SIGTERM)
    audit(project, names, comfy)


@pytest.mark.both_profiles
def test_killed_mid_post_then_restarted_runs_the_prompt_once(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.post_hang(count=1, seconds=5)
    drop(project, ["m.yaml"])
    first = daemon(project, comfy.url)
    wait_until(lambda: [r for r in comfy.requests if r["path"].endswith("/prompt") and r["method"] == "POST"],
               message="the POST")
    kill(first)  # the POST is on the wire, its answer not yet back; the server has queued it
    second = daemon(project, comfy.url)
    try:
        wait_until(lambda: archived(project, ["m.yaml"]), timeout=60, message="archive after a mid-POST kill")
    finally:
        kill(second, signal.SIGTERM)
    audit(project, ["m.yaml"], comfy)
    assert len(comfy.executed_prompt_ids) == 1


# Read at import: the autouse fixture clears HOTFOLDER_* variables before each test runs.
SEED = os.environ.get("HOTFOLDER_TEST_SEED")


@pytest.mark.slow
def test_sigkill_loop_of_200_jobs_loses_and_duplicates_nothing(project: Path, comfy: ComfyTestServer) -> None:
    seed = int(SEED) if SEED else random.randrange(1 << 30)
    rng = random.Random(seed)
    comfy.faults.node_delay("ImageInvert", 0.08)  # 200 jobs take at least 16 s of server time: room for 20 kills
    names = [f"j{i:03d}.yaml" for i in range(200)]
    drop(project, names)
    kills = 0
    stop = threading.Event()
    # Kills this close together land, on a loaded machine, in the first files' reading at start-up: three
    # in a row on one file would set it aside as a file that stops hotfolder (max_parse_attempts, tested
    # on its own below). Here the kills are the test's, not the files'.
    patient = {"HOTFOLDER_MAX_PARSE_ATTEMPTS": "1000"}
    while kills < 20 and not archived(project, names):
        proc = daemon(project, comfy.url, extra_env=patient)
        stop.wait(rng.uniform(0.2, 0.9))  # a random moment in the run: the point of this test
        kill(proc)
        kills += 1
    comfy.faults.node_delay("ImageInvert", 0)  # the kills are over: the rest need not be slow
    proc = daemon(project, comfy.url)
    try:
        wait_until(lambda: archived(project, names), timeout=180, message=f"all archived (seed {seed})")
    finally:
        kill(proc, signal.SIGTERM)
    published = audit(project, names, comfy)
    print(f"seed {seed}: 200 jobs, {kills} SIGKILLs, {200 - len(published)} lost, "
          f"{sum(published.values()) - len(published)} duplicated")
    assert kills >= 20, "the run finished before 20 kills: make the jobs slower"


@pytest.mark.slow
def test_comfyui_restarted_three_times_mid_run_loses_nothing(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.node_delay("ImageInvert", 0.1)
    names = [f"r{i:02d}.yaml" for i in range(30)]
    drop(project, names)
    proc = daemon(project, comfy.url)
    try:
        for n in (5, 12, 20):
            wait_until(lambda: len(list((project / "inbox" / "done").glob("*.yaml"))) >= n
                       if (project / "inbox" / "done").exists() else False, timeout=60, message=f"{n} done")
            # hold the next prompt to reach its ImageInvert node, so that each restart loses a running prompt
            # (counting prompts started raced with one that started between the two lines and was held)
            comfy.faults.node_delay("ImageInvert", 60)
            wait_until(lambda: ("ImageInvert", 60) in comfy.held_nodes(), timeout=60, message="a prompt held mid-run")
            comfy.restart()
            comfy.faults.node_delay("ImageInvert", 0.1)
        wait_until(lambda: archived(project, names), timeout=120, message="all archived after restarts")
    finally:
        kill(proc, signal.SIGTERM)
    published = audit(project, names, comfy, reruns_allowed=True)
    resubmitted = sum(json.loads(p.read_text())["resubmissions"] for p in (project / "outbox").glob("*/*.json"))
    runs = Counter(comfy.executed_prompt_ids)
    print(f"30 jobs, 3 ComfyUI restarts: {30 - len(published)} lost, {sum(published.values()) - len(published)} "
          f"duplicated, {resubmitted} resubmitted, {sum(1 for v in runs.values() if v > 1)} prompts executed twice "
          "(each one running when its server restarted: ComfyUI lost it, hotfolder sent it again)")
    assert resubmitted >= 3  # at least the prompt each restart caught mid-run
    assert all(v <= 2 for v in runs.values())


@pytest.mark.slow
def test_two_daemons_on_one_inbox_take_each_file_once(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.node_delay("ImageInvert", 0.02)
    names = [f"s{i:02d}.yaml" for i in range(40)]
    a = daemon(project, comfy.url, instance="alpha")
    b = daemon(project, comfy.url, instance="beta")
    try:
        drop(project, names)
        wait_until(lambda: archived(project, names), timeout=120, message="all archived by two daemons")
    finally:
        kill(a, signal.SIGTERM)
        kill(b, signal.SIGTERM)
    audit(project, names, comfy)
    instances = Counter(json.loads(p.read_text())["job_id"] for p in (project / "outbox").glob("*/*.json"))
    assert len(instances) == 40


@pytest.mark.slow
def test_a_live_daemon_adopts_the_jobs_of_one_that_died(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.node_delay("ImageInvert", 0.5)
    names = [f"a{i}.yaml" for i in range(4)]
    drop(project, names)
    a = daemon(project, comfy.url, instance="alpha")
    wait_until(lambda: list((project / "inbox" / ".hotfolder" / "alpha").glob("*/job.json")), message="alpha claims")
    kill(a)
    left = len(list((project / "inbox" / ".hotfolder" / "alpha").glob("*/job.json")))
    assert left >= 1
    b = daemon(project, comfy.url, instance="beta")
    try:
        wait_until(lambda: archived(project, names), timeout=60, message="beta finishes alpha's jobs")
    finally:
        kill(b, signal.SIGTERM)
    audit(project, names, comfy)
    assert not (project / "inbox" / ".hotfolder" / "alpha").exists()


@pytest.mark.slow
def test_a_file_that_keeps_killing_the_daemon_goes_to_failed(project: Path, comfy: ComfyTestServer) -> None:
    drop(project, ["poison.yaml"])
    for _ in range(3):
        proc = daemon(project, comfy.url, failpoint="mid_parse")
        proc.wait(60)
        assert proc.returncode == -signal.SIGKILL
    proc = daemon(project, comfy.url, failpoint="mid_parse")
    try:
        wait_until(lambda: (project / "inbox" / "failed" / "poison.yaml.error.json").exists(), message="poison set aside")
    finally:
        kill(proc, signal.SIGTERM)
    error = json.loads((project / "inbox" / "failed" / "poison.yaml.error.json").read_text())
    assert "stopped 3 times" in error["message"]
    assert proc.returncode == 0


def _execution_starts(comfy: ComfyTestServer) -> list[float]:
    """The wall-clock seconds of every execution_start in the server's history (since its last start)."""
    starts = []
    for entry in comfy.history().values():
        for kind, data in (entry.get("status") or {}).get("messages") or []:
            if kind == "execution_start":
                starts.append(data["timestamp"] / 1000)
    return sorted(starts)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("outage", [False, True], ids=["restart", "outage"])
def test_comfyui_restart_leaves_the_gpu_idle_well_under_lost_grace(project: Path, outage: bool) -> None:
    """A restarted server forgets its running and pending prompts; hotfolder sends them again as soon as
    it answers without them, not after lost_grace (15 s here, so waiting it out fails the bound). With
    ``outage`` the server stays away until the daemon has seen it down (its WebSocket and HTTP retry)."""
    comfy = ComfyTestServer(port=_free_port()).start()  # a fixed port: stop() and start() keep it
    env = {"HOTFOLDER_LOST_GRACE": "15", "HOTFOLDER_STATUS_INTERVAL": "0.2"}
    comfy.faults.node_delay("ImageInvert", 0.05)
    names = [f"g{i}.yaml" for i in range(5)]
    proc = daemon(project, comfy.url, extra_env=env)
    try:
        drop(project, names[:1])
        wait_until(lambda: (project / "inbox" / "done" / names[0]).exists(), timeout=60, message="a first job done")
        comfy.faults.node_delay("ImageInvert", 60)  # hold the next prompt mid-run, one more queued behind it
        drop(project, names[1:])
        wait_until(lambda: len(comfy.executed_prompt_ids) > 1 and len(comfy.queue()["queue_pending"]) >= 1,
                   timeout=60, message="a prompt held mid-run and one pending")
        comfy.faults.node_delay("ImageInvert", 0.05)  # the held one sleeps on until the restart kills it
        if outage:
            comfy.stop()
            wait_until(lambda: _server_seen_down(project), timeout=30, message="the daemon sees the server down")
            comfy.start()
        else:
            comfy.restart()
        answering = time.time()  # the restarted server answers from here on
        wait_until(lambda: archived(project, names), timeout=60, message="all archived after the restart")
    finally:
        kill(proc, signal.SIGTERM)
        comfy.stop()
    audit(project, names, comfy, reruns_allowed=True)
    idle = _execution_starts(comfy)[0] - answering
    print(f"GPU idle after the {'outage' if outage else 'restart'} answered: {idle:.3f} s (lost_grace 15 s)")
    assert idle <= 3.0, f"the restarted server sat idle {idle:.1f} s before it got its prompts back"


def _status(project: Path) -> dict[str, Any]:
    """The daemon's status file (one daemon per project here), {} before it is written."""
    for path in (project / "inbox" / ".hotfolder" / "status").glob("*.json"):
        return dict(json.loads(path.read_text()))
    return {}


def _job_states(project: Path) -> list[str]:
    return [job.get("state") for path in (project / "inbox" / ".hotfolder").glob("*/*/job.json")
            for job in json.loads(path.read_text()).get("jobs") or []]


def test_a_job_waiting_to_post_when_the_daemon_stops_sends_nothing_and_runs_once_after_a_restart(project: Path) -> None:
    """SIGTERM while a job is "submitting" but its server is away (it waits for the WebSocket before its
    POST, or for the server to answer before the POST again): the server comes back within stop_budget and
    the stopping daemon sends nothing; the job stays recorded and runs once after a restart."""
    comfy = ComfyTestServer(port=_free_port()).start()  # a fixed port: stop() and start() keep it
    proc = daemon(project, comfy.url, extra_env={"HOTFOLDER_STATUS_INTERVAL": "0.2"})
    try:
        wait_until(lambda: _status(project).get("state") == "running", timeout=30, message="the daemon running")
        comfy.stop()
        drop(project, ["late.yaml"])
        wait_until(lambda: _job_states(project) == ["submitting"], timeout=30, message="the job submitting to a server that is away")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _status(project).get("state") == "stopping", timeout=30, message="the daemon stopping")
        comfy.start()
        proc.wait(60)
    finally:
        kill(proc)
    assert proc.returncode == 0
    assert not [r for r in comfy.requests if r.method == "POST" and r.path == "/prompt"], "a stopping daemon sent a prompt"
    assert _job_states(project) == ["submitting"]
    proc = daemon(project, comfy.url)
    try:
        wait_until(lambda: archived(project, ["late.yaml"]), timeout=60, message="the job after the restart")
    finally:
        kill(proc, signal.SIGTERM)
        comfy.stop()
    audit(project, ["late.yaml"], comfy)
    assert len(comfy.executed_prompt_ids) == 1


class _Looks(threading.Event):
    """An event that counts the looks at it: ComfyClient.wait looks at its ``abort`` flag once per turn."""

    looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return super().is_set()


def test_the_forgotten_flag_wakes_the_waiting_job_itself(project: Path, comfy: ComfyTestServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The flag Router.watching hands a job (set when a restarted server provably forgot its prompt)
    ends ComfyClient.wait at once: with its polls and its flag checks 1000 s apart, nothing else could."""
    from hotfolder.comfy.client import Cancelled, ComfyClient
    from hotfolder.engine.core import Core
    from hotfolder.engine.routing import Router
    from tests.conftest import make_settings

    monkeypatch.setattr(ComfyClient, "flag_check", 1000.0)
    router = Router(Core(make_settings(project, comfy.url, poll_interval=1000.0, lost_grace=1000.0), [], None))
    client = router.clients[0]
    comfy.faults.node_delay("ImageInvert", 60)  # running, and silent, until the server stops
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "held"}}}
    prompt_id = "11111111-1111-4111-8111-111111111111"
    client.start()
    try:
        assert client.wait_ws(10)
        client.submit(workflow, prompt_id=prompt_id)
        # ImageInvert started: the last message before the prompt ends (so none can wake the wait)
        wait_until(lambda: client.watch(prompt_id).current_node == "2", message="the prompt held in node 2")
        looks, ended = _Looks(), []
        with router.watching(client, prompt_id) as flag:
            def wait() -> None:
                try:
                    client.wait(prompt_id, deadline=time.monotonic() + 1000, cancel=flag, fresh=True, abort=looks)
                except Cancelled:
                    ended.append("cancelled")

            threading.Thread(target=wait, daemon=True).start()
            wait_until(lambda: looks.looks >= 1, message="the wait's first turn")  # past its first look at the flag
            flag.set()
            wait_until(lambda: ended, message="the wait ended by the flag")
        assert flag.forgotten and ended == ["cancelled"]
    finally:
        client.close()


def _server_seen_down(project: Path) -> bool:
    return any(s.get("up") is False for s in _status(project).get("servers") or [])
