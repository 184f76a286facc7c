"""The test ComfyUI server: an aiohttp app in a background thread, plus its Python control API.

:class:`ComfyTestServer` owns the folders, the fault script (:class:`~hotfolder.testing.faults.Faults`),
the request log and the list of executed prompt ids; these survive ``restart()``. Everything a real
ComfyUI process loses when it is killed (queue, history, cache, sockets, the prompt counter) lives in a
``_Runtime`` that is created by ``start()`` and thrown away by ``stop()``.

Inside the event loop the server works like ComfyUI's ``PromptServer``: HTTP handlers put prompts on
a heap-ordered queue, one worker task executes them one at a time, and every WebSocket message goes
through one outgoing queue, so messages leave in the order they were produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import ipaddress
import json
import logging
import mimetypes
import os
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from . import png
from .execution import ExecutionOutcome, OutputCache, PromptExecutor
from .faults import Faults
from .nodes import NodeCatalog, annotated_filepath
from .validation import validate_prompt

__all__ = ["COMFYUI_VERSION", "ComfyTestServer", "RecordedRequest"]

logger = logging.getLogger(__name__)

#: Reported as ``system.comfyui_version`` by ``GET /system_stats``.
COMFYUI_VERSION = "0.3.64-hotfolder-testing"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
    "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
]  # fmt: skip

_QueueItem = tuple[Any, str, Any, dict[str, Any], list[str], dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One HTTP request the server received (WebSocket upgrades included).

    ``json`` is the parsed body when it was JSON (whatever its content type), else ``None``; ``query``
    keeps the last value of repeated parameters. Fields can also be read like a dict: ``r["path"]``.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    time: float
    headers: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default


def _server_error() -> web.Response:
    """aiohttp's own answer to an unhandled exception, which is what ComfyUI clients see."""
    response = web.Response(status=500, text=SERVER_ERROR_TEXT, content_type="text/plain")
    response.force_close()
    return response


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


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    loopback = False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        for info in infos:
            if not ipaddress.ip_address(info[4][0]).is_loopback:
                return False
            loopback = True
    return loopback


def _origin_mismatch(request: web.Request) -> bool:
    """ComfyUI's origin-only middleware: a loopback Host with a different Origin host is refused."""
    host_header = request.headers.get("Host")
    origin_header = request.headers.get("Origin")
    if not host_header or not origin_header:
        return False
    try:
        host_domain: str | None = host_header.lower()
        origin = urlsplit(origin_header)
        origin_domain: str | None = origin.netloc.lower()
        host = urlsplit("//" + host_header.lower())
        loopback = _is_loopback(host.hostname)
        if origin.port is None:
            host_domain = host.hostname
        if host.port is None:
            origin_domain = origin.hostname
    except ValueError:
        return True
    return bool(loopback and host_domain and origin_domain and host_domain != origin_domain)


def _memory() -> tuple[int, int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.strip()}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        return 16 * 1024**3, 8 * 1024**3


class _Runtime:
    """Everything one run of the server holds in memory (lost on stop, like a killed ComfyUI)."""

    def __init__(self, server: ComfyTestServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.faults = server.faults
        self.catalog = server._catalog
        self.lock = server._lock
        self.cond = server._cond
        self.output_dir = server.output_dir
        self.input_dir = server.input_dir
        self.temp_dir = server.temp_dir
        self.dirs = {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}
        # queue and history (guarded by self.lock: the control API reads them from other threads)
        self.queue: list[_QueueItem] = []
        self.running: dict[int, _QueueItem] = {}
        self.task_counter = 0
        self.history: dict[str, dict[str, Any]] = {}
        self.pending_history_writes = 0
        self.number = 0
        # execution
        self.cache = OutputCache()
        self.executor = PromptExecutor(self, self.catalog, self.cache)
        self.client_id: Any = None
        self.last_node_id: str | None = None
        self.interrupt_event = asyncio.Event()
        self.queue_event = asyncio.Event()
        self.stopping = asyncio.Event()
        # websockets
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_meta: dict[str, dict[str, Any]] = {}
        self.connections: dict[web.WebSocketResponse, web.Request] = {}
        self.outbox: asyncio.Queue[tuple[str | bytes, Any]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.dropper: asyncio.Task[None] | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        app = self._build_app()
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2)
        await self.runner.setup()
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            await self.runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock, ssl_context=self.server.ssl_context).start()
        self._spawn(self._work())
        self._spawn(self._publish())
        self.configure_dropper()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Die like a SIGTERMed ComfyUI: connections are aborted (no close frames), all work is lost."""
        self.stopping.set()
        self.abort_websockets()
        assert self.runner is not None
        server = self.runner.server
        for handler in server.connections if server is not None else []:
            transport = handler.transport
            if transport is not None:
                transport.abort()
        tasks = list(self.tasks) + ([self.dropper] if self.dropper else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.cleanup()
        with self.lock:
            self.pending_history_writes = 0
            self.cond.notify_all()

    def configure_dropper(self) -> None:
        """(Re)start the periodic WebSocket dropper from the fault settings."""
        if self.dropper is not None:
            self.dropper.cancel()
            self.dropper = None
        interval = self.faults.drop_interval
        if interval > 0 and not self.stopping.is_set():
            self.dropper = self.loop.create_task(self._drop_every(interval))

    async def _drop_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.abort_websockets()

    def abort_websockets(self) -> None:
        for request in list(self.connections.values()):
            transport = request.transport
            if transport is not None:
                transport.abort()

    # -- ExecutionHost ----------------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any], sid: Any) -> None:
        self.outbox.put_nowait((json.dumps({"type": event, "data": data}), sid))
        if event == "execution_start":
            for frame in self.faults.take_ws_frames(str(data.get("prompt_id"))):
                self.outbox.put_nowait((frame, sid))

    def emit_binary(self, event_type: int, payload: bytes, sid: Any) -> None:
        self.outbox.put_nowait((struct.pack(">I", event_type) + payload, sid))

    def supports_preview_metadata(self, sid: Any) -> bool:
        try:
            meta = self.socket_meta.get(sid)
        except TypeError:
            return False
        return meta is not None and meta["feature_flags"].get("supports_preview_metadata", False) is True

    def interrupt_requested(self) -> bool:
        return self.interrupt_event.is_set()

    async def wait_for_interrupt(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.interrupt_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def node_delay(self, class_type: str) -> float:
        return self.faults.delay_for(class_type)

    def take_node_failure(self, class_type: str) -> tuple[str, str] | None:
        return self.faults.take_node_failure(class_type)

    # -- messages ---------------------------------------------------------------------------------

    async def _send_frame(self, ws: web.WebSocketResponse, payload: str | bytes) -> None:
        if self.faults.silenced or ws.closed:
            return
        try:
            if isinstance(payload, str):
                await ws.send_str(payload)
            else:
                await ws.send_bytes(payload)
        except (ConnectionError, RuntimeError) as err:
            logger.debug("websocket send failed: %s", err)

    async def _publish(self) -> None:
        while True:
            payload, sid = await self.outbox.get()
            if sid is None:
                targets = list(self.sockets.values())
            else:
                try:
                    targets = [self.sockets[sid]] if sid in self.sockets else []
                except TypeError:  # a client_id that is not a string can match no socket
                    targets = []
            for ws in targets:
                try:
                    await self._send_frame(ws, payload)
                except Exception:  # one broken socket must not stop the publisher
                    logger.exception("hotfolder.testing: sending a websocket frame failed")

    def queue_info(self) -> dict[str, Any]:
        with self.lock:
            return {"exec_info": {"queue_remaining": len(self.queue) + len(self.running)}}

    def queue_updated(self) -> None:
        self.emit("status", {"status": self.queue_info()}, None)

    # -- queue ------------------------------------------------------------------------------------

    def put(self, item: _QueueItem) -> None:
        with self.lock:
            try:
                heapq.heappush(self.queue, item)
            finally:
                # Q13: equal (number, prompt_id) makes heapq compare dicts and raise, after the item
                # was appended. ComfyUI answers 500 but runs the prompt anyway; so do we.
                self.queue_event.set()
                self.cond.notify_all()
        self.queue_updated()

    def _pop_next(self) -> _QueueItem:
        try:
            return heapq.heappop(self.queue)
        except TypeError:
            best = min(range(len(self.queue)), key=lambda i: (self.queue[i][0], self.queue[i][1]))
            return self.queue.pop(best)

    async def _next_item(self) -> tuple[_QueueItem, int]:
        while True:
            with self.lock:
                if self.queue:
                    item = self._pop_next()
                    item_id = self.task_counter
                    self.task_counter += 1
                    self.running[item_id] = copy.deepcopy(item)
                    self.cond.notify_all()
                    break
            self.queue_event.clear()
            await self.queue_event.wait()
        self.queue_updated()
        return item, item_id

    def wipe_queue(self) -> None:
        with self.lock:
            self.queue = []
            self.cond.notify_all()
        self.queue_updated()

    def delete_queue_item(self, prompt_id: Any) -> bool:
        with self.lock:
            for index, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    if len(self.queue) == 1:
                        self.wipe_queue()
                    else:
                        self.queue.pop(index)
                        with contextlib.suppress(TypeError):  # equal (number, id) items, see put()
                            heapq.heapify(self.queue)
                    self.cond.notify_all()
                    break
            else:
                return False
        self.queue_updated()
        return True

    async def _work(self) -> None:
        """The prompt worker: one prompt at a time, in queue order (ComfyUI's ``prompt_worker``)."""
        while True:
            item, item_id = await self._next_item()
            prompt_id = item[1]
            extra_data = {**item[3], **item[5]}
            self.client_id = extra_data.get("client_id")
            self.interrupt_event.clear()
            with self.lock:
                self.server._executed.append(prompt_id)
            try:
                outcome = await self.executor.execute(item[2], prompt_id, extra_data, item[4])
            except Exception:  # a bug in the test server must not kill its worker
                logger.exception("hotfolder.testing: executing prompt %s failed", prompt_id)
                self.last_node_id = None
                outcome = ExecutionOutcome(success=False)
            self._task_done(item_id, prompt_id, outcome)
            if self.client_id is not None:
                self.emit("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)

    def _task_done(self, item_id: int, prompt_id: str, outcome: ExecutionOutcome) -> None:
        delay = self.faults.history_delay_seconds
        with self.lock:
            item = self.running.pop(item_id)
            entry: dict[str, Any] = {
                "prompt": list(item[:5]),
                "outputs": {},
                "status": {
                    "status_str": "success" if outcome.success else "error",
                    "completed": outcome.success,
                    "messages": outcome.messages,
                },
            }
            entry.update({"outputs": outcome.outputs, "meta": outcome.meta})
            scripted, replacement = self.faults.take_history_entry()
            if scripted:
                entry = copy.deepcopy(replacement)
            if delay > 0:
                self.pending_history_writes += 1
            else:
                self._store_history(prompt_id, entry)
            self.cond.notify_all()
        self.queue_updated()
        if delay > 0:
            self._spawn(self._store_history_later(prompt_id, entry, delay))

    def _store_history(self, prompt_id: str, entry: dict[str, Any]) -> None:
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[prompt_id] = entry

    async def _store_history_later(self, prompt_id: str, entry: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        with self.lock:
            self._store_history(prompt_id, entry)
            self.pending_history_writes -= 1
            self.cond.notify_all()

    def get_history(self, max_items: int | None, offset: int) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for index, key in enumerate(self.history):
                if index >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return copy.deepcopy(out)

    # -- HTTP -------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_UPLOAD_SIZE,
            middlewares=[self._record_middleware, self._origin_middleware, self._error_middleware],
        )
        routes: list[tuple[str, str, Any]] = [
            ("GET", "/ws", self.websocket),
            ("GET", "/embeddings", self.get_list),
            ("GET", "/extensions", self.get_list),
            ("GET", "/models", self.get_models),
            ("GET", "/models/{folder}", self.get_model_folder),
            ("GET", "/system_stats", self.get_system_stats),
            ("GET", "/features", self.get_features),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/history", self.get_history_route),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_node),
            ("GET", "/view", self.get_view),
            ("POST", "/upload/image", self.post_upload_image),
            ("GET", "/settings", self.get_settings),
            ("GET", "/users", self.get_users),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, "/api" + path, handler)
            app.router.add_route(method, path, handler)
        app.router.add_get("/", self.get_root)
        return app

    @web.middleware
    async def _record_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        self.server._record(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                json=body,
                time=time.time(),
                headers=dict(request.headers),
            )
        )
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _origin_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if _origin_mismatch(request):
            logger.warning("request with non matching host and origin, returning 403")
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _error_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException:
            raise
        except Exception:  # the HTTP boundary: ComfyUI clients get aiohttp's plain 500
            logger.debug("hotfolder.testing: %s %s failed", request.method, request.path, exc_info=True)
            return _server_error()
        return response

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
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.14.1+cpu",
                    "embedded_python": False,
                    "argv": sys.argv,
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response({"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def get_queue(self, request: web.Request) -> web.Response:
        with self.lock:
            body = json.dumps(
                {
                    "queue_running": [list(item[:5]) for item in self.running.values()],
                    "queue_pending": [list(item[:5]) for item in self.queue],
                }
            )
        return web.Response(text=body, content_type="application/json")

    def _fault_response(self, status: int, body: tuple[str | bytes, str] | None = None) -> web.Response:
        if body is not None:
            data = body[0].encode("utf-8", "surrogatepass") if isinstance(body[0], str) else body[0]
            return web.Response(status=status, body=data, content_type=body[1])
        if status == 500:
            return _server_error()
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        return web.Response(status=status, text=f"{status}: {reason}", content_type="text/plain")

    async def post_prompt(self, request: web.Request) -> web.Response:
        answer = self.faults.take_post_answer()
        if answer is not None:
            return self._fault_response(*answer)
        json_data = json.loads(await request.text())
        if "number" in json_data:
            number: Any = float(json_data["number"])
        else:
            number = self.number
            if "front" in json_data and json_data["front"]:
                number = -number
            self.number += 1

        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
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
        self.put((number, prompt_id, prompt, extra_data, result.outputs, sensitive))
        hang = self.faults.take_post_hang()
        if hang is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), hang)
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if "clear" in json_data and json_data["clear"]:
            self.wipe_queue()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self.delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            with self.lock:
                running = any(item[1] == prompt_id for item in self.running.values())
            if running:
                self.interrupt_event.set()
            else:
                logger.info("prompt %s is not currently running, skipping interrupt", prompt_id)
        else:
            self.interrupt_event.set()
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        await request.json()
        return web.Response(status=200)

    async def get_history_route(self, request: web.Request) -> web.Response:
        max_items_text = request.query.get("max_items")
        max_items = int(max_items_text) if max_items_text is not None else None
        offset_text = request.query.get("offset")
        offset = int(offset_text) if offset_text is not None else -1
        return web.json_response(self.get_history(max_items, offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        with self.lock:
            entry = copy.deepcopy(self.history.get(prompt_id))
        oversize = self.faults.take_oversize("history") if entry is not None else None
        if oversize is not None:
            body = json.dumps({prompt_id: entry, "padding": "x" * oversize[0]}).encode()
            return await _answer(request, body, "application/json", chunked=oversize[1])
        return web.json_response({} if entry is None else {prompt_id: entry})

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        with self.lock:
            if "clear" in json_data and json_data["clear"]:
                self.history = {}
            if "delete" in json_data:
                for prompt_id in json_data["delete"]:
                    self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def get_object_info(self, request: web.Request) -> web.Response:
        scripted, answer = self.faults.take_object_info()
        if scripted:
            return web.json_response(answer)
        return web.Response(body=self.catalog.object_info_json(), content_type="application/json")

    async def get_object_info_node(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalog.one(request.match_info["node_class"]))

    async def get_view(self, request: web.Request) -> web.StreamResponse:
        status = self.faults.take_view_status()
        if status is not None:
            return web.Response(status=status)
        oversize = self.faults.take_oversize("view")
        if oversize is not None:
            return await _answer(request, bytes(oversize[0]), "image/png", chunked=oversize[1])
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

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # autoping answers client pings; no heartbeat, like ComfyUI
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)  # the newest socket for a clientId takes over
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.socket_meta[sid] = {"feature_flags": {}}
        self.connections[ws] = request
        try:
            status = json.dumps({"type": "status", "data": {"status": self.queue_info(), "sid": sid}})
            await self._send_frame(ws, status)
            if self.client_id == sid and self.last_node_id is not None:
                await self._send_frame(ws, json.dumps({"type": "executing", "data": {"node": self.last_node_id}}))
            first_message = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                    if first_message and data.get("type") == "feature_flags":
                        flags = data.get("data", {})
                        if sid in self.socket_meta:
                            self.socket_meta[sid]["feature_flags"] = flags
                        reply = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
                        await self._send_frame(ws, json.dumps({"type": "feature_flags", "data": reply}))
                    first_message = False
                except (ValueError, AttributeError, TypeError) as err:
                    logger.debug("ignoring websocket message from %s: %s", sid, err)
        finally:
            # Faithful to ComfyUI: this also unregisters a newer socket that took over the same clientId.
            self.sockets.pop(sid, None)
            self.socket_meta.pop(sid, None)
            self.connections.pop(ws, None)
        return ws


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


def _wipe_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


class ComfyTestServer:
    """A ComfyUI look-alike on a real socket. See the package docstring for a guide.

    ``output_dir=None`` gives the server a private temporary folder (``output/``, ``input/``,
    ``temp/``), removed when the server object is garbage collected. ``input_dir`` and ``temp_dir``
    default to siblings in that private folder as well. The temp folder is wiped at every start.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        input_dir: str | os.PathLike[str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self._requested_port = port
        self.port = port
        base: Path | None = None
        self._finalizer: weakref.finalize | None = None
        if output_dir is None or input_dir is None or temp_dir is None:
            base = Path(tempfile.mkdtemp(prefix="hotfolder-testing-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(base), ignore_errors=True)
        self.output_dir = self._prepare_dir(output_dir, base, "output")
        self.input_dir = self._prepare_dir(input_dir, base, "input")
        self.temp_dir = self._prepare_dir(temp_dir, base, "temp")
        self.faults = Faults(self)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._executed: list[str] = []
        self._catalog = NodeCatalog(input_dir=self.input_dir)
        self._runtime: _Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _prepare_dir(path: str | os.PathLike[str] | None, base: Path | None, name: str) -> Path:
        if path is None:
            assert base is not None
            resolved = base / name
        else:
            resolved = Path(path)
        resolved.mkdir(parents=True, exist_ok=True)
        return resolved.resolve()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running (or last) server (``https://`` with an ``ssl_context``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def start(self) -> ComfyTestServer:
        """Start listening in a background daemon thread; returns once connections are accepted."""
        self._start(self._requested_port)
        return self

    def _start(self, port: int) -> None:
        if self.running:
            raise RuntimeError("the test server is already running")
        _wipe_directory(self.temp_dir)
        ready = threading.Event()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=self._serve, args=(port, ready, result), name="hotfolder-testing", daemon=True)
        thread.start()
        ready.wait()
        if "error" in result:
            thread.join()
            raise result["error"]
        self._thread = thread
        logger.debug("hotfolder.testing listening on %s", self.url)

    def _serve(self, port: int, ready: threading.Event, result: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runtime = _Runtime(self, loop)
        try:
            loop.run_until_complete(runtime.start(self.host, port))
        except BaseException as err:  # noqa: BLE001 - re-raised in the thread that called start()
            result["error"] = err
            loop.close()
            ready.set()
            return
        with self._lock:
            self._runtime = runtime
            self._loop = loop
            self.port = runtime.port
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        """Stop abruptly, like SIGTERM: sockets are dropped without close frames, the port is closed.

        The running prompt and the queue are lost. Does nothing if the server is not running.
        """
        thread, loop, runtime = self._thread, self._loop, self._runtime
        if thread is None or loop is None or runtime is None:
            return
        if thread.is_alive():
            asyncio.run_coroutine_threadsafe(runtime.shutdown(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        with self._lock:
            self._thread = None
            self._loop = None
            self._cond.notify_all()

    def restart(self) -> None:
        """``stop()`` then ``start()`` on the same port: queue, history, cache and temp files are forgotten."""
        port = self.port
        self.stop()
        self._start(port)

    def discard_private_folder(self) -> None:
        """Remove the temp folder the server made for the folders it was not given (at once; otherwise
        when the object is collected or the interpreter exits). For a process about to die abruptly."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> ComfyTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ComfyTestServer {self.url} {state}>"

    # -- inspection -------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received so far (a copy), oldest first; kept across restarts."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    @property
    def executed_prompt_ids(self) -> list[str]:
        """Prompt ids in the order they started executing (a copy; kept across restarts)."""
        with self._lock:
            return list(self._executed)

    def history(self) -> dict[str, Any]:
        """A copy of the history, as ``GET /history`` returns it."""
        with self._lock:
            runtime = self._runtime
            return copy.deepcopy(runtime.history) if runtime is not None else {}

    def queue(self) -> dict[str, list[list[Any]]]:
        """A copy of the queue, as ``GET /queue`` returns it (pending items in heap order)."""
        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return {"queue_running": [], "queue_pending": []}
            return copy.deepcopy(
                {
                    "queue_running": [list(item[:5]) for item in runtime.running.values()],
                    "queue_pending": [list(item[:5]) for item in runtime.queue],
                }
            )

    def _is_idle(self) -> bool:
        runtime = self._runtime
        if runtime is None or not self.running:
            return True
        return not runtime.queue and not runtime.running and runtime.pending_history_writes == 0

    def set_models(self, folder: str, names: list[str]) -> None:
        """Pretend the server has exactly ``names`` in a model folder (``checkpoints``, ``loras``,
        ``vae``): ``/object_info`` and validation change accordingly. The files need not exist: the
        stand-in loaders run any name listed."""
        with self._lock:
            self._catalog.set_models(folder, names)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or running (and delayed history entries are written).

        Returns ``True``; raises ``TimeoutError`` after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(self._is_idle, timeout):
                raise TimeoutError(f"the test server was still busy after {timeout} s: {self.queue()}")
        return True

    # -- hooks for Faults -------------------------------------------------------------------------

    def _call_in_loop(self, name: str) -> None:
        loop, runtime = self._loop, self._runtime
        if loop is None or runtime is None or not self.running:
            return

        async def call() -> None:
            getattr(runtime, name)()

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def _drop_websockets(self) -> None:
        self._call_in_loop("abort_websockets")

    def _faults_changed(self) -> None:
        self._call_in_loop("configure_dropper")
