"""Each server's view of our prompts, for ``hotfolder status``: :class:`ServerJobsPoller`.

One thread per server. Every ``interval`` seconds, while the status board shows a job of ours on that
server, it asks the server once (``GET /api/jobs?status=pending,in_progress``, whatever the number of
jobs) and hands the board each prompt's state and place in the queue. A server without the jobs API
(ComfyUI 0.3.x) is not asked: the client probes for the API once per WebSocket connection. A slow or
failing server holds up only its own thread, never the status writer (which only reads the board), and
what it said last is believed for three intervals at most.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import HotfolderError
from hotfolder.status import StatusBoard

logger = logging.getLogger(__name__)

BELIEVED_FOR = 3  # intervals an answer stays on the board without a newer one


class ServerJobsPoller:
    """Feeds ``board.server_jobs`` from each client's jobs API every ``interval`` seconds."""

    def __init__(self, board: StatusBoard, clients: Iterable[ComfyClient], *, interval: float) -> None:
        self.board = board
        self.clients = list(clients)
        self.interval = interval
        self.polls = 0  # GET /api/jobs requests made (for tests)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for client in self.clients:
            thread = threading.Thread(target=self._run, args=(client,), name=f"jobs-poll-{client.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop asking; a thread still waiting for a slow server is left to end on its own (a daemon thread)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, client: ComfyClient) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll(client)
            except Exception:  # noqa: BLE001 - the status must never take the daemon down
                logger.exception("Reading the jobs of %s for the status failed", client.display_url)

    def poll(self, client: ComfyClient) -> None:
        """Ask ``client``'s server once, if a job of ours is there, and tell the board."""
        if not self.board.prompts_on(client.name):
            self.board.server_jobs(client.name, None, valid_for=0)
            return
        try:
            jobs = client.jobs_in_flight()
        except HotfolderError as err:
            logger.debug("No job states from %s for the status: %s", client.display_url, err)
            jobs = None
        else:
            self.polls += jobs is not None
        found = None if jobs is None else {pid: (job.state, job.position) for pid, job in jobs.items()}
        self.board.server_jobs(client.name, found, valid_for=BELIEVED_FOR * self.interval)
