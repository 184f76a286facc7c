"""Rendering failures as :class:`~hotfolder.errors.TemplateError`: what went wrong, where in the template
(node and input of a ``.json`` template, line of a ``.json.j2``), for which scenario and job, and how to fix it."""

from __future__ import annotations

import re
from typing import Any

import jinja2
import jinja2.exceptions

from hotfolder.errors import TemplateError

#: What rendering may raise: Jinja's own errors, and Python errors from expressions and filters.
RENDER_ERRORS = (
    jinja2.TemplateError,
    ArithmeticError,
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    RuntimeError,
)


def template_line(err: BaseException) -> int | None:
    """The template line an error was raised on (Jinja rewrites tracebacks to template lines)."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return err.lineno
    line = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


def render_error(
    err: BaseException,
    name: str,
    where: dict[str, Any],
    *,
    path: tuple[Any, ...] = (),
    line: int | None = None,
) -> TemplateError:
    """The :class:`TemplateError` for ``err``, raised rendering or compiling template ``name``: at
    ``path`` (node, input) of a ``.json`` template or ``line`` of a ``.json.j2``, with a hint."""
    fields = {**where, **path_fields(path)}
    if line is not None and not path:
        fields["line"] = line
    place = located(path, line) + scenario_of(where)
    if isinstance(err, jinja2.exceptions.SecurityError):
        message = f"Template {name!r} tried an unsafe operation{place}: {err}"
        hint = (
            "Templates are sandboxed: attributes starting with '_', Python internals and changing "
            "lists or dicts are not allowed. Use the parameters' values only."
        )
    elif isinstance(err, jinja2.UndefinedError):
        match = _UNDEFINED_NAME.match(str(err.message or ""))
        if match:
            variable = match.group(1)
            fields["variable"] = variable
            message = f"Template {name!r} uses undefined variable {variable!r}{place}"
            hint = (
                f"Add {variable!r} under 'params:' in the scenario, or give it a default in the "
                f"template's sidecar {name}.toml ([params.{variable}] default = ...)."
            )
        else:
            message = f"Template {name!r} uses something undefined{place}: {err.message}"
            hint = "Check the attribute or key name against the params the scenario gives."
    elif isinstance(err, jinja2.TemplateSyntaxError):
        message = f"Template {name!r} has a Jinja syntax error{place}: {err.message}"
        hint = "Check the {{ ... }} / {% ... %} tags near that line: every tag needs its closing braces."
    else:
        message = f"Template {name!r} failed to render{place}: {type(err).__name__}: {err}"
        hint = "Check the expressions in the template against the parameter values given."
    return TemplateError(message, hint=hint, where=fields)


def path_fields(path: tuple[Any, ...]) -> dict[str, Any]:
    """``where`` fields for a place in a ``.json`` template: ``node``, and ``input`` or ``key``."""
    if not path:
        return {}
    fields: dict[str, Any] = {"node": str(path[0])}
    if len(path) >= 3 and path[1] == "inputs":
        fields["input"] = str(path[2])
    elif len(path) >= 2:
        fields["key"] = ".".join(str(part) for part in path[1:])
    return fields


def located(path: tuple[Any, ...], line: int | None) -> str:
    """`` in node '3' input 'seed'`` or `` at line 4`` (or nothing), for a message."""
    if path:
        fields = path_fields(path)
        text = f" in node {fields['node']!r}"
        if "input" in fields:
            text += f" input {fields['input']!r}"
        elif "key" in fields:
            text += f" at {fields['key']!r}"
        return text
    if line is not None:
        return f" at line {line}"
    return ""


def scenario_of(where: dict[str, Any]) -> str:
    """`` (scenario 'a.yaml', job 'a-001')`` when ``where`` names both, for a message."""
    if "file" in where and "job" in where:
        return f" (scenario {where['file']!r}, job {where['job']!r})"
    return ""

