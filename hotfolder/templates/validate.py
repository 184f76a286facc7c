"""Check an API-format workflow against a server's ``/object_info`` before anything is queued.

:func:`validate_workflow` finds what ComfyUI's ``POST /prompt`` validation would refuse (ComfyUI
0.3.64 ``execution.validate_inputs``; PROTOCOL.md §1-§2), and says it in terms a user can act on:

* a node whose ``class_type`` the server does not have (with the closest class names);
* no output node at all (ComfyUI: ``prompt_no_outputs``);
* a required input that is missing;
* a literal that ComfyUI cannot convert: ``int()`` for INT, ``float()`` for FLOAT (so ``"128"``
  and ``64.7`` pass for INT, exactly as ComfyUI accepts them; ``"abc"`` does not), ``str()`` for
  STRING and ``bool()`` for BOOLEAN (these never fail);
* a literal below ``min`` or above ``max`` (links are not range-checked, as in ComfyUI);
* a combo value that is not one of the choices, for both combo formats
  (``[["a", "b"], {...}]`` and ``["COMBO", {"options": [...]}]``, also ``multiselect`` lists; a
  ``remote`` combo, whose choices the browser fetches, is not checked), with the closest valid choices;
* the V3 inputs of newer servers (:func:`hotfolder.templates.nodes.expanded_inputs`): a DynamicCombo
  value must be one of its option keys, and the chosen option's inputs (``<input>.<sub>``) are
  checked like any other; an Autogrow input is its entries (``<input>.<entry>``), the first ``min``
  of them required;
* a link (``["4", 0]``) that is not ``[node_id, slot]``, names a node that is not in the workflow,
  a slot the node does not have, or an output whose type does not fit the input (``*`` fits
  anything; a combo output, whose type is a list of choices, fits a combo input);
* a dependency cycle.

A node whose class the server does not list but replaces on submit (ComfyUI 0.4x's deprecated-node
replacement, ``replacements`` from ``GET /node_replacements``) is checked as the server will run it: a
copy rewritten as ``NodeReplaceManager.apply_replacements`` does (app/node_replace_manager.py@b5d74ccb),
against the new class; the workflow sent stays as written.

Like ComfyUI, only nodes that an output node depends on are checked (a stray node cannot make the
server refuse the prompt); unknown classes are reported for every node, since ComfyUI refuses the
whole prompt for any of them. Unlike ComfyUI, every problem is reported, not only those of the first
failing input of each node, and an input that the node does not declare is reported when a scenario
field set it (a typo such as ``set: {KSampler.step: 30}`` would otherwise do nothing).

Each :class:`~hotfolder.templates.problems.Problem` names the node id, title (``_meta.title``), class_type,
input, value, a message, suggestions and, when ``scenario_fields`` maps ``"<node_id>.<input>"`` to the
scenario field that set it (``"params.checkpoint"``, ``"set.KSampler.cfg"``), that field
(:func:`hotfolder.templates.params.scenario_fields` builds that map).
:class:`~hotfolder.templates.problems.ValidationError` turns a problem list into a readable error.
:func:`validate_with_refresh` checks against a server's cached ``/object_info``
(:class:`hotfolder.comfy.object_info.ObjectInfoCache`) and re-checks once with fresh data when a
problem might be caused by stale data (a model or input file added since the last fetch).

Checks that need the server's Python code are out of reach: custom ``VALIDATE_INPUTS`` functions
(apart from the image-file check of LoadImage-like nodes, approximated by the upload choices) and
whether a model file actually loads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hotfolder.templates.nodes import (
    DYNAMIC_COMBO,
    MODEL_FOLDER,
    UPLOAD_FLAGS,
    closest,
    combo_choices,
    dynamic_keys,
    expanded_inputs,
    is_file_choice,
    is_link,
    types_match,
)
from hotfolder.templates.problems import (
    ABOVE_MAX,
    BAD_LINK,
    BELOW_MIN,
    CYCLE,
    ERROR,
    INVALID_VALUE,
    LINK_BAD_SLOT,
    LINK_MISSING_NODE,
    LINK_TYPE_MISMATCH,
    LITERAL_FOR_LINK,
    LOSSY_NUMBER,
    MALFORMED_NODE,
    MISSING_INPUT,
    NO_OUTPUTS,
    NOT_A_WORKFLOW,
    NOT_IN_LIST,
    STALE_KINDS,
    STRING_AS_BOOLEAN,
    UNKNOWN_CLASS,
    UNKNOWN_INPUT,
    WARNING,
    Problem,
    show_value,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hotfolder.comfy.object_info import NodeReplacement, ObjectInfoCache

logger = logging.getLogger(__name__)

#: Input types the server converts from literals, as ComfyUI does (``int(v)`` etc.).
_CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
_ANNOTATION = re.compile(r"\s*\[(input|output|temp)\]$")

#: How many choices a message lists when nothing is close.
_LIST_FEW = 8


def validate_workflow(
    workflow: Any,
    object_info: Mapping[str, Any],
    *,
    scenario_fields: Mapping[str, str] | None = None,
    known_files: Collection[str] = (),
    warnings: bool = False,
    replacements: Mapping[str, NodeReplacement] | None = None,
) -> list[Problem]:
    """Return the problems ComfyUI would refuse ``workflow`` for (empty list: it would be accepted).

    ``object_info`` is the server's ``/object_info``. ``scenario_fields`` maps ``"<node_id>.<input>"``
    to the scenario field that set that input; each problem at such an address carries the field.
    ``known_files`` are file names known to exist on the server although ``object_info`` may not list
    them yet (files just uploaded): a file choice with such a value is accepted. With
    ``warnings=True`` the result also holds warnings (``severity == "warning"``): values ComfyUI
    accepts but that are probably mistakes (``64.7`` for an INT is truncated to ``64``; the string
    ``"false"`` for a BOOLEAN is true; a literal where the input expects a link). ``replacements``
    are the server's deprecated-node replacements by old class
    (:meth:`hotfolder.comfy.object_info.ObjectInfoCache.replacements`).

    Neither argument is changed. Problems are ordered by node id, then input order.
    """
    return _check(workflow, object_info, scenario_fields, known_files, warnings, replacements)[0]


def _check(workflow: Any, object_info: Mapping[str, Any], fields: Mapping[str, str] | None,
           known_files: Collection[str], warnings: bool, replacements: Mapping[str, NodeReplacement] | None,
           ) -> tuple[list[Problem], dict[str, NodeReplacement]]:
    """:func:`validate_workflow`'s problems and the nodes the server replaces (by node id)."""
    validator = _Validator(object_info, fields or {}, frozenset(known_files), warnings, replacements or {})
    return validator.run(workflow), validator.replaced


class _Validator:
    def __init__(
        self,
        object_info: Mapping[str, Any],
        fields: Mapping[str, str],
        known_files: frozenset[str],
        warnings: bool,
        replacements: Mapping[str, NodeReplacement],
    ) -> None:
        self.info = object_info
        self.fields = fields
        self.known_files = known_files
        self.warnings = warnings
        self.replacements = replacements
        self.replaced: dict[str, NodeReplacement] = {}  # node id -> what the server replaces it by
        self.origins: dict[tuple[str, str], str] = {}  # (node id, new input) -> the old input it comes from
        self.unmapped: dict[tuple[str, str], str] = {}  # (node id, new input) -> its old input, which is missing
        self.problems: list[Problem] = []
        self.workflow: Mapping[str, Any] = {}

    # ---- helpers

    def _add(
        self,
        kind: str,
        message: str,
        node_id: str | None = None,
        input_name: str | None = None,
        value: Any = None,
        suggestions: Iterable[Any] = (),
        severity: str = ERROR,
    ) -> None:
        if severity == WARNING and not self.warnings:
            return
        node = self.workflow.get(node_id) if node_id is not None else None
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        if node_id in self.replaced:
            message += self._replaced_note(node_id, input_name)
        field_name = self.fields.get(f"{node_id}.{input_name}") if node_id is not None and input_name else None
        self.problems.append(
            Problem(
                kind=kind,
                message=message,
                node=node_id,
                class_type=class_type if isinstance(class_type, str) else None,
                title=_title(node),
                input=input_name,
                value=value,
                suggestions=tuple(suggestions),
                field=field_name,
                severity=severity,
            )
        )

    def _replaced_note(self, node_id: str, input_name: str | None) -> str:
        replacement = self.replaced[node_id]
        note = f" (ComfyUI replaces the deprecated {replacement.old_class} by {replacement.new_class} on submit"
        origin = self.origins.get((node_id, input_name or ""))
        return note + (f", {input_name} taken from {origin})" if origin else ")")

    def _class_info(self, node_id: str) -> Mapping[str, Any] | None:
        node = self.workflow.get(node_id)
        if not isinstance(node, Mapping):
            return None
        info = self.info.get(node.get("class_type"))  # type: ignore[arg-type]
        return info if isinstance(info, Mapping) else None

    # ---- the walk

    def run(self, workflow: Any) -> list[Problem]:
        if not isinstance(workflow, Mapping) or not workflow:
            what = "an empty workflow" if isinstance(workflow, Mapping) else f"a {type(workflow).__name__}"
            self._add(NOT_A_WORKFLOW, f"this is {what}, not an API workflow (an object of nodes)", value=None)
            return self.problems
        if isinstance(workflow.get("nodes"), list) and "links" in workflow:
            self._add(
                NOT_A_WORKFLOW,
                "this is a ComfyUI UI workflow (nodes/links), not API format; convert it first",
            )
            return self.problems
        self.workflow = {str(k): v for k, v in workflow.items()}
        if self.replacements:
            self._replace()
        good: list[str] = []
        outputs: list[str] = []
        for node_id in _sorted_ids(self.workflow):
            node = self.workflow[node_id]
            if not isinstance(node, Mapping):
                self._add(MALFORMED_NODE, f"is a JSON {type(node).__name__}, not a node object", node_id)
                continue
            class_type = node.get("class_type")
            if not isinstance(class_type, str):
                self._add(MALFORMED_NODE, "has no 'class_type' string", node_id)
                continue
            if not isinstance(node.get("inputs"), Mapping):
                self._add(MALFORMED_NODE, "has no 'inputs' object", node_id)
                continue
            info = self.info.get(class_type)
            if not isinstance(info, Mapping):
                self._add(
                    UNKNOWN_CLASS,
                    f"class_type {class_type!r} is not a node type this server has",
                    node_id,
                    value=class_type,
                    suggestions=closest(class_type, [k for k in self.info if isinstance(k, str)]),
                )
                continue
            good.append(node_id)
            if info.get("output_node") is True:
                outputs.append(node_id)
        if not outputs:
            self._add(
                NO_OUTPUTS,
                "the workflow has no output node (SaveImage, PreviewImage, ...), so ComfyUI has nothing to run",
            )
            checked = good
        else:
            checked = [n for n in _sorted_ids(self._reachable(outputs)) if n in set(good)]
        for node_id in checked:
            self._check_node(node_id)
        self._check_cycles(checked)
        return self.problems

    def _replace(self) -> None:
        """Check the nodes the server replaces as it will run them: copies rewritten as ComfyUI's
        ``apply_replacements`` does (the new class, only the mapped inputs, links from them renumbered).
        A mapped input the node lacks (ComfyUI fails with HTTP 500) and a scenario field setting an input
        the replacement drops are reported."""
        nodes = [(node_id, node) for node_id, node in self.workflow.items()
                 if isinstance(node, Mapping) and isinstance(node.get("inputs"), Mapping)]
        for node_id, node in nodes if self.replacements else ():
            class_type = node.get("class_type")
            replacement = self.replacements.get(class_type) if isinstance(class_type, str) else None
            if (replacement is not None and not isinstance(self.info.get(class_type), Mapping)  # type: ignore[arg-type]
                    and isinstance(self.info.get(replacement.new_class), Mapping)):
                self.replaced[node_id] = replacement
        if not self.replaced:
            return  # the usual case: the links are mapped only when a node is replaced
        links: dict[str, list[tuple[str, str, Any]]] = {}
        for node_id, node in nodes:
            for name, value in node["inputs"].items():
                if is_link(value):
                    links.setdefault(value[0], []).append((node_id, name, value[1]))
        workflow = dict(self.workflow)
        for node_id, replacement in self.replaced.items():
            for target, name, slot in links.get(node_id, []) if replacement.outputs is not None else []:
                moved = [new for old, new in replacement.outputs or () if old == slot]
                if moved:
                    inputs = {**workflow[target]["inputs"], name: [node_id, moved[-1]]}
                    workflow[target] = {**workflow[target], "inputs": inputs}
        fields, dropped = dict(self.fields), []
        for node_id, replacement in self.replaced.items():
            old, inputs = workflow[node_id], {}
            for new_input, how, value in replacement.inputs:
                if how == "set_value":
                    inputs[new_input] = value
                elif value in old["inputs"]:
                    inputs[new_input] = old["inputs"][value]
                    self.origins[(node_id, new_input)] = value
                    if f"{node_id}.{value}" in self.fields:
                        fields[f"{node_id}.{new_input}"] = self.fields[f"{node_id}.{value}"]
                else:
                    self.unmapped[(node_id, new_input)] = value
            workflow[node_id] = {**old, "class_type": replacement.new_class, "inputs": inputs}
            taken = {value for _, how, value in replacement.inputs if how == "old_id"}
            dropped += [(node_id, name, value) for name, value in old["inputs"].items() if name not in taken]
        self.workflow, self.fields = workflow, fields
        for (node_id, new_input), old_input in sorted(self.unmapped.items()):
            self._add(MISSING_INPUT, f"is taken from input {old_input!r}, which the node does not have "
                      "(ComfyUI fails with HTTP 500)", node_id, new_input)
        for node_id, name, value in dropped:
            if f"{node_id}.{name}" in fields:
                self._add(UNKNOWN_INPUT, f"input {name!r} is dropped when the node is replaced, so the value "
                          "set here is ignored", node_id, name, value)

    def _reachable(self, outputs: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(outputs)
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = self.workflow.get(node_id)
            inputs = node.get("inputs") if isinstance(node, Mapping) else None
            if not isinstance(inputs, Mapping):
                continue
            for value in inputs.values():
                target = _link_target(value)
                if target is not None and target in self.workflow:
                    stack.append(target)
        return seen

    def _check_node(self, node_id: str) -> None:
        node = self.workflow[node_id]
        inputs: Mapping[str, Any] = node["inputs"]
        info = self._class_info(node_id)
        assert info is not None
        class_type = node["class_type"]
        declared = expanded_inputs(info, {k: _plain(v) for k, v in inputs.items()})
        for name, category, input_type, options in declared:
            if name not in inputs:
                if category == "required" and (node_id, name) not in self.unmapped:
                    self._add(
                        MISSING_INPUT,
                        f"required input {name!r} ({_type_name(input_type)}) is missing",
                        node_id,
                        name,
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                self._check_link(node_id, name, value, input_type)
            else:
                self._check_literal(node_id, class_type, name, value, input_type, options)
        known = {name for name, *_ in declared}
        hidden = info.get("input", {}).get("hidden") if isinstance(info.get("input"), Mapping) else None
        if isinstance(hidden, Mapping):
            known.update(hidden)
        for name in inputs:
            if name in known or f"{node_id}.{name}" not in self.fields:
                continue
            self._add(
                UNKNOWN_INPUT,
                f"{class_type} has no input {name!r}, so the value set here is ignored",
                node_id,
                name,
                inputs[name],
                suggestions=closest(name, sorted(known)),
            )

    def _check_link(self, node_id: str, name: str, value: list[Any], input_type: Any) -> None:
        if len(value) != 2:
            self._add(BAD_LINK, f"a link must be [node_id, output_slot], got {show_value(value)}", node_id, name, value)
            return
        target, slot = value
        if not isinstance(target, str) or target not in self.workflow:
            ids = list(self.workflow)
            if not isinstance(target, str) and str(target) in self.workflow:
                message = f"links to node {target!r}, a {type(target).__name__}; node ids are strings: {str(target)!r}"
                suggestions: list[Any] = [[str(target), slot]]
            else:
                message = f"links to node {target!r}, which is not in the workflow"
                suggestions = closest(str(target), ids)
            self._add(LINK_MISSING_NODE, message, node_id, name, value, suggestions)
            return
        origin = self._class_info(target)
        if origin is None:
            return  # the origin node's own problem (unknown class, malformed) is reported already
        declared = origin.get("output")
        outputs: list[Any] = list(declared) if isinstance(declared, (list, tuple)) else []
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(outputs):
            output_names = origin.get("output_name")
            names: list[Any] = output_names if isinstance(output_names, list) else outputs
            listing = ", ".join(f"{i} ({n})" for i, n in enumerate(names)) or "none"
            self._add(
                LINK_BAD_SLOT,
                f"links to output {slot!r} of node {target} ({self.workflow[target]['class_type']}), "
                f"which has outputs {listing}",
                node_id,
                name,
                value,
            )
            return
        received = outputs[slot]
        if not types_match(received, input_type):
            self._add(
                LINK_TYPE_MISMATCH,
                f"expects {_type_name(input_type)} but is linked to output {slot} of node {target} "
                f"({self.workflow[target]['class_type']}), which gives {_type_name(received)}",
                node_id,
                name,
                value,
            )

    def _check_literal(
        self, node_id: str, class_type: str, name: str, value: Any, input_type: Any, options: Mapping[str, Any]
    ) -> None:
        raw = value
        if isinstance(value, Mapping) and "__value__" in value:
            value = value["__value__"]
        converter = _CONVERTERS.get(input_type) if isinstance(input_type, str) else None
        if converter is not None:
            try:
                converted = converter(value)
            except Exception as err:  # noqa: BLE001 - ComfyUI reports any conversion failure
                self._add(
                    INVALID_VALUE,
                    f"{show_value(value)} is not a valid {input_type} (ComfyUI converts it with "
                    f"{converter.__name__}(): {err})",
                    node_id,
                    name,
                    raw,
                )
                return
            if input_type == "INT" and isinstance(value, float) and converted != value:
                self._add(
                    LOSSY_NUMBER,
                    f"{value!r} is not a whole number; ComfyUI truncates it to {converted}",
                    node_id,
                    name,
                    raw,
                    severity=WARNING,
                )
            if input_type == "BOOLEAN" and isinstance(value, str):
                self._add(
                    STRING_AS_BOOLEAN,
                    f"the string {value!r} is {converted} for ComfyUI (any non-empty string is true); "
                    "use true or false without quotes",
                    node_id,
                    name,
                    raw,
                    severity=WARNING,
                )
            value = converted
        elif isinstance(input_type, str) and _plain_type(input_type) and value is not None:
            self._add(
                LITERAL_FOR_LINK,
                f'expects a {input_type} from another node\'s output (a link like ["4", 0]), '
                f"got the literal {show_value(value)}",
                node_id,
                name,
                raw,
                severity=WARNING,
            )
        if "min" in options and _less(value, options["min"]):
            self._add(
                BELOW_MIN,
                f"{show_value(value)} is below the minimum {options['min']}",
                node_id,
                name,
                raw,
                suggestions=[options["min"]],
            )
            return
        if "max" in options and _less(options["max"], value):
            self._add(
                ABOVE_MAX,
                f"{show_value(value)} is above the maximum {options['max']}",
                node_id,
                name,
                raw,
                suggestions=[options["max"]],
            )
            return
        choices = dynamic_keys(options) if input_type == DYNAMIC_COMBO else combo_choices(input_type, options)
        if choices is None or options.get("remote"):
            return
        values = list(value) if options.get("multiselect") and isinstance(value, list) else [value]
        invalid = [v for v in values if not _in_choices(v, choices)]
        if not invalid:
            return
        file_choice = is_file_choice(class_type, name, input_type, options)
        if file_choice:
            invalid = [v for v in invalid if not self._known_file(v, options)]
            if not invalid:
                return
        bad = invalid[0]
        suggestions = closest(bad, choices, files=file_choice) if isinstance(bad, str) else []
        if not choices:
            folder = MODEL_FOLDER.get((class_type, name))
            where = f" (is its models/{folder} folder empty?)" if folder else ""
            message = f"{show_value(bad)} is not available: the server lists no choices for {name}{where}"
        else:
            count = f"the server's {len(choices)} choice" + ("" if len(choices) == 1 else "s")
            message = f"{show_value(bad)} is not one of {count}"
            if not suggestions and len(choices) <= _LIST_FEW:
                message += ": " + ", ".join(show_value(c) for c in choices)
            elif not suggestions and file_choice:
                message += " (none is close; check the file name and that it is on this server)"
        self._add(NOT_IN_LIST, message, node_id, name, raw, suggestions)

    def _known_file(self, value: Any, options: Mapping[str, Any]) -> bool:
        if not isinstance(value, str):
            return False
        if value in self.known_files or _ANNOTATION.sub("", value) in self.known_files:
            return True
        # "sub/x.png" and "x.png [output]" are valid LoadImage values the choice list does not show;
        # only ComfyUI's own file check can tell, so they are not reported here.
        uploadable = any(options.get(flag) for flag in UPLOAD_FLAGS)
        return uploadable and (bool(_ANNOTATION.search(value)) or "/" in value)

    def _check_cycles(self, node_ids: list[str]) -> None:
        allowed = set(node_ids)
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        for start in node_ids:
            if start in state:
                continue
            stack: list[tuple[str, list[str]]] = [(start, self._parents(start, allowed))]
            state[start] = 1
            while stack:
                node_id, parents = stack[-1]
                if not parents:
                    state[node_id] = 2
                    stack.pop()
                    continue
                parent = parents.pop()
                if state.get(parent) == 1:
                    path = [n for n, _ in stack]
                    loop = [*path[path.index(parent) :], parent]
                    self._add(
                        CYCLE,
                        "nodes depend on each other in a loop: " + " -> ".join(loop),
                        parent,
                        value=loop,
                    )
                    return
                if parent not in state:
                    state[parent] = 1
                    stack.append((parent, self._parents(parent, allowed)))

    def _parents(self, node_id: str, allowed: set[str]) -> list[str]:
        inputs = self.workflow[node_id].get("inputs", {})
        found = [_link_target(v) for v in inputs.values()]
        return [p for p in found if p is not None and p in allowed]



def _plain_type(kind: str) -> bool:
    """Types that are only ever produced by nodes (so a literal for them is almost surely a mistake)."""
    return kind in {
        "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "CONTROL_NET", "CLIP_VISION",
        "CLIP_VISION_OUTPUT", "STYLE_MODEL", "UPSCALE_MODEL", "GLIGEN", "SAMPLER", "SIGMAS", "NOISE",
        "GUIDER", "AUDIO", "VIDEO",
    }  # fmt: skip


def _plain(value: Any) -> Any:
    return value["__value__"] if isinstance(value, Mapping) and "__value__" in value else value


def _link_target(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return value[0]
    return None


def _less(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return False


def _in_choices(value: Any, choices: list[Any]) -> bool:
    try:
        return value in choices
    except TypeError:
        return False


def _title(node: Any) -> str | None:
    if not isinstance(node, Mapping):
        return None
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else None


def _type_name(kind: Any) -> str:
    if isinstance(kind, (list, tuple)):
        return f"a choice of {len(kind)}"
    return str(kind)



def _sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda node_id: (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id))


def validate_with_refresh(
    cache: ObjectInfoCache,
    workflow: Any,
    *,
    scenario_fields: Mapping[str, str] | None = None,
    known_files: Collection[str] = (),
    warnings: bool = False,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
    info: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """:func:`validate_workflow` against ``cache``'s server, re-checking once with a fresh copy when needed.

    If the cached copy finds errors that a newer one could resolve (a choice not in the list, an
    unknown class: a model or custom node added since) and the copy is at least
    ``cache.min_refresh_interval`` seconds old, the copy is refreshed and the workflow checked again.
    A failed refresh keeps the first result. What ``cache.get()`` raises is passed on. Nodes the server
    replaces on submit (``cache.replacements()``) are checked as replaced; when the workflow passes,
    one info line on ``log`` names them. ``info``: the copy the caller already read from ``cache``.
    """
    info = cache.get() if info is None else info
    problems, replaced = _check(workflow, info, scenario_fields, known_files, warnings, cache.replacements())
    if any(p.severity == ERROR and p.kind in STALE_KINDS for p in problems):
        age = cache.age()
        try:
            fresh = None if age is not None and age < cache.min_refresh_interval else cache.refresh()
        except Exception as err:  # noqa: BLE001 - the first result stands
            logger.warning("Could not refresh /object_info to re-check a workflow: %s", err)
            fresh = None
        if fresh is not None and fresh is not info:
            problems, replaced = _check(workflow, fresh, scenario_fields, known_files, warnings, cache.replacements())
    if replaced and not any(p.severity == ERROR for p in problems):
        log.info("ComfyUI%s replaces deprecated nodes on submit (the workflow is sent as written): %s",
                 f" at {cache.name}" if cache.name else "",
                 "; ".join(f"node {node_id} {r.old_class} -> {r.new_class}" for node_id, r in replaced.items()))
    return problems
