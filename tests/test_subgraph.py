"""hotfolder.templates.subgraph: UI workflows with subgraphs flattened as the frontend queues them, then converted.

Small hand-written workflows check each rule (ids, promoted values, muted and bypassed nodes, the -10 and
-20 boundaries); the official templates package checks that every real subgraph workflow flattens.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hotfolder.errors import TemplateError
from hotfolder.templates.convert import convert_ui_workflow, is_ui_workflow, ui_to_api
from hotfolder.templates.subgraph import SubgraphError, flatten_subgraphs, has_subgraphs

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE: dict[str, Any] = json.loads(
    (ROOT / "hotfolder" / "testing" / "object_info_2026.json").read_text(encoding="utf-8")
)
INNER_ID = "5fd17593-37c5-450a-8928-72d2971fca23"
OUTER_ID = "98b260aa-97cb-4c0c-a23b-c112110a86ab"


# ---- builders


def node(node_id: Any, kind: str, inputs=(), outputs=(), values=None, mode: int = 0, **extra: Any) -> dict[str, Any]:
    """A UI node; ``inputs`` are (name, type, link, widget?) tuples, ``outputs`` types."""
    sockets = []
    for name, kind_, link, *widget in inputs:
        socket = {"name": name, "type": kind_, "link": link}
        if widget and widget[0]:
            socket["widget"] = {"name": name}
        sockets.append(socket)
    out = {
        "id": node_id, "type": kind, "mode": mode, "inputs": sockets,
        "outputs": [{"name": t, "type": t, "links": []} for t in outputs],
        "widgets_values": [] if values is None else values,
    }  # fmt: skip
    out.update(extra)
    return out


def link(link_id: int, origin: Any, origin_slot: int, target: Any, target_slot: int, kind: str) -> dict[str, Any]:
    return {
        "id": link_id, "origin_id": origin, "origin_slot": origin_slot,
        "target_id": target, "target_slot": target_slot, "type": kind,
    }  # fmt: skip


def definition(def_id: str, name: str, inputs, outputs, nodes, links) -> dict[str, Any]:
    """A subgraph definition; ``inputs``/``outputs`` are (name, type) pairs."""
    return {
        "id": def_id, "name": name, "version": 1, "inputNode": {"id": -10}, "outputNode": {"id": -20},
        "inputs": [{"name": n, "type": t, "linkIds": []} for n, t in inputs],
        "outputs": [{"name": n, "type": t, "linkIds": []} for n, t in outputs],
        "widgets": [], "nodes": nodes, "links": links,
    }  # fmt: skip


def workflow(nodes, links, definitions) -> dict[str, Any]:
    return {"nodes": nodes, "links": links, "definitions": {"subgraphs": definitions}, "version": 0.4}


def empty_image(node_id: Any, width: int = 8, mode: int = 0, width_link: Any = None) -> dict[str, Any]:
    return node(
        node_id, "EmptyImage", [("width", "INT", width_link, True)], ["IMAGE"], [width, 8, 1, 0], mode=mode
    )


def invert(node_id: Any, source_link: Any, mode: int = 0) -> dict[str, Any]:
    return node(node_id, "ImageInvert", [("image", "IMAGE", source_link)], ["IMAGE"], mode=mode)


def save(node_id: Any, source_link: Any) -> dict[str, Any]:
    return node(node_id, "SaveImage", [("images", "IMAGE", source_link)], [], ["out"])


def invert_definition(mode: int = 0) -> dict[str, Any]:
    """IMAGE in -> ImageInvert 5 -> IMAGE out."""
    return definition(
        INNER_ID, "Invert", [("image", "IMAGE")], [("IMAGE", "IMAGE")],
        [invert(5, 1, mode=mode)],
        [link(1, -10, 0, 5, 0, "IMAGE"), link(2, 5, 0, -20, 0, "IMAGE")],
    )  # fmt: skip


def one_level(instance_mode: int = 0, inner_mode: int = 0) -> dict[str, Any]:
    """EmptyImage 1 -> instance 10 of Invert -> SaveImage 3."""
    return workflow(
        [
            empty_image(1),
            node(10, INNER_ID, [("image", "IMAGE", 11)], ["IMAGE"], mode=instance_mode),
            save(3, 12),
        ],
        [[11, 1, 0, 10, 0, "IMAGE"], [12, 10, 0, 3, 0, "IMAGE"]],
        [invert_definition(inner_mode)],
    )


def api(ui: dict[str, Any]) -> dict[str, Any]:
    return ui_to_api(flatten_subgraphs(ui), CATALOGUE)


# ---- one level


def test_inner_nodes_get_instance_colon_inner_ids_and_links_cross_both_boundaries() -> None:
    ui = one_level()
    flat = flatten_subgraphs(ui)
    assert [n["id"] for n in flat["nodes"]] == [1, "10:5", 3]
    assert "definitions" not in flat
    assert not has_subgraphs(flat) and has_subgraphs(ui)
    result = api(ui)
    assert result["10:5"] == {"inputs": {"image": ["1", 0]}, "class_type": "ImageInvert", "_meta": {"title": "Invert Image Colors"}}
    assert result["3"]["inputs"]["images"] == ["10:5", 0]
    assert set(result) == {"1", "3", "10:5"}


def test_flattening_leaves_its_argument_alone_and_plain_workflows_unchanged() -> None:
    ui = one_level()
    before = copy.deepcopy(ui)
    flatten_subgraphs(ui)
    assert ui == before
    plain = {"nodes": [empty_image(1), save(3, 12)], "links": [[12, 1, 0, 3, 0, "IMAGE"]], "extra": {"a": 1}}
    assert flatten_subgraphs(plain) == plain


def test_two_instances_of_one_definition_are_separate_nodes() -> None:
    ui = workflow(
        [
            empty_image(1),
            node(10, INNER_ID, [("image", "IMAGE", 11)], ["IMAGE"]),
            node(20, INNER_ID, [("image", "IMAGE", 12)], ["IMAGE"]),
            save(3, 13),
        ],
        [[11, 1, 0, 10, 0, "IMAGE"], [12, 10, 0, 20, 0, "IMAGE"], [13, 20, 0, 3, 0, "IMAGE"]],
        [invert_definition()],
    )
    result = api(ui)
    assert result["10:5"]["inputs"]["image"] == ["1", 0]
    assert result["20:5"]["inputs"]["image"] == ["10:5", 0]
    assert result["3"]["inputs"]["images"] == ["20:5", 0]


# ---- nested


def nested() -> dict[str, Any]:
    """Instance 10 of Outer, which holds instance 7 of Invert between two of its own ImageInverts."""
    outer = definition(
        OUTER_ID, "Outer", [("image", "IMAGE")], [("IMAGE", "IMAGE")],
        [invert(2, 1), node(7, INNER_ID, [("image", "IMAGE", 2)], ["IMAGE"]), invert(9, 3)],
        [
            link(1, -10, 0, 2, 0, "IMAGE"), link(2, 2, 0, 7, 0, "IMAGE"),
            link(3, 7, 0, 9, 0, "IMAGE"), link(4, 9, 0, -20, 0, "IMAGE"),
        ],
    )  # fmt: skip
    return workflow(
        [empty_image(1), node(10, OUTER_ID, [("image", "IMAGE", 11)], ["IMAGE"]), save(3, 12)],
        [[11, 1, 0, 10, 0, "IMAGE"], [12, 10, 0, 3, 0, "IMAGE"]],
        [outer, invert_definition()],
    )


def test_nested_subgraphs_get_paths_a_b_c() -> None:
    result = api(nested())
    assert set(result) == {"1", "3", "10:2", "10:7:5", "10:9"}
    assert result["10:2"]["inputs"]["image"] == ["1", 0]
    assert result["10:7:5"]["inputs"]["image"] == ["10:2", 0]
    assert result["10:9"]["inputs"]["image"] == ["10:7:5", 0]
    assert result["3"]["inputs"]["images"] == ["10:9", 0]


def test_a_definition_that_contains_itself_is_refused_with_its_name() -> None:
    ui = one_level()
    looped = ui["definitions"]["subgraphs"][0]
    looped["nodes"].append(node(6, INNER_ID, [("image", "IMAGE", None)], ["IMAGE"]))
    with pytest.raises(SubgraphError) as caught:
        flatten_subgraphs(ui, name="loop.json")
    assert isinstance(caught.value, TemplateError)
    assert "'Invert' contains itself" in str(caught.value) and "loop.json" in str(caught.value)
    assert caught.value.where["construct"] == "subgraph"


# ---- promoted widgets


def promoted(instance_values: list[Any], outer_link: Any = None) -> dict[str, Any]:
    """Instance 10 of a definition whose input 'width' (INT) feeds EmptyImage 4's width widget."""
    sized = definition(
        INNER_ID, "Sized", [("width", "INT")], [("IMAGE", "IMAGE")],
        [empty_image(4, width=8, width_link=1)],
        [link(1, -10, 0, 4, 0, "INT"), link(2, 4, 0, -20, 0, "IMAGE")],
    )  # fmt: skip
    nodes = [
        node(10, INNER_ID, [("width", "INT", outer_link, True)], ["IMAGE"], instance_values),
        save(3, 12),
    ]
    links = [[12, 10, 0, 3, 0, "IMAGE"]]
    if outer_link is not None:
        nodes.append(node(30, "PrimitiveInt", [], ["INT"], [99, "fixed"]))
        links.append([outer_link, 30, 0, 10, 0, "INT"])
    return workflow(nodes, links, [sized])


def test_a_value_promoted_onto_the_instance_overrides_the_inner_widget() -> None:
    result = api(promoted([64]))
    assert result["10:4"]["inputs"]["width"] == 64
    assert result["10:4"]["inputs"]["height"] == 8
    assert result["3"]["inputs"]["images"] == ["10:4", 0]


def test_without_a_saved_instance_value_the_inner_widget_value_is_used() -> None:
    assert api(promoted([]))["10:4"]["inputs"]["width"] == 8
    assert api(promoted([None]))["10:4"]["inputs"]["width"] == 8


def test_a_link_into_the_instance_input_wins_over_its_promoted_value() -> None:
    result = api(promoted([64], outer_link=21))
    assert result["10:4"]["inputs"]["width"] == ["30", 0]
    assert result["30"]["inputs"]["value"] == 99


def test_promoted_values_are_per_instance() -> None:
    ui = promoted([64])
    ui["nodes"].append(node(20, INNER_ID, [("width", "INT", None, True)], ["IMAGE"], [32]))
    result = api(ui)
    assert result["10:4"]["inputs"]["width"] == 64
    assert result["20:4"]["inputs"]["width"] == 32


def test_a_promoted_value_reaches_a_widget_two_levels_down() -> None:
    sized = promoted([])["definitions"]["subgraphs"][0]
    outer = definition(
        OUTER_ID, "Outer", [("width", "INT")], [("IMAGE", "IMAGE")],
        [node(7, INNER_ID, [("width", "INT", 1, True)], ["IMAGE"], [16])],
        [link(1, -10, 0, 7, 0, "INT"), link(2, 7, 0, -20, 0, "IMAGE")],
    )  # fmt: skip
    top = [node(10, OUTER_ID, [("width", "INT", None, True)], ["IMAGE"]), save(3, 12)]
    with_value = workflow(copy.deepcopy(top), [[12, 10, 0, 3, 0, "IMAGE"]], [outer, sized])
    with_value["nodes"][0]["widgets_values"] = [48]
    assert api(with_value)["10:7:4"]["inputs"]["width"] == 48
    # No value on the outer instance: the inner instance's own value applies.
    without = workflow(copy.deepcopy(top), [[12, 10, 0, 3, 0, "IMAGE"]], [outer, sized])
    assert api(without)["10:7:4"]["inputs"]["width"] == 16


# ---- muted and bypassed


def test_a_muted_inner_node_is_dropped_and_its_consumer_input_left_out() -> None:
    result = convert_ui_workflow(flatten_subgraphs(one_level(inner_mode=2)), CATALOGUE)
    assert "10:5" not in result.workflow
    assert "images" not in result.workflow["3"]["inputs"]
    assert any("10:5 (ImageInvert): muted" in d for d in result.dropped)


def test_a_bypassed_inner_node_passes_its_input_through() -> None:
    result = api(one_level(inner_mode=4))
    assert "10:5" not in result
    assert result["3"]["inputs"]["images"] == ["1", 0]


def test_a_muted_instance_drops_all_its_inner_nodes() -> None:
    flat = flatten_subgraphs(one_level(instance_mode=2))
    assert [n["id"] for n in flat["nodes"]] == [1, 10, 3]
    result = ui_to_api(flat, CATALOGUE)
    assert set(result) == {"1", "3"} and "images" not in result["3"]["inputs"]


def test_a_bypassed_instance_passes_its_input_through() -> None:
    result = api(one_level(instance_mode=4))
    assert set(result) == {"1", "3"}
    assert result["3"]["inputs"]["images"] == ["1", 0]


# ---- boundaries


def test_one_subgraph_input_feeds_several_inner_nodes_and_an_output_passes_an_input_straight_through() -> None:
    fan = definition(
        INNER_ID, "Fan", [("image", "IMAGE")], [("A", "IMAGE"), ("B", "IMAGE"), ("same", "IMAGE"), ("none", "IMAGE")],
        [invert(5, 1), node(6, "ImageBlur", [("image", "IMAGE", 2)], ["IMAGE"], [3, 1.5])],
        [
            link(1, -10, 0, 5, 0, "IMAGE"), link(2, -10, 0, 6, 0, "IMAGE"),
            link(3, 5, 0, -20, 0, "IMAGE"), link(4, 6, 0, -20, 1, "IMAGE"), link(5, -10, 0, -20, 2, "IMAGE"),
        ],
    )  # fmt: skip
    ui = workflow(
        [
            empty_image(1),
            node(10, INNER_ID, [("image", "IMAGE", 11)], ["IMAGE", "IMAGE", "IMAGE", "IMAGE"]),
            save(3, 12), save(4, 13), save(5, 14), save(6, 15),
        ],  # fmt: skip
        [
            [11, 1, 0, 10, 0, "IMAGE"], [12, 10, 0, 3, 0, "IMAGE"], [13, 10, 1, 4, 0, "IMAGE"],
            [14, 10, 2, 5, 0, "IMAGE"], [15, 10, 3, 6, 0, "IMAGE"],
        ],  # fmt: skip
        [fan],
    )
    result = api(ui)
    assert result["10:5"]["inputs"]["image"] == ["1", 0]
    assert result["10:6"]["inputs"] == {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}
    assert result["3"]["inputs"]["images"] == ["10:5", 0]
    assert result["4"]["inputs"]["images"] == ["10:6", 0]
    assert result["5"]["inputs"]["images"] == ["1", 0]
    assert "images" not in result["6"]["inputs"]  # an output fed by nothing inside


def test_a_link_missing_inside_a_definition_is_named() -> None:
    ui = one_level()
    ui["definitions"]["subgraphs"][0]["links"].pop(0)
    with pytest.raises(SubgraphError, match=r"input 'image' of node 10:5 \(ImageInvert\) uses link 1"):
        flatten_subgraphs(ui)


def test_list_links_and_string_ids_are_accepted() -> None:
    ui = one_level()
    sub = ui["definitions"]["subgraphs"][0]
    sub["links"] = [[1, -10, 0, 5, 0, "IMAGE"], [2, 5, 0, -20, 0, "IMAGE"]]
    ui["nodes"][1]["id"] = "10"
    ui["links"] = [[11, 1, 0, "10", 0, "IMAGE"], [12, "10", 0, 3, 0, "IMAGE"]]
    assert api(ui)["3"]["inputs"]["images"] == ["10:5", 0]


# ---- the official workflows


def _official() -> list[tuple[str, dict[str, Any]]]:
    package = pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    folder = resources.files(package) / "templates"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            if is_ui_workflow(data):
                out.append((entry.name, data))
    return out


def test_every_official_subgraph_workflow_flattens_and_most_then_convert() -> None:
    """214 of the 644 official UI workflows contain subgraphs; all flatten, none is then refused for a
    subgraph, and at least 120 convert against the 2026 catalogue, unflattened (the rest need node classes
    or combo choices the May 2026 catalogue lacks; bench/subgraphs.py prints the table)."""
    from hotfolder.templates.convert import ConversionError

    workflows = [(name, ui) for name, ui in _official() if has_subgraphs(ui)]
    assert len(workflows) >= 200
    converted = 0
    for name, ui in workflows:
        flat = flatten_subgraphs(ui, name=name)
        assert not has_subgraphs(flat)
        ids = [str(n["id"]) for n in flat["nodes"]]
        assert len(ids) == len(set(ids)), name
        try:
            convert_ui_workflow(ui, CATALOGUE, name=name)
        except ConversionError as error:
            assert error.where.get("construct") in ("unknown class", "combo choice"), (name, str(error))
            continue
        converted += 1
    assert converted >= 120, converted
