"""A template's sidecar, ``<name>.toml`` beside it: a description and the template's parameters.

::

    description = "Classic SD1.5 text to image"

    [params.prompt]
    default = "a red fox"          # optional
    type = "string"                # string | int | float | bool | any (the default)
    input = "6.text"               # optional; or a list: ["6.text", "Negative.text"]
    description = "positive prompt"

    [params.seed]
    default = "random"             # a seed-like param may default to "random": drawn per job
    type = "int"
    input = "KSampler.seed"

and the short form, a parameter that only names node inputs (no default, type ``any``)::

    [params]
    steps = "KSampler.steps"
    width = ["5.width", "Upscale.width"]

Unknown keys, bad types and malformed addresses are errors (:class:`~hotfolder.errors.TemplateError`).
Parameter values are coerced to their declared type with :func:`coerce`.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolder.errors import AddressError, TemplateError
from hotfolder.templates import inject

#: Parameter types a sidecar may declare.
PARAM_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "any")
SIDECAR_KEYS: tuple[str, ...] = ("description", "params")
PARAM_KEYS: tuple[str, ...] = ("default", "type", "input", "description")


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: Marks a sidecar parameter without a default.
MISSING: Any = _Missing.MISSING


@dataclass(frozen=True)
class ParamSpec:
    """One parameter declared in a template sidecar. ``default`` is :data:`MISSING` when not given."""

    name: str
    default: Any = MISSING
    type: str = "any"
    inputs: list[str] = field(default_factory=list)
    description: str = ""


@dataclass(frozen=True)
class TemplateSidecar:
    """A template's ``<name>.toml``: description and parameters. ``sha256`` is of the file's bytes."""

    path: Path
    description: str
    params: dict[str, ParamSpec]
    sha256: str



def decode_text(data: bytes, what: str, where: dict[str, Any]) -> str:
    """``data`` as UTF-8 text (a BOM removed); raise :class:`TemplateError` naming ``what`` and the line otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TemplateError(
            f"{what} is not UTF-8 text (invalid byte at line {line})",
            hint="Save the file as UTF-8.",
            where={**where, "line": line},
        ) from err


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)")


def load_sidecar(path: Path, template_name: str) -> TemplateSidecar | None:
    """Read and check the sidecar at ``path`` of template ``template_name``; ``None`` if there is none."""
    if not path.is_file():
        return None
    where: dict[str, Any] = {"template": template_name, "sidecar": path.name}
    label = f"Template sidecar {path.name!r}"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TemplateError(f"{label} cannot be read: {err.strerror or err}", where=where) from err
    text = decode_text(raw, label, where)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        match = _TOML_POSITION.search(message)
        fields = dict(where)
        if match:
            fields.update(line=int(match.group(1)), column=int(match.group(2)))
            message = _TOML_POSITION.sub("", message) + f" at line {match.group(1)}, column {match.group(2)}"
        raise TemplateError(
            f"{label} is not valid TOML: {message}",
            hint='Strings need quotes (default = "a red fox"); a parameter table is written [params.prompt].',
            where=fields,
        ) from err
    _check_keys(data, SIDECAR_KEYS, f"{label} has", where)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{label}: 'description' must be a string", where=where)
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        raise TemplateError(
            f"{label}: 'params' must be a table",
            hint='Write [params.<name>] tables, or [params] with name = "<node>.<input>" lines.',
            where=where,
        )
    params = {name: _param_spec(name, value, label, where) for name, value in raw_params.items()}
    return TemplateSidecar(path=path, description=description, params=params, sha256=hashlib.sha256(raw).hexdigest())


def _param_spec(name: str, value: Any, label: str, where: dict[str, Any]) -> ParamSpec:
    fields = {**where, "variable": name}
    if isinstance(value, (str, list)):
        return ParamSpec(name=name, inputs=_addresses(value, name, label, fields, short=True))
    if not isinstance(value, dict):
        raise TemplateError(
            f"{label}: parameter {name!r} must be a table or a node address, not {type(value).__name__}",
            hint=(
                f"Write [params.{name}] with default/type/input/description, "
                f'or {name} = "<node>.<input>" under [params].'
            ),
            where=fields,
        )
    _check_keys(value, PARAM_KEYS, f"{label}: parameter {name!r} has", fields)
    type_name = value.get("type", "any")
    if type_name not in PARAM_TYPES:
        raise TemplateError(
            f"{label}: parameter {name!r} has type {type_name!r}",
            hint=f"Use one of: {', '.join(PARAM_TYPES)}.",
            where=fields,
        )
    description = value.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{label}: parameter {name!r} has a 'description' that is not a string", where=fields)
    default = value.get("default", MISSING)
    if isinstance(default, (datetime.date, datetime.time)):
        default = default.isoformat()
    if default is not MISSING and not (is_seed_name(name) and is_random(default)):
        try:
            default = coerce(default, type_name)
        except ValueError as err:
            raise TemplateError(
                f"{label}: the default of parameter {name!r} is not {TYPE_WORDS[type_name]}: {default!r}",
                hint=f"Change the default or the type of {name!r}.",
                where=fields,
            ) from err
    inputs = _addresses(value.get("input", []), name, label, fields, short=False)
    return ParamSpec(name=name, default=default, type=type_name, inputs=inputs, description=description)


def _addresses(value: Any, name: str, label: str, where: dict[str, Any], *, short: bool) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise TemplateError(
            f"{label}: parameter {name!r} has an 'input' that is not an address or a list of addresses",
            hint='Write input = "6.text" or input = ["6.text", "7.text"].',
            where=where,
        )
    for address in items:
        try:
            inject.parse_address(address)
        except AddressError as err:
            hint = err.hint or ""
            if short:
                hint = (
                    f'Under [params], {name} = "<node>.<input>" maps the parameter to a node input; '
                    f"to give it a default write [params.{name}] with default = ... instead. " + hint
                )
            raise TemplateError(
                f"{label}: parameter {name!r} has a bad node address: {err.message}",
                hint=hint,
                where={**where, "address": address},
            ) from err
    return list(items)


def _check_keys(data: dict[str, Any], valid: tuple[str, ...], prefix: str, where: dict[str, Any]) -> None:
    unknown = [key for key in data if key not in valid]
    if unknown:
        raise TemplateError(
            f"{prefix} unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}",
            hint=f"Valid keys: {', '.join(valid)}.",
            where=where,
        )



TYPE_WORDS = {"string": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "any": "any value"}


def is_random(value: Any) -> bool:
    """Whether a seed-like parameter's value asks for a drawn seed (``"random"``)."""
    return isinstance(value, str) and value.strip().lower() == "random"


def is_seed_name(name: str) -> bool:
    """Whether ``name`` is seed-like (ends in ``seed``): such a parameter may be ``"random"``."""
    return name.lower().endswith("seed")


def coerce(value: Any, type_name: str) -> Any:
    """Convert ``value`` to the declared type; raise ValueError if it does not fit."""
    if type_name == "any":
        return value
    if value is None or isinstance(value, (list, dict)):
        raise ValueError(type_name)
    if type_name == "string":
        return value if isinstance(value, str) else str(value)
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ValueError(type_name)
    if isinstance(value, bool):
        raise ValueError(type_name)
    if type_name == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(type_name)
    if type_name == "float":
        number = float(value.strip()) if isinstance(value, str) else float(value)
        if not math.isfinite(number):
            raise ValueError(type_name)
        return number
    raise ValueError(type_name)

