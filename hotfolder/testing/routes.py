"""The HTTP side of the test server: the aiohttp app and one handler per ComfyUI route.

The routes served come from the protocol profile (:mod:`~hotfolder.testing.profile`), each under ``/``
and ``/api``; a handler is the :class:`Routes` method the profile names. Handlers answer like ComfyUI
0.3.64 (bodies, status codes and quirks from the comfy-protocol captures) and consult the fault script
first where a fault can replace the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import sys
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web

from . import png
from .assets import full_scan_events
from .catalog import NodeCatalog
from .faults import Faults
from .folders import annotated_filepath
from .jobs import JobsRoutes
from .middleware import RecordedRequest, middlewares, server_error
from .profile import InvalidPromptId, Profile
from .prompts import PromptQueue
from .replacements import apply_replacements, as_answer
from .validation import validate_prompt

__all__ = ["Routes"]

logger = logging.getLogger(__name__)

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
#: 0.4x's answer to a prompt_id that is not a canonical lowercase UUID (server.py@002c3fb9a504255c, post_prompt).
INVALID_PROMPT_ID = {
    "type": "invalid_prompt_id",
    "message": "prompt_id must be a valid UUID",
    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
               "omit it to let the server generate one",
    "extra_info": {},
}
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
    "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
]  # fmt: skip


class Routes(JobsRoutes):
    """The request handlers of one run of the server, over its queue, sockets, catalogue and faults
    (the jobs API handlers come from :class:`~hotfolder.testing.jobs.JobsRoutes`)."""

    def __init__(
        self,
        *,
        profile: Profile,
        prompts: PromptQueue,
        faults: Faults,
        catalog: NodeCatalog,
        dirs: dict[str, Path],
        websocket: Callable[[web.Request], Any],
        interrupt: asyncio.Event,
        stopping: asyncio.Event,
        broadcast: Callable[[str, dict[str, Any]], None] = lambda event, data: None,
    ) -> None:
        self.profile = profile
        self.prompts = prompts
        self.faults = faults
        self.catalog = catalog
        self.dirs = dirs  # "input", "output", "temp"
        self.websocket = websocket  # GET /ws
        self.interrupt = interrupt  # set: the running prompt is to stop
        self.stopping = stopping  # set: the server is going down (ends a scripted hang)
        self.broadcast = broadcast  # a JSON message to every socket
        self.asset_scan_started = False

    def app(self, record: Callable[[RecordedRequest], None]) -> web.Application:
        """The aiohttp application: the profile's routes (under ``/`` and ``/api``) and ``/``."""
        app = web.Application(client_max_size=self.profile.max_upload_size, middlewares=middlewares(record))
        for method, path, name in self.profile.routes:
            handler = getattr(self, name)
            app.router.add_route(method, "/api" + path, handler)
            app.router.add_route(method, path, handler)
        app.router.add_get("/", self.get_root)
        return app

    # -- server information -----------------------------------------------------------------------

    async def get_root(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>hotfolder.testing</title><p>ComfyUI test server</p>", content_type="text/html"
        )

    async def get_list(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def get_models(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def get_model_folder(self, request: web.Request) -> web.Response:
        if request.match_info["folder"] not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response([])

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def get_users(self, request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": True})

    async def get_system_stats(self, request: web.Request) -> web.Response:
        total, free = _memory()
        profile = self.profile
        system = {
            "os": os.name,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": profile.comfyui_version,
            "required_frontend_version": profile.frontend_version,
            "installed_templates_version": profile.templates_version,
            "required_templates_version": profile.templates_version,
            "python_version": sys.version,
            "pytorch_version": profile.pytorch_version,
            "embedded_python": False,
            "argv": sys.argv,
        }
        device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                  "torch_vram_total": total, "torch_vram_free": free}
        return web.json_response({"system": system, "devices": [device]})

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(self.profile.features())

    async def get_object_info(self, request: web.Request) -> web.Response:
        if self.profile.asset_scan_events and not self.asset_scan_started:
            self.asset_scan_started = True
            self._asset_scan()
        scripted, answer = self.faults.take_object_info()
        if scripted:
            return web.json_response(answer)
        return web.Response(body=self.catalog.object_info_json(), content_type="application/json")

    def _asset_scan(self) -> None:
        """0.4x: ``GET /object_info`` starts the asset scan, whose events go to every socket as messages
        no prompt asked for (server.py@002c3fb9a504255c ``ensure_scan_started``; the sequence and payloads
        a real 0.33.0 sends, see AFTER-0.3.64-evidence.md section 11)."""
        total = sum(len(files) for kind in ("input", "output") for _, _, files in os.walk(self.dirs[kind]))
        for event, data in full_scan_events(total, 0.01):
            self.broadcast(event, data)

    async def get_object_info_node(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.one(request.match_info["node_class"]))

    async def get_node_replacements(self, request: web.Request) -> web.Response:
        """0.4x: the registered replacements, ``{old_class: [NodeReplace.as_dict(), ...]}``
        (app/node_replace_manager.py@07d1ee2ca9b1f33917d36c42192ffb91326170ff), or the scripted answer."""
        scripted, answer = self.faults.take_node_replacements()
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="application/json")
        return web.json_response(answer if scripted else as_answer(self.profile.node_replacements))

    # -- prompts and the queue --------------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.prompts.remaining())

    async def post_prompt(self, request: web.Request) -> web.Response:
        answer = self.faults.take_post_answer()
        if answer is not None:
            return _fault_response(*answer)
        json_data = json.loads(await request.text())
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.prompts.next_number("front" in json_data and bool(json_data["front"]))

        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        prompt = json_data["prompt"]
        try:
            prompt_id = self.profile.prompt_id(json_data)
        except InvalidPromptId:  # 0.4x only: server.py@002c3fb9a504255ccb3edb668c08b8f56e63d14a
            return web.json_response({"error": INVALID_PROMPT_ID, "node_errors": {}}, status=400)
        if self.profile.node_replacements and isinstance(prompt, dict):  # 0.4x: server.py@002c3fb9, post_prompt
            apply_replacements(prompt, self.profile.node_replacements, self.catalog)
        partial = json_data["partial_execution_targets"] if "partial_execution_targets" in json_data else None
        result = validate_prompt(prompt, partial, catalog=self.catalog, dirs=self.dirs)
        extra_data = json_data["extra_data"] if "extra_data" in json_data else {}
        if not isinstance(extra_data, dict):
            raise TypeError("extra_data must be an object")  # ComfyUI breaks on it too (500 or a dead prompt)
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not result.ok:
            return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)

        sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        if self.profile.create_time:  # 0.4x: the jobs API's create_time (server.py@002c3fb9, post_prompt)
            extra_data["create_time"] = int(time.time() * 1000)
        self.prompts.put((number, prompt_id, prompt, extra_data, result.outputs, sensitive))
        hang = self.faults.take_post_hang()
        if hang is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), hang)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def get_queue(self, request: web.Request) -> web.Response:
        with self.prompts.cond:
            body = json.dumps(self.prompts.listing())
        return web.Response(text=body, content_type="application/json")

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if "clear" in json_data and json_data["clear"]:
            self.prompts.wipe()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self.prompts.delete(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if not prompt_id or self.prompts.is_running(prompt_id):
            self.interrupt.set()
        else:
            logger.info("prompt %s is not currently running, skipping interrupt", prompt_id)
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        await request.json()
        return web.Response(status=200)

    # -- history ----------------------------------------------------------------------------------

    async def get_history(self, request: web.Request) -> web.Response:
        max_items_text = request.query.get("max_items")
        max_items = int(max_items_text) if max_items_text is not None else None
        offset_text = request.query.get("offset")
        offset = int(offset_text) if offset_text is not None else -1
        return web.json_response(self.prompts.get_history(max_items, offset))

    async def get_history_item(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self.prompts.history_entry(prompt_id)
        oversize = self.faults.take_oversize("history") if entry is not None else None
        if oversize is not None:
            body = json.dumps({prompt_id: entry, "padding": "x" * oversize[0]}).encode()
            return await _answer(request, body, "application/json", chunked=oversize[1])
        return web.json_response({} if entry is None else {prompt_id: entry})

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        clear = "clear" in json_data and json_data["clear"]
        self.prompts.edit_history(bool(clear), json_data["delete"] if "delete" in json_data else [])
        return web.Response(status=200)

    # -- files ------------------------------------------------------------------------------------

    async def get_view(self, request: web.Request) -> web.StreamResponse:
        status = self.faults.take_view_status()
        if status is not None:
            return web.Response(status=status)
        oversize = self.faults.take_oversize("view")
        if oversize is not None:
            return await _answer(request, bytes(oversize[0]), "image/png", chunked=oversize[1])
        body = self.faults.take_view_body()
        if body is not None:
            return web.Response(body=body, content_type="application/octet-stream")
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, kind = annotated_filepath(query["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if kind is None:
            kind = query.get("type", "output")
        base = self.dirs.get(kind)
        if base is None:
            return web.Response(status=400)
        folder = str(base)
        if "subfolder" in query:
            full = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), folder)) != folder:
                return web.Response(status=403)
            folder = full
        filename = os.path.basename(filename)
        file = os.path.join(folder, filename)
        if not os.path.isfile(file):
            return web.Response(status=404)
        return await _serve_file(file, filename, query)

    async def post_upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type")
        if upload_type is None:
            upload_type = "input"
        if upload_type not in self.dirs:
            raise ValueError(f"unknown upload type {upload_type!r}")  # ComfyUI fails the same way: a 500
        upload_dir = str(self.dirs[str(upload_type)])
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        folder = os.path.join(upload_dir, os.path.normpath(str(subfolder)))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        data = image.file.read()
        name = await asyncio.to_thread(_store_upload, folder, filename, filepath, data, overwrite in ("true", "1"))
        return web.json_response({"name": name, "subfolder": subfolder, "type": upload_type})


def _fault_response(status: int, body: tuple[str | bytes, str] | None = None) -> web.Response:
    """A scripted ``POST /prompt`` answer (faults.post_status)."""
    if body is not None:
        data = body[0].encode("utf-8", "surrogatepass") if isinstance(body[0], str) else body[0]
        return web.Response(status=status, body=data, content_type=body[1])
    if status == 500:
        return server_error()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return web.Response(status=status, text=f"{status}: {reason}", content_type="text/plain")


async def _answer(request: web.Request, body: bytes, content_type: str, *, chunked: bool) -> web.StreamResponse:
    """``body`` as one answer, or (``chunked``) streamed without a Content-Length (faults.oversize)."""
    if not chunked:
        return web.Response(body=body, content_type=content_type)
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # the client may stop reading at its limit
        for start in range(0, len(body), 65536):
            await response.write(body[start:start + 65536])
        await response.write_eof()
    return response


async def _serve_file(file: str, filename: str, query: Any) -> web.StreamResponse:
    """The checked file of ``GET /view``: as is, one channel of a PNG (``channel``), or its "preview"."""
    disposition = {"Content-Disposition": f'filename="{filename}"'}
    channel = query.get("channel")
    if channel in ("rgb", "a") and "preview" not in query:
        body = await asyncio.to_thread(_channel_png, file, channel)
        if body is not None:
            return web.Response(body=body, content_type="image/png", headers=disposition)
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if "preview" in query:
        # No JPEG/WebP encoder here: the preview is the original file, without Etag.
        data = await asyncio.to_thread(Path(file).read_bytes)
        return web.Response(body=data, content_type=content_type, headers=disposition)
    return web.FileResponse(file, headers={**disposition, "Content-Type": content_type})


def _memory() -> tuple[int, int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.strip()}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        return 16 * 1024**3, 8 * 1024**3


def _store_upload(folder: str, filename: str, filepath: str, data: bytes, overwrite: bool) -> str:
    """Write an upload like ComfyUI: same bytes keep the name, different bytes get ``name (1).ext``."""
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    if not overwrite:
        digest = hashlib.sha256(data).hexdigest()
        index = 1
        while os.path.exists(filepath):
            with open(filepath, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() == digest:
                    return filename
            filename = f"{stem} ({index}){ext}"
            filepath = os.path.join(folder, filename)
            index += 1
    with open(filepath, "wb") as fh:
        fh.write(data)
    return filename


def _channel_png(file: str, channel: str) -> bytes | None:
    """``/view?channel=rgb|a`` for PNGs: the RGB part, or the alpha channel on black."""
    try:
        decoded = png.decode_png(Path(file).read_bytes())
    except (png.PNGError, OSError):
        return None
    count = decoded.width * decoded.height
    if channel == "rgb":
        if decoded.channels == 3:
            rgb = decoded.pixels
        else:
            buf = bytearray(count * 3)
            buf[0::3], buf[1::3], buf[2::3] = decoded.pixels[0::4], decoded.pixels[1::4], decoded.pixels[2::4]
            rgb = bytes(buf)
        return png.encode_png(decoded.width, decoded.height, rgb)
    alpha = decoded.pixels[3::4] if decoded.channels == 4 else b"\xff" * count
    rgba = bytearray(count * 4)
    rgba[3::4] = alpha
    return png.encode_png(decoded.width, decoded.height, bytes(rgba), channels=4)
