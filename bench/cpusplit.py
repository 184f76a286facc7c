"""``python bench/cpusplit.py SAMPLES.txt``: where a hotfolder daemon's CPU went, from a py-spy recording.

Record the daemon while the bench runs (py-spy is on PyPI: ``pip install py-spy``; it needs ptrace rights)::

    py-spy record --subprocesses --nonblocking --gil --rate 200 --format raw -o SAMPLES.txt -- \\
        python bench/run.py --only pool --farm 16 --post-time 0

and this prints the samples of the ``hotfolder ... run`` process split two ways: by thread (what the
thread is for) and by component (the innermost frame that belongs to a library or to a hotfolder module:
where the time was spent, not who asked for it). ``--nonblocking`` reads the process without stopping
it; ``--gil`` keeps only the thread holding the GIL, the limit of a CPU-bound Python process (without it
a thread blocked in a lock or an fsync counts as busy). cProfile (``run.py --profile``) is no help for
this: it counts every resumption of a generator as a call, which makes the pure-Python JSON encoder look
30 times dearer.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

# (label, what a frame's file path contains), checked innermost frame first
COMPONENTS = [
    ("HTTP: requests, urllib3, http.client", ("requests/", "urllib3/", "http/client.py", "email/")),
    ("WebSocket: websocket-client", ("websocket/",)),
    ("JSON", ("json/",)),
    ("logging", ("logging/",)),
    ("watchdog", ("watchdog/",)),
    ("Jinja2", ("jinja2/",)),
    ("pathlib", ("pathlib.py",)),
    ("threading", ("threading.py", "queue.py")),
    ("socket, ssl, selectors", ("socket.py", "ssl.py", "selectors.py")),
]

# (label, a frame's function name starts with one of these), checked outermost frame first
THREADS = [
    ("job workers: render, upload, submit, track", ("Scheduler._worker",)),
    ("output workers: download, publish, archive", ("Scheduler._output_worker",)),
    ("ending cancelled jobs", ("Scheduler._run_ended",)),
    ("WebSocket readers", ("EventStream._run",)),
    ("prepare threads: parse, render", ("Intake._preparer",)),
    ("watcher: watchdog and the settle thread", ("Intake._run", "InotifyFD", "EventEmitter", "EventDispatcher",
                                                 "BaseObserver", "InotifyEmitter")),
    ("main thread: claims, health, status", ("_main_loop", "<module> (hotfolder/__main__.py")),
    ("status writer, pollers, lease", ("StatusWriter", "ServerJobsPoller", "Lease", "Router._watch_restarts",
                                       "PauseSwitch", "Heartbeat")),
]


def _function(frame: str) -> str:
    return frame.split(" (", 1)[0]


def _file(frame: str) -> str:
    inside = frame.rsplit(" (", 1)[-1]
    return inside.rsplit(":", 1)[0]


def component(frames: list[str]) -> str:
    for frame in reversed(frames):
        path = _file(frame)
        for label, marks in COMPONENTS:
            if any(mark in path for mark in marks):
                return label
        if "hotfolder/" in path:
            return "hotfolder/" + path.split("hotfolder/", 1)[1]
    return "other (Python itself, the standard library)"


def thread(frames: list[str]) -> str:
    for frame in frames:
        for label, starts in THREADS:
            if frame.startswith(starts):
                return label
    return "other threads"


def split(lines: list[str], process: str) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    total = 0
    by_thread: collections.Counter[str] = collections.Counter()
    by_component: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if process not in stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        n = int(count)
        total += n
        by_thread[thread(frames)] += n
        by_component[component(frames)] += n
    return total, by_thread, by_component


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", type=Path, help="py-spy's --format raw output")
    p.add_argument("--process", default="-m hotfolder", help="a text of the process's command line")
    p.add_argument("--top", type=int, default=15, help="components shown (default 15)")
    args = p.parse_args(argv)
    total, by_thread, by_component = split(args.samples.read_text(encoding="utf-8").splitlines(), args.process)
    if not total:
        print(f"no samples of a process matching {args.process!r} in {args.samples}", file=sys.stderr)
        return 1
    print(f"{total} samples of the daemon")
    for title, counter, top in (("by thread", by_thread, None), ("by component", by_component, args.top)):
        print(f"\n{title}:")
        for label, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
