"""The layout of a contact sheet: which job goes in which cell, and the labels (no drawing, no I/O).

A matrix of two or more axes (the same axes in every job's sidecar ``matrix``) puts the first axis in
rows and the other axes, combined, in columns; ``repeat`` copies of one combination add a column each
(``#2``). Anything else (one axis, ``repeat``, CSV, JSONL, ``jobs:``) is a wrapped grid of at most
:data:`MAX_COLUMNS` columns whose cells are captioned with the ``matrix``, ``params`` and ``set`` values
that differ between the jobs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_COLUMNS = 8  # of a wrapped grid
VISUAL = ("image", "animation")
MAX_SIDECAR = 16 * 1024 * 1024  # a larger sidecar is not read


@dataclass
class Entry:
    """One published job of the batch: its folder, sidecar and the outputs worth showing."""

    name: str
    folder: Path
    sidecar: dict[str, Any]
    outputs: list[tuple[str, str]]  # (file name, media kind)
    labels: list[str] = field(default_factory=list)  # the cell's caption (a wrapped grid)
    poster: str | None = None  # file in posters/ (the first frame of an animation)

    @property
    def matrix(self) -> dict[str, Any]:
        found = self.sidecar.get("matrix")
        return found if isinstance(found, dict) else {}

    @property
    def picture(self) -> tuple[str, str] | None:
        """The output shown in the sheet: the first image or animation, else the first video."""
        for kinds in (VISUAL, ("video",)):
            for name, kind in self.outputs:
                if kind in kinds:
                    return name, kind
        return None


def number(sidecar: dict[str, Any], key: str) -> int:
    """A sidecar's count (``job_index``, ``jobs_in_file``); 0 when it is missing or not an integer."""
    value = sidecar.get(key)
    return value if isinstance(value, int) else 0


def sheet_entries(entries: list[Entry]) -> list[Entry]:
    """The entries a sheet shows: in their file's order (``job_index``); none when the file gave one job."""
    if not entries or max(number(e.sidecar, "jobs_in_file") for e in entries) <= 1:
        return []
    return sorted(entries, key=lambda e: number(e.sidecar, "job_index"))


def output_name(item: Any) -> str | None:
    """The file of one of a sidecar's ``outputs`` when it is a plain name in the job's folder, else None."""
    name = item.get("file") if isinstance(item, dict) else None
    if not isinstance(name, str) or name in ("", ".", "..") or os.path.basename(name) != name:
        return None
    return name


@dataclass
class Plan:
    """Where each entry goes: ``cells`` maps an entry's index to (row, column); labels per row/column."""

    layout: str  # "matrix" or "grid"
    rows: int
    columns: int
    cells: dict[int, tuple[int, int]]
    row_labels: list[str] = field(default_factory=list)
    column_labels: list[str] = field(default_factory=list)
    row_axis: str | None = None
    column_axes: list[str] = field(default_factory=list)


def label(value: Any) -> str:
    """A value as a label: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def plan(entries: list[Entry]) -> Plan:
    """The grid: rows x columns from a matrix of two or more axes, else a wrapped grid."""
    axes = list(entries[0].matrix)
    if len(axes) >= 2 and all(list(e.matrix) == axes for e in entries):
        return _matrix_plan(entries, axes)
    return _wrapped_plan(entries)


def _matrix_plan(entries: list[Entry], axes: list[str]) -> Plan:
    rows: dict[str, int] = {}
    columns: dict[tuple[str, ...], int] = {}
    row_labels: list[str] = []
    column_labels: list[str] = []
    copies: dict[tuple[str, ...], int] = {}
    cells = {}
    for index, entry in enumerate(entries):
        values = [entry.matrix[axis] for axis in axes]
        coords = tuple(_key(v) for v in values)
        copy = copies.get(coords, 0) + 1
        copies[coords] = copy
        row = rows.setdefault(coords[0], len(rows))
        if row == len(row_labels):
            row_labels.append(f"{axes[0]}={label(values[0])}")
        column_key = (*coords[1:], str(copy))
        column = columns.setdefault(column_key, len(columns))
        if column == len(column_labels):
            text = ", ".join(f"{axis}={label(v)}" for axis, v in zip(axes[1:], values[1:], strict=True))
            column_labels.append(text + (f" #{copy}" if copy > 1 else ""))
        cells[index] = (row, column)
    return Plan("matrix", len(rows), len(columns), cells, row_labels, column_labels, axes[0], axes[1:])


def _section(entry: Entry, section: str) -> dict[str, Any]:
    values = entry.sidecar.get(section)
    return values if isinstance(values, dict) else {}


def _varying(entries: list[Entry]) -> list[tuple[str, str]]:
    """(section, key) of the matrix, params and ``set`` values that differ between the entries (a key
    in several sections is shown once)."""
    found: list[tuple[str, str]] = []
    names: set[str] = set()
    for section in ("matrix", "params", "set"):
        for key in dict.fromkeys(k for e in entries for k in _section(e, section)):
            if key not in names and len({_key(_section(e, section).get(key)) for e in entries}) > 1:
                found.append((section, key))
                names.add(key)
    return found


def _wrapped_plan(entries: list[Entry]) -> Plan:
    varying = _varying(entries)
    for entry in entries:
        lines = []
        for section, key in varying:
            values = _section(entry, section)
            if key in values:
                lines.append(f"{key}={label(values[key])}")
        entry.labels = lines or [entry.name]
    columns = min(MAX_COLUMNS, max(1, math.ceil(math.sqrt(len(entries)))))
    rows = math.ceil(len(entries) / columns)
    cells = {index: divmod(index, columns) for index in range(len(entries))}
    return Plan("grid", rows, columns, cells)
