"""Bench plumbing: processes that die with the bench, temp projects, dropping files, reading /proc.

Everything the bench starts goes through one :class:`Reaper`: child processes get ``PR_SET_PDEATHSIG``
(SIGKILL if the bench dies, even by SIGKILL) and are stopped by pid in :meth:`Reaper.close`;
temp folders are removed there too. ``run.py`` calls ``close`` in a ``finally`` and turns SIGTERM and
SIGHUP into ``KeyboardInterrupt``, so Ctrl-C, a kill and a normal exit all clean up.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
EXAMPLES = ROOT / "hotfolder" / "examples"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Reaper:
    """Owns every child process and temp folder of the bench."""

    def __init__(self, tmp_root: Path | None = None, keep: bool = False) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.dirs: list[Path] = []
        self.files: list[IO[Any]] = []
        self.tmp_root = tmp_root
        self.keep = keep

    def tempdir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"hotfolder-bench-{prefix}-", dir=self.tmp_root))
        self.dirs.append(path)
        return path

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(args, preexec_fn=_die_with_parent, start_new_session=True, **kwargs)  # noqa: PLW1509
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], *, grace: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Ask ``proc`` to stop (``sig``), wait ``grace`` seconds, then kill it. Returns its exit status."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, grace=5.0)
        self.procs.clear()
        for fh in self.files:
            with contextlib.suppress(Exception):
                fh.close()
        if not self.keep:
            for path in self.dirs:
                shutil.rmtree(path, ignore_errors=True)
        self.dirs.clear()


def hermetic_env(**extra: str) -> dict[str, str]:
    """The environment for children: no HOTFOLDER_* settings from the caller, no installed plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    env["HOTFOLDER_LOAD_PLUGINS"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def filesystem(path: str | Path) -> str:
    """The filesystem type of ``path`` from /proc/mounts, and for ext4 whether it keeps a journal: an ext4
    without one scans past every recently deleted inode when it creates a file, which makes file
    creation dear after a burst of deletions (the kernel's ``recently_deleted`` in ``find_inode_bit``)."""
    target = os.path.realpath(path)
    best = ("", "", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                device, mount, kind = line.split()[:3]
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[1]):
                    best = (device, mount, kind)
    except OSError:
        return "?"
    device, mount, kind = best
    if kind == "ext4":
        try:
            task = Path(f"/sys/fs/ext4/{os.path.basename(device)}/journal_task").read_text().strip()
            kind += ", no journal" if task in {"", "<none>"} else ", journal"
        except OSError:
            pass
    return f"{kind} at {mount}"


# -- /proc ---------------------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_switches(pid: int) -> int:
    """Context switches (voluntary and not) of every live thread of process ``pid``: how often its
    threads gave up or lost the CPU, a measure of wake-ups and GIL hand-offs."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, KeyError, ValueError):
                total += proc_status_kb(int(task), "voluntary_ctxt_switches")
                total += proc_status_kb(int(task), "nonvoluntary_ctxt_switches")
    return total


# -- test servers --------------------------------------------------------------------------------------


class TestServerProc:
    """``bench/testserver.py`` in its own process (see there for the commands): one test server, or with
    ``count`` that many in the one process (``root``: their folders), e.g. a farm that must not take one
    process per server from a machine of two cores."""

    def __init__(self, reaper: Reaper, output_dir: Path, log: Path, *, count: int = 1, root: Path | None = None) -> None:
        self.reaper = reaper
        err = open(log, "ab")  # noqa: SIM115 - closed by the reaper
        reaper.files.append(err)
        where = ["--output-dir", str(output_dir)] if root is None else ["--count", str(count), "--root", str(root)]
        self.proc = reaper.spawn([PYTHON, str(BENCH / "testserver.py"), *where],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                 env=hermetic_env(), cwd=str(ROOT))
        hello = self._read(30.0 + count)
        self.url: str = hello["url"]
        self.output_dir = Path(hello["output_dir"])
        self.urls: list[str] = [s["url"] for s in hello["servers"]]

    def _read(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"test server (pid {self.proc.pid}) did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"test server (pid {self.proc.pid}) exited with {self.proc.poll()}")
        return json.loads(line)

    def cmd(self, line: str, timeout: float = 60.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def delay(self, class_type: str, seconds: float) -> None:
        self.cmd(f"delay {class_type} {seconds}")

    def pace(self, seconds: float) -> None:
        """Every prompt lasts ``seconds`` in all on these servers (a GPU job of T)."""
        self.cmd(f"pace {seconds}")

    def requests(self) -> list[dict[str, Any]]:
        return self.cmd("requests")

    def forget(self) -> None:
        self.cmd("forget")

    def restart(self, index: int) -> float:
        """Restart server ``index`` (it forgets its queue and history); ``time.time()`` once it listens again."""
        return float(self.cmd(f"@{index} restart")["answering"])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cmd("quit", timeout=5.0)
        self.reaper.stop(self.proc, grace=5.0)


# -- hotfolder projects and the daemon -----------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


class Project:
    """A temp hotfolder project: inbox/, outbox/, templates/ (the shipped examples), hotfolder.toml."""

    def __init__(self, root: Path, servers: Iterable[str], **settings: Any) -> None:
        self.root = root
        for sub in ("inbox", "outbox", "templates", "plugins"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for path in EXAMPLES.iterdir():
            if path.is_file():
                shutil.copy(path, root / "templates" / path.name)
        values: dict[str, Any] = {"inbox": "inbox", "outbox": "outbox", "templates": "templates",
                                  "plugins": "plugins", "servers": list(servers), "default_template": "invert",
                                  "instance_id": "bench"}
        from hotfolder.config import Settings

        if "stop_budget" in Settings.__dataclass_fields__:
            values["stop_budget"] = 2.0  # a stop (SIGTERM) must not wait a minute for jobs on a paused server
        values.update(settings)
        self.config = root / "hotfolder.toml"
        self.config.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()), encoding="utf-8")
        self.inbox = root / "inbox"
        self.done = self.inbox / "done"
        self.failed = self.inbox / "failed"

    def count(self, folder: Path) -> int:
        try:
            return sum(1 for e in os.scandir(folder) if not e.name.endswith(".error.json"))
        except FileNotFoundError:
            return 0

    def archived_ctimes(self) -> list[float]:
        """When each input reached done/ (its inode change time, set by the rename), sorted."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.done):
                out.append(entry.stat(follow_symlinks=False).st_ctime_ns / 1e9)
        return sorted(out)

    def first_error(self) -> str | None:
        with contextlib.suppress(FileNotFoundError, StopIteration, ValueError, OSError):
            path = next(p for p in self.failed.iterdir() if p.name.endswith(".error.json"))
            return json.loads(path.read_text()).get("message")
        return None


class Daemon:
    """``python -m hotfolder run`` on a project, in its own process; optionally under cProfile."""

    def __init__(self, reaper: Reaper, project: Project, *, servers: Iterable[str] = (),
                 profile: Path | None = None, profile_clock: str = "wall") -> None:
        self.reaper = reaper
        self.project = project
        self.log = project.root / "daemon.log"
        err = open(self.log, "ab")  # noqa: SIM115 - closed by the reaper
        reaper.files.append(err)
        args = [PYTHON]
        env = hermetic_env()
        if profile is not None:
            args += [str(BENCH / "profiled.py"), str(profile)]
            env["HFBENCH_PROFILE_CLOCK"] = profile_clock
        else:
            args += ["-m", "hotfolder"]
        args += ["--config", str(project.config)]
        for url in servers:
            args += ["--server", url]
        args += ["run"]
        self.proc = reaper.spawn(args, stdout=err, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                 cwd=str(project.root))
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the daemon logs that it watches the inbox (its observer and startup scan are running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hotfolder exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(FileNotFoundError):
                if b"Watching " in self.log.read_bytes():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"hotfolder did not start within {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status_kb(self, key: str) -> int:
        return proc_status_kb(self.pid, key)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def switches(self) -> int:
        return proc_switches(self.pid)

    def stop(self) -> int | None:
        return self.reaper.stop(self.proc, grace=20.0)


# -- files and workflows -------------------------------------------------------------------------------


def scenario_bytes(color: int, width: int = 8, prefix: str = "hfbench/invert", height: int = 8) -> bytes:
    return json.dumps({"params": {"width": width, "height": height, "color": color, "prefix": prefix}}).encode()


def scenario_name(color: int) -> str:
    return f"b{color:08d}.json"


def stage(inbox: Path, color: int, *, width: int = 8, prefix: str = "hfbench/invert", height: int = 8) -> tuple[Path, Path]:
    """Write one scenario file under a hidden name (``.<name>.tmp``, which the daemon ignores) for a later
    drop by rename; returns (where it is, where it goes)."""
    name = scenario_name(color)
    tmp = inbox / f".{name}.tmp"
    tmp.write_bytes(scenario_bytes(color, width, prefix, height))
    return tmp, inbox / name


def drop(inbox: Path, color: int, *, how: str = "rename", width: int = 8, prefix: str = "hfbench/invert",
         height: int = 8) -> float:
    """Put one scenario file into ``inbox``; return ``time.time()`` once it is complete there.

    ``rename``: written as ``.<name>.tmp`` then renamed (what producers do); ``close``: written in place,
    complete when closed (the close-after-write event).
    """
    if how == "rename":
        os.rename(*stage(inbox, color, width=width, prefix=prefix, height=height))
        return time.time()
    with open(inbox / scenario_name(color), "wb") as fh:
        fh.write(scenario_bytes(color, width, prefix, height))
    return time.time()


def invert_workflow(color: int, width: int = 8, prefix: str = "hfbench/invert", height: int = 8) -> dict[str, Any]:
    """The shipped ``invert`` template, filled like hotfolder fills it for :func:`scenario_bytes`."""
    values = {"width": width, "height": height, "batch_size": 1, "color": color, "prefix": prefix}
    workflow = json.loads((EXAMPLES / "invert.json").read_text(encoding="utf-8"))
    for node in workflow.values():
        for key, value in list(node.get("inputs", {}).items()):
            if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
                node["inputs"][key] = values[value.strip("{} ")]
    return workflow


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05,
             check: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
