"""Measure subgraph flattening on the official UI workflows (comfyui-workflow-templates-json).

    python bench/subgraphs.py [--catalogue hotfolder/testing/object_info_2026.json] [--examples 3]
                              [--comfy-cli PYTHON]

Flattens every UI workflow of the installed package with hotfolder.templates.subgraph and converts it with
hotfolder.templates.convert (which flattens by itself) against the node catalogue, and prints one table: how
many workflows contain subgraphs, how many flatten, how many convert, and the refusals by construct (with
examples: workflow, node, class, input). With ``--comfy-cli`` (a Python that has comfy-cli installed, e.g. a
throwaway venv: it is not a project dependency) every UI workflow is also converted by comfy-cli's
``convert_ui_to_api``, and those both convert are compared node for node (class, every input, every link);
the differing inputs are listed by class and input. It measures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hotfolder.templates.convert import ConversionError, convert_ui_workflow, is_ui_workflow  # noqa: E402
from hotfolder.templates.subgraph import SubgraphError, flatten_subgraphs, has_subgraphs, subgraph_definitions  # noqa: E402

DEFAULT_CATALOGUE = ROOT / "hotfolder" / "testing" / "object_info_2026.json"


def official_workflows() -> list[tuple[str, dict[str, Any]]]:
    """The UI-format workflows of the installed comfyui_workflow_templates_json package, by file name."""
    import comfyui_workflow_templates_json as package

    folder = resources.files(package) / "templates"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            if is_ui_workflow(data):
                out.append((entry.name, data))
    return out


def _nested(ui: dict[str, Any]) -> bool:
    definitions = subgraph_definitions(ui)
    return any(
        isinstance(n, dict) and str(n.get("type")) in definitions
        for d in definitions.values()
        for n in d.get("nodes") or []
    )


def measure(catalogue: dict[str, Any]) -> dict[str, Any]:
    """Counts over the official workflows: totals, flattening, conversion and refusals by construct."""
    counts: Counter[str] = Counter()
    refusals: dict[tuple[bool, str], list[str]] = defaultdict(list)
    flat_ids: dict[str, set[str]] = {}
    converted: dict[str, dict[str, Any]] = {}
    for name, ui in official_workflows():
        with_subgraphs = has_subgraphs(ui)
        counts["workflows"] += 1
        counts["with subgraphs"] += with_subgraphs
        counts["nested subgraphs"] += with_subgraphs and _nested(ui)
        try:
            flat = flatten_subgraphs(ui, name=name)
        except SubgraphError as error:
            refusals[(with_subgraphs, "flatten")].append(f"{name}: {error.args[0]}")
            continue
        counts["flattened" + (" (subgraphs)" if with_subgraphs else "")] += 1
        if with_subgraphs:
            flat_ids[name] = _live_ids(flat, set(subgraph_definitions(ui)))
        try:
            workflow = convert_ui_workflow(ui, catalogue, name=name).workflow
        except ConversionError as error:
            construct = str(error.where.get("construct", "?"))
            where = error.where
            refusals[(with_subgraphs, construct)].append(
                f"{name}: node {where.get('node')} ({where.get('class_type')})"
                + (f" input {where['input']!r}" if where.get("input") else "")
            )
            continue
        counts["converted" + (" (subgraphs)" if with_subgraphs else " (plain)")] += 1
        converted[name] = workflow
    return {"counts": counts, "refusals": refusals, "flat_ids": flat_ids, "converted": converted}


_VIRTUAL = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})


def _live_ids(flat: dict[str, Any], instance_types: set[str]) -> set[str]:
    """Ids of the flattened nodes that become API nodes (not virtual, muted, bypassed or a kept instance)."""
    return {
        str(n["id"]) for n in flat["nodes"]
        if n["type"] not in _VIRTUAL | instance_types and n.get("mode", 0) not in (2, 4)
    }  # fmt: skip


_COMFY_CLI = """
import json, logging, pathlib, sys
logging.disable(logging.CRITICAL)
from comfy_cli.workflow_to_api import convert_ui_to_api
info = json.loads(pathlib.Path(sys.argv[1]).read_text())
out = {}
for path in sorted(pathlib.Path(sys.argv[2]).glob("*.json")):
    ui = json.loads(path.read_text())
    if isinstance(ui, dict) and isinstance(ui.get("nodes"), list) and "links" in ui:
        try:
            out[path.name] = convert_ui_to_api(ui, info)
        except Exception as error:
            out[path.name] = {"__error__": repr(error)[:300]}
print(json.dumps(out))
"""


def comfy_cli_exports(python: str, catalogue: Path) -> dict[str, Any]:
    """comfy-cli's API export of every official UI workflow, run in ``python`` (a separate venv)."""
    import comfyui_workflow_templates_json as package

    folder = str(resources.files(package) / "templates")
    done = subprocess.run([python, "-c", _COMFY_CLI, str(catalogue), folder], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _plain(value: Any) -> Any:
    return value["__value__"] if isinstance(value, dict) and "__value__" in value else value


def compare(result: dict[str, Any], theirs: dict[str, Any]) -> tuple[Counter[str], Counter[tuple[str, str]], dict]:
    """Agreement with comfy-cli: counts, the differing inputs by (class, input), and one example of each."""
    counts: Counter[str] = Counter()
    differing: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    for name, ids in result["flat_ids"].items():
        export = theirs.get(name, {"__error__": "missing"})
        if "__error__" not in export:
            counts["subgraph workflows: same API node ids"] += ids == set(export)
    for name, ours in result["converted"].items():
        export = theirs.get(name, {"__error__": "missing"})
        if "__error__" in export:
            counts["comfy-cli failed"] += 1
            continue
        counts["both converted"] += 1
        if set(ours) != set(export):
            counts["different node ids"] += 1
            continue
        same = True
        for node_id, node in ours.items():
            if node["class_type"] != export[node_id].get("class_type"):
                same = False
                differing[(node["class_type"], "class_type")] += 1
                continue
            mine = {k: _plain(v) for k, v in node["inputs"].items()}
            cli = {k: _plain(v) for k, v in export[node_id]["inputs"].items()}
            for key in sorted(set(mine) | set(cli)):
                a, b = mine.get(key, "<absent>"), cli.get(key, "<absent>")
                if a != b:
                    same = False
                    differing[(node["class_type"], key)] += 1
                    examples.setdefault((node["class_type"], key), f"{name} node {node_id}: {a!r:.60} vs comfy-cli {b!r:.60}")
        counts["identical node for node" if same else "differing"] += 1
    return counts, differing, examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help="an /object_info JSON file")
    parser.add_argument("--examples", type=int, default=3, help="examples shown per refusal kind")
    parser.add_argument("--comfy-cli", metavar="PYTHON", help="a Python with comfy-cli installed, to compare")
    args = parser.parse_args(argv)
    catalogue = json.loads(args.catalogue.read_text(encoding="utf-8"))
    result = measure(catalogue)
    counts, refusals = result["counts"], result["refusals"]
    plain = counts["workflows"] - counts["with subgraphs"]
    print(f"catalogue: {args.catalogue} ({len(catalogue)} node classes)")
    print(f"{'measure':<44} {'with subgraphs':>15} {'without':>8} {'all':>5}")
    rows = [
        ("UI workflows", counts["with subgraphs"], plain),
        ("flatten without error", counts["flattened (subgraphs)"], counts["flattened"]),
        ("convert after flattening", counts["converted (subgraphs)"], counts["converted (plain)"]),
    ]
    for label, left, right in rows:
        print(f"{label:<44} {left:>15} {right:>8} {left + right:>5}")
    print(f"{'  of which nested subgraphs':<44} {counts['nested subgraphs']:>15}")
    for construct in sorted({c for _, c in refusals}):
        left, right = refusals.get((True, construct), []), refusals.get((False, construct), [])
        print(f"{'refused: ' + construct:<44} {len(left):>15} {len(right):>8} {len(left) + len(right):>5}")
        for example in left[: args.examples] + right[: args.examples]:
            print(f"    e.g. {example}")
    if args.comfy_cli:
        agreement, differing, examples = compare(result, comfy_cli_exports(args.comfy_cli, args.catalogue))
        print("compared with comfy-cli's convert_ui_to_api:")
        for label, number in sorted(agreement.items()):
            print(f"  {label:<42} {number:>15}")
        print("  differing inputs (class, input: nodes):")
        for (class_type, key), number in differing.most_common():
            print(f"    {class_type}.{key}: {number}  e.g. {examples[(class_type, key)]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
