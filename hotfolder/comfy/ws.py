"""ComfyUI's WebSocket, read by one background thread per server (websocket-client lives only here).

The thread connects to ``/ws?clientId=<id>``, hands every JSON text frame to ``on_message``, reports
connection changes to ``on_state`` and every failed connection attempt to ``on_failure``. Binary
frames (previews, progress text) are never results: they are dropped here. ComfyUI sends no heartbeat,
so the thread pings; a socket that answers neither frames nor pings within ``silence_timeout`` is
treated as dead. Before reconnecting it always closes the old socket:
two live sockets with one clientId make ComfyUI orphan the newer one (PROTOCOL §8).

websocket-client makes the connection (handshake, TLS, proxies, headers) and sends pings, pongs and the
close. The frames ComfyUI sends are read here by :class:`FrameReader`, from the socket in 64 KiB
chunks: the library reads every frame with two or three ``recv`` calls of a few bytes, which at a
dozen messages per prompt was most of this thread's CPU.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websocket

from hotfolder.budgets import DEFAULTS
from hotfolder.comfy.http import ca_bundle, loads_answer
from hotfolder.redact import redact_text, redact_url

logger = logging.getLogger(__name__)


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_TEXT = DEFAULTS.max_ws_message_size  # a JSON message larger than this is not ComfyUI's: the connection is dropped


class FrameReader:
    """Messages from a server's frames (RFC 6455 §5), read from ``sock`` in large chunks.

    :meth:`read` returns ``(opcode, payload)`` for each text message (continuations joined) and each
    control frame. Binary messages (previews) are skipped as they stream by, never held whole. A socket
    timeout propagates with the partial frame kept, so the next :meth:`read` resumes where it stopped.
    Raises ``ConnectionError`` when the peer closes and ``ValueError`` for frames no server may send.
    """

    def __init__(self, sock: Any, max_text: int = MAX_TEXT) -> None:
        self.sock = sock
        self.max_text = max_text
        self.buf = bytearray()
        self.pos = 0
        self.skip = 0  # bytes of a binary frame still to discard
        self.message: int | None = None  # the data message being continued: OP_TEXT, OP_BINARY or None
        self.parts: list[bytes] = []

    def _fill(self, need: int) -> None:
        while len(self.buf) - self.pos < need:
            if self.pos:
                del self.buf[: self.pos]
                self.pos = 0
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk

    def _discard(self) -> None:
        available = len(self.buf) - self.pos
        if available:
            taken = min(available, self.skip)
            self.pos += taken
            self.skip -= taken
            return
        chunk = self.sock.recv(min(65536, self.skip))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.skip -= len(chunk)

    def read(self) -> tuple[int, bytes]:
        while True:
            if self.skip:
                self._discard()
                continue
            self._fill(2)
            b0, b1 = self.buf[self.pos], self.buf[self.pos + 1]
            fin, opcode, masked, size = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            head = 2
            if size == 126:
                self._fill(4)
                size, head = int.from_bytes(self.buf[self.pos + 2:self.pos + 4], "big"), 4
            elif size == 127:
                self._fill(10)
                size, head = int.from_bytes(self.buf[self.pos + 2:self.pos + 10], "big"), 10
            if masked:
                head += 4
            if opcode >= 0x8:
                if not fin or size > 125:
                    raise ValueError(f"malformed control frame (opcode {opcode:#x})")
            elif opcode == OP_BINARY or (opcode == OP_CONT and self.message == OP_BINARY):
                if opcode == OP_BINARY and self.message is not None:
                    raise ValueError("a binary frame inside an unfinished message")
                self._fill(head)
                self.pos += head
                self.skip = size
                self.message = None if fin else OP_BINARY
                continue
            elif opcode == OP_TEXT:
                if self.message is not None:
                    raise ValueError("a text frame inside an unfinished message")
            elif opcode != OP_CONT or self.message != OP_TEXT:
                raise ValueError(f"unexpected frame (opcode {opcode:#x})")
            if size > self.max_text or sum(map(len, self.parts)) + size > self.max_text:
                raise MessageTooLarge(f"a text message over {self.max_text} bytes (the limit max_ws_message_size)")
            self._fill(head + size)
            start = self.pos + head
            payload = bytes(self.buf[start:start + size])
            if masked:  # servers must not mask; unmask anyway
                key = self.buf[start - 4:start]
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            self.pos = start + size
            if opcode >= 0x8:
                return opcode, payload
            if fin and not self.parts:
                self.message = None
                return OP_TEXT, payload
            self.parts.append(payload)
            self.message = OP_TEXT
            if fin:
                message, self.parts, self.message = b"".join(self.parts), [], None
                return OP_TEXT, message


class MessageTooLarge(ValueError):
    """A text message over ``max_ws_message_size``: the connection is dropped and made again."""


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
        max_message_size: int = MAX_TEXT,
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
                # a refused handshake's text holds the answer's headers and body (Set-Cookie, a proxy's page)
                logger.debug("WebSocket to %s failed: %s", self.display_url, redact_text(err))
                if self.on_failure is not None and not self._stop.is_set():
                    try:
                        self.on_failure(err)
                    except Exception:  # noqa: BLE001 - a listener bug must not kill the reader thread
                        logger.exception("WebSocket failure listener failed")
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
                logger.debug("WebSocket to %s reconnected", self.display_url)
            self._set_state(True)
            try:
                self._read(ws)
            finally:
                self._close()
                self._set_state(False)
            if not self._stop.is_set():
                self.reconnects += 1
                logger.debug("WebSocket to %s lost; reconnecting", self.display_url)  # on_failure tells if it stays away

    def _read(self, ws: websocket.WebSocket) -> None:
        ws.settimeout(min(1.0, self.ping_interval))
        reader = FrameReader(ws.sock, self.max_message_size)
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
                opcode, data = reader.read()
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except MessageTooLarge as err:
                logger.warning("WebSocket to %s sent %s; reconnecting (jobs are followed through /history meanwhile). "
                               "Raise max_ws_message_size in hotfolder.toml if the server's messages are meant to "
                               "be this large.", self.display_url, err)
                return
            except ValueError as err:
                logger.warning("WebSocket to %s sent something that is not WebSocket: %s; reconnecting",
                               self.display_url, err)
                return
            except (OSError, AttributeError):  # ConnectionError is an OSError; AttributeError: closed by stop()
                return
            last_seen = time.monotonic()
            if opcode == OP_CLOSE:
                return
            if opcode == OP_PING:
                try:
                    ws.pong(data)
                except (OSError, websocket.WebSocketException):
                    return
                continue
            if opcode != OP_TEXT:
                continue  # pongs
            if self._skip and data.startswith(self._skip):
                continue
            try:
                message = loads_answer(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                logger.debug("Ignoring a WebSocket frame that is not JSON")
                continue
            if isinstance(message, dict):
                try:
                    self.on_message(message)
                except Exception:  # noqa: BLE001 - a routing bug must not kill the reader thread
                    logger.exception("Handling a WebSocket message failed")
