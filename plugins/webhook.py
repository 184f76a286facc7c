"""Webhook: POST a JSON summary of each finished or failed job to a URL, with retries; never fails a job.

Configure it in ``hotfolder.toml``::

    [plugin_config.webhook]
    url = "https://hooks.example.com/hotfolder"     # required (http or https)
    events = ["published", "failed"]              # which events to send (default)
    retries = 5                                    # further attempts after the first (default 5)
    backoff = 1.0                                  # seconds before the first retry, doubled each time
    max_backoff = 60.0                             # longest wait between two attempts
    timeout = 10.0                                 # seconds per request
    headers = {Authorization = "Bearer ..."}       # extra request headers (never logged)

Each summary is one JSON object::

    {"event": "job.finished",             # or "job.failed"
     "status": "finished",                # or "failed"
     "file": "red-fox.yaml", "job_id": "...", "job": "red-fox",
     "outbox": "/srv/outbox/red-fox",     # finished jobs: the published folder
     "prompt_id": "...", "server": "http://gpu1:8188", "template": "txt2img", "params": {...},
     "outputs": [{"file": "x.png", "kind": "image", "size": 123, "sha256": "..."}],
     "error": {"message": "...", "hint": "...", "stage": "...", "where": {...}},   # failed jobs
     "hotfolder_version": "0.1.0", "sent_at": "2026-11-28T08:00:00Z"}

A failed *file* (unreadable scenario) has ``"job": null``. Requests are sent in order by one
background thread, so a slow or dead receiver never holds up a job; a 2xx answer is success, 408, 429
and 5xx answers and network errors are retried with exponential backoff, other answers are given up at
once. What is given up is logged as an error. At exit, hotfolder waits up to ``timeout`` seconds for
summaries still queued.
"""

from __future__ import annotations

import atexit
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from hotfolder import __version__, get_plugin_logger, hookimpl
from hotfolder.plugins import plugin_config
from hotfolder.redact import redact_url

logger = get_plugin_logger(__name__)

NAME = "webhook"
DEFAULT_EVENTS = ("published", "failed")
KEYS = {"url", "events", "retries", "backoff", "max_backoff", "timeout", "headers"}
RETRY_STATUS = {408, 429}
QUEUE_LIMIT = 1000


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    events: tuple[str, ...] = DEFAULT_EVENTS
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 10.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


def read_config(settings: Any) -> WebhookConfig | None:
    """The webhook's configuration, or ``None`` when it has none; ``ValueError`` when it is wrong."""
    raw = plugin_config(settings, NAME)
    if not raw:
        return None
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ValueError(f"[plugin_config.webhook] has unknown key(s) {', '.join(map(repr, unknown))}")
    url = raw.get("url")
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        raise ValueError('[plugin_config.webhook] needs url = "http(s)://host[:port]/path", not '
                         + repr(redact_url(url)))
    events = raw.get("events", list(DEFAULT_EVENTS))
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ValueError("[plugin_config.webhook] events must be a list of event kinds")
    numbers = {}
    for key, default in (("retries", 5), ("backoff", 1.0), ("max_backoff", 60.0), ("timeout", 10.0)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1e6:
            raise ValueError(f"[plugin_config.webhook] {key} must be a number from 0 to 1000000, not {value!r}")
        numbers[key] = value
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("[plugin_config.webhook] headers must be a table of strings")
    return WebhookConfig(
        url=url, events=tuple(events), retries=int(numbers["retries"]), backoff=float(numbers["backoff"]),
        max_backoff=float(numbers["max_backoff"]), timeout=float(numbers["timeout"]) or 10.0,
        headers=tuple(sorted(headers.items())),
    )


@hookimpl
def check_settings(settings):
    read_config(settings)  # a ValueError here stops hotfolder from starting, with its message


@hookimpl
def track_event(event, settings):
    config = read_config(settings)
    if config is None or event.kind not in config.events:
        return
    _sender(config).send(summarize(event))


def summarize(event: Any) -> dict[str, Any]:
    """The JSON summary of a ``published`` or ``failed`` event (other kinds: the event's fields)."""
    status = {"published": "finished", "failed": "failed"}.get(event.kind, event.kind)
    body: dict[str, Any] = {
        "event": f"job.{status}",
        "status": status,
        "file": event.file,
        "job_id": event.job_id,
        "job": event.job,
    }
    if event.kind == "published":
        folder = Path(event.path)
        body["outbox"] = str(folder)
        sidecar = _read_sidecar(folder)
        body["prompt_id"] = sidecar.get("prompt_id")
        body["server"] = sidecar.get("server")
        body["template"] = (sidecar.get("template") or {}).get("name")
        body["params"] = sidecar.get("params") or {}
        body["outputs"] = [
            {k: out.get(k) for k in ("file", "kind", "size", "sha256")} for out in sidecar.get("outputs") or []
        ]
    elif event.kind == "failed":
        error = event.error or {}
        body["error"] = {k: error[k] for k in ("message", "hint", "stage", "error", "where") if k in error}
    else:
        body["detail"] = event.detail
    body["hotfolder_version"] = __version__
    body["sent_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return body


def _read_sidecar(folder: Path) -> dict[str, Any]:
    for path in (folder / f"{folder.name}.json", *sorted(folder.glob("*.json"))):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "job_key" in data:
            return data
    return {}


# --------------------------------------------------------------------------------------------------
# delivery


class Sender:
    """Delivers summaries to one URL in order, from one daemon thread, with retries and backoff."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.delivered = 0
        self.given_up = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_LIMIT)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._session = requests.Session()
        self._session.headers.update({"User-Agent": f"hotfolder/{__version__} webhook", **dict(config.headers)})
        self._thread = threading.Thread(target=self._run, name="hotfolder-webhook", daemon=True)
        self._thread.start()

    def send(self, body: dict[str, Any]) -> None:
        """Queue ``body``; returns at once. A full queue drops it with an error in the log."""
        with self._idle:
            self._busy += 1
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._finished(given_up=True)
            logger.error("queue full (%d); dropped the summary of %s %s",
                         QUEUE_LIMIT, body.get("file"), body.get("job"))

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``, default the request timeout), then stop the thread."""
        self.flush(self.config.timeout if timeout is None else timeout)
        self._stop.set()
        self._queue.put(None)
        self._thread.join(5.0)
        self._session.close()

    def _finished(self, *, given_up: bool) -> None:
        with self._idle:
            if given_up:
                self.given_up += 1
            else:
                self.delivered += 1
            self._busy -= 1
            self._idle.notify_all()

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            self._finished(given_up=not self._deliver(body))

    def _deliver(self, body: dict[str, Any]) -> bool:
        config = self.config
        what = f"{body.get('event')} of {body.get('file')} {body.get('job') or ''}".rstrip()
        delay = config.backoff
        for attempt in range(config.retries + 1):
            if attempt:
                if self._stop.wait(min(delay, config.max_backoff)):
                    logger.error("stopping: gave up sending %s to %s", what, _safe(config.url))
                    return False
                delay *= 2
            try:
                response = self._session.post(config.url, json=body, timeout=config.timeout)
            except requests.RequestException as err:
                problem = f"{type(err).__name__}"
            else:
                if 200 <= response.status_code < 300:
                    logger.debug("sent %s to %s", what, _safe(config.url))
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code not in RETRY_STATUS and response.status_code < 500:
                    logger.error("%s answered %s to %s; not retried", _safe(config.url), problem, what)
                    return False
            if attempt < config.retries:
                logger.warning("sending %s to %s failed (%s); retrying", what, _safe(config.url), problem)
        logger.error("gave up sending %s to %s after %d attempt(s)", what, _safe(config.url), config.retries + 1)
        return False


_senders: dict[WebhookConfig, Sender] = {}
_senders_lock = threading.Lock()


def _sender(config: WebhookConfig) -> Sender:
    with _senders_lock:
        sender = _senders.get(config)
        if sender is None:
            sender = _senders[config] = Sender(config)
        return sender


def senders() -> list[Sender]:
    """The running senders (one per configuration), for tests and shutdown."""
    with _senders_lock:
        return list(_senders.values())


def close_all(timeout: float | None = None) -> None:
    """Flush and stop every sender (also run at interpreter exit)."""
    with _senders_lock:
        running = list(_senders.values())
        _senders.clear()
    for sender in running:
        sender.close(timeout)


atexit.register(close_all)


def _safe(url: str) -> str:
    """The URL for the log: no credentials, no query or fragment (tokens often travel there; hotfolder's
    redaction of credential-named parameters comes on top, for a URL without a query)."""
    return redact_url(url.split("?", 1)[0].split("#", 1)[0])
