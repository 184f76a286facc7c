"""Stage 3 of 10: parse. Turn one claimed scenario file into the jobs it describes.

:func:`parse_scenario` takes the bytes of a scenario file (already claimed into hotfolder's private
folder, under its original name) and returns one :class:`~hotfolder.spec.JobSpec` per job, with
``index`` 1..N and every ``random`` seed already drawn. Anything wrong with the file is a
:class:`~hotfolder.errors.ScenarioError` whose ``where`` names the ``file`` and, when known, the
``line``, ``column`` and ``key``.

Steps
    Check the file against the ``limits`` (size; lines for the line-based formats; nesting and values
    once read), decode it (UTF-8, with or without a BOM), read its raw jobs through the
    ``parse_scenario_file`` hook (``hooks``, in practice :class:`hotfolder.plugins.Hooks`: the first
    plugin that knows the format; the built-in formats,
    :mod:`hotfolder.default_plugins.scenario_formats`, answer last), check and expand each
    (:mod:`hotfolder.scenario`: keys, ``jobs:``, ``matrix``, ``repeat``), then name the jobs and draw
    their seeds. A file may expand to at most ``max_jobs_per_file`` jobs. Without ``hooks`` only the
    built-in formats are read and only the built-in keys allowed.

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

import difflib
import logging
import random
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from hotfolder import budgets
from hotfolder.default_plugins import scenario_formats as builtin_formats
from hotfolder.errors import ScenarioError
from hotfolder.paths import is_unsafe_char
from hotfolder.scenario import Draft, RawJob, ScenarioKey, expand, refuse_surrogates, scenario_error, too_many_jobs
from hotfolder.spec import JobSpec

logger = logging.getLogger(__name__)

#: Job names are cut to this many characters ...
MAX_NAME_CHARS = 120
#: ... and this many UTF-8 bytes, so ``<name>.json`` and temporary suffixes fit in a 255-byte file name.
MAX_NAME_BYTES = 200
#: Random seeds are drawn from ``range(0, SEED_RANGE)``.
SEED_RANGE = 2**32


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
    destinations: Collection[str] | None = None,
) -> list[JobSpec]:
    """Parse the scenario ``data`` (the bytes of ``path``) into jobs with index 1..N.

    ``default_template`` fills in jobs that name no template (it may be ``None``: then the job's
    ``template`` stays ``None`` and rendering reports it). ``rng`` draws ``random`` seeds
    (``random.SystemRandom()`` when ``None``). ``hooks`` lets plugins read more formats and allow more
    keys (module docstring, "Steps"). Raise :class:`ScenarioError` for anything malformed, or over one
    of ``limits`` (file size, lines, nesting, jobs: :mod:`hotfolder.budgets`), or for a ``destination:``
    that is not one of ``destinations`` (the names hotfolder.toml allows; None: not checked here).
    """
    suffix = _suffix(path)
    if len(data) > limits.max_file_size:
        raise budgets.exceeded(ScenarioError, f"Scenario {path.name!r} is {len(data)} bytes", key="max_file_size",
                               limit=limits.max_file_size, where={"file": path.name},
                               hint="Split it into smaller files.")
    text, read = _decode_for(path, data, hooks)
    extra: Mapping[str, ScenarioKey] = {} if hooks is None else hooks.scenario_keys
    if suffix in builtin_formats.LINE_SUFFIXES:
        _check_lines(path, text, limits)
    try:
        raw_jobs = read(path, text)
        if len(raw_jobs) > limits.max_jobs_per_file:  # one job per row or line: before checking each
            raise too_many_jobs(path, limits.max_jobs_per_file, None)
        for raw, line in raw_jobs:
            _check_shape(path, raw, line, limits, budget=len(data))
        drafts: list[Draft] = []
        for raw, line in raw_jobs:
            refuse_surrogates(path, raw, "", line)
            drafts.extend(expand(path, raw, line, already=len(drafts), extra=extra, max_jobs=limits.max_jobs_per_file))
    except RecursionError as err:
        raise budgets.exceeded(
            ScenarioError, f"Scenario {path.name!r} is nested too deeply to read", key="max_scenario_depth",
            limit=limits.max_scenario_depth, where={"file": path.name},
            hint="A scenario holds a few levels of mappings and lists; check the file is what you meant.",
        ) from err
    if not drafts:
        raise scenario_error(
            path,
            f"Scenario {path.name!r} contains no jobs",
            hint=builtin_formats.NO_JOBS_HINTS.get(suffix, "Add at least one job."),
        )
    if destinations is not None:
        _check_destinations(path, drafts, destinations)
    return _finish(path, drafts, default_template=default_template, rng=rng or random.SystemRandom())


def _check_destinations(path: Path, drafts: list[Draft], allowed: Collection[str]) -> None:
    """Every job's ``destination:`` is one of the ``allowed`` names: a scenario never picks a place to write
    that hotfolder.toml does not list (a folder of its own choosing, another bucket)."""
    for number, draft in enumerate(drafts, start=1):
        name = draft.options.get("destination")
        if name is None or name in allowed:
            continue
        close = difflib.get_close_matches(name[:80], list(allowed), n=1, cutoff=0.6)
        raise scenario_error(
            path,
            f"Scenario {path.name!r} sends job {number} to destination {name[:80]!r}, which hotfolder.toml does not define"
            f" (allowed: {', '.join(allowed)})",
            hint=(f"Did you mean {close[0]!r}? " if close else "")
            + "A scenario names one of the destinations in hotfolder.toml's [destinations] table, or 'outbox'; "
            "to send results somewhere new, add it there (name = \"s3://bucket/prefix\" or a folder).",
            line=draft.line, key="destination")


def _decode_for(path: Path, data: bytes, hooks: ScenarioHooks | None) -> tuple[str, Callable[[Path, str], list[RawJob]]]:
    """The text of ``data`` and the function that reads its raw jobs: the ``parse_scenario_file`` hook,
    or without ``hooks`` the built-in formats. Raise :class:`ScenarioError` for a file no one reads."""
    builtin = builtin_formats.FORMATS
    if hooks is None:
        if _suffix(path) not in builtin:
            raise _unsupported(path)
        return _decode(path, data), _read_builtin
    try:
        text = _decode(path, data)
    except ScenarioError as err:
        if _suffix(path) not in builtin and "line" in err.where:  # binary, and no built-in format: say so
            raise _unsupported(path, plugins=True) from None
        raise

    def read(path: Path, text: str) -> list[RawJob]:
        found = hooks.parse_scenario_file(path=path, text=text)
        if found is None:
            raise _unsupported(path, plugins=True)
        return found

    return text, read


def _read_builtin(path: Path, text: str) -> list[RawJob]:
    return builtin_formats.parse_scenario_file(path, text) or []


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
# decoding


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _unsupported(path: Path, *, plugins: bool = False) -> ScenarioError:
    hint = f"Supported scenario file types: {', '.join(sorted(builtin_formats.FORMATS))}."
    if plugins:
        hint = (
            f"Built-in scenario file types: {', '.join(sorted(builtin_formats.FORMATS))}; no plugin reads "
            f"{path.suffix or 'files without a suffix'!r} either ('hotfolder plugins --hook "
            "parse_scenario_file' lists the plugins that add formats)."
        )
    return scenario_error(path, f"Scenario {path.name!r} has an unsupported file type {path.suffix or '(none)'!r}", hint=hint)


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        hint = "Save the file as UTF-8 text."
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            hint = "The file is UTF-16 (Windows 'Unicode'); save it as UTF-8 instead."
        raise scenario_error(
            path,
            f"Scenario {path.name!r} is not UTF-8 text (invalid byte at offset {err.start}, line {line})",
            hint=hint,
            line=line,
        ) from err
    if not text.strip():
        raise scenario_error(
            path,
            f"Scenario {path.name!r} is empty",
            hint="Write the scenario into the file before moving it into the inbox.",
        )
    return text


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


def _finish(path: Path, drafts: list[Draft], *, default_template: str | None, rng: random.Random) -> list[JobSpec]:
    """The drafts as JobSpecs with index 1..N: named (module docstring, "Job names"), seeds drawn."""
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
                matrix=draft.matrix,
            )
        )
    logger.debug("Parsed %r into %d job(s)", path.name, count)
    return specs


