"""The four example plugins in plugins/, end to end against the test ComfyUI server.

Jobs really run on ``hotfolder.testing.ComfyTestServer``: the workflow is rendered with the plugins'
hooks, posted, its PNGs downloaded into a staging folder with hotfolder's own download stage, then
post-processed and published the way the pipeline does it. The webhook posts to a real HTTP server on
127.0.0.1. With ``COMFYUI_URL`` set, the LoRA injector's workflow is also checked by a real ComfyUI.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, features

from hotfolder import plugins
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import PluginError, PromptRejected, ScenarioError, TemplateError
from hotfolder.events import Archived, Claimed, Event, Failed, Progress, Published, Submitted
from hotfolder.spec import JobSpec
from hotfolder.stages import download, parse, publish
from hotfolder.templates import load, render
from hotfolder.testing import ComfyTestServer
from tests.conftest import EXAMPLES, wait_until
from tests.test_plugins import minimal_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGINS = ROOT / "plugins"
TEST_CHECKPOINT = "tiny_sd15_random.safetensors"  # the one checkpoint the test server's object_info lists


# --------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def server() -> Iterator[ComfyTestServer]:
    with ComfyTestServer() as srv:
        yield srv


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    for path in EXAMPLES.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


def example_hooks(tmp_path: Path, **plugin_config: Any) -> plugins.Hooks:
    """The example plugins loaded from plugins/, with ``[plugin_config.*]`` tables."""
    pm = plugins.get_plugin_manager(plugins_dir=EXAMPLE_PLUGINS)
    return plugins.Hooks(pm, minimal_settings(tmp_path, plugin_config=plugin_config))


@pytest.fixture
def hooks(tmp_path: Path) -> plugins.Hooks:
    return example_hooks(tmp_path)


@dataclass
class StagedRun:
    """A job run on the test server and downloaded into staging, as the pipeline leaves it before publish."""

    name: str
    staging: Path
    sidecar: dict[str, Any]
    workflow: dict[str, Any]


def run_job(server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks, scenario: bytes,
            *, name: str = "job", job_key: str | None = None) -> StagedRun:
    """Parse, render (with the plugins), submit, wait, download: a finished job in its staging folder."""
    (spec,) = parse.parse_scenario(Path(f"{name}.yaml"), scenario, default_template="invert", hooks=hooks)
    template = load.load_template(EXAMPLES, spec.template or "invert", hooks=hooks)
    workflow, params = render.render_workflow(template, spec, hooks=hooks)
    http = ComfyHTTP(server.url)
    prompt_id = str(uuid.uuid4())
    try:
        http.post_prompt(workflow, prompt_id=prompt_id, client_id=uuid.uuid4().hex,
                         extra_data={"extra_pnginfo": {"hotfolder": {"job": name}}})
        entry = wait_until(lambda: http.history(prompt_id), timeout=20, message="the prompt's history")
        refs, _values = download.list_outputs(entry["outputs"])  # type: ignore[index]
        staging = tmp_path / "outbox" / ".hotfolder-staging" / f"{name}-{uuid.uuid4().hex[:6]}"
        outputs = download.download_outputs(http, refs, staging)
    finally:
        http.close()
    sidecar = {
        "name": name, "job_key": job_key or f"{uuid.uuid4().hex}/1", "params": params, "workflow": workflow,
        "prompt_id": prompt_id, "server": server.url, "template": {"name": template.name}, "outputs": outputs,
        "postprocess_options": spec.options.get("postprocess"),
    }
    return StagedRun(name, staging, sidecar, workflow)


def published(server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks, name: str = "fox",
              job_key: str | None = None) -> Path:
    run = run_job(server, tmp_path, hooks, b"params: {width: 8, height: 8, color: 0x336699}\n", name=name,
                  job_key=job_key)
    return publish.publish_folder(run.staging, tmp_path / "outbox", run.name, run.sidecar)


def published_event(folder: Path, job: str = "fox") -> Event:
    return Published(file=f"{job}.yaml", job_id="j-1", job=job, path=str(folder))


# --------------------------------------------------------------------------------------------------
# 1. LoRA stack injector


LORA_SCENARIO = b"""\
template: txt2img
params: {prompt: a red fox, checkpoint: tiny_sd15_random.safetensors}
loras:
  - {name: watercolor.safetensors, strength: 0.8}
  - {name: detail.safetensors, strength_model: 0.5, strength_clip: 0.25}
  - fox.safetensors
"""


def render_loras(hooks: plugins.Hooks, templates: Path, scenario: bytes = LORA_SCENARIO) -> dict[str, Any]:
    (spec,) = parse.parse_scenario(Path("lora.yaml"), scenario, hooks=hooks)
    template = load.load_template(templates, spec.template or "txt2img", hooks=hooks)
    return render.render_workflow(template, spec, hooks=hooks)[0]


def test_lora_stack_inserts_a_chain_between_checkpoint_and_its_consumers(hooks: plugins.Hooks, templates: Path) -> None:
    workflow = render_loras(hooks, templates)
    loras = {nid: node for nid, node in workflow.items() if node["class_type"] == "LoraLoader"}
    assert list(loras) == ["10", "11", "12"]
    assert [n["inputs"] for n in loras.values()] == [
        {"model": ["4", 0], "clip": ["4", 1], "lora_name": "watercolor.safetensors",
         "strength_model": 0.8, "strength_clip": 0.8},
        {"model": ["10", 0], "clip": ["10", 1], "lora_name": "detail.safetensors",
         "strength_model": 0.5, "strength_clip": 0.25},
        {"model": ["11", 0], "clip": ["11", 1], "lora_name": "fox.safetensors",
         "strength_model": 1.0, "strength_clip": 1.0},
    ]
    assert loras["10"]["_meta"]["title"] == "LoRA 1: watercolor.safetensors"
    assert workflow["3"]["inputs"]["model"] == ["12", 0]  # KSampler
    assert workflow["6"]["inputs"]["clip"] == ["12", 1] and workflow["7"]["inputs"]["clip"] == ["12", 1]
    assert workflow["8"]["inputs"]["vae"] == ["4", 2]  # the VAE is not touched


def test_lora_stack_workflow_passes_the_test_servers_comfyui_validation(
    server: ComfyTestServer, hooks: plugins.Hooks, templates: Path
) -> None:
    """The server validates against real /object_info; it has no LoRA files, so the only errors left
    are the LoRA names; every link and type the injector wired is accepted."""
    workflow = render_loras(hooks, templates)
    http = ComfyHTTP(server.url)
    try:
        with pytest.raises(PromptRejected) as rejected:
            http.post_prompt(workflow, prompt_id=str(uuid.uuid4()), client_id="lora-test")
        errors = rejected.value.details["node_errors"]
        assert sorted(errors) == ["10", "11", "12"]
        assert {(e["type"], e["extra_info"]["input_name"]) for node in errors.values() for e in node["errors"]} == {
            ("value_not_in_list", "lora_name")}
        # the control: a mis-wired link is caught by the same validation
        workflow["6"]["inputs"]["clip"] = ["12", 0]
        with pytest.raises(PromptRejected) as miswired:
            http.post_prompt(workflow, prompt_id=str(uuid.uuid4()), client_id="lora-test")
        assert miswired.value.details["node_errors"]["6"]["errors"][0]["type"] == "return_type_mismatch"
    finally:
        http.close()


def test_lora_stack_without_loras_leaves_the_workflow_alone(hooks: plugins.Hooks, templates: Path) -> None:
    plain = render_loras(hooks, templates, b"template: txt2img\nparams: {prompt: fox, seed: 1}\n")
    assert [n["class_type"] for n in plain.values()].count("LoraLoader") == 0
    assert plain["3"]["inputs"]["model"] == ["4", 0]


def test_lora_stack_rewires_loras_already_in_the_template(hooks: plugins.Hooks, templates: Path) -> None:
    workflow = json.loads((templates / "txt2img.json").read_text())
    workflow["20"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "base.safetensors",
                                                             "strength_model": 1, "strength_clip": 1}}
    for node, name in (("3", "model"), ("6", "clip"), ("7", "clip")):
        workflow[node]["inputs"][name] = ["20", 0 if name == "model" else 1]
    (templates / "withlora.json").write_text(json.dumps(workflow))
    (templates / "withlora.toml").write_text((templates / "txt2img.toml").read_text())
    result = render_loras(hooks, templates, b"template: withlora\nparams: {prompt: x}\nloras: [extra.safetensors]\n")
    assert result["21"]["inputs"]["model"] == ["4", 0]
    assert result["20"]["inputs"]["model"] == ["21", 0] and result["20"]["inputs"]["clip"] == ["21", 1]
    assert result["3"]["inputs"]["model"] == ["20", 0]


@pytest.mark.parametrize(
    ("loras", "message"),
    [
        ("loras: 3", "write it as a list"),
        ("loras: [{strength: 1}]", "entry 1 needs a 'name'"),
        ("loras: [{name: a, strength: lots}]", "entry 1 strength must be a number"),
        ("loras: [{name: a, strength: 101}]", "outside -100..100"),
        ("loras: [{name: a, weight: 1}]", "unknown key(s) 'weight'"),
    ],
)
def test_lora_stack_refuses_bad_entries_when_the_scenario_is_parsed(hooks: plugins.Hooks, loras: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse.parse_scenario(Path("bad.yaml"), f"template: txt2img\n{loras}\n".encode(), hooks=hooks)
    assert message in info.value.message and info.value.where["key"] == "loras"


def test_lora_stack_needs_one_checkpoint_loader_or_lora_checkpoint(hooks: plugins.Hooks, templates: Path) -> None:
    with pytest.raises(TemplateError, match="has no checkpoint loader"):
        render_loras(hooks, templates, b"template: invert\nloras: [a.safetensors]\n")
    workflow = json.loads((templates / "txt2img.json").read_text())
    workflow["40"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "refiner.safetensors"},
                      "_meta": {"title": "Refiner"}}
    (templates / "two.json").write_text(json.dumps(workflow))
    (templates / "two.toml").write_text((templates / "txt2img.toml").read_text())
    with pytest.raises(TemplateError, match="has 2 checkpoint loaders: 4 \\(Load Checkpoint\\), 40 \\(Refiner\\)") as info:
        render_loras(hooks, templates, b"template: two\nparams: {prompt: x}\nloras: [a.safetensors]\n")
    assert "lora_checkpoint" in (info.value.hint or "")
    chosen = render_loras(hooks, templates,
                          b"template: two\nparams: {prompt: x}\nloras: [a.safetensors]\nlora_checkpoint: Refiner\n")
    assert chosen["41"]["inputs"]["model"] == ["40", 0] and chosen["3"]["inputs"]["model"] == ["4", 0]


COMFYUI_URL = os.environ.get("COMFYUI_URL")


@pytest.mark.integration
@pytest.mark.skipif(not COMFYUI_URL, reason="set COMFYUI_URL to check against a real ComfyUI")
def test_lora_stack_workflow_is_accepted_by_a_real_comfyui(hooks: plugins.Hooks, templates: Path) -> None:
    assert COMFYUI_URL
    http = ComfyHTTP(COMFYUI_URL)
    try:
        info = http.object_info()
        needed = ("CheckpointLoaderSimple", "LoraLoader", "KSampler", "CLIPTextEncode", "VAEDecode", "SaveImage")
        if not all(name in info for name in needed):
            pytest.skip("the ComfyUI at COMFYUI_URL lacks the node classes of txt2img + LoraLoader")
        checkpoints = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        lora_files = info["LoraLoader"]["input"]["required"]["lora_name"][0]
        if not checkpoints or not lora_files:
            pytest.skip("the ComfyUI at COMFYUI_URL has no checkpoint or no LoRA file")
        scenario = json.dumps({
            "template": "txt2img", "params": {"prompt": "a fox", "checkpoint": checkpoints[0], "steps": 1,
                                              "width": 64, "height": 64},
            "loras": [{"name": lora_files[0], "strength": 0.5}, {"name": lora_files[-1], "strength_model": 0.2}],
        }).encode()
        (spec,) = parse.parse_scenario(Path("real.json"), scenario, hooks=hooks)
        workflow, _ = render.render_workflow(load.load_template(templates, "txt2img", hooks=hooks), spec, hooks=hooks)
        prompt_id = str(uuid.uuid4())
        answer = http.post_prompt(workflow, prompt_id=prompt_id, client_id="hotfolder-lora-check")
        assert not answer.get("node_errors"), answer
        http.delete_pending(prompt_id)  # validation was the point; don't spend GPU time
        http.interrupt(prompt_id)
    finally:
        http.close()


# --------------------------------------------------------------------------------------------------
# 2. image format post-processor


def exif_texts(path: Path) -> dict[int, str]:
    with Image.open(path) as image:
        return {tag: value for tag, value in image.getexif().items() if isinstance(value, str)}


def test_image_format_converts_real_pngs_to_webp_keeping_the_generation_parameters(
    server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks
) -> None:
    run = run_job(server, tmp_path, hooks, b"params: {width: 16, height: 8, batch_size: 2, color: 0x102030}\n"
                  b"postprocess: [{name: image_format, format: webp, quality: 95}]\n", name="webp")
    pngs = sorted(run.staging.glob("*.png"))
    assert len(pngs) == 2
    plugins.run_postprocessors(hooks, run.sidecar["postprocess_options"], run.staging, run.sidecar)

    assert not list(run.staging.glob("*.png"))
    outputs = run.sidecar["outputs"]
    assert [o["file"] for o in outputs] == [p.stem + ".webp" for p in pngs]
    for entry, png in zip(outputs, pngs, strict=True):
        path = run.staging / entry["file"]
        assert (entry["size"], entry["sha256"]) == plugins.file_digest(path)
        assert entry["converted_from"] == png.name and entry["format"] == "webp"
        assert entry["node"] == "3" and entry["kind"] == "image"
        with Image.open(path) as image:
            assert image.format == "WEBP" and image.size == (16, 8)
            red, green, blue = image.convert("RGB").getpixel((3, 3))
        assert abs(red - 0xEF) <= 6 and abs(green - 0xDF) <= 6 and abs(blue - 0xCF) <= 6  # inverted 0x102030
        texts = exif_texts(path)
        assert texts[0x0110].startswith("prompt:")
        assert json.loads(texts[0x0110][len("prompt:"):]) == run.workflow  # what ComfyUI received
        assert json.loads(texts[0x010F].removeprefix("hotfolder:")) == {"job": "webp"}
        assert json.loads(texts[0x010E].removeprefix("parameters:")) == run.sidecar["params"]
    assert run.sidecar["postprocess"] == [{"name": "image_format", "plugin": "plugins/image_format.py",
                                           "options": {"format": "webp", "quality": 95, "keep_png": False,
                                                       "metadata": True}}]
    final = publish.publish_folder(run.staging, tmp_path / "outbox", "webp", run.sidecar)
    sidecar = json.loads((final / "webp.json").read_text())
    assert sorted(p.name for p in final.iterdir()) == sorted([o["file"] for o in outputs] + ["webp.json"])
    assert sidecar["outputs"] == outputs


def test_image_format_jpeg_can_keep_the_png_and_drop_the_metadata(
    server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks
) -> None:
    run = run_job(server, tmp_path, hooks, b"params: {width: 8, height: 8}\n", name="jpeg")
    choice = [{"name": "image_format", "format": "jpg", "quality": 70, "keep_png": True, "metadata": False}]
    plugins.run_postprocessors(hooks, choice, run.staging, run.sidecar)
    png_entry, jpg_entry = run.sidecar["outputs"]
    assert png_entry["file"].endswith(".png") and (run.staging / png_entry["file"]).is_file()
    assert jpg_entry["file"] == png_entry["file"][:-4] + ".jpg"
    assert jpg_entry["converted_from"] == png_entry["file"] and jpg_entry["format"] == "jpeg"
    assert (jpg_entry["size"], jpg_entry["sha256"]) == plugins.file_digest(run.staging / jpg_entry["file"])
    with Image.open(run.staging / jpg_entry["file"]) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
    assert exif_texts(run.staging / jpg_entry["file"]) == {}


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")
def test_image_format_writes_avif_when_pillow_can(server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks) -> None:
    run = run_job(server, tmp_path, hooks, b"params: {width: 8, height: 8}\n", name="avif")
    plugins.run_postprocessors(hooks, [{"name": "image_format", "format": "avif", "quality": 60}], run.staging, run.sidecar)
    (entry,) = run.sidecar["outputs"]
    with Image.open(run.staging / entry["file"]) as image:
        assert image.format == "AVIF" and image.size == (8, 8)
    assert exif_texts(run.staging / entry["file"])[0x0110].startswith("prompt:")


def test_image_format_resumes_after_a_crash_midway(server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks) -> None:
    run = run_job(server, tmp_path, hooks, b"params: {width: 8, height: 8, batch_size: 2}\n", name="again")
    original = [dict(o) for o in run.sidecar["outputs"]]
    plugins.run_postprocessors(hooks, ["image_format"], run.staging, run.sidecar)
    rerun = dict(run.sidecar, outputs=original, postprocess=[])  # the sidecar rebuilt from the job record
    plugins.run_postprocessors(hooks, ["image_format"], run.staging, rerun)
    assert rerun["outputs"] == run.sidecar["outputs"]
    assert sorted(p.suffix for p in run.staging.iterdir()) == [".webp", ".webp"]
    # with keep_png the PNGs stay, so a rerun converts again, over its own earlier files
    kept = run_job(server, tmp_path, hooks, b"params: {width: 8, height: 8}\n", name="kept")
    original = [dict(o) for o in kept.sidecar["outputs"]]
    plugins.run_postprocessors(hooks, [{"name": "image_format", "keep_png": True}], kept.staging, kept.sidecar)
    rerun = dict(kept.sidecar, outputs=original, postprocess=[])
    plugins.run_postprocessors(hooks, [{"name": "image_format", "keep_png": True}], kept.staging, rerun)
    assert [o["file"] for o in rerun["outputs"]] == [o["file"] for o in kept.sidecar["outputs"]]
    assert sorted(p.suffix for p in kept.staging.iterdir()) == [".png", ".webp"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "gif"}, "format 'gif' is not one of webp, jpeg, avif"),
        ({"quality": 0}, "quality must be a whole number from 1 to 100"),
        ({"keep_png": "yes"}, "keep_png must be true or false"),
        ({"size": 3}, "unknown option(s) 'size'"),
    ],
)
def test_image_format_options_are_checked_before_anything_runs(hooks: plugins.Hooks, options: dict[str, Any],
                                                               message: str) -> None:
    with pytest.raises(PluginError) as info:
        plugins.parse_postprocess(hooks, [{"name": "image_format", **options}])
    assert message in info.value.message


# --------------------------------------------------------------------------------------------------
# 3. external storage


def stored_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_storage_copies_each_published_job_atomically_and_never_overwrites(
    server: ComfyTestServer, tmp_path: Path
) -> None:
    nas = tmp_path / "nas"
    hooks = example_hooks(tmp_path, storage={"path": str(nas)})
    first = published(server, tmp_path, hooks, "fox")
    expected = stored_files(first)
    hooks.track_event(published_event(first))
    assert stored_files(nas / "fox") == expected and first.is_dir()
    assert list((nas / ".hotfolder-staging").iterdir()) == []
    hooks.track_event(published_event(first))  # the same job again (a restart): not stored twice
    assert sorted(p.name for p in nas.iterdir()) == [".hotfolder-staging", "fox"]
    second = published(server, tmp_path, hooks, "fox")  # another job with the same name
    assert second.name == "fox-2"
    hooks.track_event(published_event(second))
    assert stored_files(nas / "fox-2") == stored_files(second)
    (nas / "fox-3").mkdir()  # a name taken on the share only
    third = published(server, tmp_path, hooks, "fox")
    hooks.track_event(published_event(third))
    assert stored_files(nas / "fox-4") == stored_files(third)
    for other in (Claimed(file="fox.yaml", job_id="j", job="fox"), Failed(file="fox.yaml", job_id="j", job="fox", error={}),
                  Archived(file="fox.yaml", job_id="j", job="fox", failed=False, path=None)):
        hooks.track_event(other)
    assert sorted(p.name for p in nas.iterdir()) == [".hotfolder-staging", "fox", "fox-2", "fox-3", "fox-4"]


def test_storage_move_on_the_same_filesystem_renames_the_folder(server: ComfyTestServer, tmp_path: Path) -> None:
    hooks = example_hooks(tmp_path, storage={"path": "nas", "mode": "move"})  # relative: to the cwd here
    folder = published(server, tmp_path, hooks, "moved")
    expected = stored_files(folder)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        hooks.track_event(published_event(folder, "moved"))
    finally:
        os.chdir(cwd)
    assert not folder.exists()
    assert stored_files(tmp_path / "nas" / "moved") == expected


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second filesystem (/dev/shm)")
def test_storage_move_to_another_filesystem_copies_then_removes(server: ComfyTestServer, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as share:
        hooks = example_hooks(tmp_path, storage={"path": share, "mode": "move"})
        folder = published(server, tmp_path, hooks, "far")
        if folder.stat().st_dev == Path(share).stat().st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        expected = stored_files(folder)
        hooks.track_event(published_event(folder, "far"))
        assert not folder.exists()
        assert stored_files(Path(share) / "far") == expected
        assert list((Path(share) / ".hotfolder-staging").iterdir()) == []


def test_storage_failure_is_logged_and_the_job_stays_in_the_outbox(
    server: ComfyTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the share should be")
    hooks = example_hooks(tmp_path, storage={"path": str(blocked), "mode": "move"})
    folder = published(server, tmp_path, hooks, "kept")
    with caplog.at_level(logging.ERROR, logger="hotfolder.plugins"):
        hooks.track_event(published_event(folder, "kept"))
    assert folder.is_dir()
    assert "[storage] job kept: could not move" in caplog.text and "stay in the outbox" in caplog.text


@pytest.mark.parametrize(
    ("config", "message"),
    [({"mode": "copy"}, "needs path"), ({"path": "x", "mode": "sync"}, "mode must be 'copy' or 'move'"),
     ({"path": "x", "dir": "y"}, "unknown key(s) 'dir'")],
)
def test_storage_refuses_a_bad_configuration_at_startup(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginError, match="Plugin 'plugins/storage.py' refuses the settings") as info:
        example_hooks(tmp_path, storage=config)
    assert message in info.value.message


# --------------------------------------------------------------------------------------------------
# 4. webhook


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records POSTs and answers with scripted statuses."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: queue.Queue[int] = field(default_factory=queue.Queue)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    record = Receiver(url="")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                status = record.statuses.get_nowait()
            except queue.Empty:
                status = 200
            with lock:
                record.received.append({"path": self.path, "headers": dict(self.headers),
                                        "json": json.loads(body), "status": status})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    record.url = f"http://127.0.0.1:{httpd.server_address[1]}/hooks/hotfolder"
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def webhook_module(hooks: plugins.Hooks) -> Any:
    return hooks.pm.get_plugin("plugins/webhook.py")


@pytest.fixture
def webhook_hooks(tmp_path: Path, receiver: Receiver) -> Iterator[plugins.Hooks]:
    hooks = example_hooks(tmp_path, webhook={"url": receiver.url, "backoff": 0.01, "retries": 3, "timeout": 5,
                                             "headers": {"Authorization": "Bearer s3cret"}})
    try:
        yield hooks
    finally:
        webhook_module(hooks).close_all(timeout=10)


def test_webhook_posts_a_summary_of_each_finished_and_failed_job(
    server: ComfyTestServer, tmp_path: Path, receiver: Receiver, webhook_hooks: plugins.Hooks
) -> None:
    folder = published(server, tmp_path, webhook_hooks, "fox")
    sidecar = json.loads((folder / "fox.json").read_text())
    for other in (Claimed(file="fox.yaml", job_id="j-1", job="fox"),
                  Submitted(file="fox.yaml", job_id="j-1", job="fox", prompt_id="p", server="s"),
                  Progress(file="fox.yaml", job_id="j-1", job="fox", node="1", value=1, max=2)):
        webhook_hooks.track_event(other)
    webhook_hooks.track_event(published_event(folder))
    error = {"stage": "submit", "error": "PromptRejected", "message": "width too small", "hint": "use 8+",
             "where": {"node": "1"}}
    webhook_hooks.track_event(Failed(file="bad.yaml", job_id="j-2", job="bad", error=error))
    webhook_hooks.track_event(Failed(file="worse.yaml", job_id="j-3", error={"message": "not YAML"}))
    wait_until(lambda: len(receiver.received) == 3, timeout=10, message="three webhook posts")
    finished, failed, file_failed = (r["json"] for r in receiver.received)
    assert receiver.received[0]["path"] == "/hooks/hotfolder"
    assert receiver.received[0]["headers"]["Authorization"] == "Bearer s3cret"
    assert receiver.received[0]["headers"]["User-Agent"].startswith("hotfolder/")
    assert {k: finished[k] for k in ("event", "status", "file", "job_id", "job", "outbox", "prompt_id", "server")} == {
        "event": "job.finished", "status": "finished", "file": "fox.yaml", "job_id": "j-1", "job": "fox",
        "outbox": str(folder), "prompt_id": sidecar["prompt_id"], "server": server.url}
    assert finished["template"] == "invert" and finished["params"] == sidecar["params"]
    assert finished["outputs"] == [{k: o[k] for k in ("file", "kind", "size", "sha256")} for o in sidecar["outputs"]]
    assert failed["event"] == "job.failed" and failed["job"] == "bad" and failed["error"] == error
    assert file_failed["job"] is None and file_failed["error"] == {"message": "not YAML"}
    (sender,) = webhook_module(webhook_hooks).senders()
    assert sender.flush(5) and (sender.delivered, sender.given_up) == (3, 0)


def test_webhook_retries_server_errors_with_backoff(
    tmp_path: Path, receiver: Receiver, webhook_hooks: plugins.Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    for status in (500, 503, 429):
        receiver.statuses.put(status)
    with caplog.at_level(logging.WARNING, logger="hotfolder.plugins"):
        webhook_hooks.track_event(Failed(file="a.yaml", job_id="j", job="a", error={"message": "x"}))
        (sender,) = webhook_module(webhook_hooks).senders()
        assert sender.flush(10)
    assert [r["status"] for r in receiver.received] == [500, 503, 429, 200]
    assert (sender.delivered, sender.given_up) == (1, 0)
    assert caplog.text.count("failed (HTTP") == 3 and "s3cret" not in caplog.text


def test_webhook_gives_up_on_a_client_error_at_once(receiver: Receiver, webhook_hooks: plugins.Hooks) -> None:
    receiver.statuses.put(404)
    webhook_hooks.track_event(Failed(file="a.yaml", job_id="j", job="a", error={"message": "x"}))
    (sender,) = webhook_module(webhook_hooks).senders()
    assert sender.flush(10)
    assert len(receiver.received) == 1 and (sender.delivered, sender.given_up) == (0, 1)


def test_webhook_to_a_dead_url_never_fails_the_job(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hooks = example_hooks(tmp_path, webhook={"url": f"http://127.0.0.1:{port}/x?token=abc", "backoff": 0.01,
                                             "retries": 2, "timeout": 2})
    module = webhook_module(hooks)
    try:
        with caplog.at_level(logging.WARNING, logger="hotfolder.plugins"):
            hooks.track_event(Failed(file="a.yaml", job_id="j", job="a", error={"message": "x"}))  # returns at once
            (sender,) = module.senders()
            assert sender.flush(10)
        assert (sender.delivered, sender.given_up) == (0, 1)
        assert "gave up sending job.failed of a.yaml a to http://127.0.0.1" in caplog.text
        assert "after 3 attempt(s)" in caplog.text and "token=abc" not in caplog.text
    finally:
        module.close_all(timeout=5)


@pytest.mark.parametrize(
    ("config", "message"),
    [({"url": "ftp://x"}, "needs url"), ({"url": "http://x", "retries": -1}, "retries must be a number"),
     ({"url": "http://x", "events": "published"}, "events must be a list"),
     ({"url": "http://x", "secret": "y"}, "unknown key(s) 'secret'")],
)
def test_webhook_refuses_a_bad_configuration_at_startup(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginError, match="Plugin 'plugins/webhook.py' refuses the settings") as info:
        example_hooks(tmp_path, webhook=config)
    assert message in info.value.message


def test_example_plugins_do_nothing_unless_configured_or_chosen(
    server: ComfyTestServer, tmp_path: Path, hooks: plugins.Hooks
) -> None:
    run = run_job(server, tmp_path, hooks, b"params: {width: 8, height: 8}\n", name="plain")
    plugins.run_postprocessors(hooks, None, run.staging, run.sidecar)
    folder = publish.publish_folder(run.staging, tmp_path / "outbox", run.name, run.sidecar)
    hooks.track_event(published_event(folder, "plain"))
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".png"]
    assert webhook_module(hooks).senders() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox"]


def test_job_spec_options_carry_plugin_keys_into_the_job_record(hooks: plugins.Hooks) -> None:
    (spec,) = parse.parse_scenario(Path("a.yaml"), b"loras: [a.safetensors]\npostprocess: [image_format]\n", hooks=hooks)
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.options == {"postprocess": ["image_format"],
                             "loras": [{"name": "a.safetensors", "strength_model": 1.0, "strength_clip": 1.0}]}


# --------------------------------------------------------------------------------------------------
# through the daemon (runs once the pipeline, config and CLI call plugins: see docs/plugins.md)


def _integrated() -> bool:
    import inspect

    from hotfolder import cli, config, engine

    return ("hooks" in inspect.signature(engine.Engine).parameters and "postprocess" in config.KEYS
            and "plugin_config" in config.KEYS and "plugins" in cli.cli.commands)


needs_integration = pytest.mark.skipif(not _integrated(), reason="the pipeline does not call plugins yet")


@pytest.fixture
def plugin_project(project: Path) -> Path:
    for path in EXAMPLE_PLUGINS.glob("*.py"):
        shutil.copy(path, project / "plugins" / path.name)
    return project


def drain_with_plugins(project: Path, url: str, **overrides: Any) -> tuple[dict[str, int], plugins.Hooks]:
    from hotfolder import daemon
    from tests.conftest import make_settings

    settings = make_settings(project, url, **overrides)
    hooks = plugins.load_hooks(settings)
    return daemon.run_daemon(settings, once=True, hooks=hooks), hooks


@needs_integration
def test_the_daemon_runs_all_four_example_plugins(plugin_project: Path, server: ComfyTestServer, receiver: Receiver) -> None:
    project = plugin_project
    inbox = project / "inbox"
    (inbox / "fox.yaml").write_text("params: {width: 16, height: 8, batch_size: 2}\n")
    (inbox / "keep.yaml").write_text(
        "params: {width: 8, height: 8}\npostprocess: [{name: image_format, format: jpeg, keep_png: true}]\n")
    (inbox / "none.yaml").write_text("params: {width: 8, height: 8}\npostprocess: []\n")
    (inbox / "bad.yaml").write_text("params: {width: 0}\n")
    (inbox / "lora.yaml").write_text(LORA_SCENARIO.decode().replace("template: txt2img", "template: txt2img\nname: lora"))
    counts, hooks = drain_with_plugins(
        project, server.url,
        postprocess=[{"name": "image_format", "format": "webp", "quality": 80}],
        plugin_config={"storage": {"path": str(project / "nas")},
                       "webhook": {"url": receiver.url, "backoff": 0.01, "retries": 2}},
    )
    try:
        assert counts["published"] == 3 and counts["failed"] == 2
        fox = project / "outbox" / "fox"
        sidecar = json.loads((fox / "fox.json").read_text())
        assert sorted(p.suffix for p in fox.iterdir()) == [".json", ".webp", ".webp"]
        assert [o["format"] for o in sidecar["outputs"]] == ["webp", "webp"]
        assert sidecar["postprocess"][0]["options"]["quality"] == 80
        keep = sorted(p.suffix for p in (project / "outbox" / "keep").iterdir())
        assert keep == [".jpg", ".json", ".png"]
        assert sorted(p.suffix for p in (project / "outbox" / "none").iterdir()) == [".json", ".png"]
        assert sorted(p.name for p in (project / "nas").iterdir() if not p.name.startswith(".")) == ["fox", "keep", "none"]
        assert stored_files(project / "nas" / "fox") == stored_files(fox)
        lora_error = json.loads((project / "inbox" / "failed" / "lora.yaml.error.json").read_text())
        assert "lora_name" in json.dumps(lora_error) and "LoraLoader" in json.dumps(lora_error)
        sender = webhook_module(hooks).senders()[0]
        assert sender.flush(10)
        summaries = sorted((r["json"]["status"], r["json"]["job"]) for r in receiver.received)
        assert summaries == [("failed", "bad"), ("failed", "lora"), ("finished", "fox"), ("finished", "keep"),
                             ("finished", "none")]
    finally:
        webhook_module(hooks).close_all(timeout=5)


@needs_integration
def test_an_unknown_postprocessor_fails_the_job_before_it_is_submitted(
    plugin_project: Path, server: ComfyTestServer
) -> None:
    (plugin_project / "inbox" / "typo.yaml").write_text("postprocess: [image_fromat]\n")
    server.clear_requests()
    counts, _hooks = drain_with_plugins(plugin_project, server.url)
    assert counts["files_failed"] == 1 and counts["published"] == 0
    error = json.loads((plugin_project / "inbox" / "failed" / "typo.yaml.error.json").read_text())
    assert "Unknown post-processor 'image_fromat'" in error["message"]
    assert "Did you mean 'image_format'?" in error["hint"]
    assert not [r for r in server.requests if r.path == "/prompt" and r.method == "POST"]


@needs_integration
def test_a_bad_default_postprocess_in_the_config_stops_the_start(plugin_project: Path, server: ComfyTestServer) -> None:
    with pytest.raises(PluginError, match="Setting 'postprocess' in hotfolder.toml: Unknown post-processor 'webp'"):
        drain_with_plugins(plugin_project, server.url, postprocess=["webp"])


@needs_integration
def test_the_cli_lists_plugins_and_renders_with_them(plugin_project: Path) -> None:
    from tests.conftest import invoke_cli

    listed = invoke_cli("plugins", cwd=plugin_project)
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == [
        "plugins/image_format.py", "plugins/lora_stack.py", "plugins/storage.py", "plugins/webhook.py"]
    builtins = json.loads(invoke_cli("plugins", "--all", "--hook", "parse_scenario_file", cwd=plugin_project).stdout)
    assert [e["name"] for e in builtins] == ["hotfolder.default_plugins.scenario_formats"]
    (plugin_project / "l.yaml").write_bytes(LORA_SCENARIO)
    rendered = invoke_cli("render", "l.yaml", cwd=plugin_project)
    assert rendered.returncode == 0, rendered.stderr
    assert [n["class_type"] for n in json.loads(rendered.stdout).values()].count("LoraLoader") == 3
    disabled = invoke_cli("render", "l.yaml", cwd=plugin_project, env={"HOTFOLDER_DISABLE_PLUGINS": "lora_stack"})
    assert disabled.returncode == 1 and "unknown key 'loras'" in disabled.stderr


@needs_integration
def test_check_and_run_refuse_to_start_with_a_broken_plugin(plugin_project: Path) -> None:
    from tests.conftest import invoke_cli, run_cli

    (plugin_project / "plugins" / "typo.py").write_text(
        "from hotfolder import hookimpl\n\n@hookimpl\ndef prepare_workfow(workflow):\n    pass\n")
    checked = invoke_cli("check", cwd=plugin_project)
    assert checked.returncode == 1
    assert "plugins/typo.py" in checked.stderr and "prepare_workfow" in checked.stderr
    assert "Did you mean 'prepare_workflow'?" in checked.stderr
    ran = run_cli("run", "--once", cwd=plugin_project)
    assert ran.returncode == 1 and "prepare_workfow" in ran.stderr
