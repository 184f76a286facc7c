"""Setting node inputs in an API-format workflow, addressed as ``<node>.<input>`` (the inject step of rendering).

An address names one input of one node. Titles and input names may both contain dots (a DynamicCombo's
sub-inputs are ``format.codec``), node ids never do (a subgraph's inner nodes are ``"12:3"``). So the
node part is the **longest** prefix, cut at a dot, that names a node of the workflow, and the rest is the
input: ``"SD v1.5 Loader.ckpt_name"`` is node ``"SD v1.5 Loader"``, input ``"ckpt_name"``;
``"5.format.codec"`` is node ``"5"``, input ``"format.codec"``. When no prefix names a node, the address
is split at its last dot and the error lists the nodes. The node part is resolved in this order, and the
first level with any match wins:

1. a node id, exactly (``"6"``);
2. a node title, exactly (``_meta.title``, e.g. ``"Positive Prompt"``);
3. a node ``class_type``, exactly (``"KSampler"``).

No match is an :class:`~hotfolder.errors.AddressError` that lists every node as
``id (class_type, "title")``; several matches at the winning level is an error that lists those nodes
and suggests the node id or a unique title.

Setting an input the node does not have yet is allowed (ComfyUI's own validation reports missing or
unknown inputs with the node's schema at hand), and so is replacing a link (``["4", 0]``) with a
literal. Values are not type-checked here.

Every function that takes ``where=`` merges that dict (usually ``file`` and ``job``) into the ``where``
of any error it raises, next to its own ``address``, ``node`` and ``input`` fields.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from hotfolder.errors import AddressError
from hotfolder.templates.nodes import is_link

logger = logging.getLogger(__name__)

ADDRESS_HINT = (
    "Write a node address as <node>.<input>, where <node> is a node id ('6'), a title "
    "('Positive Prompt') or a class_type ('KSampler'): for example '6.text' or 'KSampler.seed'."
)

#: How many nodes an error message lists before it says "and N more" (all of them go to ``details``).
MAX_LISTED = 40


def parse_address(address: str) -> tuple[str, str]:
    """Split ``"<node>.<input>"`` at its last dot: ``"KSampler.cfg"`` -> ``("KSampler", "cfg")``.

    Raise :class:`AddressError` if the address is not a string, has no dot, or either part is empty.
    """
    return _parse_address(address, {})


def split_address(workflow: Mapping[str, Any], address: str, *, where: dict[str, Any] | None = None) -> tuple[str, str]:
    """Return ``(node_id, input_name)`` for ``address`` in ``workflow``: the node is the longest prefix
    (cut at a dot) that names a node, so input names may contain dots (``"5.format.codec"``).

    Raise :class:`AddressError` for a malformed address, or one whose node is unknown or ambiguous.
    """
    base = dict(where or {})
    node_ref, input_name = _parse_address(address, base)
    node_ref, input_name = _longest_node_prefix(workflow, address) or (node_ref, input_name)
    return _resolve(workflow, node_ref, where=base, address=address, input_name=input_name), input_name


def resolve_node(workflow: dict[str, Any], node_ref: str) -> str:
    """Return the id of the one node that ``node_ref`` names (id, then title, then class_type).

    Raise :class:`AddressError` listing the candidates when nothing matches or the match is ambiguous.
    """
    return _resolve(workflow, node_ref, where={}, address=None)


def set_input(workflow: dict[str, Any], address: str, value: Any, *, where: dict[str, Any] | None = None) -> str:
    """Set the input named by ``address`` to ``value`` in place; return the node id.

    Lists and dicts are copied, so two inputs never share one mutable value.
    """
    base = dict(where or {})
    node_id, input_name = split_address(workflow, address, where=base)
    node = workflow[node_id]
    inputs = node.get("inputs")
    if inputs is None:
        inputs = node["inputs"] = {}
    if not isinstance(inputs, dict):
        raise AddressError(
            f"Cannot set {address!r}: node {node_id!r} has 'inputs' that is not an object",
            hint="The workflow is malformed; export it again with 'Save (API Format)'.",
            where={**base, "address": address, "node": node_id, "input": input_name},
        )
    if is_link(inputs.get(input_name)):
        logger.debug(
            "Address %r replaces the link %r on node %r with a literal value",
            address,
            inputs[input_name],
            node_id,
        )
    inputs[input_name] = copy.deepcopy(value) if isinstance(value, (list, dict)) else value
    return node_id


def apply_overrides(
    workflow: dict[str, Any], overrides: Mapping[str, Any], *, where: dict[str, Any] | None = None
) -> None:
    """Apply ``{address: value}`` in order with :func:`set_input` (a scenario's ``set:`` mapping)."""
    for address, value in overrides.items():
        set_input(workflow, address, value, where=where)


def describe_node(workflow: dict[str, Any], node_id: str) -> dict[str, Any]:
    """Return ``{"id", "title", "class_type"}`` for a node; ``title`` is ``_meta.title`` or ``None``.

    Raise :class:`AddressError` listing the nodes if ``node_id`` is not in the workflow.
    """
    if node_id not in workflow:
        candidates = _all_nodes(workflow)
        raise AddressError(
            f"Node id {node_id!r} is not in the workflow; nodes: {_listing(candidates)}",
            hint="Use one of the node ids listed.",
            where={"node": node_id},
            details={"candidates": candidates},
        )
    return _describe(workflow, node_id)


# --------------------------------------------------------------------------------------------------
# internals


def _parse_address(address: Any, where: dict[str, Any]) -> tuple[str, str]:
    if not isinstance(address, str):
        raise AddressError(
            f"Node address {address!r} is not a string",
            hint=ADDRESS_HINT,
            where={**where, "address": repr(address)},
        )
    node_ref, dot, input_name = address.rpartition(".")
    if not dot:
        problem = "has no '.' between node and input"
    elif not node_ref:
        problem = "has no node before the '.'"
    elif not input_name:
        problem = "has no input name after the last '.'"
    else:
        return node_ref, input_name
    raise AddressError(
        f"Node address {address!r} {problem}",
        hint=ADDRESS_HINT,
        where={**where, "address": address},
    )


def _longest_node_prefix(workflow: Mapping[str, Any], address: str) -> tuple[str, str] | None:
    """``(node_ref, input_name)`` for the longest prefix of ``address`` that names a node (by id, title
    or class_type, ambiguous or not), cut at a dot with a non-empty input after it; None if none does."""
    names = set(workflow)
    for node in workflow.values():
        if isinstance(node, dict):
            names.update(name for name in (_title(node), node.get("class_type")) if isinstance(name, str))
    cut = len(address)
    while (cut := address.rfind(".", 0, cut)) > 0:
        if cut + 1 < len(address) and address[:cut] in names:
            return address[:cut], address[cut + 1:]
    return None


def _resolve(workflow: Mapping[str, Any], node_ref: Any, *, where: dict[str, Any], address: str | None,
             input_name: str | None = None) -> str:
    fields: dict[str, Any] = {**where, "node": node_ref}
    if address is not None:
        fields["address"] = address
        fields["input"] = input_name if input_name is not None else address.rpartition(".")[2]
    shown = f"Node {node_ref!r}" + (f" in address {address!r}" if address is not None else "")

    if isinstance(node_ref, str) and node_ref in workflow:
        return node_ref
    by_title = [node_id for node_id, node in workflow.items() if isinstance(node_ref, str) and _title(node) == node_ref]
    by_class = [
        node_id
        for node_id, node in workflow.items()
        if isinstance(node, dict) and isinstance(node_ref, str) and node.get("class_type") == node_ref
    ]
    for matches, kind in ((by_title, "title"), (by_class, "class_type")):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            described = [_describe(workflow, node_id) for node_id in _sorted_ids(matches)]
            example = (
                f"'{described[0]['id']}.{fields['input']}'" if address is not None else (f"'{described[0]['id']}'")
            )
            raise AddressError(
                f"{shown} is ambiguous: {len(matches)} nodes have this {kind}: {_listing(described)}",
                hint=(
                    f"Use the node id instead (for example {example}), or give the node a unique "
                    "title in ComfyUI (right-click > Title) and export the workflow again."
                ),
                where=fields,
                details={"matches": described},
            )
    candidates = _all_nodes(workflow)
    raise AddressError(
        f"{shown} matches no node id, title or class_type in the workflow; nodes: {_listing(candidates)}",
        hint=ADDRESS_HINT,
        where=fields,
        details={"candidates": candidates},
    )


def _title(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) else None


def _describe(workflow: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    node = workflow[node_id]
    class_type = node.get("class_type") if isinstance(node, dict) else None
    return {"id": node_id, "title": _title(node), "class_type": class_type}


def _sorted_ids(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda node_id: (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id))


def _all_nodes(workflow: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [_describe(workflow, node_id) for node_id in _sorted_ids([str(k) for k in workflow])]


def _label(node: dict[str, Any]) -> str:
    if node["title"] is None:
        return f"{node['id']} ({node['class_type']})"
    return f'{node["id"]} ({node["class_type"]}, "{node["title"]}")'


def _listing(nodes: list[dict[str, Any]]) -> str:
    if not nodes:
        return "(none: the workflow is empty)"
    shown = ", ".join(_label(node) for node in nodes[:MAX_LISTED])
    if len(nodes) > MAX_LISTED:
        shown += f", and {len(nodes) - MAX_LISTED} more"
    return shown
