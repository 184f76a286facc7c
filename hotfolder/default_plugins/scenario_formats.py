"""The built-in scenario formats, a built-in plugin: ``.json``, ``.yaml``/``.yml``, ``.toml``, ``.csv``, ``.jsonl``, ``.txt``.

A ``trylast`` implementation of ``parse_scenario_file``, written like a third-party format plugin: a
plugin that handles one of these suffixes itself runs first and wins. It turns a file's text into raw
job mappings; their keys are checked and expanded afterwards (:mod:`hotfolder.scenario`).

Formats (by suffix, case-insensitive; see :data:`FORMATS`)
    ``.json``, ``.yaml``/``.yml``, ``.toml``: one mapping with a job's keys, plus ``jobs:``. ``.jsonl``:
    one job mapping per non-empty line (no ``jobs:``). ``.csv``: a header row, then one job per row;
    columns are params, except ``template``, ``name`` and columns containing a dot, which are ``set:``
    addresses, and columns whose name starts with ``#`` (``#notes``), which are params the template may
    leave unused (``allow_unused``); empty cells are left out (so template defaults apply) and cells
    are coerced: ``-?\\d+`` to int, a float literal to float, ``true``/``false`` (any case) to bool,
    otherwise a string (cells are stripped). A file whose first line has no comma but has semicolons or
    tabs uses that delimiter. ``.txt``: one prompt per non-empty line (``#`` starts a comment line), as
    ``params.prompt``. Duplicate keys in JSON and YAML mappings are errors, not "last one wins".
    Malformed text is a :class:`~hotfolder.errors.ScenarioError` with the ``line`` (and ``column``)
    where known; no yaml, json, toml or csv exception escapes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hotfolder.errors import ScenarioError
from hotfolder.hookspecs import hookimpl
from hotfolder.scenario import RawJob, describe, scenario_error

FormatParser = Callable[[Path, str], list[RawJob]]
"""``parser(path, text) -> [(mapping, line), ...]``; raises :class:`ScenarioError` on malformed text."""

#: Formats read line by line: hotfolder applies ``max_scenario_lines`` to them before parsing.
LINE_SUFFIXES = (".txt", ".csv", ".jsonl")
#: The hint of "contains no jobs" for a file of a line-based format.
NO_JOBS_HINTS = {
    ".csv": "Add a header row and at least one row below it.",
    ".jsonl": "Write one JSON object per line.",
    ".txt": "Write one prompt per line; lines starting with '#' are comments.",
}


@hookimpl(trylast=True)
def parse_scenario_file(path: Path, text: str) -> list[RawJob] | None:
    """The raw jobs of ``path`` if its suffix is a built-in format, else ``None``."""
    parser = FORMATS.get(path.suffix.lower())
    if parser is None:
        return None
    return parser(path, text)


def _top_mapping(path: Path, data: Any) -> dict[str, Any]:
    """``data`` if it is a mapping (a JSON or YAML document's top level), else the error saying what it is."""
    if isinstance(data, dict):
        return data
    raise scenario_error(
        path,
        f"Scenario {path.name!r} holds {describe(data)} at the top level, not a mapping of keys",
        hint=(
            "Start the file with keys such as 'template', 'params', 'jobs'; for a list of jobs put it "
            "under 'jobs:' or use a .jsonl file."
        ),
    )


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _json_error(
    path: Path, err: json.JSONDecodeError, *, line: int | None = None, column_offset: int = 0
) -> ScenarioError:
    lineno = line if line is not None else err.lineno
    column = err.colno + column_offset
    return scenario_error(
        path,
        f"Scenario {path.name!r} is not valid JSON: {err.msg} at line {lineno}, column {column}",
        hint="Check for a missing comma or quote, or a trailing comma, just before that position.",
        line=lineno,
        column=column,
    )


def _parse_json(path: Path, text: str) -> list[RawJob]:
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as err:
        raise _json_error(path, err) from err
    except _DuplicateKeyError as err:
        raise scenario_error(
            path,
            f"Scenario {path.name!r} has the key {err.key!r} twice in one object",
            hint="Keep one of them; JSON does not merge repeated keys.",
            key=err.key,
        ) from err
    return [(_top_mapping(path, data), None)]


if TYPE_CHECKING:
    from yaml import SafeLoader as _SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 9x faster on a large file


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (merge keys ``<<`` still work)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key; the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice in one mapping",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(path: Path, text: str) -> list[RawJob]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "malformed YAML"
        if err.context and err.problem:
            problem = f"{err.problem} ({err.context})"
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        where = f" at line {line}, column {column}" if mark is not None else ""
        raise scenario_error(
            path,
            f"Scenario {path.name!r} is not valid YAML: {problem}{where}",
            hint="Check the indentation, and quote strings that contain ': ', '#', or start with '{', '[', '*' or '&'.",
            line=line,
            column=column,
        ) from err
    except yaml.YAMLError as err:  # ReaderError: a character YAML does not allow
        position = getattr(err, "position", None)
        line = column = None
        problem = str(err)
        if isinstance(position, int):
            line = text.count("\n", 0, position) + 1
            column = position - (text.rfind("\n", 0, position) + 1) + 1
            character = getattr(err, "character", None)
            shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
            problem = f"the character {shown} is not allowed in YAML, at line {line}, column {column}"
        raise scenario_error(
            path,
            f"Scenario {path.name!r} is not valid YAML: {problem}",
            hint="Remove control characters and binary data from the file.",
            line=line,
            column=column,
        ) from err
    return [(_top_mapping(path, data), None)]


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


def _parse_toml(path: Path, text: str) -> list[RawJob]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        match = _TOML_POSITION.search(message)
        line = column = None
        if match:
            line, column = int(match.group(1)), int(match.group(2))
            message = _TOML_POSITION.sub("", message)
        elif "(at end of document)" in message:
            line = text.count("\n") + 1
            message = message.replace(" (at end of document)", "") + " at the end of the file"
        where = f" at line {line}, column {column}" if column is not None else ""
        raise scenario_error(
            path,
            f"Scenario {path.name!r} is not valid TOML: {message}{where}",
            hint='Strings need quotes in TOML (prompt = "a red fox"); tables are written [params].',
            line=line,
            column=column,
        ) from err
    return [(data, None)]


def _parse_jsonl(path: Path, text: str) -> list[RawJob]:
    out: list[RawJob] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line:
            continue
        try:
            data = json.loads(line, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as err:
            offset = len(raw_line) - len(raw_line.lstrip())
            raise _json_error(path, err, line=number, column_offset=offset) from err
        except _DuplicateKeyError as err:
            raise scenario_error(
                path,
                f"Scenario {path.name!r} line {number} has the key {err.key!r} twice",
                hint="Keep one of them; JSON does not merge repeated keys.",
                line=number,
                key=err.key,
            ) from err
        if not isinstance(data, dict):
            raise scenario_error(
                path,
                f"Scenario {path.name!r} line {number} is {describe(data)}, not a JSON object",
                hint='Each line of a .jsonl file is one job object, e.g. {"params": {"prompt": "a fox"}}.',
                line=number,
            )
        if "jobs" in data:
            raise scenario_error(
                path,
                f"Scenario {path.name!r} line {number} has 'jobs', which a .jsonl line cannot have",
                hint="Each line is already one job; use 'repeat' or 'matrix' for more, or one line per job.",
                line=number,
                key="jobs",
            )
        out.append((data, number))
    return out


_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+")
_CSV_STRING_COLUMNS = ("template", "name")


def _csv_value(cell: str) -> Any:
    text = cell.strip()
    try:
        if _INT.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text):
            return float(text)
    except ValueError:  # more digits than int() accepts: keep the text
        return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _csv_delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    if "," in first:
        return ","
    counts = {";": first.count(";"), "\t": first.count("\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _parse_csv(path: Path, text: str) -> list[RawJob]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text), strict=True)
    header: list[str] | None = None
    out: list[RawJob] = []
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _csv_header(path, row, start)
                continue
            if len(row) != len(header):
                raise scenario_error(
                    path,
                    f"Scenario {path.name!r} line {start} has {len(row)} cells, but the header has {len(header)}",
                    hint="Every row needs one cell per header column; quote cells that contain the delimiter.",
                    line=start,
                )
            job: dict[str, Any] = {}
            params: dict[str, Any] = {}
            sets: dict[str, Any] = {}
            for column, cell in zip(header, row, strict=True):
                if not cell.strip():
                    continue
                if column.startswith("#"):
                    params[column[1:].strip()] = _csv_value(cell)
                elif column in _CSV_STRING_COLUMNS:
                    job[column] = cell.strip()
                elif "." in column:
                    sets[column] = _csv_value(cell)
                else:
                    params[column] = _csv_value(cell)
            job["params"] = params
            if sets:
                job["set"] = sets
            notes = [column[1:].strip() for column in header if column.startswith("#")]
            if notes:
                job["allow_unused"] = notes
            out.append((job, start))
    except csv.Error as err:
        line = reader.line_num or 1
        raise scenario_error(
            path,
            f"Scenario {path.name!r} is not valid CSV: {err} at line {line}",
            hint='Quote cells that contain commas, quotes or line breaks ("a ""quoted"" word").',
            line=line,
        ) from err
    return out


def _csv_header(path: Path, row: list[str], line: int) -> list[str]:
    header = [cell.strip() for cell in row]
    for position, name in enumerate(header, start=1):
        if not name.lstrip("#").strip():
            raise scenario_error(
                path,
                f"Scenario {path.name!r} header column {position} has no name (line {line})",
                hint="Name every column in the header row, or delete the empty column.",
                line=line,
                column=position,
            )
    plain = [name[1:].strip() if name.startswith("#") else name for name in header]  # '#notes' is 'notes'
    duplicates = sorted({name for name in plain if plain.count(name) > 1})
    if duplicates:
        raise scenario_error(
            path,
            f"Scenario {path.name!r} header names {', '.join(repr(d) for d in duplicates)} more than once "
            f"(line {line})",
            hint="Give each column a different name.",
            line=line,
        )
    return header


def _parse_txt(path: Path, text: str) -> list[RawJob]:
    out: list[RawJob] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if line and not line.startswith("#"):
            out.append(({"params": {"prompt": line}}, number))
    return out


#: The built-in formats by lower-case suffix (other plugins add formats through ``parse_scenario_file``).
FORMATS: dict[str, FormatParser] = {
    ".json": _parse_json,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".toml": _parse_toml,
    ".csv": _parse_csv,
    ".jsonl": _parse_jsonl,
    ".txt": _parse_txt,
}

