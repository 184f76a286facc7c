"""Convert ComfyUI's UI workflow format (what the Save button writes) to the API format, using ``/object_info``.

A UI workflow is ``{"nodes": [...], "links": [...], "groups": [...], ...}``. Each node has an ``id``,
a ``type`` (the class), a ``mode``, ``inputs`` (sockets, each with a ``link`` id or ``null`` and, for
an input that also has a widget, ``widget: {"name"}``), ``outputs`` and ``widgets_values``: the values
of its widgets in the order the frontend created them. A link is
``[link_id, from_node, from_slot, to_node, to_slot, type]`` (or an object with ``id``,
``origin_id``, ``origin_slot``, ``target_id``, ``target_slot``, ``type``).

The conversion follows what the frontend's ``graphToPrompt`` does when you press Queue:

* **Subgraphs** are flattened first (:func:`hotfolder.templates.subgraph.flatten_subgraphs`): inner
  nodes get the frontend's execution ids ``"<instance>:<inner>"`` (nested ``"a:b:c"``), values
  promoted onto an instance reach the inner inputs through ``"<instance>:promotedN"`` PrimitiveNodes
  (listed under ``dropped``, like any PrimitiveNode).
* **Widget values to input names** (:mod:`hotfolder.templates.widgets`). The widgets of a node are its
  INT, FLOAT, STRING, BOOLEAN, combo (both formats) and DynamicCombo inputs, required then optional,
  in the server's ``input_order``; a DynamicCombo's chosen option adds its widgets right after it,
  named ``<input>.<sub>``. ``forceInput`` inputs have no widget; Autogrow entries and inputs of other
  types are sockets. An input with
  ``control_after_generate`` (seeds) is followed by an extra value (``"fixed"``, ``"increment"``,
  ``"decrement"``, ``"randomize"``) that is not an input; it is recognised by the flag, or by the
  word after a seed-like INT in workflows saved by older frontends. File inputs with an upload
  button (LoadImage) may be followed by the button's value (``"image"``). Values left over at the
  end belong to UI-only widgets (previews) and are ignored; missing values take the input's default,
  as the frontend does. A value that does not fit its input (a string for an INT, a combo value that
  is not one of the listed choices) means the node's widgets do not line up with the server's
  version of the node: that is a :class:`ConversionError`.
* **Links** are resolved through the ``links`` table. A linked input overrides the widget value.
* **Reroute** nodes are followed to their source.
* **PrimitiveNode** values are pushed into the widgets they are linked to.
* **Muted** nodes (mode 2) are dropped, and so are inputs linked to them (as the frontend does).
* **Bypassed** nodes (mode 4) are dropped; each consumer is connected to the bypassed node's input
  of the matching type (the same slot if its type fits, else the first input of the same type, else
  the first compatible one); with none, the consumer's input is left out.
* ``_meta.title`` is the node's title (or the class's display name).
* Groups are ignored, Note and MarkdownNote nodes dropped.

What cannot be converted faithfully is a :class:`ConversionError` that names the construct and the
node: group nodes, subgraphs that are damaged (:class:`~hotfolder.templates.subgraph.SubgraphError`), classes the server does not have,
inputs filled by the browser (webcam capture, audio recording, 3D viewer), broken links, and widget
values that do not fit the server's inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hotfolder.errors import TemplateError
from hotfolder.plugin_api import Conversion
from hotfolder.templates.nodes import input_spec
from hotfolder.templates.subgraph import UILink, flatten_subgraphs, parse_ui_link
from hotfolder.templates.widgets import (
    CONTROL_VALUES,
    Mismatch,
    Widget,
    is_marker,
    map_named,
    map_values,
    node_widgets,
    settle_dynamic,
    wrap,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CONTROL_VALUES",
    "Conversion",
    "ConversionError",
    "convert_if_ui",
    "convert_ui_workflow",
    "is_ui_workflow",
    "ui_to_api",
]

MUTED = 2
BYPASSED = 4

#: Frontend-only nodes: no class on the server.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE_TYPES = frozenset({"Reroute"})
PRIMITIVE_TYPES = frozenset({"PrimitiveNode"})

HOW_TO_EXPORT = (
    "Or export the API format directly: in ComfyUI's settings enable 'Dev mode Options', then use "
    "'Save (API Format)' (newer versions: Workflow > Export (API))."
)


class ConversionError(TemplateError):
    """A UI workflow that cannot be converted faithfully; the message names the construct and node."""

    stage = "render"


def is_ui_workflow(data: Any) -> bool:
    """Whether ``data`` is a ComfyUI UI workflow (``nodes`` list and ``links``) rather than API format."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


def convert_if_ui(data: Any, name: str, object_info: Callable[[], Mapping[str, Any]]) -> Conversion | None:
    """:func:`convert_ui_workflow` for a UI workflow, calling ``object_info()`` for the server's catalogue;
    ``None`` for anything else. The built-in ``parse_workflow`` (:mod:`hotfolder.default_plugins.ui_workflows`)."""
    if not is_ui_workflow(data):
        return None
    return convert_ui_workflow(data, object_info(), name=name)


def ui_to_api(ui: Mapping[str, Any], object_info: Mapping[str, Any], *, name: str = "workflow") -> dict[str, Any]:
    """Shortcut for ``convert_ui_workflow(...).workflow``."""
    return convert_ui_workflow(ui, object_info, name=name).workflow


def convert_ui_workflow(ui: Mapping[str, Any], object_info: Mapping[str, Any], *, name: str = "workflow") -> Conversion:
    """Convert the UI workflow ``ui`` to API format using the server's ``object_info``.

    ``name`` (a template name) is used in messages and in the errors' ``where``. Raise
    :class:`ConversionError` for what cannot be converted faithfully (module docstring). Neither
    argument is changed.
    """
    return _Converter(ui, object_info, name).run()


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """A literal value reaching an input (from a PrimitiveNode)."""

    value: Any


@dataclass(frozen=True)
class _Source:
    """A node output reaching an input."""

    node: str
    slot: int


class _Converter:
    def __init__(self, ui: Mapping[str, Any], object_info: Mapping[str, Any], name: str) -> None:
        self.ui = ui
        self.info = object_info
        self.name = name
        self.nodes: dict[str, Mapping[str, Any]] = {}
        self.links: dict[Any, UILink] = {}
        self.result = Conversion(workflow={})

    # ---- errors

    def _error(self, message: str, hint: str, node: Mapping[str, Any] | None = None, **where: Any) -> ConversionError:
        fields: dict[str, Any] = {"template": self.name}
        if node is not None:
            fields["node"] = str(node.get("id"))
            fields["class_type"] = node.get("type")
        fields.update({k: v for k, v in where.items() if v is not None})
        return ConversionError(f"Cannot convert UI workflow {self.name!r}: {message}", hint=hint, where=fields)

    def _label(self, node: Mapping[str, Any]) -> str:
        title = node.get("title")
        kind = node.get("type")
        if isinstance(title, str) and title and title != kind:
            return f'node {node.get("id")} "{title}" ({kind})'
        return f"node {node.get('id')} ({kind})"

    # ---- the walk

    def run(self) -> Conversion:
        if not is_ui_workflow(self.ui):
            raise self._error(
                "it is not a UI workflow (an object with 'nodes' and 'links')",
                "Pass the file ComfyUI's Save button writes, or use an API-format workflow as it is.",
            )
        self.ui = flatten_subgraphs(self.ui, name=self.name)
        self._index()
        self._refuse_unsupported()
        for node_id, node in self.nodes.items():
            kind = node.get("type")
            mode = node.get("mode", 0)
            if kind in NOTE_TYPES:
                self.result.dropped.append(f"{node_id} ({kind}): a note")
            elif kind in REROUTE_TYPES:
                self.result.dropped.append(f"{node_id} ({kind}): links followed through it")
            elif kind in PRIMITIVE_TYPES:
                self.result.dropped.append(f"{node_id} ({kind}): its value is set on the inputs it feeds")
            elif mode == MUTED:
                self.result.dropped.append(f"{node_id} ({kind}): muted")
            elif mode == BYPASSED:
                self.result.dropped.append(f"{node_id} ({kind}): bypassed")
            else:
                self._convert_node(node_id, node)
        workflow = self.result.workflow
        for node_id, api_node in workflow.items():
            for input_name, value in list(api_node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in workflow:
                    del api_node["inputs"][input_name]
                    origin = self.nodes.get(value[0])
                    why = "muted" if origin is not None and origin.get("mode") == MUTED else "not converted"
                    self.result.warnings.append(
                        f"node {node_id} input {input_name!r}: left out, its source node {value[0]} is {why}"
                    )
        self.result.workflow = {k: workflow[k] for k in _sorted_ids(workflow)}
        return self.result

    def _index(self) -> None:
        for position, node in enumerate(self.ui["nodes"]):
            if not isinstance(node, Mapping) or "id" not in node or not isinstance(node.get("type"), str):
                raise self._error(
                    f"entry {position} of 'nodes' is not a node (an object with 'id' and 'type')",
                    "The file is damaged; save the workflow again from ComfyUI.",
                )
            node_id = str(node["id"])
            if node_id in self.nodes:
                raise self._error(
                    f"two nodes have id {node_id}",
                    "The file is damaged; save the workflow again from ComfyUI.",
                    node,
                )
            self.nodes[node_id] = node
        raw_links = self.ui.get("links") or []
        if not isinstance(raw_links, list):
            raise self._error("'links' is not a list", "The file is damaged; save the workflow again from ComfyUI.")
        for raw in raw_links:
            parsed = parse_ui_link(raw)
            if parsed is None:
                raise self._error(
                    f"link {raw!r} is not [id, from_node, from_slot, to_node, to_slot, type]",
                    "The file is damaged; save the workflow again from ComfyUI.",
                )
            self.links[parsed[0]] = parsed[1]

    def _refuse_unsupported(self) -> None:
        extra = self.ui.get("extra")
        group_nodes = extra.get("groupNodes") if isinstance(extra, Mapping) else None
        unknown: list[Mapping[str, Any]] = []
        for node in self.nodes.values():
            kind = node["type"]
            mode = node.get("mode", 0)
            if mode == MUTED:
                continue
            if kind.startswith(("workflow>", "workflow/")) or (
                isinstance(group_nodes, Mapping) and kind in group_nodes
            ):
                raise self._error(
                    f"{self._label(node)} is a group node; hotfolder cannot convert group nodes",
                    "In ComfyUI, right-click the group node and choose 'Convert to nodes', save, and try "
                    "again. " + HOW_TO_EXPORT,
                    node,
                    construct="group node",
                )
            if kind in NOTE_TYPES or kind in REROUTE_TYPES or kind in PRIMITIVE_TYPES or mode == BYPASSED:
                continue
            if not isinstance(self.info.get(kind), Mapping):
                unknown.append(node)
        if unknown:
            listing = ", ".join(self._label(n) for n in unknown)
            classes = sorted({n["type"] for n in unknown})
            raise self._error(
                f"the server has no node class {', '.join(repr(c) for c in classes)} ({listing})",
                "These come from custom node packs that are not installed on the server: install them "
                "(ComfyUI-Manager) and restart ComfyUI, or remove or mute the nodes.",
                unknown[0],
                construct="unknown class",
            )

    # ---- one node

    def _convert_node(self, node_id: str, node: Mapping[str, Any]) -> None:
        class_type: str = node["type"]
        info: Mapping[str, Any] = self.info[class_type]
        inputs: dict[str, Any] = {}
        linked = self._linked_widget_names(node)
        widgets = node_widgets(class_type, info)
        values = node.get("widgets_values")
        if isinstance(values, Mapping):
            mapped = map_named(widgets, values, linked)
        else:
            mapped = self._map_widget_values(node, widgets, list(values or []), linked)
        inputs.update(mapped.inputs)
        for input_name, mode in mapped.controls.items():
            self.result.controls[f"{node_id}.{input_name}"] = mode
        for input_name, value in mapped.defaults:
            self.result.warnings.append(
                f"{self._label(node)}: no saved value for {input_name!r}; using the default {value!r}"
            )
        for widget in widgets:
            if widget.browser and widget.name not in linked:
                spec = input_spec(info, widget.name)
                if spec is not None and spec[1] == "required":
                    raise self._error(
                        f"input {widget.name!r} of {self._label(node)} is filled by the browser "
                        f"({widget.type} widget) when the workflow is queued; a saved file does not hold it",
                        "Replace the node with one that loads a file (LoadImage, LoadAudio, ...), or export "
                        "the API format from ComfyUI after using the node. " + HOW_TO_EXPORT,
                        node,
                        input=widget.name,
                        construct=str(widget.type),
                    )
                inputs.pop(widget.name, None)
        for slot, socket in enumerate(node.get("inputs") or []):
            if not isinstance(socket, Mapping):
                continue
            socket_name = _socket_name(socket)
            if socket_name is None:
                continue
            resolved = self._resolve_input(node, slot, set())
            if resolved is None:
                continue
            if isinstance(resolved, _Value):
                inputs[socket_name] = wrap(resolved.value)
            else:
                inputs[socket_name] = [resolved.node, resolved.slot]
        for input_name, value in settle_dynamic(widgets, inputs, linked):
            self.result.warnings.append(
                f"{self._label(node)}: {input_name!r} belongs to the option its linked key chose; "
                f"using the default {value!r}"
            )
        title = node.get("title")
        if not isinstance(title, str) or not title:
            display = info.get("display_name")
            title = display if isinstance(display, str) and display else class_type
        self.result.workflow[node_id] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}

    def _linked_widget_names(self, node: Mapping[str, Any]) -> set[str]:
        names: set[str] = set()
        for socket in node.get("inputs") or []:
            if isinstance(socket, Mapping) and socket.get("link") is not None:
                name = _socket_name(socket)
                if name is not None:
                    names.add(name)
        return names

    def _map_widget_values(
        self, node: Mapping[str, Any], widgets: list[Widget], values: list[Any], linked: set[str]
    ) -> Any:
        try:
            mapped = map_values(widgets, values, linked)
        except Mismatch as miss:
            what = "hold a choice the server does not offer" if miss.unlisted else "do not line up with the server's inputs"
            raise self._error(
                f"the widget values of {self._label(node)} {what}: value {miss.position} ({miss.value!r}) {miss.describe()} "
                f"(inputs with widgets on the server: {', '.join(miss.shown)}; saved values: {values!r})",
                "The workflow was saved with a different version of this node than the server has. "
                "Open it in ComfyUI connected to this server (the node is updated), save it, and try "
                "again. " + HOW_TO_EXPORT,
                node,
                input=miss.widget.name,
                construct="combo choice" if miss.unlisted else "widget values",
            ) from None
        if mapped.extra and any(v not in (None, "") and not is_marker(v) for v in mapped.extra):
            self.result.warnings.append(
                f"{self._label(node)}: {len(mapped.extra)} widget value(s) after the known inputs ignored "
                f"(UI-only widgets): {mapped.extra!r}"
            )
        return mapped

    # ---- links

    def _resolve_input(self, node: Mapping[str, Any], slot: int, visited: set[str]) -> _Source | _Value | None:
        """What reaches input ``slot`` of ``node``: a node output, a primitive's value, or nothing."""
        key = f"{node['id']}[I]{slot}"
        if key in visited:
            raise self._error(
                f"the links into {self._label(node)} run in a circle (through reroutes or bypassed nodes)",
                "Fix the wiring in ComfyUI and save again.",
                node,
                construct="link cycle",
            )
        visited.add(key)
        sockets = node.get("inputs") or []
        if slot >= len(sockets) or not isinstance(sockets[slot], Mapping):
            return None
        socket = sockets[slot]
        link_id = socket.get("link")
        if link_id is None:
            return None
        link = self.links.get(link_id)
        if link is None:
            raise self._error(
                f"input {_socket_name(socket)!r} of {self._label(node)} uses link {link_id}, which is not in "
                "the 'links' list",
                "The file is damaged (a known ComfyUI glitch): reconnect that input in ComfyUI and save again.",
                node,
                input=_socket_name(socket),
                construct="broken link",
            )
        origin = self.nodes.get(str(link.origin))
        if origin is None:
            raise self._error(
                f"input {_socket_name(socket)!r} of {self._label(node)} is linked to node {link.origin}, "
                "which is not in the workflow",
                "The file is damaged: reconnect that input in ComfyUI and save again.",
                node,
                input=_socket_name(socket),
                construct="broken link",
            )
        return self._resolve_output(origin, link.origin_slot, socket.get("type"), visited)

    def _resolve_output(
        self, node: Mapping[str, Any], slot: int, wanted: Any, visited: set[str]
    ) -> _Source | _Value | None:
        """Where output ``slot`` of ``node`` really comes from, for an input of type ``wanted``."""
        key = f"{node['id']}[O]{slot}"
        if key in visited:
            raise self._error(
                f"the links through {self._label(node)} run in a circle",
                "Fix the wiring in ComfyUI and save again.",
                node,
                construct="link cycle",
            )
        visited.add(key)
        kind = node["type"]
        if node.get("mode", 0) == BYPASSED:
            index = _bypass_slot(node, slot, wanted)
            if index < 0:
                self.result.warnings.append(
                    f"{self._label(node)} is bypassed and has no input of type {wanted!r} to pass on; "
                    "the input it fed is left out"
                )
                return None
            return self._resolve_input(node, index, visited)
        if kind in REROUTE_TYPES:
            return self._resolve_input(node, slot, visited) if node.get("inputs") else None
        if kind in PRIMITIVE_TYPES:
            values = node.get("widgets_values")
            if isinstance(values, list) and values:
                return _Value(values[0])
            return None
        if kind in NOTE_TYPES:
            return None
        return _Source(str(node["id"]), int(slot))


# --------------------------------------------------------------------------------------------------
# helpers


def _bypass_slot(node: Mapping[str, Any], slot: int, wanted: Any) -> int:
    """The frontend's choice of input that a bypassed node passes to output ``slot``; -1 if none."""
    sockets = [s if isinstance(s, Mapping) else {} for s in (node.get("inputs") or [])]
    outputs = node.get("outputs") or []
    out_type = outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], Mapping) else None
    if wanted in (None, "", "*"):
        if not sockets:
            return -1
        return slot if slot < len(sockets) else 0
    if slot < len(sockets):
        opposite = sockets[slot].get("type")
        if _connectable(opposite, out_type) and _connectable(opposite, wanted):
            return slot
    for index, socket in enumerate(sockets):
        if socket.get("type") == wanted:
            return index
    for index, socket in enumerate(sockets):
        kind = socket.get("type")
        if _connectable(kind, out_type) and _connectable(kind, wanted):
            return index
    return -1


def _connectable(a: Any, b: Any) -> bool:
    """LiteGraph's ``isValidConnection``: ``*``/empty match anything, case-insensitive unions overlap."""
    if a in (None, "", "*", 0) or b in (None, "", "*", 0) or a == b:
        return True
    left = {t.strip() for t in str(a).lower().split(",")}
    right = {t.strip() for t in str(b).lower().split(",")}
    return bool(left & right)


def _socket_name(socket: Mapping[str, Any]) -> str | None:
    name = socket.get("name")
    if isinstance(name, str) and name:
        return name
    widget = socket.get("widget")
    widget_name = widget.get("name") if isinstance(widget, Mapping) else None
    return widget_name if isinstance(widget_name, str) else None




def _sorted_ids(ids: Any) -> list[str]:
    return sorted(ids, key=lambda node_id: (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id))
