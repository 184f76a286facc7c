"""The engine end to end, in-process, against the real test ComfyUI server on loopback."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hotfolder import daemon
from hotfolder.engine import Engine
from hotfolder.events import Event
from hotfolder.testing import ComfyTestServer
from tests.conftest import make_settings, wait_until

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def drain(settings, **kw) -> dict[str, int]:
    return daemon.run_daemon(settings, once=True, **kw)


def read_error(project: Path, name: str) -> dict:
    return json.loads((project / "inbox" / "failed" / f"{name}.error.json").read_text())


@pytest.mark.both_profiles
def test_yaml_scenario_is_rendered_run_downloaded_and_published(project: Path, comfy: ComfyTestServer) -> None:
    (project / "inbox" / "red-fox.yaml").write_text(
        'template: invert\nparams:\n  width: 32\n  height: 16\n  color: 0x102030\n', encoding="utf-8")
    counts = drain(make_settings(project, comfy.url))
    assert counts["published"] == 1 and counts["failed"] == 0
    out = project / "outbox" / "red-fox"
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 1 and png_size(pngs[0]) == (32, 16)
    sidecar = json.loads((out / "red-fox.json").read_text())
    assert sidecar["scenario"]["file"] == "red-fox.yaml"
    assert len(sidecar["scenario"]["sha256"]) == 64
    assert sidecar["template"]["name"] == "invert" and len(sidecar["template"]["sha256"]) == 64
    assert sidecar["params"]["width"] == 32
    assert sidecar["workflow"]["1"]["inputs"]["width"] == 32
    assert sidecar["server"] == comfy.url
    assert sidecar["prompt_id"] in comfy.history()
    assert sidecar["comfyui_version"]
    assert sidecar["timestamps"]["submitted"] and sidecar["timestamps"]["finished"]
    (entry,) = sidecar["outputs"]
    assert entry["file"] == pngs[0].name and entry["node"] == "3" and entry["kind"] == "image"
    assert entry["size"] == pngs[0].stat().st_size and len(entry["sha256"]) == 64
    assert (project / "inbox" / "done" / "red-fox.yaml").is_file()
    assert not list((project / "inbox" / ".hotfolder").glob("*/*/job.json"))
    assert not (project / "outbox" / ".hotfolder-staging").exists() or not any((project / "outbox" / ".hotfolder-staging").iterdir())
    # the workflow in the sidecar is exactly the one ComfyUI received
    posts = [r for r in comfy.requests if r["method"] == "POST" and r["path"].endswith("/prompt")]
    assert posts[-1]["json"]["prompt"] == sidecar["workflow"]
    assert posts[-1]["json"]["prompt_id"] == sidecar["prompt_id"]


@pytest.mark.both_profiles
def test_batch_file_publishes_one_folder_per_job(project: Path, comfy: ComfyTestServer) -> None:
    (project / "inbox" / "grid.json").write_text(json.dumps({
        "template": "invert", "params": {"width": 8, "height": 8}, "matrix": {"color": [0, 255]}, "repeat": 2,
    }))
    counts = drain(make_settings(project, comfy.url))
    assert counts["published"] == 4
    folders = sorted(p.name for p in (project / "outbox").iterdir() if not p.name.startswith("."))
    assert folders == ["grid-001", "grid-002", "grid-003", "grid-004"]
    assert (project / "inbox" / "done" / "grid.json").exists()


def test_prompt_with_quotes_newlines_and_emoji_arrives_intact(project: Path, comfy: ComfyTestServer) -> None:
    prompt = 'a "red" fox\\n in C:\\snow\n second line 🦊 {{ 7*7 }}'
    template = json.loads((project / "templates" / "invert.json").read_text())
    template["3"]["inputs"]["filename_prefix"] = "quotes"
    template["1"]["_meta"]["title"] = "{{ prompt }}"
    (project / "templates" / "quoted.json").write_text(json.dumps(template))
    (project / "templates" / "quoted.toml").write_text((project / "templates" / "invert.toml").read_text())
    (project / "inbox" / "q.json").write_text(json.dumps({"template": "quoted", "params": {"prompt": prompt}}))
    drain(make_settings(project, comfy.url))
    posts = [r for r in comfy.requests if r["method"] == "POST" and r["path"].endswith("/prompt")]
    assert posts[-1]["json"]["prompt"]["1"]["_meta"]["title"] == prompt
    assert (project / "inbox" / "done" / "q.json").exists()


@pytest.mark.both_profiles
def test_node_errors_are_mapped_to_node_title_class_and_input(project: Path, comfy: ComfyTestServer) -> None:
    (project / "inbox" / "bad.yaml").write_text("template: invert\nparams:\n  width: 0\n")
    counts = drain(make_settings(project, comfy.url, validate=False))  # ComfyUI's own 400 this time
    assert counts["failed"] == 1
    error = read_error(project, "bad.yaml")
    assert error["stage"] == "submit"
    assert error["where"]["node"] == {"id": "1", "title": "Empty Image", "class_type": "EmptyImage"}
    assert error["where"]["input"] == "width"
    assert "width" in error["message"] and "Empty Image" in error["message"]
    assert error["hint"]
    assert (project / "inbox" / "failed" / "bad.yaml").exists()


@pytest.mark.both_profiles
def test_execution_error_names_the_node_and_exception(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.fail_node("ImageInvert", message="boom on purpose", exception_type="RuntimeError")
    (project / "inbox" / "boom.yaml").write_text("template: invert\n")
    drain(make_settings(project, comfy.url))
    error = read_error(project, "boom.yaml")
    assert error["stage"] == "track"
    assert error["where"]["node"]["id"] == "2" and error["where"]["node"]["class_type"] == "ImageInvert"
    assert "boom on purpose" in error["message"] and "RuntimeError" in error["message"]


def test_a_failed_job_in_a_batch_fails_the_file_but_keeps_the_others(project: Path, comfy: ComfyTestServer) -> None:
    (project / "inbox" / "mixed.jsonl").write_text(
        '{"params": {"width": 8}}\n{"params": {"width": -3}}\n{"params": {"width": 9}}\n')
    counts = drain(make_settings(project, comfy.url))
    assert counts["published"] == 2 and counts["failed"] == 1
    error = read_error(project, "mixed.jsonl")
    assert "1 of 3 jobs failed" in error["message"]
    assert [j["state"] for j in error["jobs"]] == ["published", "failed", "published"]
    assert (project / "outbox" / "mixed-001").is_dir() and (project / "outbox" / "mixed-003").is_dir()


def test_outbox_name_collision_gets_a_suffix_never_an_overwrite(project: Path, comfy: ComfyTestServer) -> None:
    (project / "outbox" / "fox").mkdir()
    (project / "outbox" / "fox" / "keep.txt").write_text("mine")
    (project / "inbox" / "fox.yaml").write_text("params: {width: 8}\n")
    drain(make_settings(project, comfy.url))
    assert (project / "outbox" / "fox" / "keep.txt").read_text() == "mine"
    assert (project / "outbox" / "fox-2" / "fox-2.json").is_file()


def test_cached_rerun_still_downloads_the_outputs(project: Path, comfy: ComfyTestServer) -> None:
    for name in ("a.yaml", "b.yaml"):
        (project / "inbox" / name).write_text("params: {width: 12, height: 12, color: 5}\n")
        drain(make_settings(project, comfy.url))
    sidecar = json.loads((project / "outbox" / "b" / "b.json").read_text())
    assert sidecar["cached_nodes"] == ["1", "2", "3"]
    assert len(sidecar["outputs"]) == 1 and (project / "outbox" / "b" / sidecar["outputs"][0]["file"]).is_file()


@pytest.mark.both_profiles
def test_history_lagging_behind_execution_success_is_waited_for(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.history_delay(1.0)
    (project / "inbox" / "lag.yaml").write_text("params: {width: 8}\n")
    counts = drain(make_settings(project, comfy.url))
    assert counts["published"] == 1
    assert len(list((project / "outbox" / "lag").glob("*.png"))) == 1


@pytest.mark.parametrize("fault, overrides", [
    (lambda faults: faults.view_status(500, count=2), {}),  # a download answered 500: retried
    (lambda faults: faults.post_status(500, count=1), {}),  # a POST answered 500 that did not queue: sent again once
    (lambda faults: faults.post_hang(count=1, seconds=4), {"http_timeout": 1.0}),  # the answer never arrives: not run twice
    (lambda faults: faults.silence_websockets(True), {}),  # a silent WebSocket: the job does not hang
], ids=["view_500_is_retried", "post_500_that_did_not_queue_is_sent_again_once",
        "post_whose_answer_never_arrives_is_not_run_twice", "silent_websocket_does_not_hang_jobs"])
@pytest.mark.both_profiles
def test_a_server_fault_it_recovers_from_publishes_the_job_once(
        project: Path, comfy: ComfyTestServer, fault: Callable[[Any], None], overrides: dict[str, float]) -> None:
    fault(comfy.faults)
    (project / "inbox" / "f.yaml").write_text("params: {width: 8}\n")
    counts = drain(make_settings(project, comfy.url, **overrides))
    assert counts["published"] == 1
    assert len(comfy.executed_prompt_ids) == 1


@pytest.mark.both_profiles
def test_server_down_at_start_makes_jobs_wait_not_fail(project: Path, comfyui_profile: str) -> None:
    server = ComfyTestServer(comfyui=comfyui_profile)
    server.start()
    url, port = server.url, server.port
    server.stop()
    (project / "inbox" / "w.yaml").write_text("params: {width: 8}\n")
    settings = make_settings(project, url)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(drain(settings)))
    thread.start()
    wait_until(lambda: any((project / "inbox" / ".hotfolder").glob("*/*/job.json")), message="claim")
    assert not (project / "inbox" / "failed").exists() or not any((project / "inbox" / "failed").iterdir())
    later = ComfyTestServer(port=port, comfyui=comfyui_profile)
    later.start()
    try:
        thread.join(60)
        assert result["published"] == 1
    finally:
        later.stop()


@pytest.mark.both_profiles
def test_server_restart_mid_job_resubmits_the_lost_prompt(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.node_delay("ImageInvert", 60)  # held until the restart, however slow the machine
    (project / "inbox" / "r.yaml").write_text("params: {width: 8}\n")
    settings = make_settings(project, comfy.url)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(drain(settings)))
    thread.start()
    wait_until(lambda: comfy.executed_prompt_ids, message="execution start")
    first = comfy.executed_prompt_ids[0]
    comfy.restart()
    comfy.faults.clear()
    thread.join(60)
    assert result["published"] == 1
    sidecar = json.loads((project / "outbox" / "r" / "r.json").read_text())
    assert sidecar["prompt_id"] == first and sidecar["resubmissions"] == 1


@pytest.mark.both_profiles
def test_websocket_drops_do_not_hang_jobs(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.drop_websockets_every(0.3)
    comfy.faults.node_delay("ImageInvert", 0.5)
    for i in range(3):
        (project / "inbox" / f"d{i}.yaml").write_text(f"params: {{width: {8 + i}}}\n")
    counts = drain(make_settings(project, comfy.url))
    comfy.faults.drop_websockets_every(0)
    assert counts["published"] == 3


@pytest.mark.both_profiles
def test_a_healthy_job_costs_one_post_and_one_download(project: Path, comfy: ComfyTestServer) -> None:
    """A prompt queued while the WebSocket is up, and told start to success on that same connection,
    needs neither /history nor /queue: the socket's `executed` messages are its outputs."""
    for i in range(4):
        (project / "inbox" / f"h{i}.yaml").write_text(f"params: {{width: {8 + i}}}\n")
    counts = drain(make_settings(project, comfy.url, poll_interval=5.0))
    assert counts["published"] == 4
    calls = [(r.method, r.path.split("/")[1]) for r in comfy.requests]
    assert calls.count(("POST", "prompt")) == 4 and calls.count(("GET", "view")) == 4
    assert ("GET", "queue") not in calls and ("GET", "history") not in calls
    for i in range(4):
        sidecar = json.loads((project / "outbox" / f"h{i}" / f"h{i}.json").read_text())
        assert [o["node"] for o in sidecar["outputs"]] == ["3"] and sidecar["timestamps"]["started"]


@pytest.mark.both_profiles
def test_a_job_that_ends_while_the_socket_is_away_is_seen_on_reconnect(project: Path, comfy: ComfyTestServer) -> None:
    """With a long poll_interval, a reconnect alone makes hotfolder look at the history at once."""
    comfy.faults.node_delay("ImageInvert", 1.0)
    (project / "inbox" / "quiet.yaml").write_text("params: {width: 8}\n")
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(drain(make_settings(project, comfy.url, poll_interval=120.0))))
    thread.start()
    wait_until(lambda: comfy.executed_prompt_ids, message="the prompt started")
    comfy.faults.silence_websockets(True)  # its end is never told on this socket
    wait_until(lambda: comfy.history(), message="the prompt finished, unheard")
    comfy.faults.silence_websockets(False)
    comfy.faults.drop_websockets()  # 1006: the client reconnects
    thread.join(60)  # without the poll on reconnect this would wait for poll_interval (120 s)
    assert not thread.is_alive() and result["published"] == 1
    assert any(r.path.startswith("/history/") for r in comfy.requests)  # the socket broke: history decides


@pytest.mark.both_profiles
def test_job_timeout_interrupts_and_fails(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.node_delay("ImageInvert", 30)
    (project / "inbox" / "slow.yaml").write_text("params: {width: 8}\n")
    counts = drain(make_settings(project, comfy.url, job_timeout=1.0))
    assert counts["failed"] == 1
    error = read_error(project, "slow.yaml")
    assert error["error"] == "JobTimeout"
    wait_until(lambda: comfy.wait_idle(timeout=0.1) is not False, message="server idle after interrupt")


def test_events_report_progress(project: Path, comfy: ComfyTestServer) -> None:
    template = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.3}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sleepy", "images": ["2", 0]}},
    }
    (project / "templates" / "sleepy.json").write_text(json.dumps(template))
    (project / "inbox" / "z.yaml").write_text("template: sleepy\n")
    events: list[Event] = []
    drain(make_settings(project, comfy.url), listeners=[events.append])
    progress = [e for e in events if e.kind == "progress" and e.detail.get("max")]
    assert progress and progress[-1].detail["node"] == "2"
    kinds = [e.kind for e in events]
    assert kinds.index("claimed") < kinds.index("submitted") < kinds.index("published") < kinds.index("archived")
    sidecar = json.loads((project / "outbox" / "z" / "z.json").read_text())
    assert len(sidecar["outputs"]) == 1  # binary preview frames were not taken for results


@pytest.mark.both_profiles
def test_engine_recovers_a_job_folder_left_by_a_killed_run(project: Path, comfy: ComfyTestServer) -> None:
    settings = make_settings(project, comfy.url)
    (project / "inbox" / "k.yaml").write_text("params: {width: 8}\n")
    engine = Engine(settings)
    record = engine.accept(project / "inbox" / "k.yaml")  # claimed and rendered, workers never started
    assert record is not None and record.state == "parsed"
    counts = drain(settings)
    assert counts["published"] == 1
    assert (project / "inbox" / "done" / "k.yaml").exists()


def test_credentials_never_reach_logs_sidecars_or_error_files(project: Path, comfy: ComfyTestServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:

    caplog.set_level(logging.DEBUG)
    url = comfy.url.replace("http://", "http://alice:pa55word@")
    (project / "hotfolder.toml").write_text(f'[[servers]]\nurl = "{url}"\ntoken = "t0ken-s3cret"\n')
    (project / "inbox" / "ok.yaml").write_text("params: {width: 8}\n")
    (project / "inbox" / "bad.yaml").write_text("params: {width: 0}\n")
    from hotfolder.config import load_settings

    settings = load_settings(project / "hotfolder.toml", env={}, cwd=project,
                             overrides={"default_template": "invert", "settle_seconds": 0.1})
    drain(settings)
    texts = [caplog.text]
    texts += [p.read_text() for p in (project / "outbox").rglob("*.json")]
    texts += [p.read_text() for p in (project / "inbox" / "failed").glob("*.error.json")]
    assert len(texts) == 3
    for text in texts:
        assert "pa55word" not in text and "t0ken-s3cret" not in text and "alice" not in text
    posts = [r for r in comfy.requests if r["path"].endswith("/prompt") and r["method"] == "POST"]
    assert posts[0]["headers"].get("Authorization") == "Bearer t0ken-s3cret"


def test_basic_auth_from_the_url_is_sent_as_a_header(project: Path, comfy: ComfyTestServer) -> None:
    url = comfy.url.replace("http://", "http://alice:pa55word@")
    (project / "inbox" / "ok.yaml").write_text("params: {width: 8}\n")
    drain(make_settings(project, url))
    posts = [r for r in comfy.requests if r["path"].endswith("/prompt") and r["method"] == "POST"]
    assert posts[0]["headers"].get("Authorization") == "Basic YWxpY2U6cGE1NXdvcmQ="
    assert "pa55word" not in (project / "outbox" / "ok" / "ok.json").read_text()


@pytest.mark.slow
def test_jobs_spread_over_several_servers_and_move_off_one_that_dies(project: Path) -> None:
    servers = [ComfyTestServer(), ComfyTestServer()]
    for server in servers:
        server.start()
        server.faults.node_delay("ImageInvert", 0.2)
    try:
        for i in range(8):
            (project / "inbox" / f"m{i}.yaml").write_text(f"params: {{width: {8 + i}}}\n")
        settings = make_settings(project, servers[0].url, servers=[s.url for s in servers], lost_grace=1.0)
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(drain(settings)))
        thread.start()
        wait_until(lambda: servers[1].executed_prompt_ids, message="second server busy")
        servers[1].stop()  # dies with work queued on it
        thread.join(90)
        assert result["published"] == 8 and result["failed"] == 0
        by_server = {}
        for sidecar in (project / "outbox").glob("*/*.json"):
            data = json.loads(sidecar.read_text())
            by_server.setdefault(data["server"], []).append(data)
        assert servers[0].url in by_server
        moved = [d for d in by_server[servers[0].url] if d["resubmissions"]]
        assert moved, "no job moved off the dead server"
    finally:
        for server in servers:
            server.stop()


def test_a_scenario_can_pin_a_server(project: Path) -> None:
    servers = [ComfyTestServer(), ComfyTestServer()]
    for server in servers:
        server.start()
    try:
        for i in range(4):
            (project / "inbox" / f"p{i}.yaml").write_text(f"server: {servers[1].url}\nparams: {{width: {8 + i}}}\n")
        drain(make_settings(project, servers[0].url, servers=[s.url for s in servers]))
        assert len(servers[1].executed_prompt_ids) == 4 and not servers[0].executed_prompt_ids
    finally:
        for server in servers:
            server.stop()


@pytest.mark.both_profiles
def test_a_checkpoint_not_on_the_server_fails_before_anything_is_queued(project: Path, comfy: ComfyTestServer) -> None:
    comfy.set_models("checkpoints", ["tiny_sd15_random.safetensors"])  # a server without txt2img's default model
    (project / "inbox" / "fox.yaml").write_text('template: txt2img\nparams: {prompt: "a fox", sampler: eulr}\n')
    counts = drain(make_settings(project, comfy.url))
    assert counts["failed"] == 1
    error = read_error(project, "fox.yaml")
    assert error["stage"] == "validate"
    assert "v1-5-pruned-emaonly.safetensors" in error["message"] and "tiny_sd15_random.safetensors" in error["message"]
    assert "did you mean 'euler'" in error["message"] and "params.sampler" in error["message"]
    assert error["where"]["node"] and error["where"]["file"] == "fox.yaml"
    assert not [r for r in comfy.requests if r["path"].endswith("/prompt") and r["method"] == "POST"]


def test_a_job_goes_only_to_a_server_that_has_its_model(project: Path) -> None:
    servers = [ComfyTestServer(), ComfyTestServer()]
    for server in servers:
        server.start()
    try:
        template = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": "{{ color }}"}},
            "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15_random.safetensors"}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "m", "images": ["1", 0]}},
            "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        }
        (project / "templates" / "needs_model.json").write_text(json.dumps(template))
        servers[0].set_models("checkpoints", ["something_else.safetensors"])  # only the second has the model
        for i in range(4):
            (project / "inbox" / f"n{i}.yaml").write_text(f"template: needs_model\nparams: {{color: {i}}}\n")
        drain(make_settings(project, servers[0].url, servers=[s.url for s in servers]))
        # routed by the model: every job ran on the second server (where the test server cannot load a
        # real checkpoint, so they fail at run time: the routing is what is checked here)
        assert len(servers[1].executed_prompt_ids) == 4 and not servers[0].executed_prompt_ids
        (project / "inbox" / "alone.yaml").write_text("template: needs_model\nparams: {color: 9}\nserver: " + servers[0].url + "\n")
        drain(make_settings(project, servers[0].url, servers=[s.url for s in servers]))
        error = read_error(project, "alone.yaml")
        assert error["stage"] == "validate" and "something_else.safetensors" in error["message"]
    finally:
        for server in servers:
            server.stop()


GATE_PLUGIN = '''
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotfolder import hookimpl

GATE = Path(__file__).parent / "gate-open"


def hold(job):
    """Keeps every job in post-processing until the test opens the gate."""
    (GATE.parent / f"holding-{job.sidecar['name']}").touch()
    deadline = time.monotonic() + 60
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@hookimpl
def register_postprocessors(register):
    register("hold", hold)
'''


def _run_in_background(settings) -> tuple[threading.Thread, dict[str, dict[str, int]]]:
    from hotfolder import plugins

    hooks = plugins.load_hooks(settings)
    result: dict[str, dict[str, int]] = {}
    thread = threading.Thread(target=lambda: result.setdefault("counts", drain(settings, hooks=hooks)), daemon=True)
    thread.start()
    return thread, result


def _held_at_the_gate(project: Path, url: str, prefix: str, count: int, **settings: object):
    """``count`` files whose jobs stay in the "hold" post-processor until the gate opens, run in the background."""
    (project / "plugins" / "gate.py").write_text(GATE_PLUGIN)
    for i in range(count):
        (project / "inbox" / f"{prefix}{i:02d}.yaml").write_text(f"params: {{width: 8, height: 8, color: {i}}}\n")
    return _run_in_background(make_settings(project, url, postprocess=["hold"], **settings))


def test_a_slow_post_processor_never_keeps_the_next_prompt_from_being_queued(project: Path, comfy: ComfyTestServer) -> None:
    # 3 job workers (queue_depth 2 + 1) and 1 output worker. Before the output workers existed, the
    # three job workers sat in the post-processor and the server got nothing more after 3 jobs.
    thread, result = _held_at_the_gate(project, comfy.url, "g", 6, output_workers=1)
    wait_until(lambda: len(comfy.executed_prompt_ids) == 6, message="all 6 prompts run while the outputs wait")
    assert not [p for p in (project / "outbox").iterdir() if not p.name.startswith(".")]
    (project / "plugins" / "gate-open").touch()
    thread.join(60)
    assert result["counts"]["published"] == 6
    assert sorted(p.name for p in (project / "inbox" / "done").iterdir()) == [f"g{i:02d}.yaml" for i in range(6)]


def test_submitting_pauses_when_finished_jobs_pile_up_for_the_output_workers(
    project: Path, comfy: ComfyTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    thread, result = _held_at_the_gate(project, comfy.url, "p", 20, output_workers=1)
    wait_until(lambda: "finished jobs are waiting to be downloaded and published" in caplog.text,
               message="the backlog warning")
    # at most: the one in the post-processor, 8 waiting (8 x output_workers), and one more from each of
    # the 3 job workers that took a job before the 8th was waiting
    assert len(comfy.executed_prompt_ids) <= 1 + 8 + 3 - 1
    opened = time.time()
    (project / "plugins" / "gate-open").touch()
    thread.join(60)
    assert result["counts"]["published"] == 20
    assert len(set(comfy.executed_prompt_ids)) == len(comfy.executed_prompt_ids) == 20
    # and submitting stayed paused until the outputs moved again: the rest ran after the gate opened
    starts = [dict(entry["status"]["messages"])["execution_start"]["timestamp"] / 1000
              for entry in comfy.history().values()]
    assert sum(start >= opened for start in starts) >= 20 - (1 + 8 + 3 - 1)


def test_outputs_a_server_cannot_give_hold_up_only_that_server(project: Path) -> None:
    away, well = ComfyTestServer(), ComfyTestServer()
    for server in (away, well):
        server.start()
    try:
        settings = make_settings(project, away.url, servers=[away.url, well.url], output_workers=1)
        away.faults.view_status(500, count=None)
        (project / "inbox" / "x.yaml").write_text(f"server: {away.url}\nparams: {{width: 8, height: 8}}\n")
        thread, result = _run_in_background(settings)
        wait_until(lambda: [r for r in away.requests if r["path"] == "/view"], message="x's download to start")
        away.stop()  # x's output worker now waits for the server to come back
        (project / "inbox" / "y.yaml").write_text(f"server: {well.url}\nparams: {{width: 8, height: 8}}\n")
        wait_until(lambda: (project / "inbox" / "done" / "y.yaml").exists(), message="y, on the other server")
        assert not (project / "outbox" / "x").exists() and not (project / "inbox" / "done" / "x.yaml").exists()
        away.faults.clear()
        away.restart()  # same port; its output folder (x's image) is still there
        thread.join(60)
        assert result["counts"]["published"] == 2 and (project / "outbox" / "x").is_dir()
    finally:
        for server in (away, well):
            server.stop()


def test_more_output_workers_start_when_finished_jobs_wait_for_one(project: Path, comfy: ComfyTestServer) -> None:
    thread, result = _held_at_the_gate(project, comfy.url, "w", 5, output_workers=3)
    # one output worker holds the first job; the others wait over a second, so two more start (3 at most)
    wait_until(lambda: len(list((project / "plugins").glob("holding-*"))) == 3, message="3 jobs post-processed at once")
    wait_until(lambda: len(comfy.executed_prompt_ids) == 5, message="all 5 prompts run")
    assert len(list((project / "plugins").glob("holding-*"))) == 3
    (project / "plugins" / "gate-open").touch()
    thread.join(60)
    assert result["counts"]["published"] == 5


@pytest.mark.both_profiles
def test_a_download_retried_after_a_failed_output_publishes_each_output_once(project: Path, comfy: ComfyTestServer) -> None:
    comfy.faults.view_status(500, count=1, skip=1)  # the job's first image downloads, its second fails once
    (project / "inbox" / "two.yaml").write_text("params: {width: 8, height: 8, batch_size: 2}\n")
    counts = drain(make_settings(project, comfy.url))
    assert counts["published"] == 1
    out = project / "outbox" / "two"
    sidecar = json.loads((out / "two.json").read_text())
    listed = sorted(entry["file"] for entry in sidecar["outputs"])
    assert len(listed) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([*listed, "two.json"])  # nothing left from the failed try
