"""Named crash points for the fault-injection tests.

``HOTFOLDER_FAILPOINT=<name>[:<n>]`` makes the process kill itself with SIGKILL the n-th time (default:
the first) it passes the point ``<name>``; unset, :func:`hit` is a dictionary lookup and nothing else.
The points sit between the steps whose order the crash-safety promises depend on: ``after_claim``,
``after_record``, ``mid_parse``, ``after_post``, ``mid_download``, ``mid_publish``, ``mid_archive``,
``mid_cleanup`` (the job folder half emptied, its record still there).

In-process tests can also run a function at a point (:func:`on`): ``claim_checked`` (a file opened and
checked, not yet renamed into its job folder) and ``inputs_checked`` (an ``inputs:`` path resolved and
checked, not yet opened) are there for the race tests of the claim and of input files.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

POINTS = ("after_claim", "after_record", "mid_parse", "after_post", "mid_download", "mid_publish", "mid_archive",
          "mid_cleanup")

_name, _, _nth = os.environ.get("HOTFOLDER_FAILPOINT", "").partition(":")
_target = int(_nth) if _nth.isdigit() else 1
_count = 0
_lock = threading.Lock()
_hooks: dict[str, Callable[[], None]] = {}


def on(name: str, hook: Callable[[], None] | None) -> None:
    """Run ``hook`` whenever this process passes point ``name`` (None: no longer). For tests."""
    if hook is None:
        _hooks.pop(name, None)
    else:
        _hooks[name] = hook


def hit(name: str) -> None:
    global _count
    if _hooks:
        hook = _hooks.get(name)
        if hook is not None:
            hook()
    if name != _name:
        return
    with _lock:
        _count += 1
        if _count == _target:
            os.kill(os.getpid(), signal.SIGKILL)
