"""The node catalogue of the test server: the ``/object_info`` answer, and what validation checks against.

The catalogue is the complete ``/object_info`` answer of a real ComfyUI 0.3.64 (496 core classes,
shipped as ``object_info_core.json``) plus ``TestSleep`` from ComfyUI's test node pack. The model lists
are honest on every snapshot: every checkpoint offered (:data:`~hotfolder.testing.standins.STAND_IN_CHECKPOINTS`)
and ``pixel_space`` for ``VAELoader`` run; the other model folders (LoRAs, text encoders, diffusion and
upscale models) are empty, whatever the snapshot's install had. Which snapshot is loaded is the protocol
profile's choice (:attr:`~hotfolder.testing.profile.Profile.object_info`).
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import mimetypes
import os
from pathlib import Path
from typing import Any

from .standins import STAND_IN_CHECKPOINTS
from .video import VHS_VIDEO_COMBINE_INFO

__all__ = ["CORE_OBJECT_INFO", "IMAGE_FILE_NODES", "OBJECT_INFO_2026", "NodeCatalog", "expand_dynamic_inputs"]

#: The ``/object_info`` snapshot of ComfyUI 0.3.64 shipped with the package.
CORE_OBJECT_INFO = "object_info_core.json"
#: A trimmed ``/object_info`` of a 2026 ComfyUI (the 0.4x profile's; see object_info_2026.SOURCE.md).
OBJECT_INFO_2026 = "object_info_2026.json"

#: The ``TestSleep`` node of ComfyUI's test pack (``tests/execution/testing_nodes``), as /object_info shows it.
TEST_SLEEP_INFO: dict[str, Any] = {
    "input": {
        "required": {
            "value": ["*", {}],
            "seconds": [
                "FLOAT",
                {
                    "default": 1.0,
                    "min": 0.0,
                    "max": 9999.0,
                    "step": 0.01,
                    "tooltip": "The amount of time to sleep in seconds.",
                },
            ],
        },
        "hidden": {"unique_id": "UNIQUE_ID"},
    },
    "input_order": {"required": ["value", "seconds"], "hidden": ["unique_id"]},
    "output": ["*"],
    "output_is_list": [False],
    "output_name": ["*"],
    "name": "TestSleep",
    "display_name": "Test Sleep",
    "description": "",
    "python_module": "custom_nodes.testing-pack",
    "category": "_for_testing",
    "output_node": False,
}

#: Classes a profile may add to its catalogue, as if the server had these custom node packs installed:
#: ComfyUI's test pack, and (0.4x) a stand-in for VideoHelperSuite's VHS_VideoCombine.
TEST_PACK: dict[str, dict[str, Any]] = {"TestSleep": TEST_SLEEP_INFO, "VHS_VideoCombine": VHS_VIDEO_COMBINE_INFO}

#: Nodes whose image input is checked by a custom validation (ComfyUI's ``VALIDATE_INPUTS``).
IMAGE_FILE_NODES = frozenset({"LoadImage", "LoadImageMask", "LoadImageOutput"})

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


def expand_dynamic_inputs(info: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """``info`` with the sub-inputs of every DynamicCombo's chosen option added under dotted names.

    A DynamicCombo input (``["COMFY_DYNAMICCOMBO_V3", {"options": [{"key", "inputs"}]}]``) takes one of
    its keys; the inputs of that option are then expected as ``<name>.<sub>`` (nested: ``a.b.c``) with
    their own required/optional status (comfy_api/latest/_io.py@04e2a914 ``DynamicCombo``,
    ``get_finalized_class_inputs``; AFTER-0.3.64-evidence.md section 6). A DynamicCombo that is missing
    from the prompt or has an unknown key is no input at all, so it is not validated (the node then
    lacks it): ``DynamicCombo._expand_schema_for_dynamic`` in a real 0.33.0, REAL-SERVERS.md.
    Classes without a DynamicCombo are returned as they are.
    """
    sections = info.get("input") or {}
    if not any(_is_dynamic(spec) for c in ("required", "optional") for spec in (sections.get(c) or {}).values()):
        return info
    expanded: dict[str, dict[str, Any]] = {"required": {}, "optional": {}}
    order: dict[str, list[str]] = {"required": [], "optional": []}

    def add(category: str, name: str, spec: Any) -> None:
        chosen = None
        if _is_dynamic(spec):
            chosen = next((o for o in spec[1].get("options", []) if name in inputs and o.get("key") == inputs[name]),
                          None)
            if chosen is None:
                return
        expanded[category][name] = spec
        order[category].append(name)
        for sub_category in ("required", "optional"):
            for sub_name, sub_spec in ((chosen or {}).get("inputs", {}).get(sub_category) or {}).items():
                add(sub_category, f"{name}.{sub_name}", sub_spec)

    listed = info.get("input_order") or {}
    for category in ("required", "optional"):
        section = sections.get(category) or {}
        for name in listed.get(category) or list(section):
            if name in section:
                add(category, name, section[name])
    hidden = sections.get("hidden")
    if hidden:
        expanded["hidden"] = hidden
        order["hidden"] = list(listed.get("hidden") or hidden)
    return {**info, "input": expanded, "input_order": order}


def _options(spec: Any) -> list[Any] | None:
    """The choices of a combo input spec (old list form or V3 ``options``), ``None`` for other inputs."""
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return spec[0]
    if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) and isinstance(spec[1].get("options"), list):
        return list(spec[1]["options"])
    return None


def _is_dynamic(spec: Any) -> bool:
    return isinstance(spec, list) and len(spec) > 1 and spec[0] == DYNAMIC_COMBO and isinstance(spec[1], dict)


@functools.cache
def _load_object_info(resource: str) -> dict[str, Any]:
    text = importlib.resources.files(__package__).joinpath(resource).read_text("utf-8")
    info: dict[str, Any] = json.loads(text)
    return info


def _is_image_name(name: str) -> bool:
    kind, _ = mimetypes.guess_type(name)
    return kind is not None and kind.startswith("image/")


# Loader inputs that list a model folder's files, for ComfyTestServer.set_models.
MODEL_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "checkpoints": (("CheckpointLoaderSimple", "ckpt_name"), ("CheckpointLoader", "ckpt_name"),
                    ("ImageOnlyCheckpointLoader", "ckpt_name"), ("unCLIPCheckpointLoader", "ckpt_name"),
                    ("CreateHookModelAsLora", "ckpt_name"), ("CreateHookModelAsLoraModelOnly", "ckpt_name")),
    "loras": (("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name")),
    "vae": (("VAELoader", "vae_name"),),
    # no stand-in runs these: listed so that a snapshot's own files (the 2026 one has some) are cleared
    "text_encoders": (("CLIPLoader", "clip_name"), ("DualCLIPLoader", "clip_name1"), ("DualCLIPLoader", "clip_name2"),
                      *(("QuadrupleCLIPLoader", f"clip_name{i}") for i in range(1, 5)),
                      ("LTXAVTextEncoderLoader", "text_encoder")),
    "diffusion_models": (("UNETLoader", "unet_name"),),
    "upscale_models": (("UpscaleModelLoader", "model_name"),),
}

#: What each model folder holds when a server starts: the files the stand-in loaders run
#: (``pixel_space`` is VAELoader's built-in choice); every other folder is empty.
STAND_IN_MODELS: dict[str, tuple[str, ...]] = {"checkpoints": STAND_IN_CHECKPOINTS, "vae": ("pixel_space",)}


class NodeCatalog:
    """The node classes this server knows, with ComfyUI's ``/object_info`` entries.

    Entries are shared and must be treated as read-only. ``LoadImage``'s file list is the only live
    part: :meth:`object_info` fills it from the input directory at request time, like ComfyUI.
    """

    def __init__(
        self, *, input_dir: Path, object_info: str = CORE_OBJECT_INFO, test_pack: tuple[str, ...] = ("TestSleep",),
        removed: tuple[str, ...] = (),
    ) -> None:
        self._input_dir = input_dir
        self._classes: dict[str, dict[str, Any]] = {**_load_object_info(object_info),
                                                    **{name: TEST_PACK[name] for name in test_pack}}
        for class_type in removed:  # classes the server no longer has (replaced on submit)
            self._classes.pop(class_type, None)
        self._json_cache: tuple[tuple[str, ...], bytes] | None = None
        for folder in MODEL_INPUTS:  # only the models the stand-in loaders run
            self.set_models(folder, list(STAND_IN_MODELS.get(folder, ())))

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def get(self, class_type: Any) -> dict[str, Any] | None:
        """Return the entry of ``class_type``, or ``None``. An unhashable name raises ``TypeError``."""
        return self._classes.get(class_type)

    def __len__(self) -> int:
        return len(self._classes)

    def _input_files(self) -> list[str]:
        try:
            names = os.listdir(self._input_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self._input_dir, n)))

    def _with_live_lists(self, files: list[str], classes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        images = [f for f in files if _is_image_name(f)]
        out = dict(classes)
        for class_type, names in (("LoadImage", images), ("LoadImageMask", files)):
            if class_type in out:
                entry = copy.deepcopy(out[class_type])
                entry["input"]["required"]["image"][0] = names
                out[class_type] = entry
        return out

    def set_models(self, folder: str, names: list[str]) -> None:
        """Replace the file list of a model folder (``checkpoints``, ``loras``) in every loader that
        offers it, as if the server had those files. A loader with another required choice that offers
        nothing (the 2026 snapshot's ``CheckpointLoader`` has no ``config_name``) cannot run: it lists none."""
        for class_type, input_name in MODEL_INPUTS.get(folder, ()):
            entry = self._classes.get(class_type)
            if entry is None:
                continue
            entry = copy.deepcopy(entry)
            required = entry["input"].get("required") or {}
            runnable = all(_options(spec) != [] for name, spec in required.items() if name != input_name)
            for section in entry["input"].values():
                if isinstance(section, dict) and input_name in section:
                    spec = section[input_name]
                    if spec and isinstance(spec[0], list):
                        spec[0] = list(names) if runnable else []
                    elif len(spec) > 1 and isinstance(spec[1], dict) and "options" in spec[1]:
                        spec[1]["options"] = list(names) if runnable else []
            self._classes[class_type] = entry
        self._json_cache = None

    def object_info(self) -> dict[str, Any]:
        """The full ``GET /object_info`` answer (a new dict; entries other than LoadImage are shared)."""
        return self._with_live_lists(self._input_files(), self._classes)

    def object_info_json(self) -> bytes:
        """``GET /object_info`` serialised, cached until the input directory listing changes."""
        files = self._input_files()
        key = tuple(files)
        if self._json_cache is None or self._json_cache[0] != key:
            body = json.dumps(self._with_live_lists(files, self._classes)).encode("utf-8")
            self._json_cache = (key, body)
        return self._json_cache[1]

    def one(self, class_type: str) -> dict[str, Any]:
        """``GET /object_info/{class}``: ``{class: info}`` or ``{}``."""
        if class_type not in self._classes:
            return {}
        live = self._with_live_lists(self._input_files(), {class_type: self._classes[class_type]})
        return {class_type: live[class_type]}

