"""A server's ``/object_info`` (its node catalogue): fetched, cached and offered as a source.

:class:`ObjectInfoCache` keeps one server's copy for the daemon, with the deprecated classes the server
replaces on submit (``GET /node_replacements``, ComfyUI 0.4x; :func:`parse_node_replacements`);
:func:`fetch_object_info` and :class:`FirstServer` read it once for commands without a daemon
(``hotfolder render`` and ``check``);
:class:`StopAfterNone` wraps a source so that an unreachable server is waited for once per file.
The sources (:class:`FirstServer`, :class:`StopAfterNone`) are what template loading takes to convert UI
workflows (:data:`hotfolder.templates.load.ObjectInfoSource`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.config import ServerConfig, Settings
from hotfolder.errors import HotfolderError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeReplacement:
    """A deprecated class the server replaces on submit by ``new_class`` (the first one it registered).
    ``inputs`` are ``(new_input, "old_id", old_input)`` (take the old node's input) or ``(new_input,
    "set_value", value)``; ``outputs`` ``(old_slot, new_slot)`` pairs, or None: links are left alone."""

    old_class: str
    new_class: str
    inputs: tuple[tuple[str, str, Any], ...]
    outputs: tuple[tuple[int, int], ...] | None


def parse_node_replacements(answer: Any) -> dict[str, NodeReplacement] | None:
    """The replacements of a ``GET /node_replacements`` answer by old class, or None when it is not
    ComfyUI's shape: ``{old_class: [NodeReplace.as_dict(), ...]}``, each ``{"new_node_id", "input_mapping":
    [{"new_id", "old_id" | "set_value"}] | null, "output_mapping": [{"old_idx", "new_idx"}] | null, ...}``
    (app/node_replace_manager.py@b5d74ccb). Every entry is checked; only the first of a class is used."""
    if not isinstance(answer, dict):
        return None
    found: dict[str, NodeReplacement] = {}
    for old_class, entries in answer.items():
        if not isinstance(entries, list) or not entries:
            return None
        parsed = [_replacement(old_class, entry) for entry in entries]
        first = parsed[0]
        if first is None or None in parsed:
            return None
        found[old_class] = first
    return found


def _replacement(old_class: Any, entry: Any) -> NodeReplacement | None:
    if not isinstance(old_class, str) or not isinstance(entry, dict) or not isinstance(entry.get("new_node_id"), str):
        return None
    mapping, outputs = entry.get("input_mapping"), entry.get("output_mapping")
    if not isinstance(mapping, (list, type(None))) or not isinstance(outputs, (list, type(None))):
        return None
    inputs: list[tuple[str, str, Any]] = []
    for item in mapping or ():
        if not isinstance(item, dict) or not isinstance(item.get("new_id"), str):
            return None
        if "set_value" in item:
            inputs.append((item["new_id"], "set_value", item["set_value"]))
        elif isinstance(item.get("old_id"), str):
            inputs.append((item["new_id"], "old_id", item["old_id"]))
        elif "old_id" in item:
            return None
        # neither key: ComfyUI skips the entry
    if outputs is not None and not all(isinstance(m, dict) and _index(m.get("old_idx")) and _index(m.get("new_idx"))
                                       for m in outputs):
        return None
    slots = None if outputs is None else tuple((m["old_idx"], m["new_idx"]) for m in outputs)
    return NodeReplacement(old_class, entry["new_node_id"], tuple(inputs), slots)


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class ObjectInfoCache:
    """One server's ``/object_info``, fetched on demand and kept for ``max_age`` seconds. Thread-safe.

    ``fetch`` returns the parsed ``/object_info`` (pass ``client.http.object_info``); what it raises
    is passed on when there is nothing cached. With a cached copy, a failed *automatic* refresh
    (the copy is too old) logs a warning and serves the old copy again, retrying after
    ``retry_after`` seconds; :meth:`refresh` always raises. Concurrent callers share one fetch.
    ``max_age=None`` keeps the copy until :meth:`refresh` or :meth:`invalidate`.

    ``replacements`` (pass ``client.http.node_replacements``) is read after each successful fetch; what
    :meth:`replacements` then gives is its answer parsed, or nothing when it failed, answered 404 or
    was malformed (an untrusted, optional answer: it never fails the fetch).

    :attr:`version` counts content changes (1 after the first fetch), so callers can re-check
    templates when the server's nodes or models changed. The returned dict is shared: do not change it.
    :func:`hotfolder.templates.validate.validate_with_refresh` checks a workflow against it.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        replacements: Callable[[], Any] | None = None,
        max_age: float | None = 300.0,
        retry_after: float = 10.0,
        min_refresh_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._fetch = fetch
        self._fetch_replacements = replacements
        self.max_age = max_age
        self.retry_after = retry_after
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self.name = name
        self._lock = threading.Lock()  # guards the fields below
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self._data: Mapping[str, Any] | None = None
        self._replacements: Mapping[str, NodeReplacement] = {}
        self._digest: str | None = None
        self._fetched_at: float | None = None
        self._next_try: float | None = None
        self._generation = 0  # counts completed fetches
        self._version = 0  # counts content changes
        self._invalid = False  # set by invalidate()

    @property
    def version(self) -> int:
        """How many times the content changed (0 before the first fetch)."""
        with self._lock:
            return self._version

    @property
    def digest(self) -> str | None:
        """A fingerprint of the cached copy's content (computed once per fetch), None before the first:
        servers with the same digest have the same catalogue."""
        with self._lock:
            return self._digest

    @property
    def fetched_at(self) -> float | None:
        """``clock()`` time of the last successful fetch, or ``None``."""
        with self._lock:
            return self._fetched_at

    def age(self) -> float | None:
        """Seconds since the last successful fetch, or ``None``."""
        with self._lock:
            return None if self._fetched_at is None else self._clock() - self._fetched_at

    def cached(self) -> Mapping[str, Any] | None:
        """The cached copy (maybe stale), without fetching."""
        with self._lock:
            return self._data

    def replacements(self) -> Mapping[str, NodeReplacement]:
        """The classes the server replaces on submit, by old class, as read with the cached copy."""
        with self._lock:
            return self._replacements

    def invalidate(self) -> None:
        """Make the next :meth:`get` fetch (the cached copy is still served if that fetch fails)."""
        with self._lock:
            self._invalid = True
            self._next_try = None

    def get_with_digest(self) -> tuple[Mapping[str, Any], str | None]:
        """:meth:`get` and the digest of that very copy (None if another fetch replaced it meanwhile)."""
        data = self.get()
        with self._lock:
            return data, (self._digest if self._data is data else None)

    def get(self, *, refresh: bool = False) -> Mapping[str, Any]:
        """The server's ``/object_info``: cached if fresh enough, else fetched (``refresh=True`` forces it)."""
        if refresh:
            return self.refresh()
        with self._lock:
            if self._data is not None and not self._stale_locked():
                return self._data
            generation = self._generation
        with self._fetch_lock:
            with self._lock:
                if self._generation != generation and self._data is not None:
                    return self._data  # another thread fetched while we waited
                data = self._data
                now = self._clock()
                if data is not None and self._next_try is not None and now < self._next_try:
                    return data  # a recent automatic refresh failed; do not hammer the server
            try:
                return self._do_fetch()
            except Exception as err:
                if data is None:
                    raise
                logger.warning(
                    "Could not refresh /object_info%s (%s); using the copy from %.0f s ago",
                    f" of {self.name}" if self.name else "",
                    err,
                    self.age() or 0.0,
                )
                with self._lock:
                    self._next_try = self._clock() + self.retry_after
                return data

    def refresh(self) -> Mapping[str, Any]:
        """Fetch now and return the new copy (callers waiting together share one fetch); raise on failure."""
        with self._lock:
            generation = self._generation
        with self._fetch_lock:
            with self._lock:
                if self._generation != generation and self._data is not None:
                    return self._data
            return self._do_fetch()

    def _stale_locked(self) -> bool:
        if self._fetched_at is None or self._invalid:
            return True
        return self.max_age is not None and self._clock() - self._fetched_at >= self.max_age

    def _do_fetch(self) -> Mapping[str, Any]:
        data = self._fetch()
        if not isinstance(data, Mapping):
            raise TypeError(f"/object_info fetch returned a {type(data).__name__}, not an object")
        replacements = self._read_replacements()
        # the catalogue and the replacements together decide what validates: both are in the digest
        digest = hashlib.sha256((json.dumps(data, sort_keys=True, default=repr)
                                 + repr(sorted(replacements.items()))).encode()).hexdigest()
        with self._lock:
            self._replacements = replacements
            if digest != self._digest:
                self._version += 1
                if self._digest is not None:
                    logger.info("/object_info%s changed", f" of {self.name}" if self.name else "")
            self._data = data
            self._digest = digest
            self._fetched_at = self._clock()
            self._next_try = None
            self._invalid = False
            self._generation += 1
            return data


    def _read_replacements(self) -> Mapping[str, NodeReplacement]:
        if self._fetch_replacements is None:
            return {}
        where = f" of {self.name}" if self.name else ""
        try:
            answer = self._fetch_replacements()
        except Exception as err:  # noqa: BLE001 - optional and untrusted: whatever fails means none
            logger.warning("Could not read /node_replacements%s (%s); validating as if it replaced no nodes",
                           where, err)
            return {}
        parsed = {} if answer is None else parse_node_replacements(answer)  # None: 404, an older server
        if parsed is None:
            logger.warning("/node_replacements%s is not shaped as ComfyUI answers it; validating as if it "
                           "replaced no nodes", where)
            return {}
        return parsed


class FirstServer:
    """The ``/object_info`` of the first configured server that answers, read once on first use (for
    ``hotfolder render`` and ``check``, which have no daemon). Call it for ``(object_info, key)`` or None;
    afterwards :attr:`url` is the server that answered and :attr:`errors` why the others did not."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url: str | None = None
        self.info: Mapping[str, Any] | None = None
        self.errors: list[str] = []
        self._tried = False
        self._lock = threading.Lock()

    def __call__(self) -> tuple[Mapping[str, Any], Hashable] | None:
        with self._lock:
            if not self._tried:
                self._tried = True
                for server in self.settings.servers:
                    try:
                        self.info = fetch_object_info(self.settings, server)
                    except HotfolderError as err:
                        self.errors.append(err.message)
                        continue
                    self.url = server.display_url
                    break
            return None if self.info is None else (self.info, (self.url, 1))


def fetch_object_info(settings: Settings, server: ServerConfig) -> dict[str, Any]:
    """``GET /object_info`` from one server, with the configured credentials and timeouts."""
    http = ComfyHTTP(server.display_url, display_url=server.display_url, headers=server.request_headers(), verify=server.verify,
                     connect_timeout=settings.connect_timeout, read_timeout=settings.http_timeout,
                     max_response_size=settings.max_response_size)
    try:
        return http.object_info()
    finally:
        http.close()


class StopAfterNone:
    """An ``/object_info`` source that stops asking after its first ``None``: calls ``fn`` until it gives
    None once, then gives None without calling (one unreachable-server wait per scenario file, not one
    per job). Not a cache: what ``fn`` gives is never kept."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.failed = False

    def __call__(self) -> Any:
        if self.failed:
            return None
        result = self.fn()
        self.failed = result is None
        return result
