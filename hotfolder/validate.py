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
  (``[["a", "b"], {...}]`` and ``["COMBO", {"options": [...]}]``), with the closest valid choices;
* a link (``["4", 0]``) that is not ``[node_id, slot]``, names a node that is not in the workflow,
  a slot the node does not have, or an output whose type does not fit the input (``*`` fits
  anything; a combo output, whose type is a list of choices, fits a combo input);
* a dependency cycle.

Like ComfyUI, only nodes that an output node depends on are checked (a stray node cannot make the
server refuse the prompt); unknown classes are reported for every node, since ComfyUI refuses the
whole prompt for any of them. Unlike ComfyUI, every problem is reported, not only those of the first
failing input of each node, and an input that the node does not declare is reported when a scenario
field set it (a typo such as ``set: {KSampler.step: 30}`` would otherwise do nothing).

Each :class:`Problem` names the node id, title (``_meta.title``), class_type, input, value, a message,
suggestions and, when ``scenario_fields`` maps ``"<node_id>.<input>"`` to the scenario field that set
it (``"params.checkpoint"``, ``"set.KSampler.cfg"``), that field. :func:`scenario_fields` builds that
map for a rendered template and job. :class:`ValidationError` turns a problem list into a
:class:`~hotfolder.errors.TemplateError` with a readable multi-line message.

:class:`ObjectInfoCache` fetches ``/object_info`` through a callable, caches it, refreshes it when
it is older than ``max_age`` or when asked, and re-checks once with fresh data when a problem might
be caused by stale data (a model or input file added since the last fetch).

:func:`models_in` and :func:`models_used` list the model files a server offers and a workflow needs,
for routing jobs to servers that have their models.

Checks that need the server's Python code are out of reach: custom ``VALIDATE_INPUTS`` functions
(apart from the image-file check of LoadImage-like nodes, approximated by the upload choices) and
whether a model file actually loads.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotfolder.errors import AddressError, TemplateError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hotfolder.spec import JobSpec
    from hotfolder.stages.render import Template

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_INPUTS",
    "ObjectInfoCache",
    "Problem",
    "ValidationError",
    "combo_options",
    "input_spec",
    "is_file_choice",
    "models_in",
    "models_used",
    "scenario_fields",
    "validate_workflow",
]

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

#: Input types the server converts from literals, as ComfyUI does (``int(v)`` etc.).
_CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
#: Types that hold a literal value in the UI (a widget); anything else is normally linked.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: Input config flags that mark a file choice the user can upload to.
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload")

#: Model folders and the loader inputs whose choices are the files in them (``models_in``).
MODEL_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "checkpoints": (
        ("CheckpointLoaderSimple", "ckpt_name"),
        ("CheckpointLoader", "ckpt_name"),
        ("ImageOnlyCheckpointLoader", "ckpt_name"),
        ("unCLIPCheckpointLoader", "ckpt_name"),
    ),
    "loras": (("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name")),
    "vae": (("VAELoader", "vae_name"),),
    "diffusion_models": (("UNETLoader", "unet_name"),),
    "text_encoders": (
        ("CLIPLoader", "clip_name"),
        ("DualCLIPLoader", "clip_name1"),
        ("DualCLIPLoader", "clip_name2"),
        ("TripleCLIPLoader", "clip_name1"),
        ("TripleCLIPLoader", "clip_name2"),
        ("TripleCLIPLoader", "clip_name3"),
        ("QuadrupleCLIPLoader", "clip_name1"),
        ("QuadrupleCLIPLoader", "clip_name2"),
        ("QuadrupleCLIPLoader", "clip_name3"),
        ("QuadrupleCLIPLoader", "clip_name4"),
    ),
    "clip_vision": (("CLIPVisionLoader", "clip_name"),),
    "controlnet": (("ControlNetLoader", "control_net_name"), ("DiffControlNetLoader", "control_net_name")),
    "upscale_models": (("UpscaleModelLoader", "model_name"),),
    "style_models": (("StyleModelLoader", "style_model_name"),),
    "gligen": (("GLIGENLoader", "gligen_name"),),
    "hypernetworks": (("HypernetworkLoader", "hypernetwork_name"),),
    "photomaker": (("PhotoMakerLoader", "photomaker_model_name"),),
    "audio_encoders": (("AudioEncoderLoader", "audio_encoder_name"),),
    "model_patches": (("ModelPatchLoader", "name"),),
}
#: The same table keyed by ``(class_type, input)``.
_MODEL_FOLDER: dict[tuple[str, str], str] = {pair: folder for folder, pairs in MODEL_INPUTS.items() for pair in pairs}
_FILE_SUFFIX = re.compile(
    r"\.(safetensors|sft|ckpt|pt|pt2|pth|bin|gguf|onnx|yaml|json|png|jpe?g|webp|gif|bmp|tiff?|mp4|webm|mov|mkv|"
    r"avi|wav|mp3|flac|ogg|opus|m4a|glb|gltf|obj|fbx|stl|latent|txt)$",
    re.IGNORECASE,
)
_ANNOTATION = re.compile(r"\s*\[(input|output|temp)\]$")

#: How many choices a message lists when nothing is close.
_LIST_FEW = 8
_MAX_SUGGESTIONS = 5


# --------------------------------------------------------------------------------------------------
# problems


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
            shown = ", ".join(_show(s) for s in self.suggestions)
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
    return (problem.class_type or "", problem.input or "") in _MODEL_FOLDER or bool(
        problem.input and problem.input.endswith("_name")
    )


# --------------------------------------------------------------------------------------------------
# object_info helpers


def input_spec(class_info: Mapping[str, Any], name: str) -> tuple[Any, str, dict[str, Any]] | None:
    """``(type, category, options)`` of input ``name`` of one ``/object_info`` class, or ``None``.

    ``type`` is a type name (``"INT"``, ``"IMAGE"``, ``"COMBO"``) or, for a legacy combo, the list of
    choices; ``category`` is ``"required"``, ``"optional"`` or ``"hidden"``; ``options`` the config dict.
    """
    inputs = class_info.get("input")
    if not isinstance(inputs, Mapping):
        return None
    for category in ("required", "optional", "hidden"):
        group = inputs.get(category)
        if isinstance(group, Mapping) and name in group:
            config = group[name]
            if isinstance(config, (list, tuple)) and config:
                extra = config[1] if len(config) > 1 and isinstance(config[1], Mapping) else {}
                return config[0], category, dict(extra)
            return config, category, {}
    return None


def declared_inputs(class_info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(name, category)]`` of required then optional inputs, in ``input_order`` (falls back to dict order)."""
    order = class_info.get("input_order")
    inputs = class_info.get("input")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for category in ("required", "optional"):
        listed: Iterable[Any] = ()
        if isinstance(order, Mapping) and isinstance(order.get(category), list):
            listed = order[category]
        elif isinstance(inputs, Mapping) and isinstance(inputs.get(category), Mapping):
            listed = inputs[category]
        group = inputs.get(category) if isinstance(inputs, Mapping) else None
        for name in listed:
            if isinstance(name, str) and name not in seen and isinstance(group, Mapping) and name in group:
                seen.add(name)
                out.append((name, category))
        # names in the group but missing from input_order (a server quirk): keep them, after the rest
        if isinstance(group, Mapping):
            for name in group:
                if name not in seen:
                    seen.add(name)
                    out.append((name, category))
    return out


def combo_choices(input_type: Any, options: Mapping[str, Any]) -> list[Any] | None:
    """The choices of a combo input in either format, or ``None`` if the input is not a combo."""
    if isinstance(input_type, (list, tuple)):
        return list(input_type)
    if input_type == "COMBO":
        choices = options.get("options")
        return list(choices) if isinstance(choices, (list, tuple)) else []
    return None


def combo_options(object_info: Mapping[str, Any], class_type: str, input_name: str) -> list[Any] | None:
    """The choices of ``class_type``'s combo input ``input_name``, or ``None`` (no such class/input, not a combo)."""
    info = object_info.get(class_type)
    if not isinstance(info, Mapping):
        return None
    spec = input_spec(info, input_name)
    if spec is None:
        return None
    return combo_choices(spec[0], spec[2])


def is_file_choice(class_type: str, input_name: str, input_type: Any, options: Mapping[str, Any]) -> bool:
    """Whether a combo input chooses a file on the server (a model, an uploaded image, ...)."""
    if (class_type, input_name) in _MODEL_FOLDER:
        return True
    if any(options.get(flag) for flag in UPLOAD_FLAGS) or options.get("image_folder") or options.get("remote"):
        return True
    choices = combo_choices(input_type, options)
    if not choices:
        return input_name.endswith("_name")
    return all(isinstance(c, str) and _FILE_SUFFIX.search(c) for c in choices)


def models_in(object_info: Mapping[str, Any]) -> dict[str, list[str]]:
    """The model files the server offers, by folder: ``{"checkpoints": [...], "loras": [...], ...}``.

    Read from the loader nodes' combo choices (:data:`MODEL_INPUTS`); a folder whose loaders are
    missing from ``object_info`` is left out, one whose loaders list nothing maps to ``[]``.
    """
    out: dict[str, list[str]] = {}
    for folder, pairs in MODEL_INPUTS.items():
        names: list[str] = []
        found = False
        for class_type, input_name in pairs:
            choices = combo_options(object_info, class_type, input_name)
            if choices is None:
                continue
            found = True
            names.extend(c for c in choices if isinstance(c, str) and c not in names)
        if found:
            out[folder] = names
    return out


def models_used(workflow: Mapping[str, Any]) -> dict[str, set[str]]:
    """The model files an API workflow loads, by folder (literal loader inputs of :data:`MODEL_INPUTS`)."""
    out: dict[str, set[str]] = {}
    for node in workflow.values():
        if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
            continue
        class_type = node.get("class_type")
        for input_name, value in node["inputs"].items():
            folder = _MODEL_FOLDER.get((class_type, input_name)) if isinstance(class_type, str) else None
            if folder and isinstance(value, str):
                out.setdefault(folder, set()).add(value)
    return out


# --------------------------------------------------------------------------------------------------
# validation


def validate_workflow(
    workflow: Any,
    object_info: Mapping[str, Any],
    *,
    scenario_fields: Mapping[str, str] | None = None,
    known_files: Collection[str] = (),
    warnings: bool = False,
) -> list[Problem]:
    """Return the problems ComfyUI would refuse ``workflow`` for (empty list: it would be accepted).

    ``object_info`` is the server's ``/object_info``. ``scenario_fields`` maps ``"<node_id>.<input>"``
    to the scenario field that set that input; each problem at such an address carries the field.
    ``known_files`` are file names known to exist on the server although ``object_info`` may not list
    them yet (files just uploaded): a file choice with such a value is accepted. With
    ``warnings=True`` the result also holds warnings (``severity == "warning"``): values ComfyUI
    accepts but that are probably mistakes (``64.7`` for an INT is truncated to ``64``; the string
    ``"false"`` for a BOOLEAN is true; a literal where the input expects a link).

    Neither argument is changed. Problems are ordered by node id, then input order.
    """
    return _Validator(object_info, scenario_fields or {}, frozenset(known_files), warnings).run(workflow)


class _Validator:
    def __init__(
        self,
        object_info: Mapping[str, Any],
        fields: Mapping[str, str],
        known_files: frozenset[str],
        warnings: bool,
    ) -> None:
        self.info = object_info
        self.fields = fields
        self.known_files = known_files
        self.warnings = warnings
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
                    suggestions=_closest(class_type, [k for k in self.info if isinstance(k, str)]),
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
        declared = declared_inputs(info)
        for name, category in declared:
            spec = input_spec(info, name)
            assert spec is not None
            input_type, _, options = spec
            if name not in inputs:
                if category == "required":
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
        known = {name for name, _ in declared}
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
                suggestions=_closest(name, sorted(known)),
            )

    def _check_link(self, node_id: str, name: str, value: list[Any], input_type: Any) -> None:
        if len(value) != 2:
            self._add(BAD_LINK, f"a link must be [node_id, output_slot], got {_show(value)}", node_id, name, value)
            return
        target, slot = value
        if not isinstance(target, str) or target not in self.workflow:
            ids = list(self.workflow)
            if not isinstance(target, str) and str(target) in self.workflow:
                message = f"links to node {target!r}, a {type(target).__name__}; node ids are strings: {str(target)!r}"
                suggestions: list[Any] = [[str(target), slot]]
            else:
                message = f"links to node {target!r}, which is not in the workflow"
                suggestions = _closest(str(target), ids)
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
                    f"{_show(value)} is not a valid {input_type} (ComfyUI converts it with "
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
                f"got the literal {_show(value)}",
                node_id,
                name,
                raw,
                severity=WARNING,
            )
        if "min" in options and _less(value, options["min"]):
            self._add(
                BELOW_MIN,
                f"{_show(value)} is below the minimum {options['min']}",
                node_id,
                name,
                raw,
                suggestions=[options["min"]],
            )
            return
        if "max" in options and _less(options["max"], value):
            self._add(
                ABOVE_MAX,
                f"{_show(value)} is above the maximum {options['max']}",
                node_id,
                name,
                raw,
                suggestions=[options["max"]],
            )
            return
        choices = combo_choices(input_type, options)
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
        suggestions = _closest(bad, choices, files=file_choice) if isinstance(bad, str) else []
        if not choices:
            folder = _MODEL_FOLDER.get((class_type, name))
            where = f" (is its models/{folder} folder empty?)" if folder else ""
            message = f"{_show(bad)} is not available: the server lists no choices for {name}{where}"
        else:
            count = f"the server's {len(choices)} choice" + ("" if len(choices) == 1 else "s")
            message = f"{_show(bad)} is not one of {count}"
            if not suggestions and len(choices) <= _LIST_FEW:
                message += ": " + ", ".join(_show(c) for c in choices)
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


def types_match(received: Any, expected: Any) -> bool:
    """Whether an output of type ``received`` may feed an input of type ``expected`` (ComfyUI's rules).

    Equal types match; ``*`` matches anything; comma-separated unions match when they overlap; a combo
    output (its type is a list of choices, or ``"COMBO"``) matches a combo input of either format.
    """
    if received == expected:
        return True
    if _is_any(received) or _is_any(expected):
        return True
    received_combo = isinstance(received, (list, tuple)) or received == "COMBO"
    expected_combo = isinstance(expected, (list, tuple)) or expected == "COMBO"
    if received_combo and expected_combo:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _is_any(kind: Any) -> bool:
    # "*" is ComfyUI's any type; COMFY_* types are the V3 API's dynamic kinds (match types,
    # autogrow, ...) that only the frontend and the node's own code check.
    return isinstance(kind, str) and (kind.strip() in ("*", "") or kind.startswith("COMFY_"))


def _plain_type(kind: str) -> bool:
    """Types that are only ever produced by nodes (so a literal for them is almost surely a mistake)."""
    return kind in {
        "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "CONTROL_NET", "CLIP_VISION",
        "CLIP_VISION_OUTPUT", "STYLE_MODEL", "UPSCALE_MODEL", "GLIGEN", "SAMPLER", "SIGMAS", "NOISE",
        "GUIDER", "AUDIO", "VIDEO",
    }  # fmt: skip


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


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda node_id: (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id))


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _FILE_SUFFIX.sub("", base).lower()


def _closest(value: str, choices: Iterable[Any], *, files: bool = False, n: int = _MAX_SUGGESTIONS) -> list[Any]:
    """The choices closest to ``value``: same name ignoring case, folder or extension first, then difflib."""
    candidates = [c for c in choices if isinstance(c, str)]
    if not candidates:
        return []
    found: list[str] = []
    lowered = value.lower()
    for choice in candidates:
        if choice.lower() == lowered:
            found.append(choice)
    if files:
        stem = _stem(value)
        found.extend(c for c in candidates if _stem(c) == stem and c not in found)
    by_lower: dict[str, list[str]] = {}
    for choice in candidates:
        by_lower.setdefault(choice.lower(), []).append(choice)
    for match in difflib.get_close_matches(lowered, list(by_lower), n=n, cutoff=0.6):
        found.extend(c for c in by_lower[match] if c not in found)
    if files and len(found) < n:
        stems: dict[str, list[str]] = {}
        for choice in candidates:
            stems.setdefault(_stem(choice), []).append(choice)
        for match in difflib.get_close_matches(_stem(value), list(stems), n=n, cutoff=0.6):
            found.extend(c for c in stems[match] if c not in found)
    return found[:n]


# --------------------------------------------------------------------------------------------------
# scenario fields


def scenario_fields(template: Template, spec: JobSpec, workflow: Mapping[str, Any]) -> dict[str, str]:
    """Map ``"<node_id>.<input>"`` to the scenario field that set it, for one rendered job.

    ``workflow`` is the rendered workflow (node ids are resolved against it). Later sources win, in
    the order rendering applies them: a template string that uses a parameter (``"{{ seed }}"`` in
    ``3.seed`` gives ``params.seed``; a string using several gives ``params.a, params.b``), a sidecar
    (or role) parameter's ``input`` addresses (``params.<name>``; one without a default only when the
    job gives it), the scenario's ``set:`` entries (``set.<address>``), then its ``inputs:``
    (``inputs.<address>``). Addresses that do not resolve are skipped (rendering reports those).
    """
    from hotfolder.stages import inject  # local: keeps this module importable without the pipeline

    fields: dict[str, str] = dict(_template_fields(template.text)) if template.kind == "json" else {}
    from hotfolder.stages.render import MISSING

    for param in template.params.values():
        if param.default is MISSING and param.name not in spec.params:
            continue  # not set by this job: the value there is the template's own
        for address in param.inputs:
            resolved = _resolve_address(inject, workflow, address)
            if resolved:
                fields[resolved] = f"params.{param.name}"
    for address in spec.set:
        resolved = _resolve_address(inject, workflow, address)
        if resolved:
            fields[resolved] = f"set.{address}"
    for address in spec.inputs:
        resolved = _resolve_address(inject, workflow, address)
        if resolved:
            fields[resolved] = f"inputs.{address}"
    return fields


def _resolve_address(inject: Any, workflow: Mapping[str, Any], address: str) -> str | None:
    try:
        node_ref, input_name = inject.parse_address(address)
        node_id = inject.resolve_node(dict(workflow), node_ref)
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
    from hotfolder.stages.render import string_variables  # jinja2 stays behind the render stage

    return list(string_variables(value))


# --------------------------------------------------------------------------------------------------
# the object_info cache


class ObjectInfoCache:
    """One server's ``/object_info``, fetched on demand and kept for ``max_age`` seconds. Thread-safe.

    ``fetch`` returns the parsed ``/object_info`` (pass ``client.http.object_info``); what it raises
    is passed on when there is nothing cached. With a cached copy, a failed *automatic* refresh
    (the copy is too old) logs a warning and serves the old copy again, retrying after
    ``retry_after`` seconds; :meth:`refresh` always raises. Concurrent callers share one fetch.
    ``max_age=None`` keeps the copy until :meth:`refresh` or :meth:`invalidate`.

    :attr:`version` counts content changes (1 after the first fetch), so callers can re-check
    templates when the server's nodes or models changed. The returned dict is shared: do not change it.
    """

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, Any]],
        *,
        max_age: float | None = 300.0,
        retry_after: float = 10.0,
        min_refresh_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._fetch = fetch
        self.max_age = max_age
        self.retry_after = retry_after
        self.min_refresh_interval = min_refresh_interval
        self._clock = clock
        self.name = name
        self._lock = threading.Lock()  # guards the fields below
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self._data: Mapping[str, Any] | None = None
        self._digest: str | None = None
        self._fetched_at: float | None = None
        self._next_try: float | None = None
        self._generation = 0  # counts completed fetches
        self._version = 0  # counts content changes
        self._invalid = False  # set by invalidate()

    @property
    def version(self) -> int:
        """How many times the content changed (0 before the first fetch)."""
        with self._lock:
            return self._version

    @property
    def fetched_at(self) -> float | None:
        """``clock()`` time of the last successful fetch, or ``None``."""
        with self._lock:
            return self._fetched_at

    def age(self) -> float | None:
        """Seconds since the last successful fetch, or ``None``."""
        with self._lock:
            return None if self._fetched_at is None else self._clock() - self._fetched_at

    def cached(self) -> Mapping[str, Any] | None:
        """The cached copy (maybe stale), without fetching."""
        with self._lock:
            return self._data

    def invalidate(self) -> None:
        """Make the next :meth:`get` fetch (the cached copy is still served if that fetch fails)."""
        with self._lock:
            self._invalid = True
            self._next_try = None

    def get(self, *, refresh: bool = False) -> Mapping[str, Any]:
        """The server's ``/object_info``: cached if fresh enough, else fetched (``refresh=True`` forces it)."""
        if refresh:
            return self.refresh()
        with self._lock:
            if self._data is not None and not self._stale_locked():
                return self._data
            generation = self._generation
        with self._fetch_lock:
            with self._lock:
                if self._generation != generation and self._data is not None:
                    return self._data  # another thread fetched while we waited
                data = self._data
                now = self._clock()
                if data is not None and self._next_try is not None and now < self._next_try:
                    return data  # a recent automatic refresh failed; do not hammer the server
            try:
                return self._do_fetch()
            except Exception as err:
                if data is None:
                    raise
                logger.warning(
                    "Could not refresh /object_info%s (%s); using the copy from %.0f s ago",
                    f" of {self.name}" if self.name else "",
                    err,
                    self.age() or 0.0,
                )
                with self._lock:
                    self._next_try = self._clock() + self.retry_after
                return data

    def refresh(self) -> Mapping[str, Any]:
        """Fetch now and return the new copy (callers waiting together share one fetch); raise on failure."""
        with self._lock:
            generation = self._generation
        with self._fetch_lock:
            with self._lock:
                if self._generation != generation and self._data is not None:
                    return self._data
            return self._do_fetch()

    def _stale_locked(self) -> bool:
        if self._fetched_at is None or self._invalid:
            return True
        return self.max_age is not None and self._clock() - self._fetched_at >= self.max_age

    def _do_fetch(self) -> Mapping[str, Any]:
        data = self._fetch()
        if not isinstance(data, Mapping):
            raise TypeError(f"/object_info fetch returned a {type(data).__name__}, not an object")
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()
        with self._lock:
            if digest != self._digest:
                self._version += 1
                if self._digest is not None:
                    logger.info("/object_info%s changed", f" of {self.name}" if self.name else "")
            self._data = data
            self._digest = digest
            self._fetched_at = self._clock()
            self._next_try = None
            self._invalid = False
            self._generation += 1
            return data

    def validate(
        self,
        workflow: Any,
        *,
        scenario_fields: Mapping[str, str] | None = None,
        known_files: Collection[str] = (),
        warnings: bool = False,
    ) -> list[Problem]:
        """:func:`validate_workflow` against this server, re-checking once with a fresh copy when needed.

        If the cached copy finds errors that a newer one could resolve (a choice not in the list, an
        unknown class: a model or custom node added since) and the copy is at least
        ``min_refresh_interval`` seconds old, the copy is refreshed and the workflow checked again.
        A failed refresh keeps the first result.
        """
        info = self.get()
        problems = validate_workflow(
            workflow, info, scenario_fields=scenario_fields, known_files=known_files, warnings=warnings
        )
        if not any(p.severity == ERROR and p.kind in STALE_KINDS for p in problems):
            return problems
        age = self.age()
        if age is not None and age < self.min_refresh_interval:
            return problems
        try:
            fresh = self.refresh()
        except Exception as err:  # noqa: BLE001 - the first result stands
            logger.warning("Could not refresh /object_info to re-check a workflow: %s", err)
            return problems
        if fresh is info:
            return problems
        return validate_workflow(
            workflow, fresh, scenario_fields=scenario_fields, known_files=known_files, warnings=warnings
        )
