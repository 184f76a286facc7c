"""ComfyUI's WebSocket, read by one background thread per server (websocket-client lives only here).

The thread connects to ``/ws?clientId=<id>``, hands every JSON text frame to ``on_message`` and reports
connection changes to ``on_state``. Binary frames (previews, progress text) are never results: they are
dropped here. ComfyUI sends no heartbeat, so the thread pings; a socket that answers neither frames nor
pings within ``silence_timeout`` is treated as dead. Before reconnecting it always closes the old socket:
two live sockets with one clientId make ComfyUI orphan the newer one (PROTOCOL §8).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websocket

from hotfolder.comfy.http import ca_bundle

logger = logging.getLogger(__name__)


def ws_url(http_url: str, client_id: str) -> str:
    parts = urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={client_id}", ""))


class EventStream:
    """Keeps one WebSocket to a server open and reconnects it with backoff until :meth:`stop`."""

    def __init__(
        self,
        http_url: str,
        client_id: str,
        *,
        on_message: Callable[[dict[str, Any]], None],
        on_state: Callable[[bool], None],
        display_url: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool = True,
        ping_interval: float = 10.0,
        silence_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = ws_url(http_url, client_id)
        self.display_url = display_url or http_url
        self.on_message = on_message
        self.on_state = on_state
        self.headers = [f"{k}: {v}" for k, v in (headers or {}).items()]
        bundle = ca_bundle()
        self.sslopt: dict[str, Any] = (({"ca_certs": bundle} if bundle else {}) if verify
                                       else {"cert_reqs": ssl.CERT_NONE, "check_hostname": False})
        self.ping_interval = ping_interval
        self.silence_timeout = silence_timeout
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"ws {self.display_url}", daemon=True)
        self.connected = False
        self.reconnects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._close()
        self._thread.join(timeout)

    def kick(self) -> None:
        """Drop the current socket so the thread reconnects (used when it seems silent)."""
        self._close()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _close(self) -> None:
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # noqa: BLE001 - a dead socket may fail to close in many ways; it is gone either way
                pass

    def _set_state(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            try:
                self.on_state(up)
            except Exception:  # noqa: BLE001 - a listener bug must not kill the reader thread
                logger.exception("WebSocket state listener failed")

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(
                    self.url, timeout=self.connect_timeout, header=self.headers, sslopt=self.sslopt,
                    enable_multithread=True,
                    # frames are decoded as UTF-8 JSON below anyway; the library's pure-Python check per
                    # byte cost a tenth of the daemon's CPU
                    skip_utf8_validation=True,
                )
            except (OSError, websocket.WebSocketException) as err:
                logger.debug("WebSocket to %s failed: %s", self.display_url, err)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            with self._lock:
                self._ws = ws
            if self._stop.is_set():
                self._close()
                break
            delay = 0.2
            if self.reconnects or self.connected:
                logger.info("WebSocket to %s reconnected", self.display_url)
            self._set_state(True)
            try:
                self._read(ws)
            finally:
                self._close()
                self._set_state(False)
            if not self._stop.is_set():
                self.reconnects += 1
                logger.warning("WebSocket to %s lost; reconnecting", self.display_url)

    def _read(self, ws: websocket.WebSocket) -> None:
        ws.settimeout(min(1.0, self.ping_interval))
        last_seen = time.monotonic()
        last_ping = last_seen
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_ping >= self.ping_interval:
                try:
                    ws.ping()
                except (OSError, websocket.WebSocketException):
                    return
                last_ping = now
            if now - last_seen > self.silence_timeout:
                logger.warning("WebSocket to %s silent for %.0f s; reconnecting", self.display_url, now - last_seen)
                return
            try:
                opcode, frame = ws.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException, AttributeError):
                return
            last_seen = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # binary previews, pongs: never results
            try:
                message = json.loads(frame.data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                logger.debug("Ignoring a WebSocket frame that is not JSON")
                continue
            if isinstance(message, dict):
                try:
                    self.on_message(message)
                except Exception:  # noqa: BLE001 - a routing bug must not kill the reader thread
                    logger.exception("Handling a WebSocket message failed")
