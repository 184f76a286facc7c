"""Rendering one template for one job: :func:`render_workflow` turns a :class:`~hotfolder.templates.load.Template`
plus a :class:`~hotfolder.spec.JobSpec` into an API-format workflow (a new dict) and the resolved parameters.

Template kinds
    ``.json``: a string that is exactly one ``{{ expr }}`` (surrounding whitespace ignored) becomes the
    expression's value with its type, so ``"{{ seed }}"`` is submitted as an integer; any other Jinja
    string renders as text, so quotes and newlines in a prompt never break the JSON.

    ``.json.j2``: every ``{{ ... }}`` is emitted as a JSON value (``json.dumps``), so
    ``"text": {{ prompt }}`` is safe for any prompt (write ``{{ "a photo of " ~ subject }}`` to build a
    string). A value that is already JSON text from ``| tojson`` is emitted as is. Use ``{% for %}`` to
    add nodes.

    Rendering is sandboxed (``ImmutableSandboxedEnvironment``: no ``_``-attributes, no Python
    internals, no mutating of lists or dicts), strict (``StrictUndefined``: an undefined variable is an
    error naming the variable, the template, the scenario and the job) and bounded by the budgets of
    :mod:`hotfolder.budgets`. Parameter values are data: Jinja inside a prompt is never evaluated.

Rendering one job
    0. Every scenario param must land somewhere (:func:`hotfolder.templates.params.check_params_used`),
       unless the scenario lists it under ``allow_unused`` (``spec.options``).
    1. Context: sidecar defaults, overridden by ``spec.params``. A seed-like parameter (name ending in
       ``seed``) whose value is ``"random"`` gets a number drawn from ``random.SystemRandom`` in
       ``0 .. 2**32-1``. Parameters with a declared type are coerced (``int("20")``, ``float``, ``bool``
       from ``true``/``false``/``1``/``0``, ``str()``).
    2. Render the template and check the result is an API workflow.
    3. Every sidecar (or role) parameter with ``input`` addresses and a value sets those node inputs.
    4. ``spec.set`` overrides are applied last. (``spec.inputs``, the file uploads, are set afterwards by
       :func:`hotfolder.stages.prepare.render_job`; see :mod:`hotfolder.stages.upload`.)

Plugins (``hooks=``, in practice :class:`hotfolder.plugins.Hooks`)
    Templates compile in environments that ``hooks.prepare_jinja2_environment`` has prepared
    (:mod:`hotfolder.templates.cache`). ``hooks.prepare_template_context`` may change a copy of the
    resolved parameters before rendering (the changed values of existing parameters are the ones
    returned and set through sidecar inputs; new names are template-only) and, after step 4,
    ``hooks.prepare_workflow`` change the workflow (the injectors); the result is checked to still be an
    API workflow.

Every failure is a :class:`~hotfolder.errors.TemplateError` (or its subclass
:class:`~hotfolder.errors.AddressError`) whose ``where`` holds ``template`` and, as far as known,
``file`` and ``job`` (the scenario), ``variable``, ``node``, ``input``, ``line`` and ``column``.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import jinja2
import jinja2.runtime

from hotfolder import budgets
from hotfolder.errors import PluginError, TemplateError
from hotfolder.spec import JobSpec
from hotfolder.templates import inject
from hotfolder.templates.cache import Compiler, NotJSONError, compiler_for
from hotfolder.templates.load import RenderHooks, Template
from hotfolder.templates.params import NAME, check_params_used
from hotfolder.templates.render_errors import (
    RENDER_ERRORS,
    located,
    path_fields,
    render_error,
    scenario_of,
    template_line,
)
from hotfolder.templates.sidecar import MISSING, TYPE_WORDS, coerce, is_random, is_seed_name
from hotfolder.templates.workflow import check_api_format, parse_workflow, single_expression

#: Random seeds are drawn from ``range(0, SEED_RANGE)``.
SEED_RANGE = 2**32
#: Names Jinja reads as constants, operators or its own objects, never as plain variables.
_JINJA_NAMES = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
                          "else", "self", "loop", "super", "varargs", "kwargs", "caller"})


def render_workflow(
    template: Template, spec: JobSpec, *, hooks: RenderHooks | None = None,
    budget: budgets.RenderBudget | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Render ``template`` for one job; return ``(API workflow, resolved params)``.

    The workflow is a new dict (the template is never changed). Raise :class:`TemplateError` for an
    undefined variable, a sandbox violation, a parameter that does not fit its declared type, output
    that is not an API workflow, or a node address (sidecar ``input``, ``spec.set``) that does not
    resolve (:class:`AddressError`). With ``hooks``, plugins take part (module docstring, "Plugins");
    what they raise is passed on (:class:`~hotfolder.errors.PluginError` for their own failures).
    The Jinja part runs under ``budget`` (the default limits when None): a :class:`TemplateError`
    naming ``render_timeout`` or ``max_render_size`` when it is used up (:mod:`hotfolder.budgets`).
    """
    where: dict[str, Any] = {"file": spec.source.name, "job": spec.name, "template": template.name}
    check_params_used(template, spec, where)
    resolved = _resolve_params(template, spec, where)
    compiler = compiler_for(hooks)
    context = resolved
    if hooks is not None:
        context = dict(resolved)
        hooks.prepare_template_context(context=context, spec=spec)
        resolved = {name: context[name] for name in resolved if name in context}
    if template.kind not in ("json", "jinja"):
        raise TemplateError(
            f"Template {template.name!r} has unknown kind {template.kind!r}",
            hint="Load templates with load_template().",
            where=where,
        )
    with (budget or budgets.RenderBudget()).running(where):
        if template.kind == "json":
            source = parse_workflow(template.text, template.name)
            workflow = _LeafRenderer(template, context, where, compiler).render(source)
        else:
            workflow = _render_whole(template, context, where, compiler)
    check_api_format(workflow, template.name, where, rendered=template.kind == "jinja")
    for param in template.params.values():
        if param.inputs and param.name in resolved:
            for address in param.inputs:
                inject.set_input(workflow, address, resolved[param.name], where={**where, "variable": param.name})
    inject.apply_overrides(workflow, spec.set, where=where)
    if hooks is not None:
        hooks.prepare_workflow(workflow=workflow, spec=spec, template=template)
        try:
            check_api_format(workflow, template.name, where, rendered=True)
        except TemplateError as err:
            raise PluginError(
                f"The workflow of job {spec.name!r} is no longer an API workflow after the plugins' "
                f"prepare_workflow changed it: {err.message}",
                hint="A plugin injector broke it; 'hotfolder plugins --hook prepare_workflow' lists them.",
                where={**err.where, "hook": "prepare_workflow"},
            ) from err
    return workflow, resolved


_system_random = random.SystemRandom()


def _resolve_params(template: Template, spec: JobSpec, where: dict[str, Any]) -> dict[str, Any]:
    declared = template.params
    resolved = {name: param.default for name, param in declared.items() if param.default is not MISSING}
    resolved.update(spec.params)
    for name, value in resolved.items():
        if is_seed_name(name) and is_random(value):
            resolved[name] = _system_random.randrange(0, SEED_RANGE)
    for name, param in declared.items():
        if name not in resolved or param.type == "any":
            continue
        try:
            resolved[name] = coerce(resolved[name], param.type)
        except (ValueError, OverflowError) as err:
            raise TemplateError(
                f"Parameter {name!r} of template {template.name!r} must be {TYPE_WORDS[param.type]}, "
                f"got {resolved[name]!r} (scenario {where['file']!r}, job {where['job']!r})",
                hint=f"Give {name!r} {TYPE_WORDS[param.type]} in the scenario's params.",
                where={**where, "variable": name},
            ) from err
    return resolved



def _plain_value(value: Any) -> Any:
    """A native expression result as plain JSON data; raise NotJSONError otherwise."""
    if value is None or type(value) in (bool, int):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONError(value)
        return value
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise NotJSONError(value) from err


class _LeafRenderer:
    """Renders the Jinja strings of a ``.json`` template into a new structure."""

    def __init__(
        self, template: Template, context: dict[str, Any], where: dict[str, Any], compiler: Compiler
    ) -> None:
        self.template = template
        self.context = context
        self.where = where
        self.compiler = compiler
        # a plugin may give the environment its own context class (variable lookup): then Jinja decides
        self.plain_lookup = compiler.env(json_output=False).context_class is jinja2.runtime.Context

    def render(self, value: Any, path: tuple[Any, ...] = ()) -> Any:
        if isinstance(value, str):
            if "{{" in value or "{%" in value:
                return self._render_string(value, path)
            return value
        if isinstance(value, dict):
            return {key: self.render(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.render(item, (*path, index)) for index, item in enumerate(value)]
        return value

    def _render_string(self, text: str, path: tuple[Any, ...]) -> Any:
        expression = single_expression(text)
        try:
            if expression is not None:
                if (self.plain_lookup and expression in self.context and expression not in _JINJA_NAMES
                        and NAME.fullmatch(expression)
                        and not isinstance(value := self.context[expression], jinja2.Undefined)):
                    # "{{ name }}", the commonest leaf: the value itself, as Jinja would give it (a plain
                    # variable reads the context as is), without a Jinja context per leaf
                    return _plain_value(value)
                result = self.compiler.expression(expression)(**self.context)
                if isinstance(result, jinja2.Undefined):
                    str(result)  # raises UndefinedError / SecurityError
                return _plain_value(result)
            rendered = self.compiler.text(text).render(self.context)
            budgets.current().emitted(len(rendered))
            return rendered
        except NotJSONError as err:
            raise TemplateError(
                f"Template {self.template.name!r} produced a {type(err.value).__name__} value"
                f"{located(path, None)}, which JSON cannot hold{scenario_of(self.where)}",
                hint="An expression must give a string, number, boolean, null, list or mapping.",
                where={**self.where, **path_fields(path)},
            ) from err
        except RENDER_ERRORS as err:
            raise render_error(err, self.template.name, self.where, path=path) from err


def _render_whole(template: Template, context: dict[str, Any], where: dict[str, Any], compiler: Compiler) -> Any:
    try:
        rendered = compiler.whole(template.text).render(context)
        budgets.current().emitted(len(rendered))
    except NotJSONError as err:
        line = template_line(err)
        raise TemplateError(
            f"Template {template.name!r} emits a {type(err.value).__name__} value{located((), line)}, "
            f"which JSON cannot hold{scenario_of(where)}",
            hint="Every {{ ... }} in a .json.j2 template must give a string, number, boolean, null, list or mapping.",
            where={**where, **({"line": line} if line else {})},
        ) from err
    except RENDER_ERRORS as err:
        raise render_error(err, template.name, where, line=template_line(err)) from err
    try:
        return json.loads(rendered)
    except json.JSONDecodeError as err:
        lines = rendered.split("\n")
        shown = lines[err.lineno - 1] if 0 < err.lineno <= len(lines) else ""
        if len(shown) > 200:
            start = max(0, err.colno - 100)
            shown = ("..." if start else "") + shown[start : start + 200] + "..."
        raise TemplateError(
            f"Template {template.name!r} rendered invalid JSON: {err.msg} at line {err.lineno}, column "
            f"{err.colno} of the rendered text{scenario_of(where)}\n  {shown}",
            hint=(
                "In a .json.j2 template every {{ ... }} is emitted as a JSON value, quotes included: write "
                '"text": {{ prompt }}, not "text": "{{ prompt }}"; build strings inside the braces '
                "({{ 'a photo of ' ~ subject }}). Check the commas around {% for %} loops "
                "({% if not loop.last %},{% endif %})."
            ),
            where={**where, "line": err.lineno, "column": err.colno},
        ) from err
