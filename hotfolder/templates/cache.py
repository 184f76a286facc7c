"""The one Jinja compile cache: every template source hotfolder compiles goes through a :class:`Compiler`.

A compiler owns a pair of environments (plain text, and ``.json.j2`` where every ``{{ }}`` is emitted as
a JSON value) and caches what it compiled, by kind and source. ``compiler_for(None)`` is hotfolder's
own pair; ``compiler_for(hooks)`` is a pair that ``hooks.prepare_jinja2_environment`` prepared, made on
first use and kept while ``hooks`` lives (a plugin filter is resolved at compile time, so compiled
sources cannot be shared between the two).
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any, Protocol

import jinja2
import jinja2.sandbox
from markupsafe import Markup

from hotfolder import budgets

#: How many compiled sources a compiler keeps per kind before it starts again (whole ``.json.j2``
#: templates are large, the strings of ``.json`` templates small and many).
MAX_CACHED = {"text": 4096, "expression": 4096, "whole": 64}


class EnvironmentHooks(Protocol):
    """What a compiler needs from the plugin system (:class:`hotfolder.plugins.Hooks` provides it)."""

    def prepare_jinja2_environment(self, *, env: jinja2.Environment) -> None: ...


class NotJSONError(Exception):
    """A rendered value that JSON cannot hold (``value`` is it)."""

    def __init__(self, value: Any) -> None:
        super().__init__(type(value).__name__)
        self.value = value


def make_environment(*, json_output: bool = False) -> jinja2.sandbox.SandboxedEnvironment:
    """Return a new strict, sandboxed Jinja environment as hotfolder renders with.

    With ``json_output=True`` every ``{{ ... }}`` is emitted as a JSON value (the ``.json.j2`` mode).
    """
    return budgets.BudgetedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_emit_json if json_output else None,
    )


def _emit_json(value: Any) -> str:
    """``finalize`` of the ``.json.j2`` environment: every ``{{ }}`` becomes a JSON value."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the variable
    if isinstance(value, Markup):
        return str(value)  # already JSON text (| tojson)
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise NotJSONError(value) from err


class Compiler:
    """Compiles template sources in one pair of environments and keeps what it compiled.

    ``hooks=None`` uses hotfolder's own environments; otherwise they are made on first use and passed
    to ``hooks.prepare_jinja2_environment``. Thread-safe.
    """

    def __init__(self, hooks: EnvironmentHooks | None) -> None:
        self._hooks = hooks
        self._envs: dict[bool, jinja2.sandbox.SandboxedEnvironment] = {}
        self._cache: dict[str, dict[str, Any]] = {kind: {} for kind in MAX_CACHED}
        self._lock = threading.RLock()

    def env(self, *, json_output: bool) -> jinja2.sandbox.SandboxedEnvironment:
        """The environment for ``.json.j2`` templates (``json_output``) or for strings and expressions."""
        env = self._envs.get(json_output)
        if env is not None:
            return env
        with self._lock:
            env = self._envs.get(json_output)
            if env is None:
                env = make_environment(json_output=json_output)
                if self._hooks is not None:
                    self._hooks.prepare_jinja2_environment(env=env)
                self._envs[json_output] = env
            return env

    def text(self, source: str) -> jinja2.Template:
        """A Jinja string of a ``.json`` template, compiled to render as text."""
        return self._cached("text", source, lambda: self.env(json_output=False).from_string(source))

    def expression(self, expression: str) -> Any:
        """One ``{{ expression }}`` of a ``.json`` template, compiled to give its value with its type."""
        return self._cached(
            "expression", expression,
            lambda: self.env(json_output=False).compile_expression(expression, undefined_to_none=False),
        )

    def whole(self, source: str) -> jinja2.Template:
        """A whole ``.json.j2`` template, compiled to render JSON text."""
        return self._cached("whole", source, lambda: self.env(json_output=True).from_string(source))

    def _cached(self, kind: str, source: str, make: Any) -> Any:
        cache = self._cache[kind]
        found = cache.get(source)
        if found is not None:
            return found
        with self._lock:
            found = cache.get(source)
            if found is None:
                found = make()
                if len(cache) >= MAX_CACHED[kind]:
                    cache.clear()
                cache[source] = found
            return found


DEFAULT = Compiler(None)
_COMPILERS: weakref.WeakKeyDictionary[Any, Compiler] = weakref.WeakKeyDictionary()
_COMPILERS_LOCK = threading.Lock()


def compiler_for(hooks: EnvironmentHooks | None) -> Compiler:
    """The compiler of ``hooks`` (made on first use), or :data:`DEFAULT` for ``None``."""
    if hooks is None:
        return DEFAULT
    with _COMPILERS_LOCK:
        try:
            compiler = _COMPILERS.get(hooks)
            if compiler is None:
                compiler = _COMPILERS[hooks] = Compiler(hooks)
        except TypeError:  # not weak-referenceable: no caching across calls
            compiler = Compiler(hooks)
    return compiler
