"""What the validator finds: :class:`Problem` (one thing ComfyUI would refuse, or a probable mistake), its
kinds, and :class:`ValidationError`, the readable error a list of problems becomes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hotfolder.errors import TemplateError
from hotfolder.templates.nodes import MODEL_FOLDER

# Problem kinds (``Problem.kind``).
NOT_A_WORKFLOW = "not_a_workflow"
MALFORMED_NODE = "malformed_node"
UNKNOWN_CLASS = "unknown_class"
NO_OUTPUTS = "no_outputs"
MISSING_INPUT = "missing_input"
UNKNOWN_INPUT = "unknown_input"
INVALID_VALUE = "invalid_value"
BELOW_MIN = "below_min"
ABOVE_MAX = "above_max"
NOT_IN_LIST = "not_in_list"
BAD_LINK = "bad_link"
LINK_MISSING_NODE = "link_missing_node"
LINK_BAD_SLOT = "link_bad_slot"
LINK_TYPE_MISMATCH = "link_type_mismatch"
CYCLE = "cycle"
# Warnings: ComfyUI accepts these, but they rarely mean what the author intended.
LOSSY_NUMBER = "lossy_number"
STRING_AS_BOOLEAN = "string_as_boolean"
LITERAL_FOR_LINK = "literal_for_link"

ERROR = "error"
WARNING = "warning"

#: Kinds that a fresher ``/object_info`` may resolve (a file or model added since the last fetch).
STALE_KINDS = frozenset({NOT_IN_LIST, UNKNOWN_CLASS})


@dataclass(frozen=True)
class Problem:
    """One thing ComfyUI would refuse (``severity == "error"``) or that is probably a mistake (``"warning"``).

    ``node`` is the node id (``None`` for a problem with the whole workflow), ``title`` its
    ``_meta.title``, ``input`` the input name, ``value`` the offending value (a literal or a link),
    ``suggestions`` the closest valid values, ``field`` the scenario field that set the input (from
    ``scenario_fields``), ``kind`` one of the module's kind constants.
    """

    kind: str
    message: str
    node: str | None = None
    class_type: str | None = None
    title: str | None = None
    input: str | None = None
    value: Any = None
    suggestions: tuple[Any, ...] = ()
    field: str | None = None
    severity: str = ERROR

    @property
    def address(self) -> str | None:
        """``"<node>.<input>"``, the address ``set:`` and sidecars use, or ``None``."""
        if self.node is None or self.input is None:
            return None
        return f"{self.node}.{self.input}"

    def where(self) -> str:
        """Where the problem is: ``node 4 "Load Checkpoint" (CheckpointLoaderSimple), input ckpt_name``."""
        parts: list[str] = []
        if self.node is not None:
            text = f"node {self.node}"
            if self.title and self.title != self.class_type:
                text += f' "{self.title}"'
            if self.class_type:
                text += f" ({self.class_type})"
            parts.append(text)
        if self.input is not None:
            parts.append(f"input {self.input}")
        return ", ".join(parts) or "workflow"

    def describe(self) -> str:
        """One line: where, the scenario field, what is wrong and the suggestions."""
        text = self.where()
        if self.field:
            text += f" [set by {self.field}]"
        text += f": {self.message}"
        if self.suggestions:
            shown = ", ".join(show_value(s) for s in self.suggestions)
            text += f"; did you mean {shown}?"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for error files and sidecars); the value is kept if it is JSON."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "severity": self.severity,
            "node": self.node,
            "title": self.title,
            "class_type": self.class_type,
            "input": self.input,
            "field": self.field,
            "message": self.message,
        }
        try:
            json.dumps(self.value)
            out["value"] = self.value
        except (TypeError, ValueError):
            out["value"] = repr(self.value)
        if self.suggestions:
            out["suggestions"] = list(self.suggestions)
        return out


class ValidationError(TemplateError):
    """A workflow that the server would refuse; ``problems`` lists why (errors first).

    The message's first line says what failed, then one line per problem; the hint says how to fix
    it. ``details`` is ``{"problems": [...]}`` (each :meth:`Problem.to_dict`); ``where`` holds the
    caller's fields plus the first problem's ``node``, ``input`` and ``field``.
    """

    stage = "validate"

    def __init__(
        self,
        message: str,
        *,
        problems: Iterable[Problem] = (),
        hint: str | None = None,
        where: dict[str, Any] | None = None,
        details: Any = None,
    ) -> None:
        self.problems: list[Problem] = list(problems)
        if details is None:
            details = {"problems": [p.to_dict() for p in self.problems]}
        super().__init__(message, hint=hint, where=where, details=details)

    @classmethod
    def from_problems(
        cls,
        problems: Iterable[Problem],
        *,
        subject: str = "The workflow",
        server: str | None = None,
        where: dict[str, Any] | None = None,
        max_lines: int = 30,
    ) -> ValidationError:
        """Build the error for ``problems`` (warnings are listed after errors).

        ``subject`` starts the first line (``"Job 'fox-001' (template 'txt2img')"``); ``server``
        names the ComfyUI whose ``/object_info`` was used.
        """
        ordered = sorted(problems, key=lambda p: p.severity != ERROR)
        errors = [p for p in ordered if p.severity == ERROR]
        counted = errors or ordered
        noun = "problem" if len(counted) == 1 else "problems"
        against = f"ComfyUI at {server}" if server else "ComfyUI"
        head = f"{subject} would be refused by {against}: {len(counted)} {noun}"
        lines = [head]
        for problem in ordered[:max_lines]:
            prefix = "  - " if problem.severity == ERROR else "  - (warning) "
            lines.append(prefix + problem.describe())
        if len(ordered) > max_lines:
            lines.append(f"  ... and {len(ordered) - max_lines} more (see details)")
        fields = dict(where or {})
        if server:
            fields.setdefault("server", server)
        if counted:
            first = counted[0]
            for key, value in (("node", first.node), ("input", first.input), ("field", first.field)):
                if value is not None:
                    fields.setdefault(key, value)
        return cls("\n".join(lines), problems=ordered, hint=_hint_for(counted), where=fields)


def _hint_for(problems: list[Problem]) -> str:
    kinds = {p.kind for p in problems}
    hints: list[str] = []
    if any(p.field for p in problems):
        hints.append("Fix the scenario fields named in brackets, or the template defaults.")
    if NOT_IN_LIST in kinds:
        if any(p.kind == NOT_IN_LIST and p.class_type and _is_model_problem(p) for p in problems):
            hints.append(
                "A model name must be one the server lists: copy the exact file name (with its subfolder, "
                "if any) from ComfyUI's dropdown, or put the file into the server's models folder."
            )
        else:
            hints.append("Use one of the choices the server lists (the dropdown in ComfyUI).")
    if UNKNOWN_CLASS in kinds:
        hints.append(
            "A node class the server does not know usually belongs to a custom node pack that is not "
            "installed there: install it (ComfyUI-Manager) and restart ComfyUI, or remove the node."
        )
    if kinds & {LINK_MISSING_NODE, LINK_BAD_SLOT, BAD_LINK, LINK_TYPE_MISMATCH, CYCLE, MALFORMED_NODE, NO_OUTPUTS}:
        hints.append("The template's wiring is broken: re-export it from ComfyUI with 'Save (API Format)'.")
    if kinds & {INVALID_VALUE, BELOW_MIN, ABOVE_MAX, MISSING_INPUT, UNKNOWN_INPUT}:
        hints.append("Check the values against the limits shown; ComfyUI's node tooltips list them too.")
    hints.append("'hotfolder check' validates every template against the server.")
    return " ".join(hints)


def _is_model_problem(problem: Problem) -> bool:
    return (problem.class_type or "", problem.input or "") in MODEL_FOLDER or bool(
        problem.input and problem.input.endswith("_name")
    )



def show_value(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


