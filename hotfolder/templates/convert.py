"""Convert ComfyUI's UI workflow format (what the Save button writes) to the API format, using ``/object_info``.

A UI workflow is ``{"nodes": [...], "links": [...], "groups": [...], ...}``. Each node has an ``id``,
a ``type`` (the class), a ``mode``, ``inputs`` (sockets, each with a ``link`` id or ``null`` and, for
an input that also has a widget, ``widget: {"name"}``), ``outputs`` and ``widgets_values``: the values
of its widgets in the order the frontend created them. A link is
``[link_id, from_node, from_slot, to_node, to_slot, type]`` (or an object with ``id``,
``origin_id``, ``origin_slot``, ``target_id``, ``target_slot``, ``type``).

The conversion follows what the frontend's ``graphToPrompt`` does when you press Queue:

* **Widget values to input names.** The widgets of a node are its INT, FLOAT, STRING, BOOLEAN and
  combo inputs (both combo formats), required then optional, in the server's ``input_order``;
  ``forceInput`` inputs have no widget, and inputs of other types are sockets. An input with
  ``control_after_generate`` (seeds) is followed by an extra value (``"fixed"``, ``"increment"``,
  ``"decrement"``, ``"randomize"``) that is not an input; it is recognised by the flag, or by the
  word after a seed-like INT in workflows saved by older frontends. File inputs with an upload
  button (LoadImage) may be followed by the button's value (``"image"``). Values left over at the
  end belong to UI-only widgets (previews) and are ignored; missing values take the input's default,
  as the frontend does. A value whose type does not fit its input means the node's widgets do not
  line up with the server's version of the node: that is a :class:`ConversionError`.
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
node: group nodes and subgraphs (``definitions.subgraphs``), classes the server does not have,
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
from hotfolder.templates.nodes import WIDGET_TYPES, combo_choices, declared_inputs, input_spec

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

#: The values of the extra "control after generate" widget.
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
#: Frontend-only nodes: no class on the server.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE_TYPES = frozenset({"Reroute"})
PRIMITIVE_TYPES = frozenset({"PrimitiveNode"})
#: Input types whose widget value the browser produces when queueing; not convertible from the file.
BROWSER_WIDGET_TYPES = frozenset({"WEBCAM", "AUDIO_RECORD", "LOAD_3D", "LOAD_3D_ANIMATION"})
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload")
#: Values of upload-button and similar widgets that follow a file input.
_UPLOAD_MARKERS = frozenset({"image", "upload", "upload3dmodel", "uploadExtraResources", "clear"})
_SEED_NAMES = frozenset({"seed", "noise_seed"})

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
class _Link:
    id: Any
    origin: str
    origin_slot: int
    target: str
    target_slot: int
    type: Any


@dataclass(frozen=True)
class _Value:
    """A literal value reaching an input (from a PrimitiveNode)."""

    value: Any


@dataclass(frozen=True)
class _Source:
    """A node output reaching an input."""

    node: str
    slot: int


@dataclass(frozen=True)
class _Widget:
    name: str
    type: Any
    options: dict[str, Any]
    control: bool  # followed by a control_after_generate value
    upload: bool  # followed by an upload button value
    browser: bool  # filled by the browser


class _Converter:
    def __init__(self, ui: Mapping[str, Any], object_info: Mapping[str, Any], name: str) -> None:
        self.ui = ui
        self.info = object_info
        self.name = name
        self.nodes: dict[str, Mapping[str, Any]] = {}
        self.links: dict[Any, _Link] = {}
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
            link = _parse_link(raw)
            if link is None:
                raise self._error(
                    f"link {raw!r} is not [id, from_node, from_slot, to_node, to_slot, type]",
                    "The file is damaged; save the workflow again from ComfyUI.",
                )
            self.links[link.id] = link

    def _refuse_unsupported(self) -> None:
        subgraphs: dict[str, str] = {}
        definitions = self.ui.get("definitions")
        if isinstance(definitions, Mapping) and isinstance(definitions.get("subgraphs"), list):
            for subgraph in definitions["subgraphs"]:
                if isinstance(subgraph, Mapping) and "id" in subgraph:
                    subgraphs[str(subgraph["id"])] = str(subgraph.get("name") or subgraph["id"])
        extra = self.ui.get("extra")
        group_nodes = extra.get("groupNodes") if isinstance(extra, Mapping) else None
        unknown: list[Mapping[str, Any]] = []
        for node in self.nodes.values():
            kind = node["type"]
            mode = node.get("mode", 0)
            if mode == MUTED:
                continue
            if kind in subgraphs:
                raise self._error(
                    f"{self._label(node)} is a subgraph ({subgraphs[kind]!r}); hotfolder cannot convert subgraphs",
                    "In ComfyUI, right-click the subgraph node and choose 'Unpack Subgraph', save, and try "
                    "again. " + HOW_TO_EXPORT,
                    node,
                    construct="subgraph",
                )
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
        widgets = _widgets(class_type, info)
        values = node.get("widgets_values")
        if isinstance(values, Mapping):
            for widget in widgets:
                if widget.name in values:
                    inputs[widget.name] = _wrap(values[widget.name])
                elif widget.name not in linked:
                    self._default(node_id, node, widget, inputs)
        else:
            self._map_widget_values(node_id, node, widgets, list(values or []), inputs, linked)
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
            input_name = _socket_name(socket)
            if input_name is None:
                continue
            resolved = self._resolve_input(node, slot, set())
            if resolved is None:
                continue
            if isinstance(resolved, _Value):
                inputs[input_name] = _wrap(resolved.value)
            else:
                inputs[input_name] = [resolved.node, resolved.slot]
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
        self,
        node_id: str,
        node: Mapping[str, Any],
        widgets: list[_Widget],
        values: list[Any],
        inputs: dict[str, Any],
        linked: set[str],
    ) -> None:
        position = 0
        for index, widget in enumerate(widgets):
            if position >= len(values):
                for rest in widgets[index:]:
                    if rest.name not in linked and not rest.browser:
                        self._default(node_id, node, rest, inputs)
                return
            value = values[position]
            position += 1
            if not widget.browser and not _fits(value, widget):
                expected = widget.type if isinstance(widget.type, str) else "COMBO"
                shown = ", ".join(w.name for w in widgets)
                raise self._error(
                    f"the widget values of {self._label(node)} do not line up with the server's inputs: "
                    f"value {position - 1} ({value!r}) should be {expected} input {widget.name!r} "
                    f"(inputs with widgets on the server: {shown}; saved values: {values!r})",
                    "The workflow was saved with a different version of this node than the server has. "
                    "Open it in ComfyUI connected to this server (the node is updated), save it, and try "
                    "again. " + HOW_TO_EXPORT,
                    node,
                    input=widget.name,
                    construct="widget values",
                )
            inputs[widget.name] = _wrap(value)
            if position < len(values):
                following = values[position]
                next_widget = widgets[index + 1] if index + 1 < len(widgets) else None
                if self._is_control(widget, following, next_widget):
                    position += 1
                    if following != "fixed":
                        self.result.controls[f"{node_id}.{widget.name}"] = following
            if widget.upload:
                remaining = len(widgets) - index - 1
                while position < len(values) and _is_marker(values[position]) and len(values) - position > remaining:
                    position += 1
        extra = values[position:]
        if extra and any(v not in (None, "") and not _is_marker(v) for v in extra):
            self.result.warnings.append(
                f"{self._label(node)}: {len(extra)} widget value(s) after the known inputs ignored "
                f"(UI-only widgets): {extra!r}"
            )

    @staticmethod
    def _is_control(widget: _Widget, following: Any, next_widget: _Widget | None) -> bool:
        if not isinstance(following, str) or following not in CONTROL_VALUES:
            return False
        if widget.control:
            return True
        # Older frontends gave every INT named seed/noise_seed a control widget; anything else with a
        # control word after it is taken as one only if the next widget cannot hold that word.
        if widget.type == "INT" and widget.name in _SEED_NAMES:
            return True
        if widget.type not in ("INT", "FLOAT") and not isinstance(widget.type, list) and widget.type != "COMBO":
            return False
        if next_widget is None:
            return True
        if next_widget.type == "STRING":
            return False
        choices = combo_choices(next_widget.type, next_widget.options)
        return not (choices is not None and following in choices)

    def _default(self, node_id: str, node: Mapping[str, Any], widget: _Widget, inputs: dict[str, Any]) -> None:
        if "default" in widget.options:
            value = widget.options["default"]
        else:
            choices = combo_choices(widget.type, widget.options)
            if not choices:
                return
            value = choices[0]
        inputs[widget.name] = _wrap(value)
        self.result.warnings.append(
            f"{self._label(node)}: no saved value for {widget.name!r}; using the default {value!r}"
        )

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
        origin = self.nodes.get(link.origin)
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


def _parse_link(raw: Any) -> _Link | None:
    try:
        if isinstance(raw, Mapping):
            return _Link(
                raw["id"], str(raw["origin_id"]), int(raw["origin_slot"]), str(raw["target_id"]),
                int(raw["target_slot"]), raw.get("type"),
            )  # fmt: skip
        if isinstance(raw, list) and len(raw) >= 5:
            return _Link(raw[0], str(raw[1]), int(raw[2]), str(raw[3]), int(raw[4]), raw[5] if len(raw) > 5 else None)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _widgets(class_type: str, info: Mapping[str, Any]) -> list[_Widget]:
    out: list[_Widget] = []
    for name, _category in declared_inputs(info):
        spec = input_spec(info, name)
        if spec is None:
            continue
        input_type, _, options = spec
        if options.get("forceInput"):
            continue
        browser = isinstance(input_type, str) and input_type in BROWSER_WIDGET_TYPES
        if not (isinstance(input_type, list) or input_type in WIDGET_TYPES or browser):
            continue
        control = bool(options.get("control_after_generate"))
        upload = any(options.get(flag) for flag in _UPLOAD_FLAGS)
        out.append(_Widget(name, input_type, options, control, upload, browser))
    return out


def _fits(value: Any, widget: _Widget) -> bool:
    """Whether a saved widget value can belong to ``widget`` (detects values that do not line up)."""
    kind = widget.type
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return False
            return True
        return False
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    choices = combo_choices(kind, widget.options)
    if choices is None:
        return True
    if isinstance(value, list):
        return bool(widget.options.get("multiselect"))
    if value is None or isinstance(value, Mapping):
        return False
    if isinstance(value, bool):
        return value in choices
    if isinstance(value, (int, float)):
        return any(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices) or not choices
    return True


def _is_marker(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, str) and value in _UPLOAD_MARKERS)


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


def _wrap(value: Any) -> Any:
    """A list widget value is sent as ``{"__value__": [...]}`` so it is not read as a link."""
    return {"__value__": value} if isinstance(value, list) else value


def _sorted_ids(ids: Any) -> list[str]:
    return sorted(ids, key=lambda node_id: (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id))
