"""Part of stage 5 (inject): a scenario's ``inputs:``, local files uploaded to ComfyUI and set by address.

``inputs: {"LoadImage.image": photos/cat.png}`` names a node input (an address, as for ``set:``) and a
file. The path is relative to the folder the scenario file was dropped into (the inbox; for
``hotfolder process`` and ``render``, the file's own folder). The parser already refuses absolute
paths and ``..``; :func:`resolve_inputs` then resolves symlinks and requires the real file to be inside
one of the allowed roots: the inbox, plus ``inputs_root`` when configured. A missing file, a folder,
an unreadable file or one outside the roots is a :class:`~hotfolder.errors.ScenarioError` naming the
scenario file, the job, the address and the path, raised while the scenario is read (before anything
is queued).

Each file is read once, through one descriptor, and what is uploaded is that read: the resolved path
is opened with :func:`hotfolder.paths.open_regular` (its last component is never followed: a file
swapped for a symlink after the check is refused; no FIFO or device is read), the path the kernel
opened (``/proc/self/fd``) is checked against the roots again (a folder swapped for a symlink after the
check is refused), and the bytes are hashed and copied on the way into a private copy in the job folder
(``input-<hash><ext>``), which the upload sends. One content is read once per scenario file, however
many jobs use it. (Symlinks inside the inbox that lead into a root are followed when the path is
resolved, so that ``inputs_root`` can be reached through one; the result is what is checked.)

Names on the server are content hashes: ``hotfolder/<sha256[:16]><ext>`` (subfolder ``hotfolder`` of
ComfyUI's input folder). Two jobs or two files with the same bytes share one name, different bytes
never collide, and since ComfyUI keeps the name of an identical upload (PROTOCOL.md §7), uploading
the same bytes again changes nothing. The rendered workflow holds this predicted name (so
``hotfolder render`` shows it and validation knows it); the daemon uploads the file to the server the
job was routed to right before submitting, and sets the name ComfyUI answered (normally the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from hotfolder import failpoints
from hotfolder.comfy.client import ComfyClient
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.errors import AddressError, ScenarioError, ServerUnavailable
from hotfolder.fsguard import at_path
from hotfolder.paths import NotRegular, fd_path, open_regular, write_all
from hotfolder.record import COPY_PREFIX
from hotfolder.stages.context import JobContext
from hotfolder.templates import inject

#: The subfolder of ComfyUI's input folder that uploads go to.
UPLOAD_SUBFOLDER = "hotfolder"
#: How many hex digits of the sha256 name an upload.
HASH_DIGITS = 16
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}")
_READ_CHUNK = 1024 * 1024


@dataclass
class InputFile:
    """One file of a job's ``inputs:``.

    ``address`` is the node input, ``path`` the path as the scenario wrote it, ``local`` the resolved
    absolute path, ``sha256``/``size`` of its bytes when the scenario was read, ``name`` the name it gets
    on the server (``hotfolder/<hash><ext>``). ``uploaded`` and ``server`` are set once it is on a server:
    the name ComfyUI answered and that server's URL. ``copy`` is the name of the private copy in the job
    folder that the upload sends (None where nothing was copied: ``hotfolder render``).
    """

    address: str
    path: str
    local: str
    sha256: str
    size: int
    name: str
    uploaded: str | None = None
    server: str | None = None
    copy: str | None = None

    @property
    def filename(self) -> str:
        """The file name part of :attr:`name` (without the subfolder)."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def value(self) -> str:
        """What the node input is set to: the uploaded name, else the predicted one."""
        return self.uploaded or self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputFile:
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})  # type: ignore[arg-type]


def upload_name(sha256: str, suffix: str) -> str:
    """``hotfolder/<sha256[:16]><ext>``: the extension is kept (lower case) when it is a plain one."""
    ext = suffix.lower() if _EXTENSION.fullmatch(suffix or "") else ""
    return f"{UPLOAD_SUBFOLDER}/{sha256[:HASH_DIGITS]}{ext}"


def resolve_inputs(inputs: dict[str, str], *, base: Path, roots: list[Path], where: dict[str, Any] | None = None,
                   copy_dir: Path | None = None, cache: dict[tuple[int, ...], tuple[str, int, str | None]] | None = None,
                   ) -> list[InputFile]:
    """Find, read and hash each file of a job's ``inputs:`` (address -> path relative to ``base``),
    copying it into ``copy_dir`` (the job folder) on the way when given. ``cache`` (one per scenario
    file) keeps what was read by file identity, so that the jobs of a file read each content once.

    Raise :class:`ScenarioError` if a path is absolute, goes up, does not exist, is not a regular file,
    cannot be read, is replaced while being read, or (after symlinks are resolved) is outside every
    folder of ``roots``.
    """
    if not inputs:
        return []  # most jobs: no symlink resolution of the roots for nothing
    where = dict(where or {})
    allowed = [root.resolve() for root in roots]
    cache = {} if cache is None else cache
    out: list[InputFile] = []
    for address, rel in inputs.items():
        out.append(_resolve_one(address, rel, base, allowed, where, copy_dir, cache))
    return out


def _resolve_one(address: str, rel: Any, base: Path, roots: list[Path], where: dict[str, Any],
                 copy_dir: Path | None, cache: dict[tuple[int, ...], tuple[str, int, str | None]]) -> InputFile:
    fields = {**where, "address": address, "path": rel}
    label = f"Input file {rel!r} for {address!r}" + _scenario(where)
    if not isinstance(rel, str) or not rel.strip():
        raise ScenarioError(f"{label} is not a file path.", hint="Give a path relative to the scenario file.", where=fields)
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise ScenarioError(f"{label} is absolute or goes up with '..'.",
                            hint="Input files are given relative to the scenario file, inside the inbox.", where=fields)
    candidate = base / rel
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise ScenarioError(
            f"{label} does not exist (looked for {str(candidate)!r}).",
            hint="Paths in 'inputs:' are relative to the folder the scenario file was dropped into. Put the file "
                 "there (in a subfolder such as photos/: files at the top of the inbox are taken as scenarios) "
                 "before dropping the scenario.",
            where=fields,
        ) from None
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ScenarioError(f"{label} cannot be resolved ({str(candidate)!r}): {err}.", where=fields) from err
    if not any(resolved.is_relative_to(root) for root in roots):
        shown = " or ".join(repr(str(root)) for root in roots)
        raise ScenarioError(
            f"{label} resolves to {str(resolved)!r}, outside {shown}.",
            hint="Input files must be inside the inbox (symlinks are resolved, then checked). To use files from "
                 "another folder, set inputs_root = \"<that folder>\" in hotfolder.toml.",
            where={**fields, "resolved": str(resolved)},
        )
    failpoints.hit("inputs_checked")
    try:
        fd, st = open_regular(resolved)
    except NotRegular as err:
        raise ScenarioError(
            f"{label} is not a regular file ({str(resolved)!r}: {err.strerror}).",
            hint="Name a file, not a folder, a device or a FIFO; a file replaced by a symlink after it was "
                 "checked is not read either.", where=fields) from None
    except OSError as err:
        raise ScenarioError(f"{label} cannot be read ({str(resolved)!r}): {err.strerror or err}.",
                            hint="Check the file's permissions.", where=fields) from err
    try:
        opened = fd_path(fd)
        if opened is not None and not any(Path(opened).is_relative_to(root) for root in roots):
            raise ScenarioError(
                f"{label} was replaced while being read: what was opened is {opened!r}, outside the allowed folders.",
                hint="Do not change input files (or their folders) while hotfolder reads them.", where=fields)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in cache:
            cache[key] = _read(fd, resolved.suffix, copy_dir, label, resolved, fields)
        sha, size, copy = cache[key]
    finally:
        os.close(fd)
    return InputFile(address=address, path=rel, local=str(resolved), sha256=sha, size=size,
                     name=upload_name(sha, resolved.suffix), copy=copy)


def _read(fd: int, suffix: str, copy_dir: Path | None, label: str, resolved: Path,
          fields: dict[str, Any]) -> tuple[str, int, str | None]:
    """(sha256, size, name of the private copy or None): ``fd`` read once, hashed and copied on the way."""
    digest = hashlib.sha256()
    size = 0
    out: int | None = None
    tmp: str | None = None
    if copy_dir is not None:
        out, tmp = tempfile.mkstemp(prefix=f".{COPY_PREFIX}", dir=copy_dir)
    try:
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except OSError as err:
                raise ScenarioError(f"{label} cannot be read ({str(resolved)!r}): {err.strerror or err}.",
                                    hint="Check the file's permissions.", where=fields) from err
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            if out is not None and tmp is not None:
                # A write refused here is the job folder's filesystem (a full inbox), not the input's
                # fault: it stays an OSError, which pauses intake (hotfolder.fsguard), naming the copy.
                with at_path(tmp):
                    write_all(out, chunk)
        sha = digest.hexdigest()
        if out is None:
            return sha, size, None
        os.close(out)
        out = None
        assert tmp is not None and copy_dir is not None  # both made with out
        copy = COPY_PREFIX + upload_name(sha, suffix).rpartition("/")[2]
        os.replace(tmp, os.path.join(copy_dir, copy))  # the same name holds the same bytes
        tmp = None
        return sha, size, copy
    finally:
        if out is not None:
            os.close(out)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def inject_inputs(workflow: dict[str, Any], inputs: list[InputFile], *, where: dict[str, Any] | None = None) -> None:
    """Set each input's node input to its server name (uploaded, else predicted), in place."""
    for item in inputs:
        try:
            inject.set_input(workflow, item.address, item.value, where={**(where or {}), "path": item.path})
        except AddressError as err:
            raise AddressError(f"inputs: {err.message}", hint=err.hint, where=err.where, details=err.details) from err


def upload_input(http: ComfyHTTP, item: InputFile, *, folder: Path | None = None,
                 where: dict[str, Any] | None = None) -> str:
    """Upload ``item`` under its content-hash name from its private copy in the job ``folder`` (a
    record written before copies were kept: from the file itself, opened without following a link);
    return the name to put in the workflow (``subfolder/name`` as ComfyUI answered). The bytes sent are
    hashed on the way: a file that changed since the scenario was read is a :class:`ScenarioError` (its
    new bytes are not used under the old name). Raises what :meth:`ComfyHTTP.upload_image` raises."""
    digest = hashlib.sha256()
    subfolder, _, filename = item.name.rpartition("/")
    source = Path(folder, item.copy) if item.copy and folder is not None else Path(item.local)
    answer = http.upload_image(source, filename, subfolder=subfolder, digest=digest)
    if digest.hexdigest() != item.sha256:
        raise ScenarioError(
            f"Input file {item.path!r} for {item.address!r} changed after the scenario was read "
            f"(sha256 {item.sha256[:12]}... then, {digest.hexdigest()[:12]}... now).",
            hint="Let the file be complete before dropping the scenario, then drop the scenario again.",
            where={**(where or {}), "address": item.address, "path": item.path},
        )
    name = answer["name"]
    subfolder = answer.get("subfolder") or ""
    return f"{subfolder}/{name}" if subfolder else name


class Uploads:
    """What this daemon uploaded to each server since it last came back (sha256 -> name on the
    server), and one lock per server so that each content is uploaded there once at a time."""

    def __init__(self, servers: list[str]) -> None:
        self.known: dict[str, dict[str, str]] = {name: {} for name in servers}
        self.locks = {name: threading.Lock() for name in servers}

    def forget(self, server: str) -> None:
        """The server came back: it may have restarted with an empty input folder."""
        self.known[server].clear()


def with_inputs(ctx: JobContext, client: ComfyClient, rendered: dict[str, Any]) -> dict[str, Any]:
    """The workflow to submit to ``client``: ``rendered`` with the job's input files uploaded there
    and their names set. A job already submitted keeps the names recorded when it was."""
    job = ctx.job
    if not job.inputs:
        return rendered
    items = [InputFile.from_dict(item) for item in job.inputs]
    settled = job.state in {"submitted", "downloaded"} or (job.state == "submitting" and job.submissions > 0)
    if not (settled and all(item.uploaded and item.server == client.display_url for item in items)):
        for item in items:
            item.uploaded = upload_once(ctx, client, item)
            item.server = client.display_url
        job.inputs = [item.to_dict() for item in items]
        ctx.save()  # the names are on disk before the workflow using them is submitted
    workflow = json.loads(json.dumps(rendered))
    inject_inputs(workflow, items, where=ctx.where())
    return workflow


def upload_once(ctx: JobContext, client: ComfyClient, item: InputFile) -> str:
    """Put ``item`` on ``client``'s server once: a content this daemon already uploaded there (since
    the server last came back) is not sent again. Waits while the server is away."""
    known = ctx.uploads.known[client.name]
    while True:
        with ctx.uploads.locks[client.name]:  # one upload of a content at a time per server
            name = known.get(item.sha256)
            if name is not None and _mark_used(client, name):
                return name
            try:
                name = upload_input(client.http, item, folder=ctx.record.folder, where=ctx.where(client))
            except ServerUnavailable:
                name = None
            if name is not None:
                known[item.sha256] = name
                _mark_used(client, name)
                ctx.log.info("uploaded %s (%d bytes) to %s as %s", item.path, item.size, client.display_url, name)
                return name
        ctx.wait_for_server(client, movable=True)


def _mark_used(client: ComfyClient, name: str) -> bool:
    """For a server whose input folder is on this machine (``input_dir``): whether the uploaded file is
    still there, touching it so that upload retention counts its age from its last use. ComfyUI does
    not rewrite identical bytes, so the file's own time says when it was first uploaded. Other servers:
    True (nothing to check)."""
    if client.server.input_dir is None:
        return True
    local = client.server.input_dir / name
    try:
        os.utime(local)
    except OSError:
        return False  # deleted by retention (or by hand): upload it again
    return True


def _scenario(where: dict[str, Any]) -> str:
    if "file" in where and "job" in where:
        return f" (scenario {where['file']!r}, job {where['job']!r})"
    return ""
