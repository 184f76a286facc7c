"""hotfolder.comfy.ws.FrameReader against hand-made frames on a real socket pair: every frame shape a
server may send, split at every byte, with timeouts in the middle."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from hotfolder.comfy.ws import MAX_TEXT, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, FrameReader


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


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(2)
    yield a, b
    a.close()
    b.close()


BIG = frame(OP_BINARY, os.urandom(70_000))  # a preview (64-bit length)
STREAM = b"".join([
    frame(OP_TEXT, b'{"type": "status"}'),
    BIG,                                                       # skipped
    frame(OP_TEXT, b'{"a": ', fin=False),                       # a text message in three fragments
    frame(OP_PING, b"hi"),                                     # control frames may come between fragments
    frame(OP_CONT, b"1", fin=False),
    frame(OP_CONT, b"}"),
    frame(OP_BINARY, b"\x00\x00\x00\x01" + b"x" * 300, fin=False),  # a fragmented binary message
    frame(OP_CONT, b"y" * 200),
    frame(OP_TEXT, b"m" * 1000),                               # 16-bit length
    frame(OP_TEXT, b'{"masked": true}', mask=b"\x01\x02\x03\x04"),
    frame(OP_CLOSE, struct.pack(">H", 1000)),
])
EXPECTED = [(OP_TEXT, b'{"type": "status"}'), (OP_PING, b"hi"), (OP_TEXT, b'{"a": 1}'), (OP_TEXT, b"m" * 1000),
            (OP_TEXT, b'{"masked": true}'), (OP_CLOSE, struct.pack(">H", 1000))]


def test_every_frame_shape_in_one_stream(pair) -> None:
    a, b = pair
    b.sendall(STREAM)
    reader = FrameReader(a)
    assert [reader.read() for _ in EXPECTED] == EXPECTED
    assert len(reader.buf) < 70_000  # the preview was never held whole


@pytest.mark.parametrize(("step", "big"), [(1, False), (3, False), (1000, True), (4093, True)])
def test_frames_split_anywhere_with_timeouts_in_between_resume_where_they_stopped(pair, step: int, big: bool) -> None:
    a, b = pair
    a.settimeout(0.001)
    stream = STREAM if big else STREAM.replace(BIG, frame(OP_BINARY, b"p" * 130))  # byte by byte: no 70 kB frame
    reader = FrameReader(a)
    got = []
    for i in range(0, len(stream), step):
        b.sendall(stream[i:i + step])
        while True:
            try:
                got.append(reader.read())
            except TimeoutError:
                break
    assert got == EXPECTED


def test_a_closed_connection_and_frames_no_server_may_send_are_errors(pair) -> None:
    a, b = pair
    b.sendall(frame(OP_TEXT, b"x", fin=False) + frame(OP_TEXT, b"y"))
    with pytest.raises(ValueError, match="unfinished"):
        FrameReader(a).read()
    c, d = socket.socketpair()
    d.sendall(bytes([0x80 | 0x3, 0]))  # reserved opcode
    with pytest.raises(ValueError, match="unexpected"):
        FrameReader(c).read()
    d.sendall(b"")
    d.close()
    with pytest.raises(ConnectionError):
        FrameReader(c).read()
    c.close()


def test_a_text_message_over_the_limit_is_refused_before_it_is_read(pair) -> None:
    a, b = pair
    b.sendall(bytes([0x80 | OP_TEXT, 127]) + struct.pack(">Q", MAX_TEXT + 1))
    with pytest.raises(ValueError, match="over"):
        FrameReader(a).read()


def test_ignored_message_types_are_dropped_undecoded_and_others_pass(pair) -> None:
    """EventStream(ignore_types=...) drops broadcasts by their first bytes; anything else is decoded."""
    import threading

    from hotfolder.comfy.ws import EventStream

    got: list[dict] = []
    stream = EventStream("http://127.0.0.1:9", "c", on_message=got.append, on_state=lambda up: None,
                         ignore_types=("status", "progress_state"))
    a, b = pair
    a.settimeout(0.2)

    class FakeWS:  # what _read needs of a websocket-client connection
        sock = a

        def settimeout(self, t: float) -> None:
            a.settimeout(t)

    for text in (b'{"type": "status", "data": {}}', b'{"type": "progress_state", "data": {}}',
                 b'{"data": {}, "type": "status"}', b'{"type": "executing", "data": {"node": null}}'):
        b.sendall(frame(OP_TEXT, text))
    b.sendall(frame(OP_CLOSE, b""))
    thread = threading.Thread(target=stream._read, args=(FakeWS(),))
    thread.start()
    thread.join(5)
    assert got == [{"data": {}, "type": "status"}, {"type": "executing", "data": {"node": None}}]
