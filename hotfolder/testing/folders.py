"""Paths as ComfyUI's ``folder_paths`` makes them: annotated file names, save paths and their counters."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["annotated_filepath", "file_fingerprint", "resolve_annotated_file", "save_image_path"]


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """Split ``"x.png [output]"`` into ``("x.png", "output")``; plain names give ``(name, None)``."""
    for kind in ("output", "input", "temp"):
        suffix = f"[{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix) - 1], kind
    return name, None


def resolve_annotated_file(name: Any, dirs: dict[str, Path], default: str = "input") -> Path | None:
    """Resolve a LoadImage value (``"x.png"``, ``"sub/x.png"``, ``"x.png [output]"``) to a path.

    Returns ``None`` when the name is not a string or points outside its base directory (the test
    server is stricter than ComfyUI there: it never reads files outside its own folders).
    """
    if not isinstance(name, str) or not name:
        return None
    plain, kind = annotated_filepath(name)
    base = dirs[kind or default]
    path = os.path.abspath(os.path.join(base, plain))
    if os.path.commonpath((str(base), path)) != str(base):
        return None
    return Path(path)


class _SavePath:
    """Where SaveImage writes: folder, base name, next counter and the subfolder reported to clients."""

    def __init__(self, folder: str, filename: str, counter: int, subfolder: str) -> None:
        self.folder = folder
        self.filename = filename
        self.counter = counter
        self.subfolder = subfolder


def _expand_prefix_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": str(now.tm_mon).zfill(2),
        "%day%": str(now.tm_mday).zfill(2),
        "%hour%": str(now.tm_hour).zfill(2),
        "%minute%": str(now.tm_min).zfill(2),
        "%second%": str(now.tm_sec).zfill(2),
    }
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix: str, output_dir: Path, width: int, height: int) -> _SavePath:
    """ComfyUI's ``get_save_image_path``: resolve subfolder and the next ``_NNNNN_`` counter.

    The counter continues after the highest existing ``{name}_{counter}_`` file in the folder, so it
    survives restarts. A prefix that leaves the output folder raises ``Exception`` with ComfyUI's text.
    """
    if "%" in prefix:
        prefix = _expand_prefix_vars(prefix, width, height)
    base = str(output_dir)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(base, subfolder)
    common = os.path.commonpath((base, os.path.abspath(folder)))
    if common != base:
        raise Exception(  # ComfyUI raises a bare Exception; clients see its type name
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {base}"
            f"\n         commonpath: {common}"
        )
    counter = 1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        names = []
    prefix_len = len(filename)
    wanted = os.path.normcase(filename)
    for name in names:
        head = name[: prefix_len + 1]
        if os.path.normcase(head[:-1]) != wanted or head[-1:] != "_":
            continue
        try:
            digits = int(name[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        counter = max(counter, digits + 1)
    return _SavePath(folder, filename, counter, subfolder)



def file_fingerprint(path: Path | None) -> str | None:
    """LoadImage's ``IS_CHANGED``: the SHA-256 of the file, or ``None`` if it cannot be read."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
