"""Scenario files shared by the daemon test and the real-ComfyUI integration test (model-free only)."""

from __future__ import annotations

import json
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# name -> (content, outbox folders it must produce)
GOOD_INPUTS: dict[str, tuple[str | bytes, list[str]]] = {
    "single.yaml": ("name: red-fox\nparams:\n  width: 16\n  height: 8\n", ["red-fox"]),
    "one.json": (json.dumps({"params": {"width": 10, "color": 1}}), ["one"]),
    "batch.yml": ("params: {height: 6}\njobs:\n  - params: {width: 6}\n  - params: {width: 7}\n", ["batch-001", "batch-002"]),
    "grid.toml": ("[params]\nwidth = 5\n[matrix]\ncolor = [3, 4]\n", ["grid-001", "grid-002"]),
    "rows.csv": ("width,height,Save Image.filename_prefix\n8,8,rows\n9,9,rows\n", ["rows-001", "rows-002"]),
    "lines.jsonl": ('{"params": {"width": 11}}\n{"params": {"width": 12}, "name": "twelve"}\n', ["lines-001", "twelve-002"]),
    "noted.csv": ("width,#notes\n8,a \"quoted\" note 🦊\n9,\n", ["noted-001", "noted-002"]),
    "setty.yaml": ('set:\n  "Empty Image.width": 20\n  "3.filename_prefix": "custom"\n', ["setty"]),
}

TEMPLATES: dict[str, object] = {
    "needs_var.json": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": "{{ mystery }}", "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["1", 0]}},
    },
    "two_saves.json": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "a", "images": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "b", "images": ["1", 0]}},
    },
    "escape.json": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "../../escape", "images": ["1", 0]}},
    },
    "ui_workflow.json": {"last_node_id": 2, "last_link_id": 1, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": [], "version": 0.4},
}

# name -> (content, a string the error file must contain)
BAD_INPUTS: dict[str, tuple[str | bytes, str]] = {
    "malformed.json": ('{"params": {"width": 8,', "line"),
    "malformed.yaml": ("params: [unclosed\n", "line"),
    "malformed.toml": ("params = {\n", "line"),
    "ragged.csv": ("width,height\n1,2,3\n", "line"),
    "empty.yaml": ("", "empty"),
    "garbage.json": (bytes(range(256)) * 4, "garbage.json"),
    "unknown-key.yaml": ("parmas: {width: 8}\n", "parmas"),
    "unknown-template.yaml": ("template: nosuch\n", "nosuch"),
    "undefined.yaml": ("template: needs_var\n", "mystery"),
    "no-node.yaml": ('set:\n  "NoSuchNode.width": 1\n', "NoSuchNode"),
    "two-nodes.yaml": ('template: two_saves\nset:\n  "SaveImage.filename_prefix": x\n', "SaveImage"),
    "ui-format.yaml": ("template: ui_workflow\n", "API"),
    "node-errors.yaml": ("params: {width: 0}\n", "width"),
    "exec-error.yaml": ("template: escape\n", "outside the output folder"),
    "prompts.txt": ("a red fox\n", "'prompt'"),  # the default template (invert) takes no prompt
    "typo.yaml": ("params: {widht: 8}\n", "'width'"),
}


def write_inputs(project: Path, inputs: dict[str, tuple[str | bytes, object]]) -> list[str]:
    """Write the extra templates, then drop each input into the inbox (atomically, like a careful producer)."""
    for name, data in TEMPLATES.items():
        path = project / "templates" / name
        if not path.exists():
            path.write_text(json.dumps(data), encoding="utf-8")
    for name, (content, _) in inputs.items():
        tmp = project / "inbox" / f".{name}.tmp"
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
        tmp.rename(project / "inbox" / name)
    return list(inputs)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_good_results(project: Path, names: list[str]) -> None:
    for name in names:
        assert (project / "inbox" / "done" / name).is_file(), f"{name} not in done/"
        for folder in GOOD_INPUTS[name][1]:
            out = project / "outbox" / folder
            sidecar = json.loads((out / f"{folder}.json").read_text(encoding="utf-8"))
            assert sidecar["scenario"]["file"] == name
            assert sidecar["prompt_id"] and sidecar["outputs"], sidecar
            for entry in sidecar["outputs"]:
                png_size(out / entry["file"])
                assert (out / entry["file"]).stat().st_size == entry["size"]
    red = project / "outbox" / "red-fox"
    (png,) = red.glob("*.png")
    assert png_size(png) == (16, 8)
    setty = json.loads((project / "outbox" / "setty" / "setty.json").read_text())
    assert setty["workflow"]["1"]["inputs"]["width"] == 20
    assert setty["outputs"][0]["server_filename"].startswith("custom")
    noted = json.loads((project / "outbox" / "noted-001" / "noted-001.json").read_text())
    assert noted["params"]["notes"] == 'a "quoted" note 🦊'
