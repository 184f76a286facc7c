"""Budgets: limits on every piece of work whose size comes from a scenario or a server.

A scenario file and a server's answers are untrusted: their size decides how much hotfolder would read,
render, hold in memory or write. Each such piece of work has a limit, set in the config (README, "Budgets"),
and going over it is an error that names the limit, its config key, the file or job, and how to fix it:
:func:`exceeded`. The limits themselves are checked where the work is done (scenario lines, jobs and
nesting in :mod:`hotfolder.stages.parse`, the scenario file's size in the pipeline, responses and
downloads in :mod:`hotfolder.comfy.http`, WebSocket messages in :mod:`hotfolder.comfy.ws`); rendering is
bounded here.

Rendering runs the template's Jinja in-process, so a thread cannot simply be stopped. Instead the
environment (:class:`BudgetedEnvironment`) counts as it goes: every ``{% for %}`` iteration, every call,
operator and filter checks the job's deadline (``render_timeout``) and whether the daemon is stopping, and
every value that could grow (``"x" * n``, ``s ~ s``, ``range(n)``, ``| center(n)``, string methods, macro
and block output) is checked against ``max_render_size`` before it is built where the size can be known
in advance, after otherwise. The active :class:`RenderBudget` is per thread (:meth:`RenderBudget.running`).
"""

from __future__ import annotations

import math
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import jinja2.nodes as nodes
import jinja2.runtime
import jinja2.sandbox
import jinja2.utils
import jinja2.visitor

from hotfolder.errors import HotfolderError, TemplateError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The budgets, with their defaults (the config keys of the same names set them)."""

    render_timeout: float = 10.0  # seconds of Jinja rendering per job
    max_render_size: int = 8 * MIB  # characters: any value a template builds, and its whole output per job
    max_scenario_lines: int = 100_000  # lines of a .txt/.csv/.jsonl scenario (blank and comment lines count)
    max_jobs_per_file: int = 10_000  # jobs one scenario file may expand to
    max_scenario_depth: int = 32  # nesting of mappings and lists in a scenario document (the top mapping is 1)
    max_response_size: int = 256 * MIB  # bytes of one JSON answer from ComfyUI (/object_info is the largest)
    max_download_size: int = 4 * 1024 * MIB  # bytes of one output file downloaded from ComfyUI
    max_ws_message_size: int = 64 * MIB  # bytes of one WebSocket message (text or binary) from ComfyUI
    max_file_size: int = 10 * MIB  # bytes of a scenario file

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        """The limits of a :class:`~hotfolder.config.Settings` (any object with these attributes)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})


KEYS = tuple(f.name for f in fields(Limits))
DEFAULTS = Limits()


def exceeded(kind: type[HotfolderError], what: str, *, key: str, limit: float, where: dict[str, Any] | None = None,
             hint: str = "") -> HotfolderError:
    """The error for going over a budget: ``what`` went over ``key`` (now ``limit``)."""
    shown = _shown(key, limit)
    return kind(
        f"{what}: over the limit {key} = {shown}",
        hint=(hint + " " if hint else "") + f"If this input is meant to be this large, raise {key} in hotfolder.toml "
             f"(now {shown}).",
        where={**(where or {}), "limit": key, "limit_value": limit},
    )


def _shown(key: str, limit: float) -> str:
    if key.endswith("_size") and limit >= MIB and limit % MIB == 0:
        return f"{int(limit)} ({int(limit // MIB)} MiB)"
    return f"{limit:g}" if isinstance(limit, float) else str(limit)


# --------------------------------------------------------------------------------------------------
# nesting depth


def shape(value: Any, *, max_depth: int, max_values: int) -> str | None:
    """``"deep"`` if ``value`` (plain data: dicts, lists) nests mappings and lists more than ``max_depth``
    levels (the outermost is level 1), ``"large"`` if it holds more than ``max_values`` values counting
    shared ones each time they appear, else None. Iterative, and stops at the first excess: never
    recurses or walks long, whatever the input."""
    if not isinstance(value, dict | list | tuple):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > max_depth:
            return "deep"
        seen += len(children)
        if seen > max_values:
            return "large"
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return None


# --------------------------------------------------------------------------------------------------
# rendering


class RenderCancelled(Exception):  # noqa: N818 - not an error: the daemon is stopping
    """The daemon is stopping: the render was abandoned, the file stays claimed for the next start."""


class RenderBudget:
    """The render budget of one job: a deadline, a size limit, and the stop flag of the daemon."""

    def __init__(self, limits: Limits = DEFAULTS, *, cancel: threading.Event | None = None) -> None:
        self.timeout = limits.render_timeout
        self.max_size = limits.max_render_size
        self.cancel = cancel
        self.deadline = math.inf
        self.output = 0
        self.where: dict[str, Any] = {}
        self._outer: RenderBudget | None = None

    def running(self, where: dict[str, Any]) -> RenderBudget:
        """``with budget.running(where):`` renders one job under this budget on this thread (a render
        inside another keeps the outer budget)."""
        self.where = where
        return self

    def __enter__(self) -> RenderBudget:
        self._outer = getattr(_active, "budget", None)
        if self._outer is None:
            self.output = 0
            self.deadline = time.monotonic() + self.timeout
            _active.budget = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._outer is None:
            _active.budget = None

    def check(self) -> None:
        """Raise if the daemon is stopping or the job's render time is used up."""
        if self.cancel is not None and self.cancel.is_set():
            raise RenderCancelled("stopping")
        if time.monotonic() > self.deadline:
            raise exceeded(TemplateError, f"{_rendering(self.where)} took longer than "
                           f"{self.timeout:g} s", key="render_timeout", limit=self.timeout, where=self.where,
                           hint="A loop in the template runs too often for the values the scenario gives (a "
                                "range(n) or a list the scenario makes large): check those values.")

    def size(self, size: int, what: str = "a value", unit: str = "characters") -> None:
        """Raise if a value of ``size`` characters (or items) is over ``max_render_size``."""
        if size > self.max_size:
            raise exceeded(TemplateError, f"{_rendering(self.where)} would build "
                           f"{what} of {size} {unit}", key="max_render_size", limit=self.max_size,
                           where=self.where, hint="The scenario's values make the template build a huge text or "
                                                  "list (a repeat count, a width, a range): check those values.")

    def emitted(self, size: int) -> None:
        """Count ``size`` characters of the job's rendered output against ``max_render_size``."""
        self.output += size
        self.size(self.output, "output")


def _rendering(where: dict[str, Any]) -> str:
    """``Rendering job 'j' (template 't', file 'f.yaml')``, as far as ``where`` tells."""
    parts = [f"{key} {where[key]!r}" for key in ("template", "file") if key in where]
    job = f" job {where['job']!r}" if "job" in where else " a template"
    return f"Rendering{job}" + (f" ({', '.join(parts)})" if parts else "")


class _Outside(RenderBudget):
    """Outside a job's render (compiling, constant folding): sizes only, nothing counted across calls."""

    def emitted(self, size: int) -> None:
        self.size(size, "output")


_active = threading.local()
_UNLIMITED = _Outside()


def current() -> RenderBudget:
    """The budget of the render running on this thread (sizes only when none is)."""
    return getattr(_active, "budget", None) or _UNLIMITED


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0


def _count(value: Any) -> Any:
    """Check a value a template built against the size limit, and pass it on."""
    if isinstance(value, str | bytes | list | tuple | dict):
        current().size(len(value))
    return value


def _int_args(args: Iterable[Any]) -> int:
    return max((a for a in args if isinstance(a, int) and not isinstance(a, bool)), default=0)


_WIDTHS = re.compile(r"\d+")
_PERCENT_WIDTHS = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d+))?")
_BRACE_SPECS = re.compile(r"\{[^{}]*\}")
_NESTED_SPEC = re.compile(r"\{[^{}]*\{")
_PADDING = ("ljust", "rjust", "center", "zfill")
# Whole numbers a template computes stay printable: Python refuses to print more digits than this, and
# computing one with millions of digits holds the interpreter for seconds (10 ** 8000000: 6 s).
MAX_DIGITS = 4300


def _formatted_size(fmt: Any, args: Iterable[Any]) -> int:
    """How long formatting ``fmt`` can get: its length plus the largest width or precision it asks for
    (``{:>9}``, ``%9s``), or any whole number among ``args`` when a width comes from them (``%*d``,
    ``{:>{}}``)."""
    if not isinstance(fmt, str):
        return 0
    numbers = [int(n) for spec in _BRACE_SPECS.findall(fmt) for n in _WIDTHS.findall(spec.partition(":")[2])]
    numbers += [int(n) for pair in _PERCENT_WIDTHS.findall(fmt) for n in pair if n]
    if "*" in fmt or _NESTED_SPEC.search(fmt):
        numbers.append(_int_args(args))
    return len(fmt) + max(numbers, default=0)


def _joined_size(sep: Any, items: Any) -> int:
    if not isinstance(items, list | tuple):
        return 0
    return sum(len(x) for x in items if isinstance(x, str)) + len(sep if isinstance(sep, str) else "") * len(items)


def _replaced_size(text: Any, old: Any, new: Any) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    count = text.count(old) if old else len(text) + 1
    return len(text) + count * len(new)


def _expected_size(name: str, owner: Any, args: tuple[Any, ...]) -> int:
    """The size a string method will produce, for the ones that can build more than they are given."""
    if not isinstance(owner, str | bytes):
        return 0
    if name == "join":
        return _joined_size(owner, args[0] if args else None)
    if name == "replace":
        return _replaced_size(owner, *(args[:2] if len(args) >= 2 else ("", "")))
    if name == "expandtabs" and isinstance(owner, str):
        return len(owner) + owner.count("\t") * _int_args(args)
    if name in ("format", "format_map"):
        return _formatted_size(owner, [*args, *(args[0].values() if name == "format_map" and args
                                                and isinstance(args[0], dict) else [])])
    if name in _PADDING:
        return _int_args(args)
    return 0


# filters whose arguments set the size of what they build, and how big it will be
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80, *_: _int_args([width]),
    "indent": lambda value, width=4, *_, **__: (str(value).count("\n") + 1) * (
        width if isinstance(width, int) else len(width) if isinstance(width, str) else 0),
    "format": lambda value, *args, **kwargs: _formatted_size(value, [*args, *kwargs.values()]),
    "join": lambda value, d="", *_: _joined_size(d, list(value) if isinstance(value, range) else value),
    "replace": lambda value, old="", new="", *_: _replaced_size(value, old, new),
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the budget's checks: deadline before, size before (if known) and after."""
    estimate = _FILTER_SIZES.get(name)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.check()
        if estimate is not None:
            value_args = [a for a in args if not isinstance(a, jinja2.runtime.Context | nodes.EvalContext)]
            try:
                budget.size(estimate(*value_args, **kwargs), f"the result of the filter '{name}'")
            except TypeError:
                pass  # wrong arguments: the filter itself says so
        return _count(func(*args, **kwargs))

    guarded.__dict__.update(getattr(func, "__dict__", {}))  # jinja's pass_context/pass_eval_context marks
    guarded.__wrapped__ = func  # type: ignore[attr-defined]
    return guarded


class _GuardedFilters(dict):
    """The environment's filters, each handed out with the budget's checks (plugins' filters too)."""

    def __getitem__(self, name: str) -> Any:
        func = super().__getitem__(name)
        return func if name in (_LOOP, _SIZED) else _guard_filter(name, func)

    def get(self, name: str, default: Any = None) -> Any:  # the optimizer folds constant filters with get()
        return self[name] if name in self else default


_LOOP = "hotfolder_budget_loop"
_SIZED = "hotfolder_budget_size"


def _loop(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one deadline check per iteration."""
    budget = current()
    for item in iterable:  # a StrictUndefined raises here, naming the variable
        budget.check()
        yield item


def _range(*args: int) -> range:
    """``range`` for templates: no more items than ``max_render_size`` (Jinja's sandbox allows 100000)."""
    numbers = range(*args)
    current().size(len(numbers), f"range{args!r}", "items")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002 - Jinja's names
    current().size(_int_args([n]) * _int_args([max]) * 12, "lorem ipsum")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


class _Guard(jinja2.visitor.NodeTransformer):
    """Puts the budget into a template's syntax tree: every loop's iterable through :func:`_loop`, every
    ``~`` concatenation through a size check."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - Jinja's visitor naming
        self.generic_visit(node)
        if not (isinstance(node.iter, nodes.Filter) and node.iter.name == _LOOP):  # a tree compiled twice
            node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:  # noqa: N802
        if node.name == _SIZED and isinstance(node.node, nodes.Concat):  # already guarded
            self.generic_visit(node.node)
            return node
        self.generic_visit(node)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return nodes.Filter(node, _SIZED, [], [], None, None, lineno=node.lineno)


class BudgetedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the render budget of the job being rendered on this thread."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = _GuardedFilters(self.filters)
        self.filters[_LOOP] = _loop
        self.filters[_SIZED] = _count
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        return super()._generate(_Guard().visit(source), name, filename, defer_init=defer_init)

    def concat(self, pieces: Iterable[str]) -> str:
        """The output of a template, a macro or a block, checked piece by piece as it is joined."""
        budget = current()
        out: list[str] = []
        append, size, limit = out.append, 0, budget.max_size
        for piece in pieces:
            size += len(piece)
            if size > limit:
                budget.size(size, "output")
            append(piece)
        return "".join(out)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        budget.check()
        budget.size(_binop_size(operator, left, right), f"the result of '{operator}'")
        return _count(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        budget = current()
        budget.check()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if isinstance(method, types.BuiltinMethodType | types.BuiltinFunctionType):
            owner = getattr(method, "__self__", None)
            if isinstance(owner, str | bytes):
                budget.size(_expected_size(method.__name__, owner, (*args, *kwargs.values())),
                            f"the result of .{method.__name__}()")
        return _count(super().call(__context, __obj, *args, **kwargs))


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """How big ``left <operator> right`` will be, for the operators that can make a value huge."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int):
                return len(seq) * max(n, 0)
        if _whole(left) and _whole(right):
            _check_digits((abs(left).bit_length() + abs(right).bit_length()) * math.log10(2))
    elif operator == "+":
        return _length(left) + _length(right) if type(left) is type(right) else 0
    elif operator == "**":
        if _whole(left) and _whole(right) and right > 0 and abs(left) > 1:
            _check_digits(right * math.log10(abs(left)))
    elif operator == "%":
        if isinstance(left, str):
            return _formatted_size(left, right if isinstance(right, tuple) else (right,))
    return 0


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_digits(digits: float) -> None:
    if digits > MAX_DIGITS:
        budget = current()
        raise TemplateError(
            f"{_rendering(budget.where)} would compute a number of about "
            f"{digits:.0f} digits, more than the {MAX_DIGITS} a template may compute",
            hint="The scenario's values make the template compute a huge number (a power or a product): check "
                 "those values.", where={**budget.where, "limit": "MAX_DIGITS"})

