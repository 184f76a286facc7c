"""Routing: which server a job goes to (pins, labels, weights, capabilities), whether a server is up,
waiting for one that is away, and failover to another once it has been away for ``lost_grace``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from hotfolder import budgets
from hotfolder.comfy.client import Cancelled, ComfyClient
from hotfolder.comfy.http import POOL_SIZE
from hotfolder.comfy.object_info import ObjectInfoCache
from hotfolder.config import Settings
from hotfolder.engine.core import Core, logger
from hotfolder.errors import HotfolderError, ServerError
from hotfolder.record import JobState
from hotfolder.stages.context import JobContext
from hotfolder.stages.track import Forgotten
from hotfolder.stages.upload import Uploads
from hotfolder.templates import validate
from hotfolder.templates.problems import ERROR, ValidationError

RESTART_CHECK = 0.05  # seconds between looks at the servers' WebSocket reconnect counts
RETRY_MAX = 0.5  # at most this many seconds between tries of a server that is away: it gets work soon after it is back


class Failover(Exception):
    """The job's server has been down too long while another is up: move the job."""


def move_away(ctx: JobContext, client: ComfyClient) -> None:
    """Take the job off ``client`` (down too long, see Failover): it is routed again, under the same
    prompt id, and submitted again if it was."""
    job = ctx.job
    ctx.log.warning("%s has been down for over %g s; moving the job to another server (same prompt id)",
                    client.display_url, ctx.settings.lost_grace)
    if job.submissions:
        job.resubmissions += 1
    job.server = None
    job.state = "submitting" if job.submissions else "pending"
    ctx.save()


class Router:
    """The configured servers and what is known of them: load, who is down since when, their
    /object_info (cached) and what was uploaded to each."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        self.core = core
        # connections each server's pool keeps: one per thread that may call it at once (every job worker,
        # its output workers, the prepare threads reading /object_info); beyond that urllib3 opens and drops
        callers = (settings.queue_depth + 1) * len(settings.servers) + settings.output_workers + 2
        self.clients = [
            ComfyClient(
                server, connect_timeout=settings.connect_timeout, read_timeout=settings.http_timeout,
                poll_interval=settings.poll_interval, history_grace=settings.history_grace,
                lost_grace=settings.lost_grace, limits=budgets.Limits.from_settings(settings),
                pool_size=max(POOL_SIZE, callers),
            )
            for server in settings.servers
        ]
        self.object_info = {c.name: ObjectInfoCache(c.http.object_info, replacements=c.http.node_replacements,
                                                    name=c.display_url)
                            for c in self.clients}
        self.uploads = Uploads([c.name for c in self.clients])
        self._load = {c.name: 0 for c in self.clients}
        self._given = {c.name: 0 for c in self.clients}  # when each was last picked (a serial): breaks ties
        self._picks = 0
        self._down_since: dict[str, float] = {}
        self._followed: dict[str, dict[str, Forgotten]] = {c.name: {} for c in self.clients}  # prompts tracked
        if len(self.clients) > 1:
            for client in self.clients:
                client.reach.waiting = (f"Its jobs wait until it answers, or move to another server after "
                                        f"lost_grace = {settings.lost_grace:g} s; hotfolder keeps trying.")

    @property
    def settings(self) -> Settings:
        """The engine's settings now (a reload may change them)."""
        return self.core.settings

    def start(self) -> None:
        """Start the thread that finds the prompts a restarted server forgot (see :meth:`watching`)."""
        t = threading.Thread(target=self._watch_restarts, name="restart-watch", daemon=True)
        t.start()
        self.core.threads.append(t)

    @contextlib.contextmanager
    def watching(self, client: ComfyClient, prompt_id: str) -> Iterator[Forgotten]:
        """While the block runs (the prompt is followed to its end), the flag it yields is set if
        ``client``'s WebSocket reconnects and the server then has the prompt in neither its queue nor
        its history: it restarted and forgot it, and the job submits it again at once."""
        flag = Forgotten(self.core.stop, wake=lambda: client.wake(prompt_id))
        followed = self._followed[client.name]
        with self.core.cond:
            followed[prompt_id] = flag
        try:
            yield flag
        finally:
            with self.core.cond:
                if followed.get(prompt_id) is flag:
                    del followed[prompt_id]

    def _watch_restarts(self) -> None:
        """After each reconnect of a server's WebSocket, once it is connected again, ask the server
        for the prompts followed there (until it answers) and flag those it forgot."""
        seen = {c.name: c.stream.reconnects for c in self.clients}
        while not self.core.stop.wait(RESTART_CHECK):
            for client in self.clients:
                count = client.stream.reconnects
                if count == seen[client.name] or not client.stream.connected:
                    continue
                try:
                    if self._flag_forgotten(client):
                        seen[client.name] = count
                except Exception:  # noqa: BLE001 - a bug here must not stop the thread: lost_grace still applies
                    logger.exception("Looking for the prompts %s forgot failed", client.display_url)
                    seen[client.name] = count

    def _flag_forgotten(self, client: ComfyClient) -> bool:
        """Flag the prompts followed on ``client`` that it has in neither its queue nor its history.
        False if it did not answer (asked again at the next look)."""
        with self.core.cond:
            followed = list(self._followed[client.name].items())
        try:
            for prompt_id, flag in followed:
                if client.locate(prompt_id) == "absent":  # submitted before it was followed: it was there
                    logger.info("%s came back without prompt %s (restarted)", client.display_url, prompt_id)
                    flag.set()
        except ServerError as err:
            logger.debug("%s reconnected but does not answer yet: %s", client.display_url, err)
            return False
        return True

    def is_down(self, name: str) -> bool:
        """Whether the server did not answer last time (called with or without the lock)."""
        return name in self._down_since

    def server_up(self, client: ComfyClient) -> bool:
        """Whether the server answered last time hotfolder asked (and its WebSocket is connected)."""
        with self.core.cond:
            down = client.name in self._down_since
        return not down and client.ws_connected

    @contextlib.contextmanager
    def using(self, client: ComfyClient) -> Iterator[None]:
        """Count a job on ``client`` while the block runs (the load routing balances)."""
        with self.core.cond:
            self._load[client.name] += 1
        try:
            yield
        finally:
            with self.core.cond:
                self._load[client.name] -= 1

    def client_named(self, name: str | None) -> ComfyClient | None:
        """The configured server of that name (a job's ``server``), if there is one."""
        return next((client for client in self.clients if client.name == name), None) if name else None

    def pick(self, job: JobState, workflow: dict[str, Any], log: Any = logger) -> ComfyClient:
        """The server for this job: the one it was sent to, else the least loaded (by weight) of the
        servers it may use (a scenario's `server:` or `label:` pins it) that are up; among equals the
        one with fewest jobs, then the one picked longest ago (equal servers take turns). ``log``: the job's."""
        sent_to = self.client_named(job.server)
        if sent_to is not None:
            return sent_to
        options = job.spec.options if job.spec is not None else {}
        candidates = [c for c in self.clients if _matches_pin(c, options.get("server"), options.get("label"))]
        if not candidates:
            raise ServerError(
                f"No configured server matches the job's pin (server {options.get('server')!r}, label {options.get('label')!r}).",
                hint="Configured: " + ", ".join(f"{c.name} {list(c.server.labels)}" for c in self.clients),
            )
        if self.settings.validate:
            candidates = self._capable(job, workflow, candidates, log)
        with self.core.cond:
            up = [c for c in candidates if c.name not in self._down_since] or candidates
            chosen = min(up, key=lambda c: ((self._load[c.name] + 1) / c.server.weight, self._load[c.name],
                                            self._given[c.name]))
            self._picks += 1
            self._given[chosen.name] = self._picks
            return chosen

    def _capable(self, job: JobState, workflow: dict[str, Any], candidates: list[ComfyClient],
                 log: Any) -> list[ComfyClient]:
        """The candidates whose /object_info has every node class, input value and model file the
        workflow uses. A server whose /object_info cannot be read now stays a candidate (ComfyUI's own
        validation still applies when it answers). None capable: ValidationError, before anything is queued.
        Servers whose catalogues are the same (one digest) share one passing verdict: on a farm of
        identical servers the workflow is checked once, not once per server."""
        capable, refused = [], []
        fields = (job.template or {}).get("fields") or {}
        known = [item["name"] for item in job.inputs]  # uploaded right before submitting, under these names
        passed: set[str] = set()  # digests of the catalogues the workflow passed, for this job
        for client in candidates:
            cache = self.object_info[client.name]
            try:
                info, digest = cache.get_with_digest()  # fetched if stale (what it raises: see below)
                if digest in passed:
                    capable.append(client)
                    continue
                problems = validate.validate_with_refresh(cache, workflow, scenario_fields=fields, known_files=known,
                                                          log=log, info=info)
            except HotfolderError:
                capable.append(client)
                continue
            errors = [p for p in problems if p.severity == ERROR]
            if not errors and digest is not None and cache.digest == digest:  # not refreshed meanwhile
                passed.add(digest)
            if errors:
                refused.append((client, errors))
            else:
                capable.append(client)
        if capable:
            return capable
        client, errors = refused[0]
        err = ValidationError.from_problems(
            errors, subject=f"Job {job.name!r} (template {(job.template or {}).get('name')!r})",
            server=client.display_url,
        )
        if len(refused) > 1:
            err.message += "\n(The other servers refuse it too: " + ", ".join(c.display_url for c, _ in refused[1:]) + ".)"
        raise err

    def object_info_source(self, *, include_down: bool) -> tuple[Mapping[str, Any], Hashable] | None:
        """The /object_info of the first server that answers (a cached copy counts), with a version key
        for caching conversions; None if none does. Servers known to be down are skipped unless
        ``include_down``."""
        with self.core.cond:
            down = set(self._down_since)
        for client in self.clients:
            if client.name in down and not include_down:
                continue
            cache = self.object_info[client.name]
            try:
                info = cache.get()
            except Exception as err:  # noqa: BLE001 - any failure means: not this server, now
                logger.debug("No /object_info from %s: %s", client.display_url, err)
                continue
            return info, (client.display_url, cache.version)
        return None

    def wait_for_server(self, client: ComfyClient, *, movable: bool = False) -> None:
        """Wait until ``client`` answers again (asked every RETRY_MAX seconds at most, and as soon as its
        WebSocket connects). With ``movable``, raise Failover instead once it has been down for
        ``lost_grace`` seconds while another server is up. Cancelled when stopping."""
        stop = self.core.stop
        delay = 0.25
        while not stop.is_set():
            try:
                client.http.system_stats()
                with self.core.cond:
                    if self._down_since.pop(client.name, None) is not None:
                        self.object_info[client.name].invalidate()  # it may have restarted with other nodes
                        self.uploads.forget(client.name)  # ... or with an empty input folder
                client.reach.up()  # logs "is back" if it was away
                if not client.ws_connected:
                    client.stream.retry_now()  # reconnect now, not at its next attempt: its messages, the restart check
                return
            except ServerError as err:
                with self.core.cond:
                    since = self._down_since.setdefault(client.name, time.monotonic())
                    others_up = any(c.name not in self._down_since for c in self.clients if c is not client)
                client.reach.down(err)  # logs only when it stops answering, not per retry
                if movable and others_up and time.monotonic() - since >= self.settings.lost_grace:
                    raise Failover(client.name) from None
            if client.ws_connected:
                stop.wait(delay)
            else:  # its WebSocket connecting again is the first sign that it is back: ask at once then
                client.wait_ws(delay)
            delay = min(delay * 2, RETRY_MAX)
        raise Cancelled(client.name)


def _matches_pin(client: ComfyClient, server: Any, label: Any) -> bool:
    if server is not None and str(server) not in {client.name, client.display_url, client.server.url}:
        return False
    return label is None or str(label) in client.server.labels
