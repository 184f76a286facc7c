"""Which saved widget value of a UI node belongs to which input (the widget half of the UI→API converter).

:func:`node_widgets` lists the widgets the frontend creates for a node class from ``/object_info``;
:func:`map_values` pairs a node's ``widgets_values`` list with them, :func:`map_named` a dict of them.
The rules are the frontend's (details in :mod:`hotfolder.templates.convert`):

* widgets are the INT, FLOAT, STRING, BOOLEAN and combo inputs (``[[choices]]``, ``["COMBO",
  {"options": [...]}]``) and DynamicCombos, required then optional in ``input_order``;
  ``forceInput`` inputs and Autogrow inputs (``COMFY_AUTOGROW_V3``, whose entries are sockets named
  ``<input>.<entry>``) have none;
* a **DynamicCombo** (``COMFY_DYNAMICCOMBO_V3``) is a combo of its options' keys; the chosen option's
  widget inputs follow it at once, named ``<input>.<sub>`` (nested: ``a.b.c``), required then optional.
  The frontend's ``dynamicComboWidget`` builds ``name = `${widget.name}.${key}``` and splices the new
  widgets right after the combo (Comfy-Org/ComfyUI_frontend
  ``src/core/graph/widgets/dynamicWidgets.ts``@5dcd3818); ComfyUI reads the dotted names back
  (``comfy_api/latest/_io.py``@04e2a914, ``get_finalized_class_inputs``);
* ``advanced`` inputs are widgets like any other (the flag only folds them away in the UI), and so
  are ``socketless`` inputs of any type (COLOR, CURVE: the flag hides the socket, not the widget);
* a value must fit its widget: a number for INT/FLOAT, a bool for BOOLEAN, a string for STRING, and
  for a combo one of its choices. A combo whose choices are not known here (a ``remote`` combo, an
  empty list such as LoadImage's on a server without input files) takes any scalar, and so does a
  combo that chooses a file (a model missing on this server is the validator's to report, with the
  closest names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.templates.nodes import (
    AUTOGROW,
    DYNAMIC_COMBO,
    UPLOAD_FLAGS,
    WIDGET_TYPES,
    closest,
    combo_choices,
    declared_inputs,
    dynamic_keys,
    dynamic_sub_inputs,
    input_spec,
    is_file_choice,
)

__all__ = [
    "CONTROL_VALUES", "Mapped", "Mismatch", "Widget", "map_named", "map_values", "node_widgets", "settle_dynamic",
]

#: The values of the extra "control after generate" widget.
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
#: Input types whose widget value the browser produces when queueing; not convertible from the file.
BROWSER_WIDGET_TYPES = frozenset({"WEBCAM", "AUDIO_RECORD", "LOAD_3D", "LOAD_3D_ANIMATION"})
#: Values of upload-button and similar widgets that follow a file input.
_UPLOAD_MARKERS = frozenset({"image", "upload", "upload3dmodel", "uploadExtraResources", "clear"})
_SEED_NAMES = frozenset({"seed", "noise_seed"})


@dataclass(frozen=True)
class Widget:
    """One widget of a node: its input name (dotted for a DynamicCombo's sub-input), type and config."""

    name: str
    type: Any
    options: dict[str, Any]
    class_type: str
    control: bool = False  # followed by a control_after_generate value
    upload: bool = False  # followed by an upload button value
    browser: bool = False  # filled by the browser

    @property
    def dynamic(self) -> bool:
        return self.type == DYNAMIC_COMBO

    def choices(self) -> list[Any] | None:
        """The allowed values of a combo or DynamicCombo (keys), ``None`` for other widgets."""
        if self.dynamic:
            return dynamic_keys(self.options)
        return combo_choices(self.type, self.options)

    def expand(self, key: Any) -> list[Widget]:
        """The widgets of the DynamicCombo option ``key`` (empty for other widgets or an unknown key)."""
        if not self.dynamic:
            return []
        subs = dynamic_sub_inputs(self.name, self.options, key)
        return [w for w in (_widget(self.class_type, n, t, o) for n, _c, t, o in subs) if w is not None]


@dataclass
class Mapped:
    """What a node's saved widget values come to: input values, control modes, defaults used, leftovers."""

    inputs: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)  # input -> mode other than "fixed"
    defaults: list[tuple[str, Any]] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)  # values after the known inputs (UI-only widgets)


class Mismatch(Exception):
    """A saved value that cannot belong to the widget it falls on: the widgets do not line up."""

    def __init__(self, position: int, value: Any, widget: Widget, shown: list[str]) -> None:
        super().__init__(f"value {position} ({value!r}) does not fit {widget.name!r}")
        self.position = position
        self.value = value
        self.widget = widget
        self.shown = shown  # names of the widgets the values were matched against

    @property
    def unlisted(self) -> bool:
        """Whether the value is a scalar of the right kind that the combo just does not list (a newer option)."""
        value, choices = self.value, self.widget.choices() or []
        if isinstance(value, str):
            return any(isinstance(c, str) for c in choices)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and any(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)

    def describe(self) -> str:
        """What was expected, for the converter's message."""
        widget, value = self.widget, self.value
        choices = widget.choices()
        if choices and self.unlisted:
            near = closest(value, choices) if isinstance(value, str) else []
            listed = f"closest: {', '.join(map(repr, near))}" if near else _listing(choices)
            kind = "DynamicCombo" if widget.dynamic else "COMBO"
            return f"should be one of the {len(choices)} choices of {kind} input {widget.name!r} ({listed})"
        expected = widget.type if isinstance(widget.type, str) else "COMBO"
        return f"should be {expected} input {widget.name!r}"


def node_widgets(class_type: str, info: Mapping[str, Any]) -> list[Widget]:
    """The top-level widgets of one ``/object_info`` class, in the order the frontend creates them."""
    out = []
    for name, _category in declared_inputs(info):
        spec = input_spec(info, name)
        if spec is not None:
            widget = _widget(class_type, name, spec[0], spec[2])
            if widget is not None:
                out.append(widget)
    return out


def _widget(class_type: str, name: str, input_type: Any, options: Mapping[str, Any]) -> Widget | None:
    if options.get("forceInput"):
        return None
    browser = isinstance(input_type, str) and input_type in BROWSER_WIDGET_TYPES
    widget_type = isinstance(input_type, list) or input_type in WIDGET_TYPES or input_type == DYNAMIC_COMBO
    widget_type = widget_type or bool(options.get("socketless"))  # COLOR, CURVE, ...: a widget, no socket
    if not (widget_type or browser):
        return None
    control = bool(options.get("control_after_generate"))
    upload = any(options.get(flag) for flag in UPLOAD_FLAGS)
    return Widget(name, input_type, dict(options), class_type, control, upload, browser)


def map_named(widgets: list[Widget], values: Mapping[str, Any], linked: set[str]) -> Mapped:
    """Widget values saved as a dict by name (some custom frontends): each widget takes its own entry."""
    mapped = Mapped()
    queue = list(widgets)
    while queue:
        widget = queue.pop(0)
        if widget.name in values:
            mapped.inputs[widget.name] = wrap(values[widget.name])
            queue[0:0] = widget.expand(values[widget.name])
        elif widget.name not in linked:
            queue[0:0] = _default(widget, mapped)
    return mapped


def map_values(widgets: list[Widget], values: list[Any], linked: set[str]) -> Mapped:
    """Pair a node's ``widgets_values`` list with its widgets; raise :class:`Mismatch` where a value does not fit.

    ``linked`` are inputs fed by a link: a missing value for one of them takes no default.
    """
    mapped = Mapped()
    queue = list(widgets)
    position = 0
    index = 0
    while index < len(queue):
        widget = queue[index]
        if position >= len(values):
            rest = queue[index:]
            while rest:
                missing = rest.pop(0)
                if missing.name not in linked and not missing.browser:
                    rest[0:0] = _default(missing, mapped)
            return mapped
        value = values[position]
        position += 1
        if not widget.browser and not fits(value, widget):
            raise Mismatch(position - 1, value, widget, [w.name for w in queue])
        mapped.inputs[widget.name] = wrap(value)
        queue[index + 1 : index + 1] = widget.expand(value)
        if position < len(values):
            following = values[position]
            next_widget = queue[index + 1] if index + 1 < len(queue) else None
            if _is_control(widget, following, next_widget):
                position += 1
                if following != "fixed":
                    mapped.controls[widget.name] = following
        if widget.upload:
            remaining = len(queue) - index - 1
            while position < len(values) and is_marker(values[position]) and len(values) - position > remaining:
                position += 1
        index += 1
    mapped.extra = values[position:]
    return mapped


def settle_dynamic(widgets: list[Widget], inputs: dict[str, Any], linked: set[str]) -> list[tuple[str, Any]]:
    """Give each DynamicCombo the sub-inputs of its final key, once links have set the inputs; return defaults used.

    A PrimitiveNode (or a value promoted onto a subgraph) may set a DynamicCombo's key to another
    option than the one saved with the node. The frontend then rebuilds the sub-widgets with their
    defaults (``dynamicComboWidget``'s value setter); so here the old option's sub-inputs go and the
    new option's take their defaults. A key fed by a node output keeps the saved sub-inputs.
    """
    keep: set[str] = set()
    owners: list[str] = []
    used: list[tuple[str, Any]] = []
    queue = list(widgets)
    while queue:
        widget = queue.pop(0)
        keep.add(widget.name)
        value = inputs.get(widget.name)
        if widget.dynamic:
            owners.append(widget.name + ".")
            if isinstance(value, list):  # a link: the server gets the key at run time
                keep.update(n for n in inputs if n.startswith(widget.name + "."))
                continue
            for sub, _category, sub_type, _options in dynamic_sub_inputs(widget.name, widget.options, value):
                keep.add(sub)
                if sub_type == AUTOGROW:  # its entries: <combo>.<sub>.<entry>
                    keep.update(n for n in inputs if n.startswith(sub + "."))
        if widget.name in inputs:
            queue[0:0] = widget.expand(value)
        elif widget.name not in linked and not widget.browser:
            mapped = Mapped()
            queue[0:0] = _default(widget, mapped)
            inputs.update(mapped.inputs)
            used.extend(mapped.defaults)
    for name in [n for n in inputs if n.startswith(tuple(owners)) and n not in keep]:
        del inputs[name]
    return used


def _default(widget: Widget, mapped: Mapped) -> list[Widget]:
    """Record the frontend's default for ``widget`` (if it has one); return the widgets that follow from it."""
    if "default" in widget.options:
        value = widget.options["default"]
    else:
        choices = widget.choices()
        if not choices:
            return []
        value = choices[0]
    mapped.inputs[widget.name] = wrap(value)
    mapped.defaults.append((widget.name, value))
    return widget.expand(value)


def fits(value: Any, widget: Widget) -> bool:
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
    choices = widget.choices()
    if choices is None:
        return True
    if isinstance(value, list):
        return bool(widget.options.get("multiselect")) and all(_choice_fits(v, widget, choices) for v in value)
    if value is None or isinstance(value, Mapping):
        return False
    return _choice_fits(value, widget, choices)


def _choice_fits(value: Any, widget: Widget, choices: list[Any]) -> bool:
    if _member(value, choices):
        return True
    if isinstance(value, bool) or widget.dynamic:
        return False
    if not choices or widget.options.get("remote"):
        return True  # options fetched by the browser, or none listed: nothing to check against
    if isinstance(value, str) and is_file_choice(widget.class_type, widget.name, widget.type, widget.options):
        return True  # a file this server lacks: the validator names it with the closest files
    return False


def _member(value: Any, choices: list[Any]) -> bool:
    try:
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)
    except TypeError:
        return False


def _is_control(widget: Widget, following: Any, next_widget: Widget | None) -> bool:
    """Whether ``following`` is the control_after_generate value of ``widget`` rather than the next input's."""
    if not isinstance(following, str) or following not in CONTROL_VALUES:
        return False
    if widget.control:
        return True
    # Older frontends gave every INT named seed/noise_seed a control widget; anything else with a
    # control word after it is taken as one only if the next widget cannot hold that word.
    if widget.type == "INT" and widget.name in _SEED_NAMES:
        return True
    if widget.type not in ("INT", "FLOAT") and widget.choices() is None:
        return False
    if next_widget is None:
        return True
    if next_widget.type == "STRING":
        return False
    choices = next_widget.choices()
    return not (choices is not None and following in choices)


def is_marker(value: Any) -> bool:
    """A value an upload button (or an empty UI-only widget) leaves in ``widgets_values``."""
    return value is None or value == "" or (isinstance(value, str) and value in _UPLOAD_MARKERS)


def wrap(value: Any) -> Any:
    """A list widget value is sent as ``{"__value__": [...]}`` so it is not read as a link."""
    return {"__value__": value} if isinstance(value, list) else value


def _listing(choices: list[Any], few: int = 8) -> str:
    shown = ", ".join(repr(c) for c in choices[:few])
    return shown + (", ..." if len(choices) > few else "")
