"""One run of the test server: everything a real ComfyUI process loses when it is killed.

A :class:`Runtime` is made by ``ComfyTestServer.start()`` inside the server's event loop and thrown away
by ``stop()``: the queue and history (:class:`~hotfolder.testing.prompts.PromptQueue`), the output cache,
the sockets (:class:`~hotfolder.testing.websocket.Broadcaster`), the listening socket and the prompt
worker, which executes one prompt at a time in queue order (ComfyUI's ``prompt_worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from .assets import enrich_pass_events, with_asset_ids
from .catalog import NodeCatalog
from .execution import ExecutionOutcome, OutputCache, PromptExecutor
from .faults import Faults
from .middleware import RecordedRequest
from .profile import Profile
from .prompts import PromptQueue, QueueItem
from .routes import Routes
from .websocket import Broadcaster

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

#: ComfyUI's ``gc_collect_interval`` (main.py): the enrich pass after a prompt runs at most this often.
ENRICH_INTERVAL = 10.0


class Runtime:
    """The state and tasks of one run; also the executor's host (messages, interrupts, node faults)."""

    def __init__(
        self,
        *,
        profile: Profile,
        faults: Faults,
        catalog: NodeCatalog,
        cond: threading.Condition,
        dirs: dict[str, Path],
        record: Callable[[RecordedRequest], None],
        executed: Callable[[str], None],
    ) -> None:
        self.faults = faults
        self.output_dir, self.input_dir, self.temp_dir = dirs["output"], dirs["input"], dirs["temp"]
        self._record = record  # every HTTP request, for ComfyTestServer.requests
        self._executed = executed  # each prompt id as it starts, for ComfyTestServer.executed_prompt_ids
        self.prompts = PromptQueue(cond, self.queue_updated)
        self._cond = cond
        self.held: list[tuple[str, float]] = []  # nodes waiting out a scripted delay (ComfyTestServer.held_nodes)
        self.executor = PromptExecutor(self, catalog, OutputCache())
        if profile.asset_ids:
            self.executor.enrich_ui = lambda ui: with_asset_ids(ui, dirs)
        self._asset_scans = profile.asset_scan_events  # an enrich pass over output/ after prompts
        self._last_enrich_pass: float | None = None
        self.client_id: Any = None  # of the prompt running (or last run)
        self.last_node_id: str | None = None  # the node running, for a client that reconnects
        self.interrupt_event = asyncio.Event()
        self.stopping = asyncio.Event()
        self.sockets = Broadcaster(faults, profile.features(), self.prompts.remaining, self._executing_node)
        self.routes = Routes(profile=profile, prompts=self.prompts, faults=faults, catalog=catalog, dirs=dirs,
                             websocket=self.sockets.handle, interrupt=self.interrupt_event, stopping=self.stopping,
                             broadcast=lambda event, data: self.emit(event, data, None))
        self.tasks: set[asyncio.Task[Any]] = set()
        self.runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        """Listen on ``host:port`` (0: a free port, see :attr:`port`) and start the worker and publisher."""
        self.runner = web.AppRunner(self.routes.app(self._record), access_log=None, handler_cancellation=True,
                                    shutdown_timeout=0.2)
        await self.runner.setup()
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            await self.runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock, ssl_context=ssl_context).start()
        self._spawn(self._work())
        self._spawn(self.sockets.publish())
        self.configure_dropper()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def shutdown(self) -> None:
        """Die like a SIGTERMed ComfyUI: connections are aborted (no close frames), all work is lost."""
        self.stopping.set()
        self.sockets.abort_all()
        assert self.runner is not None
        server = self.runner.server
        for handler in server.connections if server is not None else []:
            transport = handler.transport
            if transport is not None:
                transport.abort()
        dropper = self.sockets.stop_dropping()
        tasks = list(self.tasks) + ([dropper] if dropper else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.cleanup()
        self.prompts.forget_delayed_writes()

    def configure_dropper(self) -> None:
        """(Re)start the periodic WebSocket dropper from the fault settings."""
        if self.stopping.is_set():
            self.sockets.stop_dropping()
        else:
            self.sockets.drop_every(self.faults.drop_interval)

    # -- the prompt worker ------------------------------------------------------------------------

    def queue_updated(self) -> None:
        """Tell every socket how many prompts remain (the ``status`` message)."""
        self.emit("status", {"status": self.prompts.remaining()}, None)

    def _executing_node(self, sid: str) -> str | None:
        return self.last_node_id if self.client_id == sid else None

    async def _work(self) -> None:
        """One prompt at a time, in queue order (ComfyUI's ``prompt_worker``)."""
        while True:
            item, item_id = await self.prompts.next_item()
            prompt_id = item[1]
            extra_data = {**item[3], **item[5]}
            self.client_id = extra_data.get("client_id")
            self.interrupt_event.clear()
            self._executed(prompt_id)
            try:
                outcome = await self.executor.execute(item[2], prompt_id, extra_data, item[4])
            except Exception:  # a bug in the test server must not kill its worker
                logger.exception("hotfolder.testing: executing prompt %s failed", prompt_id)
                self.last_node_id = None
                outcome = ExecutionOutcome(success=False)
            self._task_done(item_id, prompt_id, outcome)
            if self.client_id is not None:
                self.emit("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)
            self._enrich_pass(outcome)

    def _enrich_pass(self, outcome: ExecutionOutcome) -> None:
        """0.4x: after a prompt, at most every :data:`ENRICH_INTERVAL` seconds, the asset scanner's enrich
        pass over ``output`` is broadcast (as a real 0.33.0 with ``--enable-assets`` does)."""
        now = time.monotonic()
        if not self._asset_scans or (self._last_enrich_pass is not None
                                     and now - self._last_enrich_pass < ENRICH_INTERVAL):
            return
        self._last_enrich_pass = now
        files = sum(1 for ui in outcome.outputs.values() if isinstance(ui, dict) for items in ui.values()
                    if isinstance(items, list) for item in items
                    if isinstance(item, dict) and item.get("type") == "output")
        for event, data in enrich_pass_events(files, 0.01):
            self.emit(event, data, None)

    def _task_done(self, item_id: int, prompt_id: str, outcome: ExecutionOutcome) -> None:
        """File the prompt's history entry (the scripted one, if any), now or after the scripted delay."""
        delay = self.faults.history_delay_seconds

        def entry_for(item: QueueItem) -> Any:
            entry: dict[str, Any] = {
                "prompt": list(item[:5]),
                "outputs": {},
                "status": {
                    "status_str": "success" if outcome.success else "error",
                    "completed": outcome.success,
                    "messages": outcome.messages,
                },
            }
            entry.update({"outputs": outcome.outputs, "meta": outcome.meta})
            scripted, replacement = self.faults.take_history_entry()
            return copy.deepcopy(replacement) if scripted else entry

        entry = self.prompts.finish(item_id, prompt_id, entry_for, delayed=delay > 0)
        if delay > 0:
            self._spawn(self.prompts.store_later(prompt_id, entry, delay))

    # -- ExecutionHost ----------------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any], sid: Any) -> None:
        self.sockets.emit(event, data, sid)

    def emit_binary(self, event_type: int, payload: bytes, sid: Any) -> None:
        self.sockets.emit_binary(event_type, payload, sid)

    def supports_preview_metadata(self, sid: Any) -> bool:
        return self.sockets.supports_preview_metadata(sid)

    def interrupt_requested(self) -> bool:
        return self.interrupt_event.is_set()

    async def wait_for_interrupt(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.interrupt_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def node_delay(self, class_type: str) -> float:
        return self.faults.delay_for(class_type)

    @contextlib.contextmanager
    def holding(self, class_type: str, seconds: float) -> Iterator[None]:
        entry = (class_type, seconds)
        with self._cond:
            self.held.append(entry)
        try:
            yield
        finally:
            with self._cond:
                self.held.remove(entry)

    def prompt_time(self) -> float:
        return self.faults.min_prompt_time()

    def take_node_failure(self, class_type: str) -> tuple[str, str] | None:
        return self.faults.take_node_failure(class_type)
