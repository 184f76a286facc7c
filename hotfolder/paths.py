"""The trust boundary for names and untrusted files: nothing a scenario, a server or a file name says
can write outside its folder, and no file is read through a link or a FIFO.

Names. Every file hotfolder writes gets its name from :func:`safe_filename`: any input (bytes, a str
holding ``os.listdir``'s surrogate escapes, lone surrogates, control characters, line separators,
bidirectional controls, any length) becomes one path component that is valid UTF-8, never ``.``/``..``,
never starts with a dot, and is at most :data:`MAX_NAME_BYTES` bytes, so that the longest suffix
hotfolder adds (``-N`` for a taken name, ``.error.json``, ``.part``, a temp file's ``.<name>.XXXXXXXX.tmp``)
still fits the filesystem's 255-byte limit. The original is kept, as :func:`display_name`, in the
records and sidecars (``original_name``).

Files. :func:`open_regular` opens an untrusted path without following a link in its last component
and without blocking (a FIFO, a device), and says what it opened (``fstat`` on the descriptor):
callers read the content through that descriptor, so what was checked is what is read.

Folders. :func:`own_dir` checks that hotfolder's own folders (``inbox/done/``, ``inbox/failed/``,
``inbox/.hotfolder/...``, ``outbox/.hotfolder-staging/...``) are real directories owned by this
process's user before anything is written into them; a symlink put in their place is refused
(:class:`UnsafeFolder`), never written through.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Any

from hotfolder.errors import HotfolderError

try:
    import fcntl as _fcntl
except ImportError:  # not a POSIX system
    _fcntl = None  # type: ignore[assignment]

#: Bytes in one path component on Linux filesystems (ext4, xfs, btrfs, tmpfs, NFS, SMB).
NAME_MAX = 255
#: Bytes kept free after a safe name for what hotfolder appends: ``-N`` (up to 20 digits), ``.error.json``
#: and the temp-file wrapper ``.<name>.XXXXXXXX.tmp`` of an atomic write (together 49 bytes; 55 kept).
SUFFIX_ROOM = 55
#: The most bytes (UTF-8) a name made by :func:`safe_filename` has.
MAX_NAME_BYTES = NAME_MAX - SUFFIX_ROOM
#: The most characters a name made by :func:`safe_filename` has (long names are hard to read anyway).
MAX_NAME = 120
#: The longest extension kept when a name is shortened.
MAX_EXT_BYTES = 16

_PORTABLE = re.compile(r"[\\:*?\"<>|]")  # unsafe on Windows and SMB shares
# Bidirectional controls: they make a name display as another (``evil\u202egnp.exe``). ZWJ stays (emoji).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_EDGES = re.compile(r"^[\s.]+|\s+$")


class UnsafeFolder(HotfolderError):
    """One of hotfolder's own folders is a symlink, not a directory, or someone else's: not written into."""


def as_text(name: str | bytes) -> str:
    """``name`` as text: bytes decoded as UTF-8 with undecodable bytes kept as surrogate escapes
    (what ``os.listdir`` gives for such names)."""
    return os.fsdecode(name) if isinstance(name, bytes) else str(name)


def display_name(name: str | bytes) -> str:
    """``name`` as valid UTF-8 text for records, sidecars and error files: the same text when it is
    valid, undecodable bytes (surrogate escapes) written ``\\xNN``, other lone surrogates ``\\udNNN``."""
    if isinstance(name, bytes):
        return name.decode("utf-8", "backslashreplace")
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def is_unsafe_char(char: str) -> bool:
    """Whether ``char`` never goes into a name hotfolder writes: control characters, lone surrogates
    (undecodable bytes), line and paragraph separators, bidirectional controls."""
    return char in _BIDI or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")


def _clean_char(char: str, portable: bool) -> str:
    if is_unsafe_char(char):
        return "_"
    if portable and _PORTABLE.match(char):
        return "_"
    return char


def _cut(text: str, chars: int, size: int) -> str:
    """The longest prefix of ``text`` with at most ``chars`` characters and ``size`` UTF-8 bytes."""
    text = text[:chars]
    data = text.encode("utf-8")
    if len(data) <= size:
        return text
    return data[:size].decode("utf-8", "ignore")  # never half a character


def _bounded(name: str) -> str:
    if len(name) <= MAX_NAME and len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and 0 < len(ext.encode("utf-8")) <= MAX_EXT_BYTES:
        ext = "." + ext
        return _cut(stem, MAX_NAME - len(ext), MAX_NAME_BYTES - len(ext.encode("utf-8"))).rstrip() + ext
    return _cut(name, MAX_NAME, MAX_NAME_BYTES).rstrip()


def _safe_once(name: str, fallback: str, portable: bool) -> str:
    name = unicodedata.normalize("NFC", name)
    if portable:
        name = name.replace("\\", "/")
    name = name.rsplit("/", 1)[-1]
    name = "".join(_clean_char(char, portable) for char in name)
    name = _bounded(_EDGES.sub("", name))
    name = _EDGES.sub("", name)
    if not name or set(name) <= {".", "_"} and ".." in name:
        return fallback
    return name


def safe_filename(name: str | bytes, *, fallback: str = "file", portable: bool = True) -> str:
    """A single path component made from untrusted ``name`` (rules in the module docstring): control
    characters, lone surrogates (undecodable bytes), line separators and bidirectional controls become
    ``_``; with ``portable`` (names from scenarios and servers) also ``\\ : * ? " < > |``, and a
    Windows path keeps only its last part. Leading dots and surrounding blanks go; an empty result is
    ``fallback``. At most :data:`MAX_NAME` characters and :data:`MAX_NAME_BYTES` bytes, the extension
    kept. Idempotent: a safe name is its own safe name."""
    once = _safe_once(as_text(name), fallback, portable)
    return _safe_once(once, fallback, portable)  # a shortened name may normalise differently: settle it


def fits(name: str, *, room: int = 0) -> bool:
    """Whether ``name`` can be a path component as it is, with ``room`` bytes to spare: valid UTF-8
    (no surrogates), no ``/`` or NUL, and at most :data:`NAME_MAX` bytes with the room."""
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return b"/" not in data and b"\0" not in data and len(data) + room <= NAME_MAX


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


_libc: Any = None  # the C library once looked up (False: it has no renameat2)
_RENAME_NOREPLACE = 1


def _renameat2():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)  # the C library this process runs on (no ldconfig run)
            _libc.renameat2  # noqa: B018 - probe the symbol
        except (OSError, AttributeError):
            _libc = False
    return _libc.renameat2 if _libc else None


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``, failing with FileExistsError if ``dst`` exists (never replaces).

    Linux's ``renameat2(RENAME_NOREPLACE)`` (through ctypes: the standard library has no call for it)
    does this in one atomic step, for files and folders alike. Elsewhere, and on filesystems without
    it, a check before the rename leaves a narrow race. ``os.link`` + ``os.unlink`` is not used: a
    process killed between the two leaves the file under both names (a claimed scenario also still in the
    inbox), and it fails on folders and on filesystems without hard links."""
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


# -- untrusted files ------------------------------------------------------------------------------

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class NotRegular(OSError):
    """:func:`open_regular` found a symlink, a folder, a FIFO, a device or a socket, not a file."""


def open_regular(path: str | os.PathLike[str] | bytes, *, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open the untrusted file at ``path`` for reading: without following a symlink in its last
    component (``O_NOFOLLOW``), without blocking on a FIFO or a device (``O_NONBLOCK``), and only if
    the descriptor is a regular file (``fstat``). Returns ``(fd, stat)``; the caller reads through
    ``fd`` and closes it. Raises FileNotFoundError if nothing is there, :class:`NotRegular` for
    anything but a regular file, another OSError when it cannot be opened."""
    try:
        fd = os.open(path, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise NotRegular(errno.ELOOP, "is a symlink (not followed)", os.fsdecode(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(errno.EINVAL, "is not a regular file", os.fsdecode(path))
        os.set_blocking(fd, True)  # a regular file: reads never wait anyway; plain reads from here on
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_for_writing(path: str | os.PathLike[str]) -> bool | None:
    """Whether some program still has the file at ``path`` open for writing: True, False, or None where
    that cannot be told. Asked of the kernel with a read lease (Linux ``F_SETLEASE``), which is refused
    while any descriptor of the file is open for writing; it is released at once. None on other systems,
    on filesystems without leases (NFS, SMB, FUSE), and for files the daemon neither owns nor may lease:
    there only the settle rule protects a file being written."""
    if _fcntl is None or not hasattr(_fcntl, "F_SETLEASE"):
        return None
    try:
        fd, _st = open_regular(path)
    except OSError:
        return None
    try:
        _fcntl.fcntl(fd, _fcntl.F_SETLEASE, _fcntl.F_RDLCK)
    except OSError as err:
        return True if err.errno == errno.EAGAIN else None
    else:
        _fcntl.fcntl(fd, _fcntl.F_SETLEASE, _fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stat results are of the same file (device and inode)."""
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def fd_path(fd: int) -> str | None:
    """The path the kernel has for the open ``fd`` (Linux ``/proc/self/fd``), or None where unknown."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


# -- hotfolder's own folders ----------------------------------------------------------------------

_WAITING = "files wait in inbox/.hotfolder/ meanwhile and are taken up again at the next start."


def _not_own(folder: str, st: os.stat_result, uid: int | None) -> tuple[str, str] | None:
    """Why ``folder`` (lstat ``st``) is not a folder of hotfolder's own, and how to fix it; None if it is."""
    if stat.S_ISLNK(st.st_mode):
        return (f"is a symlink (to {display_name(os.readlink(folder))!r}), not a folder of hotfolder's own; "
                "hotfolder does not write through it.",
                f"Remove the symlink (hotfolder makes the folder again); {_WAITING}")
    if not stat.S_ISDIR(st.st_mode):
        return ("is not a folder; hotfolder does not write there.",
                f"Move that file away (hotfolder makes the folder); {_WAITING}")
    if uid is not None and st.st_uid != uid:
        return (f"belongs to user id {st.st_uid}, not to hotfolder's ({uid}); hotfolder writes only into "
                "folders of its own.",
                "Give the folder to the user hotfolder runs as (chown), or remove it (hotfolder makes it again).")
    return None


def own_dir(path: str | os.PathLike[str], *, levels: int = 1) -> None:
    """Make sure the last ``levels`` components of ``path`` are hotfolder's own folders: real
    directories (not symlinks, checked with ``lstat``) owned by this process's user. Missing ones are
    made. Raises :class:`UnsafeFolder` otherwise: nothing may be written through them."""
    chain = [str(Path(path))]  # Path's normal form once ("a/b/" is "a/b"); the parents as plain strings
    while len(chain) < levels and (parent := os.path.dirname(chain[-1]) or ".") != chain[-1]:
        chain.append(parent)
    chain.reverse()
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    for i, folder in enumerate(chain):
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            if i == 0:  # the folders above are not ours to check: made if missing
                os.makedirs(os.path.dirname(folder) or ".", exist_ok=True)
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass  # made by another thread or daemon meanwhile: checked below like any other
            st = os.lstat(folder)
        problem = _not_own(folder, st, uid)
        if problem is not None:
            shown = display_name(str(folder))
            raise UnsafeFolder(f"{shown!r} {problem[0]}", hint=problem[1], where={"folder": shown})
