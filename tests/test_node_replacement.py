"""Deprecated-node replacement (the 0.4x profile): the server rewrites a node whose class it no longer has
into its registered replacement on submit, so its history holds another graph than the one sent.
hotfolder still finds the outputs (the node ids stay) and its sidecar keeps the workflow it sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from hotfolder.testing import ComfyTestServer, png
from tests.conftest import invoke_cli

TIMEOUT = 10.0

LONGER_EDGE = {  # ResizeImagesByLongerEdge: replaced by ImageScaleToMaxDimension on submit (0.4x)
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0x3366CC}},
    "2": {"class_type": "ResizeImagesByLongerEdge", "_meta": {"title": "Longer edge"},
          "inputs": {"images": ["1", 0], "longer_edge": 32}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "edge"}},
}


def post(server: ComfyTestServer, prompt: dict[str, Any]) -> requests.Response:
    return requests.post(server.url + "/prompt", json={"prompt": prompt}, timeout=TIMEOUT)


def test_the_04x_server_replaces_a_class_it_no_longer_has_and_its_history_shows_the_new_graph() -> None:
    with ComfyTestServer(comfyui="0.4x") as server:
        catalogue = requests.get(server.url + "/object_info", timeout=TIMEOUT).json()
        assert "ResizeImagesByLongerEdge" not in catalogue and "ImageScaleToMaxDimension" in catalogue
        answer = post(server, LONGER_EDGE)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        server.wait_idle(TIMEOUT)
        entry = server.history()[prompt_id]
        assert entry["status"]["status_str"] == "success"
        ran = entry["prompt"][2]
        assert ran["2"] == {"class_type": "ImageScaleToMaxDimension", "_meta": {"title": "Longer edge"},
                            "inputs": {"image": ["1", 0], "largest_size": 32, "upscale_method": "lanczos"}}
        assert ran["3"] == LONGER_EDGE["3"]  # the link to the replaced node is unchanged (output 0 -> 0)
        job = requests.get(f"{server.url}/api/jobs/{prompt_id}", timeout=TIMEOUT).json()
        assert job["workflow"]["prompt"]["2"]["class_type"] == "ImageScaleToMaxDimension"
        (saved,) = entry["outputs"]["3"]["images"]
        image = png.decode_png((server.output_dir / saved["filename"]).read_bytes())
        assert (image.width, image.height) == (32, 16)  # the longer edge is 32, the aspect kept
    with ComfyTestServer(comfyui="0.3") as old:  # 0.3.64 has neither the class nor the replacement
        refused = post(old, LONGER_EDGE)
        assert refused.status_code == 400 and "ResizeImagesByLongerEdge does not exist" in refused.text


def test_hotfolder_publishes_a_replaced_nodes_output_and_its_sidecar_keeps_the_sent_workflow(project: Path) -> None:
    (project / "templates" / "edge.json").write_text(json.dumps(LONGER_EDGE))
    (project / "edge.yaml").write_text("template: edge\n")
    # hotfolder's own check refuses a class /object_info does not list; the server would replace it
    (project / "hotfolder.toml").write_text("validate = false\n")
    with ComfyTestServer(comfyui="0.4x") as server:
        result = invoke_cli("--server", server.url, "process", "edge.yaml", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        (entry,) = server.history().values()
        assert entry["prompt"][2]["2"]["class_type"] == "ImageScaleToMaxDimension"  # replaced on the server
    folder = project / "outbox" / "edge"
    sidecar = json.loads((folder / "edge.json").read_text())
    assert sidecar["workflow"]["2"]["class_type"] == "ResizeImagesByLongerEdge"  # what was sent
    (output,) = sidecar["outputs"]
    image = png.decode_png((folder / output["file"]).read_bytes())
    assert (image.width, image.height) == (32, 16)
