"""Built-in plugin: after a batch file, a labelled contact sheet and an ``index.html`` gallery.

When a scenario file that gave more than one job is archived (the ``Archived`` event, whose
``published`` lists its published job folders), a folder ``outbox/<file stem>-sheet/`` is written
beside the job folders, in one rename from the outbox's staging folder: ``contact-sheet.png`` (each
job's first image or poster in a cell, labelled, laid out by :mod:`~hotfolder.default_plugins.sheet_layout`;
needs Pillow, else only the gallery is written) and ``index.html``
(:mod:`~hotfolder.default_plugins.gallery`, which also holds the label layout as JSON, so labels can be
checked without reading pixels). Off with ``contact_sheet = false``. The work runs on its own thread,
one sheet at a time; a failure is logged with the file's name and never touches the jobs.

Jobs that went to several destinations (a scenario's ``destination:``) get a sheet in each, of the jobs
there. In object storage (``s3://``) the sheet is made from the bucket and uploaded beside the job
folders by :mod:`~hotfolder.default_plugins.sheet_store`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotfolder import media
from hotfolder.default_plugins import gallery, sheet_store
from hotfolder.default_plugins.sheet_layout import (
    MAX_SIDECAR,
    VISUAL,
    Entry,
    Plan,
    number,
    output_name,
    plan,
    sheet_entries,
)
from hotfolder.destination import Outbox, is_store_url
from hotfolder.hookspecs import hookimpl
from hotfolder.paths import rename_noreplace, safe_filename, unique_name

if TYPE_CHECKING:
    from hotfolder.config import Settings
    from hotfolder.events import Event

logger = logging.getLogger("hotfolder.contact_sheet")

CELL = 256  #: the box each image is fitted into, pixels
PAD = 8
FONT_SIZE = 14
MAX_LABEL_LINES = 4
SHEET_NAME = "contact-sheet.png"


# --------------------------------------------------------------------------------------------------
# the hook


@hookimpl
def track_event(event: Event, settings: Settings | None) -> None:
    """On ``archived``: queue the contact sheet of a batch file in each destination its jobs went to (made
    on the sheet thread)."""
    if event.kind != "archived" or settings is None or not getattr(settings, "contact_sheet", False):
        return
    everything = tuple(getattr(event, "published", ()) or ())
    # one job published by a file that did not fail: a one-job file (no request to the store to learn it)
    single = len(everything) == 1 and not getattr(event, "failed", False)
    for outbox, published in _by_destination(settings, everything):
        if outbox.url and not single:
            _enqueue(event.file, partial(sheet_store.make_sheet, event.file, published, outbox, settings,
                                         event.job_id or "batch", build))
        elif not outbox.url and not _single_job(outbox.folder, published):
            _queue(event.file, published, outbox.folder)


def _by_destination(settings: Settings, published: tuple[str, ...]) -> list[tuple[Outbox, tuple[str, ...]]]:
    """``published`` grouped by the destination that holds each (the outbox's own first): a folder's parent,
    an URL's prefix. A folder under none goes with the outbox's (make_sheet leaves it out, saying why)."""
    outboxes = [Outbox("outbox", settings.outbox, settings.outbox_url or ""), *getattr(settings, "destinations", ())]
    groups: dict[str, list[str]] = {}
    for item in published:
        if is_store_url(item):
            home = next((o for o in outboxes if o.url and sheet_store.job_folder(o, item)), None)
            if home is None:
                logger.warning("Contact sheet: %s is in no configured destination, left out", item)
                continue
        else:
            parent = os.path.dirname(os.path.abspath(item))
            home = next((o for o in outboxes if not o.url and os.path.abspath(o.folder) == parent), outboxes[0])
        groups.setdefault(home.name, []).append(item)
    return [(o, tuple(groups[o.name])) for o in outboxes if o.name in groups]


def _single_job(outbox: Path, published: tuple[str, ...]) -> bool:
    """Whether ``published`` is one job folder whose sidecar says its file gave one job: no sheet, told
    here without a thread. Anything else (an unreadable sidecar, which the sheet thread reports) is False."""
    if len(published) != 1:
        return False
    folder = os.path.abspath(published[0])
    try:  # the checks of collect(), in plain system calls: this runs on the thread that archives
        if os.path.dirname(folder) != os.path.abspath(outbox) or not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        fd = os.open(os.path.join(folder, os.path.basename(folder) + ".json"),
                     os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        try:
            if os.fstat(fd).st_size > MAX_SIDECAR:
                return False
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            sidecar = json.loads(b"".join(chunks).decode("utf-8"))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return False
    return isinstance(sidecar, dict) and number(sidecar, "jobs_in_file") <= 1


_pending: deque[tuple[str, Callable[[], Any]]] = deque()
_lock = threading.Lock()
_running = False


def _queue(file: str, published: tuple[str, ...], outbox: Path) -> None:
    """Make the sheet of ``published`` job folders of a local ``outbox`` on the sheet thread."""
    _enqueue(file, partial(make_sheet, file, published, outbox))


def _enqueue(file: str, work: Callable[[], Any]) -> None:
    global _running
    with _lock:
        _pending.append((file, work))
        if _running:
            return
        _running = True
    # not a daemon thread: `hotfolder process` waits for the last sheet before it exits
    threading.Thread(target=_work, name="contact-sheet", daemon=False).start()


def _work() -> None:
    global _running
    while True:
        with _lock:
            if not _pending:
                _running = False
                return
            file, work = _pending.popleft()
        try:
            work()
        except Exception as err:  # noqa: BLE001 - a sheet never fails or re-runs a job
            logger.error("[%s] no contact sheet: %s: %s", file, type(err).__name__, err,
                         exc_info=logger.isEnabledFor(logging.DEBUG))
        except BaseException:  # the next queued sheet starts a new thread
            with _lock:
                _running = False
            raise


def wait_idle(timeout: float = 60.0) -> bool:
    """Wait until no sheet is queued or being made (for tests and orderly exits); False on timeout."""
    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        with _lock:
            if not _running and not _pending:
                return True
        done.wait(0.05)
    return False


# --------------------------------------------------------------------------------------------------
# making one


def make_sheet(file: str, published: tuple[str, ...] | list[str], outbox: Path) -> Path | None:
    """Write the sheet folder of batch ``file`` from its ``published`` job folders; return it, or None
    when there is nothing to show (a single-job file, no readable sidecar)."""
    entries = sheet_entries(collect(outbox, published))
    if not entries:
        return None
    plan_ = plan(entries)
    stem = safe_filename(Path(file).stem or file, fallback="batch")
    staging = outbox / ".hotfolder-staging" / f"sheet-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(file, entries, staging, plan_)
        taken: set[str] = set()
        while True:
            name = unique_name(outbox, f"{stem}-sheet", taken)
            try:
                rename_noreplace(staging, outbox / name)
                break
            except FileExistsError:
                taken.add(name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("[%s] contact sheet -> %s", file, outbox / name)
    return outbox / name


def build(file: str, entries: list[Entry], folder: Path, plan_: Plan | None = None) -> None:
    """Draw the sheet of ``entries`` (with Pillow) and write ``index.html`` into ``folder``."""
    plan_ = plan_ or plan(entries)
    geometry = None
    image = _pillow()
    if image is None:
        logger.warning("[%s] no contact sheet image: Pillow is not installed (pip install 'hotfolder[images]'); "
                       "only the gallery is written", file)
    else:
        geometry = draw(entries, plan_, file, folder, image)
    (folder / "index.html").write_text(gallery.page(file, entries, plan_, geometry, SHEET_NAME if geometry else None),
                                       encoding="utf-8")


def collect(outbox: Path, published: tuple[str, ...] | list[str]) -> list[Entry]:
    """The entries of the published job folders that are direct children of ``outbox`` with a readable
    sidecar; outputs whose names are not a plain file in the folder are left out."""
    entries = []
    base = os.path.abspath(outbox)
    for path in published:
        folder = Path(os.path.abspath(path))
        if os.fspath(folder.parent) != base or folder.is_symlink() or not folder.is_dir():
            logger.warning("Contact sheet: %s is not a job folder of the outbox, left out", path)
            continue
        sidecar_path = folder / f"{folder.name}.json"
        try:
            if sidecar_path.is_symlink() or sidecar_path.stat().st_size > MAX_SIDECAR:
                continue
            sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("Contact sheet: %s has no readable sidecar, left out", folder)
            continue
        if isinstance(sidecar, dict):
            entries.append(Entry(folder.name, folder, sidecar, _outputs(folder, sidecar)))
    return entries


def _outputs(folder: Path, sidecar: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for item in sidecar.get("outputs") or ():
        name = output_name(item)
        if name is None:
            continue
        path = folder / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            kind = media.probe(path).kind
        except OSError:
            continue
        found.append((name, kind))
    return found


# --------------------------------------------------------------------------------------------------
# drawing (Pillow)


def _pillow() -> Any:
    try:
        from PIL import Image  # noqa: PLC0415 - optional: the `images` extra
    except ImportError:
        return None
    return Image


def _font() -> Any:
    from PIL import ImageFont  # noqa: PLC0415

    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow before 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _fit(text: str, font: Any, width: int) -> str:
    """``text`` cut with an ellipsis to ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def draw(entries: list[Entry], plan_: Plan, file: str, folder: Path, image_module: Any) -> dict[str, Any]:
    """Draw the sheet into ``folder`` (posters of animations in ``folder/posters/``); return its geometry:
    size, every cell's box and every label's text and box."""
    from PIL import ImageDraw  # noqa: PLC0415

    font = _font()
    line = FONT_SIZE + 4
    title_h = line + 2 * PAD
    if plan_.layout == "matrix":
        widest = max(font.getlength(text) for text in plan_.row_labels)
        left = min(int(widest) + 2 * PAD, 2 * CELL)
        top = title_h + line + PAD
        caption = 0
    else:
        left, top = PAD, title_h
        caption = min(MAX_LABEL_LINES, max(len(e.labels) for e in entries)) * line + PAD // 2
    step_x, step_y = CELL + PAD, CELL + caption + PAD
    width = left + plan_.columns * step_x
    height = top + plan_.rows * step_y
    sheet = image_module.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    labels: list[dict[str, Any]] = []

    def text(x: int, y: int, value: str, room: int, role: str, index: int | None = None) -> None:
        shown = _fit(value, font, room)
        pen.text((x, y), shown, fill=(0, 0, 0), font=font)
        box = [x, y, x + int(math.ceil(font.getlength(shown))), y + line]
        labels.append({"role": role, "index": index, "text": value, "shown": shown, "box": box})

    text(PAD, PAD, file, width - 2 * PAD, "title")
    if plan_.layout == "matrix":
        for c, value in enumerate(plan_.column_labels):
            text(left + c * step_x, title_h, value, CELL, "column", c)
        for r, value in enumerate(plan_.row_labels):
            text(PAD, top + r * step_y + CELL // 2 - line // 2, value, left - 2 * PAD, "row", r)
    cells = []
    for index, entry in enumerate(entries):
        r, c = plan_.cells[index]
        x, y = left + c * step_x, top + r * step_y
        pen.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=(235, 235, 235))
        _paste(sheet, pen, entry, x, y, font, folder, image_module)
        if plan_.layout == "grid":
            for n, value in enumerate(entry.labels[:MAX_LABEL_LINES]):
                text(x, y + CELL + PAD // 2 + n * line, value, CELL, "cell", index)
        cells.append({"job": entry.name, "row": r, "column": c, "box": [x, y, x + CELL, y + CELL]})
    sheet.save(folder / SHEET_NAME, "PNG")
    return {"size": [width, height], "cell": CELL, "layout": plan_.layout, "rows": plan_.rows,
            "columns": plan_.columns, "row_axis": plan_.row_axis, "column_axes": plan_.column_axes,
            "cells": cells, "labels": labels}


def _paste(sheet: Any, pen: Any, entry: Entry, x: int, y: int, font: Any, folder: Path, image_module: Any) -> None:
    """The entry's picture fitted into the cell at (x, y); a tile with the file's name for a video, an
    unreadable image or none."""
    picture = entry.picture
    if picture is not None and picture[1] in VISUAL:
        try:
            with image_module.open(entry.folder / picture[0]) as opened:
                opened.seek(0)
                frame = opened.convert("RGB")
            if picture[1] == "animation":
                (folder / "posters").mkdir(exist_ok=True)
                entry.poster = f"{entry.name}.png"
                frame.save(folder / "posters" / entry.poster, "PNG")
            scale = min(CELL / frame.width, CELL / frame.height)
            size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
            frame = frame.resize(size, image_module.Resampling.NEAREST if scale > 1 else image_module.Resampling.LANCZOS)
            sheet.paste(frame, (x + (CELL - frame.width) // 2, y + (CELL - frame.height) // 2))
            return
        except (OSError, ValueError, image_module.DecompressionBombError) as err:
            logger.warning("Contact sheet: %s/%s is not a readable image (%s)", entry.name, picture[0], err)
    words = "▶ " + picture[0] if picture and picture[1] == "video" else (picture[0] if picture else "no image")
    pen.text((x + PAD, y + CELL // 2 - FONT_SIZE // 2), _fit(words, font, CELL - 2 * PAD), fill=(60, 60, 60), font=font)
