"""hotfolder.comfy.ws.EventStream against a server that answers a real handshake and then sends hand-made
frames (RFC 6455): what hotfolder makes of every frame shape a server may send (text whole or in
fragments, binary previews, pings between fragments, masked frames, frames split across reads), the
max_ws_message_size budget, and reconnecting after a close, a drop or a protocol error."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hotfolder.comfy.ws import BACKOFF_FIRST, BACKOFF_MAX, RECENT, EventStream, backoff

from .conftest import wait_until

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if len(payload) < 126:
        head += bytes([bit | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", len(payload))
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", len(payload))
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def text(message: dict[str, Any], **kwargs: Any) -> bytes:
    return frame(OP_TEXT, json.dumps(message).encode(), **kwargs)


class FrameServer:
    """A WebSocket server on 127.0.0.1 that sends ``scripts[n]`` on its n-th connection: bytes as they
    are, or a list of byte strings sent with a pause longer than the client's read timeout between
    them. Then it keeps the connection open and records the opcodes of the client's frames."""

    def __init__(self, scripts: list[Any], pause: float = 0.0) -> None:
        self.scripts = scripts
        self.pause = pause
        self.connections = 0
        self.received: list[int] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._open.append(conn)
            script = self.scripts[min(self.connections, len(self.scripts) - 1)]
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, script), daemon=True).start()

    def _serve(self, conn: socket.socket, script: Any) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            for piece in script if isinstance(script, list) else [script]:
                conn.sendall(piece)
                if self.pause:
                    time.sleep(self.pause)  # a slow network: the client's reads time out in between
            reader = conn.makefile("rb")
            while head := reader.read(2):
                size = head[1] & 0x7F
                if size == 126:
                    size = struct.unpack(">H", reader.read(2))[0]
                elif size == 127:
                    size = struct.unpack(">Q", reader.read(8))[0]
                reader.read(4 + size)  # the client's mask and payload
                self.received.append(head[0] & 0x0F)
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[FrameServer] = []

    def start(scripts: list[Any], pause: float = 0.0) -> FrameServer:
        servers.append(FrameServer(scripts, pause))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.fixture
def stream() -> Iterator[Any]:
    streams: list[EventStream] = []

    def start(server: FrameServer, **kwargs: Any) -> tuple[EventStream, list[dict[str, Any]], list[bool]]:
        messages: list[dict[str, Any]] = []
        states: list[bool] = []
        kwargs.setdefault("ignore_types", ("status", "progress_state"))
        events = EventStream(server.url, "c", on_message=messages.append, on_state=states.append, **kwargs)
        streams.append(events)
        events.start()
        return events, messages, states
    yield start
    for events in streams:
        events.stop()


PREVIEW = frame(OP_BINARY, b"\x00\x00\x00\x01" + os.urandom(70_000))  # a preview image (64-bit length)
SHAPES = b"".join([
    text({"type": "status", "data": {}}),                       # an ignored type: dropped undecoded
    PREVIEW,                                                    # binary: never a result
    frame(OP_BINARY, b'{"type": "binary"}'),                    # not even when it holds JSON
    frame(OP_TEXT, b'{"type": "a", ', fin=False),               # a text message in three fragments
    frame(OP_PING, b"hi"),                                      # a ping between fragments: answered
    frame(OP_CONT, b'"data": ', fin=False),
    frame(OP_CONT, b"1}"),
    frame(OP_BINARY, b"\x00\x00\x00\x01" + b"x" * 300, fin=False),  # a fragmented binary message
    frame(OP_CONT, b"y" * 200),
    text({"type": "long", "data": "m" * 1000}),                 # 16-bit length
    text({"type": "masked", "data": True}, mask=b"\x01\x02\x03\x04"),
    text({"data": {}, "type": "status"}),                       # "type" not first: decoded and passed on
    frame(OP_TEXT, b"not json"),                                # ignored
])
EXPECTED = [{"type": "a", "data": 1}, {"type": "long", "data": "m" * 1000}, {"type": "masked", "data": True},
            {"data": {}, "type": "status"}]


def test_every_frame_shape_a_server_may_send(serve, stream) -> None:
    server = serve([SHAPES])
    events, messages, states = stream(server)
    wait_until(lambda: len(messages) == len(EXPECTED), timeout=10, message="the messages")
    assert messages == EXPECTED
    wait_until(lambda: OP_PONG in server.received, timeout=5, message="the pong")  # the ping was answered
    assert states == [True] and server.connections == 1


def test_frames_split_across_slow_reads_are_put_together(serve, stream) -> None:
    pieces = [SHAPES[i:i + 4093] for i in range(0, len(SHAPES), 4093)]
    pieces[1:1] = [pieces[0][-3:]]  # a header split in the middle
    pieces[0] = pieces[0][:-3]
    server = serve([pieces], pause=0.15)
    events, messages, states = stream(server, ping_interval=0.1)  # reads time out every 0.1 s
    wait_until(lambda: len(messages) == len(EXPECTED), timeout=20, message="the messages")
    assert messages == EXPECTED and server.connections == 1


def test_a_message_over_the_budget_drops_the_connection_before_it_is_read(serve, stream, caplog) -> None:
    caplog.set_level(logging.WARNING, "hotfolder.comfy.ws")
    first = text({"type": "fits", "data": "x" * 250})
    in_two = frame(OP_TEXT, b'{"type": "over", "data": "' + b"x" * 150, fin=False) + frame(OP_CONT, b"x" * 130 + b'"}')
    server = serve([first + in_two, bytes([0x80 | OP_TEXT, 127]) + struct.pack(">Q", 1 << 40),  # no payload sent
                    text({"type": "after"})])
    events, messages, states = stream(server, max_message_size=300)
    wait_until(lambda: {"type": "after"} in messages, timeout=10, message="the third connection")
    assert [m["type"] for m in messages] == ["fits", "after"] and server.connections == 3
    assert states == [True, False, True, False, True]
    assert "max_ws_message_size" in caplog.text


@pytest.mark.parametrize("ending", [frame(OP_CLOSE, struct.pack(">H", 1000)),  # a close
                                    bytes([0x80 | 0x3, 0]),                    # a reserved opcode
                                    frame(OP_CONT, b"x")])                     # a continuation of nothing
def test_a_connection_that_ends_or_breaks_the_protocol_is_made_again(serve, stream, ending: bytes) -> None:
    server = serve([text({"type": "one"}) + ending, text({"type": "two"})])
    events, messages, states = stream(server)
    wait_until(lambda: len(messages) == 2, timeout=10, message="the second connection")
    assert messages == [{"type": "one"}, {"type": "two"}] and states == [True, False, True]
    assert events.reconnects == 1


def test_a_server_connected_recently_is_tried_again_at_least_twice_a_second() -> None:
    """A server that was connected within RECENT seconds is most likely restarting, its GPU idle until we
    are back: the attempts back off (never hammered) but stay at most 0.5 s apart. Later they spread out."""
    def waits(away: float) -> list[float]:
        found = [BACKOFF_FIRST]
        for _ in range(12):
            found.append(backoff(found[-1], away))
        return found

    recent = waits(away=RECENT / 2)
    assert recent[1] > recent[0] and max(recent) <= 0.5
    assert waits(away=RECENT + 1)[-1] == BACKOFF_MAX


def test_retry_now_ends_the_wait_between_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that answers over HTTP again has its WebSocket tried at once (retry_now), not after
    the backoff, here 1000 s so that nothing else could start the second attempt; stop ends the wait too."""
    from hotfolder.comfy import ws

    monkeypatch.setattr(ws, "BACKOFF_FIRST", 1000.0)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    failures: list[BaseException] = []
    events = EventStream(f"http://127.0.0.1:{port}", "c", on_message=lambda m: None, on_state=lambda up: None,
                         on_failure=failures.append)
    events.start()
    try:
        wait_until(lambda: failures, timeout=10, message="the first attempt")
        events.retry_now()
        wait_until(lambda: len(failures) >= 2, timeout=10, message="a second attempt at once")
    finally:
        events.stop()
    assert not events.alive()
