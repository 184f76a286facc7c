"""Scenario ``inputs:``: local files uploaded under content-hash names and set by address, end to end
against the test ComfyUI server (real uploads, real PNG decoding in LoadImage)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from hotfolder import daemon
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.engine import Engine
from hotfolder.errors import ScenarioError, UploadError
from hotfolder.stages import prepare
from hotfolder.testing import ComfyTestServer
from hotfolder.testing.png import decode_png, encode_png
from tests.conftest import invoke_cli, make_settings

IMG2IMG = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load Image"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert"}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "{{ prefix }}", "images": ["2", 0]},
          "_meta": {"title": "Save Image"}},
}
PIXELS = bytes([10, 20, 30, 200, 100, 0, 0, 0, 0, 255, 255, 255] * 2)  # 4x2 RGB
PNG = encode_png(4, 2, PIXELS)
NAME = f"hotfolder/{hashlib.sha256(PNG).hexdigest()[:16]}.png"


@pytest.fixture
def img2img(project: Path) -> Path:
    (project / "templates" / "img2img.json").write_text(json.dumps(IMG2IMG))
    (project / "templates" / "img2img.toml").write_text('[params.prefix]\ndefault = "img2img"\n')
    photos = project / "inbox" / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(PNG)
    (photos / "same-cat.png").write_bytes(PNG)
    return project


def uploads(comfy: ComfyTestServer) -> list:
    return [r for r in comfy.requests if r["method"] == "POST" and r["path"] == "/upload/image"]


def prompts(comfy: ComfyTestServer) -> list:
    return [r for r in comfy.requests if r["method"] == "POST" and r["path"] == "/prompt"]


def read_error(project: Path, name: str) -> dict:
    return json.loads((project / "inbox" / "failed" / f"{name}.error.json").read_text())


@pytest.mark.both_profiles
def test_an_img2img_scenario_uploads_its_image_once_and_renders_against_it(img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    (project / "inbox" / "cat.yaml").write_text(
        "template: img2img\nrepeat: 2\ninputs:\n  LoadImage.image: photos/cat.png\n")
    (project / "inbox" / "twin.yaml").write_text(
        'template: img2img\nparams: {prefix: twin}\ninputs: {"Load Image.image": photos/same-cat.png}\n')
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["published"] == 3 and counts["failed"] == 0
    # three jobs, two files with the same bytes: one upload, under the content-hash name
    assert len(uploads(comfy)) == 1
    assert (comfy.input_dir / NAME).read_bytes() == PNG
    sent = [r["json"]["prompt"] for r in prompts(comfy)]
    assert len(sent) == 3 and all(p["1"]["inputs"]["image"] == NAME for p in sent)
    for folder in ("cat-001", "cat-002", "twin"):
        out = project / "outbox" / folder
        sidecar = json.loads((out / f"{folder}.json").read_text())
        (entry,) = sidecar["inputs"]
        assert entry["address"] in {"LoadImage.image", "Load Image.image"}
        assert entry["sha256"] == hashlib.sha256(PNG).hexdigest() and entry["size"] == len(PNG)
        assert entry["uploaded"] == NAME and entry["server"] == comfy.url
        assert Path(entry["local"]).parent == (project / "inbox" / "photos").resolve()
        assert sidecar["workflow"]["1"]["inputs"]["image"] == NAME
        assert sidecar["workflow"] in sent  # exactly what ComfyUI received
        (png_file,) = out.glob("*.png")
        decoded = decode_png(png_file.read_bytes())  # LoadImage decoded the upload, ImageInvert inverted it
        assert (decoded.width, decoded.height) == (4, 2)
        assert decoded.pixels == bytes(255 - b for b in PIXELS)
    assert (project / "inbox" / "done" / "cat.yaml").exists() and (project / "inbox" / "done" / "twin.yaml").exists()


def test_a_missing_input_file_fails_the_job_before_anything_is_queued(img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    (project / "inbox" / "gone.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/dog.png}\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["failed"] == 1
    error = read_error(project, "gone.yaml")
    assert error["error"] == "ScenarioError"
    assert "'photos/dog.png'" in error["message"] and "'LoadImage.image'" in error["message"]
    assert "gone.yaml" in error["message"] and "does not exist" in error["message"]
    assert error["where"]["address"] == "LoadImage.image" and error["where"]["path"] == "photos/dog.png"
    assert error["where"]["file"] == "gone.yaml" and error["where"]["job"] == "gone"
    assert "relative to the folder the scenario file was dropped into" in error["hint"]
    assert not prompts(comfy) and not uploads(comfy)


def test_an_input_that_escapes_the_inbox_through_a_symlink_is_refused_unless_inputs_root_allows_it(
        img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    outside = project / "elsewhere"
    outside.mkdir()
    (outside / "secret.png").write_bytes(PNG)
    os.symlink(outside / "secret.png", project / "inbox" / "photos" / "link.png")
    (project / "inbox" / "sneaky.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/link.png}\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["failed"] == 1
    error = read_error(project, "sneaky.yaml")
    assert "outside" in error["message"] and str(outside / "secret.png") in error["message"]
    assert "inputs_root" in error["hint"]
    assert not prompts(comfy) and not uploads(comfy)
    # allowed once inputs_root names that folder
    (project / "inbox" / "allowed.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/link.png}\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url, inputs_root=str(outside)), once=True)
    assert counts["published"] == 1 and len(uploads(comfy)) == 1


def test_the_scenario_parser_refuses_absolute_and_upward_paths(img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    (project / "inbox" / "up.yaml").write_text("template: img2img\ninputs: {LoadImage.image: ../elsewhere/x.png}\n")
    (project / "inbox" / "abs.yaml").write_text("template: img2img\ninputs: {LoadImage.image: /etc/passwd}\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["files_failed"] == 2
    assert "'..'" in read_error(project, "up.yaml")["message"]
    assert "absolute" in read_error(project, "abs.yaml")["message"]
    assert not uploads(comfy)


def test_an_input_address_that_matches_no_node_names_the_candidates(img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    (project / "inbox" / "typo.yaml").write_text("template: img2img\ninputs: {LoadImag.image: photos/cat.png}\n")
    daemon.run_daemon(make_settings(project, comfy.url), once=True)
    error = read_error(project, "typo.yaml")
    assert "LoadImag" in error["message"] and "LoadImage" in error["message"]
    assert not uploads(comfy)


def test_render_shows_the_name_the_file_will_have_on_the_server(img2img: Path) -> None:
    project = img2img
    scenario = project / "inbox" / "r.yaml"
    scenario.write_text("template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
    settings = make_settings(project, "http://127.0.0.1:9")  # no server needed
    (job,) = prepare.render_file_jobs(settings, scenario)
    assert job.workflow["1"]["inputs"]["image"] == NAME
    result = invoke_cli("render", "inbox/r.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["1"]["inputs"]["image"] == NAME
    # a scenario outside the inbox may not read files beside it, unless inputs_root allows them
    (project / "cat.png").write_bytes(PNG)
    (project / "out.yaml").write_text("template: img2img\ninputs: {LoadImage.image: cat.png}\n")
    with pytest.raises(ScenarioError, match="outside"):
        prepare.render_file_jobs(settings, project / "out.yaml")
    allowed = make_settings(project, "http://127.0.0.1:9", inputs_root=str(project))
    assert prepare.render_file_jobs(allowed, project / "out.yaml")[0].workflow["1"]["inputs"]["image"] == NAME


@pytest.mark.both_profiles
def test_a_job_recovered_after_a_crash_uploads_and_publishes(img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    settings = make_settings(project, comfy.url)
    (project / "inbox" / "k.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
    record = Engine(settings).accept(project / "inbox" / "k.yaml")  # claimed and rendered; never run
    assert record is not None and record.jobs[0].inputs[0]["name"] == NAME
    assert json.loads(record.workflow_path(1).read_text())["1"]["inputs"]["image"] == NAME
    counts = daemon.run_daemon(settings, once=True)
    assert counts["published"] == 1 and len(uploads(comfy)) == 1


def test_an_input_changed_after_the_scenario_was_read_is_uploaded_as_it_was_read(img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    settings = make_settings(project, comfy.url)
    (project / "inbox" / "c.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
    Engine(settings).accept(project / "inbox" / "c.yaml")
    (project / "inbox" / "photos" / "cat.png").write_bytes(encode_png(2, 2, bytes(12)))
    counts = daemon.run_daemon(settings, once=True)
    assert counts["published"] == 1
    assert (comfy.input_dir / NAME).read_bytes() == PNG  # the private copy taken when the scenario was read


@pytest.mark.both_profiles
def test_upload_image_streams_the_file_and_explains_a_refusal(tmp_path: Path, comfy: ComfyTestServer) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    http = ComfyHTTP(comfy.url)
    digest = hashlib.sha256()
    answer = http.upload_image(path, "a.png", subfolder="hotfolder", digest=digest)
    assert answer == {"name": "a.png", "subfolder": "hotfolder", "type": "input"}
    assert digest.hexdigest() == hashlib.sha256(PNG).hexdigest()
    assert http.upload_image(path, "a.png", subfolder="hotfolder")["name"] == "a.png"  # same bytes, same name
    (comfy.input_dir / "hotfolder" / "b.png").write_bytes(b"other bytes")
    assert http.upload_image(path, "b.png", subfolder="hotfolder")["name"] == "b (1).png"
    with pytest.raises(UploadError) as info:
        http.upload_image(path, "x.png", subfolder="../../outside")
    assert "HTTP 400" in info.value.message and "'../../outside/x.png'" in info.value.message
    assert info.value.hint and "input folder" in info.value.hint
    http.close()


def test_process_reads_inputs_beside_a_scenario_outside_the_inbox_when_inputs_root_allows(
        img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    work = project / "work"
    work.mkdir()
    (work / "dog.png").write_bytes(PNG)
    (work / "p.yaml").write_text("template: img2img\ninputs: {LoadImage.image: dog.png}\n")
    refused = daemon.process_files(make_settings(project, comfy.url), [work / "p.yaml"])
    assert refused[0].detail["failed"] and "outside" in refused[0].detail["error"]["message"]
    done = daemon.process_files(make_settings(project, comfy.url, inputs_root=str(work)), [work / "p.yaml"])
    assert not done[0].detail["failed"] and len(uploads(comfy)) == 1
    assert (work / "p.yaml").exists()  # process leaves the file where it is


def test_a_local_servers_upload_is_touched_on_use_and_sent_again_once_retention_removed_it(
        img2img: Path, comfy: ComfyTestServer) -> None:
    project = img2img
    server = {"url": comfy.url, "input_dir": str(comfy.input_dir)}
    settings = make_settings(project, comfy.url, servers=[server], retention_uploads_days=30)
    engine = Engine(settings)
    engine.start()
    try:
        (project / "inbox" / "one.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
        engine.accept(project / "inbox" / "one.yaml")
        assert engine.wait_idle(30)
        uploaded = comfy.input_dir / NAME
        month_ago = uploaded.stat().st_mtime - 31 * 86400
        os.utime(uploaded, (month_ago, month_ago))
        (project / "inbox" / "two.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
        engine.accept(project / "inbox" / "two.yaml")
        assert engine.wait_idle(30)
        assert len(uploads(comfy)) == 1 and uploaded.stat().st_mtime > month_ago + 86400  # used: touched
        # what the retention thread prunes: the hotfolder/ folder of each server's local input_dir
        folders = daemon._Retention(settings)._folders()
        assert (comfy.input_dir / "hotfolder", 30) in folders
        uploaded.unlink()  # as retention does once it is unused for 30 days
        (project / "inbox" / "three.yaml").write_text("template: img2img\ninputs: {LoadImage.image: photos/cat.png}\n")
        engine.accept(project / "inbox" / "three.yaml")
        assert engine.wait_idle(30)
    finally:
        engine.stop()
    assert len(uploads(comfy)) == 2 and uploaded.exists()
    assert sorted(p.name for p in (project / "inbox" / "done").iterdir()) == ["one.yaml", "three.yaml", "two.yaml"]
