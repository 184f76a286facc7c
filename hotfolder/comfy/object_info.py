"""A server's ``/object_info`` (its node catalogue): fetched, cached and offered as a source.

:class:`ObjectInfoCache` keeps one server's copy for the daemon; :func:`fetch_object_info` and
:class:`FirstServer` read it once for commands without a daemon (``hotfolder render`` and ``check``);
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
from typing import Any

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.config import ServerConfig, Settings
from hotfolder.errors import HotfolderError

logger = logging.getLogger(__name__)

class ObjectInfoCache:
    """One server's ``/object_info``, fetched on demand and kept for ``max_age`` seconds. Thread-safe.

    ``fetch`` returns the parsed ``/object_info`` (pass ``client.http.object_info``); what it raises
    is passed on when there is nothing cached. With a cached copy, a failed *automatic* refresh
    (the copy is too old) logs a warning and serves the old copy again, retrying after
    ``retry_after`` seconds; :meth:`refresh` always raises. Concurrent callers share one fetch.
    ``max_age=None`` keeps the copy until :meth:`refresh` or :meth:`invalidate`.

    :attr:`version` counts content changes (1 after the first fetch), so callers can re-check
    templates when the server's nodes or models changed. The returned dict is shared: do not change it.
    :func:`hotfolder.templates.validate.validate_with_refresh` checks a workflow against it.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        max_age: float | None = 300.0,
        retry_after: float = 10.0,
        min_refresh_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._fetch = fetch
        self.max_age = max_age
        self.retry_after = retry_after
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self.name = name
        self._lock = threading.Lock()  # guards the fields below
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self._data: Mapping[str, Any] | None = None
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

    def invalidate(self) -> None:
        """Make the next :meth:`get` fetch (the cached copy is still served if that fetch fails)."""
        with self._lock:
            self._invalid = True
            self._next_try = None

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
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()
        with self._lock:
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
