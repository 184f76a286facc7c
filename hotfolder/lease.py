"""Instance leases: several hotfolder daemons may share one inbox (a network share).

Each daemon keeps its claimed jobs in its own folder ``inbox/.hotfolder/<instance>/`` and renews a lease
file ``inbox/.hotfolder/leases/<instance>.json`` while it runs. A lease is stale when its daemon is
provably gone (same host, process not alive) or when it has not been renewed for ``timeout`` seconds.
A live daemon adopts the jobs of a stale instance by renaming each job folder into its own folder: a
rename either happens or not, so exactly one daemon adopts each job.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from hotfolder.errors import ConfigError
from hotfolder.paths import own_dir
from hotfolder.record import write_json_atomic
from hotfolder.status import STATUS_DIR

logger = logging.getLogger(__name__)

LEASES = "leases"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """This daemon's lease on its instance folder, renewed by a background thread."""

    def __init__(self, state_dir: Path, instance_id: str, *, timeout: float = 60.0) -> None:
        self.state_dir = state_dir
        self.instance_id = instance_id
        self.interval = timeout / 6  # renewals; also how often others look for orphaned jobs
        self.timeout = timeout
        self.host = socket.gethostname()
        self.folder = state_dir / instance_id
        self.path = state_dir / LEASES / f"{instance_id}.json"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def acquire(self) -> None:
        """Take the lease; refuse if another live daemon holds this instance id."""
        own_dir(self.state_dir / LEASES, levels=2)  # never written through a symlink (UnsafeFolder)
        own_dir(self.folder, levels=2)
        holder = self._read(self.path)
        if holder and holder.get("pid") != os.getpid() and not self._stale(self.path, holder):
            raise ConfigError(
                f"Another hotfolder (pid {holder.get('pid')} on {holder.get('host')}) is running with instance id "
                f"{self.instance_id!r} on this inbox.",
                hint="Stop it first, or give each daemon on a shared inbox its own instance_id in hotfolder.toml.",
            )
        self.renew()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        write_json_atomic(self.path, {"instance": self.instance_id, "host": self.host, "pid": os.getpid(),
                                      "renewed": time.time()})

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        try:
            self.path.unlink()
        except OSError:  # gone, or the inbox is read-only now: it goes stale on its own
            pass
        try:
            self.folder.rmdir()  # only when no job is left in it
        except OSError:
            pass

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except OSError as err:
                if not self._failing:  # once, until it works again (a full inbox is reported on its own)
                    logger.warning("Cannot renew lease %s: %s", self.path, err)
                self._failing = True
            else:
                self._failing = False

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _stale(self, path: Path, holder: dict | None) -> bool:
        if holder is None:
            return True
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int):
            return not _pid_alive(holder["pid"])
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return True
        return age > self.timeout

    def orphaned_instances(self) -> list[str]:
        """Instance folders in the state dir whose daemon is gone (not ours)."""
        out: list[str] = []
        if not self.state_dir.is_dir():
            return out
        for entry in sorted(self.state_dir.iterdir()):
            if (not entry.is_dir() or entry.is_symlink() or entry.name in {LEASES, STATUS_DIR, self.instance_id}
                    or entry.name.startswith(".")):
                continue
            lease = self.state_dir / LEASES / f"{entry.name}.json"
            if self._stale(lease, self._read(lease)):
                out.append(entry.name)
        return out

    def adopt(self) -> list[Path]:
        """Move the job folders of every orphaned instance into ours; return the adopted folders."""
        adopted = []
        for instance in self.orphaned_instances():
            source = self.state_dir / instance
            for job in sorted(source.iterdir()):
                if not job.is_dir() or job.is_symlink():  # never adopt what lies outside the inbox
                    continue
                target = self.folder / job.name
                try:
                    os.rename(job, target)
                except OSError:
                    continue  # another daemon adopted it first, or it vanished
                logger.info("Adopted job %s from stopped instance %r", job.name, instance)
                adopted.append(target)
            try:
                source.rmdir()
                (self.state_dir / LEASES / f"{instance}.json").unlink(missing_ok=True)
            except OSError:
                pass
        return adopted
