"""A ``.json`` template's JSON: parsed once (cached), checked to be a ComfyUI API workflow, its Jinja strings found and compiled."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jinja2

from hotfolder.errors import TemplateError
from hotfolder.templates.cache import Compiler
from hotfolder.templates.render_errors import render_error

API_FORMAT_HINT = (
    "In ComfyUI, turn on the dev mode option in the settings (gear icon: 'Enable Dev mode Options'), "
    "then use 'Save (API Format)' (newer versions: Workflow > Export (API)) and save that file as "
    "templates/{name}.json."
)


@functools.lru_cache(maxsize=64)
def parse_json(text: str, name: str) -> Any:
    """Parse a ``.json`` template's text (cached; do not mutate the result)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TemplateError(
            f"Template {name!r} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}",
            hint="Fix the JSON (a missing comma or quote, or a trailing comma, near that position), "
            "or export the workflow again with 'Save (API Format)'.",
            where={"template": name, "line": err.lineno, "column": err.colno},
        ) from err


@functools.lru_cache(maxsize=64)
def parse_workflow(text: str, name: str) -> dict[str, Any]:
    """Parse a ``.json`` template and check it is an API workflow (cached; do not mutate the result)."""
    data = parse_json(text, name)
    check_api_format(data, name, {"template": name}, rendered=False)
    workflow: dict[str, Any] = data
    return workflow



def is_api_workflow(data: Any) -> bool:
    """Whether ``data`` is an API workflow: a non-empty object of nodes, each with a ``class_type`` string
    and an ``inputs`` object."""
    return isinstance(data, dict) and bool(data) and all(
        isinstance(node, dict) and isinstance(node.get("class_type"), str) and isinstance(node.get("inputs"), dict)
        for node in data.values()
    )


def check_leaves(workflow: dict[str, Any], name: str, compiler: Compiler) -> None:
    """Compile every Jinja string of a ``.json`` template; raise :class:`TemplateError` on a syntax error."""
    for path, source in jinja_leaves(workflow, ()):
        expression = single_expression(source)
        try:
            if expression is not None:
                compiler.expression(expression)
            else:
                compiler.text(source)
        except jinja2.TemplateSyntaxError as err:
            raise render_error(err, name, {"template": name}, path=path) from err


def jinja_leaves(value: Any, path: tuple[Any, ...]) -> Any:
    """Yield ``(path, string)`` for every string under ``value`` that holds Jinja (``{{`` or ``{%``)."""
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from jinja_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from jinja_leaves(item, (*path, index))


def check_api_format(data: Any, name: str, where: dict[str, Any], *, rendered: bool) -> None:
    """Raise :class:`TemplateError` saying why ``data`` (a template, or what it ``rendered`` to) is not
    an API workflow, with directions for exporting one."""
    what = "rendered to" if rendered else "is"
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise TemplateError(
            f"Template {name!r} is a ComfyUI UI workflow, not API format",
            hint=API_FORMAT_HINT.format(name=name),
            where=where,
        )
    if not isinstance(data, dict):
        raise TemplateError(
            f"Template {name!r} {what} a JSON {type(data).__name__}, not an API workflow (an object of nodes)",
            hint=API_FORMAT_HINT.format(name=name),
            where=where,
        )
    if not data:
        raise TemplateError(
            f"Template {name!r} {what} an empty workflow (no nodes)",
            hint=API_FORMAT_HINT.format(name=name),
            where=where,
        )
    for node_id, node in data.items():
        if not isinstance(node, dict):
            problem = f"is a JSON {type(node).__name__}, not a node object"
        elif not isinstance(node.get("class_type"), str):
            problem = "has no 'class_type' string"
        elif not isinstance(node.get("inputs"), dict):
            problem = "has no 'inputs' object"
        else:
            continue
        hint = 'An API workflow maps node ids to {"class_type": ..., "inputs": {...}}. ' + API_FORMAT_HINT.format(
            name=name
        )
        if node_id == "prompt" and len(data) <= 3 and isinstance(node, dict):
            hint = "This looks like a /prompt request body: save only the value of its 'prompt' key. " + hint
        raise TemplateError(
            f"Template {name!r} {what} not a ComfyUI API workflow: node {node_id!r} {problem}",
            hint=hint,
            where={**where, "node": node_id},
        )


def compile_checked(text: str, name: str, compiler: Compiler) -> None:
    """Compile a ``.json.j2`` template; raise :class:`TemplateError` on a syntax error."""
    try:
        compiler.whole(text)
    except jinja2.TemplateSyntaxError as err:
        raise render_error(err, name, {"template": name}, line=err.lineno) from err


_SINGLE_EXPRESSION = re.compile(r"\{\{-?(?P<expr>.*?)-?\}\}", re.DOTALL)
_DELIMITERS = ("{{", "}}", "{%", "%}", "{#", "#}")


def single_expression(text: str) -> str | None:
    """The expression inside ``text`` if ``text`` (stripped) is exactly one ``{{ expr }}``."""
    match = _SINGLE_EXPRESSION.fullmatch(text.strip())
    if match is None:
        return None
    expression = match.group("expr")
    if any(delimiter in expression for delimiter in _DELIMITERS) or not expression.strip():
        return None
    return expression.strip()


