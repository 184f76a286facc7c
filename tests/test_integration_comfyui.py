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
