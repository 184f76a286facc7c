"""No credential in anything hotfolder writes or prints, and one log line per log record (hotfolder.redact).

Generated secrets go into a server URL's userinfo and query, a bearer token and credential headers; a
reverse proxy on 127.0.0.1 in front of the test ComfyUI refuses some requests the way a misconfigured
proxy does, with an error page quoting the request's Authorization and Cookie headers and a Set-Cookie.
After the jobs ran (one done, one failed) the secret is in no file under the project, in no log line and
not in the output of ``hotfolder check`` and ``hotfolder status``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import re
import shutil
import string
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType, web
from click.testing import CliRunner
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from hotfolder import daemon
from hotfolder.cli import cli
from hotfolder.config import load_settings
from hotfolder.events import JobLog as _JobLog
from hotfolder.log import configure_logging
from hotfolder.redact import MASK, escape_control, redact_data, redact_text, redact_url
from hotfolder.testing import ComfyTestServer
from tests.conftest import EXAMPLES, make_settings

pytestmark = pytest.mark.timeout(120)


def budget(examples: int) -> int:
    """This test's number of generated examples, scaled like the profiles' default of 100 when
    HOTFOLDER_HYPOTHESIS_EXAMPLES asks for a longer hunt (tests/conftest.py)."""
    return max(examples, examples * int(os.environ.get("HOTFOLDER_HYPOTHESIS_EXAMPLES", "0") or 0) // 100)

# -- strategies ------------------------------------------------------------------------------------

TOKEN_CHARS = string.ascii_letters + string.digits + "-._~"


def _secret_like(text: str) -> bool:
    """Long enough and varied enough that finding it in a file cannot be chance."""
    return len(set(text)) >= 4 and any(c.isalpha() for c in text) and any(c.isdigit() for c in text)


SECRETS = st.text(TOKEN_CHARS, min_size=12, max_size=40).filter(_secret_like)
# query parameter names that carry credentials in the wild (AWS, GCS, Azure SAS, OAuth, API keys)
QUERY_NAMES = st.one_of(
    st.sampled_from(["token", "api_key", "apikey", "key", "access_token", "sig", "signature", "X-Amz-Signature",
                     "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature", "password", "auth", "sid",
                     "session_id", "client_secret", "jwt"]),
    st.builds(lambda prefix, suffix: prefix + suffix, st.sampled_from(["", "x_", "X-", "my", "client_", "refresh_"]),
              st.sampled_from(["token", "Token", "TOKEN", "_key", "-Key", "secret", "Secret", "password", "sig"])),
)
HARMLESS = st.dictionaries(st.sampled_from(["v", "mode", "region", "x"]), st.text(string.ascii_lowercase, max_size=6),
                           max_size=2)
# text around a secret in a server's answer: anything but the characters that end a token value
FILLER = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)


# -- redact_url / redact_text on their own ---------------------------------------------------------


@settings(max_examples=budget(150))
@given(secret=SECRETS, name=QUERY_NAMES, other=HARMLESS, where=st.sampled_from(["password", "user", "query", "fragment"]),
       port=st.integers(1, 65535), path=st.sampled_from(["", "/", "/comfy", "/a/b/"]))
@example(secret="s3cretTok3n", name="token", other={}, where="query", port=8188, path="/")
@example(secret="p4ss/w0rd?x", name="token", other={}, where="password", port=8188, path="")
def test_redact_url_hides_credentials_and_keeps_the_server(secret: str, name: str, other: dict[str, str], where: str,
                                                           port: int, path: str) -> None:
    userinfo = {"password": f"hf:{secret}@", "user": f"{secret}@"}.get(where, "")
    params = "&".join(f"{k}={v}" for k, v in other.items())
    if where == "query":
        params = f"{name}={secret}" + (f"&{params}" if params else "")
    url = f"https://{userinfo}gpu1.example:{port}{path}" + (f"?{params}" if params else "")
    if where == "fragment":
        url += f"#{name}={secret}"
    shown = redact_url(url)
    assert secret not in shown
    assert shown.startswith(f"https://gpu1.example:{port}{path}")  # still says which server
    for key, value in other.items():
        assert f"{key}={value}" in shown
    in_text = redact_text(f"ComfyUI at {url} is not reachable; also '{url}' and ({url}).")
    assert secret not in in_text and f"gpu1.example:{port}" in in_text


HEADER_FORMS = [
    "Authorization: Bearer {s}",
    "authorization: bearer {s}",
    "Proxy-Authorization: Basic {s}",
    "Authorization: Token {s}",
    "Cookie: session={s}; theme=dark",
    "Set-Cookie: sid={s}; Path=/; HttpOnly",
    "X-Api-Key: {s}",
    "X-Auth-Token: {s}",
    "access_token={s}&expires=3600",
    '"Authorization": "Bearer {s}"',
    "'set-cookie': 'sid={s}; Path=/'",
    '{{"token": "{s}", "ok": false}}',
    "password: {s}",
]


@settings(max_examples=budget(150))
@given(secret=SECRETS, form=st.sampled_from(HEADER_FORMS), before=FILLER, after=FILLER,
       wrap=st.sampled_from(["raw", "repr", "bytes-repr", "json"]))
@example(secret="abc123def456", form="Authorization: Bearer {s}", before="", after="", wrap="raw")
@example(secret="00000000012A", form='{{"token": "{s}", "ok": false}}', before="", after="", wrap="json")  # found
def test_redact_text_hides_header_and_pair_values_in_any_wrapping(secret: str, form: str, before: str, after: str,
                                                                 wrap: str) -> None:
    assume(secret not in before + after)
    body = f"{before}\r\n{form.format(s=secret)}\r\n{after}"
    text = {"raw": body, "repr": repr(body), "bytes-repr": repr(body.encode("utf-8")),
            "json": json.dumps({"error": body})}[wrap]
    shown = redact_text(text)
    assert secret not in shown and MASK in shown


def test_redact_keeps_ordinary_text_and_names_alone() -> None:
    for text in ["Setting 'max_tokens' = 5 is fine", "sent as a bearer token", "http://gpu1:8188/x?v=2",
                 "node 3 (KSampler), input seed: 42", "job_key=abc1"]:
        assert redact_text(text) == text
    data = {"where": {"key": "servers", "file": "a.yaml"}, "token": "abc", "n": 3, "list": ["Bearer xyz123"]}
    assert redact_data(data) == {"where": {"key": "servers", "file": "a.yaml"}, "token": MASK, "n": 3,
                                 "list": ["Bearer ***"]}


# -- one log record, one line ----------------------------------------------------------------------

NAMES = st.text(st.characters(codec=None, categories=None), min_size=1, max_size=40) | st.sampled_from([
    "a\nb.yaml", "x\r2026-12-03 09:00:00,000 ERROR   hotfolder.engine: forged.yaml", "\x1b[2J\x1b[31mred.yaml",
    "sep\u2028line\u2029para\x85nel.yaml", "rlo\u202egnp.yaml", "undecodable-\udcff.yaml", "tab\tvt\x0bff\x0c.yaml",
])


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger("hotfolder")
    saved = root.handlers[:], root.level, root.propagate
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


@settings(max_examples=budget(100))
@given(name=NAMES, job=NAMES)
@example(name="b\nFAKE LINE.yaml", job="fox")
@example(name="0", job="%")  # found: the job-log prefix was part of the %-format
def test_each_log_record_is_one_line_whatever_the_name(_restore_logging: None, name: str, job: str) -> None:
    assume(redact_text(name) == name)  # a name like "token=x" is shown redacted; compared exactly below
    logger = logging.getLogger("hotfolder.engine")
    for fmt in ("text", "json"):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")  # as a file or a pipe
        configure_logging(0, fmt=fmt, stream=stream, journal=False)
        log = _JobLog(logger, {"file": name, "job": job})
        log.info("claimed as job %s", name)
        log.error("failed: %r", name)
        logger.warning("Cannot read %s", name, extra={"file": name})
        stream.flush()
        lines = raw.getvalue().decode("utf-8").splitlines()
        assert len(lines) == 3, lines  # str.splitlines: also \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029
        for line in lines:
            assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", line)
        if fmt == "json":
            assert json.loads(lines[2])["file"] == name  # the JSON keeps the name exactly
        else:
            assert escape_control(name) in lines[2]


def test_a_traceback_keeps_its_lines_indented(_restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(0, stream=out, journal=False)
    try:
        raise RuntimeError("bad\n2026-12-03 09:00:00,000 INFO    hotfolder.engine: forged")
    except RuntimeError:
        logging.getLogger("hotfolder.test").exception("failed for %s", "a\nb")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("failed for a\\nb") and rest and all(line.startswith("  ") for line in rest)


# -- a job through a proxy that quotes credentials -------------------------------------------------


class EchoProxy:
    """A reverse proxy on 127.0.0.1 in front of the test ComfyUI. It refuses what it is told to (``refuse``:
    path -> status; ``refuse_ws``: WebSocket handshakes; any POST /prompt holding ``proxy-refuses``: 400)
    with an error page that quotes the request's headers and sets a cookie whose value is ``secret``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.refuse: dict[str, int] = {}
        self.refuse_ws = 0
        self.secret = ""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="echo-proxy")

    def start(self) -> EchoProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self.session = ClientSession()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        await self.session.close()
        await self.runner.cleanup()

    def _page(self, request: web.Request, status: int) -> web.Response:
        quoted = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        text = (f"<html><body><h1>{status} Proxy Error</h1><p>Upstream refused the request:</p><pre>\n"
                f"{request.method} {request.path_qs} HTTP/1.1\n{quoted}\n</pre>"
                f"<p>Set-Cookie: proxy_sid={self.secret}</p></body></html>")
        return web.Response(status=status, text=text, headers={"Set-Cookie": f"proxy_sid={self.secret}; Path=/"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            if self.refuse_ws > 0:
                self.refuse_ws -= 1
                return self._page(request, 407)
            return await self._websocket(request)
        body = await request.read()
        status = self.refuse.get(request.path)
        if status is None and request.path == "/prompt" and b"proxy-refuses" in body:
            status = 400
        if status is not None:
            return self._page(request, status)
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with self.session.request(request.method, self.upstream + request.path_qs, data=body,
                                        headers=headers) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data,
                                headers={"Content-Type": resp.headers.get("Content-Type", "application/octet-stream")})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async with self.session.ws_connect(self.upstream + request.path_qs) as up:
            async def pump() -> None:
                async for msg in up:
                    if msg.type == WSMsgType.TEXT:
                        await ws.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await ws.send_bytes(msg.data)
            task = asyncio.ensure_future(pump())
            async for _ in ws:
                pass
            task.cancel()
        return ws


@pytest.fixture
def proxy(comfy: ComfyTestServer) -> Iterator[EchoProxy]:
    server = EchoProxy(comfy.url).start()
    try:
        yield server
    finally:
        server.stop()


PLACES = ["userinfo", "query", "token", "cookie", "api-key"]


def _toml_config(proxy: EchoProxy, secret: str, places: set[str], query_name: str) -> str:
    url = proxy.url.replace("http://", f"http://hf:{secret}@" if "userinfo" in places else "http://")
    if "query" in places:
        url += f"/?{query_name}={secret}&v=2"
    lines = ['inbox = "inbox"', 'outbox = "outbox"', 'templates = "templates"', 'default_template = "invert"',
             "settle_seconds = 0.1", "poll_interval = 0.3", "lost_grace = 2.0", "http_timeout = 5.0",
             "[[servers]]", f'url = "{url}"']
    if "token" in places:
        lines.append(f'token = "{secret}"')
    headers = {"Cookie": f"session={secret}; theme=dark"} if "cookie" in places else {}
    if "api-key" in places:
        headers["X-Api-Key"] = secret
    if headers:
        lines.append("headers = {" + ", ".join(f'"{k}" = "{v}"' for k, v in headers.items()) + "}")
    return "\n".join(lines) + "\n"


def _forms(secret: str) -> list[bytes]:
    """The secret as it could leak: itself, and inside the basic-auth pair."""
    pair = base64.b64encode(f"hf:{secret}".encode()).decode()
    return [secret.encode(), pair.encode()]


def _leaks(text: bytes, forms: list[bytes]) -> bool:
    return any(form in text for form in forms)


@pytest.mark.slow
@settings(max_examples=budget(4))
@given(secret=SECRETS, places=st.sets(st.sampled_from(PLACES), min_size=1), query_name=QUERY_NAMES)
@example(secret="s3cretT0ken-abc", places=set(PLACES), query_name="token")
@example(secret="AKIA0123secretXYZ", places={"query"}, query_name="X-Amz-Signature")
def test_no_credential_in_any_file_log_or_command_output(proxy: EchoProxy, tmp_path: Path, _restore_logging: None,
                                                        secret: str, places: set[str], query_name: str) -> None:
    project = Path(tmp_path / f"p{len(list(tmp_path.iterdir()))}")
    for sub in ("inbox", "outbox", "templates"):
        (project / sub).mkdir(parents=True)
    for name in ("invert.json", "invert.toml"):
        shutil.copy(EXAMPLES / name, project / "templates" / name)
    config = project / "hotfolder.toml"
    config.write_text(_toml_config(proxy, secret, places, query_name), encoding="utf-8")
    proxy.secret, proxy.refuse_ws, proxy.refuse = secret, 1, {}
    (project / "inbox" / "ok.yaml").write_text("params: {width: 8, height: 8}\n")
    (project / "inbox" / "refused.yaml").write_text("params: {width: 8, height: 8, prefix: proxy-refuses/x}\n")
    log = io.StringIO()
    configure_logging(2, stream=log, journal=False)
    counts = daemon.run_daemon(load_settings(config, env={}, cwd=project), once=True)
    assert counts["published"] == 1 and counts["failed"] == 1, log.getvalue()
    proxy.refuse = {"/object_info": 502}
    runner = CliRunner()
    check = runner.invoke(cli, ["--config", str(config), "check"], catch_exceptions=False)
    status = runner.invoke(cli, ["--config", str(config), "status", "--json"], catch_exceptions=False)

    forms = _forms(secret)
    written = [path for path in project.rglob("*") if path.is_file() and path != config]
    assert any(path.name == "ok.json" for path in written)  # the sidecar
    assert any(path.parent.name == "status" for path in written)
    for path in written:
        assert not _leaks(path.read_bytes(), forms), f"the secret is in {path.relative_to(project)}"
    for name, text in (("the log", log.getvalue()), ("check", check.output), ("status", status.output)):
        assert not _leaks(text.encode(), forms), f"the secret is in the output of {name}:\n{text}"

    # what was checked did happen: the proxy's page reached the error file, the refused WebSocket
    # handshake the log, the refused /object_info the check; the server is still named
    error = (project / "inbox" / "failed" / "refused.yaml.error.json").read_text(encoding="utf-8")
    assert "Proxy Error" in error and "Authorization" in error or "Cookie" in error
    assert "WebSocket to" in log.getvalue()
    assert check.exit_code == 1 and "HTTP 502" in check.output, check.output
    assert "127.0.0.1" in check.output and "127.0.0.1" in status.output
    sidecar: dict[str, Any] = json.loads((project / "outbox" / "ok" / "ok.json").read_text())
    assert sidecar["server"].startswith(proxy.url)


def test_a_credential_a_node_shows_is_redacted_in_the_sidecars_ui_values(project: Path, comfy: ComfyTestServer) -> None:
    from hotfolder.daemon import run_daemon

    (project / "templates" / "shows.json").write_text(json.dumps({
        "1": {"class_type": "PreviewAny", "inputs": {"source": "{{ shown }}"}}}))
    (project / "inbox" / "s.yaml").write_text(
        'template: shows\nparams: {shown: "Authorization: Bearer SECRETsk-live-123"}\n')
    counts = run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["files_done"] == 1
    sidecar = json.loads((project / "outbox" / "s" / "s.json").read_text(encoding="utf-8"))
    shown = json.dumps(sidecar["ui_values"])
    assert "Authorization" in shown and "SECRETsk-live-123" not in shown, shown


def test_a_file_named_like_a_credential_is_still_named_in_its_error_file(project: Path, comfy: ComfyTestServer) -> None:
    from hotfolder.daemon import run_daemon

    (project / "inbox" / "api_key=night.yaml").write_text("template: no-such-template\n")
    counts = run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["files_failed"] == 1
    failed = project / "inbox" / "failed"
    assert (failed / "api_key=night.yaml").is_file()
    error = json.loads((failed / "api_key=night.yaml.error.json").read_text(encoding="utf-8"))
    assert error["original_name"] == error["archived_as"] == "api_key=night.yaml", error
