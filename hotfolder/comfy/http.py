"""ComfyUI's HTTP API over one pooled ``requests.Session``, with a timeout on every call.

Failures are sorted by what they mean for a job:

- :class:`~hotfolder.errors.ServerUnavailable`: the request certainly did not reach the server
  (connection refused, connect timeout, DNS). Wait and retry; nothing happened.
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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import urllib3.exceptions

from hotfolder import __version__
from hotfolder.errors import (
    OutcomeUnknown, OutputError, PromptRejected, ServerError, ServerUnavailable, UploadError,
)

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024


def _never_sent(err: requests.RequestException) -> bool:
    """True when the request provably never reached the server."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    cause: BaseException | None = err
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        if isinstance(cause, urllib3.exceptions.MaxRetryError) and cause.reason is not None:
            cause = cause.reason
        else:
            cause = cause.__cause__ or cause.__context__ or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
        seen += 1
    return False


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
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"hotfolder/{__version__}"
        self.session.headers.update(headers or {})
        # The environment (proxies, CA bundle) is read once here, not on every request as requests does
        # by default: that lookup cost more CPU per job than the rest of the HTTP client.
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.session.verify = bundle if verify and bundle else verify
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        url = self.base_url + path
        try:
            return self.session.request(method, url, **kwargs)
        except requests.RequestException as err:
            if idempotent or _never_sent(err):
                raise ServerUnavailable(
                    f"ComfyUI at {self.display_url} is not reachable ({method} {path}: {type(err).__name__}).",
                    hint="Check that ComfyUI is running and the server URL is right; hotfolder keeps retrying.",
                    where={"server": self.display_url},
                ) from err
            raise OutcomeUnknown(
                f"No answer from ComfyUI at {self.display_url} to {method} {path} ({type(err).__name__}).",
                where={"server": self.display_url},
            ) from err

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, idempotent=True, **kwargs)
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
        resp = self._request("POST", "/prompt", idempotent=False, json=body)
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
        self._request("POST", "/interrupt", idempotent=True, json={"prompt_id": prompt_id})

    def delete_pending(self, prompt_id: str) -> None:
        self._request("POST", "/queue", idempotent=True, json={"delete": [prompt_id]})

    def download(self, *, filename: str, subfolder: str, type_: str, dest: Path) -> tuple[int, str]:
        """Stream one output file from ``/view`` into ``dest``; return (size, sha256). Never held in memory."""
        params = {"filename": filename, "subfolder": subfolder, "type": type_}
        resp = self._request("GET", "/view", idempotent=True, params=params, stream=True)
        with resp:
            if resp.status_code != 200:
                raise OutputError(
                    f"ComfyUI at {self.display_url} answered /view for {filename!r} (subfolder {subfolder!r}, "
                    f"type {type_!r}) with HTTP {resp.status_code}.",
                    where={"server": self.display_url, "output": filename},
                )
            digest = hashlib.sha256()
            size = 0
            try:
                with open(dest, "wb") as fh:
                    for chunk in resp.iter_content(CHUNK):
                        fh.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            except requests.RequestException as err:
                raise ServerUnavailable(
                    f"Download of {filename!r} from {self.display_url} was cut off ({type(err).__name__}).",
                    where={"server": self.display_url, "output": filename},
                ) from err
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
        resp = self._request("POST", "/upload/image", idempotent=True, data=body,
                             headers={"Content-Type": body.content_type})
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
    chunk by chunk as ``requests`` sends it; ``len()`` gives the Content-Length."""

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
