"""Fault scripting for :class:`~hotfolder.testing.ComfyTestServer` (``srv.faults``).

Every method is thread-safe and may be called before ``start()``, while the server runs, or between a
``stop()`` and the next ``start()``: faults belong to the server object and survive ``restart()``.
Each kind of fault has one slot; scripting it again replaces the previous setting. A ``count`` is
decremented each time the fault fires; ``count=None`` means "every time, until cleared".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PROMPT_ID", "Faults"]

DEFAULT_FAILURE_MESSAGE = "injected failure (hotfolder.testing faults.fail_node)"
#: In frames scripted with :meth:`Faults.ws_frames`: replaced by the id of the prompt they are sent for.
PROMPT_ID = "<prompt_id>"


@dataclass(slots=True)
class _Counted:
    value: float
    count: int | None


@dataclass(slots=True)
class _Scripted:
    value: Any
    count: int | None


@dataclass(slots=True)
class _NodeFailure:
    message: str
    exception_type: str
    count: int | None


def _check_count(count: int | None) -> None:
    if count is not None and count < 1:
        raise ValueError(f"count must be a positive number or None, got {count!r}")


class Faults:
    """Scripted failures of the test server. See the package docstring for examples.

    ``drop_websockets`` aborts the running server's sockets now; ``changed`` tells it that the settings
    it polls on its own (the periodic dropping) changed. Both do nothing while the server is stopped.
    """

    def __init__(self, *, drop_websockets: Callable[[], None], changed: Callable[[], None]) -> None:
        self._drop_now = drop_websockets
        self._changed = changed
        self._lock = threading.Lock()
        self._post_status: _Counted | None = None
        self._post_body: tuple[str | bytes, str] | None = None
        self._history_entry: _Scripted | None = None
        self._ws_frames: _Scripted | None = None
        self._object_info: _Scripted | None = None
        self._node_replacements: _Scripted | None = None
        self._post_hang: _Counted | None = None
        self._view_status: _Counted | None = None
        self._view_skip = 0
        self._view_body: _Scripted | None = None
        self._history_delay = 0.0
        self._drop_interval = 0.0
        self._silenced = False
        self._node_failures: dict[str, _NodeFailure] = {}
        self._node_delays: dict[str, float] = {}
        self._prompt_time = 0.0
        self._oversize: dict[str, tuple[_Counted, bool]] = {}

    # -- scripting (test side) --------------------------------------------------------------------

    def post_status(self, status: int = 500, count: int | None = 1, *, body: str | bytes | None = None,
                    content_type: str = "text/plain") -> None:
        """The next ``count`` ``POST /prompt`` get ``status`` and are **not** queued.

        500 answers with aiohttp's text body ``500 Internal Server Error\\n\\nServer got itself in trouble``.
        With ``body``, every status answers with that body (and ``content_type``) instead: a proxy's
        page, a malformed ``node_errors``, anything.
        """
        _check_count(count)
        with self._lock:
            self._post_status = _Counted(status, count)
            self._post_body = None if body is None else (body, content_type)

    def history_entry(self, entry: Any, count: int | None = 1) -> None:
        """The next ``count`` prompts that end are recorded in history as ``entry`` (any JSON value, kept
        as given: missing keys, wrong types, odd ``outputs``) instead of their real entry. The WebSocket
        still tells the real run; silence it to make a client rely on the history."""
        _check_count(count)
        with self._lock:
            self._history_entry = _Scripted(entry, count)

    def object_info(self, answer: Any, count: int | None = None) -> None:
        """``GET /object_info`` answers ``answer`` (any JSON value) instead of the node catalog, ``count``
        times (default: until cleared). The server's own validation of prompts still uses its catalog."""
        _check_count(count)
        with self._lock:
            self._object_info = _Scripted(answer, count)

    def node_replacements(self, answer: Any, count: int | None = None) -> None:
        """``GET /node_replacements`` (0.4x) answers ``answer`` (any JSON value; ``bytes`` are sent as they
        are, not JSON if you like) instead of the profile's replacements, ``count`` times (default: until
        cleared). ``POST /prompt`` still replaces what the profile registers."""
        _check_count(count)
        with self._lock:
            self._node_replacements = _Scripted(answer, count)

    def ws_frames(self, frames: list[Any], count: int | None = 1) -> None:
        """Right after the ``execution_start`` of each of the next ``count`` prompts, its client also gets
        ``frames``: ``bytes`` as a binary frame, ``str`` as a text frame as is (not JSON, if you like),
        anything else as JSON. :data:`PROMPT_ID`, as a whole string value or inside a text frame,
        becomes the prompt's id."""
        _check_count(count)
        with self._lock:
            self._ws_frames = _Scripted(list(frames), count)

    def post_hang(self, count: int | None = 1, seconds: float = 30.0) -> None:
        """The next ``count`` ``POST /prompt`` **are** queued, but the response waits ``seconds``.

        The client usually times out first; the prompt still runs. Stopping the server ends the wait.
        """
        _check_count(count)
        with self._lock:
            self._post_hang = _Counted(seconds, count)

    def view_status(self, status: int = 500, count: int | None = 1, *, skip: int = 0) -> None:
        """The next ``count`` ``GET /view`` answer ``status`` with an empty body (after ``skip`` that
        are served normally: to fail a job's second output, say)."""
        _check_count(count)
        if skip < 0:
            raise ValueError(f"skip must not be negative, got {skip!r}")
        with self._lock:
            self._view_status = _Counted(status, count)
            self._view_skip = skip

    def view_body(self, data: bytes, count: int | None = 1) -> None:
        """The next ``count`` ``GET /view`` answer 200 with ``data``, whatever file they ask for, even a
        name ComfyUI refuses (``../x``, an absolute path): a hostile or broken server."""
        _check_count(count)
        with self._lock:
            self._view_body = _Scripted(bytes(data), count)

    def history_delay(self, seconds: float) -> None:
        """Write each history entry ``seconds`` after ``execution_success``/``execution_error`` (0 turns it off).

        ``status`` and ``executing`` with ``node: null`` are still sent at once, so a client sees the
        prompt finish while ``GET /history/{id}`` still answers ``{}``.
        """
        with self._lock:
            self._history_delay = max(0.0, float(seconds))

    def drop_websockets(self) -> None:
        """Abort every WebSocket connection now: no close frame, the client sees the connection lost."""
        self._drop_now()

    def drop_websockets_every(self, seconds: float | None) -> None:
        """Abort every WebSocket connection every ``seconds`` (``0``/``None`` stops it)."""
        with self._lock:
            self._drop_interval = max(0.0, float(seconds or 0.0))
        self._changed()

    def silence_websockets(self, silent: bool = True) -> None:
        """While silenced, sockets stay open but receive no frames at all."""
        with self._lock:
            self._silenced = bool(silent)

    def fail_node(
        self,
        class_type: str,
        message: str = DEFAULT_FAILURE_MESSAGE,
        exception_type: str = "RuntimeError",
        count: int | None = 1,
    ) -> None:
        """The next ``count`` executions of ``class_type`` raise: ``execution_error`` with this message and type.

        Cached nodes do not execute, so they do not use up the count.
        """
        _check_count(count)
        with self._lock:
            self._node_failures[class_type] = _NodeFailure(message, exception_type, count)

    def node_delay(self, class_type: str, seconds: float) -> None:
        """Every execution of ``class_type`` takes ``seconds`` longer (interruptible; lowering it, to 0 too, shortens
        executions already waiting, raising it does not lengthen them)."""
        with self._lock:
            if seconds > 0:
                self._node_delays[class_type] = float(seconds)
            else:
                self._node_delays.pop(class_type, None)

    def prompt_time(self, seconds: float) -> None:
        """Every prompt lasts ``seconds`` from its ``execution_start`` to its end (the first one at least
        that long, later ones that long on average, within a few ms: the wait aims early by the lateness
        of the waits before it), the nodes' own work included: a GPU job of that length, whatever the
        stand-in nodes cost (0 removes it). The wait comes after the last node; an interrupt ends it early."""
        with self._lock:
            self._prompt_time = max(0.0, float(seconds))

    def oversize(self, route: str, size: int, count: int | None = 1, *, chunked: bool = False) -> None:
        """The next ``count`` answers of ``route`` carry ``size`` extra bytes: ``"history"`` (``GET
        /history/{id}``: the real entry, beside a ``"padding"`` string of ``size`` characters) or
        ``"view"`` (``GET /view``: ``size`` bytes instead of the file). With ``chunked`` the answer has
        no Content-Length (the client finds the size only by reading)."""
        _check_count(count)
        if route not in ("history", "view"):
            raise ValueError(f"route must be 'history' or 'view', got {route!r}")
        with self._lock:
            self._oversize[route] = (_Counted(size, count), chunked)

    def clear(self) -> None:
        """Remove every scripted fault (also stops periodic dropping and silencing)."""
        with self._lock:
            self._post_status = self._post_hang = self._view_status = None
            self._post_body = None
            self._history_entry = self._ws_frames = self._object_info = self._view_body = None
            self._node_replacements = None
            self._history_delay = self._drop_interval = 0.0
            self._silenced = False
            self._node_failures.clear()
            self._node_delays.clear()
            self._prompt_time = 0.0
            self._oversize.clear()
        self._changed()

    # -- consumption (server side) ----------------------------------------------------------------

    @staticmethod
    def _take(slot: _Counted | None) -> tuple[float | None, _Counted | None]:
        if slot is None:
            return None, None
        value = slot.value
        if slot.count is None:
            return value, slot
        slot.count -= 1
        return value, (slot if slot.count > 0 else None)

    def take_post_answer(self) -> tuple[int, tuple[str | bytes, str] | None] | None:
        """``(status, (body, content_type) or None)`` for the next scripted ``POST /prompt`` answer."""
        with self._lock:
            value, self._post_status = self._take(self._post_status)
            return None if value is None else (int(value), self._post_body)

    @staticmethod
    def _take_scripted(slot: _Scripted | None) -> tuple[bool, Any, _Scripted | None]:
        if slot is None:
            return False, None, None
        if slot.count is None:
            return True, slot.value, slot
        slot.count -= 1
        return True, slot.value, (slot if slot.count > 0 else None)

    def take_history_entry(self) -> tuple[bool, Any]:
        """``(True, entry)`` when the prompt ending now is to be recorded as ``entry``, else ``(False, None)``."""
        with self._lock:
            found, value, self._history_entry = self._take_scripted(self._history_entry)
        return found, value

    def take_object_info(self) -> tuple[bool, Any]:
        """``(True, answer)`` when ``GET /object_info`` is to answer ``answer``, else ``(False, None)``."""
        with self._lock:
            found, value, self._object_info = self._take_scripted(self._object_info)
        return found, value

    def take_node_replacements(self) -> tuple[bool, Any]:
        """``(True, answer)`` when ``GET /node_replacements`` is to answer ``answer``, else ``(False, None)``."""
        with self._lock:
            found, value, self._node_replacements = self._take_scripted(self._node_replacements)
        return found, value

    def take_ws_frames(self, prompt_id: str) -> list[str | bytes]:
        """The scripted frames for ``prompt_id`` (see :meth:`ws_frames`), ready to send; ``[]`` if none."""
        with self._lock:
            found, frames, self._ws_frames = self._take_scripted(self._ws_frames)
        return [_frame(frame, prompt_id) for frame in frames] if found else []

    def take_post_hang(self) -> float | None:
        with self._lock:
            value, self._post_hang = self._take(self._post_hang)
        return value

    def take_view_status(self) -> int | None:
        with self._lock:
            if self._view_status is not None and self._view_skip > 0:
                self._view_skip -= 1
                return None
            value, self._view_status = self._take(self._view_status)
        return None if value is None else int(value)

    def take_view_body(self) -> bytes | None:
        """The bytes this ``GET /view`` answers instead of a file (see :meth:`view_body`), or None."""
        with self._lock:
            found, value, self._view_body = self._take_scripted(self._view_body)
        return value if found else None

    def take_oversize(self, route: str) -> tuple[int, bool] | None:
        """(extra bytes, chunked) for this answer of ``route``, or None."""
        with self._lock:
            slot, chunked = self._oversize.get(route, (None, False))
            value, left = self._take(slot)
            if left is None:
                self._oversize.pop(route, None)
        return None if value is None else (int(value), chunked)

    def take_node_failure(self, class_type: str) -> tuple[str, str] | None:
        with self._lock:
            failure = self._node_failures.get(class_type)
            if failure is None:
                return None
            if failure.count is not None:
                failure.count -= 1
                if failure.count <= 0:
                    del self._node_failures[class_type]
            return failure.message, failure.exception_type

    def min_prompt_time(self) -> float:
        with self._lock:
            return self._prompt_time

    def delay_for(self, class_type: str) -> float:
        with self._lock:
            return self._node_delays.get(class_type, 0.0)

    @property
    def history_delay_seconds(self) -> float:
        with self._lock:
            return self._history_delay

    @property
    def drop_interval(self) -> float:
        with self._lock:
            return self._drop_interval

    @property
    def silenced(self) -> bool:
        with self._lock:
            return self._silenced


def _frame(frame: Any, prompt_id: str) -> str | bytes:
    """One scripted WebSocket frame with :data:`PROMPT_ID` replaced (see :meth:`Faults.ws_frames`)."""
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, str):
        return frame.replace(PROMPT_ID, prompt_id)

    def fill(value: Any) -> Any:
        if value == PROMPT_ID:
            return prompt_id
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value

    return json.dumps(fill(frame))
