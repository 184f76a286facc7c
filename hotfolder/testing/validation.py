"""``POST /prompt`` validation, following ComfyUI 0.3.64's ``validate_prompt`` step by step.

The walk, the error types, messages, ``details`` strings and the way errors are attributed to nodes
(``node_errors``, ``dependent_outputs``) match the captures in ``comfy-protocol/captures``. Python
exceptions raised by odd input (a link to a node that does not exist, a slot out of range, a node
without ``inputs``) are produced by the same operations ComfyUI performs, so their ``details`` text
(``"'99'"``, ``"tuple index out of range"``) comes out identical.

Only nodes reachable from an output node are validated. Literal values are converted in place
(``"128"`` becomes ``128`` for an INT input), as ComfyUI does, so the queued and stored prompt holds
the converted values.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import IMAGE_FILE_NODES, NodeCatalog, expand_dynamic_inputs
from .folders import resolve_annotated_file

__all__ = ["ValidationResult", "validate_node_input", "validate_prompt"]

_Validated = dict[Any, tuple[bool, list[dict[str, Any]], Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationResult:
    """``ok`` decides 200 or 400; ``outputs`` are the output nodes that passed; ``error`` is the 400 body's error."""

    ok: bool
    error: dict[str, Any] | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)


class DependencyCycleError(Exception):
    """Two nodes are linked to each other (directly or not)."""


def _full_type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _input_info(info: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any] | None]:
    """ComfyUI's ``get_input_info``: ``(input_type, category, extra_info)`` or ``(None, None, None)``."""
    inputs = info.get("input", {})
    for category in ("required", "optional", "hidden"):
        group = inputs.get(category)
        if isinstance(group, dict) and name in group:
            config = group[name]
            if not isinstance(config, list):  # hidden inputs are plain strings
                return config, category, {}
            extra = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
            return config[0], category, extra
    return None, None, None


def _declared_inputs(info: dict[str, Any]) -> list[str]:
    order = info.get("input_order") or {}
    inputs = info.get("input", {})
    names: list[str] = []
    for category in ("required", "optional"):
        listed = order.get(category) or list(inputs.get(category) or {})
        names.extend(n for n in listed if n not in names)
    return names


def validate_node_input(received_type: Any, input_type: Any, strict: bool = False) -> bool:
    """Whether an output of ``received_type`` may feed an input of ``input_type`` (``*`` and unions allowed)."""
    if received_type == input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    wanted = {t.strip() for t in input_type.split(",")}
    if "*" in received or "*" in wanted:
        return True
    if strict:
        return received.issubset(wanted)
    return bool(received & wanted)


class _Validator:
    def __init__(self, catalog: NodeCatalog, dirs: dict[str, Path]) -> None:
        self.catalog = catalog
        self.dirs = dirs

    def _custom_validation(self, class_type: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``VALIDATE_INPUTS`` of LoadImage and friends: the image file must exist."""
        image = inputs.get("image")
        if "image" not in inputs or isinstance(image, list):
            return []
        default = "output" if class_type == "LoadImageOutput" else "input"
        path = resolve_annotated_file(image, self.dirs, default)
        if path is not None and os.path.exists(path):
            return []
        return [
            {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"image - Invalid image file: {image}",
                "extra_info": {"input_name": "image"},
            }
        ]

    def validate_inputs(
        self, prompt: dict[Any, Any], unique_id: Any, validated: _Validated, visiting: tuple[Any, ...] = ()
    ) -> tuple[bool, list[dict[str, Any]], Any]:
        if unique_id in validated:
            return validated[unique_id]
        if unique_id in visiting:
            raise DependencyCycleError("Dependency cycle detected")
        node = prompt[unique_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        info = self.catalog.get(class_type)
        if info is None:
            raise KeyError(class_type)
        info = expand_dynamic_inputs(info, inputs)  # 0.4x catalogues: dotted DynamicCombo sub-inputs
        custom = class_type in IMAGE_FILE_NODES
        custom_inputs = ("image",) if custom else ()

        errors: list[dict[str, Any]] = []
        valid = True
        for x in _declared_inputs(info):
            input_type, category, extra_info = _input_info(info, x)
            assert extra_info is not None
            if x not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": x.rsplit(".", 1)[-1],  # a dotted sub-input by its last part (0.33.0)
                            "extra_info": {"input_name": x},
                        }
                    )
                continue

            val = inputs[x]
            config = [input_type, extra_info]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": config, "received_value": val},
                        }
                    )
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                o_info = self.catalog.get(o_class_type)
                if o_info is None:
                    raise KeyError(o_class_type)
                received_type = tuple(o_info.get("output", ()))[val[1]]
                if not validate_node_input(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                            "extra_info": {
                                "input_name": x,
                                "input_config": config,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    result = self.validate_inputs(prompt, o_id, validated, (*visiting, unique_id))
                    if result[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001 - ComfyUI turns any inner failure into a node error
                    kind, _, tb = sys.exc_info()
                    valid = False
                    validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": x,
                                    "input_config": config,
                                    "exception_message": str(ex),
                                    "exception_type": _full_type_name(kind or type(ex)),
                                    "traceback": traceback.format_tb(tb),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    if input_type == "INT":
                        val = int(val)
                        inputs[x] = val
                    if input_type == "FLOAT":
                        val = float(val)
                        inputs[x] = val
                    if input_type == "STRING":
                        val = str(val)
                        inputs[x] = val
                    if input_type == "BOOLEAN":
                        val = bool(val)
                        inputs[x] = val
                except Exception as ex:  # noqa: BLE001 - any conversion failure is reported, as in ComfyUI
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{x}, {val}, {ex}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": config,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue

                if x in custom_inputs:
                    continue
                if "min" in extra_info and val < extra_info["min"]:
                    errors.append(
                        {
                            "type": "value_smaller_than_min",
                            "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": config, "received_value": val},
                        }
                    )
                    continue
                if "max" in extra_info and val > extra_info["max"]:
                    errors.append(
                        {
                            "type": "value_bigger_than_max",
                            "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": config, "received_value": val},
                        }
                    )
                    continue
                if isinstance(input_type, list) or input_type == "COMBO":
                    options = input_type if isinstance(input_type, list) else extra_info.get("options", [])
                    if extra_info.get("multiselect", False) and isinstance(val, list):
                        invalid = [v for v in val if v not in options]
                    else:
                        invalid = [val] if val not in options else []
                    if invalid:
                        if len(options) > 20:
                            list_info = f"(list of length {len(options)})"
                            shown_config: Any = None
                        else:
                            list_info = str(options)
                            shown_config = config
                        errors.append(
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{x}: {', '.join(repr(v) for v in invalid)} not in {list_info}",
                                "extra_info": {"input_name": x, "input_config": shown_config, "received_value": val},
                            }
                        )
                        continue

        if custom:
            errors.extend(self._custom_validation(class_type, inputs))

        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        validated[unique_id] = ret
        return ret


def _invalid_prompt(message: str, node_id: Any) -> ValidationResult:
    error = {"type": "invalid_prompt", "message": message, "details": f"Node ID '#{node_id}'", "extra_info": {}}
    return ValidationResult(ok=False, error=error)


def validate_prompt(
    prompt: Any,
    partial_execution_targets: Any,
    *,
    catalog: NodeCatalog,
    dirs: dict[str, Path],
) -> ValidationResult:
    """Validate an API-format prompt like ComfyUI does.

    Raises ``TypeError``/``AttributeError`` for bodies ComfyUI answers with a plain 500 (a prompt that
    is a list or a string, a UI-format workflow); the HTTP layer turns those into that 500.
    """
    if isinstance(prompt, dict) and isinstance(prompt.get("nodes"), list) and "links" in prompt:
        raise TypeError("a UI-format workflow (nodes/links) was sent instead of an API-format prompt")
    outputs: list[Any] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return _invalid_prompt("Cannot execute because a node is missing the class_type property.", x)
        class_type = prompt[x]["class_type"]
        info = catalog.get(class_type)
        if info is None:
            return _invalid_prompt(f"Cannot execute because node {class_type} does not exist.", x)
        if info.get("output_node") is True and (partial_execution_targets is None or x in partial_execution_targets):
            outputs.append(x)

    if not outputs:
        error = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
        return ValidationResult(ok=False, error=error)

    validator = _Validator(catalog, dirs)
    good_outputs: list[str] = []
    failures: list[tuple[Any, list[dict[str, Any]]]] = []
    node_errors: dict[Any, Any] = {}
    validated: _Validated = {}
    for o in outputs:
        try:
            valid, reasons, _ = validator.validate_inputs(prompt, o, validated)
        except Exception as ex:  # noqa: BLE001 - ComfyUI reports any exception as a validation error
            kind, _, tb = sys.exc_info()
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": _full_type_name(kind or type(ex)),
                        "traceback": traceback.format_tb(tb),
                    },
                }
            ]
            validated[o] = (False, reasons, o)

        if valid is True:
            good_outputs.append(o)
            continue
        failures.append((o, reasons))
        for node_id, (ok, node_reasons, _) in validated.items():
            # Nodes downstream of a broken node are invalid too but carry no errors: not reported.
            if ok is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failures for e in reasons)
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return ValidationResult(ok=False, error=error, outputs=[], node_errors=node_errors)
    return ValidationResult(ok=True, error=None, outputs=good_outputs, node_errors=node_errors)
