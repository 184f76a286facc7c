"""The status file: :class:`StatusWriter` writes a :class:`~hotfolder.status.StatusBoard`'s snapshot
atomically to ``inbox/.hotfolder/status/<instance_id>.json`` from its own thread, every ``interval``
seconds and on demand, so that ``hotfolder status`` (and any script) can read it without a network port.
Each daemon on a shared inbox has its own file; :func:`read_all_status` reads them.
The file's fields are described in :mod:`hotfolder.status`."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotfolder.errors import HotfolderError
from hotfolder.paths import UnsafeFolder, own_dir
from hotfolder.record import write_json_atomic
from hotfolder.redact import redact_data
from hotfolder.status import STATUS_DIR, StatusBoard

logger = logging.getLogger(__name__)


def status_path(state_dir: Path, instance: str) -> Path:
    return state_dir / STATUS_DIR / f"{instance}.json"


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` so that readers see the old or the new file, never a torn one. No fsync: the
    file is rewritten every few seconds and a lost write after a power cut does not matter. Mode 0644:
    readable by `hotfolder status` run as another user. Credentials are redacted (:mod:`hotfolder.redact`)."""
    write_json_atomic(path, redact_data(snapshot), indent=1, durable=False, mode=0o644)


class StatusWriter:
    """Writes ``board.snapshot()`` to ``path`` every ``interval`` seconds from its own thread, and at
    once on :meth:`flush`. A failed write is logged (once until it works again), never raised."""

    def __init__(self, board: StatusBoard, path: Path, *, interval: float = 2.0,
                 on_write: Callable[[dict[str, Any]], object] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.board = board
        self.path = path
        self.interval = interval
        self.on_write = on_write
        self.writes = 0
        self._cond = threading.Condition()
        self._requested = 0  # flush requests made
        self._served = 0  # flush requests covered by a finished write
        self._stopping = False
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Write now (from the writer thread) and wait up to ``timeout`` seconds for it (``None``: do not
        wait). True if the file was written."""
        with self._cond:
            self._requested += 1
            wanted = self._requested
            self._cond.notify_all()
            if timeout is None or self._thread is None:
                return False
            self._cond.wait_for(lambda: self._served >= wanted or self._stopping, timeout)
            return self._served >= wanted and not self._failing

    def stop(self, *, final_state: str | None = "stopped", timeout: float = 5.0) -> None:
        """Stop the thread, then write one last time (with ``final_state``, e.g. "stopped")."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if final_state is not None:
            self.board.set_state(final_state)
        self._write()

    def _run(self) -> None:
        next_write = time.monotonic()
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    left = next_write - time.monotonic()
                    if self._requested > self._served or left <= 0:
                        break
                    self._cond.wait(left)
                wanted = self._requested
            self._write()
            next_write = time.monotonic() + self.interval
            with self._cond:
                self._served = max(self._served, wanted)
                self._cond.notify_all()

    def _write(self) -> None:
        try:
            snapshot = self.board.snapshot()
            snapshot["interval"] = self.interval
            own_dir(self.path.parent, levels=2)  # inbox/.hotfolder/status: never written through a symlink
            write_status(self.path, snapshot)
        except (OSError, UnsafeFolder) as err:
            if not self._failing:
                logger.warning("Cannot write the status file %s: %s", self.path, err)
            self._failing = True
            return
        if self._failing:
            logger.info("Status file %s is written again", self.path)
            self._failing = False
        self.writes += 1
        if self.on_write is not None:
            try:
                self.on_write(snapshot)
            except Exception:  # noqa: BLE001 - a listener (sd_notify STATUS=) must not stop the writer
                logger.exception("Status listener failed")


# -- reading the file (hotfolder status) ---------------------------------------------------------


def read_all_status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Every daemon's status file in ``state_dir``, by instance id (sorted)."""
    folder = state_dir / STATUS_DIR
    try:
        names = sorted(entry.name for entry in os.scandir(folder)
                       if entry.name.endswith(".json") and not entry.name.startswith("."))
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        data = _read_status_file(folder / name)
        if data is not None:
            found[name[: -len(".json")]] = data
    return found


def _read_status_file(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise HotfolderError(f"Cannot read the status file {str(path)!r}: {err.strerror}.") from err
    try:
        data = json.loads(text)
    except ValueError as err:
        raise HotfolderError(f"The status file {str(path)!r} is not valid JSON: {err}.",
                             hint="It is rewritten by the daemon every few seconds; try again.") from err
    if not isinstance(data, dict):
        raise HotfolderError(f"The status file {str(path)!r} does not hold a JSON object.")
    return data
