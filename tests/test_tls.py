"""https/wss servers: certificates are verified by default, a private CA can be named, and verify = false
is the explicit way out. The test ComfyUI serves TLS with a certificate from a throwaway CA (trustme)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import ServerUnavailable
from hotfolder.testing import ComfyTestServer

from .conftest import make_settings
from .test_pipeline import drain

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for 127.0.0.1 issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def tls_comfy(ca: trustme.CA) -> Iterator[ComfyTestServer]:
    with ComfyTestServer(ssl_context=server_context(ca)) as server:
        yield server


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def test_an_unknown_certificate_is_refused_with_a_hint(tls_comfy: ComfyTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(key, raising=False)
    http = ComfyHTTP(tls_comfy.url)
    with pytest.raises(ServerUnavailable) as err:
        http.system_stats()
    assert "TLS" in str(err.value) and "REQUESTS_CA_BUNDLE" in err.value.hint
    with pytest.raises(ServerUnavailable, match="TLS"):  # not OutcomeUnknown: refused in the handshake, never sent
        http.post_prompt({}, prompt_id="p", client_id="c")
    assert not tls_comfy.requests  # nothing reached the server


def test_a_private_ca_named_in_the_environment_runs_jobs_over_https_and_wss(
        tls_comfy: ComfyTestServer, ca_file: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    (project / "inbox" / "secure.yaml").write_text("params: {width: 8}\n")
    counts = drain(make_settings(project, tls_comfy.url))
    assert counts["published"] == 1 and counts["failed"] == 0
    assert sorted(p.suffix for p in (project / "outbox" / "secure").iterdir()) == [".json", ".png"]
    assert any(r["path"] == "/ws" for r in tls_comfy.requests)  # the job was followed over wss


def test_verify_false_is_an_explicit_per_server_choice(tls_comfy: ComfyTestServer, project: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(key, raising=False)
    (project / "inbox" / "lab.yaml").write_text("params: {width: 8}\n")
    counts = drain(make_settings(project, tls_comfy.url, servers=[{"url": tls_comfy.url, "verify": False}]))
    assert counts["published"] == 1 and counts["failed"] == 0
