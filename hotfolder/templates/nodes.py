"""Reading a server's node catalogue (``/object_info``): the inputs of a node class, combo choices, model files.

The helpers the validator (:mod:`hotfolder.templates.validate`) and the UI converter
(:mod:`hotfolder.templates.convert`) share, and ComfyUI's rule for which output may feed which input
(:func:`types_match`), and its test for a link in an API workflow (:func:`is_link`). A class's entry is ``{"input": {"required": {...}, "optional": {...},
"hidden": {...}}, "input_order": {...}, "output": [...], "output_node": bool, ...}`` (PROTOCOL.md §2).

Newer servers (V3 nodes, docs/comfy-protocol/AFTER-0.3.64-evidence.md §5-§7) add two kinds of input
whose values sit under dotted names in an API prompt (:func:`expanded_inputs`): a DynamicCombo
(``["COMFY_DYNAMICCOMBO_V3", {"options": [{"key": k, "inputs": {"required": ..., "optional": ...}}]}]``)
holds the chosen key under its own name and the chosen option's inputs under ``<name>.<sub>``; an
Autogrow input (``["COMFY_AUTOGROW_V3", {"template": {"input": ..., "prefix": p, "min": m, "max": M}}]``
or ``"names": [...]`` instead of ``prefix``/``max``) is a row of sockets ``<name>.<p0>`` ... of which
the first ``min`` are required.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Types that hold a literal value in the UI (a widget); anything else is normally linked.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: V3 input types whose values the API prompt holds under dotted names.
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
#: Deepest DynamicCombo nesting followed (a catalogue is data from the network).
_MAX_NESTING = 16
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
MODEL_FOLDER: dict[tuple[str, str], str] = {pair: folder for folder, pairs in MODEL_INPUTS.items() for pair in pairs}
_FILE_SUFFIX = re.compile(
    r"\.(safetensors|sft|ckpt|pt|pt2|pth|bin|gguf|onnx|yaml|json|png|jpe?g|webp|gif|bmp|tiff?|mp4|webm|mov|mkv|"
    r"avi|wav|mp3|flac|ogg|opus|m4a|glb|gltf|obj|fbx|stl|latent|txt)$",
    re.IGNORECASE,
)
_MAX_SUGGESTIONS = 5


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


def dynamic_keys(options: Mapping[str, Any]) -> list[Any]:
    """The option keys of a DynamicCombo input (its config dict ``options``), in order."""
    listed = options.get("options")
    if not isinstance(listed, list):
        return []
    return [o.get("key") for o in listed if isinstance(o, Mapping) and "key" in o]


def dynamic_sub_inputs(name: str, options: Mapping[str, Any], key: Any) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """``[(dotted name, category, type, config)]`` of DynamicCombo ``name``'s option ``key`` (empty if unknown).

    Required then optional, in the option's order, named ``<name>.<sub>`` (ComfyUI_frontend
    ``dynamicWidgets.ts``@5dcd3818: ``${widget.name}.${key}``; ComfyUI ``_io.py``@04e2a914).
    """
    listed = options.get("options")
    chosen = next(
        (o for o in listed or [] if isinstance(o, Mapping) and o.get("key") == key and not isinstance(key, bool)), None
    ) if isinstance(listed, list) else None  # fmt: skip
    inputs = chosen.get("inputs") if chosen is not None else None
    out: list[tuple[str, str, Any, dict[str, Any]]] = []
    if not isinstance(inputs, Mapping):
        return out
    for category in ("required", "optional"):
        group = inputs.get(category)
        for sub, config in (group.items() if isinstance(group, Mapping) else ()):
            input_type, extra = _split_config(config)
            out.append((f"{name}.{sub}", category, input_type, extra))
    return out


def autogrow_entries(name: str, options: Mapping[str, Any]) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """``[(dotted name, category, type, config)]`` of every socket Autogrow input ``name`` may grow.

    Entry ``i`` of a template with one input is ``<name>.<prefix><i>`` (``i`` below ``max``), or
    ``<name>.<names[i]>``; with several template inputs each is ``<name>.<input><i>``. Entries below
    ``min`` are required where the template input is (ComfyUI_frontend ``dynamicWidgets.ts``@5dcd3818,
    ``autogrowOrdinalToName``/``addAutogrowGroup``; ComfyUI ``_io.py``@04e2a914, Autogrow).
    """
    template = options.get("template")
    if not isinstance(template, Mapping) or not isinstance(template.get("input"), Mapping):
        return []
    specs = [
        (category, key, *_split_config(config))
        for category in ("required", "optional")
        if isinstance(template["input"].get(category), Mapping)
        for key, config in template["input"][category].items()
    ]
    names = template.get("names")
    limit = template.get("max")
    if isinstance(names, list):
        count = len(names)
    else:
        count = limit if isinstance(limit, int) and 0 <= limit <= 1000 else 100
    minimum = template.get("min")
    least = minimum if isinstance(minimum, int) else 0
    out = []
    for ordinal in range(count):
        for category, key, input_type, extra in specs:
            if isinstance(names, list):
                base = str(names[ordinal])
            else:
                base = f"{template.get('prefix') or '' if len(specs) == 1 else key}{ordinal}"
            required = ordinal < least and category == "required"
            out.append((f"{name}.{base}", "required" if required else "optional", input_type, extra))
    return out


def expanded_inputs(class_info: Mapping[str, Any], values: Mapping[str, Any]) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """``[(name, category, type, config)]`` of the inputs an API node of this class has, given its ``values``.

    :func:`declared_inputs` with each DynamicCombo followed by the inputs of the option chosen in
    ``values`` (recursively) and each Autogrow input replaced by its entries.
    """
    out: list[tuple[str, str, Any, dict[str, Any]]] = []
    pending: list[tuple[str, str, Any, dict[str, Any], int]] = []
    for name, category in declared_inputs(class_info):
        spec = input_spec(class_info, name)
        if spec is not None:
            pending.append((name, category, spec[0], spec[2], 0))
    while pending:
        name, category, input_type, options, depth = pending.pop(0)
        if input_type == AUTOGROW:
            out.extend(autogrow_entries(name, options))
            continue
        out.append((name, category, input_type, options))
        if input_type == DYNAMIC_COMBO and depth < _MAX_NESTING:
            subs = dynamic_sub_inputs(name, options, values.get(name))
            pending[0:0] = [(n, c if category == "required" else "optional", t, o, depth + 1) for n, c, t, o in subs]
    return out


def _split_config(config: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(config, (list, tuple)) and config:
        extra = config[1] if len(config) > 1 and isinstance(config[1], Mapping) else {}
        return config[0], dict(extra)
    return config, {}


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
    if (class_type, input_name) in MODEL_FOLDER:
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


def is_link(value: Any) -> bool:
    """Whether an input value of an API workflow is a link to another node's output, as ComfyUI's
    ``comfy_execution/graph_utils.py: is_link`` decides (ComfyUI@3414f484; its execution graph follows
    exactly these): a list of two, a node id (str) and an output slot (int or float; a bool is an int too)."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], (int, float))


def models_used(workflow: Mapping[str, Any]) -> dict[str, set[str]]:
    """The model files an API workflow loads, by folder (literal loader inputs of :data:`MODEL_INPUTS`)."""
    out: dict[str, set[str]] = {}
    for node in workflow.values():
        if not isinstance(node, Mapping) or not isinstance(node.get("inputs"), Mapping):
            continue
        class_type = node.get("class_type")
        for input_name, value in node["inputs"].items():
            folder = MODEL_FOLDER.get((class_type, input_name)) if isinstance(class_type, str) else None
            if folder and isinstance(value, str):
                out.setdefault(folder, set()).add(value)
    return out


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


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _FILE_SUFFIX.sub("", base).lower()


def closest(value: str, choices: Iterable[Any], *, files: bool = False, n: int = _MAX_SUGGESTIONS) -> list[Any]:
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


