"""Tests of ``hotfolder.testing``: the test ComfyUI server, driven with real ``requests`` and ``websocket-client``.

Expected message orders and bodies are the ones observed on a real ComfyUI 0.3.64
(``comfy-protocol/captures``); they are written out here so the tests stand alone. Every wait has a
deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from hotfolder.testing import ComfyTestServer
from hotfolder.testing import png as pngmod
from tests.conftest import wait_until

TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------------
# helpers


class WSClient:
    """A websocket-client connection with a reader thread that records every frame."""

    def __init__(self, base_url: str, client_id: str | None = None, *, feature_flags: bool = False) -> None:
        url = base_url.replace("http://", "ws://") + "/ws"
        if client_id is not None:
            url += f"?clientId={client_id}"
        self.client_id = client_id
        self.ws = websocket.WebSocket()
        self.ws.connect(url, timeout=TIMEOUT)
        if feature_flags:
            self.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        assert self.ws.sock is not None
        self.ws.sock.settimeout(None)
        self.frames: list[Any] = []  # dicts for text frames, bytes for binary frames
        self.pongs: list[bytes] = []
        self.close_frames: list[bytes] = []
        self.error: BaseException | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                opcode, frame = self.ws.recv_data_frame(control_frame=True)
            except BaseException as err:  # noqa: BLE001 - the test inspects whatever ended the connection
                with self._cond:
                    self.error, self.done = err, True
                    self._cond.notify_all()
                return
            with self._cond:
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.frames.append(json.loads(frame.data.decode("utf-8")))
                elif opcode == websocket.ABNF.OPCODE_BINARY:
                    self.frames.append(bytes(frame.data))
                elif opcode == websocket.ABNF.OPCODE_PONG:
                    self.pongs.append(bytes(frame.data))
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_frames.append(bytes(frame.data))
                    self.done = True
                    self._cond.notify_all()
                    return
                self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}; frames: {summarize(self.frames)[-30:]}")

    def wait_for(self, match: Callable[[Any], bool], start: int = 0, timeout: float = TIMEOUT) -> int:
        """Index of the first frame from ``start`` on that matches; waits for it."""
        found: list[int] = []

        def check() -> bool:
            for index in range(start, len(self.frames)):
                if match(self.frames[index]):
                    found.append(index)
                    return True
            return self.done

        self.wait_until(check, timeout, "a matching frame")
        if not found:
            raise AssertionError(f"connection ended ({self.error!r}) before a matching frame: {summarize(self.frames)}")
        return found[0]

    def wait_done(self, pid: str, start: int = 0, timeout: float = TIMEOUT) -> list[Any]:
        """Frames from ``start`` up to and including ``executing`` with ``node: null`` for ``pid``."""
        end = self.wait_for(
            lambda f: is_type(f, "executing") and f["data"] == {"node": None, "prompt_id": pid}, start, timeout
        )
        return self.frames[start : end + 1]

    def barrier(self, timeout: float = TIMEOUT) -> None:
        """Ping and wait for the pong: every frame the server sent before it has been read."""
        token = uuid.uuid4().hex[:16].encode()
        self.ws.ping(token)
        self.wait_until(lambda: token in self.pongs, timeout, "pong")

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        self.wait_until(lambda: self.done, timeout, "connection end")

    def close(self) -> None:
        if not self.done:
            try:
                self.ws.send_close()
                self.wait_closed(3)
            except (websocket.WebSocketException, OSError, AssertionError):
                pass
        self.ws.shutdown()


def is_type(frame: Any, kind: str) -> bool:
    return isinstance(frame, dict) and frame.get("type") == kind


def summarize(frames: list[Any]) -> list[str]:
    """The capture files' ``ws_sequence_summary`` notation."""
    out = []
    for frame in frames:
        if isinstance(frame, bytes):
            out.append(f"BINARY(type={struct.unpack('>I', frame[:4])[0]})")
            continue
        kind, data = frame["type"], frame["data"]
        if kind == "status":
            out.append(f"status(queue_remaining={data['status']['exec_info']['queue_remaining']})")
        elif kind == "execution_cached":
            out.append(f"execution_cached(nodes={data['nodes']})")
        elif kind == "progress_state":
            out.append("progress_state(" + ",".join(f"{k}:{v['state']}" for k, v in data["nodes"].items()) + ")")
        elif kind in ("executing", "executed"):
            out.append(f"{kind}(node={data['node']})")
        elif kind == "progress":
            out.append(f"progress(node={data['node']})")
        else:
            out.append(kind)
    return out


def empty(color: int = 0, size: int = 8, batch: int = 1) -> dict[str, Any]:
    return {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": batch, "color": color}}


def save(source: str, prefix: str = "test") -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


def basic_prompt(color: int = 0, prefix: str = "test", size: int = 8) -> dict[str, Any]:
    return {"1": empty(color, size), "2": save("1", prefix)}


def sleep_prompt(seconds: float, color: int = 0, prefix: str = "slept") -> dict[str, Any]:
    return {
        "1": empty(color),
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": seconds}},
        "3": save("2", prefix),
    }


def post(srv: ComfyTestServer, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(srv.url + "/prompt", json=body, timeout=TIMEOUT, **kwargs)


def queue_prompt(srv: ComfyTestServer, prompt: dict[str, Any], client: WSClient | None = None, **fields: Any) -> str:
    body = {"prompt": prompt, **fields}
    if client is not None:
        body["client_id"] = client.client_id
    response = post(srv, body)
    assert response.status_code == 200, response.text
    return str(response.json()["prompt_id"])


def run(srv: ComfyTestServer, client: WSClient, prompt: dict[str, Any], **fields: Any) -> tuple[str, list[Any]]:
    """Queue ``prompt`` for ``client`` and return its id and its frames up to ``executing`` null."""
    start = len(client.frames)
    pid = queue_prompt(srv, prompt, client, **fields)
    return pid, client.wait_done(pid, start)


def get(srv: ComfyTestServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(srv.url + path, timeout=TIMEOUT, **kwargs)


def strip_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [strip_tracebacks(v) for v in value]
    return value


SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


@pytest.fixture
def srv() -> Iterator[ComfyTestServer]:
    server = ComfyTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connect(srv: ComfyTestServer) -> Iterator[Callable[..., WSClient]]:
    clients: list[WSClient] = []

    def make(client_id: str | None = "auto", **kwargs: Any) -> WSClient:
        cid = uuid.uuid4().hex if client_id == "auto" else client_id
        client = WSClient(srv.url, cid, **kwargs)
        clients.append(client)
        client.wait_for(lambda f: is_type(f, "status"))
        return client

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------------------------------
# a normal run, caching, files

EXEC_01 = [
    "status(queue_remaining=1)",
    "status(queue_remaining=1)",
    "execution_start",
    "execution_cached(nodes=[])",
    "progress_state(1:running)",
    "executing(node=1)",
    "progress_state(1:finished)",
    "progress_state(1:finished,2:running)",
    "executing(node=2)",
    "executed(node=2)",
    "progress_state(1:finished,2:finished)",
    "execution_success",
    "status(queue_remaining=0)",
    "executing(node=None)",
]

EXEC_02 = [
    "status(queue_remaining=1)",
    "status(queue_remaining=1)",
    "execution_start",
    "execution_cached(nodes=['1', '2'])",
    "executed(node=2)",
    "progress_state(2:finished)",
    "execution_success",
    "status(queue_remaining=0)",
    "executing(node=None)",
]


def test_normal_run_matches_exec_01_and_writes_a_real_png(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    prompt = basic_prompt(0xFF8800, "cap_basic", size=64)
    response = post(srv, {"prompt": prompt, "client_id": client.client_id})
    body = response.json()
    assert response.status_code == 200 and list(body) == ["prompt_id", "number", "node_errors"]
    assert body["number"] == 0 and body["node_errors"] == {}
    pid = body["prompt_id"]
    frames = client.wait_done(pid, 1)
    assert summarize(frames) == EXEC_01

    by_type = {f["type"]: f["data"] for f in frames}
    assert list(by_type["execution_start"]) == ["prompt_id", "timestamp"]
    assert by_type["executing"] == {"node": None, "prompt_id": pid}
    image = {"filename": "cap_basic_00001_.png", "subfolder": "", "type": "output"}
    assert by_type["executed"] == {"node": "2", "display_node": "2", "output": {"images": [image]}, "prompt_id": pid}
    running = frames[4]["data"]["nodes"]["1"]
    assert running == {
        "value": 0.0, "max": 1.0, "state": "running", "node_id": "1", "prompt_id": pid,
        "display_node_id": "1", "parent_node_id": None, "real_node_id": "1",
    }  # fmt: skip

    entry = get(srv, f"/history/{pid}").json()[pid]
    assert list(entry) == ["prompt", "outputs", "status", "meta"]
    assert entry["prompt"] == [0, pid, prompt, {"client_id": client.client_id}, ["2"]]
    assert entry["outputs"] == {"2": {"images": [image]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["meta"] == {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}
    assert srv.history()[pid] == entry

    data = (srv.output_dir / "cap_basic_00001_.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (64, 64)
    decoded = pngmod.decode_png(data)
    assert decoded.pixels[:3] == bytes((0xFF, 0x88, 0x00))
    assert json.loads(decoded.text["prompt"]) == prompt


def test_identical_rerun_is_fully_cached_and_writes_no_file(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    prompt = basic_prompt(0xFF8800, "cap_basic")
    _, first = run(srv, client, prompt)
    pid, frames = run(srv, client, prompt)
    assert summarize(frames) == EXEC_02
    executed = next(f["data"] for f in frames if is_type(f, "executed"))
    assert executed["output"] == next(f["data"]["output"] for f in first if is_type(f, "executed"))
    finished = next(f["data"]["nodes"] for f in frames if is_type(f, "progress_state"))
    assert finished["2"]["value"] == 1 and finished["2"]["state"] == "finished"
    assert [p.name for p in srv.output_dir.iterdir()] == ["cap_basic_00001_.png"]
    assert get(srv, f"/history/{pid}").json()[pid]["outputs"]["2"] == executed["output"]


def test_only_changed_nodes_rerun_and_the_classic_cache_keeps_only_the_last_prompt(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    run(srv, client, basic_prompt(1, "a"))
    _, frames = run(srv, client, basic_prompt(1, "b"))  # exec_03: only the output node changed
    assert summarize(frames)[3:6] == ["execution_cached(nodes=['1'])", "progress_state(2:running)", "executing(node=2)"]
    run(srv, client, basic_prompt(2, "b"))  # another prompt drops what the first one left in the cache
    _, frames = run(srv, client, basic_prompt(1, "b"))
    assert summarize(frames)[3] == "execution_cached(nodes=[])"
    assert sorted(p.name for p in srv.output_dir.iterdir()) == [
        "a_00001_.png", "b_00001_.png", "b_00002_.png", "b_00003_.png",
    ]  # fmt: skip


def test_batches_subfolders_and_counters_name_files_like_comfyui(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    prompt = {"1": empty(5, batch=2), "2": save("1", "sub/name")}
    _, frames = run(srv, client, prompt)
    images = next(f["data"]["output"]["images"] for f in frames if is_type(f, "executed"))
    assert images == [
        {"filename": "name_00001_.png", "subfolder": "sub", "type": "output"},
        {"filename": "name_00002_.png", "subfolder": "sub", "type": "output"},
    ]
    _, frames = run(srv, client, {"1": empty(6), "2": save("1", "sub/name")})
    images = next(f["data"]["output"]["images"] for f in frames if is_type(f, "executed"))
    assert images == [{"filename": "name_00003_.png", "subfolder": "sub", "type": "output"}]
    assert (srv.output_dir / "sub" / "name_00003_.png").is_file()


def test_preview_image_writes_a_temp_file_and_caches_it(srv: ComfyTestServer, connect: Callable[..., WSClient]) -> None:
    client = connect()
    prompt = {"1": empty(255, 32), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    _, frames = run(srv, client, prompt)
    assert summarize(frames) == EXEC_01
    (image,) = next(f["data"]["output"]["images"] for f in frames if is_type(f, "executed"))
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", image["filename"])
    assert image["subfolder"] == "" and image["type"] == "temp"
    assert (srv.temp_dir / image["filename"]).is_file()
    response = get(srv, "/view", params={"filename": image["filename"], "type": "temp"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    _, frames = run(srv, client, prompt)  # exec_08: cached, same temp file
    assert summarize(frames) == EXEC_02
    assert next(f["data"]["output"]["images"] for f in frames if is_type(f, "executed")) == [image]


# --------------------------------------------------------------------------------------------------
# /view and /upload/image


def test_view_streams_files_and_applies_comfyui_path_rules(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    run(srv, client, {"1": empty(7, 32), "2": save("1", "viewsub/cap_view")})
    ok = {"filename": "cap_view_00001_.png", "subfolder": "viewsub"}
    response = get(srv, "/view", params={**ok, "type": "output"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == 'filename="cap_view_00001_.png"'
    assert "Etag" in response.headers and "Last-Modified" in response.headers
    assert response.content == (srv.output_dir / "viewsub" / "cap_view_00001_.png").read_bytes()
    assert get(srv, "/view", params=ok).status_code == 200  # type defaults to output
    assert (
        get(srv, "/api/view", params={"filename": "cap_view_00001_.png [output]", "subfolder": "viewsub"}).status_code
        == 200
    )
    rgb = get(srv, "/view", params={**ok, "channel": "rgb"})
    assert rgb.status_code == 200 and pngmod.read_png_size(rgb.content) == (32, 32)
    cases = [
        ({"filename": "cap_view_00001_.png", "subfolder": "", "type": "output"}, 404),
        ({"filename": "nope_00001_.png", "type": "output"}, 404),
        ({"subfolder": "", "type": "output"}, 404),
        ({"filename": "", "type": "output"}, 400),
        ({"filename": "../../etc/passwd", "type": "output"}, 400),
        ({"filename": "/etc/passwd", "type": "output"}, 400),
        ({"filename": "passwd", "subfolder": "../../../../../../etc", "type": "output"}, 403),
        ({"filename": "passwd", "subfolder": "/etc", "type": "output"}, 403),
        ({"filename": "viewsub/cap_view_00001_.png", "type": "output"}, 404),
        ({"filename": "cap_view_00001_.png", "type": "bogus"}, 400),
        ({"filename": "cap_view_00001_.png", "type": "temp"}, 404),
    ]
    for params, status in cases:
        response = get(srv, "/view", params=params)
        assert (response.status_code, response.content) == (status, b""), params
    raw = requests.get(srv.url + "/view?filename=..%2F..%2Fetc%2Fpasswd&type=output", timeout=TIMEOUT)
    assert raw.status_code == 400


def tiny_png(rgba: tuple[int, int, int, int] = (255, 0, 0, 128)) -> bytes:
    return pngmod.encode_png(2, 2, bytes(rgba) * 4, channels=4)


def upload(srv: ComfyTestServer, name: str, data: bytes, **fields: str) -> requests.Response:
    return requests.post(
        srv.url + "/upload/image", files={"image": (name, io.BytesIO(data))}, data=fields, timeout=TIMEOUT
    )


def test_upload_image_dedupes_renames_and_rejects_escapes(srv: ComfyTestServer) -> None:
    first = upload(srv, "cap_upload.png", tiny_png())
    assert first.status_code == 200 and first.json() == {"name": "cap_upload.png", "subfolder": "", "type": "input"}
    assert upload(srv, "cap_upload.png", tiny_png()).json()["name"] == "cap_upload.png"
    assert upload(srv, "cap_upload.png", tiny_png((0, 255, 0, 255))).json()["name"] == "cap_upload (1).png"
    overwritten = upload(srv, "cap_upload.png", tiny_png((0, 0, 255, 255)), overwrite="true")
    assert overwritten.json()["name"] == "cap_upload.png"
    assert (srv.input_dir / "cap_upload.png").read_bytes() == tiny_png((0, 0, 255, 255))
    sub = upload(srv, "cap_sub.png", tiny_png(), subfolder="mysub", type="input")
    assert sub.json() == {"name": "cap_sub.png", "subfolder": "mysub", "type": "input"}
    assert upload(srv, "t.png", tiny_png(), type="temp").json()["type"] == "temp"
    assert (srv.temp_dir / "t.png").is_file()
    assert upload(srv, "not_an_image.txt", b"hello").status_code == 200
    for response in (
        upload(srv, "evil.png", tiny_png(), subfolder="../../escape"),
        upload(srv, "../evil2.png", tiny_png()),
        requests.post(srv.url + "/upload/image", data={"type": "input"}, timeout=TIMEOUT),
    ):
        assert (response.status_code, response.content) == (400, b"")
    choices = get(srv, "/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
    assert choices == ["cap_upload (1).png", "cap_upload.png"]


def test_load_image_reads_uploads_and_fails_on_non_images(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    upload(srv, "red.png", tiny_png())
    upload(srv, "blue.png", tiny_png((0, 0, 255, 255)), subfolder="mysub")
    upload(srv, "not_an_image.txt", b"hello")
    load = {"class_type": "LoadImage", "inputs": {"image": "red.png"}}
    _, frames = run(
        srv,
        client,
        {"1": load, "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "3": save("2", "inv")},
    )
    assert frames[-3]["type"] == "execution_success"
    decoded = pngmod.decode_png((srv.output_dir / "inv_00001_.png").read_bytes())
    assert (decoded.width, decoded.height, decoded.pixels[:3]) == (2, 2, bytes((0, 255, 255)))
    _, frames = run(
        srv, client, {"1": {"class_type": "LoadImage", "inputs": {"image": "mysub/blue.png"}}, "2": save("1", "blue")}
    )
    assert frames[-3]["type"] == "execution_success"
    _, frames = run(
        srv, client, {"1": {"class_type": "LoadImage", "inputs": {"image": "not_an_image.txt"}}, "2": save("1")}
    )
    error = next(f["data"] for f in frames if is_type(f, "execution_error"))
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert error["exception_message"].startswith("cannot identify image file")


# --------------------------------------------------------------------------------------------------
# POST /prompt: validation and fields

EMPTY_64: dict[str, Any] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16746496}}
SAVE_OK = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cap_err_ok"}}
INT_CONFIG = ["INT", {"default": 512, "max": 16384, "min": 1, "step": 1}]
IMAGES_CONFIG = ["IMAGE", {"tooltip": "The images to save."}]
SCALE_OPTIONS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]


def failed(node_errors: dict[str, Any], details: str = "") -> dict[str, Any]:
    error = {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": details,
        "extra_info": {},
    }
    return {"error": error, "node_errors": node_errors}


def node_error(class_type: str, outputs: list[str], *errors: dict[str, Any]) -> dict[str, Any]:
    return {"errors": list(errors), "dependent_outputs": outputs, "class_type": class_type}


def with_width(width: Any) -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {**EMPTY_64["inputs"], "width": width}}, "2": SAVE_OK}


VALIDATION_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "unknown_class_type",
        {"1": {"class_type": "NoSuchNode", "inputs": {}}, "2": SAVE_OK},
        {"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.", "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}},
    ),
    (
        "missing_class_type",
        {"1": {"inputs": {}}, "2": SAVE_OK},
        {"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type property.", "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}},
    ),
    (
        "node_value_not_object",
        {"1": "hello", "2": SAVE_OK},
        {"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type property.", "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}},
    ),
    (
        "missing_required_input",
        {"1": {"class_type": "EmptyImage", "inputs": {"height": 64, "batch_size": 1, "color": 0}}, "2": SAVE_OK},
        failed({"1": node_error("EmptyImage", ["2"], {"type": "required_input_missing", "message": "Required input is missing", "details": "width", "extra_info": {"input_name": "width"}})}),
    ),
    (
        "wrong_type_string_for_int",
        with_width("abc"),
        failed({"1": node_error("EmptyImage", ["2"], {
            "type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
            "details": "width, abc, invalid literal for int() with base 10: 'abc'",
            "extra_info": {"input_name": "width", "input_config": INT_CONFIG, "received_value": "abc", "exception_message": "invalid literal for int() with base 10: 'abc'"},
        })}),
    ),
    (
        "value_below_min",
        with_width(0),
        failed({"1": node_error("EmptyImage", ["2"], {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "width", "extra_info": {"input_name": "width", "input_config": INT_CONFIG, "received_value": 0}})}),
    ),
    (
        "value_above_max",
        with_width(99999),
        failed({"1": node_error("EmptyImage", ["2"], {"type": "value_bigger_than_max", "message": "Value 99999 bigger than max of 16384", "details": "width", "extra_info": {"input_name": "width", "input_config": INT_CONFIG, "received_value": 99999}})}),
    ),
    (
        "value_not_in_list_legacy_combo",
        {"1": EMPTY_64, "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "foo", "width": 8, "height": 8, "crop": "disabled"}}, "3": save("2", "x")},
        failed({"2": node_error("ImageScale", ["3"], {
            "type": "value_not_in_list", "message": "Value not in list",
            "details": f"upscale_method: 'foo' not in {SCALE_OPTIONS}",
            "extra_info": {"input_name": "upscale_method", "input_config": [SCALE_OPTIONS, {}], "received_value": "foo"},
        })}),
    ),
    (
        "value_not_in_list_combo_type",
        {"1": EMPTY_64, "2": {"class_type": "ImageQuantize", "inputs": {"image": ["1", 0], "colors": 4, "dither": "nope"}}, "3": save("2", "x")},
        failed({"2": node_error("ImageQuantize", ["3"], {
            "type": "value_not_in_list", "message": "Value not in list",
            "details": "dither: 'nope' not in ['none', 'floyd-steinberg', 'bayer-2', 'bayer-4', 'bayer-8', 'bayer-16']",
            "extra_info": {"input_name": "dither", "input_config": ["COMBO", {"multiselect": False, "options": ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]}], "received_value": "nope"},
        })}),
    ),
    (
        "link_to_missing_node",
        {"1": EMPTY_64, "2": {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "x"}}},
        failed({"2": node_error("SaveImage", ["2"], {"type": "exception_during_validation", "message": "Exception when validating node", "details": "'99'", "extra_info": {"exception_type": "KeyError"}})}, "Exception when validating node: '99'"),
    ),
    (
        "bad_linked_input_len1",
        {"1": EMPTY_64, "2": {"class_type": "SaveImage", "inputs": {"images": ["1"], "filename_prefix": "x"}}},
        failed(
            {"2": node_error("SaveImage", ["2"], {"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]", "details": "images", "extra_info": {"input_name": "images", "input_config": IMAGES_CONFIG, "received_value": ["1"]}})},
            "Bad linked input, must be a length-2 list of [node_id, slot_index]: images",
        ),
    ),
    (
        "link_slot_out_of_range",
        {"1": EMPTY_64, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 5], "filename_prefix": "x"}}},
        failed(
            {"2": node_error("SaveImage", ["2"], {"type": "exception_during_validation", "message": "Exception when validating node", "details": "tuple index out of range", "extra_info": {"exception_type": "IndexError"}})},
            "Exception when validating node: tuple index out of range",
        ),
    ),
    (
        "return_type_mismatch",
        {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}, "2": save("1", "x")},
        failed(
            {"2": node_error("SaveImage", ["2"], {
                "type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                "details": "images, received_type(LATENT) mismatch input_type(IMAGE)",
                "extra_info": {"input_name": "images", "input_config": IMAGES_CONFIG, "received_type": "LATENT", "linked_node": ["1", 0]},
            })},
            "Return type mismatch between linked nodes: images, received_type(LATENT) mismatch input_type(IMAGE)",
        ),
    ),
    (
        "no_output_node",
        {"1": EMPTY_64, "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}},
        {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}},
    ),
    (
        "empty_prompt",
        {},
        {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}},
    ),
    (
        "loadimage_nonexistent_file",
        {"1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}}, "2": save("1", "x")},
        failed({"1": node_error("LoadImage", ["2"], {"type": "custom_validation_failed", "message": "Custom validation failed for node", "details": "image - Invalid image file: does_not_exist.png", "extra_info": {"input_name": "image"}})}),
    ),
    (
        "node_without_inputs_key",
        {"1": {"class_type": "EmptyImage"}, "2": save("1", "x")},
        failed({"1": node_error("EmptyImage", ["2"], {
            "type": "exception_during_inner_validation", "message": "Exception when validating inner node", "details": "'inputs'",
            "extra_info": {"input_name": "images", "input_config": IMAGES_CONFIG, "exception_message": "'inputs'", "exception_type": "KeyError", "linked_node": ["1", 0]},
        })}),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("prompt", "expected"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_invalid_prompts_get_comfyui_error_bodies(
    srv: ComfyTestServer, prompt: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = post(srv, {"prompt": prompt, "client_id": "x"})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert strip_tracebacks(response.json()) == expected
    assert srv.queue()["queue_pending"] == [] and srv.executed_prompt_ids == []


def test_lenient_conversion_and_partially_valid_prompts_are_accepted(srv: ComfyTestServer) -> None:
    for width in ("128", 64.7):
        response = post(srv, {"prompt": with_width(width)})
        assert response.status_code == 200 and response.json()["node_errors"] == {}
    partial = {
        "1": EMPTY_64, "2": SAVE_OK,
        "3": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "foo", "width": 8, "height": 8, "crop": "disabled"}},
        "4": save("3", "x"),
    }  # fmt: skip
    response = post(srv, {"prompt": partial})
    assert response.status_code == 200
    assert list(response.json()["node_errors"]) == ["3"] and response.json()["node_errors"]["3"][
        "dependent_outputs"
    ] == ["4"]
    pid = response.json()["prompt_id"]
    srv.wait_idle()
    history = srv.history()
    widths = [entry["prompt"][2]["1"]["inputs"]["width"] for entry in history.values() if entry["prompt"][1] != pid]
    assert widths == [128, 64]  # converted in place, like ComfyUI
    assert history[pid]["prompt"][4] == ["2"] and list(history[pid]["outputs"]) == ["2"]


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "",
        json.dumps({"prompt": [1, 2]}),
        json.dumps({"prompt": "abc"}),
        json.dumps({"prompt": {"last_node_id": 2, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": []}}),
        json.dumps({"prompt": basic_prompt(), "number": "abc"}),
    ],
    ids=["invalid_json", "empty_body", "prompt_list", "prompt_string", "ui_workflow", "bad_number"],
)
def test_malformed_bodies_get_aiohttps_plain_500(srv: ComfyTestServer, raw: str) -> None:
    response = requests.post(
        srv.url + "/prompt", data=raw, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
    )
    assert (response.status_code, response.text) == (500, SERVER_ERROR_TEXT)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_no_prompt_bodies_get_400_no_prompt(srv: ComfyTestServer) -> None:
    no_prompt = {
        "error": {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        },
        "node_errors": {},
    }
    for body in ({"client_id": "x"}, [1, 2], {"last_node_id": 2, "nodes": [], "links": []}):
        response = post(srv, body)
        assert (response.status_code, response.json()) == (400, no_prompt)
    text_plain = requests.post(
        srv.url + "/prompt",
        data=json.dumps({"prompt": basic_prompt()}),
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert text_plain.status_code == 200
    assert text_plain.json()["number"] == 3  # every POST without a number counted, failed ones included


def test_post_prompt_fields_follow_comfyui(srv: ComfyTestServer, connect: Callable[..., WSClient]) -> None:
    client = connect()
    own = post(srv, {"prompt": basic_prompt(1), "client_id": client.client_id, "prompt_id": "my-own-id"}).json()
    assert own["prompt_id"] == "my-own-id" and own["number"] == 0
    client.wait_done("my-own-id", 1)
    assert post(srv, {"prompt": basic_prompt(2), "number": 123.5}).json()["number"] == 123.5
    assert post(srv, {"prompt": basic_prompt(3), "number": "7"}).json()["number"] == 7.0
    assert post(srv, {"prompt": basic_prompt(4), "front": True}).json()["number"] == -1
    extra = {
        "extra_pnginfo": {"workflow": {"note": "ui"}},
        "my_custom_key": 42,
        "api_key_comfy_org": "SECRET",
        "client_id": "someone-else",
    }
    start = len(client.frames)
    pid = post(srv, {"prompt": basic_prompt(5, "extra"), "client_id": client.client_id, "extra_data": extra}).json()[
        "prompt_id"
    ]
    client.wait_done(pid, start)  # the top-level client_id wins over extra_data.client_id
    stored = get(srv, f"/history/{pid}").json()[pid]["prompt"][3]
    assert stored == {"extra_pnginfo": {"workflow": {"note": "ui"}}, "my_custom_key": 42, "client_id": client.client_id}
    text = pngmod.read_png_text((srv.output_dir / "extra_00001_.png").read_bytes())
    assert json.loads(text["workflow"]) == {"note": "ui"} and "prompt" in text
    start = len(client.frames)
    pid = post(srv, {"prompt": basic_prompt(6), "extra_data": {"client_id": client.client_id}}).json()["prompt_id"]
    client.wait_done(pid, start)  # a client_id only inside extra_data works too
    prompt = {"1": empty(7), "2": save("1", "part_a"), "3": save("1", "part_b")}
    pid, frames = run(srv, client, prompt, partial_execution_targets=["3"])
    assert "executing(node=2)" not in summarize(frames) and "executed(node=3)" in summarize(frames)
    bad = post(srv, {"prompt": prompt, "partial_execution_targets": ["1"]})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "prompt_no_outputs"
    srv.wait_idle()
    reused = post(srv, {"prompt": basic_prompt(8), "client_id": client.client_id, "prompt_id": "my-own-id"}).json()
    srv.wait_idle()
    assert get(srv, "/history/my-own-id").json()["my-own-id"]["prompt"][0] == reused["number"]


def test_origin_mismatch_is_refused_with_an_empty_403(srv: ComfyTestServer) -> None:
    refused = post(srv, {"prompt": basic_prompt()}, headers={"Origin": "http://evil.example.com"})
    assert (refused.status_code, refused.content) == (403, b"")
    assert post(srv, {"prompt": basic_prompt()}, headers={"Origin": srv.url}).status_code == 200
    assert post(srv, {"prompt": basic_prompt(1)}).status_code == 200
    assert get(srv, "/api/prompt").json() in ({"exec_info": {"queue_remaining": n}} for n in range(3))


# --------------------------------------------------------------------------------------------------
# runtime errors, interrupts, queue and history


def test_runtime_errors_send_execution_error_and_the_failed_node_is_not_cached(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": -5}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": ["1", 0], "height": 8, "batch_size": 1, "color": 0}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": save("3", "cap_neg"),
    }
    pid, frames = run(srv, client, prompt)
    assert summarize(frames) == [
        *EXEC_01[:9],
        "execution_error",
        "status(queue_remaining=0)",
        "executing(node=None)",
    ]  # exec_err_02
    error = next(f["data"] for f in frames if is_type(f, "execution_error"))
    assert list(error) == [
        "prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
        "traceback", "current_inputs", "current_outputs", "timestamp",
    ]  # fmt: skip
    assert error["node_id"] == "2" and error["node_type"] == "EmptyImage" and error["executed"] == ["1"]
    assert error["exception_message"] == "Trying to create tensor with negative dimension -5: [1, 8, -5, 1]\n"
    assert error["exception_type"] == "RuntimeError"
    assert error["current_inputs"] == {"width": [-5], "height": [8], "batch_size": [1], "color": [0]}
    assert sorted(error["current_outputs"]) == ["1", "2", "3", "4"] and isinstance(error["traceback"], list)
    entry = get(srv, f"/history/{pid}").json()[pid]
    assert entry["outputs"] == {} and entry["meta"] == {}
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_error"]

    _, frames = run(srv, client, prompt)  # exec_err_03: PrimitiveInt cached, EmptyImage runs again
    assert summarize(frames)[3] == "execution_cached(nodes=['1'])"
    assert next(f["data"] for f in frames if is_type(f, "execution_error"))["executed"] == []

    _, frames = run(srv, client, {"1": empty(), "2": save("1", "../../escape")})
    error = next(f["data"] for f in frames if is_type(f, "execution_error"))
    assert error["exception_type"] == "Exception"
    assert "Saving image outside the output folder is not allowed." in error["exception_message"]
    assert set(error["current_inputs"]) == {"images", "filename_prefix", "prompt", "extra_pnginfo"}

    _, frames = run(
        srv,
        client,
        {
            "1": empty(),
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
            "3": save("2"),
        },
    )
    error = next(f["data"] for f in frames if is_type(f, "execution_error"))
    assert (error["node_type"], error["exception_type"]) == ("ImageBlur", "NotImplementedError")
    assert error["exception_message"] == "node ImageBlur is not executable on the hotfolder test server\n"


def progress_of(pid: str) -> Callable[[Any], bool]:
    return lambda f: is_type(f, "progress") and f["data"]["prompt_id"] == pid


def test_interrupt_hits_only_the_running_prompt(srv: ComfyTestServer, connect: Callable[..., WSClient]) -> None:
    client = connect()
    requests.post(srv.url + "/interrupt", timeout=TIMEOUT)  # while idle: no effect on the next prompt
    start = len(client.frames)
    pid = queue_prompt(srv, sleep_prompt(30), client)
    seen = client.wait_for(progress_of(pid), start)
    ignored = requests.post(srv.url + "/interrupt", json={"prompt_id": "not-running"}, timeout=TIMEOUT)
    assert (ignored.status_code, ignored.content) == (200, b"")
    mark = len(client.frames)
    client.wait_for(progress_of(pid), mark)
    client.wait_for(progress_of(pid), len(client.frames))  # still sleeping
    assert requests.post(srv.url + "/interrupt", json={"prompt_id": pid}, timeout=TIMEOUT).status_code == 200
    frames = client.wait_done(pid, seen)
    tail = [s for s in summarize(frames) if not s.startswith("progress")]
    assert tail[-3:] == ["execution_interrupted", "status(queue_remaining=0)", "executing(node=None)"]
    interrupted = next(f["data"] for f in frames if is_type(f, "execution_interrupted"))
    assert list(interrupted) == ["prompt_id", "node_id", "node_type", "executed", "timestamp"]
    assert (interrupted["node_id"], interrupted["node_type"], interrupted["executed"]) == ("2", "TestSleep", ["1"])
    status = get(srv, f"/history/{pid}").json()[pid]["status"]
    assert (status["status_str"], status["completed"], status["messages"][-1][0]) == (
        "error",
        False,
        "execution_interrupted",
    )

    start = len(client.frames)
    pid = queue_prompt(srv, sleep_prompt(30, color=1), client)
    client.wait_for(progress_of(pid), start)
    requests.post(srv.url + "/api/interrupt", timeout=TIMEOUT)  # no body: global interrupt
    assert any(is_type(f, "execution_interrupted") for f in client.wait_done(pid, start))


def test_queue_is_a_heap_and_delete_and_clear_drop_pending_prompts(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    start = len(client.frames)
    blocker = queue_prompt(srv, sleep_prompt(30, color=1), client, prompt_id="blocker")
    client.wait_for(progress_of(blocker), start)
    with pytest.raises(TimeoutError):
        srv.wait_idle(timeout=0.05)
    queue_prompt(srv, basic_prompt(2), prompt_id="n100", number=100)
    queue_prompt(srv, basic_prompt(3), prompt_id="n50", number=50)
    front = post(srv, {"prompt": basic_prompt(4), "prompt_id": "front", "front": True}).json()
    queue = get(srv, "/queue").json()
    assert [item[1] for item in queue["queue_running"]] == ["blocker"]
    # the heap array as ComfyUI returns it (misc_fanout_ordering_duplicates.json), not sorted
    assert [[item[0], item[1]] for item in queue["queue_pending"]] == [[-1, "front"], [100.0, "n100"], [50.0, "n50"]]
    assert front["number"] == -1
    queue_prompt(srv, basic_prompt(5), prompt_id="gone")
    assert queue["queue_running"][0] == [
        0,
        "blocker",
        sleep_prompt(30, color=1),
        {"client_id": client.client_id},
        ["3"],
    ]
    assert get(srv, "/prompt").json() == {"exec_info": {"queue_remaining": 5}}
    for ids in (["gone"], ["unknown-id"], ["blocker"]):
        response = requests.post(srv.url + "/queue", json={"delete": ids}, timeout=TIMEOUT)
        assert (response.status_code, response.content) == (200, b"")
    assert sorted(item[1] for item in get(srv, "/queue").json()["queue_pending"]) == ["front", "n100", "n50"]
    requests.post(srv.url + "/interrupt", json={"prompt_id": "blocker"}, timeout=TIMEOUT)
    srv.wait_idle()
    assert srv.executed_prompt_ids == ["blocker", "front", "n50", "n100"]

    start = len(client.frames)
    blocker = queue_prompt(srv, sleep_prompt(30, color=2), client, prompt_id="blocker2")
    client.wait_for(progress_of(blocker), start)
    queue_prompt(srv, basic_prompt(6), prompt_id="d")
    queue_prompt(srv, basic_prompt(7), prompt_id="e")
    requests.post(srv.url + "/queue", json={"clear": True}, timeout=TIMEOUT)
    assert get(srv, "/queue").json()["queue_pending"] == []
    requests.post(srv.url + "/interrupt", timeout=TIMEOUT)
    srv.wait_idle()
    assert "d" not in srv.executed_prompt_ids and get(srv, "/history/d").json() == {}
    assert "gone" not in srv.history()


def test_same_prompt_id_and_number_while_pending_answers_500_but_runs_both(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    start = len(client.frames)
    blocker = queue_prompt(srv, sleep_prompt(30), client)
    client.wait_for(progress_of(blocker), start)
    assert post(srv, {"prompt": basic_prompt(1), "prompt_id": "dup-id", "number": 5}).status_code == 200
    second = post(srv, {"prompt": basic_prompt(2), "prompt_id": "dup-id", "number": 5})
    assert (second.status_code, second.text) == (500, SERVER_ERROR_TEXT)
    assert [item[1] for item in get(srv, "/queue").json()["queue_pending"]] == ["dup-id", "dup-id"]
    requests.post(srv.url + "/interrupt", timeout=TIMEOUT)
    srv.wait_idle()
    assert srv.executed_prompt_ids[1:] == ["dup-id", "dup-id"]


def test_history_orders_oldest_first_with_comfyui_max_items_and_offset(srv: ComfyTestServer) -> None:
    ids = [queue_prompt(srv, basic_prompt(i), prompt_id=f"p{i}") for i in range(5)]
    srv.wait_idle()

    def keys(**params: str) -> list[str]:
        return list(get(srv, "/history", params=params).json())

    assert keys() == ids
    assert keys(max_items="2") == ids[-2:]
    assert keys(max_items="2", offset="0") == ids[:2]
    assert keys(max_items="2", offset="1") == ids[1:3]
    assert keys(offset="3") == ids[3:]
    assert keys(max_items="0") == []
    bad = get(srv, "/history", params={"max_items": "abc"})
    assert (bad.status_code, bad.text) == (500, SERVER_ERROR_TEXT)
    assert get(srv, "/history/does-not-exist").json() == {}
    assert requests.post(srv.url + "/history", json={"delete": [ids[0]]}, timeout=TIMEOUT).content == b""
    assert keys() == ids[1:]
    requests.post(srv.url + "/history", json={"clear": True}, timeout=TIMEOUT)
    assert keys() == [] and srv.history() == {}


# --------------------------------------------------------------------------------------------------
# WebSocket behaviour


def test_ws_without_client_id_gets_a_hex_sid_and_feature_flags_get_a_reply(srv: ComfyTestServer) -> None:
    anonymous = WSClient(srv.url, None)
    flagged = WSClient(srv.url, "flags", feature_flags=True)
    try:
        anonymous.wait_for(lambda f: is_type(f, "status"))
        sid = anonymous.frames[0]["data"]["sid"]
        assert re.fullmatch(r"[0-9a-f]{32}", sid)
        assert anonymous.frames[0] == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid},
        }
        flagged.wait_for(lambda f: is_type(f, "feature_flags"))
        assert flagged.frames == [
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "flags"}},
            {"type": "feature_flags", "data": {"supports_preview_metadata": True, "max_upload_size": 104857600}},
        ]
        flagged.barrier()  # aiohttp answers client pings
        start = len(anonymous.frames)
        pid = queue_prompt(srv, basic_prompt(), client_id=sid)
        assert summarize(anonymous.wait_done(pid, start)) == EXEC_01
    finally:
        anonymous.close()
        flagged.close()


def test_prompt_without_client_id_only_broadcasts_status_and_progress_state(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    watcher = connect()
    start = len(watcher.frames)
    queue_prompt(srv, basic_prompt())
    srv.wait_idle()
    watcher.wait_for(
        lambda f: f == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}, start + 2
    )
    assert summarize(watcher.frames[start:]) == [
        "status(queue_remaining=1)", "status(queue_remaining=1)", "progress_state(1:running)", "progress_state(1:finished)",
        "progress_state(1:finished,2:running)", "progress_state(1:finished,2:finished)", "status(queue_remaining=0)",
    ]  # fmt: skip


def test_testsleep_sends_float_progress_and_one_binary_preview(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    pid, frames = run(srv, client, sleep_prompt(0.2))
    summary = summarize(frames)
    assert summary[:10] == [*EXEC_01[:9], "progress_state(1:finished,2:running)"]
    assert summary[-8:] == [
        "progress_state(1:finished,2:finished)", "progress_state(1:finished,2:finished,3:running)", "executing(node=3)",
        "executed(node=3)", "progress_state(1:finished,2:finished,3:finished)", "execution_success",
        "status(queue_remaining=0)", "executing(node=None)",
    ]  # fmt: skip
    middle = summary[10:-8]
    assert set(middle) == {"progress(node=2)", "progress_state(1:finished,2:running)", "BINARY(type=1)"}
    progress = [f["data"] for f in frames if is_type(f, "progress")]
    assert len(progress) >= 4 and all(p["max"] == 0.2 and p["node"] == "2" and p["prompt_id"] == pid for p in progress)
    values = [p["value"] for p in progress]
    assert values == sorted(values) and values[-1] == 0.2 and isinstance(values[1], float)
    binary = [i for i, f in enumerate(frames) if isinstance(f, bytes)]
    assert len(binary) == 1
    frame = frames[binary[0]]
    assert frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02" and frame[8:16] == pngmod.PNG_SIGNATURE
    assert is_type(frames[binary[0] - 1], "progress") and is_type(frames[binary[0] - 2], "progress_state")
    finished = next(
        f["data"]["nodes"]["2"]
        for f in frames
        if is_type(f, "progress_state") and f["data"]["nodes"].get("2", {}).get("state") == "finished"
    )
    assert finished["value"] == finished["max"] == 0.2

    flagged = connect(feature_flags=True)
    flagged.wait_for(lambda f: is_type(f, "feature_flags"))
    pid, frames = run(srv, flagged, sleep_prompt(0.15))
    (index,) = [i for i, f in enumerate(frames) if isinstance(f, bytes)]
    frame = frames[index]
    assert struct.unpack(">I", frame[:4])[0] == 4
    (length,) = struct.unpack(">I", frame[4:8])
    assert json.loads(frame[8 : 8 + length]) == {
        "node_id": "2", "prompt_id": pid, "display_node_id": "2", "parent_node_id": None, "real_node_id": "2", "image_type": "image/png",
    }  # fmt: skip
    assert frame[8 + length : 16 + length] == pngmod.PNG_SIGNATURE
    assert is_type(frames[index - 1], "progress_state") and is_type(frames[index + 1], "progress")


def test_reconnect_during_a_run_gets_executing_without_prompt_id(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    first = connect("reconnecting-client")
    start = len(first.frames)
    pid = queue_prompt(srv, sleep_prompt(30), first)
    first.wait_for(progress_of(pid), start)
    first.close()
    second = connect("reconnecting-client")
    second.wait_for(lambda f: is_type(f, "executing"))
    assert second.frames[:2] == [
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": "reconnecting-client"}},
        {"type": "executing", "data": {"node": "2"}},
    ]
    second.wait_for(progress_of(pid), 2)  # live messages continue on the new socket
    requests.post(srv.url + "/interrupt", timeout=TIMEOUT)
    assert any(is_type(f, "execution_interrupted") for f in second.wait_done(pid, 2))


def test_two_sockets_with_one_client_id_orphan_the_newer_one(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    older = connect("shared-id")
    newer = connect("shared-id")
    watcher = connect()
    _, frames = run(srv, newer, basic_prompt(1))
    assert summarize(frames) == EXEC_01
    older.barrier()
    assert len(older.frames) == 1  # only its own first status
    older.close()
    mark_newer, mark_watcher = len(newer.frames), len(watcher.frames)
    queue_prompt(srv, basic_prompt(2), client_id="shared-id")
    srv.wait_idle()
    watcher.wait_for(
        lambda f: is_type(f, "status") and f["data"]["status"]["exec_info"]["queue_remaining"] == 0, mark_watcher + 2
    )
    newer.barrier()
    assert newer.frames[mark_newer:] == []  # ComfyUI's finally unregistered it too


# --------------------------------------------------------------------------------------------------
# lifecycle


def test_restart_forgets_state_keeps_outputs_and_drops_sockets_without_close_frame(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    idle = connect()
    run(srv, client, basic_prompt(1, "kept"))
    run(srv, client, {"1": empty(2), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    start = len(client.frames)
    pid = queue_prompt(srv, sleep_prompt(30), client)
    queue_prompt(srv, basic_prompt(3))
    client.wait_for(progress_of(pid), start)
    port = srv.port
    srv.restart()
    for ws in (client, idle):
        ws.wait_closed()
        assert ws.close_frames == [] and ws.error is not None
    assert srv.port == port and srv.running
    assert get(srv, "/history").json() == {} and srv.history() == {}
    assert get(srv, "/queue").json() == {"queue_running": [], "queue_pending": []}
    assert (srv.output_dir / "kept_00001_.png").is_file()
    assert list(srv.temp_dir.iterdir()) == []
    fresh = connect()
    pid, frames = run(srv, fresh, basic_prompt(1, "kept"))
    assert summarize(frames)[3] == "execution_cached(nodes=[])"  # the cache is gone too
    assert get(srv, f"/history/{pid}").json()[pid]["prompt"][0] == 0  # and the counter
    assert (srv.output_dir / "kept_00002_.png").is_file()


def test_stop_closes_the_port_and_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with ComfyTestServer(output_dir=tmp_path / "out") as server:
        url = server.url
        assert server.output_dir == (tmp_path / "out").resolve()
        assert get(server, "/system_stats").status_code == 200
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/queue", timeout=TIMEOUT)
    with pytest.raises(ConnectionRefusedError):
        websocket.create_connection(url.replace("http", "ws") + "/ws", timeout=TIMEOUT)
    server.stop()  # stopping twice is harmless


def test_cli_prints_one_listening_line_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "hotfolder.testing", "--port", "0", "--output-dir", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            lines: list[str] = []
            reader = threading.Thread(
                target=lambda: lines.append(process.stdout.readline() if process.stdout else ""), daemon=True
            )
            reader.start()
            reader.join(TIMEOUT * 2)
            assert lines and re.fullmatch(r"hotfolder\.testing listening on http://127\.0\.0\.1:\d+\n", lines[0]), lines
            url = lines[0].split()[-1]
            assert requests.get(url + "/system_stats", timeout=TIMEOUT).status_code == 200
            queue_url = url + "/prompt"
            assert requests.post(queue_url, json={"prompt": basic_prompt()}, timeout=TIMEOUT).status_code == 200
            process.send_signal(signal.SIGINT)  # Ctrl-C
            assert process.wait(TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/queue", timeout=TIMEOUT)


# --------------------------------------------------------------------------------------------------
# faults


def test_fault_post_status_is_not_queued_and_post_hang_is(srv: ComfyTestServer) -> None:
    srv.faults.post_status(500)
    refused = post(srv, {"prompt": basic_prompt()})
    assert (refused.status_code, refused.text, refused.headers["Connection"]) == (500, SERVER_ERROR_TEXT, "close")
    srv.faults.post_status(503, count=2)
    assert [post(srv, {"prompt": basic_prompt()}).status_code for _ in range(3)] == [503, 503, 200]
    srv.wait_idle()
    assert len(srv.executed_prompt_ids) == 1

    srv.faults.post_hang(seconds=30)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(srv.url + "/prompt", json={"prompt": basic_prompt(1), "prompt_id": "hung"}, timeout=0.5)
    srv.wait_idle()
    assert srv.history()["hung"]["status"]["status_str"] == "success"
    assert post(srv, {"prompt": basic_prompt(2)}).status_code == 200

    srv.faults.post_status(500)
    srv.faults.clear()
    assert post(srv, {"prompt": basic_prompt(3)}).status_code == 200


def test_fault_view_status_fails_the_next_downloads(srv: ComfyTestServer) -> None:
    queue_prompt(srv, basic_prompt(1, "v"))
    srv.wait_idle()
    srv.faults.view_status(500, count=2)
    params = {"filename": "v_00001_.png", "type": "output"}
    results = [get(srv, "/view", params=params) for _ in range(3)]
    assert [(r.status_code, r.content == b"") for r in results] == [(500, True), (500, True), (200, False)]
    srv.faults.view_status(503, count=1, skip=2)
    assert [get(srv, "/view", params=params).status_code for _ in range(4)] == [200, 200, 503, 200]


def test_fault_view_body_serves_any_name_even_one_comfyui_refuses(srv: ComfyTestServer) -> None:
    hostile = {"filename": "../../../etc/passwd", "type": "output"}
    assert get(srv, "/view", params=hostile).status_code == 400  # ComfyUI's own answer
    srv.faults.view_body(b"served", count=2)
    results = [get(srv, "/view", params=hostile) for _ in range(3)]
    assert [(r.status_code, r.content) for r in results] == [(200, b"served"), (200, b"served"), (400, b"")]


def test_fault_history_delay_writes_history_after_the_prompt_ends(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    srv.faults.history_delay(1.0)
    pid, frames = run(srv, client, basic_prompt())
    assert summarize(frames)[-3:] == ["execution_success", "status(queue_remaining=0)", "executing(node=None)"]
    assert get(srv, f"/history/{pid}").json() == {}
    srv.wait_idle()
    assert get(srv, f"/history/{pid}").json()[pid]["status"]["status_str"] == "success"


def test_fault_drop_websockets_now_and_periodically(srv: ComfyTestServer, connect: Callable[..., WSClient]) -> None:
    client = connect()
    srv.faults.drop_websockets()
    client.wait_closed()
    assert client.close_frames == [] and client.error is not None
    srv.faults.drop_websockets_every(0.1)
    for _ in range(2):
        try:
            dropped = WSClient(srv.url, uuid.uuid4().hex)
        except (websocket.WebSocketException, OSError):
            continue  # dropped during the handshake already
        try:
            dropped.wait_closed()
            assert dropped.close_frames == []
        finally:
            dropped.close()
    srv.faults.drop_websockets_every(0)
    survivor = connect()
    run(srv, survivor, sleep_prompt(0.4))  # lives longer than the old interval
    assert not survivor.done


def test_fault_silence_websockets_keeps_sockets_open_but_quiet(
    srv: ComfyTestServer, connect: Callable[..., WSClient]
) -> None:
    client = connect()
    srv.faults.silence_websockets(True)
    quiet = WSClient(srv.url, "quiet")
    try:
        start = len(client.frames)
        queue_prompt(srv, basic_prompt(), client)
        srv.wait_idle()
        client.barrier()
        quiet.barrier()
        assert client.frames[start:] == [] and quiet.frames == []
        srv.faults.silence_websockets(False)
        run(srv, client, basic_prompt(1))
    finally:
        quiet.close()


def test_fault_fail_node_and_node_delay(srv: ComfyTestServer, connect: Callable[..., WSClient]) -> None:
    client = connect()
    srv.faults.fail_node("EmptyImage", message="boom", exception_type="ValueError")
    pid, frames = run(srv, client, basic_prompt())
    error = next(f["data"] for f in frames if is_type(f, "execution_error"))
    assert (error["node_type"], error["exception_message"], error["exception_type"]) == (
        "EmptyImage",
        "boom\n",
        "ValueError",
    )
    assert srv.history()[pid]["status"]["status_str"] == "error"
    _, frames = run(srv, client, basic_prompt())  # the count is used up
    assert frames[-3]["type"] == "execution_success"

    srv.faults.node_delay("EmptyImage", 0.3)
    began = time.monotonic()
    run(srv, client, basic_prompt(1))
    assert time.monotonic() - began >= 0.3
    assert srv.held_nodes() == []
    srv.faults.node_delay("EmptyImage", 30)
    start = len(client.frames)
    pid = queue_prompt(srv, basic_prompt(2), client)
    client.wait_for(lambda f: is_type(f, "executing") and f["data"].get("node") == "1", start)
    wait_until(lambda: srv.held_nodes() == [("EmptyImage", 30)], message="the node held by its delay")
    requests.post(srv.url + "/interrupt", json={"prompt_id": pid}, timeout=TIMEOUT)
    interrupted = next(f["data"] for f in client.wait_done(pid, start) if is_type(f, "execution_interrupted"))
    assert interrupted["node_type"] == "EmptyImage"
    assert srv.held_nodes() == []  # an interrupt ends the wait


def test_fault_prompt_time_makes_every_prompt_last_that_long(srv: ComfyTestServer, connect: Callable[..., WSClient]) -> None:
    client = connect()
    srv.faults.prompt_time(0.3)  # the bench's GPU job: T in all, from execution_start to the end

    def span(pid: str) -> float:
        stamps = {kind: data["timestamp"] for kind, data in srv.history()[pid]["status"]["messages"]}
        return (stamps["execution_success"] - stamps["execution_start"]) / 1000

    pid, frames = run(srv, client, basic_prompt(1))
    assert frames[-3]["type"] == "execution_success" and span(pid) >= 0.3
    srv.faults.clear()
    assert srv.faults.min_prompt_time() == 0


# --------------------------------------------------------------------------------------------------
# catalogue and misc endpoints

EMPTY_IMAGE_INFO = {
    "input": {
        "required": {
            "batch_size": ["INT", {"default": 1, "max": 4096, "min": 1}],
            "color": ["INT", {"default": 0, "display": "color", "max": 16777215, "min": 0, "step": 1}],
            "height": ["INT", {"default": 512, "max": 16384, "min": 1, "step": 1}],
            "width": ["INT", {"default": 512, "max": 16384, "min": 1, "step": 1}],
        }
    },
    "input_order": {"required": ["width", "height", "batch_size", "color"]},
    "output": ["IMAGE"], "output_is_list": [False], "output_name": ["IMAGE"], "name": "EmptyImage",
    "display_name": "EmptyImage", "description": "", "python_module": "nodes", "category": "image", "output_node": False,
}  # fmt: skip


def test_object_info_and_other_get_endpoints(srv: ComfyTestServer) -> None:
    info = get(srv, "/object_info").json()
    assert len(info) == 497 and info["TestSleep"]["output"] == ["*"]
    assert info["TestSleep"]["input"]["required"]["seconds"][1]["max"] == 9999.0
    assert get(srv, "/object_info/EmptyImage").json() == {"EmptyImage": EMPTY_IMAGE_INFO}
    assert get(srv, "/api/object_info/NoSuchNode").json() == {}
    stats = get(srv, "/system_stats").json()
    assert list(stats) == ["system", "devices"] and stats["system"]["comfyui_version"] == "0.3.64-hotfolder-testing"
    assert {"os", "ram_total", "ram_free", "python_version", "pytorch_version", "embedded_python", "argv"} <= set(
        stats["system"]
    )
    assert stats["devices"][0]["type"] == "cpu" and stats["devices"][0]["index"] is None
    assert get(srv, "/features").json() == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    assert get(srv, "/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    assert get(srv, "/queue").json() == {"queue_running": [], "queue_pending": []}
    assert get(srv, "/embeddings").json() == [] and "checkpoints" in get(srv, "/models").json()
    assert get(srv, "/models/checkpoints").json() == [] and get(srv, "/models/nope").status_code == 404


def test_requests_are_recorded_with_their_json_bodies(srv: ComfyTestServer) -> None:
    pid = queue_prompt(srv, basic_prompt(), prompt_id="recorded")
    get(srv, "/history/recorded", params={"x": "1"})
    posted, fetched = srv.requests[-2:]
    assert (posted.method, posted.path, posted.json["prompt_id"]) == ("POST", "/prompt", pid)
    assert fetched["path"] == "/history/recorded" and fetched.query == {"x": "1"} and fetched.json is None
    assert posted.time <= fetched.time
    srv.clear_requests()
    assert srv.requests == []


def test_cli_killed_with_sigterm_leaves_no_temp_folder_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, "-m", "hotfolder.testing", "--port", "0", "--output-dir", str(tmp_path / "out")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env={**os.environ, "TMPDIR": str(scratch)}) as process:
        try:
            assert process.stdout is not None and "listening on" in process.stdout.readline()
            assert [p.name[:18] for p in scratch.iterdir()] == ["hotfolder-testing-"]  # its input/ and temp/
            process.send_signal(signal.SIGTERM)
            assert process.wait(TIMEOUT) == 128 + signal.SIGTERM
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
    assert list(scratch.iterdir()) == []
