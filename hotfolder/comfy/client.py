"""One ComfyUI server: its HTTP API, its one WebSocket, and the prompts we are waiting for there.

Completion is decided by whichever comes first of the WebSocket (``executing`` with ``node: null`` and
our prompt_id, or ``execution_success``/``execution_error``/``execution_interrupted``) and polling
``/history/{id}``; the WebSocket only makes it faster. After the end of a prompt the history entry may
lag behind (PROTOCOL §6), so it is polled until it appears. A prompt that is in neither ``/queue`` nor
``/history`` for ``lost_grace`` seconds has been lost (ComfyUI restarted, or someone cleared the queue):
:class:`PromptLost` tells the caller to submit it again under the same id.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hotfolder.budgets import DEFAULTS, Limits
from hotfolder.comfy.http import POOL_SIZE, ComfyHTTP
from hotfolder.comfy.reach import Reachability
from hotfolder.comfy.ws import EventStream
from hotfolder.config import ServerConfig
from hotfolder.errors import HotfolderError, ServerError, ServerUnavailable

logger = logging.getLogger(__name__)


class Cancelled(Exception):
    """The daemon is stopping; the job stays recorded and resumes at the next start."""


class Aborted(Exception):  # noqa: N818 - not an error: a user cancelled the job
    """The job waiting for this prompt was cancelled; the caller cancels the prompt on the server."""


class PromptLost(HotfolderError):
    """The server no longer knows the prompt (restart, queue cleared): submit it again, same prompt_id."""

    stage = "track"


@dataclass
class Progress:
    node: str | None = None
    value: float = 0
    max: float = 0


@dataclass(frozen=True)
class ServerJob:
    """A prompt's state on the server as its jobs API says it: ``pending`` (with its place in the queue,
    1 = next) or ``in_progress``."""

    state: str
    position: int | None = None


@dataclass
class PromptWatch:
    """What the WebSocket told us about one prompt."""

    prompt_id: str
    ended: threading.Event = field(default_factory=threading.Event)
    outcome: str | None = None  # success | error | interrupted
    error: dict[str, Any] | None = None
    started: float | None = None  # wall clock seconds
    cached: list[str] = field(default_factory=list)
    node_started: dict[str, float] = field(default_factory=dict)
    node_seconds: dict[str, float] = field(default_factory=dict)
    current_node: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # from `executed`, a fallback for history
    progress: Progress = field(default_factory=Progress)
    listener: Callable[[PromptWatch], None] | None = None
    wake: threading.Event = field(default_factory=threading.Event)  # set to make its waiter look now
    generation: int | None = None  # the WebSocket connection routing to this watch since it began; None: none
    seen_start: bool = False  # execution_start arrived on that connection

    def complete(self, generation: int) -> bool:
        """True when the WebSocket told the whole run, success included, on one unbroken connection that
        was up before the prompt was sent: TCP loses nothing within a connection, so the ``executed``
        outputs are all of them (cached output nodes send ``executed`` too: PROTOCOL 4)."""
        return (self.outcome == "success" and self.seen_start and self.generation is not None
                and self.generation == generation)

    def _node_done(self, now: float) -> None:
        if self.current_node is not None and self.current_node in self.node_started:
            self.node_seconds[self.current_node] = round(now - self.node_started[self.current_node], 4)
        self.current_node = None


class Dequeue:
    """The prompts one cancel takes off one server (``server``, its name): a single
    ``POST /queue {"delete": [ids]}``, sent by the first of their jobs to cancel; the others wait for it
    before stopping their own prompt."""

    def __init__(self, server: str, prompt_ids: tuple[str, ...]) -> None:
        self.server, self.prompt_ids = server, prompt_ids
        self._lock = threading.Lock()
        self._sent = False

    def send(self, http: ComfyHTTP) -> None:
        """The delete, unless it was sent (one that failed is sent again by the next job)."""
        with self._lock:
            if not self._sent:
                http.delete_pending(*self.prompt_ids)
                self._sent = True


@dataclass
class PromptResult:
    """The outcome of a finished prompt, from its history entry."""

    prompt_id: str
    status: str  # success | error | interrupted
    outputs: dict[str, Any]
    history: dict[str, Any]
    watch: PromptWatch
    error: dict[str, Any] | None = None


class ComfyClient:
    """HTTP + one shared WebSocket for one server; thread-safe, shared by every job sent there."""

    #: At most this many seconds between a waiter's looks at its ``cancel`` and ``abort`` flags, which
    #: wake it by themselves only when their setter calls :meth:`wake`.
    flag_check = 0.5

    def __init__(
        self,
        server: ServerConfig,
        *,
        client_id: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        poll_interval: float = 5.0,
        history_grace: float = 30.0,
        lost_grace: float = 15.0,
        limits: Limits = DEFAULTS,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.server = server
        self.name = server.name
        self.display_url = server.display_url
        self.client_id = client_id or uuid.uuid4().hex
        # credentials travel in headers only: the URLs used (and logged by libraries) carry none
        self.http = ComfyHTTP(
            server.display_url, display_url=server.display_url, headers=server.request_headers(), verify=server.verify,
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_response_size=limits.max_response_size, max_download_size=limits.max_download_size,
            pool_size=pool_size,  # as many as the threads that may call this server at once
        )
        self.poll_interval = poll_interval
        self.history_grace = history_grace
        self.lost_grace = lost_grace
        self._watches: dict[str, PromptWatch] = {}
        self._lock = threading.Lock()
        self._ws_changed = threading.Condition(self._lock)
        self._ws_generation = 0
        self.reach = Reachability(server.display_url)  # logs when the server stops or starts answering
        self.stream = EventStream(
            server.display_url, self.client_id, on_message=self._on_message, on_state=self._on_state,
            on_failure=self.reach.down,
            display_url=server.display_url, headers=server.request_headers(), verify=server.verify,
            connect_timeout=connect_timeout, max_message_size=limits.max_ws_message_size,
            # queue broadcasts and per-node progress_state: half of all messages, never read here
            ignore_types=("status", "progress_state"),
        )
        self._system_stats: dict[str, Any] | None = None
        self._jobs_api: bool | None = None  # probed once per connection (a restart may change the version)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.stream.start()

    def close(self) -> None:
        self.stream.stop()
        self.http.close()

    @property
    def ws_connected(self) -> bool:
        return self.stream.connected

    def wait_ws(self, timeout: float) -> bool:
        """Wait until the WebSocket is connected (so messages for a new prompt will reach us)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self.stream.connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ws_changed.wait(left)
        return True

    def system_stats(self) -> dict[str, Any] | None:
        """Cached ``/system_stats`` (for the ComfyUI version in sidecars); None if unavailable."""
        if self._system_stats is None:
            try:
                self._system_stats = self.http.system_stats()
            except ServerError:
                return None
        return self._system_stats

    def comfyui_version(self) -> str | None:
        stats = self.system_stats() or {}
        system = stats.get("system") if isinstance(stats, dict) else None
        return system.get("comfyui_version") if isinstance(system, dict) else None

    # -- WebSocket routing -----------------------------------------------------------------------

    def _on_state(self, up: bool) -> None:
        if up:
            self.reach.up()
        with self._lock:
            self._ws_generation += 1
            self._ws_changed.notify_all()
            watches = list(self._watches.values())
        if not up:
            self._system_stats = None
        self._jobs_api = None  # ask again: the server may have restarted as another version
        for watch in watches:  # wake waiters so they poll history at once
            if watch.listener:
                watch.listener(watch)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, dict):
            return
        prompt_id = data.get("prompt_id")
        if prompt_id is None:
            return  # status broadcasts, the reconnect `executing` without prompt_id
        with self._lock:
            watch = self._watches.get(str(prompt_id))
        if watch is None:
            return
        now = time.time()
        if kind == "execution_start":
            watch.started = _seconds(data.get("timestamp")) or now
            watch.seen_start = True
        elif kind == "execution_cached":
            watch.cached = _node_ids(data.get("nodes"))
        elif kind == "executing":
            node = data.get("node")
            watch._node_done(now)
            if node is None:
                if watch.outcome is None:
                    watch.outcome = "ended"
                watch.ended.set()
            else:
                shown = str(data.get("display_node") or node)
                watch.current_node = shown
                watch.node_started.setdefault(shown, now)
                watch.progress = Progress(node=shown)
        elif kind == "progress":
            node = data.get("node")
            value, top = _number(data.get("value")), _number(data.get("max"))
            if value is not None and top is not None:
                watch.progress = Progress(node=str(node) if node is not None else watch.progress.node,
                                          value=value, max=top)
        elif kind == "executed":
            node = str(data.get("display_node") or data.get("node"))
            if isinstance(data.get("output"), dict):
                watch.outputs[node] = data["output"]
        elif kind == "execution_success":
            watch._node_done(now)
            watch.outcome = "success"
            watch.ended.set()
        elif kind == "execution_error":
            watch._node_done(now)
            watch.outcome = "error"
            watch.error = data
            watch.ended.set()
        elif kind == "execution_interrupted":
            watch._node_done(now)
            watch.outcome = "interrupted"
            watch.error = data
            watch.ended.set()
        if watch.listener:
            watch.listener(watch)

    # -- prompts ---------------------------------------------------------------------------------

    def watch(self, prompt_id: str, listener: Callable[[PromptWatch], None] | None = None) -> PromptWatch:
        """Start routing WebSocket messages for ``prompt_id`` (call before the POST)."""
        with self._lock:
            watch = self._watches.get(prompt_id)
            if watch is None:
                watch = self._watches[prompt_id] = PromptWatch(prompt_id)
                # a connection that drops or comes back after this point changes the generation
                watch.generation = self._ws_generation if self.stream.connected else None
            watch.listener = listener
            return watch

    def wake(self, prompt_id: str) -> None:
        """Make the :meth:`wait` for ``prompt_id`` look at once at its flags (one was set) and at the server."""
        with self._lock:
            watch = self._watches.get(prompt_id)
        if watch is not None:
            watch.wake.set()

    def forget(self, prompt_id: str) -> None:
        with self._lock:
            self._watches.pop(prompt_id, None)

    def submit(self, workflow: dict[str, Any], *, prompt_id: str, extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        self.watch(prompt_id)
        return self.http.post_prompt(workflow, prompt_id=prompt_id, client_id=self.client_id, extra_data=extra_data)

    def jobs_api(self) -> bool:
        """Whether the server has the jobs API (``/api/jobs``), probed once per WebSocket connection:
        by what the server answers, never by its version string."""
        if self._jobs_api is None:
            found = self.http.jobs_api()  # ServerUnavailable propagates
            if found is not None:
                logger.debug("%s %s the jobs API", self.display_url, "has" if found else "does not have")
            self._jobs_api = found
        return bool(self._jobs_api)

    def job_status(self, prompt_id: str) -> str | None:
        """The jobs API's state of the prompt: pending, in_progress, completed, failed, cancelled, or
        ``absent``; None when the server has no jobs API."""
        if not self.jobs_api():
            return None
        job = self.http.job(prompt_id)
        return "absent" if job is None else str(job["status"])

    def jobs_in_flight(self) -> dict[str, ServerJob] | None:
        """Every prompt queued or running on the server, by prompt id, in one ``GET /api/jobs``; None when
        the server has no jobs API. A pending prompt's ``position`` counts from 1 (next to start): ComfyUI
        starts the lowest queue number first (``execution.py`` ``PromptQueue``, a heap of
        ``(number, prompt_id, ...)``), and a list job gives that number as ``priority``."""
        if not self.jobs_api():
            return None
        found: dict[str, ServerJob] = {}
        pending = []
        for job in self.http.jobs("pending,in_progress"):
            if job.get("status") == "in_progress":
                found[job["id"]] = ServerJob("in_progress")
            elif job.get("status") == "pending":
                number = job.get("priority")
                pending.append((number if isinstance(number, int | float) else math.inf, job["id"]))
        for position, (_, prompt_id) in enumerate(sorted(pending), start=1):
            found[prompt_id] = ServerJob("pending", position)
        return found

    def cancel(self, prompt_id: str, *, together: Dequeue | None = None) -> str:
        """Take our prompt off the server, and only ours: the jobs API's cancel when the server has it,
        else ``/queue {"delete": [id]}`` and, if it is running then, ``/interrupt {"prompt_id": id}``
        (which ComfyUI ignores when another prompt runs; a bare ``/interrupt`` would stop whatever runs).
        ``together``: the prompts on this server cancelled with it (itself among them), all taken off the
        queue in one delete before any is stopped, so that none of them starts in the moment the server
        moves on. Returns how, for the log."""
        if together is None or together.server != self.name or prompt_id not in together.prompt_ids:
            together = Dequeue(self.name, (prompt_id,))  # alone, or moved to this server since the cancel
        jobs_api = self.jobs_api()
        if len(together.prompt_ids) > 1 or not jobs_api:
            together.send(self.http)  # a pending prompt is gone now, it cannot start any more
        if jobs_api:
            self.http.cancel_job(prompt_id)
            return "POST /api/jobs/{id}/cancel"
        running, pending = self.http.queue_ids()
        if prompt_id in pending:  # queued after the shared delete went out (its POST was under way)
            self.http.delete_pending(prompt_id)
            running, _ = self.http.queue_ids()  # it may have started meanwhile
        if prompt_id not in running:
            return "POST /queue delete"
        self.http.interrupt(prompt_id)
        return "POST /interrupt with its prompt_id"

    def locate(self, prompt_id: str) -> str:
        """Where the server has the prompt: 'history', 'running', 'pending' or 'absent' (from the jobs
        API when the server has it, else from ``/history`` and ``/queue``)."""
        status = self.job_status(prompt_id)
        if status is not None:
            return {"pending": "pending", "in_progress": "running", "absent": "absent"}.get(status, "history")
        if self.http.history(prompt_id) is not None:
            return "history"
        running, pending = self.http.queue_ids()
        if prompt_id in running:
            return "running"
        if prompt_id in pending:
            return "pending"
        # it may have finished between the two calls
        return "history" if self.http.history(prompt_id) is not None else "absent"

    def wait(self, prompt_id: str, *, deadline: float, on_progress: Callable[[PromptWatch], None] | None = None,
             cancel: threading.Event | None = None, fresh: bool = False,
             abort: threading.Event | None = None) -> PromptResult:
        """Block until the prompt has finished and its result is known: from the WebSocket when it told
        the whole successful run on one unbroken connection (:meth:`PromptWatch.complete`), else from
        the history entry (errors, interrupts, reconnects, re-attaching after a restart).

        ``fresh`` says the prompt was queued by a POST that just succeeded, with its messages routed
        since before the POST: the WebSocket will tell when it ends, so the first history poll waits one
        ``poll_interval`` instead of asking at once (that poll and the ``/queue`` call behind it were
        half of all requests per job). Otherwise (re-attaching after a restart or failover) the first
        poll is immediate: the prompt may have finished while nobody listened. Every reconnect of the
        WebSocket also polls at once, since messages may have been missed in between.
        ``on_progress`` is called when the running node or its progress changes. Whether the prompt is
        still queued or running comes from the jobs API when the server has it (one request), else from
        ``/queue``.

        Raises :class:`Cancelled` when ``cancel`` is set (stopping), :class:`Aborted` when ``abort`` is
        (the user cancelled the job), :class:`PromptLost` when the server no longer has it, :class:`ServerUnavailable` while the
        server is away (the caller waits and calls again), and ``TimeoutError`` at ``deadline``
        (``time.monotonic()`` based).
        """
        reported: Progress | None = None  # the progress last passed to on_progress

        def listener(w: PromptWatch) -> None:
            nonlocal reported
            w.wake.set()
            # every message about the prompt lands here; most change neither the node nor its progress
            if on_progress and w.progress != reported:
                reported = w.progress
                on_progress(w)

        watch = self.watch(prompt_id, listener)
        wake = watch.wake  # also set by wake(), so a flag set elsewhere ends the wait at once
        absent_since: float | None = None
        ended_at: float | None = None
        generation = self._ws_generation
        next_poll = time.monotonic()
        if fresh and self.stream.connected:
            next_poll += self.poll_interval
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                raise Cancelled(prompt_id)
            if abort is not None and abort.is_set():
                raise Aborted(prompt_id)
            if now >= deadline:
                raise TimeoutError(prompt_id)
            if self._ws_generation != generation:  # the socket dropped or came back: look now
                generation = self._ws_generation
                next_poll = now
            if watch.ended.is_set() and ended_at is None:
                if watch.complete(self._ws_generation):
                    return PromptResult(prompt_id, "success", dict(watch.outputs), {}, watch, None)
                ended_at = now
                next_poll = now
            if now >= next_poll:
                # jobs API: 'pending'/'in_progress' (still queued), 'absent', or finished; None: no jobs API
                status = self.job_status(prompt_id) if ended_at is None else None
                # A prompt is in history only once it has finished (PROTOCOL 6), whatever its status says.
                entry = None if status in ("pending", "in_progress", "absent") else self.http.history(prompt_id)
                if entry is not None:
                    return self._result(prompt_id, entry, watch)
                if ended_at is not None:
                    if now - ended_at > self.history_grace:
                        return self._result_from_ws(prompt_id, watch)
                    next_poll = now + 0.05 if now - ended_at < 1 else now + 0.25
                else:
                    if status is None:
                        running, pending = self.http.queue_ids()
                        where = "queued" if prompt_id in running | pending else None
                        if where is None and self.http.history(prompt_id) is not None:
                            continue
                    else:
                        where = "queued" if status in ("pending", "in_progress") else None
                    if where is None:
                        absent_since = absent_since or now
                        if now - absent_since >= self.lost_grace:
                            raise PromptLost(f"Prompt {prompt_id} is no longer known to {self.display_url}.")
                        next_poll = now + min(1.0, self.poll_interval)
                    else:
                        absent_since = None
                        interval = self.poll_interval if self.stream.connected else min(1.0, self.poll_interval)
                        next_poll = now + interval
            wake.wait(max(0.0, min(next_poll, deadline, time.monotonic() + self.flag_check) - time.monotonic()))
            wake.clear()

    def _result(self, prompt_id: str, entry: dict[str, Any], watch: PromptWatch) -> PromptResult:
        """The outcome of a history entry. Its ``status`` says success or error; an entry without a
        readable one takes the outcome the WebSocket told, and without that is the server's malformed
        answer (ServerError naming it)."""
        status = entry.get("status")
        status_str = status.get("status_str") if isinstance(status, dict) else None
        messages = status.get("messages") if isinstance(status, dict) else None
        error = None
        if status_str in ("success", "error"):  # a tuple: the server may send any JSON there
            outcome = status_str
        elif isinstance(status, dict) and status.get("completed") is True:
            outcome = "success"
        elif watch.outcome in {"success", "error", "interrupted"}:
            outcome = watch.outcome
        else:
            raise self.http.malformed(f"GET /history/{prompt_id}", status,
                                      'a status with "status_str": "success" or "error"')
        for item in messages if isinstance(messages, list) else []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
                kind, data = item
                if kind == "execution_error" and outcome != "success":
                    error = data
                elif kind == "execution_interrupted" and outcome != "success":
                    error, outcome = data, "interrupted"
                elif kind == "execution_cached" and not watch.cached:
                    watch.cached = _node_ids(data.get("nodes"))
                elif kind == "execution_start" and watch.started is None:
                    watch.started = _seconds(data.get("timestamp"))
        if outcome != "success" and error is None:
            error = watch.error
        outputs = entry.get("outputs")
        if outputs is not None and not isinstance(outputs, dict):
            raise self.http.malformed(f"GET /history/{prompt_id}", outputs, "outputs as a mapping of node ids")
        return PromptResult(prompt_id, outcome, outputs or {}, entry, watch, error)

    def _result_from_ws(self, prompt_id: str, watch: PromptWatch) -> PromptResult:
        logger.warning(
            "History for prompt %s did not appear on %s within %.0f s; using the WebSocket's record",
            prompt_id, self.display_url, self.history_grace,
        )
        outcome = watch.outcome if watch.outcome in {"success", "error", "interrupted"} else "success"
        return PromptResult(prompt_id, outcome, dict(watch.outputs), {}, watch, watch.error)


def _number(value: Any) -> float | None:
    """A finite number from a server's message (int or float, not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float
        return None
    return number if math.isfinite(number) else None


#: The latest time a server's timestamp may name (seconds, the end of year 9999): later ones are garbage
#: that no clock or date formatting can take.
_LAST_SECOND = 253402300799.0


def _seconds(milliseconds: Any) -> float | None:
    """A server's timestamp (milliseconds since the epoch) in seconds; None if it is not a plausible one."""
    number = _number(milliseconds)
    if number is None or not 0 < number / 1000 <= _LAST_SECOND:
        return None
    return number / 1000


def _node_ids(value: Any) -> list[str]:
    """Node ids from a server's list of them (anything else: none)."""
    return [str(n) for n in value] if isinstance(value, list) else []


__all__ = ["Aborted", "Cancelled", "ComfyClient", "PromptLost", "PromptResult", "PromptWatch", "Progress", "ServerJob", "ServerUnavailable"]
