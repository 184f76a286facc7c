"""Flatten the subgraphs of a ComfyUI UI workflow into one graph, as the frontend does when it queues.

A UI workflow saved by a 2025-2026 frontend may keep reusable pieces in ``definitions.subgraphs``; a node
whose ``type`` is a definition's ``id`` is an *instance* of it. Inside a definition, links from node
``-10`` come from the instance's inputs and links into node ``-20`` go to its outputs.
:func:`flatten_subgraphs` returns an equivalent UI workflow without subgraphs, which
:mod:`hotfolder.templates.convert` can turn into API format:

* every node inside an instance gets the id ``"<instance>:<inner>"`` (nested: ``"a:b:c"``), the
  frontend's execution id (``ExecutableNodeDTO.id``);
* a link into an instance input is followed to what feeds that input in the enclosing graph; an
  unlinked input that carries a widget takes the instance's own value (its ``widgets_values``, one per
  widget-backed subgraph input in definition order) through a ``PrimitiveNode``; without one, the inner
  node keeps its own widget value;
* a link out of an instance output is followed to the inner node that feeds the output;
* muted (mode 2) and bypassed (mode 4) nodes keep their mode and are dropped, or bypassed, by the
  converter as at the top level; a muted or bypassed instance is kept as one node (its inner nodes
  never run), so the converter drops it or passes its inputs through.

Sources (details in docs/comfy-protocol/subgraphs.md): ComfyUI_frontend
``src/lib/litegraph/src/subgraph/ExecutableNodeDTO.ts`` @01b3aeae (``resolveInput``/``resolveOutput``)
and comfy-cli ``comfy_cli/workflow_to_api.py`` @00df0978 (``_expand_subgraphs``,
``_overlay_promoted_host_values``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.errors import TemplateError

__all__ = ["SubgraphError", "flatten_subgraphs", "has_subgraphs", "subgraph_definitions"]

MUTED = 2
BYPASSED = 4
INPUT_NODE = -10
OUTPUT_NODE = -20
#: Deepest nesting followed; deeper means a definition contains itself.
MAX_DEPTH = 32


class SubgraphError(TemplateError):
    """A subgraph that cannot be flattened faithfully; the message names the subgraph and the node."""

    stage = "render"


def subgraph_definitions(ui: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The workflow's subgraph definitions by id (empty when it has none)."""
    definitions = ui.get("definitions")
    raw = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
    if not isinstance(raw, list):
        return {}
    return {str(d["id"]): d for d in raw if isinstance(d, Mapping) and d.get("id") is not None}


def has_subgraphs(ui: Mapping[str, Any]) -> bool:
    """Whether ``ui`` uses a subgraph (an instance of one of its ``definitions.subgraphs``)."""
    definitions = subgraph_definitions(ui)
    nodes = ui.get("nodes")
    return (
        bool(definitions)
        and isinstance(nodes, list)
        and any(isinstance(n, Mapping) and str(n.get("type")) in definitions for n in nodes)
    )


def flatten_subgraphs(ui: Mapping[str, Any], *, name: str = "workflow") -> dict[str, Any]:
    """A copy of the UI workflow ``ui`` with every subgraph instance replaced by its inner nodes.

    ``name`` (a template name) is used in error messages. Links are renumbered from 1 and written as
    ``[id, from, from_slot, to, to_slot, type]``; node ids become strings where a node lies inside a
    subgraph. ``definitions.subgraphs`` is left out of the result. A workflow without subgraphs comes
    back as a plain copy. ``ui`` is not changed. Raise :class:`SubgraphError` for a definition that
    contains itself or a link that is not in its graph.
    """
    result = {k: copy.deepcopy(v) for k, v in ui.items() if k not in ("nodes", "links", "definitions")}
    definitions = ui.get("definitions")
    if isinstance(definitions, Mapping):
        rest = {k: copy.deepcopy(v) for k, v in definitions.items() if k != "subgraphs"}
        if rest:
            result["definitions"] = rest
    if not has_subgraphs(ui):
        result["nodes"] = copy.deepcopy(ui.get("nodes"))
        result["links"] = copy.deepcopy(ui.get("links"))
        return result
    flattener = _Flattener(subgraph_definitions(ui), name)
    nodes, links = flattener.run(_Scope(ui, (), None, None, None))
    result["nodes"] = nodes
    result["links"] = links
    return result


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UILink:
    """A link of a UI-format workflow (the frontend's ``links``): from an output slot to an input slot."""

    origin: Any
    origin_slot: int
    target: Any
    target_slot: int
    type: Any


@dataclass
class _Scope:
    """One graph being walked: the workflow itself, or a definition seen through one instance."""

    graph: Mapping[str, Any]
    path: tuple[str, ...]  # instance ids from the top down to this graph
    parent: _Scope | None
    instance: Mapping[str, Any] | None  # the instance node (in ``parent``) this graph is inside
    definition: Mapping[str, Any] | None
    nodes: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    links: dict[Any, UILink] = field(default_factory=dict)

    def flat_id(self, node_id: Any) -> Any:
        """The frontend's execution id of a node of this graph (top-level ids stay as they are)."""
        return ":".join((*self.path, str(node_id))) if self.path else node_id


@dataclass(frozen=True)
class _From:
    """An output of a node of the flat graph."""

    node: Any
    slot: int
    type: Any


@dataclass(frozen=True)
class _Constant:
    """A value promoted onto an instance, for an inner widget input."""

    value: Any
    type: Any
    owner: str  # flat id of the instance


#: What reaches an input when nothing overrides the inner node's own widget value.
_DEFAULT = None


class _Flattener:
    def __init__(self, definitions: dict[str, Mapping[str, Any]], name: str) -> None:
        self.definitions = definitions
        self.name = name
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.promoted = 0

    def _error(self, message: str, hint: str, **where: Any) -> SubgraphError:
        fields = {"template": self.name, "construct": "subgraph"}
        fields.update({k: str(v) for k, v in where.items() if v is not None})
        return SubgraphError(f"Cannot flatten the subgraphs of {self.name!r}: {message}", hint=hint, where=fields)

    # ---- the walk

    def run(self, top: _Scope) -> tuple[list[dict[str, Any]], list[list[Any]]]:
        self._index(top)
        self._emit(top)
        outputs: dict[tuple[str, int], list[Any]] = {}
        for link in self.links:
            outputs.setdefault((str(link[1]), link[2]), []).append(link[0])
        for node in self.nodes:
            for slot, socket in enumerate(node.get("outputs") or []):
                if isinstance(socket, dict):
                    socket["links"] = outputs.get((str(node["id"]), slot), [])
        return self.nodes, self.links

    def _index(self, scope: _Scope) -> None:
        for node in scope.graph.get("nodes") or []:
            if isinstance(node, Mapping) and "id" in node:
                scope.nodes[str(node["id"])] = node
        for raw in scope.graph.get("links") or []:
            parsed = parse_ui_link(raw)
            if parsed is not None:
                scope.links[parsed[0]] = parsed[1]

    def _child(self, scope: _Scope, instance: Mapping[str, Any]) -> _Scope:
        definition = self.definitions[str(instance["type"])]
        path = (*scope.path, str(instance["id"]))
        if len(path) > MAX_DEPTH or any(s.definition is definition for s in _ancestors(scope)):
            raise self._error(
                f"subgraph {_subgraph_name(definition)!r} contains itself (through node {':'.join(path)})",
                "The file is damaged; open it in ComfyUI, unpack the subgraph and save again.",
                node=":".join(path),
            )
        child = _Scope(definition, path, scope, instance, definition)
        self._index(child)
        return child

    def _is_instance(self, node: Mapping[str, Any]) -> bool:
        return str(node.get("type")) in self.definitions

    def _emit(self, scope: _Scope) -> None:
        """Append the flat copies of the nodes of ``scope`` (inner nodes of live instances recursively)."""
        for node in scope.graph.get("nodes") or []:
            if not isinstance(node, Mapping) or "id" not in node:
                continue
            if self._is_instance(node) and node.get("mode", 0) not in (MUTED, BYPASSED):
                self._emit(self._child(scope, node))
                continue
            flat = copy.deepcopy(dict(node))
            flat["id"] = scope.flat_id(node["id"])
            if self._is_instance(node):
                flat["inputs"] = self._instance_sockets(node)
                flat["outputs"] = [
                    {"name": o.get("name"), "type": o.get("type"), "links": []}
                    for o in self.definitions[str(node["type"])].get("outputs") or []
                    if isinstance(o, Mapping)
                ]
            for slot, socket in enumerate(flat.get("inputs") or []):
                if isinstance(socket, dict) and socket.get("link") is not None:
                    socket["link"] = self._connect(scope, node, socket["link"], flat["id"], slot, socket)
            self.nodes.append(flat)

    def _instance_sockets(self, instance: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A muted or bypassed instance's inputs, one per subgraph input (the frontend rebuilds them so)."""
        definition = self.definitions[str(instance["type"])]
        sockets = []
        for index, declared in enumerate(definition.get("inputs") or []):
            saved = _instance_input(instance, definition, index) or {}
            sockets.append({"name": declared.get("name"), "type": declared.get("type"), "link": saved.get("link")})
        return sockets

    def _connect(
        self, scope: _Scope, node: Mapping[str, Any], link_id: Any, target: Any, slot: int, socket: Mapping[str, Any]
    ) -> int | None:
        """The new link id for input ``slot`` of flat node ``target``, or None when nothing reaches it."""
        link = scope.links.get(link_id)
        if link is None:
            if not scope.path:
                return link_id  # a broken top-level link: the converter names it
            raise self._error(
                f"input {socket.get('name')!r} of node {target} ({node.get('type')}) uses link {link_id}, "
                f"which is not in subgraph {_subgraph_name(scope.definition)!r}",
                "The file is damaged (a known ComfyUI glitch): reconnect that input inside the subgraph and save.",
                node=target,
                input=socket.get("name"),
            )
        source = self._resolve(scope, link, 0)
        if source is _DEFAULT:
            return None
        if isinstance(source, _Constant):
            source = self._constant_node(source)
        new_id = len(self.links) + 1
        self.links.append([new_id, source.node, source.slot, target, slot, socket.get("type", link.type)])
        return new_id

    def _constant_node(self, constant: _Constant) -> _From:
        """A PrimitiveNode holding a promoted value (the converter pushes it into the inner widget)."""
        self.promoted += 1
        node_id = f"{constant.owner}:promoted{self.promoted}"
        self.nodes.append({
            "id": node_id, "type": "PrimitiveNode", "mode": 0, "title": "promoted value",
            "inputs": [], "outputs": [{"name": "value", "type": constant.type, "links": []}],
            "widgets_values": [constant.value],
        })  # fmt: skip
        return _From(node_id, 0, constant.type)

    # ---- following links

    def _resolve(self, scope: _Scope, link: UILink, depth: int) -> _From | _Constant | None:
        """What the output end of ``link`` (a link of ``scope``) really is in the flat graph."""
        if depth > 4 * MAX_DEPTH:
            raise self._error(
                f"the links around subgraph {_subgraph_name(scope.definition)!r} run in a circle",
                "Fix the wiring in ComfyUI and save again.",
            )
        if _same_id(link.origin, INPUT_NODE) and scope.parent is not None:
            return self._through_input(scope, link.origin_slot, depth)
        origin = scope.nodes.get(str(link.origin))
        if origin is None:
            raise self._error(
                f"a link into node {scope.flat_id(link.target)} comes from node {scope.flat_id(link.origin)}, "
                "which is not in its graph",
                "The file is damaged: reconnect that input in ComfyUI and save again.",
                node=scope.flat_id(link.target),
            )
        if self._is_instance(origin) and origin.get("mode", 0) not in (MUTED, BYPASSED):
            return self._through_output(self._child(scope, origin), link.origin_slot, depth)
        return _From(scope.flat_id(origin["id"]), link.origin_slot, link.type)

    def _through_output(self, inner: _Scope, slot: int, depth: int) -> _From | _Constant | None:
        """What feeds output ``slot`` of the instance ``inner`` is seen through (node -20 inside)."""
        for link in inner.links.values():
            if _same_id(link.target, OUTPUT_NODE) and link.target_slot == slot:
                return self._resolve(inner, link, depth + 1)
        return _DEFAULT

    def _through_input(self, scope: _Scope, slot: int, depth: int) -> _From | _Constant | None:
        """What reaches input ``slot`` of the instance ``scope`` is seen through (node -10 inside)."""
        parent, instance, definition = scope.parent, scope.instance, scope.definition
        assert parent is not None and instance is not None and definition is not None
        saved = _instance_input(instance, definition, slot)
        link_id = saved.get("link") if saved else None
        if link_id is not None and link_id in parent.links:
            found = self._resolve(parent, parent.links[link_id], depth + 1)
            if found is not _DEFAULT:
                return found
        value = _promoted_value(instance, definition, slot)
        if value is None:
            return _DEFAULT
        declared = (definition.get("inputs") or [])[slot]
        return _Constant(value[0], declared.get("type"), parent.flat_id(instance["id"]))


# --------------------------------------------------------------------------------------------------
# helpers


def _ancestors(scope: _Scope) -> list[_Scope]:
    out = []
    current: _Scope | None = scope
    while current is not None:
        out.append(current)
        current = current.parent
    return out


def _same_id(value: Any, wanted: int) -> bool:
    return str(value) == str(wanted)


def _subgraph_name(definition: Mapping[str, Any] | None) -> str:
    if definition is None:
        return "?"
    return str(definition.get("name") or definition.get("id"))


def parse_ui_link(raw: Any) -> tuple[Any, UILink] | None:
    """A UI-format link, ``[id, origin, origin_slot, target, target_slot, type]`` or the same as an object
    (``{"id", "origin_id", ...}``, in subgraph definitions), as (id, link); None when it is neither."""
    try:
        if isinstance(raw, Mapping):
            return raw["id"], UILink(
                raw["origin_id"], int(raw["origin_slot"]), raw["target_id"], int(raw["target_slot"]), raw.get("type")
            )
        if isinstance(raw, list) and len(raw) >= 5:
            return raw[0], UILink(raw[1], int(raw[2]), raw[3], int(raw[4]), raw[5] if len(raw) > 5 else None)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _instance_input(instance: Mapping[str, Any], definition: Mapping[str, Any], slot: int) -> Mapping[str, Any] | None:
    """The saved input of ``instance`` for subgraph input ``slot`` (matched by name, as saved files may
    list only some of the inputs)."""
    declared = definition.get("inputs") or []
    if slot >= len(declared) or not isinstance(declared[slot], Mapping):
        return None
    wanted = declared[slot].get("name")
    sockets = [s for s in instance.get("inputs") or [] if isinstance(s, Mapping)]
    for socket in sockets:
        if socket.get("name") == wanted:
            return socket
    return None


def _widget_inputs(definition: Mapping[str, Any]) -> list[int]:
    """The subgraph inputs that carry a widget on the instance: those linked to an inner widget input."""
    nodes = {str(n.get("id")): n for n in definition.get("nodes") or [] if isinstance(n, Mapping)}
    slots: set[int] = set()
    for raw in definition.get("links") or []:
        parsed = parse_ui_link(raw)
        if parsed is None or not _same_id(parsed[1].origin, INPUT_NODE):
            continue
        link = parsed[1]
        target = nodes.get(str(link.target))
        sockets = (target.get("inputs") or []) if target is not None else []
        if link.target_slot < len(sockets) and isinstance(sockets[link.target_slot], Mapping):
            if sockets[link.target_slot].get("widget"):
                slots.add(link.origin_slot)
    return sorted(slots)


def _promoted_value(instance: Mapping[str, Any], definition: Mapping[str, Any], slot: int) -> tuple[Any] | None:
    """The instance's own value for widget-backed subgraph input ``slot``, boxed; None if it has none.

    The frontend saves an instance's ``widgets_values`` positionally, one per widget-backed subgraph
    input in definition order; an empty list, or None at a position, means the inner node's value
    (ComfyUI_frontend docs/adr/0009: host values are a sparse overlay over the inner defaults).
    """
    values = instance.get("widgets_values")
    if not isinstance(values, list) or not values:
        return None
    order = _widget_inputs(definition)
    if slot not in order:
        return None
    position = order.index(slot)
    if len(values) != len(order) or values[position] is None:
        return None  # not saved positionally, or a hole the frontend leaves for "the inner value"
    return (values[position],)
