"""ComfyUI's WebSocket, read by one background thread per server (websocket-client lives only here).

The thread connects to ``/ws?clientId=<id>``, hands every JSON text message to ``on_message``, reports
connection changes to ``on_state`` and every failed connection attempt to ``on_failure``. Binary
messages (previews, progress text) are never results: they are dropped here. ComfyUI sends no
heartbeat, so the thread pings; a socket that answers neither frames nor pings within
``silence_timeout`` is treated as dead. Before reconnecting it always closes the old socket:
two live sockets with one clientId make ComfyUI orphan the newer one (PROTOCOL §8).

websocket-client does the protocol: the handshake, TLS and proxies, frames and their fragments, pings,
pongs and the close. hotfolder adds a budget (:class:`BoundedWebSocket`): a message over
``max_ws_message_size`` is refused from its frame header, before its payload is read (beyond the
``READ_AHEAD`` bytes that came with the header).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websocket

from hotfolder.budgets import DEFAULTS
from hotfolder.comfy.http import loads_answer, trust
from hotfolder.redact import redact_text, redact_url

logger = logging.getLogger(__name__)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE = (websocket.ABNF.OPCODE_CONT, websocket.ABNF.OPCODE_TEXT,
                                         websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_CLOSE)
MAX_MESSAGE = DEFAULTS.max_ws_message_size  # a message larger than this is not ComfyUI's: the connection is dropped
READ_AHEAD = 4096  # bytes asked of the socket at least per read: a few of ComfyUI's messages
#: Seconds between connection attempts: the first wait, then doubling up to BACKOFF_RECENT while the
#: server was connected (or the stream started) within RECENT seconds, else up to BACKOFF_MAX.
#: A server that was just there is most likely restarting, and its GPU idles until we reconnect: a
#: refused attempt costs it one TCP handshake (no ComfyUI code runs), so it is tried twice a second,
#: as routing tries a server jobs wait for. One gone for minutes is tried every few seconds.
BACKOFF_FIRST, BACKOFF_RECENT, BACKOFF_MAX, RECENT = 0.2, 0.5, 5.0, 300.0


class MessageTooLarge(ValueError):
    """A message over ``max_ws_message_size``: the connection is dropped and made again."""


class BoundedWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket that refuses a data message (text or binary, its fragments together)
    over ``max_message_size`` bytes, told by the frame's header before its payload is read."""

    max_message_size = MAX_MESSAGE
    _message = 0  # bytes of the fragmented data message received so far

    def _recv(self, bufsize: int) -> bytes:
        """Read at least a small block per system call: the library asks for a frame's header, length
        and payload one by one (three calls per message), and keeps what comes beyond in its buffer."""
        return super()._recv(max(bufsize, READ_AHEAD))

    def recv_frame(self) -> websocket.ABNF:
        frames = self.frame_buffer  # the library's reader keeps a header read before a timeout
        if frames.needs_header():
            frames.recv_header()
        if frames.needs_length():
            frames.recv_length()
        opcode = frames.header[4] if frames.header else None  # (fin, rsv1, rsv2, rsv3, opcode, mask, length)
        total = 0
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            total = (frames.length or 0) + (self._message if opcode == OP_CONT else 0)
            if total > self.max_message_size:
                raise MessageTooLarge(f"a message over {self.max_message_size} bytes (the limit max_ws_message_size)")
        frame = super().recv_frame()
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            self._message = 0 if frame.fin else total
        return frame


def sslopt(verify: bool) -> dict[str, Any]:
    """websocket-client's TLS options for the certificates :func:`hotfolder.comfy.http.trust` names."""
    trusted = trust(verify)
    if trusted is False:
        return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    if isinstance(trusted, str):
        return {"ca_cert_path": trusted} if os.path.isdir(trusted) else {"ca_certs": trusted}
    return {}


def backoff(delay: float, away: float) -> float:
    """The wait before the next connection attempt after one that waited ``delay``, the server
    unconnected for ``away`` seconds (BACKOFF_RECENT at most while that is under RECENT)."""
    return min(delay * 2, BACKOFF_RECENT if away < RECENT else BACKOFF_MAX)


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
        on_failure: Callable[[BaseException], None] | None = None,
        display_url: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool = True,
        ignore_types: tuple[str, ...] = (),
        ping_interval: float = 10.0,
        silence_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_message_size: int = MAX_MESSAGE,
    ) -> None:
        self.url = ws_url(http_url, client_id)
        self.max_message_size = max_message_size
        self.display_url = display_url or redact_url(http_url)
        self.on_message = on_message
        self.on_state = on_state
        self.on_failure = on_failure
        # Messages of these types are dropped before they are decoded, recognised by their first bytes
        # (ComfyUI writes "type" first). One that starts otherwise is decoded and passed on as usual.
        self._skip = tuple(f'{{"type": "{kind}"'.encode() for kind in ignore_types)
        self.headers = [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sslopt = sslopt(verify)
        self.ping_interval = ping_interval
        self.silence_timeout = silence_timeout
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._retry = threading.Event()  # ends the wait between connection attempts (stop, retry_now)
        self._ws: websocket.WebSocket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"ws {self.display_url}", daemon=True)
        self.connected = False
        self.reconnects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._retry.set()
        self._interrupt()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._close()  # never started, or gone: nobody else uses the socket

    def _interrupt(self) -> None:
        """Wake the reader thread out of ``recv`` by shutting the socket down; the reader then closes it
        itself. Only that thread reads, writes or closes the socket: a TLS connection used by two
        threads at once can crash the process inside OpenSSL."""
        with self._lock:
            ws = self._ws
        if ws is not None:
            try:
                ws.abort()
            except Exception:  # noqa: BLE001 - best effort: the socket may be gone already
                pass

    def retry_now(self) -> None:
        """Try to connect at once if the thread waits between attempts (the server answered over HTTP)."""
        self._retry.set()

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
        delay = BACKOFF_FIRST
        last_up = time.monotonic()  # when the server was last connected (or the stream started)
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(
                    self.url, timeout=self.connect_timeout, header=self.headers, sslopt=self.sslopt,
                    enable_multithread=True, class_=BoundedWebSocket,
                    # frames are decoded as UTF-8 JSON below anyway; the library's pure-Python check per
                    # byte cost a tenth of the daemon's CPU
                    skip_utf8_validation=True,
                )
            except (OSError, websocket.WebSocketException) as err:
                # a refused handshake's text holds the answer's headers and body (Set-Cookie, a proxy's page)
                logger.debug("WebSocket to %s failed: %s", self.display_url, redact_text(err))
                if self.on_failure is not None and not self._stop.is_set():
                    try:
                        self.on_failure(err)
                    except Exception:  # noqa: BLE001 - a listener bug must not kill the reader thread
                        logger.exception("WebSocket failure listener failed")
                self._retry.wait(delay)
                self._retry.clear()
                delay = backoff(delay, time.monotonic() - last_up)
                continue
            assert isinstance(ws, BoundedWebSocket)  # class_= above
            ws.max_message_size = self.max_message_size
            with self._lock:
                self._ws = ws
            if self._stop.is_set():
                self._close()
                break
            delay = BACKOFF_FIRST
            if self.reconnects or self.connected:
                logger.debug("WebSocket to %s reconnected", self.display_url)
            self._set_state(True)
            try:
                self._read(ws)
            finally:
                last_up = time.monotonic()
                self._close()
                self._set_state(False)
            if not self._stop.is_set():
                self.reconnects += 1
                logger.debug("WebSocket to %s lost; reconnecting", self.display_url)  # on_failure tells if it stays away

    def _read(self, ws: BoundedWebSocket) -> None:
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
                # pings are answered by websocket-client; control frames come back too, to count as signs of life
                opcode, frame = ws.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except MessageTooLarge as err:
                logger.warning("WebSocket to %s sent %s; reconnecting (jobs are followed through /history meanwhile). "
                               "Raise max_ws_message_size in hotfolder.toml if the server's messages are meant to "
                               "be this large.", self.display_url, err)
                return
            except (websocket.WebSocketProtocolException, websocket.WebSocketPayloadException) as err:
                logger.warning("WebSocket to %s sent something that is not WebSocket: %s; reconnecting",
                               self.display_url, err)
                return
            except (OSError, websocket.WebSocketException, AttributeError):  # closed (AttributeError: by stop())
                return
            last_seen = time.monotonic()
            if opcode == OP_CLOSE:
                return
            if opcode == OP_TEXT:
                self._deliver(frame.data)

    def _deliver(self, data: bytes) -> None:
        """Hand one text message to ``on_message`` if it is a JSON object of a type not ignored."""
        if self._skip and data.startswith(self._skip):
            return
        try:
            message = loads_answer(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            logger.debug("Ignoring a WebSocket message that is not JSON")
            return
        if isinstance(message, dict):
            try:
                self.on_message(message)
            except Exception:  # noqa: BLE001 - a routing bug must not kill the reader thread
                logger.exception("Handling a WebSocket message failed")
