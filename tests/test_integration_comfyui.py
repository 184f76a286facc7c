"""The daemon's end-to-end cases against a real ComfyUI, when COMFYUI_URL is set (model-free workflows).

    COMFYUI_URL=http://127.0.0.1:8188 pytest tests/test_integration_comfyui.py
"""

from __future__ import annotations

import json
import os
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
