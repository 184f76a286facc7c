"""ComfyUI's HTTP API through one pooled ``requests.Session`` per server, with a timeout on every call.

The session is set up once from the environment, as ``requests`` reads it: proxies
(``http_proxy``/``https_proxy``/``no_proxy``; https through a CONNECT tunnel) and the certificates to
trust (:func:`trust`). TLS certificates and host names are verified unless the server is configured
with ``verify = false``. Answers are streamed and read up to a budget (``max_response_size``; a
``/view`` download up to ``max_download_size``, straight to disk).

Failures are sorted by what they mean for a job:

- :class:`~hotfolder.errors.ServerUnavailable`: the request certainly did not reach the server
  (connection refused, connect timeout, DNS, TLS handshake, proxy refusal), or it was a read that can
  simply be asked again. Wait and retry; nothing happened.
- :class:`~hotfolder.errors.OutcomeUnknown`: a POST was sent but no answer came back (read timeout,
  connection dropped, or a 500, which ComfyUI also returns for prompts it queued anyway: PROTOCOL Q13).
  Look in ``/queue`` and ``/history`` before sending again.
- :class:`~hotfolder.errors.PromptRejected`: HTTP 400 with ComfyUI's ``error`` and ``node_errors``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import re
import ssl
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.adapters
import requests.utils
import urllib3.exceptions

from hotfolder.budgets import DEFAULTS, exceeded
from hotfolder.comfy.reach import causes
from hotfolder.errors import (
    OutcomeUnknown,
    OutputError,
    PromptRejected,
    ServerError,
    ServerUnavailable,
    UploadError,
)
from hotfolder.paths import open_regular, write_all
from hotfolder.redact import redact_data, redact_text, redact_url
from hotfolder.version import __version__

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024

POOL_SIZE = 16  # keep-alive connections kept per server; more than this many calls at once open extra ones


class Response:
    """The few things hotfolder reads from an answer that was read to its end."""

    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers: Any) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return loads_answer(self.content)


# A lone surrogate can come as an escape (a high half not followed by a low one, or a low half alone:
# ``"\\ud800"``) or, as json.loads decodes bytes with "surrogatepass", raw (its UTF-8 form ED A0..BF ..;
# in text, the code point, which a str never pairs). An escaped pair (an emoji, ``"\\ud83d\\ude00"``) is no
# lone one. _ESCAPES reads the escapes from the start, as JSON does (every backslash of valid JSON begins an
# escape), so an escaped backslash followed by ``ud800`` is no escape; it matches up to the first lone one.
_ESCAPES = (r"(?:[^\\]++|\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u(?![dD][89a-fA-F])|[^u]))*+"
            r"\\u[dD][89a-fA-F]")
_LONE_ESCAPE: dict[type, re.Pattern[Any]] = {bytes: re.compile(_ESCAPES.encode()), str: re.compile(_ESCAPES)}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_RAW_SURROGATE: dict[type, re.Pattern[Any]] = {bytes: re.compile(rb"\xed[\xa0-\xbf]"), str: _LONE_SURROGATE}


def loads_answer(content: bytes | str) -> Any:
    """A server's JSON answer. A lone surrogate in it (``"\\ud800"``, which UTF-8 cannot carry into a file
    name, log line or sidecar) becomes U+FFFD; pairs are kept. Raises ``ValueError``."""
    data = json.loads(content)
    if has_lone_surrogate(content):
        data = _mend(data)
    return data


def has_lone_surrogate(content: bytes | str) -> bool:
    """Whether the JSON text ``content`` (valid JSON) decodes to a string holding a lone surrogate."""
    kind = type(content)
    return bool(_LONE_ESCAPE[kind].match(content) or _RAW_SURROGATE[kind].search(content))


def _mend(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_mend(item) for item in value]
    if isinstance(value, dict):
        return {_mend(key): _mend(item) for key, item in value.items()}
    return value


def trust(verify: bool) -> bool | str:
    """What a server's certificate is checked against, as ``requests``' ``verify`` takes it: False
    (``verify = false``), the bundle named by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (as requests
    reads them), else OpenSSL's default file or folder (the system's trust store, or the ones
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name), else True (certifi's bundle)."""
    if not verify:
        return False
    named = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if named:
        return named
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.capath):
        if candidate and os.path.exists(candidate):
            return candidate
    return True


def _session(base_url: str, verify: bool, pool_size: int) -> requests.Session:
    """A session for one server, with the environment read once: its proxies and the certificates to trust.
    ``trust_env`` is then off, so no request looks at the environment (or ``~/.netrc``) again."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = trust(verify)
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


#: Failures that happen before a request is sent: no connection (refused, DNS, connect timeout), no proxy,
#: a certificate refused in the handshake. Other TLS errors may come after the request went out.
_NOT_SENT = (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ProxyError, ssl.SSLCertVerificationError)


def _never_sent(err: BaseException) -> bool:
    """Whether ``err`` (from requests) says for certain that the request was never sent."""
    if isinstance(err, ValueError) or not isinstance(err, requests.RequestException):
        return True  # refused before sending: a malformed URL or header, a CA bundle that cannot be read
    return any(isinstance(cause, _NOT_SENT) for cause in causes(err))


def _what(err: BaseException) -> str:
    """The name of what went wrong first behind ``err`` (ConnectionRefusedError, not requests' wrapper)."""
    return type(causes(err)[-1]).__name__


def _tls_failure(err: BaseException) -> BaseException | None:
    """The TLS error behind ``err``, if a TLS handshake failed."""
    return next((cause for cause in causes(err) if isinstance(cause, ssl.SSLError)), None)


class ComfyHTTP:
    """HTTP calls to one ComfyUI server. ``display_url`` is what logs and errors show (no credentials)."""

    def __init__(
        self,
        base_url: str,
        *,
        display_url: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_response_size: int = DEFAULTS.max_response_size,
        max_download_size: int = DEFAULTS.max_download_size,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if not parts.hostname:
            raise ValueError(f"no host in {redact_url(base_url)!r}")
        # requests go to the API's paths on the server's host and port: never with the URL's userinfo
        # (credentials travel in headers) nor its path or query
        self._origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.max_response_size = max_response_size  # bytes of any answer read into memory
        self.max_download_size = max_download_size  # bytes of one file from /view
        self.display_url = display_url or redact_url(self.base_url)
        self.headers = {"User-Agent": f"hotfolder/{__version__}", "Accept-Encoding": "identity"}
        self.headers.update(headers or {})
        if urlsplit(self.base_url).scheme == "https" and not verify:
            logger.warning("TLS certificates of %s are not verified (verify = false).", self.display_url)
            # said once here, in hotfolder's log; urllib3 would print it to stderr for every connection
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.timeout = (connect_timeout, read_timeout)
        self._session = _session(self.base_url, verify, pool_size)
        # what every request shares (headers validated, cookies and hooks set up), prepared once and
        # copied per request: a whole ``Request.prepare()`` cost two thirds of the client's own CPU per call
        self._prepared = requests.Request("GET", self._origin + "/", headers=self.headers).prepare()

    def close(self) -> None:
        self._session.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _unreachable(self, method: str, path: str, err: BaseException) -> ServerUnavailable:
        tls = _tls_failure(err)
        if tls is not None:
            return ServerUnavailable(
                f"TLS with ComfyUI at {self.display_url} failed ({method} {path}): {redact_text(tls)}.",
                hint="If the server uses a private CA, point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its "
                     "certificate (or, only on a trusted network, set verify = false for this server).",
                where={"server": self.display_url},
            )
        return ServerUnavailable(
            f"ComfyUI at {self.display_url} is not reachable ({method} {path}: {_what(err)}).",
            hint="Check that ComfyUI is running and the server URL is right; hotfolder keeps retrying.",
            where={"server": self.display_url},
        )

    def _send(self, method: str, path: str, *, idempotent: bool, body: Any = None,
              headers: dict[str, str] | None = None) -> requests.Response:
        """Send one request and read the status and headers; the caller reads the body (which gives the
        connection back to the pool) or closes the answer. The request is prepared on its own (from
        :attr:`_prepared`, in ``Request.prepare``'s order: method, URL, headers, body) and sent through
        the session's pool: no cookies, no redirects, and none of ``Session.request``'s merging of
        per-request settings (a third of its CPU per call)."""
        try:
            request = self._prepared.copy()
            request.prepare_method(method)
            request.prepare_url(self._origin + path, None)
            if headers:
                request.prepare_headers({**self.headers, **headers})
            request.prepare_body(body, None)
            return self._session.send(request, timeout=self.timeout, stream=True, allow_redirects=False,
                                      verify=self._session.verify, proxies=self._session.proxies, cert=None)
        except (OSError, ValueError) as err:  # requests' errors are OSErrors
            if idempotent or _never_sent(err):
                raise self._unreachable(method, path, err) from err
            raise OutcomeUnknown(
                f"No answer from ComfyUI at {self.display_url} to {method} {path} ({_what(err)}).",
                where={"server": self.display_url},
            ) from err

    def _request(self, method: str, path: str, *, idempotent: bool, json_body: Any = None,
                 body: Any = None, headers: dict[str, str] | None = None) -> Response:
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            headers = {"Content-Type": "application/json", **(headers or {})}
        resp = self._send(method, path, idempotent=idempotent, body=body, headers=headers)
        try:
            content = self._read_bounded(resp, method, path)
        except (OSError, requests.RequestException) as err:
            resp.close()
            if idempotent:
                raise self._unreachable(method, path, err) from err
            raise OutcomeUnknown(
                f"The answer of ComfyUI at {self.display_url} to {method} {path} was cut off ({_what(err)}).",
                where={"server": self.display_url},
            ) from err
        return Response(resp.status_code, content, resp.headers)

    def _read_bounded(self, resp: requests.Response, method: str, path: str) -> bytes:
        """The body of ``resp``, or a :class:`ServerError` naming ``max_response_size`` when it is larger
        (told by its Content-Length, or found reading past the limit; the connection is dropped)."""
        limit = self.max_response_size
        length = resp.headers.get("Content-Length")
        declared = int(length) if length is not None and length.isdigit() else 0
        parts: list[bytes] = []
        size = 0
        if declared <= limit:
            for chunk in resp.iter_content(min(CHUNK, limit + 1)):
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
        if declared > limit or size > limit:
            resp.close()
            raise exceeded(ServerError, f"ComfyUI at {self.display_url} answered {method} {path.split('?')[0]} "
                           f"with more than {limit} bytes", key="max_response_size", limit=limit,
                           where={"server": self.display_url},
                           hint="ComfyUI's answers are far smaller; is a proxy or another service answering at this "
                                "URL?")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def malformed(self, what: str, value: Any, expected: str) -> ServerError:
        """The error for an answer of the server that does not have the shape ComfyUI gives it."""
        shown = json.dumps(value, ensure_ascii=False, default=repr)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        return ServerError(
            f"ComfyUI at {self.display_url} answered {what} with something malformed: {shown} "
            f"({type(value).__name__}; expected {expected}).",
            hint="This is the server's answer, not the scenario's: check that the URL points at ComfyUI itself "
                 "(not a proxy or another service) and that its version and custom nodes are sound; then move "
                 "the file back to inbox/ to run it again.",
            where={"server": self.display_url},
        )

    def _json(self, method: str, path: str) -> Any:
        return self._json_of(self._request(method, path, idempotent=True), method, path)

    def _json_of(self, resp: Response, method: str, path: str) -> Any:
        """The JSON of a 200 answer; a ServerError naming the request for anything else."""
        if resp.status_code != 200:
            raise ServerError(
                f"ComfyUI at {self.display_url} answered {method} {path} with HTTP {resp.status_code}: "
                f"{_quote(resp.text)}.",
                where={"server": self.display_url},
            )
        try:
            return resp.json()
        except ValueError as err:
            raise ServerError(
                f"ComfyUI at {self.display_url} answered {method} {path} with something that is not JSON.",
                where={"server": self.display_url},
            ) from err

    # -- API -------------------------------------------------------------------------------------

    def post_prompt(self, workflow: dict[str, Any], *, prompt_id: str, client_id: str,
                    extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue ``workflow`` under our own ``prompt_id``. Returns ComfyUI's answer (number, node_errors)."""
        body = {"prompt": workflow, "prompt_id": prompt_id, "client_id": client_id,
                "extra_data": dict(extra_data or {})}
        resp = self._request("POST", "/prompt", idempotent=False, json_body=body)
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError:
                return {}
        if resp.status_code == 400:
            try:
                data = redact_data(resp.json())
            except ValueError:
                data = None
            if not isinstance(data, dict):  # a proxy's page, or not ComfyUI's {"error", "node_errors"}
                data = {"error": {"message": redact_text(resp.text).strip()[:500] or "(an empty answer)"}}
            raise PromptRejected(
                "ComfyUI rejected the workflow.", where={"server": self.display_url}, details=data
            )
        if resp.status_code >= 500:
            # ComfyUI sometimes queues a prompt and still answers 500 (PROTOCOL Q13).
            raise OutcomeUnknown(
                f"ComfyUI at {self.display_url} answered POST /prompt with HTTP {resp.status_code}: "
                f"{_quote(resp.text)}.",
                where={"server": self.display_url},
            )
        raise ServerError(
            f"ComfyUI at {self.display_url} answered POST /prompt with HTTP {resp.status_code}.",
            hint="HTTP 401/403 usually means a proxy wants a token or an Origin check failed: set the server's token or headers.",
            where={"server": self.display_url},
        )

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry for ``prompt_id``, or None while it is not there."""
        path = f"/history/{prompt_id}"
        data = self._json("GET", path)
        if not isinstance(data, dict):
            raise self.malformed(f"GET {path}", data, "a mapping of prompt ids to history entries")
        entry = data.get(prompt_id)
        if entry is not None and not isinstance(entry, dict):
            raise self.malformed(f"GET {path}", entry, "a history entry (a mapping)")
        return entry

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running ids, pending ids) from ``/queue``."""
        data = self._json("GET", "/queue")
        if not isinstance(data, dict):
            raise self.malformed("GET /queue", data, "a mapping with queue_running and queue_pending")

        def ids(items: Any) -> set[str]:
            out = set()
            for item in items if isinstance(items, list) else []:
                if isinstance(item, list) and len(item) > 1:
                    out.add(str(item[1]))
            return out
        return ids(data.get("queue_running")), ids(data.get("queue_pending"))

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def object_info(self) -> dict[str, Any]:
        return self._json("GET", "/object_info")

    def node_replacements(self) -> Any:
        """``GET /node_replacements`` (ComfyUI 0.4x) as the server answers it, unchecked (see
        :func:`hotfolder.comfy.object_info.parse_node_replacements`); None for a 404 (an older server)."""
        resp = self._request("GET", "/node_replacements", idempotent=True)
        return None if resp.status_code == 404 else self._json_of(resp, "GET", "/node_replacements")

    def jobs_api(self) -> bool | None:
        """Whether the server has the jobs API (``GET /api/jobs?limit=1``: 200 yes, 404 no); None when
        the answer says neither (a proxy's error page: ask again later)."""
        resp = self._request("GET", "/api/jobs?limit=1", idempotent=True)
        return {200: True, 404: False}.get(resp.status_code)

    def jobs(self, statuses: str) -> list[dict[str, Any]]:
        """``GET /api/jobs?status=<statuses>`` (a comma list, e.g. ``pending,in_progress``): every job in
        those states, in one answer (the list has no limit unless asked)."""
        path = f"/api/jobs?status={statuses}"
        data = self._json("GET", path)
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, list):
            raise self.malformed(f"GET {path}", data, 'a mapping with a "jobs" list')
        return [job for job in jobs if isinstance(job, dict) and isinstance(job.get("id"), str)]

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """The jobs API's view of ``prompt_id`` (``status``: pending, in_progress, completed, failed,
        cancelled), or None when the server does not know it (404)."""
        path = f"/api/jobs/{prompt_id}"
        resp = self._request("GET", path, idempotent=True)
        if resp.status_code == 404:
            return None
        data = self._json_of(resp, "GET", path)
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise self.malformed(f"GET {path}", data, 'a job with a "status"')
        return data

    def cancel_job(self, prompt_id: str) -> bool:
        """``POST /api/jobs/{id}/cancel``: dequeues the prompt or interrupts it if it runs (and nothing
        else). True when the server says it cancelled something."""
        path = f"/api/jobs/{prompt_id}/cancel"
        data = self._json_of(self._request("POST", path, idempotent=True), "POST", path)
        return isinstance(data, dict) and data.get("cancelled") is True

    def interrupt(self, prompt_id: str) -> None:
        self._request("POST", "/interrupt", idempotent=True, json_body={"prompt_id": prompt_id})

    def delete_pending(self, *prompt_ids: str) -> None:
        """``POST /queue {"delete": [...]}``: removes those of the prompts still pending (others are ignored)."""
        self._request("POST", "/queue", idempotent=True, json_body={"delete": list(prompt_ids)})

    def download(self, *, filename: str, subfolder: str, type_: str, dest: str | os.PathLike[str]) -> tuple[int, str]:
        """Stream one output file from ``/view`` into ``dest``; return (size, sha256). Never held in memory."""
        query = urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        with self._send("GET", f"/view?{query}", idempotent=True) as resp:
            if resp.status_code != 200:
                raise OutputError(
                    f"ComfyUI at {self.display_url} answered /view for {filename!r} (subfolder {subfolder!r}, "
                    f"type {type_!r}) with HTTP {resp.status_code}.",
                    hint=("The server's history lists a file that is not in its folder (deleted since, or a custom "
                          "node reported a name it did not write); check that node and the server's output folder."
                          if resp.status_code == 404 else "Check the server's log (or the proxy in front of it)."),
                    where={"server": self.display_url, "output": filename},
                )
            length = resp.headers.get("Content-Length")
            expected = int(length) if length is not None and length.isdigit() else None
            self._check_download(filename, expected or 0)
            try:
                size, digest = self._save(resp, filename, dest)
            except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
                raise ServerUnavailable(
                    f"Download of {filename!r} from {self.display_url} was cut off ({_what(err)}).",
                    where={"server": self.display_url, "output": filename},
                ) from err
        if expected is not None and expected != size:
            raise ServerUnavailable(
                f"Download of {filename!r} from {self.display_url} is incomplete ({size} of {expected} bytes).",
                where={"server": self.display_url, "output": filename},
            )
        return size, digest

    def _save(self, resp: requests.Response, filename: str, dest: str | os.PathLike[str]) -> tuple[int, str]:
        """Write the body of ``resp`` to ``dest`` chunk by chunk, within ``max_download_size``, and fsync it."""
        digest = hashlib.sha256()
        size = 0
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            for chunk in resp.iter_content(CHUNK):
                self._check_download(filename, size + len(chunk))
                write_all(fd, chunk)
                digest.update(chunk)
                size += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        return size, digest.hexdigest()

    def _check_download(self, filename: str, size: int) -> None:
        if size > self.max_download_size:
            raise exceeded(OutputError, f"Output {filename!r} from ComfyUI at {self.display_url} is more than "
                           f"{self.max_download_size} bytes", key="max_download_size", limit=self.max_download_size,
                           where={"server": self.display_url, "output": filename},
                           hint="The job was run; its outputs stay on the server (ComfyUI's output folder).")

    def upload_image(self, path: Path, name: str, *, subfolder: str = "", type_: str = "input",
                     overwrite: bool = False, digest: Any = None) -> dict[str, Any]:
        """Upload the file at ``path`` as ``name`` with ``POST /upload/image`` (PROTOCOL.md §7), streamed
        from disk (never held in memory) through one descriptor opened by
        :func:`hotfolder.paths.open_regular` (no link followed, regular files only). Returns ComfyUI's
        answer ``{"name", "subfolder", "type"}``: for a name that already exists, identical bytes keep
        the name and different bytes get ``name (1).ext`` unless ``overwrite``. ``digest`` (a hashlib
        object) is fed the bytes sent.

        The upload is idempotent by content, so a connection failure is :class:`ServerUnavailable`
        (send it again); a refusal (400: a name or subfolder that escapes the input folder, 413: too
        large) is :class:`~hotfolder.errors.UploadError`.
        """
        fields = {"type": type_, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        try:
            fd, _ = open_regular(path)
        except OSError as err:
            raise UploadError(f"Cannot read {str(path)!r} to upload it: {err.strerror or err}.",
                              where={"server": self.display_url, "path": str(path)}) from err
        try:
            return self._upload(_MultipartFile(fd, name, fields, digest), path, name, subfolder)
        finally:
            os.close(fd)

    def _upload(self, body: _MultipartFile, path: Path, name: str, subfolder: str) -> dict[str, Any]:
        target = f"{subfolder}/{name}" if subfolder else name
        resp = self._request("POST", "/upload/image", idempotent=True, body=body,
                             headers={"Content-Type": body.content_type})
        where = {"server": self.display_url, "path": str(path), "upload": target}
        if resp.status_code == 200:
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or not isinstance(answer.get("name"), str) or not answer["name"]:
                raise UploadError(
                    f"ComfyUI at {self.display_url} answered the upload of {target!r} with {_quote(resp.text)}, "
                    "not the expected {\"name\", \"subfolder\", \"type\"}.",
                    hint="Is this really ComfyUI (or a proxy in front of it)? Check the server URL.", where=where)
            return answer
        if resp.status_code == 413:
            raise UploadError(
                f"ComfyUI at {self.display_url} refused the upload of {str(path)!r} ({body.size} bytes): too large (HTTP 413).",
                hint="ComfyUI accepts uploads up to --max-upload-size (100 MB by default): make the file smaller or "
                     "start ComfyUI with a larger --max-upload-size.", where=where)
        if resp.status_code == 400:
            raise UploadError(
                f"ComfyUI at {self.display_url} refused the upload of {str(path)!r} as {target!r} (HTTP 400"
                + (f": {_quote(resp.text)}" if resp.text.strip() else "") + ").",
                hint="ComfyUI answers 400 when the file name or subfolder would leave its input folder or the form "
                     "has no file; a proxy in front of ComfyUI may also limit uploads.", where=where)
        if resp.status_code in (401, 403):
            raise UploadError(
                f"ComfyUI at {self.display_url} answered POST /upload/image with HTTP {resp.status_code}.",
                hint="A proxy wants a token or an Origin check failed: set the server's token or headers.", where=where)
        if resp.status_code in (502, 503, 504):
            raise ServerUnavailable(
                f"ComfyUI at {self.display_url} is not reachable (POST /upload/image: HTTP {resp.status_code} from a proxy).",
                hint="hotfolder keeps retrying.", where={"server": self.display_url})
        raise UploadError(
            f"ComfyUI at {self.display_url} answered the upload of {str(path)!r} with HTTP {resp.status_code}: "
            f"{_quote(resp.text)}.", where=where)


class _MultipartFile:
    """A ``multipart/form-data`` body with a few text fields and one file (field ``image``), produced
    chunk by chunk as it is sent; ``len()`` gives the Content-Length."""

    def __init__(self, fd: int, filename: str, fields: dict[str, str], digest: Any = None) -> None:
        self.fd = fd  # read with pread from the start on every iteration (a retried request sends it again)
        self.size = os.fstat(fd).st_size
        self.digest = digest
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
            for key, value in fields.items()
        ]
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{safe}"\r\n'
                     f"Content-Type: {mime}\r\n\r\n")
        self.head = "".join(parts).encode("utf-8")
        self.tail = f"\r\n--{boundary}--\r\n".encode()

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        sent = 0
        while sent < self.size and (chunk := os.pread(self.fd, min(CHUNK, self.size - sent), sent)):
            if self.digest is not None:
                self.digest.update(chunk)
            sent += len(chunk)
            yield chunk
        if sent != self.size:  # the file shrank while being sent: never send a short body under a full length
            raise OSError(f"the file changed size while being uploaded ({sent} of {self.size} bytes)")
        yield self.tail


def _quote(text: str, limit: int = 200) -> str:
    """A server's answer for an error message: credentials redacted first (a proxy's error page may quote
    the request's Authorization header), then shortened and quoted."""
    return repr(redact_text(text.strip())[:limit])

