"""What the daemon is doing, for ``hotfolder status``, sd_notify ``STATUS=`` and scripts.

:class:`StatusBoard` listens to the pipeline's events (it is an ``Engine`` listener) and to server state
updates, and keeps a small picture: jobs on servers with their progress, how many wait, each server's
state, the failures of the last hour, counts. :class:`StatusWriter` writes that picture atomically to
``inbox/.hotfolder/status/<instance_id>.json`` from its own thread, every ``interval`` seconds and on
demand, so that ``hotfolder status`` (and any script) can read it without a network port. Each daemon on a
shared inbox has its own file. :func:`read_all_status` and :func:`format_status` are the reading
side.

The file (``version`` 1)::

    {"version": 1, "state": "running", "pid": 123, "host": "render1", "instance": "render1",
     "started": "...Z", "updated": "...Z", "updated_unix": 1760000000.0, "interval": 2.0,
     "summary": "1 running, 3 waiting", "waiting": 3, "waiting_files": [{"file", "jobs", "since"}],
     "running": [{"file", "job", "job_id", "server", "prompt_id", "state", "node", "value", "max",
                  "percent", "since", "progress_at"}],
     "servers": [{"name", "url", "up", "queue", "running", "since"}],
     "failures": [{"file", "job", "job_id", "message", "time"}],
     "counts": {"published", "failed", "files_done", "files_failed"}}
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolder.errors import HotfolderError
from hotfolder.paths import UnsafeFolder, own_dir
from hotfolder.record import write_json_atomic
from hotfolder.redact import redact_data

logger = logging.getLogger(__name__)

STATUS_DIR = "status"  # inbox/.hotfolder/status/<instance_id>.json
VERSION = 1
FAILURE_WINDOW = 3600.0  # failures shown: the last hour
MAX_FAILURES = 50  # at most this many, newest first, so the file stays small
MAX_WAITING_FILES = 20
STALE_FACTOR = 3  # a file not rewritten for this many intervals means the daemon is gone or stuck


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
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._servers: dict[str, _Server] = {name: _Server(name, url) for name, url in servers}
        self._failures: list[dict[str, Any]] = []
        self.counts = {"published": 0, "failed": 0, "files_done": 0, "files_failed": 0}
        self.version = 0  # bumped on every change

    # -- feeding ---------------------------------------------------------------------------------

    def __call__(self, event: Any) -> None:
        """Engine listener: takes a ``events.Event`` (kind, file, job_id, job, detail)."""
        self.observe(event)

    def observe(self, event: Any) -> None:
        kind, name, job_id, job = event.kind, event.file, event.job_id, event.job
        detail: dict[str, Any] = event.detail or {}
        now = self.clock()
        with self._lock:
            self.version += 1
            record = self._files.get(job_id)
            if record is None and kind != "archived":
                record = self._files[job_id] = _File(name, job_id, now)
            if kind == "rendered" and record is not None:
                record.jobs = int(detail.get("jobs", 0))
            elif kind == "resumed" and record is not None:
                # optional event: a file resumed after a restart, with its pending job count
                if "jobs" in detail:
                    record.jobs = int(detail["jobs"])
                for done in detail.get("finished", ()):
                    record.started.add(str(done))
                record.seen_submit = True
            elif kind == "submitted" and job and record is not None:
                record.started.add(job)
                record.seen_submit = True
                entry = self._jobs.get((job_id, job))
                if entry is None:
                    entry = self._jobs[(job_id, job)] = _Job(name, job, job_id, now)
                else:  # submitted again (resubmission or another server): starts over
                    entry.since, entry.state, entry.node, entry.value, entry.max = now, "queued", None, None, None
                entry.server = self._server_name(detail.get("server"))
                entry.prompt_id = detail.get("prompt_id")
            elif kind == "progress" and job:
                entry = self._jobs.get((job_id, job))
                if entry is None:  # progress without a submitted event (attached after a restart)
                    entry = self._jobs[(job_id, job)] = _Job(name, job, job_id, now)
                    if record is not None:
                        record.started.add(job)
                        record.seen_submit = True
                entry.state = "running"
                entry.node = None if detail.get("node") is None else str(detail.get("node"))
                entry.value = detail.get("value")
                entry.max = detail.get("max")
                entry.progress_at = now
            elif kind == "published" and job:
                self._jobs.pop((job_id, job), None)
                if record is not None:
                    record.started.add(job)
                self.counts["published"] += 1
            elif kind == "failed":
                error = detail.get("error") or {}
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
            elif kind == "archived":
                if detail.get("failed"):
                    self._failures_from_archive(name, job_id, detail.get("error") or {}, now)
                self._files.pop(job_id, None)
                for key in [k for k in self._jobs if k[0] == job_id]:
                    del self._jobs[key]
                self.counts["files_failed" if detail.get("failed") else "files_done"] += 1

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
            running = [self._job_dict(j) for j in sorted(self._jobs.values(), key=lambda j: (j.since, j.job))]
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
    def _job_dict(job: _Job) -> dict[str, Any]:
        percent = None
        if job.value is not None and job.max:
            percent = round(100.0 * float(job.value) / float(job.max), 1)
        return {"file": job.file, "job": job.job, "job_id": job.job_id, "server": job.server,
                "prompt_id": job.prompt_id, "state": job.state, "node": job.node, "value": job.value,
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
    if snapshot.get("intake_paused"):
        parts.insert(0, f"INTAKE PAUSED: {snapshot['intake_paused']}")
    return ", ".join(parts)


# -- the status file -----------------------------------------------------------------------------


def status_path(state_dir: Path, instance: str) -> Path:
    return state_dir / STATUS_DIR / f"{instance}.json"


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` so that readers see the old or the new file, never a torn one. No fsync: the
    file is rewritten every few seconds and a lost write after a power cut does not matter. Mode 0644:
    readable by `hotfolder status` run as another user. Credentials are redacted (:mod:`hotfolder.redact`)."""
    write_json_atomic(path, redact_data(snapshot), indent=1, durable=False, mode=0o644)


class StatusWriter:
    """Writes ``board.snapshot()`` to ``path`` every ``interval`` seconds from its own thread, and at
    once on :meth:`flush`. A failed write is logged (once until it works again), never raised."""

    def __init__(self, board: StatusBoard, path: Path, *, interval: float = 2.0,
                 on_write: Callable[[dict[str, Any]], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.board = board
        self.path = path
        self.interval = interval
        self.on_write = on_write
        self.writes = 0
        self._cond = threading.Condition()
        self._requested = 0  # flush requests made
        self._served = 0  # flush requests covered by a finished write
        self._stopping = False
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Write now (from the writer thread) and wait up to ``timeout`` seconds for it (``None``: do not
        wait). True if the file was written."""
        with self._cond:
            self._requested += 1
            wanted = self._requested
            self._cond.notify_all()
            if timeout is None or self._thread is None:
                return False
            self._cond.wait_for(lambda: self._served >= wanted or self._stopping, timeout)
            return self._served >= wanted and not self._failing

    def stop(self, *, final_state: str | None = "stopped", timeout: float = 5.0) -> None:
        """Stop the thread, then write one last time (with ``final_state``, e.g. "stopped")."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if final_state is not None:
            self.board.set_state(final_state)
        self._write()

    def _run(self) -> None:
        next_write = time.monotonic()
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    left = next_write - time.monotonic()
                    if self._requested > self._served or left <= 0:
                        break
                    self._cond.wait(left)
                wanted = self._requested
            self._write()
            next_write = time.monotonic() + self.interval
            with self._cond:
                self._served = max(self._served, wanted)
                self._cond.notify_all()

    def _write(self) -> None:
        try:
            snapshot = self.board.snapshot()
            snapshot["interval"] = self.interval
            own_dir(self.path.parent, levels=2)  # inbox/.hotfolder/status: never written through a symlink
            write_status(self.path, snapshot)
        except (OSError, UnsafeFolder) as err:
            if not self._failing:
                logger.warning("Cannot write the status file %s: %s", self.path, err)
            self._failing = True
            return
        if self._failing:
            logger.info("Status file %s is written again", self.path)
            self._failing = False
        self.writes += 1
        if self.on_write is not None:
            try:
                self.on_write(snapshot)
            except Exception:  # noqa: BLE001 - a listener (sd_notify STATUS=) must not stop the writer
                logger.exception("Status listener failed")


# -- reading the file (hotfolder status) ---------------------------------------------------------


def read_all_status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Every daemon's status file in ``state_dir``, by instance id (sorted)."""
    folder = state_dir / STATUS_DIR
    try:
        names = sorted(entry.name for entry in os.scandir(folder)
                       if entry.name.endswith(".json") and not entry.name.startswith("."))
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        data = _read_status_file(folder / name)
        if data is not None:
            found[name[: -len(".json")]] = data
    return found


def _read_status_file(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise HotfolderError(f"Cannot read the status file {str(path)!r}: {err.strerror}.") from err
    try:
        data = json.loads(text)
    except ValueError as err:
        raise HotfolderError(f"The status file {str(path)!r} is not valid JSON: {err}.",
                             hint="It is rewritten by the daemon every few seconds; try again.") from err
    if not isinstance(data, dict):
        raise HotfolderError(f"The status file {str(path)!r} does not hold a JSON object.")
    return data


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user (the service user)
        return True
    except OSError:
        return False
    return True


def status_problem(snapshot: dict[str, Any], *, now: float | None = None,
                   alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why the file no longer describes a running daemon, or None if it does."""
    now = time.time() if now is None else now
    updated = snapshot.get("updated_unix")
    interval = float(snapshot.get("interval") or 2.0)
    if snapshot.get("state") == "stopped":
        when = f" {_ago(now - updated)} ago" if isinstance(updated, int | float) else ""
        return f"daemon not running (stopped{when})"
    pid = snapshot.get("pid")
    if isinstance(pid, int) and snapshot.get("host") == socket.gethostname() and not alive(pid):
        return f"daemon not running (process {pid} is gone)"
    if not isinstance(updated, int | float):
        return "status file has no update time"
    if now - updated > STALE_FACTOR * interval:
        return (f"daemon not running or stuck: status last written {_ago(now - updated)} ago "
                f"(expected every {interval:g} s)")
    return None


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        big, unit, rest, sub = seconds // 60, "min", seconds % 60, "s"
    elif seconds < 86400:
        big, unit, rest, sub = seconds // 3600, "h", seconds % 3600 // 60, "min"
    else:
        big, unit, rest, sub = seconds // 86400, "d", seconds % 86400 // 3600, "h"
    return f"{big} {unit}" + (f" {rest} {sub}" if rest else "")


def parse_iso(stamp: str) -> float | None:
    """Seconds since the epoch for a time written by :func:`iso`; None if it is not one."""
    try:
        return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except (TypeError, ValueError):
        return None


def _since(stamp: str | None, now: float) -> str:
    ts = parse_iso(stamp) if stamp else None
    return "" if ts is None else _ago(now - ts)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + fmt.format(*headers).rstrip()] + ["  " + fmt.format(*r).rstrip() for r in rows]


def format_status(snapshot: dict[str, Any], *, now: float | None = None,
                  alive: Callable[[int], bool] = pid_alive) -> str:
    """The human report ``hotfolder status`` prints."""
    now = time.time() if now is None else now
    out: list[str] = []
    problem = status_problem(snapshot, now=now, alive=alive)
    who = f"hotfolder {snapshot.get('instance') or ''} on {snapshot.get('host')}, pid {snapshot.get('pid')}"
    who = " ".join(who.split())
    if problem:
        shout = "daemon not running"
        if problem.startswith(shout):  # the one thing the reader must not miss
            problem = shout.upper() + problem[len(shout):]
        out.append(f"{who}: {problem}")
        out.append("The figures below are from the last status the daemon wrote.")
    else:
        out.append(f"{who}: {snapshot.get('state')}, up {_since(snapshot.get('started'), now)}")
    counts = snapshot.get("counts") or {}
    out.append(f"{summarize(snapshot)}. Since start: {counts.get('published', 0)} job(s) published, "
               f"{counts.get('failed', 0)} failed; {counts.get('files_done', 0)} file(s) done, "
               f"{counts.get('files_failed', 0)} failed.")

    running = snapshot.get("running") or []
    out.append("")
    if running:
        out.append(f"Running ({len(running)}):")
        rows = []
        for job in running:
            step = ""
            if job.get("max"):
                step = f"{_num(job.get('value'))}/{_num(job.get('max'))}"
            percent = f"{job['percent']:.0f}%" if job.get("percent") is not None else ""
            rows.append([job.get("file") or "", job.get("job") or "", job.get("server") or "",
                         job.get("state") or "", job.get("node") or "", step, percent,
                         _since(job.get("since"), now)])
        out += _table(["FILE", "JOB", "SERVER", "STATE", "NODE", "STEP", "PERCENT", "FOR"], rows)
    else:
        out.append("Running: none")

    waiting = snapshot.get("waiting_files") or []
    if waiting:
        out.append("")
        more = int(snapshot.get("waiting") or 0) - sum(int(w.get("jobs") or 0) for w in waiting)
        out.append(f"Waiting ({snapshot.get('waiting')} job(s)):")
        out += _table(["FILE", "JOBS", "FOR"],
                      [[w.get("file") or "", str(w.get("jobs")), _since(w.get("since"), now)] for w in waiting])
        if more > 0:
            out.append(f"  ... and {more} more job(s)")

    servers = snapshot.get("servers") or []
    if servers:
        out.append("")
        out.append("Servers:")
        rows = []
        for s in servers:
            state = "unknown" if s.get("up") is None else "up" if s.get("up") else "DOWN"
            if s.get("since") and s.get("up") is not None:
                state += f" for {_since(s.get('since'), now)}"
            rows.append([s.get("name") or "", s.get("url") or "", state,
                         "" if s.get("queue") is None else str(s.get("queue")), str(s.get("running") or 0)])
        out += _table(["NAME", "URL", "STATE", "QUEUE", "OURS"], rows)

    failures = [f for f in snapshot.get("failures") or []
                if now - (parse_iso(str(f.get("time"))) or now) <= FAILURE_WINDOW]
    out.append("")
    if failures:
        out.append(f"Failures in the last hour ({len(failures)}):")
        for f in failures:
            what = f"{f.get('file')}" + (f" {f.get('job')}" if f.get("job") else "")
            out.append(f"  {_since(f.get('time'), now)} ago  {what}: {f.get('message')}")
    else:
        out.append("Failures in the last hour: none")
    return "\n".join(out) + "\n"


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
