"""Stage 3 of 10: parse. Turn one claimed scenario file into the jobs it describes.

:func:`parse_scenario` takes the bytes of a scenario file (already claimed into hotfolder's private
folder, under its original name) and returns one :class:`~hotfolder.spec.JobSpec` per job, with
``index`` 1..N and every ``random`` seed already drawn. Anything wrong with the file is a
:class:`~hotfolder.errors.ScenarioError` whose ``where`` names the ``file`` and, when known, the
``line``, ``column`` and ``key``; no yaml, json, toml or csv exception escapes.

Formats (by suffix, case-insensitive; see :data:`FORMATS`)
    ``.json``, ``.yaml``/``.yml``, ``.toml``: one mapping with the keys below. ``.jsonl``: one job
    mapping per non-empty line (no ``jobs:``). ``.csv``: a header row, then one job per row; columns
    are params, except ``template``, ``name`` and columns containing a dot, which are ``set:``
    addresses, and columns whose name starts with ``#`` (``#notes``), which are params the template may
    leave unused (``allow_unused``); empty cells are left out (so template defaults apply) and cells are coerced: ``-?\\d+``
    to int, a float literal to float, ``true``/``false`` (any case) to bool, otherwise a string (cells
    are stripped). A file whose first line has no comma but has semicolons or tabs uses that
    delimiter. ``.txt``: one prompt per non-empty line (``#`` starts a comment line), as
    ``params.prompt``. Text is UTF-8, with or without a BOM. Duplicate keys in JSON and YAML mappings
    are errors, not "last one wins".

Keys of a job
    ``template`` (str), ``name`` (str), ``params`` (mapping), ``set`` (mapping of node address ->
    value), ``inputs`` (mapping of node address -> relative file path), ``repeat`` (int, 1..10000),
    ``matrix`` (mapping of key -> non-empty list), ``postprocess`` (any value, kept for plugins in
    ``JobSpec.options["postprocess"]``), ``allow_unused`` (a param name or a list of them: params the
    template may leave unused, in ``JobSpec.options``; a ``jobs:`` entry adds to the top level's) and,
    at the top level only, ``jobs`` (a list of job mappings).
    Unknown keys are errors (a typo such as ``parmas`` is never ignored), except keys that plugins
    declared (``hooks.scenario_keys``): their values (plain JSON data, checked by the plugin's ``check``
    if it gave one) go to ``JobSpec.options[key]`` and are merged like ``postprocess``.

Plugins
    With ``hooks`` (a :class:`ScenarioHooks`, in practice :class:`hotfolder.plugins.Hooks`), the raw
    jobs come from ``hooks.parse_scenario_file(path=..., text=...)`` (the first plugin that knows the
    format; the built-in formats are the last one) instead of :data:`FORMATS` directly.

Expansion
    Each ``jobs:`` entry (or the file itself) is merged with the top level: ``params``, ``set`` and
    ``inputs`` are merged (the entry wins on equal keys), other keys of the entry replace the top
    level's. Then the ``matrix`` product (keys in the given order; a key containing a dot is a ``set:``
    address, otherwise a param; matrix values win over ``params``/``set``), then ``repeat`` copies of
    each combination, next to each other. A file may expand to at most ``max_jobs_per_file`` jobs.
    YAML/TOML dates and times become ISO 8601 strings; NaN, infinities and other values JSON cannot
    carry are errors.

Random seeds
    A param whose name ends with ``seed`` (``seed``, ``noise_seed``; case-insensitive), and a ``set:``
    value whose address's input part ends with ``seed``, whose value is the string ``"random"`` (any
    case) is replaced by ``rng.randrange(0, 2**32)``, drawn separately for every expanded job.

Job names (the outbox folder name)
    The default is the file's stem; a job's own ``name:`` wins. When a file expands to more than one
    job, every name gets the job's 1-based index as a suffix, ``-001``, ``-002``, ... (3 digits, more
    above 999 jobs), unless every job has an explicit name and those names are all distinct (compared
    after sanitising, case-insensitively). Names are sanitised by :func:`sanitize_job_name`: strip
    whitespace; replace ``/``, ``\\``, NUL, control characters, line/paragraph separators, lone
    surrogates and bidirectional controls with ``_`` (:func:`hotfolder.paths.is_unsafe_char`); collapse
    runs of dots (``..``) to one dot; drop leading dots (a name never is ``.`` or ``..`` and never
    starts with ``.``); keep at most 120 characters and 200 UTF-8 bytes
    (the suffix included); an empty result becomes ``job``. Unicode letters and emoji are kept.
"""

from __future__ import annotations

import copy
import csv
import datetime
import difflib
import io
import itertools
import json
import logging
import math
import random
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

import yaml

from hotfolder import budgets
from hotfolder.errors import ScenarioError
from hotfolder.paths import is_unsafe_char
from hotfolder.spec import JobSpec

logger = logging.getLogger(__name__)

#: Most jobs one scenario file may expand to (the default of ``max_jobs_per_file``).
MAX_JOBS = budgets.DEFAULTS.max_jobs_per_file
#: Formats read line by line: ``max_scenario_lines`` applies to them.
LINE_FORMATS = (".txt", ".csv", ".jsonl")
#: Largest ``repeat:``.
MAX_REPEAT = 10_000
#: Job names are cut to this many characters ...
MAX_NAME_CHARS = 120
#: ... and this many UTF-8 bytes, so ``<name>.json`` and temporary suffixes fit in a 255-byte file name.
MAX_NAME_BYTES = 200
#: Random seeds are drawn from ``range(0, SEED_RANGE)``.
SEED_RANGE = 2**32

#: Keys a job mapping may have (a ``jobs:`` entry, a ``.jsonl`` line).
JOB_KEYS: tuple[str, ...] = ("template", "name", "params", "set", "inputs", "repeat", "matrix", "postprocess",
                              "server", "label", "allow_unused")
#: Keys the top level of a ``.json``/``.yaml``/``.toml`` scenario may have.
FILE_KEYS: tuple[str, ...] = (*JOB_KEYS[:7], "jobs", "postprocess", "server", "label", "allow_unused")
# Keys kept in JobSpec.options for the later stages: post-processors, the server pin for routing, and
# the params the template may leave unused (render).
OPTION_KEYS: tuple[str, ...] = ("postprocess", "server", "label", "allow_unused")

RawJob = tuple[dict[str, Any], int | None]
"""A raw job mapping as a format parser returns it, with the line it starts on (or ``None``)."""

FormatParser = Callable[[Path, str], list[RawJob]]
"""``parser(path, text) -> [(mapping, line), ...]``; raises :class:`ScenarioError` on malformed text."""


class ScenarioKey(Protocol):
    """An extra scenario key declared by a plugin: ``check(value)`` raises ``ValueError`` to reject the
    value and returns ``None`` (keep it) or a replacement; ``check`` may be ``None``."""

    @property
    def check(self) -> Callable[[Any], Any] | None: ...


class ScenarioHooks(Protocol):
    """What :func:`parse_scenario` needs from the plugin system (:class:`hotfolder.plugins.Hooks`)."""

    def parse_scenario_file(self, *, path: Path, text: str) -> list[RawJob] | None: ...

    @property
    def scenario_keys(self) -> Mapping[str, ScenarioKey]: ...


# --------------------------------------------------------------------------------------------------
# public API


def parse_scenario(
    path: Path,
    data: bytes,
    *,
    default_template: str | None = None,
    rng: random.Random | None = None,
    hooks: ScenarioHooks | None = None,
    limits: budgets.Limits = budgets.DEFAULTS,
) -> list[JobSpec]:
    """Parse the scenario ``data`` (the bytes of ``path``) into jobs with index 1..N.

    ``default_template`` fills in jobs that name no template (it may be ``None``: then the job's
    ``template`` stays ``None`` and rendering reports it). ``rng`` draws ``random`` seeds
    (``random.SystemRandom()`` when ``None``). ``hooks`` lets plugins read more formats and allow more
    keys (module docstring, "Plugins"). Raise :class:`ScenarioError` for anything malformed, or over one
    of ``limits`` (file size, lines, nesting, jobs: :mod:`hotfolder.budgets`).
    """
    suffix = _suffix(path)
    if len(data) > limits.max_file_size:
        raise budgets.exceeded(ScenarioError, f"Scenario {path.name!r} is {len(data)} bytes", key="max_file_size",
                               limit=limits.max_file_size, where={"file": path.name},
                               hint="Split it into smaller files.")
    extra: Mapping[str, ScenarioKey] = {}
    if hooks is None:
        parser = FORMATS.get(suffix)
        if parser is None:
            raise _unsupported(path)
        text = _decode(path, data)
    else:
        extra = hooks.scenario_keys
        try:
            text = _decode(path, data)
        except ScenarioError as err:
            if suffix not in FORMATS and "line" in err.where:  # binary, and no built-in format: say so
                raise _unsupported(path, plugins=True) from None
            raise

        def parser(path: Path, text: str) -> list[RawJob]:
            found = hooks.parse_scenario_file(path=path, text=text)
            if found is None:
                raise _unsupported(path, plugins=True)
            return found

    if suffix in LINE_FORMATS:
        _check_lines(path, text, limits)
    try:
        raw_jobs = parser(path, text)
        if len(raw_jobs) > limits.max_jobs_per_file:  # one job per row or line: before checking each
            raise _too_many_jobs(path, limits.max_jobs_per_file, None)
        for raw, line in raw_jobs:
            _check_shape(path, raw, line, limits, budget=len(data))
        drafts: list[_Draft] = []
        for raw, line in raw_jobs:
            _refuse_surrogates(path, raw, "", line)
            drafts.extend(_expand(path, raw, line, already=len(drafts), extra=extra, max_jobs=limits.max_jobs_per_file))
    except RecursionError as err:
        raise budgets.exceeded(
            ScenarioError, f"Scenario {path.name!r} is nested too deeply to read", key="max_scenario_depth",
            limit=limits.max_scenario_depth, where={"file": path.name},
            hint="A scenario holds a few levels of mappings and lists; check the file is what you meant.",
        ) from err
    if not drafts:
        raise _error(
            path,
            f"Scenario {path.name!r} contains no jobs",
            hint=_NO_JOBS_HINT.get(suffix, "Add at least one job."),
        )
    return _finish(path, drafts, default_template=default_template, rng=rng or random.SystemRandom())


def _check_lines(path: Path, text: str, limits: budgets.Limits) -> None:
    """Refuse a line-based scenario with more lines than ``max_scenario_lines``, before reading them."""
    lines = text.count("\n") + (not text.endswith("\n"))
    if lines > limits.max_scenario_lines:
        raise budgets.exceeded(ScenarioError, f"Scenario {path.name!r} has {lines} lines", key="max_scenario_lines",
                               limit=limits.max_scenario_lines, where={"file": path.name},
                               hint="Split it into several files.")


def _check_shape(path: Path, raw: Any, line: int | None, limits: budgets.Limits, *, budget: int) -> None:
    """Refuse a parsed document nested deeper than ``max_scenario_depth``, or holding more values than the
    file has bytes (YAML aliases that expand a few lines into millions of values)."""
    shape = budgets.shape(raw, max_depth=limits.max_scenario_depth, max_values=max(budget, 1000))
    where = {"file": path.name, "line": line} if line is not None else {"file": path.name}
    if shape == "deep":
        raise budgets.exceeded(ScenarioError, f"Scenario {path.name!r} nests mappings and lists more than "
                               f"{limits.max_scenario_depth} levels deep", key="max_scenario_depth",
                               limit=limits.max_scenario_depth, where=where,
                               hint="A scenario holds a few levels of mappings and lists; check the file is what you meant.")
    if shape == "large":
        raise budgets.exceeded(ScenarioError, f"Scenario {path.name!r} expands to more values than it has bytes "
                               "(YAML aliases repeating others)", key="max_file_size",
                               limit=limits.max_file_size, where=where,
                               hint="Write the values out instead of nesting aliases (*name) of aliases.")


def sanitize_job_name(name: str, *, reserve: int = 0) -> str:
    """Make ``name`` safe as one folder name (rules in the module docstring).

    ``reserve`` characters/bytes are kept free for a suffix the caller appends (``-001``).
    """
    chars = []
    for char in name:
        if char in "/\\" or is_unsafe_char(char):
            chars.append("_")
        else:
            chars.append(char)
    text = re.sub(r"\.{2,}", ".", "".join(chars)).strip()
    text = _strip_leading(text)
    text = text[: max(1, MAX_NAME_CHARS - reserve)]
    while len(text.encode("utf-8")) > max(1, MAX_NAME_BYTES - reserve):
        text = text[:-1]
    text = _strip_leading(text.rstrip())
    return text or "job"


# --------------------------------------------------------------------------------------------------
# decoding and format parsers


_NO_JOBS_HINT = {
    ".csv": "Add a header row and at least one row below it.",
    ".jsonl": "Write one JSON object per line.",
    ".txt": "Write one prompt per line; lines starting with '#' are comments.",
}


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _unsupported(path: Path, *, plugins: bool = False) -> ScenarioError:
    hint = f"Supported scenario file types: {', '.join(sorted(FORMATS))}."
    if plugins:
        hint = (
            f"Built-in scenario file types: {', '.join(sorted(FORMATS))}; no plugin reads "
            f"{path.suffix or 'files without a suffix'!r} either ('hotfolder plugins --hook "
            "parse_scenario_file' lists the plugins that add formats)."
        )
    return _error(path, f"Scenario {path.name!r} has an unsupported file type {path.suffix or '(none)'!r}", hint=hint)


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        hint = "Save the file as UTF-8 text."
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            hint = "The file is UTF-16 (Windows 'Unicode'); save it as UTF-8 instead."
        raise _error(
            path,
            f"Scenario {path.name!r} is not UTF-8 text (invalid byte at offset {err.start}, line {line})",
            hint=hint,
            line=line,
        ) from err
    if not text.strip():
        raise _error(
            path,
            f"Scenario {path.name!r} is empty",
            hint="Write the scenario into the file before moving it into the inbox.",
        )
    return text


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
    return _error(
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
        raise _error(
            path,
            f"Scenario {path.name!r} has the key {err.key!r} twice in one object",
            hint="Keep one of them; JSON does not merge repeated keys.",
            key=err.key,
        ) from err
    return [(_top_mapping(path, data), None)]


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: 9x faster on a large file
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
        raise _error(
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
        raise _error(
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
        raise _error(
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
            raise _error(
                path,
                f"Scenario {path.name!r} line {number} has the key {err.key!r} twice",
                hint="Keep one of them; JSON does not merge repeated keys.",
                line=number,
                key=err.key,
            ) from err
        if not isinstance(data, dict):
            raise _error(
                path,
                f"Scenario {path.name!r} line {number} is {_kind(data)}, not a JSON object",
                hint='Each line of a .jsonl file is one job object, e.g. {"params": {"prompt": "a fox"}}.',
                line=number,
            )
        if "jobs" in data:
            raise _error(
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
                raise _error(
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
        raise _error(
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
            raise _error(
                path,
                f"Scenario {path.name!r} header column {position} has no name (line {line})",
                hint="Name every column in the header row, or delete the empty column.",
                line=line,
                column=position,
            )
    plain = [name[1:].strip() if name.startswith("#") else name for name in header]  # '#notes' is 'notes'
    duplicates = sorted({name for name in plain if plain.count(name) > 1})
    if duplicates:
        raise _error(
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


#: Scenario formats by lower-case suffix. Plugins may add entries: ``FORMATS[".xml"] = parse_xml``.
FORMATS: dict[str, FormatParser] = {
    ".json": _parse_json,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".toml": _parse_toml,
    ".csv": _parse_csv,
    ".jsonl": _parse_jsonl,
    ".txt": _parse_txt,
}


# --------------------------------------------------------------------------------------------------
# validation and expansion


@dataclass
class _Draft:
    template: str | None
    name: str | None
    params: dict[str, Any]
    set: dict[str, Any]
    inputs: dict[str, str]
    line: int | None
    options: dict[str, Any] = field(default_factory=dict)


def _expand(
    path: Path, raw: dict[str, Any], line: int | None, *, already: int, extra: Mapping[str, ScenarioKey] | None = None,
    max_jobs: int = MAX_JOBS,
) -> list[_Draft]:
    extra = extra or {}
    if not isinstance(raw, dict):
        raise _error(path, f"Scenario {path.name!r} holds {_kind(raw)} where a job mapping belongs", line=line)
    _check_keys(path, raw, (*FILE_KEYS, *extra), prefix="", line=line)
    top = _job_fields(path, raw, prefix="", line=line, extra=extra)
    entries = raw.get("jobs")
    if entries is None:
        bases = [top]
    else:
        if not isinstance(entries, list):
            raise _type_error(path, "jobs", "a list of job mappings", entries, line)
        if not entries:
            raise _error(
                path,
                f"Scenario {path.name!r} has an empty 'jobs' list",
                hint="Add job entries under 'jobs:', or remove the key for a single job.",
                line=line,
                key="jobs",
            )
        if already + len(entries) > max_jobs:  # before reading each entry
            raise _too_many_jobs(path, max_jobs, line)
        bases = []
        for number, entry in enumerate(entries, start=1):
            prefix = f"jobs[{number}]"
            if not isinstance(entry, dict):
                raise _type_error(path, prefix, "a mapping", entry, line)
            _check_keys(path, entry, (*JOB_KEYS, *extra), prefix=prefix + ".", line=line)
            bases.append(_merge(top, _job_fields(path, entry, prefix=prefix + ".", line=line, extra=extra)))

    total = already
    for base in bases:
        count = base.get("repeat", 1)
        for values in base.get("matrix", {}).values():
            count *= len(values)
        total += count
        if total > max_jobs:
            raise _too_many_jobs(path, max_jobs, line)

    drafts: list[_Draft] = []
    for base in bases:
        matrix: dict[str, list[Any]] = base.get("matrix", {})
        for combination in itertools.product(*matrix.values()):
            params = dict(base.get("params", {}))
            sets = dict(base.get("set", {}))
            for key, value in zip(matrix, combination, strict=True):
                (sets if "." in key else params)[key] = value
            for _copy in range(base.get("repeat", 1)):
                options = {key: copy.deepcopy(base[key]) for key in (*OPTION_KEYS, *extra) if key in base}
                drafts.append(
                    _Draft(
                        template=base.get("template"),
                        name=base.get("name"),
                        params=copy.deepcopy(params),
                        set=copy.deepcopy(sets),
                        inputs=dict(base.get("inputs", {})),
                        line=line,
                        options=options,
                    )
                )
    return drafts


def _too_many_jobs(path: Path, max_jobs: int, line: int | None) -> ScenarioError:
    return budgets.exceeded(  # type: ignore[return-value]
        ScenarioError, f"Scenario {path.name!r} expands to more than {max_jobs} jobs", key="max_jobs_per_file",
        limit=max_jobs, where={"file": path.name, **({"line": line} if line is not None else {})},
        hint="Split the batch into several files, or reduce 'repeat' and the 'matrix' lists.",
    )


def _merge(top: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = {**top, **entry}
    for key in ("params", "set", "inputs"):
        if key in top or key in entry:
            merged[key] = {**top.get(key, {}), **entry.get(key, {})}
    if "allow_unused" in top or "allow_unused" in entry:  # names add up: an entry never re-enables an error
        merged["allow_unused"] = list(dict.fromkeys([*top.get("allow_unused", []), *entry.get("allow_unused", [])]))
    return merged


def _check_keys(path: Path, mapping: dict[Any, Any], valid: tuple[str, ...], *, prefix: str, line: int | None) -> None:
    unknown = [key for key in mapping if key not in valid]
    if not unknown:
        return
    names = ", ".join(repr(key) for key in unknown)
    suggestions = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        if close:
            suggestions.append(f"{close[0]!r} instead of {key!r}")
    hint = f"Valid keys: {', '.join(valid)}."
    if suggestions:
        hint = f"Did you mean {', '.join(suggestions)}? " + hint
    else:
        hint += " Template variables go under 'params:', node inputs under 'set:'."
    where = f" in {prefix.rstrip('.')!r}" if prefix else ""
    plural = "keys" if len(unknown) > 1 else "key"
    raise _error(
        path,
        f"Scenario {path.name!r} has unknown {plural} {names}{where}",
        hint=hint,
        line=line,
        key=prefix + str(unknown[0]),
    )


def _job_fields(
    path: Path, raw: dict[str, Any], *, prefix: str, line: int | None, extra: Mapping[str, ScenarioKey] | None = None
) -> dict[str, Any]:
    """Validate the job keys of ``raw`` (not ``jobs``) and return them with plain values."""
    out: dict[str, Any] = {}
    for key in ("template", "name"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, str):
                raise _type_error(path, prefix + key, "a string", value, line)
            if key == "template" and not value.strip():
                raise _error(
                    path,
                    f"Scenario {path.name!r} has an empty {prefix + key!r}",
                    hint="Name a template from the templates folder, or remove the key to use the default.",
                    line=line,
                    key=prefix + key,
                )
            out[key] = value.strip() if key == "template" else value
    for key in ("params", "set", "inputs"):
        if key in raw:
            out[key] = _string_mapping(path, raw[key], prefix + key, line)
    for address, value in out.get("inputs", {}).items():
        _check_input_path(path, value, f"{prefix}inputs.{address}", line)
    if "repeat" in raw:
        value = raw["repeat"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _type_error(path, prefix + "repeat", "a whole number", value, line)
        if not 1 <= value <= MAX_REPEAT:
            raise _error(
                path,
                f"Scenario {path.name!r} has {prefix + 'repeat'!r} = {value}, outside 1..{MAX_REPEAT}",
                hint=f"Use a whole number from 1 to {MAX_REPEAT}.",
                line=line,
                key=prefix + "repeat",
            )
        out["repeat"] = value
    if "matrix" in raw:
        matrix = _string_mapping(path, raw["matrix"], prefix + "matrix", line)
        for key, values in matrix.items():
            if not isinstance(values, list) or not values:
                raise _type_error(path, f"{prefix}matrix.{key}", "a non-empty list of values", values, line)
        out["matrix"] = matrix
    if "postprocess" in raw:
        out["postprocess"] = _plain(path, raw["postprocess"], prefix + "postprocess", line)
    for key in ("server", "label"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key].strip():
                raise _type_error(path, prefix + key, "a server name, URL or label (text)", raw[key], line)
            out[key] = raw[key].strip()
    if "allow_unused" in raw:
        names = [raw["allow_unused"]] if isinstance(raw["allow_unused"], str) else raw["allow_unused"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise _type_error(path, prefix + "allow_unused", "a list of param names", raw["allow_unused"], line)
        for name in names:
            _check_text(path, name, prefix + "allow_unused", line)
        out["allow_unused"] = list(dict.fromkeys(names))
    for key, declared in (extra or {}).items():
        if key in raw:
            out[key] = _checked_extra(path, key, declared, _plain(path, raw[key], prefix + key, line), prefix, line)
    return out


def _checked_extra(path: Path, key: str, declared: ScenarioKey, value: Any, prefix: str, line: int | None) -> Any:
    """Run a plugin's ``check`` on the value of its scenario key; a ``ValueError`` is the user's error."""
    if declared.check is None:
        return value
    try:
        replacement = declared.check(copy.deepcopy(value))
    except (ValueError, TypeError) as err:
        raise _error(
            path,
            f"Scenario {path.name!r} has an invalid {prefix + key!r}: {err}",
            hint=f"{key!r} is read by a plugin; 'hotfolder plugins' shows which, and docs/plugins.md its format.",
            line=line,
            key=prefix + key,
        ) from err
    return value if replacement is None else _plain(path, replacement, prefix + key, line)


def _string_mapping(path: Path, value: Any, key: str, line: int | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error(path, key, "a mapping", value, line)
    out: dict[str, Any] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name.strip():
            raise _error(
                path,
                f"Scenario {path.name!r} has the key {name!r} in {key!r}; keys must be non-empty strings",
                hint="Quote the key in YAML if it looks like a number, a boolean or null.",
                line=line,
                key=key,
            )
        out[name] = _plain(path, item, f"{key}.{name}", line)
    return out


def _plain(path: Path, value: Any, key: str, line: int | None) -> Any:
    """Return ``value`` as plain JSON data (dates become ISO strings); refuse what JSON can't carry."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        _check_text(path, value, key, line)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(
                path,
                f"Scenario {path.name!r} has {value!r} in {key!r}; only finite numbers are allowed",
                hint="ComfyUI cannot take NaN or infinite numbers; write a number.",
                line=line,
                key=key,
            )
        return value
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_plain(path, item, f"{key}[{n}]", line) for n, item in enumerate(value)]
    if isinstance(value, dict):
        return _string_mapping(path, value, key, line)
    raise _error(
        path,
        f"Scenario {path.name!r} has a value of type {type(value).__name__!r} in {key!r}",
        hint="Use strings, numbers, booleans, null, lists and mappings only.",
        line=line,
        key=key,
    )


def _refuse_surrogates(path: Path, value: Any, key: str, line: int | None) -> None:
    """Refuse a lone surrogate (a JSON or YAML ``\\ud800`` escape) in any key or string of a raw job,
    before anything else reads it: no file name, path, log line or record can hold one."""
    if isinstance(value, str):
        _check_text(path, value, key or "(top level)", line)
    elif isinstance(value, dict):
        for name, item in value.items():
            sub = f"{key}.{name}" if key else str(name)
            if isinstance(name, str):
                _check_text(path, name, sub, line)
            _refuse_surrogates(path, item, sub, line)
    elif isinstance(value, list):
        for number, item in enumerate(value):
            _refuse_surrogates(path, item, f"{key}[{number}]", line)


def _check_text(path: Path, value: str, key: str, line: int | None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        shown = key.encode("utf-8", "backslashreplace").decode("utf-8")  # the key may hold the surrogate
        raise _error(
            path,
            f"Scenario {path.name!r} has an invalid character (a lone surrogate escape) in {shown!r}",
            hint="Remove the \\ud800-\\udfff escape, or write the whole surrogate pair.",
            line=line,
            key=shown,
        ) from err


def _check_input_path(path: Path, value: Any, key: str, line: int | None) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _type_error(path, key, "a relative file path (a string)", value, line)
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or value.startswith(("/", "\\")):
        problem = "is an absolute path"
    elif ".." in posix.parts or ".." in windows.parts:
        problem = "goes up with '..'"
    elif "\0" in value:
        problem = "contains a NUL character"
    else:
        return
    raise _error(
        path,
        f"Scenario {path.name!r} has {key!r} = {value!r}, which {problem}",
        hint="Input files are given relative to the scenario file and must stay inside its folder.",
        line=line,
        key=key,
    )


def _type_error(path: Path, key: str, expected: str, value: Any, line: int | None) -> ScenarioError:
    return _error(
        path,
        f"Scenario {path.name!r} has {key!r} as {_kind(value)}; expected {expected}",
        hint=f"Write {key!r} as {expected}.",
        line=line,
        key=key,
    )


def _top_mapping(path: Path, data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    raise _error(
        path,
        f"Scenario {path.name!r} holds {_kind(data)} at the top level, not a mapping of keys",
        hint=(
            "Start the file with keys such as 'template', 'params', 'jobs'; for a list of jobs put it "
            "under 'jobs:' or use a .jsonl file."
        ),
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------------------------------
# names, seeds, JobSpecs


def _strip_leading(text: str) -> str:
    while text and (text[0] == "." or text[0].isspace()):
        text = text[1:]
    return text


def _is_random(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "random"


def _is_seed_name(name: str) -> bool:
    return name.lower().endswith("seed")


def _finish(path: Path, drafts: list[_Draft], *, default_template: str | None, rng: random.Random) -> list[JobSpec]:
    count = len(drafts)
    explicit = [draft.name for draft in drafts]
    keep_names = count == 1 or (
        all(name is not None for name in explicit)
        and len({sanitize_job_name(name).casefold() for name in explicit if name is not None}) == count
    )
    width = max(3, len(str(count)))
    specs: list[JobSpec] = []
    for index, draft in enumerate(drafts, start=1):
        suffix = "" if keep_names else f"-{index:0{width}d}"
        base = draft.name if draft.name is not None else path.stem
        name = sanitize_job_name(base, reserve=len(suffix)) + suffix
        params = {
            key: rng.randrange(0, SEED_RANGE) if _is_seed_name(key) and _is_random(value) else value
            for key, value in draft.params.items()
        }
        sets = {
            address: rng.randrange(0, SEED_RANGE)
            if _is_seed_name(address.rpartition(".")[2]) and _is_random(value)
            else value
            for address, value in draft.set.items()
        }
        specs.append(
            JobSpec(
                index=index,
                name=name,
                source=path,
                template=draft.template if draft.template is not None else default_template,
                params=params,
                set=sets,
                inputs=draft.inputs,
                line=draft.line,
                options=draft.options,
            )
        )
    logger.debug("Parsed %r into %d job(s)", path.name, count)
    return specs


def _error(path: Path, message: str, *, hint: str | None = None, **where: Any) -> ScenarioError:
    fields: dict[str, Any] = {"file": path.name}
    fields.update({key: value for key, value in where.items() if value is not None})
    return ScenarioError(message, hint=hint, where=fields)
