"""What a scenario holds: the keys of a job, their checks, and the expansion of one raw job into drafts.

The format parsers (the ``parse_scenario_file`` hook; built in: :mod:`hotfolder.default_plugins.scenario_formats`)
give raw job mappings; :func:`expand` checks one of them and expands it. Errors are
:class:`~hotfolder.errors.ScenarioError` naming the ``file`` and, when known, the ``line`` and ``key``.

Keys of a job
    ``template`` (str), ``name`` (str), ``params`` (mapping), ``set`` (mapping of node address ->
    value), ``inputs`` (mapping of node address -> relative file path), ``repeat`` (int, 1..10000),
    ``matrix`` (mapping of key -> non-empty list), ``postprocess`` (any value, kept for plugins in
    ``JobSpec.options["postprocess"]``), ``server``/``label`` (a pin for routing, in ``JobSpec.options``),
    ``allow_unused`` (a param name or a list of them: params the template may leave unused, in
    ``JobSpec.options``; a ``jobs:`` entry adds to the top level's), ``destination`` (the name of a
    destination in hotfolder.toml, checked by the parse stage; in ``JobSpec.options``) and, at the top
    level only, ``jobs``
    (a list of job mappings). Unknown keys are errors (a typo such as ``parmas`` is never ignored),
    except keys that plugins declared (``hooks.scenario_keys``): their values (plain JSON data, checked
    by the plugin's ``check`` if it gave one) go to ``JobSpec.options[key]`` and are merged like
    ``postprocess``.

Expansion
    Each ``jobs:`` entry (or the file itself) is merged with the top level: ``params``, ``set`` and
    ``inputs`` are merged (the entry wins on equal keys), other keys of the entry replace the top
    level's. Then the ``matrix`` product (keys in the given order; a key containing a dot is a ``set:``
    address, otherwise a param; matrix values win over ``params``/``set``), then ``repeat`` copies of
    each combination, next to each other. YAML/TOML dates and times become ISO 8601 strings; NaN,
    infinities and other values JSON cannot carry are errors.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from hotfolder import budgets
from hotfolder.errors import ScenarioError

#: Largest ``repeat:``.
MAX_REPEAT = 10_000

#: Keys a job mapping may have (a ``jobs:`` entry, a ``.jsonl`` line).
JOB_KEYS: tuple[str, ...] = ("template", "name", "params", "set", "inputs", "repeat", "matrix", "postprocess",
                              "server", "label", "allow_unused", "destination")
#: Keys the top level of a ``.json``/``.yaml``/``.toml`` scenario may have.
FILE_KEYS: tuple[str, ...] = (*JOB_KEYS[:7], "jobs", "postprocess", "server", "label", "allow_unused", "destination")
# Keys kept in JobSpec.options for the later stages: post-processors, the server pin for routing, the
# params the template may leave unused (render), and the destination's name (publish).
OPTION_KEYS: tuple[str, ...] = ("postprocess", "server", "label", "allow_unused", "destination")

RawJob = tuple[dict[str, Any], int | None]
"""A raw job mapping as a format parser returns it, with the line it starts on (or ``None``)."""


class ScenarioKey(Protocol):
    """An extra scenario key declared by a plugin: ``check(value)`` raises ``ValueError`` to reject the
    value and returns ``None`` (keep it) or a replacement; ``check`` may be ``None``."""

    @property
    def check(self) -> Callable[[Any], Any] | None: ...


@dataclass
class Draft:
    """One expanded job before it is named and its ``random`` seeds are drawn (then it is a ``JobSpec``)."""

    template: str | None
    name: str | None
    params: dict[str, Any]
    set: dict[str, Any]
    inputs: dict[str, str]
    line: int | None
    options: dict[str, Any] = field(default_factory=dict)
    matrix: dict[str, Any] = field(default_factory=dict)  # this draft's matrix values, axis -> value


def expand(
    path: Path, raw: dict[str, Any], line: int | None, *, already: int, extra: Mapping[str, ScenarioKey] | None = None,
    max_jobs: int,
) -> list[Draft]:
    """Check the raw job ``raw`` (from ``line`` of ``path``) and expand it into drafts, in order.

    ``already`` drafts came from earlier raw jobs of the file; together they may be at most ``max_jobs``.
    ``extra`` are the scenario keys plugins declared. Raise :class:`ScenarioError` for anything invalid.
    """
    extra = extra or {}
    bases = _bases(path, raw, line, already=already, extra=extra, max_jobs=max_jobs)
    total = already
    for base in bases:
        count = base.get("repeat", 1)
        for values in base.get("matrix", {}).values():
            count *= len(values)
        total += count
        if total > max_jobs:
            raise too_many_jobs(path, max_jobs, line)
    return [draft for base in bases for draft in _combinations(base, line, extra)]


def _bases(
    path: Path, raw: dict[str, Any], line: int | None, *, already: int, extra: Mapping[str, ScenarioKey], max_jobs: int
) -> list[dict[str, Any]]:
    """The checked fields of ``raw``, or of each of its ``jobs:`` entries merged with its top level."""
    if not isinstance(raw, dict):
        raise scenario_error(path, f"Scenario {path.name!r} holds {describe(raw)} where a job mapping belongs", line=line)
    _check_keys(path, raw, (*FILE_KEYS, *extra), prefix="", line=line)
    top = _job_fields(path, raw, prefix="", line=line, extra=extra)
    entries = raw.get("jobs")
    if entries is None:
        return [top]
    if not isinstance(entries, list):
        raise _type_error(path, "jobs", "a list of job mappings", entries, line)
    if not entries:
        raise scenario_error(
            path,
            f"Scenario {path.name!r} has an empty 'jobs' list",
            hint="Add job entries under 'jobs:', or remove the key for a single job.",
            line=line,
            key="jobs",
        )
    if already + len(entries) > max_jobs:  # before reading each entry
        raise too_many_jobs(path, max_jobs, line)
    bases = []
    for number, entry in enumerate(entries, start=1):
        prefix = f"jobs[{number}]"
        if not isinstance(entry, dict):
            raise _type_error(path, prefix, "a mapping", entry, line)
        _check_keys(path, entry, (*JOB_KEYS, *extra), prefix=prefix + ".", line=line)
        bases.append(_merge(top, _job_fields(path, entry, prefix=prefix + ".", line=line, extra=extra)))
    return bases


def _combinations(base: dict[str, Any], line: int | None, extra: Mapping[str, ScenarioKey]) -> list[Draft]:
    """The drafts of one checked base: each ``matrix`` combination, ``repeat`` times."""
    drafts: list[Draft] = []
    matrix: dict[str, list[Any]] = base.get("matrix", {})
    for combination in itertools.product(*matrix.values()):
        params = dict(base.get("params", {}))
        sets = dict(base.get("set", {}))
        for key, value in zip(matrix, combination, strict=True):
            (sets if "." in key else params)[key] = value
        for _copy in range(base.get("repeat", 1)):
            options = {key: copy.deepcopy(base[key]) for key in (*OPTION_KEYS, *extra) if key in base}
            drafts.append(
                Draft(
                    template=base.get("template"),
                    name=base.get("name"),
                    params=copy.deepcopy(params),
                    set=copy.deepcopy(sets),
                    inputs=dict(base.get("inputs", {})),
                    line=line,
                    options=options,
                    matrix=dict(zip(matrix, copy.deepcopy(combination), strict=True)),
                )
            )
    return drafts


def too_many_jobs(path: Path, max_jobs: int, line: int | None) -> ScenarioError:
    """The error for a file that expands to more than ``max_jobs`` jobs (``max_jobs_per_file``)."""
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
    raise scenario_error(
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
                raise scenario_error(
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
            raise scenario_error(
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
    if "destination" in raw:
        if not isinstance(raw["destination"], str) or not raw["destination"].strip():
            raise _type_error(path, prefix + "destination", "a destination's name (text)", raw["destination"], line)
        out["destination"] = raw["destination"].strip()
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
        raise scenario_error(
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
            raise scenario_error(
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
            raise scenario_error(
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
    raise scenario_error(
        path,
        f"Scenario {path.name!r} has a value of type {type(value).__name__!r} in {key!r}",
        hint="Use strings, numbers, booleans, null, lists and mappings only.",
        line=line,
        key=key,
    )


def refuse_surrogates(path: Path, value: Any, key: str, line: int | None) -> None:
    """Refuse a lone surrogate (a JSON or YAML ``\\ud800`` escape) in any key or string of a raw job,
    before anything else reads it: no file name, path, log line or record can hold one."""
    if isinstance(value, str):
        _check_text(path, value, key or "(top level)", line)
    elif isinstance(value, dict):
        for name, item in value.items():
            sub = f"{key}.{name}" if key else str(name)
            if isinstance(name, str):
                _check_text(path, name, sub, line)
            refuse_surrogates(path, item, sub, line)
    elif isinstance(value, list):
        for number, item in enumerate(value):
            refuse_surrogates(path, item, f"{key}[{number}]", line)


def _check_text(path: Path, value: str, key: str, line: int | None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        shown = key.encode("utf-8", "backslashreplace").decode("utf-8")  # the key may hold the surrogate
        raise scenario_error(
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
    raise scenario_error(
        path,
        f"Scenario {path.name!r} has {key!r} = {value!r}, which {problem}",
        hint="Input files are given relative to the scenario file and must stay inside its folder.",
        line=line,
        key=key,
    )


def _type_error(path: Path, key: str, expected: str, value: Any, line: int | None) -> ScenarioError:
    return scenario_error(
        path,
        f"Scenario {path.name!r} has {key!r} as {describe(value)}; expected {expected}",
        hint=f"Write {key!r} as {expected}.",
        line=line,
        key=key,
    )


def describe(value: Any) -> str:
    """What ``value`` is, for an error message: ``a list``, ``a number (3)``, ``nothing (null)``, ..."""
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


def scenario_error(path: Path, message: str, *, hint: str | None = None, **where: Any) -> ScenarioError:
    """A :class:`ScenarioError` about ``path`` whose ``where`` has its name and the given fields that are not None."""
    fields: dict[str, Any] = {"file": path.name}
    fields.update({key: value for key, value in where.items() if value is not None})
    return ScenarioError(message, hint=hint, where=fields)
