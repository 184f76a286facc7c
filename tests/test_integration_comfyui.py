"""The daemon's end-to-end cases against a real ComfyUI, when COMFYUI_URL is set (model-free workflows).

    COMFYUI_URL=http://127.0.0.1:8188 pytest tests/test_integration_comfyui.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.scenarios import BAD_INPUTS, GOOD_INPUTS, check_good_results, write_inputs
from tests.test_daemon import settled, start_daemon, stop

URL = os.environ.get("COMFYUI_URL")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.skipif(not URL, reason="set COMFYUI_URL to run against a real ComfyUI")]


def test_real_comfyui_processes_every_format_and_every_bad_input(project: Path) -> None:
    assert URL
    proc = start_daemon(project, URL)
    try:
        good = write_inputs(project, GOOD_INPUTS)
        bad = write_inputs(project, BAD_INPUTS)
        wait_until(lambda: settled(project, good + bad), timeout=500, message="all inputs archived")
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    check_good_results(project, good)
    for name in bad:
        error = json.loads((project / "inbox" / "failed" / f"{name}.error.json").read_text())
        assert BAD_INPUTS[name][1] in json.dumps(error, ensure_ascii=False), (name, error)


def test_render_matches_what_the_real_server_received(project: Path) -> None:
    assert URL
    (project / "inbox" / "exact.yaml").write_text("params: {width: 13, height: 7, color: 99}\n")
    proc = start_daemon(project, URL)
    try:
        wait_until(lambda: settled(project, ["exact.yaml"]), timeout=120, message="exact.yaml archived")
    finally:
        stop(proc)
    sidecar = json.loads((project / "outbox" / "exact" / "exact.json").read_text())
    import requests  # only to read the real server's record of the prompt

    history = requests.get(f"{URL}/history/{sidecar['prompt_id']}", timeout=10).json()
    assert history[sidecar["prompt_id"]]["prompt"][2] == sidecar["workflow"]


SHAPES = {  # several outputs per node, a temp output, a text output; run twice, the second is fully cached
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 4242}},
    "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "hfshapes/s", "images": ["1", 0]}},
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    "4": {"class_type": "PrimitiveInt", "inputs": {"value": 40}},
    "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
}


def _files(outputs: dict) -> set[tuple[str, str, str, str]]:
    return {(str(node), item["filename"], item.get("subfolder", ""), item.get("type", "output"))
            for node, ui in outputs.items() for items in ui.values() if isinstance(items, list)
            for item in items if isinstance(item, dict) and item.get("filename")}


def test_outputs_taken_from_the_websocket_are_what_the_real_history_records(project: Path) -> None:
    """A job told start to success on one WebSocket connection is published from its `executed`
    messages without reading /history: check that against the real server's history, for a batch of
    images, a temp preview, a text value and a fully cached re-run."""
    assert URL
    (project / "templates" / "shapes.json").write_text(json.dumps(SHAPES))
    for name in ("first", "again"):
        (project / "inbox" / f"{name}.yaml").write_text("template: shapes\n")
    proc = start_daemon(project, URL)
    try:
        wait_until(lambda: settled(project, ["first.yaml", "again.yaml"]), timeout=120, message="both archived")
    finally:
        stop(proc)
    import requests  # only to read the real server's record of the prompts

    cached = []
    for name in ("first", "again"):
        sidecar = json.loads((project / "outbox" / name / f"{name}.json").read_text())
        entry = requests.get(f"{URL}/history/{sidecar['prompt_id']}", timeout=10).json()[sidecar["prompt_id"]]
        told = next(data["nodes"] for kind, data in entry["status"]["messages"] if kind == "execution_cached")
        assert sidecar["cached_nodes"] == told
        cached.append(sorted(told))
        published = {(o["node"], o["server_filename"], o["subfolder"], o["type"]) for o in sidecar["outputs"]}
        assert published == _files(entry["outputs"]) and len(published) == 4, name
        assert sidecar["ui_values"]["5"]["text"] == entry["outputs"]["5"]["text"]
        for output in sidecar["outputs"]:
            assert (project / "outbox" / name / output["file"]).stat().st_size == output["size"] > 0
    assert sorted(cached) == [[], ["1", "2", "3", "4", "5"]]  # whichever ran second was fully cached


def _slow(blurs: int) -> dict:
    """A model-free workflow that runs for seconds on a CPU: a chain of blurs (ComfyUI checks for an
    interrupt before each node, so a cancel lands at the next one)."""
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 256, "batch_size": 1,
                                                              "color": "{{ color }}"}}}
    for i in range(2, blurs + 2):
        workflow[str(i)] = {"class_type": "ImageBlur", "inputs": {"image": [str(i - 1), 0], "blur_radius": 31,
                                                                  "sigma": 10.0}}
    workflow["99"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "hfcancel/c",
                                                            "images": [str(blurs + 1), 0]}}
    return workflow


def test_hotfolder_cancel_dequeues_and_interrupts_only_its_own_prompts_on_the_real_server(project: Path) -> None:
    """Two jobs of one file, one running and one queued behind it, cancelled by `hotfolder cancel`
    against a real daemon: neither finishes, the input is in failed/ with `cancelled`, nothing is published."""
    assert URL
    import uuid

    import requests  # only to read the real server's queue and history

    (project / "templates" / "slowblur.json").write_text(json.dumps(_slow(40)))
    (project / "templates" / "slowblur.toml").write_text('[params.color]\ntype = "int"\ndefault = 0\n')
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    seed = uuid.uuid4().int % 10**6  # a colour no earlier run used: nothing is cached
    (project / "inbox" / f"{name}.yaml").write_text(
        f"template: slowblur\njobs:\n  - params: {{color: {seed}}}\n  - params: {{color: {seed + 1}}}\n")

    def ours() -> dict[str, str]:
        """Our prompts on the real server: running or pending, by id."""
        queue = requests.get(f"{URL}/queue", timeout=10).json()
        found = {}
        for state, items in (("running", queue["queue_running"]), ("pending", queue["queue_pending"])):
            for item in items:
                if (item[3].get("extra_pnginfo") or {}).get("hotfolder", {}).get("file") == f"{name}.yaml":
                    found[item[1]] = state
        return found

    proc = start_daemon(project, URL)
    try:
        prompts = wait_until(lambda: len(q := ours()) == 2 and "running" in q.values() and q, timeout=120,
                             message="our two prompts on the server, one running")
        result = subprocess.run([sys.executable, "-m", "hotfolder", "cancel", f"{name}.yaml"], cwd=project,
                                env={k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: settled(project, [f"{name}.yaml"]), timeout=120, message="the file archived")
    finally:
        log = stop(proc)
    assert (project / "inbox" / "failed" / f"{name}.yaml").is_file(), log
    error = json.loads((project / "inbox" / "failed" / f"{name}.yaml.error.json").read_text())
    assert error["stage"] == "cancelled" and "cancelled by `hotfolder cancel`" in error["message"], error
    assert not [p for p in (project / "outbox").iterdir() if not p.name.startswith(".")]
    assert not ours()
    for prompt_id, state in prompts.items():
        entry = requests.get(f"{URL}/history/{prompt_id}", timeout=10).json().get(prompt_id)
        if state == "running":  # interrupted, by its id
            assert entry and any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"]), entry
        else:  # dequeued before it ran, or interrupted if it had started meanwhile
            assert entry is None or entry["status"]["status_str"] == "error", entry


def test_a_daemon_killed_while_its_prompt_runs_adopts_it_after_a_restart_on_the_real_server(project: Path) -> None:
    """SIGKILL the daemon while its prompt runs on the real server, start it again: the prompt is found
    (the jobs API where the server has it, else /history and /queue), never sent twice, and published."""
    assert URL
    import signal
    import uuid

    import requests  # only to read the real server's queue and history

    (project / "templates" / "slowblur.json").write_text(json.dumps(_slow(80)))
    (project / "templates" / "slowblur.toml").write_text('[params.color]\ntype = "int"\ndefault = 0\n')
    name = f"adopt-{uuid.uuid4().hex[:8]}"
    (project / "inbox" / f"{name}.yaml").write_text(f"template: slowblur\nparams: {{color: {uuid.uuid4().int % 10**6}}}\n")

    def ours(entries: list) -> list[str]:
        return [item[1] for item in entries
                if (item[3].get("extra_pnginfo") or {}).get("hotfolder", {}).get("file") == f"{name}.yaml"]

    proc = start_daemon(project, URL)
    try:
        [running] = wait_until(lambda: ours(requests.get(f"{URL}/queue", timeout=10).json()["queue_running"]),
                               timeout=120, message="our prompt running on the server")
    finally:
        stop(proc, signal.SIGKILL)
    proc = start_daemon(project, URL)
    try:
        wait_until(lambda: settled(project, [f"{name}.yaml"]), timeout=300, message="the file archived")
    finally:
        log = stop(proc)
    assert (project / "inbox" / "done" / f"{name}.yaml").is_file(), log
    sidecar = json.loads((project / "outbox" / name / f"{name}.json").read_text())
    assert sidecar["prompt_id"] == running and (sidecar["submissions"], sidecar["resubmissions"]) == (1, 0)
    history = requests.get(f"{URL}/history", params={"max_items": 200}, timeout=10).json()
    assert ours([entry["prompt"] for entry in history.values()]) == [running]  # sent once, adopted
