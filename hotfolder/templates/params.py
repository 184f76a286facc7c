"""Which parameter goes where: the variables a template reads, the params a job gives that land nowhere
(:func:`check_params_used`), and the scenario field behind each node input of a rendered job
(:func:`scenario_fields`). Templates are only parsed here, never compiled."""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from hotfolder.errors import AddressError, TemplateError
from hotfolder.spec import JobSpec
from hotfolder.templates import inject
from hotfolder.templates.cache import EnvironmentHooks, compiler_for
from hotfolder.templates.load import Template
from hotfolder.templates.sidecar import MISSING
from hotfolder.templates.workflow import jinja_leaves, parse_workflow


def required_variables(template: Template, *, hooks: EnvironmentHooks | None = None) -> set[str]:
    """The variables the template's Jinja uses that have no default (each scenario must give them);
    names the Jinja environment defines (``range``, plugin globals) are left out."""
    defaults = {name for name, param in template.params.items() if param.default is not MISSING}
    env_globals = set(compiler_for(hooks).env(json_output=template.kind == "jinja").globals)
    return set(_variables_of(template.kind, template.text, template.name)) - defaults - env_globals


#: A variable name, as Jinja reads one.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.lru_cache(maxsize=4096)
def string_variables(value: str) -> tuple[str, ...]:
    """The undeclared variables of one Jinja string, in order of first use (``()`` if it does not
    parse). Cached: every job of a template asks about the same strings."""
    try:
        names = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(value))
    except jinja2.TemplateSyntaxError:
        return ()
    return tuple(dict.fromkeys(m.group(0) for m in NAME.finditer(value) if m.group(0) in names))


@functools.lru_cache(maxsize=64)
def _variables_of(kind: str, text: str, name: str) -> frozenset[str]:
    env = compiler_for(None).env(json_output=kind == "jinja")
    sources = [text] if kind == "jinja" else [leaf for _path, leaf in jinja_leaves(parse_workflow(text, name), ())]
    found: set[str] = set()
    for source in sources:
        try:
            found |= jinja2.meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
    return frozenset(found)


#: Scenario key listing params a job gives that the template may leave unused (parse stage).
ALLOW_UNUSED_KEY = "allow_unused"
_MAX_LISTED = 30


def check_params_used(template: Template, spec: JobSpec, where: dict[str, Any]) -> None:
    """Raise :class:`TemplateError` if a param of ``spec`` lands nowhere in ``template``.

    A param is used when the template's Jinja reads it or it is a sidecar parameter or a role. Names
    in ``spec.options["allow_unused"]`` are exempt. The error names each param with the close matches
    among the template's names, or, for a role the workflow has more than once, the node inputs.
    """
    allowed = set(spec.options.get(ALLOW_UNUSED_KEY) or ())
    variables = _names_read(template.kind, template.text, template.name)
    declared = template.params
    unused = [name for name in spec.params if name not in declared and name not in variables and name not in allowed]
    if not unused:
        return
    known = sorted({*declared, *variables, *template.ambiguous_roles})
    problems: list[str] = []
    hints: list[str] = []
    details: dict[str, Any] = {"unused": {}, "ambiguous": {}, "template_params": known}
    for name in unused:
        nodes = template.ambiguous_roles.get(name)
        if nodes:
            problems.append(_ambiguous_role(template, name, nodes, details, hints))
            continue
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.7)
        details["unused"][name] = {"candidates": close}
        reason = template.role_reasons.get(name)
        if reason:
            problems.append(f"param {name!r} is not used: the workflow has no {name} role ({reason})")
        else:
            problems.append(f"param {name!r} is not used (no Jinja variable, sidecar parameter or role of that name)")
        if close:
            hints.append(f"Did you mean {' or '.join(repr(c) for c in close)} instead of {name!r}?")
    shown = ", ".join(known[:_MAX_LISTED]) + (", ..." if len(known) > _MAX_LISTED else "")
    hints.append(f"Template {template.name!r} takes: {shown}." if known else
                 f"Template {template.name!r} takes no params (no Jinja variables, no sidecar, no roles): "
                 'set node inputs with set: {"<node>.<input>": value}.')
    if details["unused"]:
        names = [name for name in details["unused"] if not details["unused"][name]["candidates"]]
        names = names or list(details["unused"])
        hints.append(f"A param given on purpose (a note for people) is listed under allow_unused: "
                     f"[{', '.join(names)}]; in a CSV, start its column name with '#' (#{names[0]}).")
    raise TemplateError(
        f"Template {template.name!r} cannot place every param of scenario {where['file']!r}, job "
        f"{where['job']!r}: " + "; ".join(problems),
        hint=" ".join(hints),
        where={**where, "variable": unused[0]},
        details={key: value for key, value in details.items() if value},
    )


@functools.lru_cache(maxsize=64)
def _names_read(kind: str, text: str, name: str) -> frozenset[str]:
    """Every variable name the template's Jinja reads (a loop's own variables too): the names a param
    can be used as. Only parsed, never compiled, so filters a plugin adds need not be known here."""
    sources = [text] if kind == "jinja" else [leaf for _path, leaf in jinja_leaves(parse_workflow(text, name), ())]
    found: set[str] = set()
    for source in sources:
        try:
            tree = compiler_for(None).env(json_output=kind == "jinja").parse(source)
        except jinja2.TemplateSyntaxError:
            continue
        found.update(node.name for node in tree.find_all(jinja2.nodes.Name) if node.ctx == "load")
    return frozenset(found)


def _ambiguous_role(template: Template, name: str, nodes: list[str], details: dict[str, Any],
                    hints: list[str]) -> str:
    """The sentence for a role that several node inputs play; adds its details and hint."""
    workflow = parse_workflow(template.text, template.name)
    titles = [inject.describe_node(workflow, n)["title"] for n in workflow]
    described = []
    example = ""
    for address in nodes:
        node_id, _, input_name = address.partition(".")  # a role's address: a node id has no dot
        node = inject.describe_node(workflow, node_id)
        described.append(f"{address} ({node['class_type']}" + (f", {node['title']!r})" if node["title"] else ")"))
        if not example and node["title"] and titles.count(node["title"]) == 1 and node["title"] not in workflow:
            example = f' or by title, set: {{"{node["title"]}.{input_name}": ...}}'
    details["ambiguous"][name] = {"nodes": nodes, "described": described}
    hints.append(
        f'{name!r} is {len(nodes)} node inputs in this workflow: set the one you mean by address under '
        f'set:, e.g. set: {{"{nodes[0]}": ...}}{example}; or name the inputs in a sidecar '
        f'{template.name}.toml ([params] {name} = "{nodes[0]}", or a list to fill several).')
    return f"param {name!r} is ambiguous: {len(nodes)} node inputs play that role: {', '.join(described)}"



def scenario_fields(template: Template, spec: JobSpec, workflow: Mapping[str, Any]) -> dict[str, str]:
    """Map ``"<node_id>.<input>"`` to the scenario field that set it, for one rendered job.

    ``workflow`` is the rendered workflow (node ids are resolved against it). Later sources win, in
    the order rendering applies them: a template string that uses a parameter (``"{{ seed }}"`` in
    ``3.seed`` gives ``params.seed``; a string using several gives ``params.a, params.b``), a sidecar
    (or role) parameter's ``input`` addresses (``params.<name>``; one without a default only when the
    job gives it), the scenario's ``set:`` entries (``set.<address>``), then its ``inputs:``
    (``inputs.<address>``). Addresses that do not resolve are skipped (rendering reports those).
    """
    fields: dict[str, str] = dict(_template_fields(template.text)) if template.kind == "json" else {}
    for param in template.params.values():
        if param.default is MISSING and param.name not in spec.params:
            continue  # not set by this job: the value there is the template's own
        for address in param.inputs:
            resolved = _resolve_address(workflow, address)
            if resolved:
                fields[resolved] = f"params.{param.name}"
    for address in spec.set:
        resolved = _resolve_address(workflow, address)
        if resolved:
            fields[resolved] = f"set.{address}"
    for address in spec.inputs:
        resolved = _resolve_address(workflow, address)
        if resolved:
            fields[resolved] = f"inputs.{address}"
    return fields


def _resolve_address(workflow: Mapping[str, Any], address: str) -> str | None:
    try:
        node_id, input_name = inject.split_address(workflow, address)
    except AddressError:
        return None
    return f"{node_id}.{input_name}"


@functools.lru_cache(maxsize=64)
def _template_fields(text: str) -> tuple[tuple[str, str], ...]:
    """``(node.input, "params.a, params.b")`` for each Jinja string of a ``.json`` template's text. Cached:
    every job of a file asks about the same template (it was parsed once per job, a whole large
    template again for each row of a batch)."""
    try:
        raw = json.loads(text)
    except ValueError:
        return ()
    out = []
    if isinstance(raw, Mapping):
        for node_id, node in raw.items():
            inputs = node.get("inputs") if isinstance(node, Mapping) else None
            if not isinstance(inputs, Mapping):
                continue
            for name, value in inputs.items():
                variables = _jinja_variables(value)
                if variables:
                    out.append((f"{node_id}.{name}", ", ".join(f"params.{v}" for v in variables)))
    return tuple(out)


def _jinja_variables(value: Any) -> list[str]:
    """Undeclared variables of a Jinja string (in order of first use); ``[]`` if it is not Jinja."""
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return []
    return list(string_variables(value))

