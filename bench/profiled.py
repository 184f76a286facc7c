"""``python bench/profiled.py OUT.prof <hotfolder arguments>``: the hotfolder CLI under cProfile, every thread.

cProfile only sees the thread that enabled it, and hotfolder does its work in job workers, the intake's
settle thread, watchdog's threads and the WebSocket readers. So every thread started after this module
is loaded gets its own profiler (``threading.Thread.run`` wrapped), and at exit all of them are merged
into one pstats file. Stop the daemon with SIGTERM (a graceful stop) to get the file.

``HFBENCH_PROFILE_CLOCK=cpu`` times with each thread's CPU clock (``time.thread_time``) instead of the wall
clock: waits (locks, sockets, fsync) then cost nothing and the numbers add up to the process's CPU time.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import sys
import threading
import time

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_run = threading.Thread.run
_timer = time.thread_time if os.environ.get("HFBENCH_PROFILE_CLOCK") == "cpu" else time.perf_counter


def _new() -> cProfile.Profile:
    return cProfile.Profile(_timer)


def _profiled_run(self: threading.Thread) -> None:
    profile = _new()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _run(self)
    finally:
        profile.disable()


def main() -> int:
    out = sys.argv[1]
    sys.argv = ["hotfolder", *sys.argv[2:]]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profile = _new()
    main_profile.enable()
    code = 0
    try:
        from hotfolder.cli import main as cli_main

        cli_main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        main_profile.disable()
        stats = pstats.Stats(main_profile)
        with _lock:
            for profile in _profiles:
                with contextlib.suppress(Exception):  # a thread still running: take what it has
                    stats.add(profile)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
