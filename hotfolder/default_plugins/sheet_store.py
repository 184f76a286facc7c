"""A batch's contact sheet in object storage: its jobs read back from the bucket, the sheet uploaded beside them.

With an ``s3://`` outbox or destination the job folders exist only in the bucket once published.
:func:`make_sheet` lists each published job folder, reads its sidecar and downloads only the picture a
cell shows (the first image or animation, known from the sidecar's media facts or the file's extension)
into a local work folder; the sheet and ``index.html`` are made there as for a local outbox, then
uploaded as ``<prefix>/<file stem>-sheet/`` (``-sheet-2`` ... when taken), ``index.html`` last, after
every job's objects (the ``archived`` event comes after the last publish). The gallery's links are
relative (``../<job>/<file>``), so they resolve to the jobs' keys from a bucket website or a downloaded
copy. Only what the sidecar lists and the bucket holds is linked.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotfolder import media
from hotfolder.default_plugins.sheet_layout import MAX_SIDECAR, VISUAL, Entry, output_name, sheet_entries
from hotfolder.destination import SCHEME, Outbox
from hotfolder.paths import safe_filename

if TYPE_CHECKING:
    from hotfolder.config import Settings
    from hotfolder.objectstore import ObjectStore

logger = logging.getLogger("hotfolder.contact_sheet")

def job_folder(outbox: Outbox, url: str) -> str | None:
    """The job folder's name when ``url`` (``s3://bucket/prefix/<name>/``) is one directly under ``outbox``."""
    head = outbox.url.rstrip("/") + "/"
    if not outbox.url.startswith(SCHEME) or not url.startswith(head):
        return None
    name = url[len(head):].rstrip("/")
    return name if name and "/" not in name and name not in (".", "..") else None


def make_sheet(file: str, published: tuple[str, ...], outbox: Outbox, settings: Settings, owner: str,
               build: Callable[[str, list[Entry], Path], None]) -> str | None:
    """Make batch ``file``'s sheet from its ``published`` job URLs in ``outbox`` and upload it; return its URL,
    or None when there is nothing to show. ``build(file, entries, folder)`` draws the sheet and the page;
    ``owner`` (the file's job id) marks the uploaded objects."""
    from hotfolder.objectstore import store_for  # noqa: PLC0415 - boto3 (the s3 extra) only for object storage

    store = store_for(settings, outbox.url)
    work = outbox.folder / f"sheet-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        entries = sheet_entries(collect(store, [name for url in published if (name := job_folder(outbox, url))],
                                        work / "jobs"))
        if not entries:
            return None
        sheet = work / "sheet"
        sheet.mkdir()
        build(file, entries, sheet)
        stem = safe_filename(Path(file).stem or file, fallback="batch")
        done = store.upload_folder(sheet, f"{stem}-sheet", f"sheet/{owner}", last="index.html")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("[%s] contact sheet -> %s", file, done.url)
    return done.url


def collect(store: ObjectStore, folders: list[str], work: Path) -> list[Entry]:
    """The entries of the job ``folders`` in the store that have a readable sidecar, each picture downloaded
    into ``work/<folder>/``; outputs the sidecar lists but the store does not hold are left out."""
    entries = []
    for folder in folders:
        held = store.files(folder)
        name = f"{folder}.json"
        try:
            if not 0 < held.get(name, 0) <= MAX_SIDECAR:
                raise ValueError("none")
            sidecar = json.loads(store.read(folder, name, limit=MAX_SIDECAR))
        except ValueError:
            logger.warning("Contact sheet: %s has no readable sidecar, left out", store.destination.key(folder))
            continue
        if not isinstance(sidecar, dict):
            continue
        local = work / folder
        local.mkdir(parents=True)
        entry = Entry(folder, local, sidecar, _outputs(sidecar, held))
        _fetch_picture(store, entry)
        entries.append(entry)
    return entries


def _outputs(sidecar: dict[str, Any], held: dict[str, int]) -> list[tuple[str, str]]:
    """(file, kind) of the sidecar's outputs that the store holds: the kind from the sidecar's media facts,
    else guessed from the name."""
    found = []
    for item in sidecar.get("outputs") or ():
        name = output_name(item)
        if name is None or name not in held:
            continue
        facts = item.get("media")
        kind = facts.get("kind") if isinstance(facts, dict) else None
        if not isinstance(kind, str):
            guessed = (mimetypes.guess_type(name)[0] or "").partition("/")[0]
            kind = guessed if guessed in ("image", "video", "audio") else "other"
        found.append((name, kind))
    return found


def _fetch_picture(store: ObjectStore, entry: Entry) -> None:
    """Download the picture of ``entry`` (an image or animation) and take its kind from the file itself."""
    picture = entry.picture
    if picture is None or picture[1] not in VISUAL:
        return
    path = entry.folder / picture[0]
    store.download(entry.name, picture[0], path)
    try:
        kind = media.probe(path).kind
    except OSError:
        return
    entry.outputs = [(name, kind if name == picture[0] else was) for name, was in entry.outputs]

