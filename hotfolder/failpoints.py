"""Named crash points for the fault-injection tests.

``HOTFOLDER_FAILPOINT=<name>[:<n>]`` makes the process kill itself with SIGKILL the n-th time (default:
the first) it passes the point ``<name>``; unset, :func:`hit` is a dictionary lookup and nothing else.
The points sit between the steps whose order the crash-safety promises depend on: ``after_claim``,
``after_record``, ``mid_parse``, ``after_post``, ``mid_download``, ``mid_publish``, ``mid_archive``,
``mid_cleanup`` (the job folder half emptied, its record still there). ``mid_upload`` (not in
:data:`POINTS`: only an ``s3://`` outbox passes it) follows each object written to the store.

In-process tests can also run a function at a point (:func:`on`): ``claim_checked`` (a file opened and
checked, not yet renamed into its job folder) and ``inputs_checked`` (an ``inputs:`` path resolved and
checked, not yet opened) are there for the race tests of the claim and of input files.

In-process tests can instead make a point raise an OSError (:func:`inject`, :func:`clear`): a full disk,
a read-only filesystem, any errno at that step. ``probe`` is the filesystem probe of
:class:`hotfolder.fsguard.Guard` (a fault injected there keeps a paused intake paused).
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
_faults: dict[str, list[int]] = {}  # point -> [errno, passes to let through first, times to raise (-1: until cleared)]


def hit(name: str) -> None:
    global _count
    if _hooks:
        hook = _hooks.get(name)
        if hook is not None:
            hook()
    if _faults:
        _raise_injected(name)
    if name != _name:
        return
    with _lock:
        _count += 1
        if _count == _target:
            os.kill(os.getpid(), signal.SIGKILL)


def inject(name: str, code: int, *, skip: int = 0, times: int = 1) -> None:
    """Make point ``name`` raise ``OSError(code)`` after letting ``skip`` passes through, ``times`` times
    (-1: until :func:`clear`)."""
    with _lock:
        _faults[name] = [code, skip, times]


def clear(name: str | None = None) -> None:
    """Stop raising at ``name`` (every point when None)."""
    with _lock:
        if name is None:
            _faults.clear()
        else:
            _faults.pop(name, None)


def _raise_injected(name: str) -> None:
    with _lock:
        fault = _faults.get(name)
        if fault is None:
            return
        if fault[1] > 0:
            fault[1] -= 1
            return
        if fault[2] == 0:
            return
        fault[2] -= 1 if fault[2] > 0 else 0
        code = fault[0]
    raise OSError(code, os.strerror(code))
