"""Errors hotfolder reports to its users.

Every error a user can cause or meet carries enough to act on: what failed, where (file, job, node,
input), and a hint. The daemon catches :class:`HotfolderError` at the job boundary and turns it into
``inbox/failed/<name>.error.json``; the CLI turns it into a one-line message and exit status 1.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from hotfolder.redact import redact_data, redact_text


class HotfolderError(Exception):
    """Base class: a failure explained to the user, never shown as a bare traceback.

    ``stage`` names the pipeline stage, ``where`` holds structured location fields (file, job, node,
    input, line, ...), ``hint`` says how to fix it.
    """

    stage = "hotfolder"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: dict[str, Any] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = dict(where or {})
        self.details = details

    def __str__(self) -> str:
        """The message and the hint, credentials redacted (:mod:`hotfolder.redact`)."""
        text = self.message
        if self.hint:
            text += f"\nHint: {self.hint}"
        return redact_text(text)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape written into error files, credentials redacted (a server's answer in
        ``details`` may quote them)."""
        out: dict[str, Any] = {
            "stage": self.stage,
            "error": type(self).__name__,
            "message": self.message,
        }
        if self.where:
            out["where"] = self.where
        if self.hint:
            out["hint"] = self.hint
        if self.details is not None:
            out["details"] = self.details
        return redact_data(out)


class ConfigError(HotfolderError):
    """hotfolder.toml, HOTFOLDER_* variables or CLI options are wrong. Seen at startup."""

    stage = "config"


class ScenarioError(HotfolderError):
    """A scenario file cannot be read or expanded into jobs. The input goes to failed/."""

    stage = "parse"


class TemplateError(HotfolderError):
    """A template is missing, malformed, in UI format, or fails to render for a job."""

    stage = "render"


class AddressError(TemplateError):
    """A node address (``<node>.<input>``) matches no node or several nodes."""

    stage = "inject"


class ServerError(HotfolderError):
    """ComfyUI could not be reached or answered something unusable. Jobs wait and retry; not a job failure."""

    stage = "server"


class ServerUnavailable(ServerError):
    """ComfyUI is not reachable right now (connection refused, DNS, TLS). Retry later."""


class OutcomeUnknown(ServerError):
    """A request may or may not have taken effect (timeout, connection dropped mid-request)."""


class UploadError(HotfolderError):
    """ComfyUI refused a scenario's input file (``POST /upload/image``). The job fails."""

    stage = "upload"


class PromptRejected(HotfolderError):
    """ComfyUI refused the workflow (HTTP 400, node_errors). The job fails."""

    stage = "submit"


class ExecutionFailed(HotfolderError):
    """ComfyUI ran the workflow and it failed (execution_error) or was interrupted."""

    stage = "track"


class JobTimeout(HotfolderError):
    """The job did not finish within its deadline."""

    stage = "track"


class JobCancelled(HotfolderError):
    """A user cancelled the job (``hotfolder cancel``, a ``.cancel`` file, Ctrl-C in ``hotfolder process``).
    The job fails with this error: its input goes to failed/, nothing is published."""

    stage = "cancelled"


class OutputError(HotfolderError):
    """An output could not be downloaded or published."""

    stage = "download"


class PluginError(HotfolderError):
    """A plugin failed to load or broke its contract."""

    stage = "plugins"


class FilesystemError(HotfolderError):
    """A filesystem refused a read or write: full, read-only, no permission, a name too long, an I/O
    error. The user's or the administrator's to fix (the message says how), never a bug in hotfolder."""

    stage = "filesystem"


_OS_TROUBLE: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the filesystem is full", "Free space on the filesystem that holds it (df {path} shows it)."),
    errno.EDQUOT: ("the disk quota is used up", "Free space or raise the quota of the user hotfolder runs as."),
    errno.EROFS: ("the filesystem is read-only", "Remount it read-write (mount -o remount,rw on the mount point that findmnt -T {folder} names)."),
    errno.EACCES: ("permission denied", "Give the user hotfolder runs as (uid {uid}) access to {folder}."),
    errno.EPERM: ("operation not permitted", "Give the user hotfolder runs as (uid {uid}) access to {folder}."),
    errno.ENAMETOOLONG: ("the name is too long for this filesystem", "Use a shorter file or job name."),
    errno.EIO: ("input/output error", "The disk or network share is failing: check the system log (dmesg)."),
    errno.EMFILE: ("too many open files", "Raise the open-file limit (LimitNOFILE= in the systemd unit)."),
    errno.ENFILE: ("too many open files in the system", "Raise the system's open-file limit (fs.file-max)."),
    errno.EFBIG: ("the file is too large for this filesystem", "Put the outbox on a filesystem that takes larger files."),
}


def errno_name(code: int | None) -> str:
    """``ENOSPC`` for errno 28; ``errno N`` for a number without a name."""
    return errno.errorcode.get(code or 0, f"errno {code}")


def filesystem_error(err: OSError, *, path: str | os.PathLike[str] | None = None, doing: str = "write",
                     where: dict[str, Any] | None = None) -> FilesystemError:
    """The :class:`FilesystemError` that explains ``err``: what was refused, where, why, and how to fix it.
    ``path`` is used when ``err`` names no file; ``doing`` is the verb (write, read, move, publish)."""
    name = err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else path
    shown = os.fsdecode(name) if name is not None else "a file"
    why, hint = _OS_TROUBLE.get(err.errno or 0, (err.strerror or str(err), "Check the path and the filesystem that holds it."))
    text = f"Cannot {doing} {shown!r}: {why} ({errno_name(err.errno)})"
    if isinstance(err.filename2, (str, bytes, os.PathLike)):
        text = f"Cannot {doing} {shown!r} to {os.fsdecode(err.filename2)!r}: {why} ({errno_name(err.errno)})"
    folder = os.path.dirname(shown) or shown
    return FilesystemError(text + ".", hint=hint.format(path=shown, folder=folder, uid=os.getuid()),
                           where={**(where or {}), "path": shown, "errno": errno_name(err.errno)})
