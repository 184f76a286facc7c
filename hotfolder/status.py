"""What the daemon is doing, for ``hotfolder status``, sd_notify ``STATUS=`` and scripts.

:class:`StatusBoard` listens to the engine's events (it is an ``Engine`` listener) and to server state
updates, and keeps a small picture: jobs on servers with their progress, how many wait, each server's
state, the failures of the last hour, counts. :mod:`hotfolder.status_file` writes that picture to
``inbox/.hotfolder/status/<instance_id>.json`` and reads it back; :mod:`hotfolder.status_report` turns
it into what ``hotfolder status`` prints.

The file (``version`` 1)::

    {"version": 1, "state": "running", "paused": null, "pid": 123, "host": "render1", "instance": "render1",
     "started": "...Z", "updated": "...Z", "updated_unix": 1760000000.0, "interval": 2.0,
     "summary": "1 running, 3 waiting", "waiting": 3, "waiting_files": [{"file", "jobs", "since"}],
     "running": [{"file", "job", "job_id", "server", "prompt_id", "state", "server_state",
                  "queue_position", "node", "value", "max", "percent", "since", "progress_at"}],
     "servers": [{"name", "url", "up", "queue", "running", "since"}],
     "failures": [{"file", "job", "job_id", "message", "time"}],
     "counts": {"published", "failed", "files_done", "files_failed"}}

``state`` is hotfolder's own view (``queued`` until progress arrives, then ``running``).
``server_state`` is what the server's jobs API says (``pending`` or ``in_progress``; null on a server
without it, before the first answer, or when the prompt is no longer queued or running there), and
``queue_position`` a pending prompt's place in the server's queue (1 = next to start), else null.
``paused`` is when submitting was paused (``inbox/PAUSE``, see :mod:`hotfolder.engine.pause`), or null;
``intake_paused`` (not shown above) why a full or read-only filesystem pauses intake, or null.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hotfolder import events

STATUS_DIR = "status"  # inbox/.hotfolder/status/<instance_id>.json
VERSION = 1
FAILURE_WINDOW = 3600.0  # failures shown: the last hour
MAX_FAILURES = 50  # at most this many, newest first, so the file stays small
MAX_WAITING_FILES = 20


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@dataclass
class _Job:
    file: str
    job: str
    job_id: str
    since: float
    server: str | None = None
    prompt_id: str | None = None
    state: str = "queued"  # queued on the server; running once progress arrives
    node: str | None = None
    value: float | None = None
    max: float | None = None
    progress_at: float | None = None


@dataclass
class _File:
    file: str
    job_id: str
    since: float
    jobs: int | None = None  # None until rendered
    started: set[str] = field(default_factory=set)  # jobs submitted or finished
    seen_submit: bool = False  # known to be past rendering (a resumed file)

    @property
    def waiting(self) -> int:
        if self.jobs is None:
            return 0 if self.seen_submit else 1  # still being parsed: counts as one
        return max(0, self.jobs - len(self.started))


@dataclass
class _Server:
    name: str
    url: str
    up: bool | None = None  # None: not known yet
    queue: int | None = None
    since: float | None = None
    jobs: dict[str, tuple[str, int | None]] | None = None  # its jobs API's in-flight prompts, if known
    jobs_until: float = 0.0  # ... believed until then


class StatusBoard:
    """Thread-safe picture of the daemon, fed by pipeline events (:meth:`__call__`) and
    :meth:`server_state`. ``clock`` gives wall-clock seconds (tests pass their own)."""

    def __init__(self, *, servers: Iterable[tuple[str, str]] = (), instance: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.instance = instance
        self.started = clock()
        self.state = "starting"
        self.paused: str | None = None  # why intake is paused (a full or read-only filesystem), if it is
        self.submit_paused: float | None = None  # when submitting was paused (inbox/PAUSE), if it is
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._servers: dict[str, _Server] = {name: _Server(name, url) for name, url in servers}
        self._failures: list[dict[str, Any]] = []
        self.counts = {"published": 0, "failed": 0, "files_done": 0, "files_failed": 0}
        self.version = 0  # bumped on every change

    # -- feeding ---------------------------------------------------------------------------------

    def __call__(self, event: events.Event) -> None:
        """Engine listener: takes an :mod:`hotfolder.events` event."""
        self.observe(event)

    def observe(self, event: events.Event) -> None:
        kind, name, job_id, job = event.kind, event.file, event.job_id, event.job
        now = self.clock()
        with self._lock:
            self.version += 1
            record = self._files.get(job_id)
            if record is None and kind != "archived":
                record = self._files[job_id] = _File(name, job_id, now)
            if isinstance(event, events.Rendered) and record is not None:
                record.jobs = int(event.jobs)
            elif kind == "resumed" and record is not None:
                # optional event: a file resumed after a restart, with its pending job count
                detail = event.detail
                if "jobs" in detail:
                    record.jobs = int(detail["jobs"])
                for done in detail.get("finished", ()):
                    record.started.add(str(done))
                record.seen_submit = True
            elif isinstance(event, events.Submitted) and job and record is not None:
                record.started.add(job)
                record.seen_submit = True
                entry = self._jobs.get((job_id, job))
                if entry is None:
                    entry = self._jobs[(job_id, job)] = _Job(name, job, job_id, now)
                else:  # submitted again (resubmission or another server): starts over
                    entry.since, entry.state, entry.node, entry.value, entry.max = now, "queued", None, None, None
                entry.server = self._server_name(event.server)
                entry.prompt_id = event.prompt_id
            elif isinstance(event, events.Progress) and job:
                entry = self._jobs.get((job_id, job))
                if entry is None:  # progress without a submitted event (attached after a restart)
                    entry = self._jobs[(job_id, job)] = _Job(name, job, job_id, now)
                    if record is not None:
                        record.started.add(job)
                        record.seen_submit = True
                entry.state = "running"
                entry.node = None if event.node is None else str(event.node)
                entry.value = event.value
                entry.max = event.max
                entry.progress_at = now
            elif isinstance(event, events.Published) and job:
                self._jobs.pop((job_id, job), None)
                if record is not None:
                    record.started.add(job)
                self.counts["published"] += 1
            elif isinstance(event, events.Failed):
                error = event.error or {}
                message = error.get("message") if isinstance(error, dict) else str(error)
                self._failures.insert(0, {"file": name, "job": job, "job_id": job_id,
                                          "message": message or "failed", "time": iso(now), "at": now})
                del self._failures[MAX_FAILURES:]
                if job:
                    self._jobs.pop((job_id, job), None)
                    if record is not None:
                        record.started.add(job)
                    self.counts["failed"] += 1
                elif record is not None:  # the whole file failed (unreadable, ...): nothing of it waits
                    record.jobs, record.started = 0, set()
            elif isinstance(event, events.Archived):
                if event.failed:
                    self._failures_from_archive(name, job_id, event.error or {}, now)
                self._files.pop(job_id, None)
                for key in [k for k in self._jobs if k[0] == job_id]:
                    del self._jobs[key]
                self.counts["files_failed" if event.failed else "files_done"] += 1

    def _failures_from_archive(self, name: str, job_id: str, error: dict[str, Any], now: float) -> None:
        """Failures that had no ``failed`` event (a job whose workflow did not render) are listed in the
        archived file's error document: record those not recorded yet."""
        seen = {f["job"] for f in self._failures if f["job_id"] == job_id}
        jobs = error.get("jobs") if isinstance(error, dict) else None
        added = False
        for job in jobs if isinstance(jobs, list) else []:
            if not isinstance(job, dict) or job.get("state") != "failed" or job.get("name") in seen:
                continue
            message = (job.get("error") or {}).get("message") if isinstance(job.get("error"), dict) else None
            self._failures.insert(0, {"file": name, "job": job.get("name"), "job_id": job_id,
                                      "message": message or "failed", "time": iso(now), "at": now})
            self.counts["failed"] += 1
            added = True
        if not added and not seen:
            message = error.get("message") if isinstance(error, dict) else None
            self._failures.insert(0, {"file": name, "job": None, "job_id": job_id,
                                      "message": message or "failed", "time": iso(now), "at": now})
        del self._failures[MAX_FAILURES:]

    def server_state(self, name: str, url: str, up: bool, queue: int | None = None) -> None:
        """The latest known state of a server: reachable or not, and its queue length if known."""
        now = self.clock()
        with self._lock:
            server = self._servers.get(name)
            if server is None:
                server = self._servers[name] = _Server(name, url)
            if server.up != up:
                server.since = now
                self.version += 1
            if server.queue != queue or server.url != url:
                self.version += 1
            server.up, server.queue, server.url = up, queue, url

    def server_jobs(self, name: str, jobs: dict[str, tuple[str, int | None]] | None, *,
                    valid_for: float) -> None:
        """What server ``name``'s jobs API says is queued or running: ``{prompt_id: (state, queue
        position or None)}``, believed for ``valid_for`` seconds; None forgets it (no jobs API, no answer)."""
        with self._lock:
            server = self._servers.get(name)
            if server is None:
                return
            if jobs != server.jobs:
                self.version += 1
            server.jobs, server.jobs_until = jobs, self.clock() + valid_for

    def prompts_on(self, name: str) -> set[str]:
        """The prompt ids of the jobs this board shows on server ``name``."""
        with self._lock:
            return {j.prompt_id for j in self._jobs.values() if j.server == name and j.prompt_id}

    def set_state(self, state: str) -> None:
        """The daemon's state: starting, running, reloading, stopping, stopped."""
        with self._lock:
            self.state = state
            self.version += 1

    def set_paused(self, reason: str | None) -> None:
        """Intake paused by a failing filesystem (``reason`` says which, where, why), or resumed (None)."""
        with self._lock:
            self.paused = reason
            self.version += 1

    def set_submit_paused(self, since: float | None) -> None:
        """Submitting paused by ``inbox/PAUSE`` since ``since`` (wall clock seconds), or resumed (None)."""
        with self._lock:
            if since != self.submit_paused:
                self.submit_paused = since
                self.version += 1

    def _server_name(self, url_or_name: Any) -> str | None:
        if url_or_name is None:
            return None
        for server in self._servers.values():
            if url_or_name in (server.url, server.name):
                return server.name
        return str(url_or_name)

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the picture (the status file's content)."""
        now = self.clock()
        with self._lock:
            self._failures = [f for f in self._failures if now - f["at"] <= FAILURE_WINDOW]
            known = {s.name: s.jobs for s in self._servers.values() if s.jobs is not None and now <= s.jobs_until}
            running = [self._job_dict(j, known.get(j.server or "")) for j in
                       sorted(self._jobs.values(), key=lambda j: (j.since, j.job))]
            files = sorted(self._files.values(), key=lambda f: (f.since, f.file))
            waiting = sum(f.waiting for f in files)
            waiting_files = [{"file": f.file, "jobs": f.waiting, "since": iso(f.since)}
                             for f in files if f.waiting][:MAX_WAITING_FILES]
            per_server: dict[str, int] = {}
            for job in self._jobs.values():
                if job.server:
                    per_server[job.server] = per_server.get(job.server, 0) + 1
            servers = [{"name": s.name, "url": s.url, "up": s.up, "queue": s.queue,
                        "running": per_server.get(s.name, 0), "since": iso(s.since) if s.since else None}
                       for s in self._servers.values()]
            snap = {
                "version": VERSION,
                "state": self.state,
                "intake_paused": self.paused,
                "paused": iso(self.submit_paused) if self.submit_paused is not None else None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "instance": self.instance,
                "started": iso(self.started),
                "updated": iso(now),
                "updated_unix": now,
                "waiting": waiting,
                "waiting_files": waiting_files,
                "running": running,
                "servers": servers,
                "failures": [{k: v for k, v in f.items() if k != "at"} for f in self._failures],
                "counts": dict(self.counts),
            }
        snap["summary"] = summarize(snap)
        return snap

    def summary(self) -> str:
        """One line for sd_notify STATUS=, e.g. "3 running, 12 waiting, server gpu2 down"."""
        return self.snapshot()["summary"]

    @staticmethod
    def _job_dict(job: _Job, on_server: dict[str, tuple[str, int | None]] | None) -> dict[str, Any]:
        percent = None
        if job.value is not None and job.max:
            percent = round(100.0 * float(job.value) / float(job.max), 1)
        server_state, position = (on_server or {}).get(job.prompt_id or "", (None, None))
        return {"file": job.file, "job": job.job, "job_id": job.job_id, "server": job.server,
                "prompt_id": job.prompt_id, "state": job.state, "server_state": server_state,
                "queue_position": position, "node": job.node, "value": job.value,
                "max": job.max, "percent": percent, "since": iso(job.since),
                "progress_at": iso(job.progress_at) if job.progress_at else None}


def summarize(snapshot: dict[str, Any]) -> str:
    running, waiting = len(snapshot.get("running") or []), int(snapshot.get("waiting") or 0)
    parts = [f"{running} running, {waiting} waiting"] if running or waiting else ["idle"]
    down = [s["name"] for s in snapshot.get("servers") or [] if s.get("up") is False]
    if down:
        parts.append(f"server{'s' if len(down) > 1 else ''} {', '.join(down)} down")
    state = snapshot.get("state")
    if state in {"starting", "reloading", "stopping"}:
        parts.insert(0, state)
    if snapshot.get("paused"):
        parts.insert(0, "PAUSED (inbox/PAUSE: nothing new is submitted; hotfolder resume)")
    if snapshot.get("intake_paused"):
        parts.insert(0, f"INTAKE PAUSED: {snapshot['intake_paused']}")
    return ", ".join(parts)
