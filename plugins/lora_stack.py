"""LoRA stack: add LoRAs to any checkpoint workflow from the scenario, without editing the template.

Scenario::

    template: txt2img
    params: {prompt: "a red fox, watercolor"}
    loras:
      - {name: watercolor_v2.safetensors, strength: 0.8}        # model and clip strength 0.8
      - {name: detail_tweaker.safetensors, strength_model: 0.5, strength_clip: 0.2}
      - fox_style.safetensors                                      # strength 1.0

For each entry a ``LoraLoader`` node is inserted between the checkpoint loader
(``CheckpointLoaderSimple``, ``CheckpointLoader`` or ``unCLIPCheckpointLoader``) and everything that
used its MODEL (output 0) or CLIP (output 1): the first LoRA takes the checkpoint's outputs, each next
one the previous LoRA's, and every former consumer (KSampler, CLIPTextEncode, LoRAs already in the
template, ...) is rewired to the last one. The VAE link is left alone. New nodes get the next free
numeric ids and titles ``LoRA 1: <name>``.

A workflow with several checkpoint loaders needs ``lora_checkpoint: <node id, title or class_type>``
to say which one. ``name`` must be a file in ComfyUI's ``models/loras`` folder, as ComfyUI lists it
(with its extension and subfolder); ComfyUI's validation reports a name it doesn't have. Strengths are
numbers from -100 to 100 (ComfyUI's limits); ``strength`` sets both, ``strength_model`` and
``strength_clip`` set one each (default 1.0).
"""

from __future__ import annotations

import math
from typing import Any

from hotfolder import get_plugin_logger, hookimpl
from hotfolder.errors import TemplateError
from hotfolder.templates import inject

logger = get_plugin_logger(__name__)

#: Checkpoint loaders whose outputs 0 and 1 are MODEL and CLIP.
CHECKPOINT_LOADERS = ("CheckpointLoaderSimple", "CheckpointLoader", "unCLIPCheckpointLoader")
MODEL_SLOT, CLIP_SLOT = 0, 1
STRENGTH_LIMIT = 100.0
ENTRY_KEYS = {"name", "strength", "strength_model", "strength_clip"}


def _strength(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if not -STRENGTH_LIMIT <= value <= STRENGTH_LIMIT:
        raise ValueError(f"{what} = {value} is outside -{STRENGTH_LIMIT:g}..{STRENGTH_LIMIT:g}")
    return float(value)


def check_loras(value: Any) -> list[dict[str, Any]]:
    """Validate ``loras:`` and return it as ``[{name, strength_model, strength_clip}, ...]``."""
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("write it as a list of {name, strength} entries")
    out = []
    for number, entry in enumerate(value, start=1):
        what = f"entry {number}"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"{what} is {type(entry).__name__}; write {{name: file.safetensors, strength: 0.8}}")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise ValueError(f"{what} has unknown key(s) {', '.join(map(repr, unknown))}; use {sorted(ENTRY_KEYS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what} needs a 'name' (the LoRA file, e.g. 'style.safetensors')")
        both = _strength(entry["strength"], f"{what} strength") if "strength" in entry else 1.0
        out.append({
            "name": name.strip(),
            "strength_model": _strength(entry["strength_model"], f"{what} strength_model")
            if "strength_model" in entry else both,
            "strength_clip": _strength(entry["strength_clip"], f"{what} strength_clip")
            if "strength_clip" in entry else both,
        })
    return out


def check_checkpoint(value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("write the checkpoint loader's node id, title or class_type as a string")


@hookimpl
def register_scenario_keys(register):
    register("loras", description="LoRAs to insert after the checkpoint loader: [{name, strength}]",
             check=check_loras)
    register("lora_checkpoint", description="which checkpoint loader gets the LoRAs (node id, title or class)",
             check=check_checkpoint)


@hookimpl
def prepare_workflow(workflow, spec):
    loras = spec.options.get("loras")
    if not loras:
        return
    loras = check_loras(loras)  # also accepts jobs made before the key was checked
    where = {"file": spec.source.name, "job": spec.name, "key": "loras"}
    checkpoint = _find_checkpoint(workflow, spec.options.get("lora_checkpoint"), where)
    insert_lora_stack(workflow, checkpoint, loras)
    logger.debug("job %s: %d LoRA(s) after node %s", spec.name, len(loras), checkpoint)


def _find_checkpoint(workflow: dict[str, Any], chosen: Any, where: dict[str, Any]) -> str:
    if chosen:
        node_id = inject.resolve_node(workflow, chosen)
        if workflow[node_id].get("class_type") not in CHECKPOINT_LOADERS:
            raise TemplateError(
                f"lora_checkpoint {chosen!r} is node {node_id} ({workflow[node_id].get('class_type')}), "
                "not a checkpoint loader",
                hint=f"Name a {' / '.join(CHECKPOINT_LOADERS)} node.",
                where=where,
            )
        return node_id
    found = [node_id for node_id, node in workflow.items() if node.get("class_type") in CHECKPOINT_LOADERS]
    if len(found) == 1:
        return found[0]
    if not found:
        raise TemplateError(
            f"Job {where['job']!r} has 'loras', but its workflow has no checkpoint loader "
            f"({', '.join(CHECKPOINT_LOADERS)})",
            hint="Use 'loras:' only with templates that load a checkpoint.",
            where=where,
        )
    listed = ", ".join(f"{n} ({_title(workflow, n)})" for n in found)
    raise TemplateError(
        f"Job {where['job']!r} has 'loras', and its workflow has {len(found)} checkpoint loaders: {listed}",
        hint="Add 'lora_checkpoint: <node id or title>' to the scenario to say which one gets the LoRAs.",
        where=where,
    )


def _title(workflow: dict[str, Any], node_id: str) -> str:
    return str(inject.describe_node(workflow, node_id)["title"] or workflow[node_id]["class_type"])


def _next_ids(workflow: dict[str, Any], count: int) -> list[str]:
    numbers = [int(node_id) for node_id in workflow if node_id.isdigit()]
    start = max(numbers, default=0) + 1
    return [str(start + i) for i in range(count)]


def insert_lora_stack(workflow: dict[str, Any], checkpoint: str, loras: list[dict[str, Any]]) -> list[str]:
    """Insert one LoraLoader per entry after node ``checkpoint``, rewiring its MODEL and CLIP
    consumers to the last one; return the new node ids (in chain order)."""
    ids = _next_ids(workflow, len(loras))
    consumers = [
        (inputs, name, value[1])
        for node_id, node in workflow.items()
        for inputs in [node.get("inputs") or {}]
        for name, value in inputs.items()
        if _is_link(value) and value[0] == checkpoint and value[1] in (MODEL_SLOT, CLIP_SLOT)
    ]
    source = checkpoint
    for number, (node_id, lora) in enumerate(zip(ids, loras, strict=True), start=1):
        workflow[node_id] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": [source, MODEL_SLOT],
                "clip": [source, CLIP_SLOT],
                "lora_name": lora["name"],
                "strength_model": lora["strength_model"],
                "strength_clip": lora["strength_clip"],
            },
            "_meta": {"title": f"LoRA {number}: {lora['name']}"},
        }
        source = node_id
    for inputs, name, slot in consumers:
        inputs[name] = [source, slot]
    return ids


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], int) and not isinstance(value[1], bool)
    )
