"""The queue and the history of one run of the test server (ComfyUI's ``PromptQueue``).

Pending prompts sit in a heap ordered by ``(number, prompt_id)``; the one prompt worker takes them one at
a time. Everything here is guarded by the server's lock, because the control API
(:class:`~hotfolder.testing.ComfyTestServer`) reads it from other threads; ``changed`` is called after
every change of the queue, to send the ``status`` message.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["MAXIMUM_HISTORY_SIZE", "PromptQueue", "QueueItem"]

MAXIMUM_HISTORY_SIZE = 10000

#: (number, prompt_id, prompt, extra_data, outputs to execute, sensitive extra_data)
QueueItem = tuple[Any, str, Any, dict[str, Any], list[str], dict[str, Any]]


class PromptQueue:
    """Queued, running and finished prompts; lost when the server stops, like a killed ComfyUI's."""

    def __init__(self, cond: threading.Condition, changed: Callable[[], None]) -> None:
        self.cond = cond  # its lock guards everything below; waiters (wait_idle) are told of each change
        self._changed = changed
        self.pending: list[QueueItem] = []
        self.running: dict[int, QueueItem] = {}
        self.history: dict[str, Any] = {}
        self.pending_history_writes = 0
        self._task_counter = 0
        self._number = 0
        self._event = asyncio.Event()

    # -- queue ------------------------------------------------------------------------------------

    def next_number(self, front: bool) -> int:
        """The number ``POST /prompt`` gives a prompt without one (negative: to the front)."""
        number = -self._number if front else self._number
        self._number += 1
        return number

    def put(self, item: QueueItem) -> None:
        with self.cond:
            try:
                heapq.heappush(self.pending, item)
            finally:
                # Q13: equal (number, prompt_id) makes heapq compare dicts and raise, after the item
                # was appended. ComfyUI answers 500 but runs the prompt anyway; so do we.
                self._event.set()
                self.cond.notify_all()
        self._changed()

    def _pop_next(self) -> QueueItem:
        try:
            return heapq.heappop(self.pending)
        except TypeError:
            best = min(range(len(self.pending)), key=lambda i: (self.pending[i][0], self.pending[i][1]))
            return self.pending.pop(best)

    async def next_item(self) -> tuple[QueueItem, int]:
        """Wait for a queued prompt, mark it running and return it with its running id."""
        while True:
            with self.cond:
                if self.pending:
                    item = self._pop_next()
                    item_id = self._task_counter
                    self._task_counter += 1
                    self.running[item_id] = copy.deepcopy(item)
                    self.cond.notify_all()
                    break
            self._event.clear()
            await self._event.wait()
        self._changed()
        return item, item_id

    def wipe(self) -> None:
        with self.cond:
            self.pending = []
            self.cond.notify_all()
        self._changed()

    def delete(self, prompt_id: Any) -> bool:
        with self.cond:
            for index, item in enumerate(self.pending):
                if item[1] == prompt_id:
                    if len(self.pending) == 1:
                        self.wipe()
                    else:
                        self.pending.pop(index)
                        with contextlib.suppress(TypeError):  # equal (number, id) items, see put()
                            heapq.heapify(self.pending)
                    self.cond.notify_all()
                    break
            else:
                return False
        self._changed()
        return True

    def is_running(self, prompt_id: Any) -> bool:
        with self.cond:
            return any(item[1] == prompt_id for item in self.running.values())

    def remaining(self) -> dict[str, Any]:
        """``exec_info`` as the ``status`` message and ``GET /prompt`` show it."""
        with self.cond:
            return {"exec_info": {"queue_remaining": len(self.pending) + len(self.running)}}

    def listing(self) -> dict[str, list[list[Any]]]:
        """``GET /queue``: running and pending items (in heap order), without their sensitive part.
        Not a copy: hold the lock while using it."""
        return {
            "queue_running": [list(item[:5]) for item in self.running.values()],
            "queue_pending": [list(item[:5]) for item in self.pending],
        }

    def snapshot(self) -> tuple[list[list[Any]], list[list[Any]], dict[str, Any]]:
        """Copies of the running items, the pending items (heap order, without their sensitive part)
        and the history, taken together under the lock (for the jobs API)."""
        with self.cond:
            listing = self.listing()
            return copy.deepcopy((listing["queue_running"], listing["queue_pending"], self.history))

    def is_idle(self) -> bool:
        """Nothing queued or running, and no delayed history entry still to write."""
        return not self.pending and not self.running and self.pending_history_writes == 0

    # -- history ----------------------------------------------------------------------------------

    def finish(self, item_id: int, prompt_id: str, entry_for: Callable[[QueueItem], Any], delayed: bool) -> Any:
        """The running item ended: record ``entry_for(item)`` in the history, at once or (``delayed``)
        through :meth:`store_later`; return the entry. One step under the lock, so that ``wait_idle``
        never sees the prompt neither running nor in the history."""
        with self.cond:
            entry = entry_for(self.running.pop(item_id))
            if delayed:
                self.pending_history_writes += 1
            else:
                self._store(prompt_id, entry)
            self.cond.notify_all()
        self._changed()
        return entry

    async def store_later(self, prompt_id: str, entry: Any, delay: float) -> None:
        """Write the delayed history entry of ``prompt_id`` after ``delay`` seconds."""
        await asyncio.sleep(delay)
        with self.cond:
            self._store(prompt_id, entry)
            self.pending_history_writes -= 1
            self.cond.notify_all()

    def forget_delayed_writes(self) -> None:
        """The server stops: delayed entries will never be written."""
        with self.cond:
            self.pending_history_writes = 0
            self.cond.notify_all()

    def _store(self, prompt_id: str, entry: Any) -> None:
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[prompt_id] = entry

    def get_history(self, max_items: int | None, offset: int) -> dict[str, Any]:
        """``GET /history``: ``max_items`` entries from ``offset`` (negative: the last ones), copied."""
        with self.cond:
            out: dict[str, Any] = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for index, key in enumerate(self.history):
                if index >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return copy.deepcopy(out)

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        with self.cond:
            return copy.deepcopy(self.history.get(prompt_id))

    def edit_history(self, clear: bool, delete: list[Any]) -> None:
        """``POST /history``: clear it, or delete some entries."""
        with self.cond:
            if clear:
                self.history = {}
            for prompt_id in delete:
                self.history.pop(prompt_id, None)
