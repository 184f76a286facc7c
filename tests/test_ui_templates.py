"""UI-format templates (what ComfyUI's plain Save writes) converted with the server's /object_info and
run end to end through the daemon; rendering without a server refuses them with directions."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from hotfolder import daemon
from hotfolder.comfy import object_info
from hotfolder.errors import TemplateError
from hotfolder.stages import prepare
from hotfolder.templates import load
from hotfolder.testing import ComfyTestServer
from hotfolder.testing.png import decode_png
from tests.conftest import invoke_cli, make_settings, wait_until

pytestmark = pytest.mark.both_profiles  # the converter meets each catalogue (0.4x: V3 combos, other titles)

FIXTURES = Path(__file__).resolve().parent / "data" / "ui_workflows"

#: EmptyImage -> ImageInvert -> SaveImage as ComfyUI's Save button writes it (ids and links its own).
UI_INVERT: dict[str, Any] = {
    "last_node_id": 12,
    "last_link_id": 2,
    "nodes": [
        {"id": 10, "type": "EmptyImage", "pos": [0, 0], "size": [300, 130], "flags": {}, "order": 0, "mode": 0,
         "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "slot_index": 0, "links": [1]}],
         "properties": {"Node name for S&R": "EmptyImage"}, "widgets_values": [16, 8, 1, 0x204060]},
        {"id": 11, "type": "ImageInvert", "pos": [350, 0], "size": [200, 30], "flags": {}, "order": 1, "mode": 0,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "slot_index": 0, "links": [2]}],
         "properties": {"Node name for S&R": "ImageInvert"}, "widgets_values": []},
        {"id": 12, "type": "SaveImage", "pos": [600, 0], "size": [300, 270], "flags": {}, "order": 2, "mode": 0,
         "title": "Result", "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [],
         "properties": {}, "widgets_values": ["ui_invert"]},
        {"id": 9, "type": "Note", "pos": [0, 200], "size": [300, 60], "flags": {}, "order": 3, "mode": 0,
         "inputs": [], "outputs": [], "properties": {}, "widgets_values": ["made in the UI"]},
    ],
    "links": [[1, 10, 0, 11, 0, "IMAGE"], [2, 11, 0, 12, 0, "IMAGE"]],
    "groups": [],
    "config": {},
    "extra": {},
    "version": 0.4,
}


@pytest.fixture
def ui_project(project: Path) -> Path:
    (project / "templates" / "ui_invert.json").write_text(json.dumps(UI_INVERT, indent=1))
    return project


def prompts(comfy: ComfyTestServer) -> list[dict[str, Any]]:
    return [r["json"]["prompt"] for r in comfy.requests if r["method"] == "POST" and r["path"] == "/prompt"]


def test_a_ui_template_is_converted_and_runs_end_to_end(ui_project: Path, comfy: ComfyTestServer,
                                                        comfyui_profile: str) -> None:
    project = ui_project
    # no sidecar: 'prefix' is a role (SaveImage.filename_prefix); set: addresses work on the converted nodes
    (project / "inbox" / "ui.yaml").write_text(
        "template: ui_invert\nparams: {prefix: from_ui}\nset: {EmptyImage.color: 0x0000ff}\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["published"] == 1 and counts["failed"] == 0
    (sent,) = prompts(comfy)
    # An untitled node is titled as the frontend shows it: its class's display name on that server
    # ("EmptyImage" on 0.3.64, "Empty Image" on 0.4x).
    shown = {"EmptyImage": "EmptyImage", "ImageInvert": "Invert Image"} if comfyui_profile == "0.3" else {
        "EmptyImage": "Empty Image", "ImageInvert": "Invert Image Colors"}
    assert sent == {
        "10": {"inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0x0000FF}, "class_type": "EmptyImage",
               "_meta": {"title": shown["EmptyImage"]}},
        "11": {"inputs": {"image": ["10", 0]}, "class_type": "ImageInvert", "_meta": {"title": shown["ImageInvert"]}},
        "12": {"inputs": {"filename_prefix": "from_ui", "images": ["11", 0]}, "class_type": "SaveImage",
               "_meta": {"title": "Result"}},
    }
    out = project / "outbox" / "ui"
    (png_file,) = out.glob("from_ui_*.png")
    decoded = decode_png(png_file.read_bytes())
    assert (decoded.width, decoded.height) == (16, 8) and decoded.pixels[:3] == bytes([255, 255, 0])
    sidecar = json.loads((out / "ui.json").read_text())
    assert sidecar["workflow"] == sent
    assert sidecar["template"]["format"] == "ui" and sidecar["template"]["roles"]["prefix"] == "12.filename_prefix"
    assert sidecar["template"]["conversion"]["object_info"] == comfy.url
    assert any("9 (Note)" in d for d in sidecar["template"]["conversion"]["dropped"])


def test_the_real_ui_fixtures_convert_and_validate_in_the_daemon_path(project: Path, comfy: ComfyTestServer) -> None:
    """The fixture graphs go through load_template with the server's /object_info: converted, then
    refused before anything is queued only for what the model-free test server lacks (its models)."""
    comfy.set_models("checkpoints", ["tiny_sd15_random.safetensors", "sd_xl_base_1.0.safetensors",
                                     "sd_xl_refiner_1.0.safetensors"])
    settings = make_settings(project, comfy.url)
    source = object_info.FirstServer(settings)
    for name in ("txt2img_features", "sdxl_simple_example"):
        (project / "templates" / f"{name}.json").write_bytes((FIXTURES / f"{name}.json").read_bytes())
        template = load.load_template(project / "templates", name, object_info=source)
        assert template.source_format == "ui"
        rendered = prepare.render_file_jobs(settings, _scenario(project, name), object_info=source)[0]
        problems = [p for p in validate_errors(rendered.workflow, source)]
        assert problems == [], (name, [p.describe() for p in problems])


def _scenario(project: Path, template: str) -> Path:
    path = project / f"{template}.yaml"
    path.write_text(f"template: {template}\n")
    return path


def validate_errors(workflow: dict[str, Any], source: object_info.FirstServer) -> list:
    from hotfolder.templates import problems, validate

    found = source()
    assert found is not None
    return [p for p in validate.validate_workflow(workflow, found[0]) if p.severity == problems.ERROR]


def test_render_converts_with_a_reachable_server_and_explains_without_one(ui_project: Path, comfy: ComfyTestServer) -> None:
    project = ui_project
    (project / "r.yaml").write_text("template: ui_invert\nparams: {prefix: p}\n")
    result = invoke_cli("--server", comfy.url, "render", "r.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert workflow["12"]["inputs"]["filename_prefix"] == "p" and workflow["11"]["inputs"]["image"] == ["10", 0]
    offline = invoke_cli("--server", "http://127.0.0.1:9", "render", "r.yaml", cwd=project)
    assert offline.returncode == 1 and "Traceback" not in offline.stderr
    assert "is a ComfyUI UI workflow" in offline.stderr and "no server answered" in offline.stderr
    assert "Export (API)" in offline.stderr
    with pytest.raises(TemplateError, match="UI workflow"):
        load.load_template(project / "templates", "ui_invert")  # no object_info given at all


def test_a_ui_template_waits_for_a_server_instead_of_failing(ui_project: Path) -> None:
    project = ui_project
    probe = ComfyTestServer()
    probe.start()
    url, port = probe.url, probe.port
    probe.stop()
    (project / "inbox" / "later.yaml").write_text("template: ui_invert\n")
    settings = make_settings(project, url)
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(daemon.run_daemon(settings, once=True)))
    thread.start()

    def unrendered() -> bool:
        for record in (project / "inbox" / ".hotfolder").glob("*/*/job.json"):
            jobs = json.loads(record.read_text()).get("jobs") or []
            if jobs and jobs[0]["state"] == "unrendered":
                return True
        return False

    try:
        wait_until(unrendered, message="the job to wait unrendered")
        assert not (project / "inbox" / "failed").exists() or not any((project / "inbox" / "failed").iterdir())
        later = ComfyTestServer(port=port)
        later.start()
        try:
            thread.join(60)
            assert not thread.is_alive()
            assert result["published"] == 1 and result["failed"] == 0
            assert (project / "outbox" / "later").is_dir()
        finally:
            later.stop()
    finally:
        thread.join(60)


#: UI_INVERT with ImageInvert and SaveImage inside a subgraph (instance 20): the save's filename_prefix
#: is promoted onto the instance, whose own value ("from_instance") overrides the inner one ("inner").
SUBGRAPH_ID = "5b0c3a52-1f7e-4c0e-9d0b-2d7a3c1e9f10"
UI_SUBGRAPH: dict[str, Any] = {
    "nodes": [
        UI_INVERT["nodes"][0],
        {"id": 20, "type": SUBGRAPH_ID, "mode": 0, "title": "Invert and save",
         "inputs": [{"name": "image", "type": "IMAGE", "link": 1},
                    {"name": "prefix", "type": "STRING", "link": None, "widget": {"name": "prefix"}}],
         "outputs": [], "widgets_values": ["from_instance"]},
    ],
    "links": [[1, 10, 0, 20, 0, "IMAGE"]],
    "definitions": {"subgraphs": [{
        "id": SUBGRAPH_ID, "name": "Invert and save", "version": 1,
        "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [1]},
                   {"name": "prefix", "type": "STRING", "linkIds": [3]}],
        "outputs": [],
        "nodes": [
            {"id": 5, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": []},
            {"id": 6, "type": "SaveImage", "mode": 0, "title": "Inner result",
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2},
                        {"name": "filename_prefix", "type": "STRING", "link": 3,
                         "widget": {"name": "filename_prefix"}}],
             "outputs": [], "widgets_values": ["inner"]},
        ],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0, "type": "IMAGE"},
                  {"id": 2, "origin_id": 5, "origin_slot": 0, "target_id": 6, "target_slot": 0, "type": "IMAGE"},
                  {"id": 3, "origin_id": -10, "origin_slot": 1, "target_id": 6, "target_slot": 1, "type": "STRING"}],
    }]},
    "version": 0.4,
}


def test_a_ui_template_with_a_subgraph_renders_and_runs_through_the_flattened_ids(
    project: Path, comfy: ComfyTestServer
) -> None:
    (project / "templates" / "ui_sub.json").write_text(json.dumps(UI_SUBGRAPH, indent=1))
    # the promoted value lands on the inner input; a set: address reaches an inner node by its flat id
    (project / "plain.yaml").write_text("template: ui_sub\nset: {'20:5.image': ['10', 0]}\n")
    result = invoke_cli("--server", comfy.url, "render", "plain.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert set(workflow) == {"10", "20:5", "20:6"}
    assert workflow["20:6"] == {"inputs": {"filename_prefix": "from_instance", "images": ["20:5", 0]},
                                "class_type": "SaveImage", "_meta": {"title": "Inner result"}}
    assert workflow["20:5"]["inputs"] == {"image": ["10", 0]}
    # the prefix role is found inside the subgraph; a title reaches an inner node too
    (project / "inbox" / "sub.yaml").write_text(
        "template: ui_sub\nparams: {prefix: from_role}\nset: {'Inner result.filename_prefix': by_title}\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["published"] == 1 and counts["failed"] == 0
    (sent,) = prompts(comfy)
    assert sent["20:6"]["inputs"] == {"filename_prefix": "by_title", "images": ["20:5", 0]}
    sidecar = json.loads((project / "outbox" / "sub" / "sub.json").read_text())
    assert sidecar["template"]["roles"]["prefix"] == "20:6.filename_prefix"
    assert any("20:promoted1 (PrimitiveNode)" in d for d in sidecar["template"]["conversion"]["dropped"])
    assert list((project / "outbox" / "sub").glob("by_title_*.png"))
