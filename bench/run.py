#!/usr/bin/env python3
"""hotfolder's benchmark (issues 6 and 15, DESIGN.md §9): one command, a table of measured values and targets.

    python bench/run.py                 # everything, full sizes (about 10 minutes)
    python bench/run.py --quick         # small sizes (a few minutes)
    python bench/run.py --servers-url http://gpu1:8188,http://gpu2:8188   # against real servers

Sections (``--only`` takes these names or their numbers):

1. ``throughput``  trivial jobs (execution time 0): a real ``hotfolder run`` fed through a real inbox, a
   minimal direct client (2 prompts in flight) and the seed's sequential loop, on the same workflows;
   jobs/s, hotfolder/direct (information) and hotfolder/sequential (>= 3; >= 1 on real servers).
2. ``pool``        the farm: one daemon driving S servers (``--farm``: S = 1, 2, 4, 8, 16 with T = 0.2 s
   and S = 32 with T = 1 s), N = 100 x S jobs of T seconds: makespan / (N x T / S) (<= 1.01; <= 1.02
   from 32 servers on), the daemon's CPU and context switches per job, each server's idle fraction;
   then one server with a post-processor slower than the jobs (<= 1.03).
3. ``latency``     a file complete in the inbox (closed after writing; renamed in) to its POST /prompt as
   the server recorded it: p50 (<= 20 ms) and p95, files dropped one at a time.
4. ``memory``      peak RSS (VmHWM) of the daemon with 10,000 files waiting on a paused server (<= 100 MB);
   RSS added by ComfyHTTP.download of a 1 GiB output (<= 16 MB).
5. ``backlog``     time per job for a batch while 100 vs 10,000 other files wait (ratio <= 1.10).
6. ``restart``     one server restarted mid-run (it forgets its queue and running prompt), 3 times: the
   seconds from when it answers again to its next execution start (<= 1 s; lost_grace is 15 s).

Test servers are ``bench/testserver.py`` processes (hotfolder.testing.ComfyTestServer); the S servers of
section 2 share one such process, so that a farm of 32 takes one process from the daemon's 2 cores, not
32. ``--servers-url`` runs 1-3 against the given ComfyUI servers instead (2 then uses all of them, and
the measured execution time as T); 4-6 need a server the bench can pause or restart and stay on test
servers. Everything listens on 127.0.0.1; temp folders and child processes are removed on exit, Ctrl-C
included. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import json
import math
import os
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clients  # noqa: E402
import requests  # noqa: E402
from harness import (  # noqa: E402
    PYTHON,
    ROOT,
    Daemon,
    Project,
    Reaper,
    TestServerProc,
    drop,
    filesystem,
    hermetic_env,
    invert_workflow,
    proc_cpu_seconds,
    scenario_bytes,
    scenario_name,
    stage,
    wait_for,
)

SECTIONS = ("throughput", "pool", "latency", "memory", "backlog", "restart")


# -- results -------------------------------------------------------------------------------------------


@dataclass
class Row:
    section: int
    measure: str
    value: str
    target: str = ""
    ratio: float | None = None  # value / target
    met: bool | None = None


@dataclass
class Ctx:
    args: argparse.Namespace
    reaper: Reaper
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[tuple[str, Path]] = field(default_factory=list)
    _next_color: int = field(default_factory=lambda: random.randrange(1, 8_000_000))

    def colors(self, n: int) -> list[int]:
        """n fresh EmptyImage colours: every workflow of the run differs, so no cache skips work."""
        out = list(range(self._next_color, self._next_color + n))
        self._next_color += n
        return out

    def add(self, *rows: Row) -> None:
        for row in rows:
            self.rows.append(row)
            log(f"  {row.measure}: {row.value}" + (f"  (target {row.target})" if row.target else ""))

    def profile_path(self, tag: str) -> Path | None:
        if self.args.profile is None:
            return None
        path = self.args.profile / f"{tag}.prof"
        self.profiles.append((tag, path))
        return path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def at_least(section: int, measure: str, value: float, target: float, shown: str) -> Row:
    return Row(section, measure, shown, f">= {target:g}", value / target, value >= target)


def at_most(section: int, measure: str, value: float, target: float, shown: str, unit: str = "") -> Row:
    return Row(section, measure, shown, f"<= {target:g}{unit}", value / target, value <= target)


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# -- running hotfolder on a batch ----------------------------------------------------------------------


@dataclass
class Batch:
    t0: float  # time.time() just before the first drop
    drops: dict[int, float]  # colour -> time.time() the file was complete in the inbox
    ends: list[float]  # when each input of the batch reached done/ (sorted)
    cpu: float  # daemon CPU seconds spent on the batch
    project: Project
    switches: int = 0  # context switches of the daemon's threads during the batch
    servers_cpu: float = 0.0  # CPU seconds of the ``server_pids`` processes during the batch
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)  # (time.time(), daemon CPU s), first 3 s

    def cpu_between(self, start: float, end: float) -> float | None:
        """Daemon CPU seconds between two times of the first 3 s (from the samples nearest to them)."""
        if not self.cpu_samples or end > self.cpu_samples[-1][0]:
            return None
        def at(t: float) -> float:
            return min(self.cpu_samples, key=lambda sample: abs(sample[0] - t))[1]
        return at(end) - at(start)

    @property
    def seconds(self) -> float:
        return self.ends[-1] - self.t0


def _check(daemon: Daemon, project: Project) -> None:
    if daemon.proc.poll() is not None:
        raise RuntimeError(f"hotfolder exited with {daemon.proc.returncode}:\n{daemon.tail()}")
    if project.count(project.failed):
        raise RuntimeError(f"a bench file failed in hotfolder: {project.first_error()}\n{daemon.tail()}")


def run_hotfolder(ctx: Ctx, tag: str, urls: list[str], colors: list[int], *, prefix: str, how: str = "rename",
                  px: int = 8, timeout: float = 900.0, plugins: dict[str, str] | None = None,
                  interval: float = 0.02, warmups: int = 1, server_pids: tuple[int, ...] = (),
                  at_once: bool = False, sample_ramp: bool = False, **settings: Any) -> Batch:
    """A daemon on a fresh project (``plugins``: file name -> source for its plugins/ folder; ``settings``
    for its hotfolder.toml): ``warmups`` warm-up files, then ``colors`` dropped; wait until all are done, looking
    every ``interval`` seconds (the times come from done/, so a longer one only saves the bench's CPU).
    ``at_once``: the batch is written under hidden names before the daemon starts and moved in by renames
    one after the other (a prepared batch moved into the inbox), so that writing it does not take the
    daemon's CPU while the clock runs."""
    project = Project(ctx.reaper.tempdir(tag), urls, **settings)
    staged = [stage(project.inbox, c, width=px, prefix=prefix, height=px) for c in colors] if at_once else []
    for name, source in (plugins or {}).items():
        (project.root / "plugins" / name).write_text(source, encoding="utf-8")
    daemon = Daemon(ctx.reaper, project, profile_clock=ctx.args.profile_clock, profile=ctx.profile_path(tag))
    try:
        daemon.wait_ready()
        for warm in ctx.colors(warmups):
            drop(project.inbox, warm, prefix=prefix + "-warm")
        wait_for(lambda: project.count(project.done) >= warmups, 60 + warmups, "the warm-up jobs",
                 check=lambda: _check(daemon, project))
        if warmups > 1:  # every server known (its /object_info read, its WebSocket open): the daemon is idle
            _wait_quiet(daemon.pid, at_least=0.25, timeout=20, cpu_per_s=0.05, sample=0.25)
        cpu0, switches0 = daemon.cpu_seconds(), daemon.switches()
        servers0 = sum(proc_cpu_seconds(pid) for pid in server_pids)
        drops: dict[int, float] = {}
        samples: list[tuple[float, float]] = []  # only where the ramp is reported: the sampler takes CPU too
        sampler = threading.Thread(target=_sample_cpu, args=(daemon, samples, 3.0), daemon=True)
        if sample_ramp:
            sampler.start()
        t0 = time.time()
        if staged:
            for color, (tmp, final) in zip(colors, staged, strict=True):
                os.rename(tmp, final)
                drops[color] = time.time()
        else:
            for color in colors:
                drops[color] = drop(project.inbox, color, how=how, prefix=prefix, width=px, height=px)
        n = len(colors) + warmups
        wait_for(lambda: project.count(project.done) >= n, timeout, f"{len(colors)} jobs in hotfolder",
                 interval=interval, check=lambda: _check(daemon, project))
        cpu, switches = daemon.cpu_seconds() - cpu0, daemon.switches() - switches0
        servers_cpu = sum(proc_cpu_seconds(pid) for pid in server_pids) - servers0
        names = {scenario_name(c) for c in colors}
        ends = sorted(os.lstat(project.done / name).st_ctime_ns / 1e9 for name in names)
        if sample_ramp:
            sampler.join()
        return Batch(t0, drops, ends, cpu, project, switches, servers_cpu, samples)
    finally:
        daemon.stop()


def _sample_cpu(daemon: Daemon, samples: list[tuple[float, float]], seconds: float) -> None:
    """Every 10 ms for ``seconds``: (time.time(), the daemon's CPU seconds so far), into ``samples``
    (/proc counts CPU in 10 ms ticks: good for the share of a core over 100 ms or more)."""
    end = time.time() + seconds
    while (now := time.time()) < end:
        samples.append((now, daemon.cpu_seconds()))
        time.sleep(0.01)


def start_servers(ctx: Ctx, count: int, tag: str) -> list[TestServerProc]:
    servers = []
    for i in range(count):
        root = ctx.reaper.tempdir(f"{tag}-server{i}")
        servers.append(TestServerProc(ctx.reaper, root / "output", root / "server.log"))
    return servers


def start_farm(ctx: Ctx, count: int, tag: str) -> TestServerProc:
    """``count`` test servers in one process of their own (a farm must not take a process per server)."""
    root = ctx.reaper.tempdir(tag)
    return TestServerProc(ctx.reaper, root / "output", root / "servers.log", count=count, root=root)


def stop_servers(servers: list[TestServerProc]) -> None:
    for server in servers:
        server.stop()


# -- 1. throughput -------------------------------------------------------------------------------------


def section_throughput(ctx: Ctx, url: str, label: str) -> None:
    n, rounds = ctx.args.jobs, ctx.args.rounds
    px = ctx.args.pool_px if ctx.args.servers_url else 8  # on a real server, jobs that take the GPU some time
    log(f"[1] throughput, {n} jobs of {px}x{px} px on {label}, {rounds} round(s)")
    scratch = ctx.reaper.tempdir("seq-downloads")

    # warm the server's own code paths once (imports, first PNG), outside every measurement
    clients.run_sequential(url, [invert_workflow(c, prefix="hfbench/warm") for c in ctx.colors(2)], scratch)

    # The three clients take turns, round after round, so that a slow spell of a shared machine
    # falls on all of them; the table gives medians (and the per-round ratios' range).
    # Each client and round writes into its own output subfolder: SaveImage lists its folder for every
    # image, so a shared folder that keeps growing would slow the server for whoever comes later.
    direct, sequential, hot, cpu = [], [], [], []
    for r in range(1, rounds + 1):
        colors = ctx.colors(n)
        seconds, done = clients.run_direct(url, [invert_workflow(c, px, f"hfbench/direct{r}/img", px) for c in colors],
                                           depth=2)
        direct.append(done / seconds)
        seconds, done = clients.run_sequential(url, [invert_workflow(c, px, f"hfbench/seq{r}/img", px) for c in colors],
                                               scratch)
        sequential.append(done / seconds)
        batch = run_hotfolder(ctx, "throughput", [url], colors, prefix=f"hfbench/hotfolder{r}/img", px=px)
        hot.append(n / batch.seconds)
        cpu.append(1000 * batch.cpu / n)
        log(f"  round {len(hot)}: hotfolder {hot[-1]:.1f}, direct {direct[-1]:.1f}, sequential {sequential[-1]:.1f} "
            f"jobs/s; hotfolder / direct {hot[-1] / direct[-1]:.2f}")
    shutil.rmtree(scratch, ignore_errors=True)
    by_direct = [h / d for h, d in zip(hot, direct, strict=True)]
    by_seq = [h / q for h, q in zip(hot, sequential, strict=True)]
    ceiling = [d / q for d, q in zip(direct, sequential, strict=True)]

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" + (f" (rounds {min(values):.2f}-{max(values):.2f})" if rounds > 1 else "")

    per = "median of rounds" if rounds > 1 else ""
    ctx.add(
        Row(1, f"hotfolder, {n} jobs ({label})", f"{statistics.median(hot):.1f} jobs/s {per}".strip()),
        Row(1, "direct client, 2 in flight", f"{statistics.median(direct):.1f} jobs/s {per}".strip()),
        Row(1, "sequential (seed) client", f"{statistics.median(sequential):.1f} jobs/s {per}".strip()),
        Row(1, "hotfolder / direct (information)", spread(by_direct)),
        at_least(1, "hotfolder / sequential", statistics.median(by_seq), 1.0 if ctx.args.servers_url else 3,
                 spread(by_seq)),
        Row(1, "direct / sequential (ceiling of the above)", spread(ceiling)),
        Row(1, "hotfolder CPU per job", f"{statistics.median(cpu):.1f} ms"),
    )


# -- 2. pool: idle fraction and makespan ---------------------------------------------------------------


def _history_spans(url: str, colors: set[int] | None) -> list[tuple[float, float, str]]:
    """(start, end, prompt_id), in time.time() seconds, of every prompt in ``url``'s history whose colour is
    ours (``None``: every prompt)."""
    data = requests.get(f"{url}/history", params={"max_items": 100000}, timeout=60).json()
    spans = []
    for prompt_id, entry in data.items():
        try:
            prompt = entry["prompt"][2]
            color = next(node["inputs"]["color"] for node in prompt.values() if node.get("class_type") == "EmptyImage")
        except (KeyError, IndexError, TypeError, StopIteration):
            continue
        if colors is not None and color not in colors:
            continue
        stamps = {kind: data.get("timestamp") for kind, data in (entry.get("status") or {}).get("messages") or []
                  if isinstance(data, dict)}
        start = stamps.get("execution_start")
        end = stamps.get("execution_success") or stamps.get("execution_error")
        if start and end:
            spans.append((start / 1000, end / 1000, prompt_id))
    return spans


def farm_target(s: int) -> float:
    """The makespan / ideal target with S servers (issue 15): 1.01, and 1.02 from 32 servers on."""
    return 1.02 if s >= 32 else 1.01


def section_pool(ctx: Ctx, urls: list[str] | None) -> None:
    """One daemon driving S servers: N = per-server jobs x S of T seconds each, makespan / (N x T / S)."""
    per = ctx.args.jobs_per_server
    plans: list[tuple[int, float | None]] = [(len(urls), None)] if urls else ctx.args.farm
    for s, t in plans:
        n = per * s
        log(f"[2] pool, N={n} T={'measured' if t is None else f'{t:g}'} S={s}")
        farm: TestServerProc | None = None
        if t is not None:
            farm = start_farm(ctx, s, f"pool{s}")
            farm.pace(t)  # a job occupies its GPU for T in all (see bench/testserver.py)
            server_urls = farm.urls
        else:
            server_urls = list(urls or [])
        try:
            colors = ctx.colors(n)
            batch = run_hotfolder(ctx, f"pool-S{s}", server_urls, colors, prefix=f"hfbench/pool{s}",
                                  px=ctx.args.pool_px if t is None else 8, interval=0.25, warmups=2 * s,
                                  server_pids=() if farm is None else (farm.proc.pid,), at_once=True,
                                  sample_ramp=True)
            wanted = set(colors)
            per_server = [_history_spans(u, wanted) for u in server_urls]
        finally:
            if farm is not None:
                farm.stop()
        _pool_rows(ctx, s, t, n, batch, per_server, _submitted(batch.project))


def _submitted(project: Project) -> dict[str, float]:
    """prompt_id -> time.time() of its POST, from the sidecars in the project's outbox (1 ms resolution)."""
    out = {}
    for path in (project.root / "outbox").glob("*/*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            sidecar = json.loads(path.read_text(encoding="utf-8"))
            out[sidecar["prompt_id"]] = _parse_iso(sidecar["timestamps"]["submitted"])
    return out


def _idle_parts(t0: float, per_server: list[list[tuple[float, float, str]]], submitted: dict[str, float]) -> str:
    """Where a server's idle time went, as means over the servers: before its first execution (from the
    first drop), between its executions, and after its last one until the farm's last execution ended.
    Of the time between executions, the part before the next prompt was posted is the daemon's doing
    (the server had nothing queued); the rest is the server's own (it had the next prompt and paused).
    The sidecar's ``submitted`` is taken right before the POST: the POST's own time counts as the server's."""
    per_server = [spans for spans in per_server if spans]
    last = max(e for spans in per_server for _, e, _ in spans)
    before, between, starved, after = [], [], [], []
    for spans in per_server:
        spans = sorted(spans)
        before.append(spans[0][0] - t0)
        gaps = [(max(0.0, b2 - e1), submitted.get(pid2, e1) - e1) for (_, e1, _), (b2, _, pid2)
                in zip(spans, spans[1:], strict=False)]
        between.append(sum(gap for gap, _ in gaps))
        starved.append(sum(min(gap, max(0.0, late)) for gap, late in gaps))
        after.append(last - spans[-1][1])
    s = len(per_server)
    return (f"idle per server: {1000 * sum(before) / s:.0f} ms before its first job, {1000 * sum(between) / s:.0f} "
            f"ms between jobs ({1000 * sum(starved) / s:.0f} ms of it with nothing queued), "
            f"{1000 * sum(after) / s:.0f} ms after its last")


def _ramp(batch: Batch, per_server: list[list[tuple[float, float, str]]]) -> str:
    """The ramp: from the first drop until every server has started its first job, and the daemon's CPU in
    it (near 100% of one core or more: the GIL is the limit, not a wait)."""
    ramp_end = max(min(b for b, _, _ in spans) for spans in per_server if spans)
    cpu = batch.cpu_between(batch.t0, ramp_end)
    seconds = ramp_end - batch.t0
    # /proc counts CPU in 10 ms ticks: a share over less than 0.1 s would be mostly rounding
    used = "" if cpu is None or seconds < 0.1 else f", daemon CPU in it {100 * cpu / seconds:.0f}% of one core"
    return f"the ramp (first drop to the last server's first start) {1000 * seconds:.0f} ms{used}"


def _pool_rows(ctx: Ctx, s: int, t: float | None, n: int, batch: Batch,
               per_server: list[list[tuple[float, float, str]]], submitted: dict[str, float]) -> None:
    found = sum(len(x) for x in per_server)
    if found != n:
        ctx.notes.append(f"pool S={s}: {found} of {n} executions found in the servers' /history")
    busy = [sum(e - b for b, e, _ in spans) for spans in per_server]
    last_end = max(e for spans in per_server for _, e, _ in spans)
    first_start = min(b for spans in per_server for b, _, _ in spans)
    window = last_end - batch.t0
    idle = [1 - b / window for b in busy]
    mean_exec = sum(busy) / max(1, found)
    t_used = mean_exec if t is None else t
    ideal = n * t_used / s
    makespan = batch.seconds
    label = f"S={s}" + (f" T={t:g}s" if t is not None else f" (given servers, T measured {1000 * t_used:.0f} ms)")
    shown = f"{makespan / ideal:.3f} ({makespan:.2f} s / {ideal:.2f} s, N={n})"
    ctx.add(
        at_most(2, f"{label} makespan / ideal", makespan / ideal, farm_target(s), shown),
        Row(2, f"{label} daemon CPU per job", f"{1000 * batch.cpu / n:.1f} ms ({batch.cpu:.1f} s CPU over "
            f"{makespan:.1f} s: {100 * batch.cpu / makespan:.0f}% of one core; {batch.switches / n:.0f} context "
            "switches per job" + (f"; servers' process {100 * batch.servers_cpu / makespan:.0f}%" if t else "") + ")"),
        Row(2, f"{label} server idle fraction", f"mean {100 * sum(idle) / s:.1f}%, max {100 * max(idle):.1f}% "
            f"(jobs per server {min(map(len, per_server))}-{max(map(len, per_server))}; {_idle_parts(batch.t0, per_server, submitted)}; "
            f"{_ramp(batch, per_server)})"),
        Row(2, f"{label} makespan / measured execution", f"{makespan / (sum(busy) / s):.3f} "
            f"(servers ran {1000 * mean_exec:.1f} ms per job; first start {1000 * (first_start - batch.t0):.0f} ms "
            "after the first drop)"),
    )


SLOW_OUTPUTS_PLUGIN = """
import time

from hotfolder import hookimpl


def slow(job):
    time.sleep({seconds!r})  # a post-processor that takes its time (format conversion, an upload, ...)


@hookimpl
def register_postprocessors(register):
    register("bench_slow", slow)
"""


def section_slow_outputs(ctx: Ctx) -> None:
    """Section 2 on one server with a post-processor slower than the jobs: the server must still never
    wait (the output workers grow while finished jobs wait for them)."""
    n, t, post = max(1, ctx.args.jobs_per_server // 2), ctx.args.exec_time, ctx.args.post_time
    log(f"[2] pool with slow outputs, N={n} T={t:g} S=1, a {post:g} s post-processor per job")
    (server,) = start_servers(ctx, 1, "slow-outputs")
    server.pace(t)  # a job occupies its GPU for T in all, as in the farm above
    try:
        colors = ctx.colors(n)
        batch = run_hotfolder(ctx, "slow-outputs", [server.url], colors, prefix="hfbench/slow",
                              plugins={"bench_slow.py": SLOW_OUTPUTS_PLUGIN.format(seconds=post)},
                              postprocess=["bench_slow"])
        spans = _history_spans(server.url, set(colors))
    finally:
        stop_servers([server])
    last_end = max(e for _, e, _ in spans)
    busy = sum(e - b for b, e, _ in spans)
    # the last job's post-processing comes after the server's work by design: leave it out
    makespan = last_end - batch.t0
    ideal = n * t
    ctx.add(
        at_most(2, f"S=1, {post:g} s post-processor: makespan / ideal (to the last execution)", makespan / ideal,
                1.03, f"{makespan / ideal:.3f} ({makespan:.2f} s / {ideal:.2f} s)"),
        Row(2, f"S=1, {post:g} s post-processor: server idle fraction",
            f"{100 * (1 - busy / (last_end - batch.t0)):.1f}% (jobs {len(spans)}; all published "
            f"{batch.seconds:.2f} s after the first drop)"),
    )


# -- 3. latency ----------------------------------------------------------------------------------------


def section_latency(ctx: Ctx, url: str, server: TestServerProc | None, label: str) -> None:
    m, gap = ctx.args.latency_files, ctx.args.latency_gap
    log(f"[3] latency, {m} files closed in the inbox and {m} renamed in, {gap:g} s apart, on {label}")
    project = Project(ctx.reaper.tempdir("latency"), [url])
    daemon = Daemon(ctx.reaper, project, profile_clock=ctx.args.profile_clock, profile=ctx.profile_path("latency"))
    drops: dict[str, dict[int, float]] = {"close": {}, "rename": {}}
    try:
        daemon.wait_ready()
        warm = ctx.colors(1)[0]
        drop(project.inbox, warm, prefix="hfbench/lat-warm")
        wait_for(lambda: project.count(project.done) >= 1, 60, "the warm-up job", check=lambda: _check(daemon, project))
        if server is not None:
            server.forget()
        for how in ("close", "rename"):
            for color in ctx.colors(m):
                drops[how][color] = drop(project.inbox, color, how=how, prefix="hfbench/lat")
                time.sleep(gap)
        wait_for(lambda: project.count(project.done) >= 1 + 2 * m, 120, "the latency jobs",
                 check=lambda: _check(daemon, project))
    finally:
        daemon.stop()
    if server is not None:
        posted: dict[int, float] = {}
        for row in server.requests():
            if row["method"] == "POST" and row["path"] == "/prompt" and row.get("color") is not None:
                posted.setdefault(row["color"], row["time"])
        source = "server-recorded POST /prompt"
    else:  # a real ComfyUI records no request times: use the sidecar's 'submitted' (taken just before the POST)
        posted = {}
        for color in (c for d in drops.values() for c in d):
            name = scenario_name(color)[: -len(".json")]
            sidecar = json.loads((project.root / "outbox" / name / f"{name}.json").read_text())
            posted[color] = _parse_iso(sidecar["timestamps"]["submitted"])
        source = "sidecar 'submitted' (1 ms resolution)"
        ctx.notes.append(f"latency on {label}: {source}, since the server records no request times")
    for how, label_how in (("close", "closed after writing"), ("rename", "renamed in")):
        lat = [1000 * (posted[c] - t) for c, t in drops[how].items() if c in posted]
        if len(lat) != len(drops[how]):
            ctx.notes.append(f"latency ({how}): {len(drops[how]) - len(lat)} POSTs not found")
        p50, p95 = percentile(lat, 0.5), percentile(lat, 0.95)
        if how == "close":
            ctx.add(at_most(3, f"file {label_how} -> POST p50", p50, 20, f"{p50:.1f} ms", " ms"))
        else:
            ctx.add(Row(3, f"file {label_how} -> POST p50", f"{p50:.1f} ms"))
        ctx.add(Row(3, f"file {label_how} -> POST p95 / max", f"{p95:.1f} ms / {max(lat):.1f} ms"))


def _parse_iso(text: str) -> float:
    base, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac or '0'}")


# -- 4. memory -----------------------------------------------------------------------------------------


def _prefill(inbox: Path, colors: list[int], prefix: str) -> None:
    """Files already complete in the inbox (mtime in the past, so the startup scan takes them at once)."""
    old = time.time() - 600
    for color in colors:
        path = inbox / scenario_name(color)
        path.write_bytes(scenario_bytes(color, prefix=prefix))
        os.utime(path, (old, old))


def _wait_quiet(pid: int, *, at_least: float, timeout: float, cpu_per_s: float = 0.02, sample: float = 1.0) -> float:
    """Wait until process ``pid`` uses < ``cpu_per_s`` CPU seconds per second (over ``sample`` seconds);
    return the waited time."""
    start = time.monotonic()
    time.sleep(at_least)
    last = proc_cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(sample)
        now = proc_cpu_seconds(pid)
        if now - last < cpu_per_s * sample:
            break
        last = now
    return time.monotonic() - start


DOWNLOAD_PROBE = r"""
import json, sys, time
from pathlib import Path
from hotfolder.comfy.http import ComfyHTTP

def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

url, small, big, dest = sys.argv[1:5]
http = ComfyHTTP(url)
http.download(filename=small, subfolder="hfbench", type_="output", dest=Path(dest))  # warm: imports, pool
before = kb("VmHWM")
t = time.monotonic()
size, _ = http.download(filename=big, subfolder="hfbench", type_="output", dest=Path(dest))
print(json.dumps({"before": before, "after": kb("VmHWM"), "size": size, "seconds": time.monotonic() - t}))
"""


def section_memory(ctx: Ctx) -> None:
    b = ctx.args.backlog
    log(f"[4] memory: {b} files waiting on a paused server")
    servers = start_servers(ctx, 1, "memory")
    server = servers[0]
    try:
        server.delay("EmptyImage", 86400)  # the first prompts never finish: everything else waits
        project = Project(ctx.reaper.tempdir("memory"), [server.url])
        _prefill(project.inbox, ctx.colors(b), "hfbench/mem")
        daemon = Daemon(ctx.reaper, project, profile_clock=ctx.args.profile_clock, profile=ctx.profile_path("memory"))
        try:
            daemon.wait_ready(120)
            waited = _wait_quiet(daemon.pid, at_least=3.0, timeout=120)
            _check(daemon, project)
            hwm, rss = daemon.status_kb("VmHWM"), daemon.status_kb("VmRSS")
            posts = sum(1 for r in server.requests() if r["method"] == "POST" and r["path"] == "/prompt")
            left = sum(1 for e in os.scandir(project.inbox) if e.is_file())
        finally:
            daemon.stop()
        ctx.add(at_most(4, f"daemon peak RSS, {b} files waiting", hwm / 1024, 100,
                        f"{hwm / 1024:.1f} MB (VmHWM; RSS {rss / 1024:.1f} MB)", " MB"))
        ctx.notes.append(f"memory: measured {waited:.0f} s after start, once the daemon was idle; {posts} prompts "
                         f"POSTed and waiting, {left} files still in inbox/")

        log("[4] memory: RSS added by downloading a 1 GiB output")
        mb = ctx.args.download_mb
        folder = server.output_dir / "hfbench"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "small.bin").write_bytes(b"x" * 1024)
        big = folder / "big.bin"
        with open(big, "wb") as fh:
            fh.truncate(mb * 1024 * 1024)  # sparse: instant, reads as zeros
        dest = ctx.reaper.tempdir("download") / "big.bin"
        try:
            out = subprocess.run([PYTHON, "-c", DOWNLOAD_PROBE, server.url, "small.bin", "big.bin", str(dest)],
                                 capture_output=True, text=True, timeout=600, env=hermetic_env(), cwd=str(ROOT),
                                 check=True)
        finally:
            big.unlink(missing_ok=True)
            dest.unlink(missing_ok=True)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        added = (probe["after"] - probe["before"]) / 1024
        if probe["size"] != mb * 1024 * 1024:
            ctx.notes.append(f"download: got {probe['size']} bytes, expected {mb * 1024 * 1024}")
        size = f"{mb // 1024} GiB" if mb % 1024 == 0 else f"{mb} MiB"
        ctx.add(at_most(4, f"RSS added by a {size} download", added, 16,
                        f"{added:.1f} MB (VmHWM {probe['before'] / 1024:.1f} -> {probe['after'] / 1024:.1f} MB, "
                        f"{probe['size'] / probe['seconds'] / 2**20:.0f} MB/s)", " MB"))
    finally:
        stop_servers(servers)


# -- 5. per-job cost vs backlog ------------------------------------------------------------------------


def section_backlog(ctx: Ctx) -> None:
    k = ctx.args.batch
    warm = min(50, max(5, k // 2))  # jobs left out before timing: the startup scan, first connections
    rounds = min(3, ctx.args.rounds)  # the two backlogs take turns; medians are reported
    per_job: dict[int, list[float]] = {100: [], ctx.args.backlog: []}
    for r in range(1, rounds + 1):
        for waiting in (100, ctx.args.backlog):
            log(f"[5] backlog, round {r}: {k} jobs timed while {waiting} other files wait")
            servers = start_servers(ctx, 1, f"backlog{waiting}")
            try:
                project = Project(ctx.reaper.tempdir(f"backlog{waiting}"), [servers[0].url])
                _prefill(project.inbox, ctx.colors(waiting + k + warm), f"hfbench/backlog{waiting}")
                daemon = Daemon(ctx.reaper, project, profile_clock=ctx.args.profile_clock,
                                profile=ctx.profile_path(f"backlog-{waiting}"))
                try:
                    daemon.wait_ready(120)
                    wait_for(lambda: project.count(project.done) >= warm + k, 900, f"{warm + k} jobs",
                             interval=0.1, check=lambda: _check(daemon, project))
                finally:
                    daemon.stop()
                ends = project.archived_ctimes()
                per_job[waiting].append((ends[warm + k - 1] - ends[warm - 1]) / k)
            finally:
                stop_servers(servers)
    for waiting, times in per_job.items():
        shown = f"{1000 * statistics.median(times):.2f} ms" + (
            f" median (rounds {1000 * min(times):.2f}-{1000 * max(times):.2f})" if rounds > 1 else "")
        ctx.add(Row(5, f"time per job, {waiting} files waiting", shown))
    ratio = statistics.median(per_job[ctx.args.backlog]) / statistics.median(per_job[100])
    ctx.add(at_most(5, f"per-job cost {ctx.args.backlog} / 100 waiting", ratio, 1.10, f"{ratio:.2f} (flat = 1)"))


# -- 6. idle GPU after a server restart -----------------------------------------------------------------


def _first_start(url: str, after: float, timeout: float) -> float:
    """time.time() of the first execution_start in ``url``'s history since ``after`` (a restarted server's
    history holds only what ran since; timestamps are whole milliseconds), waiting for its entry (filed
    when the prompt ends)."""
    found: list[float] = []

    def look() -> bool:
        found[:] = [b for b, _, _ in _history_spans(url, None) if b >= after - 0.001]
        return bool(found)

    wait_for(look, timeout, f"a prompt executed on {url} after its restart", interval=0.1)
    return min(found)


def section_restart(ctx: Ctx) -> None:
    """One server restarted mid-run (it forgets its queue and the running prompt), ``--restarts`` times:
    seconds from when it answers again to its next execution start, the time its GPU sat idle."""
    n, t, r = ctx.args.restart_jobs, ctx.args.exec_time, ctx.args.restarts
    log(f"[6] restart: N={n} T={t:g} S=1, the server restarted {r} time(s) mid-run")
    farm = start_farm(ctx, 1, "restart")
    farm.delay("ImageInvert", t)
    project = Project(ctx.reaper.tempdir("restart"), farm.urls, lost_grace=15.0)
    daemon = Daemon(ctx.reaper, project, profile_clock=ctx.args.profile_clock, profile=ctx.profile_path("restart"))
    idle: list[float] = []
    try:
        daemon.wait_ready()
        drop(project.inbox, ctx.colors(1)[0], prefix="hfbench/restart-warm")
        wait_for(lambda: project.count(project.done) >= 1, 60, "the warm-up job", check=lambda: _check(daemon, project))
        colors = ctx.colors(n)
        t0 = time.time()
        for color in colors:
            drop(project.inbox, color, prefix="hfbench/restart")
        for k in range(1, r + 1):
            wait_for(lambda k=k: project.count(project.done) >= 1 + k * n // (r + 1), 300, f"restart {k}'s turn",
                     interval=0.02, check=lambda: _check(daemon, project))
            time.sleep(random.uniform(0, t))  # somewhere inside the running prompt
            answering = farm.restart(0)
            idle.append(_first_start(farm.url, answering, 60) - answering)
            log(f"  restart {k}: idle {idle[-1]:.3f} s after the server answered again")
        wait_for(lambda: project.count(project.done) >= 1 + n, 300, f"{n} jobs after {r} restart(s)", interval=0.1,
                 check=lambda: _check(daemon, project))
        makespan = max(project.archived_ctimes()) - t0
    finally:
        daemon.stop()
        farm.stop()
    sidecars = [json.loads(p.read_text()) for p in (project.root / "outbox").glob("*/*.json")]
    resubmitted = sum(int(sc.get("resubmissions") or 0) for sc in sidecars)
    shown = f"{max(idle):.3f} s worst of {r} ({', '.join(f'{x:.3f}' for x in idle)} s)"
    ctx.add(
        at_most(6, "idle GPU after a server restart (answers again -> next execution)", max(idle), 1.0, shown, " s"),
        Row(6, f"restart run: N={n} T={t:g}s, {r} restart(s), lost_grace 15 s",
            f"{len(sidecars)} published of {n + 1}, {resubmitted} prompts resubmitted; makespan / ideal "
            f"{makespan / (n * t):.3f}"),
    )


# -- table and main ------------------------------------------------------------------------------------


def print_table(ctx: Ctx, header: str) -> None:
    cols = ("#", "measure", "value", "target", "value/target", "met")
    cells = [(str(r.section), r.measure, r.value, r.target, "" if r.ratio is None else f"{r.ratio:.3f}",
              "" if r.met is None else ("yes" if r.met else "NO")) for r in ctx.rows]
    widths = [max(len(c[i]) for c in [cols, *cells]) for i in range(len(cols))]
    line = "  ".join("-" * w for w in widths)
    print(header)
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=False)).rstrip())
    print(line)
    last = None
    for r, c in zip(ctx.rows, cells, strict=False):
        if last is not None and r.section != last:
            print()
        last = r.section
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=False)).rstrip())
    for note in ctx.notes:
        print(f"note: {note}")
    sys.stdout.flush()


# waiting, not working: lock and condition waits, sleeps, select/poll, socket reads (the server's time)
BLOCKING = {"acquire", "wait", "sleep", "select", "poll", "recv", "recv_into", "_wait_for_tstate_lock",
            "accept", "read_events", "readinto"}


def _builtin_name(name: str) -> str:
    match = re.search(r"(?:method|function) '?([\w.]+)'?", name)
    return (match.group(1) if match else name).split(".")[-1]


def print_profiles(ctx: Ctx, top: int = 25) -> None:
    """Top functions by own time (summed over every thread of the daemon), waiting left out."""
    for tag, path in ctx.profiles:
        if not path.is_file():
            continue
        stats = pstats.Stats(str(path))
        rows = []
        for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if file == "~" and _builtin_name(name) in BLOCKING:
                continue
            where = name if file == "~" else f"{_short(file)}:{line}({name})"
            rows.append((tt, ct, nc, where))
        rows.sort(reverse=True)
        print(f"\nprofile {tag} ({path}, {ctx.args.profile_clock} clock): top {top} by own time over all "
              "threads, waits left out")
        print(f"{'tottime':>9} {'cumtime':>9} {'calls':>8}  function")
        for tt, ct, nc, where in rows[:top]:
            print(f"{tt:9.3f} {ct:9.3f} {nc:8d}  {where}")


def _short(file: str) -> str:
    parts = Path(file).parts
    for anchor in ("hotfolder", "site-packages", "python3.11"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) - 1:])
    return Path(file).name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (10 jobs per server in 2, 1,000-file backlog, ...)")
    p.add_argument("--servers-url", action="append", default=[], metavar="URL[,URL...]",
                   help="run 1-3 against these ComfyUI servers instead of test servers (repeatable)")
    p.add_argument("--jobs", type=int, help="trivial jobs per client in 1 (default 300, quick 40)")
    p.add_argument("--rounds", type=int, help="rounds of the three clients in 1, medians reported (default 3, quick 1)")
    p.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)} or 1-{len(SECTIONS)}")
    p.add_argument("--jobs-per-server", type=int, help="in 2, N = this x S (default 100, quick 10)")
    p.add_argument("--exec-time", type=float, default=0.2, help="T in 2 and 6, seconds (default 0.2)")
    p.add_argument("--farm", default="1,2,4,8,16,32:1",
                   help="S values in 2, each with its own T as S:T (else --exec-time); default 1,2,4,8,16,32:1")
    p.add_argument("--post-time", type=float, default=0.5,
                   help="in 2, also N/4 jobs on one server with a post-processor of this many seconds "
                        "(default 0.5; 0: skip)")
    p.add_argument("--pool-px", type=int, default=8,
                   help="with --servers-url: image size of the jobs in 1 and 2, to give them a real execution time")
    p.add_argument("--latency-files", type=int, help="files per kind in 3 (default 50, quick 10)")
    p.add_argument("--latency-gap", type=float, default=0.25, help="seconds between drops in 3 (default 0.25)")
    p.add_argument("--backlog", type=int, help="files waiting in 4 and 5 (default 10000, quick 1000)")
    p.add_argument("--batch", type=int, help="timed jobs in 5 (default 200, quick 50)")
    p.add_argument("--download-mb", type=int, help="size of the download in 4, MiB (default 1024, quick 256)")
    p.add_argument("--restart-jobs", type=int, help="N in 6 (default 100, quick 20)")
    p.add_argument("--restarts", type=int, help="server restarts in 6 (default 3, quick 1)")
    p.add_argument("--tmp", type=Path, help="where temp folders go (default: the system temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the temp folders (daemon logs, outboxes)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run each daemon under cProfile (all threads), write DIR/<run>.prof, print the top functions")
    p.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                   help="with --profile: wall time (waits included) or each thread's CPU time")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"jobs": (300, 40), "rounds": (3, 1), "jobs_per_server": (100, 10), "latency_files": (50, 10), "backlog": (10000, 1000),
                "batch": (200, 50), "download_mb": (1024, 256),
                "restart_jobs": (100, 20), "restarts": (3, 1)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    try:
        args.farm = [(int(s), float(t) if t else args.exec_time)
                     for s, _, t in (x.strip().partition(":") for x in args.farm.split(",") if x.strip())]
    except ValueError:
        p.error(f"--farm: expected S or S:T, comma-separated (got {args.farm!r})")
    args.servers_url = [u.strip() for arg in args.servers_url for u in arg.split(",") if u.strip()]
    wanted = set(SECTIONS)
    if args.only:
        wanted = set()
        for word in args.only.split(","):
            word = word.strip()
            if word.isdigit() and 1 <= int(word) <= len(SECTIONS):
                word = SECTIONS[int(word) - 1]
            if word not in SECTIONS:
                p.error(f"--only: unknown section {word!r} (choose from {', '.join(SECTIONS)})")
            wanted.add(word)
    args.sections = [s for s in SECTIONS if s in wanted]
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if SIGINT came in ignored
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    reaper = Reaper(args.tmp, keep=args.keep)
    ctx = Ctx(args, reaper)
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    where = ", ".join(args.servers_url) if args.servers_url else "test servers (bench/testserver.py processes)"
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    header = (f"hotfolder bench @ {commit}  {'--quick  ' if args.quick else ''}on {where}; {os.cpu_count()} CPUs, "
              f"load {load} at start; temp folders on {filesystem(args.tmp or tempfile.gettempdir())}\n"
              f"1: {args.jobs} jobs x {args.rounds} rounds  2: N={args.jobs_per_server} x S, "
              + (f"{args.pool_px}x{args.pool_px} px, T measured" if args.servers_url
                 else "S:T " + ",".join(f"{s}:{t:g}s" for s, t in args.farm))
              +
              f"  3: {args.latency_files}+{args.latency_files} files, {args.latency_gap:g}s apart"
              f"  4/5: {args.backlog} waiting, {args.batch}-job batch, {args.download_mb} MiB download"
              f"  6: N={args.restart_jobs} T={args.exec_time:g}s, {args.restarts} restart(s)"
              + ("\n(4-6 on local test servers: they need a server the bench can pause or restart)"
                 if args.servers_url else ""))
    started = time.monotonic()
    status = 0
    try:
        for name in args.sections:
            try:
                run_section(ctx, name)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # noqa: BLE001 - one broken section must not hide the others
                status = 1
                log(f"  {name} failed: {type(err).__name__}: {err}")
                ctx.rows.append(Row(SECTIONS.index(name) + 1, name, f"ERROR: {type(err).__name__}: {err}".splitlines()[0]))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        status = 130
    finally:
        reaper.close()
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print_table(ctx, header + f"\n(ran {time.monotonic() - started:.0f} s; load {load} at the end)")
    if args.profile is not None:
        print_profiles(ctx)
    return status


def run_section(ctx: Ctx, name: str) -> None:
    urls = ctx.args.servers_url
    if name in {"throughput", "latency"}:
        server: TestServerProc | None = None
        if urls:
            url, label = urls[0], urls[0]
        else:
            server = start_servers(ctx, 1, name)[0]
            url, label = server.url, "1 test server"
        try:
            if name == "throughput":
                section_throughput(ctx, url, label)
            else:
                section_latency(ctx, url, server, label)
        finally:
            if server is not None:
                server.stop()
    elif name == "pool":
        section_pool(ctx, urls or None)
        if not urls and ctx.args.post_time > 0:
            section_slow_outputs(ctx)
    elif name == "memory":
        section_memory(ctx)
    elif name == "backlog":
        section_backlog(ctx)
    elif name == "restart":
        section_restart(ctx)


if __name__ == "__main__":
    sys.exit(main())
