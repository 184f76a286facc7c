"""ComfyUI's HTTP API over one urllib3 connection pool per server, with a timeout on every call.

urllib3 (the transport under ``requests``) is used directly: ``requests`` spent about 0.9 ms of CPU per
call on session, cookie and hook machinery that a ComfyUI client never uses, three times what the
whole urllib3 call costs, and at hundreds of jobs a second that was a fifth of hotfolder's CPU. The
environment is read once: proxies (``http_proxy``/``https_proxy``/``no_proxy``) and a CA bundle
(``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE``; otherwise the system's trust store).

Failures are sorted by what they mean for a job:

- :class:`~hotfolder.errors.ServerUnavailable`: the request certainly did not reach the server
  (connection refused, connect timeout, DNS, TLS handshake). Wait and retry; nothing happened.
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
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
import urllib3.exceptions as u3

from hotfolder import __version__
from hotfolder.errors import (
    OutcomeUnknown, OutputError, PromptRejected, ServerError, ServerUnavailable, UploadError,
)

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024

# Raised by urllib3 when the request provably never left: no connection, or no TLS session.
_NEVER_SENT = (u3.NewConnectionError, u3.ConnectTimeoutError, u3.SSLError, u3.ProxyError,
               u3.LocationParseError, ConnectionRefusedError)


class Response:
    """The few things hotfolder reads from an answer (a small, fully read urllib3 response)."""

    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers: Any) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def ca_bundle() -> str | None:
    """The CA bundle the environment names (as ``requests`` and curl read it), or None for the system's."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or os.environ.get("SSL_CERT_FILE") or None)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment asks for to reach ``url`` (``no_proxy`` honoured), or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.display_url = display_url or self.base_url
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.headers = {"User-Agent": f"hotfolder/{__version__}", "Accept-Encoding": "identity"}
        self.headers.update(headers or {})
        tls: dict[str, Any] = {}
        if urlsplit(self.base_url).scheme == "https":
            if verify:
                bundle = ca_bundle()
                tls = {"cert_reqs": "CERT_REQUIRED", **({"ca_certs": bundle} if bundle else {})}
            else:
                logger.warning("TLS certificates of %s are not verified (verify = false).", self.display_url)
                urllib3.disable_warnings(u3.InsecureRequestWarning)  # said once above, not on every call
                tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        options: dict[str, Any] = {"num_pools": 2, "maxsize": 16, "block": False, "retries": False, **tls}
        proxy = _proxy_for(self.base_url)
        self._manager: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options))
        # Without a proxy, requests go straight to the server's pool with a path (the cheapest call);
        # through a proxy, urllib3 wants the whole URL.
        self._pool = None if proxy else self._manager.connection_from_url(self.base_url)

    def close(self) -> None:
        self._manager.clear()

    # -- plumbing --------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, idempotent: bool, body: Any = None,
              headers: dict[str, str] | None = None, stream: bool = False) -> Any:
        """One call; returns the urllib3 response (read fully unless ``stream``)."""
        all_headers = {**self.headers, **headers} if headers else self.headers
        try:
            if self._pool is not None:
                return self._pool.urlopen(method, path, body=body, headers=all_headers, timeout=self.timeout,
                                          retries=False, redirect=False, preload_content=not stream,
                                          assert_same_host=False)
            return self._manager.urlopen(method, self.base_url + path, body=body, headers=all_headers,
                                         timeout=self.timeout, retries=False, redirect=False,
                                         preload_content=not stream)
        except (u3.HTTPError, OSError) as err:
            if isinstance(err, u3.SSLError):
                raise ServerUnavailable(
                    f"TLS with ComfyUI at {self.display_url} failed ({method} {path}): {err}.",
                    hint="If the server uses a private CA, point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its "
                         "certificate (or, only on a trusted network, set verify = false for this server).",
                    where={"server": self.display_url},
                ) from err
            if idempotent or isinstance(err, _NEVER_SENT):
                raise ServerUnavailable(
                    f"ComfyUI at {self.display_url} is not reachable ({method} {path}: {type(err).__name__}).",
                    hint="Check that ComfyUI is running and the server URL is right; hotfolder keeps retrying.",
                    where={"server": self.display_url},
                ) from err
            raise OutcomeUnknown(
                f"No answer from ComfyUI at {self.display_url} to {method} {path} ({type(err).__name__}).",
                where={"server": self.display_url},
            ) from err

    def _request(self, method: str, path: str, *, idempotent: bool, json_body: Any = None,
                 body: Any = None, headers: dict[str, str] | None = None) -> Response:
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            headers = {"Content-Type": "application/json", **(headers or {})}
        resp = self._send(method, path, idempotent=idempotent, body=body, headers=headers)
        return Response(resp.status, resp.data, resp.headers)

    def _json(self, method: str, path: str) -> Any:
        resp = self._request(method, path, idempotent=True)
        if resp.status_code != 200:
            raise ServerError(
                f"ComfyUI at {self.display_url} answered {method} {path} with HTTP {resp.status_code}: "
                f"{resp.text[:200]!r}.",
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
                data = resp.json()
            except ValueError:
                data = {"error": {"message": resp.text[:500]}}
            raise PromptRejected(
                "ComfyUI rejected the workflow.", where={"server": self.display_url}, details=data
            )
        if resp.status_code >= 500:
            # ComfyUI sometimes queues a prompt and still answers 500 (PROTOCOL Q13).
            raise OutcomeUnknown(
                f"ComfyUI at {self.display_url} answered POST /prompt with HTTP {resp.status_code}: "
                f"{resp.text.strip()[:200]!r}.",
                where={"server": self.display_url},
            )
        raise ServerError(
            f"ComfyUI at {self.display_url} answered POST /prompt with HTTP {resp.status_code}.",
            hint="HTTP 401/403 usually means a proxy wants a token or an Origin check failed: set the server's token or headers.",
            where={"server": self.display_url},
        )

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry for ``prompt_id``, or None while it is not there."""
        data = self._json("GET", f"/history/{prompt_id}")
        if isinstance(data, dict):
            entry = data.get(prompt_id)
            if isinstance(entry, dict):
                return entry
        return None

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running ids, pending ids) from ``/queue``."""
        data = self._json("GET", "/queue")
        def ids(items: Any) -> set[str]:
            out = set()
            for item in items or []:
                if isinstance(item, list) and len(item) > 1:
                    out.add(str(item[1]))
            return out
        return ids(data.get("queue_running")), ids(data.get("queue_pending"))

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def object_info(self) -> dict[str, Any]:
        return self._json("GET", "/object_info")

    def interrupt(self, prompt_id: str) -> None:
        self._request("POST", "/interrupt", idempotent=True, json_body={"prompt_id": prompt_id})

    def delete_pending(self, prompt_id: str) -> None:
        self._request("POST", "/queue", idempotent=True, json_body={"delete": [prompt_id]})

    def download(self, *, filename: str, subfolder: str, type_: str, dest: Path) -> tuple[int, str]:
        """Stream one output file from ``/view`` into ``dest``; return (size, sha256). Never held in memory."""
        query = urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        resp = self._send("GET", f"/view?{query}", idempotent=True, stream=True)
        try:
            if resp.status != 200:
                raise OutputError(
                    f"ComfyUI at {self.display_url} answered /view for {filename!r} (subfolder {subfolder!r}, "
                    f"type {type_!r}) with HTTP {resp.status}.",
                    where={"server": self.display_url, "output": filename},
                )
            digest = hashlib.sha256()
            size = 0
            try:
                with open(dest, "wb") as fh:
                    for chunk in resp.stream(CHUNK):
                        fh.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            except (u3.HTTPError, ConnectionError, TimeoutError) as err:
                raise ServerUnavailable(
                    f"Download of {filename!r} from {self.display_url} was cut off ({type(err).__name__}).",
                    where={"server": self.display_url, "output": filename},
                ) from err
        finally:
            resp.release_conn()
        expected = resp.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and int(expected) != size:
            raise ServerUnavailable(
                f"Download of {filename!r} from {self.display_url} is incomplete ({size} of {expected} bytes).",
                where={"server": self.display_url, "output": filename},
            )
        return size, digest.hexdigest()

    def upload_image(self, path: Path, name: str, *, subfolder: str = "", type_: str = "input",
                     overwrite: bool = False, digest: Any = None) -> dict[str, Any]:
        """Upload the file at ``path`` as ``name`` with ``POST /upload/image`` (PROTOCOL.md §7), streamed
        from disk (never held in memory). Returns ComfyUI's answer ``{"name", "subfolder", "type"}``:
        for a name that already exists, identical bytes keep the name and different bytes get
        ``name (1).ext`` unless ``overwrite``. ``digest`` (a hashlib object) is fed the bytes sent.

        The upload is idempotent by content, so a connection failure is :class:`ServerUnavailable`
        (send it again); a refusal (400: a name or subfolder that escapes the input folder, 413: too
        large) is :class:`~hotfolder.errors.UploadError`.
        """
        fields = {"type": type_, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        try:
            body = _MultipartFile(path, name, fields, digest)
        except OSError as err:
            raise UploadError(f"Cannot read {str(path)!r} to upload it: {err.strerror or err}.",
                              where={"server": self.display_url, "path": str(path)}) from err
        target = f"{subfolder}/{name}" if subfolder else name
        resp = self._request("POST", "/upload/image", idempotent=True, body=body,
                             headers={"Content-Type": body.content_type, "Content-Length": str(len(body))})
        where = {"server": self.display_url, "path": str(path), "upload": target}
        if resp.status_code == 200:
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or not isinstance(answer.get("name"), str) or not answer["name"]:
                raise UploadError(
                    f"ComfyUI at {self.display_url} answered the upload of {target!r} with {resp.text[:200]!r}, "
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
                + (f": {resp.text.strip()[:200]!r}" if resp.text.strip() else "") + ").",
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
            f"{resp.text.strip()[:200]!r}.", where=where)


class _MultipartFile:
    """A ``multipart/form-data`` body with a few text fields and one file (field ``image``), produced
    chunk by chunk as it is sent; ``len()`` gives the Content-Length."""

    def __init__(self, path: Path, filename: str, fields: dict[str, str], digest: Any = None) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
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
        with open(self.path, "rb") as fh:
            while sent < self.size and (chunk := fh.read(min(CHUNK, self.size - sent))):
                if self.digest is not None:
                    self.digest.update(chunk)
                sent += len(chunk)
                yield chunk
        if sent != self.size:  # the file shrank while being sent: never send a short body under a full length
            raise OSError(f"{self.path} changed size while being uploaded ({sent} of {self.size} bytes)")
        yield self.tail


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)
