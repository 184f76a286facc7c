"""Safe names and no-replace renames: nothing a scenario or a server says can write outside its folder."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import unicodedata
from pathlib import Path

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
MAX_NAME = 120


def safe_filename(name: str, *, fallback: str = "file") -> str:
    """A single path component made from untrusted text: no separators, no control characters, no
    leading dots, not ``.``/``..``, at most ``MAX_NAME`` characters (the extension is kept)."""
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if not name or set(name) <= {".", "_"} and ".." in name:
        name = fallback
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            name = stem[: MAX_NAME - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_NAME]
    return name


def unique_name(folder: Path, name: str, taken: set[str] | None = None) -> str:
    """``name`` or ``stem-2.ext``, ``stem-3.ext`` … whichever does not exist in ``folder`` (or ``taken``)."""
    taken = taken or set()
    stem, ext = _split_ext(name)
    candidate, n = name, 1
    base = os.fspath(folder)
    while candidate in taken or os.path.lexists(os.path.join(base, candidate)):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def _split_ext(name: str) -> tuple[str, str]:
    for double in (".json.j2", ".tar.gz", ".error.json"):
        if name.endswith(double) and len(name) > len(double):
            return name[: -len(double)], double
    stem, ext = os.path.splitext(name)
    return stem, ext


_libc = None
_RENAME_NOREPLACE = 1


def _renameat2():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2  # noqa: B018 - probe the symbol
        except (OSError, AttributeError):
            _libc = False
    return _libc.renameat2 if _libc else None


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing with FileExistsError if ``dst`` exists (never replaces)."""
    fn = _renameat2()
    if fn is not None:
        at_fdcwd = -100
        res = fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE)
        if res == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS):  # filesystem without RENAME_NOREPLACE: fall back
            raise OSError(err, os.strerror(err), str(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))
    os.rename(src, dst)


_RENAME_EXCHANGE = 2
_exchange_unsupported = False


def can_exchange() -> bool:
    """Whether :func:`exchange` may work here (it can still find a filesystem without it)."""
    return not _exchange_unsupported and _renameat2() is not None


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap the files at ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).
    False, with nothing changed, where that is not available (other systems, some filesystems) or one
    of them does not exist; other failures raise OSError."""
    global _exchange_unsupported
    fn = None if _exchange_unsupported else _renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS):
        _exchange_unsupported = True
        return False
    if err == errno.ENOENT:
        return False
    raise OSError(err, os.strerror(err), str(a))


def move_unique(src: Path, folder: Path, name: str) -> Path:
    """Move ``src`` into ``folder`` as ``name`` or a suffixed variant; never overwrites."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    while True:
        candidate = unique_name(folder, name, taken)
        try:
            rename_noreplace(src, folder / candidate)
            return folder / candidate
        except FileExistsError:
            taken.add(candidate)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_and_close(fd: int, data: bytes, *, fsync: bool = False) -> None:
    """Write all of ``data`` to ``fd``, fsync it if asked, and close it (also on failure)."""
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
