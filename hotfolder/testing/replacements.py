"""Deprecated-node replacement on submit (0.4x profile): ComfyUI rewrites a node whose class it no longer
has into the class registered to replace it, before validating the prompt, so the queue, ``/history`` and
``/api/jobs/{id}`` hold the rewritten graph, not the one the client sent.

Written from ``app/node_replace_manager.py@b5d74ccb0d8a5ac3b444c9d352b95638d9d7767c``
(``NodeReplaceManager.apply_replacements``, called by ``POST /prompt`` in
``server.py@002c3fb9a504255ccb3edb668c08b8f56e63d14a`` after the prompt id check and before
``validate_prompt``). The one replacement modelled is ComfyUI's first built-in one,
``ResizeImagesByLongerEdge`` → ``ImageScaleToMaxDimension``, as ``comfy_extras/nodes_replacements.py``
registers it (``comfyanonymous/ComfyUI@2d992ebd6ccbd4d1a5f07721e36d0f22185ff0ef``); the profile's catalogue
no longer lists the old class. docs/comfy-protocol/AFTER-0.3.64-evidence.md section 10 has the details.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

__all__ = ["LONGER_EDGE", "NodeReplacement", "apply_replacements", "as_answer"]


@dataclass(frozen=True, slots=True)
class NodeReplacement:
    """One registered replacement (ComfyUI's ``io.NodeReplace``): ``input_mapping`` entries are
    ``{"new_id", "old_id"}`` (take the old input) or ``{"new_id", "set_value"}``; ``output_mapping``
    entries ``{"old_idx", "new_idx"}`` renumber the links from the node; ``old_widget_ids`` is for the
    frontend (widget positions of UI workflows) and unused on submit."""

    old_class: str
    new_class: str
    input_mapping: tuple[dict[str, Any], ...] | None = None
    output_mapping: tuple[dict[str, int], ...] | None = None
    old_widget_ids: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """How ``GET /node_replacements`` shows it (``NodeReplace.as_dict``, comfy_api/latest/_node_replace.py
        in ``comfyanonymous/ComfyUI@07d1ee2ca9b1f33917d36c42192ffb91326170ff``): empty lists become null."""
        return {
            "new_node_id": self.new_class,
            "old_node_id": self.old_class,
            "old_widget_ids": list(self.old_widget_ids) if self.old_widget_ids is not None else None,
            "input_mapping": [dict(m) for m in self.input_mapping] if self.input_mapping else None,
            "output_mapping": [dict(m) for m in self.output_mapping] if self.output_mapping else None,
        }


def as_answer(replacements: tuple[NodeReplacement, ...]) -> dict[str, list[dict[str, Any]]]:
    """``GET /node_replacements``: every registration by old class, in registration order
    (``NodeReplaceManager.as_dict``, app/node_replace_manager.py@07d1ee2ca9b1f33917d36c42192ffb91326170ff)."""
    answer: dict[str, list[dict[str, Any]]] = {}
    for replacement in replacements:
        answer.setdefault(replacement.old_class, []).append(replacement.as_dict())
    return answer


LONGER_EDGE = NodeReplacement(
    old_class="ResizeImagesByLongerEdge",
    new_class="ImageScaleToMaxDimension",
    input_mapping=({"new_id": "image", "old_id": "images"}, {"new_id": "largest_size", "old_id": "longer_edge"},
                   {"new_id": "upscale_method", "set_value": "lanczos"}),
    output_mapping=({"new_idx": 0, "old_idx": 0},),
    old_widget_ids=("longer_edge",),
)


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def apply_replacements(prompt: dict[str, Any], replacements: tuple[NodeReplacement, ...],
                       known: Container[str]) -> None:
    """Rewrite ``prompt`` in place, as ComfyUI does: a node whose class is not ``known`` and has a
    replacement whose new class is known keeps its id and ``_meta``, takes the new class and the mapped
    inputs (only those: the others are dropped), and links from it are renumbered by ``output_mapping``.
    The first replacement of a class is used. Anything not shaped like a node is left alone."""
    by_old: dict[str, NodeReplacement] = {}
    for replacement in replacements:
        by_old.setdefault(replacement.old_class, replacement)
    links: dict[str, list[tuple[str, str, int]]] = {}
    due = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            continue
        class_type = node["class_type"]
        if isinstance(class_type, str) and class_type not in known and class_type in by_old:
            due.append(node_id)
        for name, value in node["inputs"].items():
            if _is_link(value):
                links.setdefault(value[0], []).append((node_id, name, value[1]))
    for node_id in due:
        old = prompt[node_id]
        replacement = by_old[old["class_type"]]
        if replacement.new_class not in known:
            continue
        new = {**old, "class_type": replacement.new_class, "inputs": {}, "_meta": dict(old.get("_meta") or {})}
        for mapping in replacement.input_mapping or ():
            if "set_value" in mapping:
                new["inputs"][mapping["new_id"]] = mapping["set_value"]
            elif "old_id" in mapping:
                new["inputs"][mapping["new_id"]] = old["inputs"][mapping["old_id"]]  # KeyError as in ComfyUI
        prompt[node_id] = new
        for target, name, slot in links.get(node_id, []) if replacement.output_mapping else []:
            for mapping in replacement.output_mapping or ():
                if mapping["old_idx"] == slot:
                    prompt[target]["inputs"][name][1] = mapping["new_idx"]
