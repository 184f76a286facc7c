"""Video and other media outputs: downloaded whole, streamed, with their media facts in the sidecar.

The files are real ones the test ComfyUI makes (an H.264 mp4 through SaveVideo with its DynamicCombo
sub-inputs, a GIF through the VHS_VideoCombine stand-in); the facts are checked against what ffmpeg
itself reads from the server's file, not against hotfolder's own reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder import media
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import ServerUnavailable
from hotfolder.stages.download import OutputRef, download_outputs, list_outputs
from hotfolder.testing import ComfyTestServer
from tests.conftest import four_frames, invoke_cli


@pytest.fixture
def comfy04() -> Iterator[ComfyTestServer]:
    server = ComfyTestServer(comfyui="0.4x")
    server.start()
    try:
        yield server
    finally:
        server.stop()


CLIP = {  # SaveVideo with the 0.4x catalogue's DynamicCombo sub-inputs (dotted names); crf comes from set:
    **four_frames(width=34),
    "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8}},
    "3": {"class_type": "SaveVideo", "_meta": {"title": "Save v2.mp4"}, "inputs": {
        "video": ["2", 0], "filename_prefix": "video/clip", "format": "mp4", "format.codec": "h264",
        "format.codec.encoding": "re-encode", "format.codec.encoding.crf": 23}},
}

GIF = {
    **four_frames(),
    "4": {"class_type": "VHS_VideoCombine", "inputs": {
        "images": ["1", 0], "frame_rate": 8, "loop_count": 0, "filename_prefix": "anim", "format": "image/gif",
        "pingpong": False, "save_output": True}},
}


def _ffmpeg_facts(path: Path) -> dict[str, Any]:
    """Width, height, frame rate and duration of a video as ffmpeg's own reader prints them."""
    ffmpeg = pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()
    text = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    hours, minutes, seconds = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text).groups()  # type: ignore[union-attr]
    width, height = re.search(r"Video: .*?, (\d+)x(\d+)", text).groups()  # type: ignore[union-attr]
    fps = re.search(r"([\d.]+) fps", text).group(1)  # type: ignore[union-attr]
    return {"width": int(width), "height": int(height), "frame_rate": float(fps),
            "duration": int(hours) * 3600 + int(minutes) * 60 + float(seconds)}


def _published(project: Path, name: str) -> tuple[Path, dict[str, Any]]:
    folder = project / "outbox" / name
    return folder, json.loads((folder / f"{name}.json").read_text())


def test_a_save_video_job_on_04x_publishes_the_whole_mp4_with_its_media_facts(
        project: Path, comfy04: ComfyTestServer) -> None:
    pytest.importorskip("imageio_ffmpeg")
    (project / "templates" / "clip.json").write_text(json.dumps(CLIP))
    # Both set: addresses reach a DynamicCombo sub-input: by node id, and by a title that has dots itself.
    (project / "clip.yaml").write_text(
        'template: clip\nset:\n  "3.format.codec.encoding.crf": 28\n  "Save v2.mp4.filename_prefix": video/take\n')
    result = invoke_cli("--server", comfy04.url, "process", "clip.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    folder, sidecar = _published(project, "clip")
    assert sidecar["workflow"]["3"]["inputs"]["format.codec.encoding.crf"] == 28
    [output] = sidecar["outputs"]
    served = comfy04.output_dir / "video" / output["server_filename"]
    assert output["server_filename"].startswith("take_") and output["server_filename"].endswith(".mp4")
    data = (folder / output["file"]).read_bytes()
    assert data == served.read_bytes() and output["size"] == served.stat().st_size == len(data)
    assert output["sha256"] == hashlib.sha256(data).hexdigest()
    assert (output["key"], output["kind"]) == ("images", "video")  # the fields that were there before
    facts = output["media"]
    assert (facts["kind"], facts["format"], facts["frame_count"]) == ("video", "mp4", 4)
    expected = _ffmpeg_facts(served)
    assert (facts["width"], facts["height"]) == (expected["width"], expected["height"]) == (34, 20)
    assert facts["frame_rate"] == pytest.approx(expected["frame_rate"]) == 8
    assert facts["duration"] == pytest.approx(expected["duration"], abs=0.02)
    assert facts["duration"] == pytest.approx(0.5, abs=0.02)


def test_a_vhs_gifs_output_is_downloaded_with_its_animation_facts(project: Path, comfy04: ComfyTestServer) -> None:
    pytest.importorskip("PIL")
    (project / "templates" / "anim.json").write_text(json.dumps(GIF))
    (project / "anim.yaml").write_text("template: anim\n")
    result = invoke_cli("--server", comfy04.url, "process", "anim.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    folder, sidecar = _published(project, "anim")
    [output] = sidecar["outputs"]
    assert (output["key"], output["server_filename"]) == ("gifs", "anim_00001.gif")
    assert (folder / output["file"]).read_bytes() == (comfy04.output_dir / "anim_00001.gif").read_bytes()
    # GIF delays are in hundredths of a second: 8 fps is written as 12 (0.12 s a frame), which the file says.
    assert output["media"] == {"kind": "animation", "format": "gif", "width": 33, "height": 20,
                               "frame_rate": pytest.approx(1 / 0.12), "frame_count": 4, "duration": 0.48}


def _download(server: ComfyTestServer, outputs: dict[str, Any], staging: Path) -> list[dict[str, Any]]:
    refs, _ = list_outputs(outputs)
    http = ComfyHTTP(server.url)
    try:
        return download_outputs(http, refs, staging)
    finally:
        http.close()


GIF89 = (b"GIF89a\x03\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x03\x00\x02\x00"
         b"\x00\x02\x02\x84\x51\x00;")


def test_the_servers_metadata_wins_and_every_listed_key_is_downloaded(comfy: ComfyTestServer, tmp_path: Path) -> None:
    comfy.faults.view_body(GIF89, count=None)
    outputs = {
        "7": {"videos": [{"filename": "v.gif", "subfolder": "", "type": "output",
                          "metadata": {"width": 640, "height": 360, "fps": 24, "duration": 2.5, "frame_count": 60}}]},
        "8": {"my_node_files": [{"filename": "u.gif", "subfolder": "x", "type": "output", "metadata": "junk"}]},
    }
    entries = _download(comfy, outputs, tmp_path / "staging")
    assert [(e["key"], e["file"]) for e in entries] == [("videos", "v.gif"), ("my_node_files", "u.gif")]
    assert entries[0]["media"] == {"kind": "image", "format": "gif", "width": 640, "height": 360,
                                   "frame_rate": 24.0, "frame_count": 60, "duration": 2.5}
    assert entries[1]["media"] == {"kind": "image", "format": "gif", "width": 3, "height": 2}


def test_a_probe_failure_leaves_the_facts_out_and_never_fails_the_download(
        comfy: ComfyTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(path: Any, metadata: Any = None) -> media.MediaFacts:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(media, "probe", broken)
    comfy.faults.view_body(GIF89, count=None)
    with caplog.at_level(logging.DEBUG, logger="hotfolder.stages.download"):
        entries = _download(comfy, {"7": {"images": [{"filename": "v.gif", "subfolder": "", "type": "output"}]}},
                            tmp_path / "staging")
    assert [e["file"] for e in entries] == ["v.gif"] and "media" not in entries[0]
    assert entries[0]["size"] == len(GIF89)
    lines = [r for r in caplog.records if r.name == "hotfolder.stages.download"]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG and "v.gif" in lines[0].getMessage()


@pytest.mark.parametrize("head, body", [
    (b"Content-Length: 1000", b"x" * 500),                          # cut off before its length
    (b"Transfer-Encoding: chunked", b"1f4\r\n" + b"x" * 500 + b"\r\n"),  # cut off before the last chunk
], ids=["content-length", "chunked"])
def test_a_video_cut_off_mid_stream_is_never_taken_as_complete(tmp_path: Path, head: bytes, body: bytes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:  # a server (or proxy) that dies halfway through every /view answer
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n" + head + b"\r\n\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()
    http = ComfyHTTP(f"http://127.0.0.1:{listener.getsockname()[1]}")
    staging = tmp_path / "staging"
    try:
        with pytest.raises(ServerUnavailable, match="a.mp4"):
            download_outputs(http, [OutputRef("3", "images", "a.mp4", "video", "output")], staging)
    finally:
        http.close()
        listener.close()
    assert not [p for p in staging.iterdir() if not p.name.startswith(".")]  # no a.mp4 to publish
