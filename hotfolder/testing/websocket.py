"""The WebSocket side of the test server: the sockets by client id, and one publisher for every frame.

Like ComfyUI's ``PromptServer``, every message goes through one outgoing queue and one task sends them,
so frames leave in the order they were produced. A message for a ``client_id`` goes to that client's
socket only (none, if it has none); ``None`` broadcasts. The fault script can silence the sockets or
abort them (now, or every few seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .faults import Faults

__all__ = ["Broadcaster"]

logger = logging.getLogger(__name__)


class Broadcaster:
    """Open sockets, the outgoing queue and the publisher (:meth:`publish`, run as a task)."""

    def __init__(
        self,
        faults: Faults,
        features: dict[str, Any],
        status: Callable[[], dict[str, Any]],
        executing_node: Callable[[str], str | None],
    ) -> None:
        self._faults = faults
        self._features = features  # the server's feature_flags reply
        self._status = status  # the queue's exec_info, for the first frame
        self._executing_node = executing_node  # sid -> the node its prompt is running, for a reconnect
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_meta: dict[str, dict[str, Any]] = {}
        self.connections: dict[web.WebSocketResponse, web.Request] = {}
        self.outbox: asyncio.Queue[tuple[str | bytes, Any]] = asyncio.Queue()
        self._dropper: asyncio.Task[None] | None = None

    # -- sending ----------------------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any], sid: Any) -> None:
        """Queue a JSON message for ``sid`` (``None``: every socket), and the frames scripted to follow it."""
        self.outbox.put_nowait((json.dumps({"type": event, "data": data}), sid))
        if event == "execution_start":
            for frame in self._faults.take_ws_frames(str(data.get("prompt_id"))):
                self.outbox.put_nowait((frame, sid))

    def emit_binary(self, event_type: int, payload: bytes, sid: Any) -> None:
        """Queue a binary frame: ``event_type`` as a big-endian u32, then ``payload``."""
        self.outbox.put_nowait((struct.pack(">I", event_type) + payload, sid))

    def supports_preview_metadata(self, sid: Any) -> bool:
        try:
            meta = self.socket_meta.get(sid)
        except TypeError:
            return False
        return meta is not None and meta["feature_flags"].get("supports_preview_metadata", False) is True

    async def _send_frame(self, ws: web.WebSocketResponse, payload: str | bytes) -> None:
        if self._faults.silenced or ws.closed:
            return
        try:
            if isinstance(payload, str):
                await ws.send_str(payload)
            else:
                await ws.send_bytes(payload)
        except (ConnectionError, RuntimeError) as err:
            logger.debug("websocket send failed: %s", err)

    async def publish(self) -> None:
        """Send the queued frames forever, in order."""
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

    # -- dropping (faults) ------------------------------------------------------------------------

    def abort_all(self) -> None:
        """Abort every socket: no close frame, the client sees the connection lost."""
        for request in list(self.connections.values()):
            transport = request.transport
            if transport is not None:
                transport.abort()

    def drop_every(self, interval: float) -> None:
        """(Re)start aborting every socket every ``interval`` seconds (0: stop). Called in the loop."""
        self.stop_dropping()
        if interval > 0:
            self._dropper = asyncio.get_running_loop().create_task(self._drop_every(interval))

    def stop_dropping(self) -> asyncio.Task[None] | None:
        """Cancel the periodic dropper; return its task (to await), if there was one."""
        dropper, self._dropper = self._dropper, None
        if dropper is not None:
            dropper.cancel()
        return dropper

    async def _drop_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.abort_all()

    # -- the /ws route ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws``: register the socket under its ``clientId`` (or a new one) until it closes."""
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
            await self._greet(ws, sid)
            await self._read(ws, sid)
        finally:
            # Faithful to ComfyUI: this also unregisters a newer socket that took over the same clientId.
            self.sockets.pop(sid, None)
            self.socket_meta.pop(sid, None)
            self.connections.pop(ws, None)
        return ws

    async def _greet(self, ws: web.WebSocketResponse, sid: str) -> None:
        """The first ``status`` (with the ``sid``), and the running node for a client that reconnects."""
        await self._send_frame(ws, json.dumps({"type": "status", "data": {"status": self._status(), "sid": sid}}))
        node = self._executing_node(sid)
        if node is not None:
            await self._send_frame(ws, json.dumps({"type": "executing", "data": {"node": node}}))

    async def _read(self, ws: web.WebSocketResponse, sid: str) -> None:
        """Read the client's messages: only a first ``feature_flags`` means something (and is answered)."""
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
                    await self._send_frame(ws, json.dumps({"type": "feature_flags", "data": self._features}))
                first_message = False
            except (ValueError, AttributeError, TypeError) as err:
                logger.debug("ignoring websocket message from %s: %s", sid, err)
