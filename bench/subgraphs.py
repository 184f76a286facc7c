"""Measure subgraph flattening on the official UI workflows (comfyui-workflow-templates-json).

    python bench/subgraphs.py [--catalogue hotfolder/testing/object_info_2026.json] [--examples 3]

Flattens every UI workflow of the installed package with hotfolder.subgraph, then converts the result
with hotfolder.convert against the node catalogue, and prints one table: how many workflows contain
subgraphs, how many flatten, how many convert, and the refusals by construct (with examples). It
measures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hotfolder.convert import ConversionError, convert_ui_workflow, is_ui_workflow  # noqa: E402
from hotfolder.subgraph import SubgraphError, flatten_subgraphs, has_subgraphs, subgraph_definitions  # noqa: E402

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
        try:
            convert_ui_workflow(flat, catalogue, name=name)
        except ConversionError as error:
            construct = str(error.where.get("construct", "?"))
            refusals[(with_subgraphs, construct)].append(f"{name}: {error.where.get('class_type')}")
            continue
        counts["converted" + (" (subgraphs)" if with_subgraphs else " (plain)")] += 1
    return {"counts": counts, "refusals": refusals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help="an /object_info JSON file")
    parser.add_argument("--examples", type=int, default=3, help="examples shown per refusal kind")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
