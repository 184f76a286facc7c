"""Named crash points for the fault-injection tests.

``HOTFOLDER_FAILPOINT=<name>[:<n>]`` makes the process kill itself with SIGKILL the n-th time (default:
the first) it passes the point ``<name>``; unset, :func:`hit` is a dictionary lookup and nothing else.
The points sit between the steps whose order the crash-safety promises depend on: ``after_claim``,
``after_record``, ``mid_parse``, ``after_post``, ``mid_download``, ``mid_publish``, ``mid_archive``,
``mid_cleanup`` (the job folder half emptied, its record still there).
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = ("after_claim", "after_record", "mid_parse", "after_post", "mid_download", "mid_publish", "mid_archive",
          "mid_cleanup")

_name, _, _nth = os.environ.get("HOTFOLDER_FAILPOINT", "").partition(":")
_target = int(_nth) if _nth.isdigit() else 1
_count = 0
_lock = threading.Lock()


def hit(name: str) -> None:
    global _count
    if name != _name:
        return
    with _lock:
        _count += 1
        if _count == _target:
            os.kill(os.getpid(), signal.SIGKILL)
