"""Cancel: a queued prompt is removed and a running one interrupted (the jobs API on servers that have
it, else ``/queue`` delete and ``/interrupt`` with the prompt_id, never a bare ``/interrupt``); a job not
submitted yet is never submitted; the input goes to failed/ with ``cancelled`` in its error file and
nothing is published. Also ``.cancel`` files, ``hotfolder cancel`` against a real daemon, Ctrl-C in
``hotfolder process``, and the jobs API's detection and use after a daemon was killed. Every case runs
on both protocol profiles of the test ComfyUI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hotfolder.comfy.client import ComfyClient, Dequeue
from hotfolder.config import ServerConfig
from hotfolder.engine import Engine
from hotfolder.testing import ComfyTestServer
from tests.conftest import invoke_cli, make_settings, wait_until
from tests.test_daemon import settled, start_daemon, stop

pytestmark = pytest.mark.timeout(180)

PROFILES = ["0.3", "0.4x"]


@pytest.fixture(params=PROFILES)
def server(request: pytest.FixtureRequest) -> Iterator[ComfyTestServer]:
    with ComfyTestServer(comfyui=request.param) as srv:
        yield srv


def queued(server: ComfyTestServer) -> dict[str, str]:
    """The prompts on the server now, by hotfolder job index ("1", "2", ...): their prompt ids."""
    queue = server.queue()
    found = {}
    for item in queue["queue_running"] + queue["queue_pending"]:
        job = item[3]["extra_pnginfo"]["hotfolder"]["job"]
        found[job.rsplit("/", 1)[1]] = item[1]
    return found


def running(server: ComfyTestServer) -> set[str]:
    return {item[1] for item in server.queue()["queue_running"]}


def cancel_calls(server: ComfyTestServer) -> list[tuple[str, Any]]:
    """Every request that removes or stops a prompt: (path, JSON body)."""
    return [(r.path, r.json) for r in server.requests
            if r.method == "POST" and (r.path in ("/interrupt", "/queue") or r.path.startswith("/api/jobs"))]


def expected_cancel(server: ComfyTestServer, prompt_id: str, *, was_running: bool) -> list[tuple[str, Any]]:
    """The requests that cancel ``prompt_id`` on this profile: the jobs API's cancel, else a delete from
    the queue and, for a running prompt, an interrupt naming it."""
    if server.profile.name == "0.4x":
        return [(f"/api/jobs/{prompt_id}/cancel", None)]
    delete = ("/queue", {"delete": [prompt_id]})
    return [delete, ("/interrupt", {"prompt_id": prompt_id})] if was_running else [delete]


@contextmanager
def two_on_the_server(project: Path, server: ComfyTestServer, name: str, *,
                      repeat: int) -> Iterator[tuple[Engine, dict[str, str]]]:
    """An engine running ``name`` (``repeat`` jobs, each held 30 s in ImageInvert) until two of its prompts
    are on the server, one running; yields the engine and those prompts by job index. Stops the engine."""
    server.faults.node_delay("ImageInvert", 30)
    (project / "inbox" / name).write_text(f"repeat: {repeat}\nparams: {{width: 8}}\n")
    engine = Engine(make_settings(project, server.url, queue_depth=2))
    engine.start()
    try:
        engine.accept(project / "inbox" / name)
        yield engine, wait_until(lambda: len(q := queued(server)) == 2 and running(server) and q,
                                 message="two prompts on the server, one running")
    finally:
        engine.stop()


def stopping(server: ComfyTestServer, prompt_id: str, *, was_running: bool) -> list[tuple[str, Any]]:
    """:func:`expected_cancel` without the delete from the queue (one cancel sends one for all its prompts)."""
    return [call for call in expected_cancel(server, prompt_id, was_running=was_running) if call[0] != "/queue"]


def one_delete(calls: list[tuple[str, Any]], prompt_ids: set[str]) -> None:
    """``calls`` hold one ``/queue`` delete, of exactly ``prompt_ids``: a cancel of several prompts on one
    server takes them off its queue in one request."""
    deletes = [body["delete"] for path, body in calls if path == "/queue"]
    assert len(deletes) == 1 and sorted(deletes[0]) == sorted(prompt_ids), calls


def no_bare_interrupt(server: ComfyTestServer) -> None:
    for path, body in cancel_calls(server):
        if path == "/interrupt":
            assert isinstance(body, dict) and body.get("prompt_id"), f"a bare /interrupt was sent: {body!r}"


def error_doc(project: Path, name: str) -> dict[str, Any]:
    return json.loads((project / "inbox" / "failed" / f"{name}.error.json").read_text())


def published(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "outbox").iterdir() if not p.name.startswith("."))


def test_cancel_a_queued_and_a_running_job_calls_the_right_endpoint_with_the_right_prompt_id(
        project: Path, server: ComfyTestServer) -> None:
    with two_on_the_server(project, server, "night.yaml", repeat=3) as (engine, ids):
        # which jobs go first, and which of them runs, is the scheduler's choice
        last = ({"1", "2", "3"} - set(ids)).pop()
        run, wait = sorted(ids, key=lambda index: ids[index] not in running(server))
        server.clear_requests()
        assert engine.cancel(f"night-00{wait}", "by the test at noon") == [f"night.yaml night-00{wait}"]
        wait_until(lambda: cancel_calls(server), message="the queued prompt cancelled")
        assert cancel_calls(server) == expected_cancel(server, ids[wait], was_running=False)
        wait_until(lambda: ids[wait] not in queued(server).values(), message="the queued job off the queue")
        server.clear_requests()
        assert engine.cancel(f"night-00{run}", "by the test at one") == [f"night.yaml night-00{run}"]
        wait_until(lambda: len(cancel_calls(server)) == len(expected_cancel(server, "", was_running=True)),
                   message="the running prompt cancelled")
        assert cancel_calls(server) == expected_cancel(server, ids[run], was_running=True)
        server.faults.node_delay("ImageInvert", 0)  # the job never cancelled runs at once
        assert engine.wait_idle(60)  # the third job was never cancelled: it runs and publishes
    no_bare_interrupt(server)
    assert ids[wait] not in server.executed_prompt_ids  # dequeued before it ran
    entry = server.history()[ids[run]]
    assert any(message[0] == "execution_interrupted" for message in entry["status"]["messages"])
    assert (project / "inbox" / "failed" / "night.yaml").is_file()  # the input is kept
    doc = error_doc(project, "night.yaml")
    states = {job["name"]: (job["state"], (job["error"] or {}).get("message", "")) for job in doc["jobs"]}
    assert states[f"night-00{run}"][0] == states[f"night-00{wait}"][0] == "failed"
    assert "was cancelled by the test at one" in states[f"night-00{run}"][1]
    assert "was cancelled by the test at noon" in states[f"night-00{wait}"][1]
    assert states[f"night-00{last}"][0] == "published"
    assert published(project) == [f"night-00{last}"]  # nothing of the cancelled jobs


def test_a_whole_file_cancelled_before_its_jobs_are_submitted_sends_nothing(project: Path,
                                                                            server: ComfyTestServer) -> None:
    settings = make_settings(project, server.url)
    engine = Engine(settings)
    engine.cancel("early", "by the test before the file came")  # waits for the file of that name
    (project / "inbox" / "early.yaml").write_text("repeat: 2\nparams: {width: 8}\n")
    engine.start()
    try:
        engine.accept(project / "inbox" / "early.yaml")
        assert engine.wait_idle(30)
    finally:
        engine.stop()
    assert not [r for r in server.requests if r.path == "/prompt"]
    doc = error_doc(project, "early.yaml")
    assert "cancelled" in json.dumps(doc) and doc["stage"] == "cancelled"
    assert all("by the test before the file came" in job["error"]["message"] for job in doc["jobs"])
    assert published(project) == []


def test_a_cancel_file_in_the_inbox_cancels_the_file_and_is_never_claimed(project: Path,
                                                                         server: ComfyTestServer) -> None:
    server.faults.node_delay("ImageInvert", 30)
    (project / "inbox" / "dropped.yaml").write_text("params: {width: 8}\n")
    proc = start_daemon(project, server.url)
    try:
        wait_until(lambda: running(server), message="the prompt running")
        (project / "inbox" / "dropped.cancel").write_text("")  # what a shared-folder user does
        wait_until(lambda: settled(project, ["dropped.yaml"]), message="dropped.yaml archived")
        wait_until(lambda: not (project / "inbox" / "dropped.cancel").exists(), message="the request removed")
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    no_bare_interrupt(server)
    assert len(cancel_calls(server)) == len(expected_cancel(server, "", was_running=True)), cancel_calls(server)
    doc = error_doc(project, "dropped.yaml")
    assert doc["stage"] == "cancelled" and "a dropped.cancel file dropped into the inbox" in doc["message"], doc
    assert not (project / "inbox" / "failed" / "dropped.cancel").exists()  # never claimed as a scenario
    assert not (project / "inbox" / "failed" / "dropped.cancel.error.json").exists()
    assert published(project) == []


def test_hotfolder_cancel_cancels_a_job_of_a_running_daemon(project: Path, server: ComfyTestServer) -> None:
    server.faults.node_delay("ImageInvert", 30)
    (project / "inbox" / "later.yaml").write_text("params: {width: 8}\n")
    proc = start_daemon(project, server.url)
    try:
        prompt_id = next(iter(wait_until(lambda: running(server), message="the prompt running")))
        result = subprocess.run([sys.executable, "-m", "hotfolder", "cancel", "later.yaml"], cwd=project,
                                env={k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: settled(project, ["later.yaml"]), message="later.yaml archived")
    finally:
        log = stop(proc)
    assert cancel_calls(server) == expected_cancel(server, prompt_id, was_running=True), log
    doc = error_doc(project, "later.yaml")
    assert "was cancelled by `hotfolder cancel`" in doc["message"], doc
    assert (project / "inbox" / "failed" / "later.yaml").is_file()
    assert published(project) == []


def test_ctrl_c_in_process_cancels_its_prompts_and_a_second_exits_at_once(project: Path,
                                                                         server: ComfyTestServer) -> None:
    server.faults.node_delay("ImageInvert", 60)
    scenario = project / "fg.yaml"
    scenario.write_text("repeat: 2\nparams: {width: 8}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    args = [sys.executable, "-m", "hotfolder", "--server", server.url, "--default-template", "invert",
            "process", str(scenario)]
    proc = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ids = wait_until(lambda: len(q := queued(server)) == 2 and running(server) and q,
                         message="both prompts on the server")
        run, wait = sorted(ids, key=lambda index: ids[index] not in running(server))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    # both prompts leave the queue in one delete before either is stopped; the stops may include the
    # waiting prompt's own (the jobs API's cancel, or an interrupt if it started before the delete)
    calls = cancel_calls(server)
    one_delete(calls, set(ids.values()))
    stops = [str(c) for c in calls if c[0] != "/queue"]
    assert len(stops) == len(set(stops)), calls
    assert {str(c) for c in stopping(server, ids[run], was_running=True)
            + stopping(server, ids[wait], was_running=False)} <= set(stops), out
    assert set(stops) <= {str(c) for i in ids.values() for c in stopping(server, i, was_running=True)}, calls
    no_bare_interrupt(server)
    assert server.wait_idle(10)
    history = server.history()
    assert not [i for i in ids.values() if i in history and history[i]["status"]["status_str"] == "success"]
    assert scenario.is_file() and published(project) == []
    assert "cancelled by Ctrl-C in `hotfolder process`" in out, out

    # a second Ctrl-C exits at once, even while the first one waits (here: on a POST the server holds)
    server.faults.post_hang(seconds=60)
    proc = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: queued(server), message="a prompt queued, its POST held")
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: any("Ctrl-C: cancelling" in line for line in lines), message="the first Ctrl-C taken")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert any("Second Ctrl-C" in line for line in lines), lines


def test_cancelling_a_file_takes_its_queued_prompt_off_before_stopping_its_running_one(
        project: Path, server: ComfyTestServer) -> None:
    # A server starts its next pending prompt the moment the running one stops: if that is one of the
    # file's own, it would load its models for nothing (seen on a real 0.33.0 before this order was kept).
    with two_on_the_server(project, server, "pair.yaml", repeat=2) as (engine, ids):
        run, wait = sorted(ids.values(), key=lambda prompt_id: prompt_id not in running(server))
        server.clear_requests()
        assert sorted(engine.cancel("pair.yaml", "by the test")) == ["pair.yaml pair-001", "pair.yaml pair-002"]
        stopped = f"/api/jobs/{run}/cancel" if server.profile.name == "0.4x" else "/interrupt"
        wait_until(lambda: any(path == stopped for path, _ in cancel_calls(server)), message="the running prompt stopped")
        calls = cancel_calls(server)
        first_stop = next(i for i, (path, _) in enumerate(calls) if path == stopped)
        assert any(path == "/queue" and wait in body["delete"] for path, body in calls[:first_stop]), calls
        assert engine.wait_idle(60)
    one_delete(cancel_calls(server), {run, wait})  # not one per job, nor one per job for each other job
    no_bare_interrupt(server)
    assert wait not in server.executed_prompt_ids  # never started
    assert published(project) == []


def test_cancelling_a_file_on_two_servers_sends_each_one_delete_of_its_own_prompts(
        project: Path, server: ComfyTestServer) -> None:
    with ComfyTestServer(comfyui=server.profile.name) as other:
        servers = (server, other)
        for each in servers:
            each.faults.node_delay("ImageInvert", 30)
        (project / "inbox" / "quad.yaml").write_text("repeat: 4\nparams: {width: 8}\n")
        engine = Engine(make_settings(project, server.url, servers=[server.url, other.url], queue_depth=2))
        engine.start()
        try:
            engine.accept(project / "inbox" / "quad.yaml")
            ids = [set(wait_until(lambda each=each: len(q := queued(each)) == 2 and q,
                                  message="two prompts on each server").values()) for each in servers]
            for each in servers:
                each.clear_requests()
            assert len(engine.cancel("quad.yaml", "by the test")) == 4
            assert engine.wait_idle(60)
        finally:
            engine.stop()
        for each, prompt_ids in zip(servers, ids, strict=True):
            one_delete(cancel_calls(each), prompt_ids)  # its own prompts only, in one request
            no_bare_interrupt(each)
    assert published(project) == []


def test_the_jobs_api_is_found_by_probing_and_probed_again_after_a_reconnect(server: ComfyTestServer) -> None:
    client = ComfyClient(ServerConfig(url=server.url), poll_interval=0.5)
    client.start()
    try:
        assert client.wait_ws(10)
        has = server.profile.name == "0.4x"
        assert client.jobs_api() is has and client.jobs_api() is has
        probes = lambda: [r for r in server.requests if r.path == "/api/jobs"]  # noqa: E731
        assert len(probes()) == 1 and probes()[0].query.get("limit") == "1"
        assert client.locate("00000000-0000-4000-8000-000000000000") == "absent"
        server.restart()
        wait_until(lambda: client.ws_connected and client._jobs_api is None, message="the client reconnected")
        assert client.jobs_api() is has
        assert len(probes()) == 2
    finally:
        client.close()


def test_after_a_sigkill_the_restarted_daemon_asks_the_jobs_api_or_the_history(project: Path,
                                                                               server: ComfyTestServer) -> None:
    server.faults.node_delay("ImageInvert", 60)  # held until the restarted daemon has asked about it
    (project / "inbox" / "k.yaml").write_text("params: {width: 8}\n")
    proc = start_daemon(project, server.url)
    prompt_id = next(iter(wait_until(lambda: running(server), message="the prompt running")))
    stop(proc, signal.SIGKILL)
    server.clear_requests()
    proc = start_daemon(project, server.url)
    try:
        asked_about = lambda: any(r.path in (f"/api/jobs/{prompt_id}", "/queue") for r in server.requests)  # noqa: E731
        wait_until(asked_about, message="the restarted daemon asked where its prompt is")
        server.faults.node_delay("ImageInvert", 0)
        wait_until(lambda: settled(project, ["k.yaml"]), message="k.yaml archived after the restart")
    finally:
        stop(proc)
    assert (project / "inbox" / "done" / "k.yaml").is_file() and published(project) == ["k"]
    assert server.executed_prompt_ids == [prompt_id]  # attached to, never sent again
    asked = [r.path for r in server.requests if r.method == "GET"]
    if server.profile.name == "0.4x":
        assert f"/api/jobs/{prompt_id}" in asked and "/queue" not in asked, asked
    else:
        assert f"/api/jobs/{prompt_id}" not in asked and "/queue" in asked, asked


def test_hotfolder_cancel_without_a_daemon_leaves_the_request_and_exits_1(project: Path) -> None:
    result = invoke_cli("--inbox", "inbox", "cancel", "inbox/night.yaml", "--wait", "0.2", cwd=project)
    assert result.returncode == 1
    assert "No daemon took" in result.stderr and "stays in the inbox" in result.stderr
    request = json.loads((project / "inbox" / "night.yaml.cancel").read_text())
    assert request["by"].startswith("`hotfolder cancel`") and request["at"]
    assert [p.name for p in (project / "inbox").iterdir()] == ["night.yaml.cancel"]  # no temp file left


@contextmanager
def backlog_behind_a_held_prompt(project: Path, server: ComfyTestServer) -> Iterator[list[str]]:
    """A daemon whose first prompt (``first.yaml``) is held 30 s on the server, with 40 more files
    (``later-00`` ... ``later-39``) dropped behind it that it has no room to claim yet. Yields a list the
    body fills with the daemon's log when it is stopped (stop_budget 0.5 s: the rest stays recorded)."""
    server.faults.node_delay("ImageInvert", 30)
    (project / "hotfolder.toml").write_text("stop_budget = 0.5\n")
    (project / "inbox" / "first.yaml").write_text("params: {width: 8}\n")
    proc = start_daemon(project, server.url)
    logs: list[str] = []
    try:
        wait_until(lambda: running(server), message="the first prompt running")
        for i in range(40):
            (project / "inbox" / f"later-{i:02d}.yaml").write_text("params: {width: 8}\n")
        wait_until(lambda: len(list((project / "inbox").glob("later-*.yaml"))) < 40,
                   message="the daemon claiming the later files")
        yield logs
        assert list((project / "inbox").glob("later-*.yaml")), "the backlog had drained: the test proves nothing"
    finally:
        logs.append(stop(proc))
    assert proc.returncode == 0, logs[0]


def test_a_cancel_file_dropped_behind_a_backlog_is_taken_at_once(project: Path, server: ComfyTestServer) -> None:
    """A cancel must not wait its turn behind files the daemon has no room to claim yet."""
    with backlog_behind_a_held_prompt(project, server):
        (project / "inbox" / "first.cancel").write_text("")
        wait_until(lambda: not (project / "inbox" / "first.cancel").exists(), timeout=10,
                   message="the cancel request taken")
        wait_until(lambda: settled(project, ["first.yaml"]), message="first.yaml archived")
    assert error_doc(project, "first.yaml")["stage"] == "cancelled"


def test_a_cancel_of_a_file_still_waiting_in_a_backlog_claims_it_at_once_and_sends_nothing(
        project: Path, server: ComfyTestServer) -> None:
    """``later-39.cancel`` names the last of the files waiting for room: it goes to failed/ as cancelled at
    once, never submitted, while the files before it still wait."""
    with backlog_behind_a_held_prompt(project, server) as logs:
        (project / "inbox" / "later-39.cancel").write_text("")
        wait_until(lambda: settled(project, ["later-39.yaml"]), timeout=10, message="later-39.yaml cancelled")
    assert error_doc(project, "later-39.yaml")["stage"] == "cancelled", logs[0]
    posted = [json.dumps(r.json) for r in server.requests if r.method == "POST" and r.path == "/prompt"]
    assert posted and not any("later-39" in body for body in posted), "later-39 was submitted"
    # claimed by the cancel, then read by a prepare thread before or after the cancel took it
    assert "cancelling later-39.yaml" in logs[0], logs[0]

def test_a_cancelled_job_waiting_for_a_place_on_its_server_ends_at_once(project: Path,
                                                                       server: ComfyTestServer) -> None:
    """With ``queue_depth = 1`` and ``a`` holding the server's place, ``b``'s worker waits for it; a cancel
    of ``b`` ends it now, not when ``a`` has run, and nothing of ``b`` is sent."""
    server.faults.node_delay("ImageInvert", 30)
    engine = Engine(make_settings(project, server.url, queue_depth=1))
    engine.start()
    try:
        for name in ("a.yaml", "b.yaml"):
            (project / "inbox" / name).write_text("params: {width: 8}\n")
            engine.accept(project / "inbox" / name)
        wait_until(lambda: running(server), message="a running")
        wait_until(lambda: engine._scheduler.running == 2, message="b taken by a worker, waiting for the place")
        assert engine.cancel("b.yaml", "by the test") == ["b.yaml b"]
        wait_until(lambda: (project / "inbox" / "failed" / "b.yaml").exists(), timeout=5, message="b cancelled")
    finally:
        engine.stop()
    assert error_doc(project, "b.yaml")["stage"] == "cancelled"
    assert len([r for r in server.requests if r.method == "POST" and r.path == "/prompt"]) == 1


def test_a_prompt_queued_after_the_shared_delete_went_out_is_still_taken_off(server: ComfyTestServer) -> None:
    """Jobs cancelled together share one delete, sent by the first to react. A prompt whose POST landed
    after that delete (the job was between its last check and its POST) is taken off on its own."""
    server.faults.node_delay("ImageInvert", 30)
    client = ComfyClient(ServerConfig(url=server.url), poll_interval=0.5)
    client.start()

    def post(prompt_id: str) -> None:
        client.submit({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                       "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                       "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "c"}}},
                      prompt_id=prompt_id)

    ids = ["00000000-0000-4000-8000-00000000000" + c for c in "abc"]
    try:
        assert client.wait_ws(10)
        post(ids[0])  # runs, held by the delay
        post(ids[1])  # waits behind it
        wait_until(lambda: running(server) == {ids[0]}, message="the first prompt running")
        together = Dequeue(client.name, tuple(ids))
        client.cancel(ids[1], together=together)  # the first job to react: one delete for all three
        post(ids[2])  # the third job's POST lands after it
        client.cancel(ids[2], together=together)
        client.cancel(ids[0], together=together)
        # the running one stops when the server gets to it (an interrupt is asynchronous)
        wait_until(lambda: not (q := server.queue())["queue_running"] + q["queue_pending"], timeout=10,
                   message="no prompt left on the server")
        assert ids[2] not in server.executed_prompt_ids
    finally:
        client.close()


def test_a_file_claimed_for_a_cancel_is_never_submitted_however_slow_the_request_is_to_read(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel is known before the files it names are claimed: a prepare thread and an idle worker
    could otherwise read and submit one while the request is still being read (a slow share)."""
    from hotfolder import cancel_requests, daemon

    slow = cancel_requests.reason_of
    monkeypatch.setattr(cancel_requests, "reason_of", lambda path: (time.sleep(0.2), slow(path))[1])
    with ComfyTestServer() as server:
        engine = Engine(make_settings(project, server.url))
        engine.start()
        try:
            (project / "inbox" / "night.yaml").write_text("params: {width: 8}\n")
            (project / "inbox" / "night.cancel").write_text("")
            handed = cancel_requests.HandOver()
            handed.put(project / "inbox" / "night.yaml")
            assert daemon._cancel(engine, handed, project / "inbox" / "night.cancel", None) is None
            assert engine.wait_idle(30)
        finally:
            engine.stop()
        assert not [r.path for r in server.requests if r.method == "POST"]
    assert error_doc(project, "night.yaml")["stage"] == "cancelled"


def test_a_recovered_job_cancelled_while_it_waits_for_a_place_takes_its_prompt_off_the_server(
        project: Path, server: ComfyTestServer) -> None:
    """Two prompts of a file were on the server when the engine stopped; a new engine with one place per
    server resumes both, and one waits for the place. Cancelled there, it still takes its prompt off the
    server's queue (it was sent by the earlier run)."""
    with two_on_the_server(project, server, "pair.yaml", repeat=2) as (_, ids):
        pass  # stopped: both jobs stay recorded as submitted, their prompts on the server
    engine = Engine(make_settings(project, server.url, queue_depth=1))
    engine.start()
    try:
        assert engine.recover() == 1
        wait_until(lambda: engine._scheduler.running == 2, message="both jobs taken, one waiting for the place")
        waiting = next(index for index, prompt_id in ids.items() if prompt_id not in running(server))
        assert engine.cancel(f"pair-00{waiting}", "by the test") == [f"pair.yaml pair-00{waiting}"]
        wait_until(lambda: ids[waiting] not in queued(server).values(), timeout=10,
                   message="the waiting job's prompt off the server")
    finally:
        engine.stop()
    assert ids[waiting] not in server.executed_prompt_ids


def test_a_recovered_job_cancelled_before_a_worker_takes_it_takes_its_prompt_off_the_server(
        project: Path, server: ComfyTestServer) -> None:
    """Three prompts of a file were on the server when the engine stopped; a new engine with one place
    (two workers) leaves the third job waiting for a worker. Cancelled there, it ends at once and takes
    its prompt, sent by the earlier run, off the server's queue."""
    server.faults.node_delay("ImageInvert", 30)
    (project / "inbox" / "trio.yaml").write_text("repeat: 3\nparams: {width: 8}\n")
    engine = Engine(make_settings(project, server.url, queue_depth=3))
    engine.start()
    try:
        engine.accept(project / "inbox" / "trio.yaml")
        ids = wait_until(lambda: len(q := queued(server)) == 3 and running(server) and q, message="three prompts")
    finally:
        engine.stop()
    engine = Engine(make_settings(project, server.url, queue_depth=1))
    engine.start()
    try:
        assert engine.recover() == 1
        wait_until(lambda: engine._scheduler.running == 2, message="two jobs taken by the two workers")
        left = [f"{record.input_name} {job.name}" for record, job in engine._scheduler._tasks]
        assert left == ["trio.yaml trio-003"], left
        was_running = ids["3"] in running(server)  # which prompt the server runs is its choice
        assert engine.cancel("trio-003", "by the test") == ["trio.yaml trio-003"]
        wait_until(lambda: ids["3"] not in queued(server).values(), timeout=10,
                   message="the third job's prompt off the server")
    finally:
        engine.stop()
    if was_running:  # interrupted
        assert any(m[0] == "execution_interrupted" for m in server.history()[ids["3"]]["status"]["messages"])
    else:  # dequeued before it ran
        assert ids["3"] not in server.executed_prompt_ids
