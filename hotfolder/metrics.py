"""Prometheus metrics (optional: ``pip install 'hotfolder[metrics]'``). The only module that imports
prometheus-client.

:class:`Metrics` keeps its own :class:`~prometheus_client.CollectorRegistry` (nothing global, so tests and
reloads never collide) and is fed the pipeline's events by :meth:`Metrics.observe` (an ``Engine``
listener). Gauges (waiting and running jobs, server up, server queue) are read from a
:class:`~hotfolder.status.StatusBoard` at scrape time, so the metrics and ``hotfolder status`` can never
disagree; WebSocket reconnects are read from counters the clients already keep
(:meth:`Metrics.watch_reconnects`). :func:`start_metrics_server` serves ``/metrics`` on a loopback address
only.

Metrics:

* ``hotfolder_jobs_total{outcome}``: jobs finished, ``published`` or ``failed``;
* ``hotfolder_files_total{outcome}``: input files archived, ``done`` or ``failed``;
* ``hotfolder_job_duration_seconds{outcome}``: from the file's claim to the job published or failed;
* ``hotfolder_stage_duration_seconds{stage}``: ``prepare`` (claim to rendered, per file), ``wait``
  (rendered to submitted: waiting for a free place on a server), ``queued`` (submitted to the first
  progress: ComfyUI's own queue), ``run`` (first progress, or the submission when the server sent none,
  to published: running, downloading, publishing);
* ``hotfolder_resubmissions_total{server}``: prompts a server lost and hotfolder submitted again
  (``resubmitted`` events);
* ``hotfolder_websocket_reconnects_total{server}``;
* ``hotfolder_jobs_waiting``, ``hotfolder_jobs_running{server}``, ``hotfolder_server_up{server}``,
  ``hotfolder_server_queue{server}`` (gauges, from the status board).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hotfolder import events
from hotfolder.errors import ConfigError

if TYPE_CHECKING:
    from hotfolder.status import StatusBoard

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError:  # the optional extra is not installed
    prometheus_client = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
STAGES = ("prepare", "wait", "queued", "run")


def available() -> bool:
    """True if prometheus-client is installed."""
    return prometheus_client is not None


def require() -> None:
    """Raise :class:`ConfigError` unless prometheus-client is installed."""
    if prometheus_client is None:
        raise ConfigError(
            "Metrics are enabled (metrics_port is set) but prometheus-client is not installed.",
            hint="Install it with: pip install 'hotfolder[metrics]' (or remove metrics_port from hotfolder.toml).",
        )


class Metrics:
    """hotfolder's metrics on a private registry. Thread-safe (prometheus-client's types are)."""

    def __init__(self, *, board: StatusBoard | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        require()
        pc = prometheus_client
        self.board = board
        self.clock = clock
        self.registry = pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = pc.Counter("hotfolder_jobs", "Jobs finished, by outcome (published or failed).",
                               ["outcome"], registry=r)
        self.files = pc.Counter("hotfolder_files", "Input files archived, by outcome (done or failed).",
                                ["outcome"], registry=r)
        self.job_seconds = pc.Histogram(
            "hotfolder_job_duration_seconds", "Seconds from the claim of a job's file to the job published or failed.",
            ["outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.stage_seconds = pc.Histogram(
            "hotfolder_stage_duration_seconds",
            "Seconds per stage: prepare (claim to rendered), wait (to submitted), queued (to first progress), "
            "run (to published).", ["stage"], buckets=DURATION_BUCKETS, registry=r)
        self.resubmissions = pc.Counter("hotfolder_resubmissions", "Prompts a server lost and hotfolder submitted again.",
                                        ["server"], registry=r)
        for outcome in ("published", "failed"):
            self.jobs.labels(outcome)
            self.job_seconds.labels(outcome)
        for outcome in ("done", "failed"):
            self.files.labels(outcome)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        self._lock = threading.Lock()
        self._claimed: dict[str, float] = {}  # job_id -> when the file was claimed
        self._rendered: dict[str, float] = {}  # job_id -> when it was rendered
        self._submitted: dict[tuple[str, str], float] = {}
        self._started: dict[tuple[str, str], float] = {}  # first progress
        self._finished: set[tuple[str, str]] = set()  # jobs published or failed, until their file is archived
        self._reconnects: dict[str, Callable[[], int]] = {}
        r.register(_LiveCollector(self))

    # -- feeding ---------------------------------------------------------------------------------

    def __call__(self, event: events.Event) -> None:
        self.observe(event)

    def observe(self, event: events.Event) -> None:
        """Take one :mod:`hotfolder.events` event."""
        kind, job_id, job = event.kind, event.job_id, event.job
        now = self.clock()
        key = (job_id, job or "")
        with self._lock:
            if isinstance(event, events.Claimed):
                self._claimed[job_id] = now
            elif isinstance(event, events.Rendered):
                self._rendered[job_id] = now
                if job_id in self._claimed:
                    self.stage_seconds.labels("prepare").observe(now - self._claimed[job_id])
            elif isinstance(event, events.Submitted) and job:
                if key not in self._submitted and job_id in self._rendered:  # the first submission only
                    self.stage_seconds.labels("wait").observe(now - self._rendered[job_id])
                self._submitted[key] = now
                self._started.pop(key, None)
            elif isinstance(event, events.Progress) and job:
                if key not in self._started:
                    self._started[key] = now
                    if key in self._submitted:
                        self.stage_seconds.labels("queued").observe(now - self._submitted[key])
            elif isinstance(event, events.Resubmitted):
                self.resubmissions.labels(str(event.server or "")).inc()
            elif isinstance(event, (events.Published, events.Failed)) and job:
                outcome = kind
                self._finished.add(key)
                self.jobs.labels(outcome).inc()
                if job_id in self._claimed:
                    self.job_seconds.labels(outcome).observe(now - self._claimed[job_id])
                start = self._started.pop(key, None) or self._submitted.get(key)
                if kind == "published" and start is not None:
                    self.stage_seconds.labels("run").observe(now - start)
                self._submitted.pop(key, None)
            elif isinstance(event, events.Archived):
                self.files.labels("failed" if event.failed else "done").inc()
                # jobs that failed without a "failed" event (their workflow did not render) are listed
                # in the file's error document
                error = event.error if isinstance(event.error, dict) else {}
                for entry in error.get("jobs") or []:
                    if (isinstance(entry, dict) and entry.get("state") == "failed"
                            and (job_id, str(entry.get("name"))) not in self._finished):
                        self.jobs.labels("failed").inc()
                for k in [k for k in self._finished if k[0] == job_id]:
                    self._finished.discard(k)
                self._claimed.pop(job_id, None)
                self._rendered.pop(job_id, None)
                for k in [k for k in self._submitted if k[0] == job_id]:
                    del self._submitted[k]
                for k in [k for k in self._started if k[0] == job_id]:
                    del self._started[k]

    def watch_reconnects(self, server: str, read: Callable[[], int]) -> None:
        """Report ``read()`` (e.g. ``lambda: client.stream.reconnects``) as the server's reconnect count."""
        with self._lock:
            self._reconnects[server] = read

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes (what ``/metrics`` serves)."""
        return prometheus_client.generate_latest(self.registry)


class _LiveCollector:
    """Values read at scrape time: gauges from the status board, reconnect counters from the clients."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # names are not known before a scrape (they depend on the servers)

    def collect(self) -> Iterator[Any]:
        with self.metrics._lock:
            sources = dict(self.metrics._reconnects)
        reconnects = CounterMetricFamily("hotfolder_websocket_reconnects", "WebSocket reconnects to each server.",
                                         labels=["server"])
        for server, read in sorted(sources.items()):
            try:
                reconnects.add_metric([server], float(read()))
            except Exception:  # noqa: BLE001 - a broken source must not break the scrape
                logger.debug("reconnect counter of %s unreadable", server, exc_info=True)
        yield reconnects
        board = self.metrics.board
        if board is None:
            return
        snap = board.snapshot()
        yield GaugeMetricFamily("hotfolder_jobs_waiting", "Jobs claimed but not yet submitted to a server.",
                                value=float(snap.get("waiting") or 0))
        running = GaugeMetricFamily("hotfolder_jobs_running",
                                    "Jobs submitted to a server and not finished (queued there or running).",
                                    labels=["server"])
        up = GaugeMetricFamily("hotfolder_server_up", "1 if the server answers, 0 if not.", labels=["server"])
        queue = GaugeMetricFamily("hotfolder_server_queue", "Prompts in the server's queue (all clients).",
                                  labels=["server"])
        counted = 0
        for server in snap.get("servers") or []:
            running.add_metric([server["name"]], float(server.get("running") or 0))
            counted += int(server.get("running") or 0)
            if server.get("up") is not None:
                up.add_metric([server["name"]], 1.0 if server["up"] else 0.0)
            if server.get("queue") is not None:
                queue.add_metric([server["name"]], float(server["queue"]))
        unknown = len(snap.get("running") or []) - counted
        if unknown > 0:  # jobs on a server the board was not told about
            running.add_metric([""], float(unknown))
        yield running
        yield up
        yield queue


# -- the HTTP endpoint ---------------------------------------------------------------------------


def _loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("metrics: " + format, *args)


class MetricsServer:
    """``/metrics`` over HTTP on a loopback address, in a background thread; :meth:`close` stops it."""

    def __init__(self, metrics: Metrics, port: int, host: str) -> None:
        app = prometheus_client.make_wsgi_app(metrics.registry)
        family = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][0]
        server_class = _Server6 if family == socket.AF_INET6 else _Server
        try:
            self._httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        except OSError as err:
            raise ConfigError(f"Cannot serve metrics on {host}:{port}: {err.strerror}.",
                              hint="Choose another metrics_port, or 0 for any free port.") from err
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)


def start_metrics_server(port: int, host: str = "127.0.0.1", *, metrics: Metrics) -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics``; ``port`` 0 picks a free port.

    Only loopback addresses are accepted: the endpoint has no authentication. Scrape it from the same
    machine, or put a reverse proxy with authentication in front of it.
    """
    require()
    if not _loopback(host):
        raise ConfigError(
            f"Metrics host {host!r} is not a loopback address.",
            hint="The metrics endpoint has no authentication; bind it to 127.0.0.1 or ::1 and scrape it "
                 "locally or through an authenticating proxy.",
        )
    server = MetricsServer(metrics, port, host)
    logger.info("Metrics at %s", server.url)
    return server
