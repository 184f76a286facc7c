"""hotfolder.comfy.http's own connection handling: keep-alive reuse, connections the server closed while
idle, and proxies from the environment (plain http through an HTTP proxy, https through CONNECT)."""

from __future__ import annotations

import socket
import socketserver
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import ServerUnavailable
from hotfolder.testing import ComfyTestServer

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in PROXY_VARS:
        monkeypatch.delenv(key, raising=False)


def test_calls_share_one_keep_alive_connection(comfy: ComfyTestServer) -> None:
    http = ComfyHTTP(comfy.url)
    for _ in range(5):
        http.system_stats()
    first = http._conns._idle[0]
    http.queue_ids()
    assert http._conns._idle == [first]


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
            self._relay(upstream)
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

    def _relay(self, upstream: socket.socket) -> None:
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
        back = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
        back.start()
        pump(self.connection, upstream)
        back.join(5)


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


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
