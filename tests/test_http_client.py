"""hotfolder.comfy.http's connections (through requests): keep-alive reuse, connections the server closed
while idle, and proxies from the environment (plain http through an HTTP proxy, https through CONNECT),
each seen through a real relay or proxy on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hotfolder.comfy.http import ComfyHTTP, has_lone_surrogate, loads_answer
from hotfolder.errors import OutcomeUnknown, PromptRejected, ServerUnavailable
from hotfolder.testing import ComfyTestServer

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in PROXY_VARS:
        monkeypatch.delenv(key, raising=False)


def test_calls_share_one_keep_alive_connection(comfy: ComfyTestServer, relay: _Relay) -> None:
    http = ComfyHTTP(relay.url_to(comfy.port))
    for _ in range(5):
        http.system_stats()
    http.queue_ids()
    assert relay.connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced(comfy: ComfyTestServer) -> None:
    http = ComfyHTTP(comfy.url)
    http.system_stats()
    comfy.restart()  # same port; every old connection is gone
    assert http.system_stats()["system"]["comfyui_version"]


def test_a_server_that_is_down_is_unavailable_not_an_unknown_outcome(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = ComfyHTTP(f"http://127.0.0.1:{port}", connect_timeout=1)
    with pytest.raises(ServerUnavailable, match="not reachable"):
        http.post_prompt({}, prompt_id="p", client_id="c")  # never sent, so safe to send again


SECRET = "s3cret-t0ken"


class _Scripted(socketserver.ThreadingTCPServer):
    """An HTTP server that reads each request and then misbehaves as ``action`` says: ``hang`` (no answer),
    ``close`` (the connection closed without an answer), ``reset`` (a TCP reset), ``truncated`` (a 200
    whose body stops short of its Content-Length), ``echo500`` (a 500 quoting the request's headers)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, action: str) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.action = action
        self.done = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        head = b""
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            head += line
        length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0)
        self.rfile.read(length)
        action = self.server.action  # type: ignore[attr-defined]
        if action == "hang":
            self.server.done.wait(10)  # type: ignore[attr-defined]
        elif action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif action == "truncated":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        elif action == "echo500":
            self.wfile.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head))


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[_Scripted] = []

    def start(action: str) -> _Scripted:
        servers.append(_Scripted(action))
        threading.Thread(target=servers[-1].serve_forever, daemon=True).start()
        return servers[-1]
    yield start
    for server in servers:
        server.done.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("action", ["hang", "close", "reset"])
def test_a_post_that_got_no_answer_is_an_unknown_outcome_and_a_get_is_unavailable(scripted, action: str) -> None:
    server = scripted(action)
    http = ComfyHTTP(server.url.replace("//", f"//bob:{SECRET}@"), headers={"Authorization": f"Bearer {SECRET}"},
                     read_timeout=0.5)
    with pytest.raises(OutcomeUnknown, match="No answer") as unknown:
        http.post_prompt({}, prompt_id="p", client_id="c")  # it may have been queued: look before sending again
    with pytest.raises(ServerUnavailable, match="not reachable") as unavailable:
        http.queue_ids()  # a read: simply ask again later
    for err in (unknown.value, unavailable.value):
        assert SECRET not in str(err) and SECRET not in repr(err.to_dict()), err


def test_a_500_to_a_post_is_an_unknown_outcome_without_the_credentials_it_quotes(scripted) -> None:
    http = ComfyHTTP(scripted("echo500").url, headers={"Authorization": f"Bearer {SECRET}"})
    with pytest.raises(OutcomeUnknown, match="HTTP 500") as err:
        http.post_prompt({}, prompt_id="p", client_id="c")
    assert "Authorization" in str(err.value) and SECRET not in str(err.value)


def test_a_download_cut_short_of_its_length_is_unavailable(scripted, tmp_path: Path) -> None:
    http = ComfyHTTP(scripted("truncated").url)
    with pytest.raises(ServerUnavailable, match="cut off|incomplete"):
        http.download(filename="a.png", subfolder="", type_="output", dest=tmp_path / "a.png")


def test_a_workflow_comfyui_refuses_is_rejected_with_its_node_errors(comfy: ComfyTestServer) -> None:
    with pytest.raises(PromptRejected) as err:
        ComfyHTTP(comfy.url).post_prompt({"1": {"class_type": "NoSuchNode", "inputs": {}}}, prompt_id="p", client_id="c")
    assert "node_errors" in err.value.details or "error" in err.value.details


def _pump_both_ways(near: socket.socket, far: socket.socket) -> None:
    """Pass bytes between two sockets until either side closes."""
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
    back = threading.Thread(target=pump, args=(far, near), daemon=True)
    back.start()
    pump(near, far)
    back.join(5)


class _Relay(socketserver.ThreadingTCPServer):
    """Passes each connection on to 127.0.0.1:``target`` and counts them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.target = 0
        self.connections = 0

    def url_to(self, port: int) -> str:
        self.target = port
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RelayHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        upstream = socket.create_connection(("127.0.0.1", self.server.target))  # type: ignore[attr-defined]
        _pump_both_ways(self.request, upstream)


class _Proxy(socketserver.ThreadingTCPServer):
    """A forward proxy: absolute-form requests are passed on (one per connection), CONNECT is tunnelled."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str | None]] = []  # (request line, Proxy-Authorization)


class _ProxyHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().decode("latin-1").strip()
        headers = []
        while (header := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            headers.append(header.decode("latin-1").strip())
        auth = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")), None)
        self.server.seen.append((line, auth))  # type: ignore[attr-defined]
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _pump_both_ways(self.connection, upstream)
            return
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
        body = self.rfile.read(length) if length else b""
        kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:"))]
        upstream = socket.create_connection((host, int(port)))
        upstream.sendall((f"{method} /{path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in kept)
                          + "Connection: close\r\n\r\n").encode("latin-1") + body)
        while data := upstream.recv(65536):
            self.wfile.write(data)
        upstream.close()


def _serving(server: socketserver.TCPServer) -> Iterator[Any]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def relay() -> Iterator[_Relay]:
    yield from _serving(_Relay())


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    yield from _serving(_Proxy())


def test_plain_http_goes_through_the_environment_proxy_with_its_credentials(
        comfy: ComfyTestServer, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://bob:s%40cret@127.0.0.1:{proxy.server_address[1]}")
    http = ComfyHTTP(comfy.url)
    answer = http.post_prompt({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                               "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
                              prompt_id=str(uuid.uuid4()), client_id="c")  # 0.4x takes only UUIDs
    assert "number" in answer
    assert http.system_stats()["system"]
    lines = [line for line, _ in proxy.seen]
    assert lines[0] == f"POST {comfy.url}/prompt HTTP/1.1" and lines[1] == f"GET {comfy.url}/system_stats HTTP/1.1"
    assert {auth for _, auth in proxy.seen} == {"Basic Ym9iOnNAY3JldA=="}  # bob:s@cret


def test_no_proxy_is_honoured(comfy: ComfyTestServer, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert ComfyHTTP(comfy.url).system_stats()["system"]
    assert proxy.seen == []


def test_proxies_come_from_the_environment_once_and_no_proxy_is_honoured(
        comfy: ComfyTestServer, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    before = ComfyHTTP(comfy.url)  # made while no proxy was set
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("no_proxy", "localhost")
    proxied, bypassed = ComfyHTTP(comfy.url), ComfyHTTP(f"http://localhost:{comfy.port}")
    assert before.system_stats()["system"] and bypassed.system_stats()["system"]
    assert proxy.seen == []
    monkeypatch.delenv("http_proxy")
    assert proxied.system_stats()["system"]  # the proxy set when it was made
    assert [line for line, _ in proxy.seen] == [f"GET {comfy.url}/system_stats HTTP/1.1"]


def test_https_is_tunnelled_through_the_proxy_and_still_verified(proxy: _Proxy, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    trustme = pytest.importorskip("trustme")
    from .test_tls import server_context
    ca = trustme.CA()
    with ComfyTestServer(ssl_context=server_context(ca)) as server:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
        for key in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.delenv(key, raising=False)
        with pytest.raises(ServerUnavailable, match="TLS"):
            ComfyHTTP(server.url).system_stats()  # the tunnel does not switch verification off
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        assert ComfyHTTP(server.url).system_stats()["system"]
    assert [line.rsplit(" ", 1)[0] for line, _ in proxy.seen] == [f"CONNECT 127.0.0.1:{server.port}"] * 2


@pytest.mark.parametrize(("content", "expected"), [
    (b'{"a": "x\\ud800y"}', {"a": "x\ufffdy"}),                        # a lone escape
    (b'{"\\udc00": ["\\ud83d\\ude00"]}', {"\ufffd": ["\U0001f600"]}),  # a lone key, a kept pair
    (b'["a\xed\xa0\x80b"]', ["a\ufffdb"]),                               # raw UTF-8 of a surrogate, no escape
    (b'["\\\\ud83d\\ude00"]', ["\\ud83d\ufffd"]),                       # an escaped backslash, then a lone low half
    ('{"k": "\ud800"}', {"k": "\ufffd"}),                               # text already decoded
    (b'{"name": "\\ud83d\\ude00 Save"}', {"name": "\U0001f600 Save"}),   # pairs only: kept as they are
])
def test_a_server_answer_never_keeps_a_lone_surrogate(content: bytes | str, expected: object) -> None:
    assert loads_answer(content) == expected


@pytest.mark.parametrize(("content", "lone"), [
    (b'{"name": "\\ud83d\\ude00 Save", "k": ["\\uD83D\\uDE00"]}', False),  # escaped pairs (an emoji)
    ('{"name": "\U0001f600", "x": "\\u00e9\\n\\\\"}', False),  # a decoded emoji, other escapes
    (b'["\\ud83d"]', True),  # a high half alone
    (b'["\\ud83dx\\ude00"]', True),  # two halves apart
    (b'["\\ud800\\ud83d\\ude00"]', True),  # a high half before a pair
    (b'["\\ude00"]', True),  # a low half alone
    (b'["\\\\ud83d\\ude00"]', True),  # an escaped backslash and the text ud83d, then a low half alone
    (b'["\\\\ud800"]', False),  # an escaped backslash, then text
    (b'["\xed\xa0\xbd\xed\xb8\x80"]', True),  # raw UTF-8 halves, even of a pair (decoded apart)
    ('["\ud83d\ude00"]', True),  # code points: a str never pairs them
])
def test_the_surrogate_check_finds_lone_halves_and_passes_pairs(content: bytes | str, lone: bool) -> None:
    assert has_lone_surrogate(content) is lone


def _lone_in(data: object) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


PIECES = st.sampled_from(["a", "u", "d83d", "\\", "\"", "\n", "\u00e9", "\ud83d", "\ude00", "\ud800",
                          "\udfff", "\udbff\udc00", "\U0001f600", "\\ud83d"])


@example(texts=["\\ud83d\ude00"], ascii_only=True, as_bytes=True)  # an escaped backslash, then a lone low half
@example(texts=["\ud83d\ude00"], ascii_only=True, as_bytes=False)  # an escaped pair: an emoji
@given(texts=st.lists(st.lists(PIECES, max_size=8).map("".join), max_size=4), ascii_only=st.booleans(),
       as_bytes=st.booleans())
def test_the_surrogate_check_is_exact(texts: list[str], ascii_only: bool, as_bytes: bool) -> None:
    """Escaped (ensure_ascii) or raw, text or bytes: a lone surrogate is found exactly when one decodes."""
    text = json.dumps(texts, ensure_ascii=ascii_only)
    content: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    data = json.loads(content)
    assert has_lone_surrogate(content) is _lone_in(data), content
    assert not _lone_in(loads_answer(content))
