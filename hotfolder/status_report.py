"""What ``hotfolder status`` prints: :func:`format_status` turns a status file's snapshot into the human
report, and :func:`status_problem` says when the file no longer describes a running daemon."""

from __future__ import annotations

import calendar
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from hotfolder.status import FAILURE_WINDOW, summarize

STALE_FACTOR = 3  # a file not rewritten for this many intervals means the daemon is gone or stuck


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
                         _job_state(job), job.get("node") or "", step, percent,
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


def _job_state(job: dict[str, Any]) -> str:
    """The server's state of the job when its jobs API told us (``pending #2``: second in its queue,
    ``in_progress``), else hotfolder's own (``queued``, ``running``)."""
    server_state = job.get("server_state")
    if not server_state:
        return str(job.get("state") or "")
    position = job.get("queue_position")
    return f"{server_state} #{position}" if server_state == "pending" and position else str(server_state)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
