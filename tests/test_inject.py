"""Tests for setting node inputs by address: hotfolder.templates.inject."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hotfolder.errors import AddressError, TemplateError
from hotfolder.templates import inject

WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 1, "steps": 20, "cfg": 8.0, "model": ["4", 0], "positive": ["6", 0]},
        "_meta": {"title": "KSampler"},
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1.5.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["4", 1]}, "_meta": {"title": "Positive"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["4", 1]}, "_meta": {"title": "Negative"}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}, "_meta": {"title": "Save Image"}},
    "10": {"class_type": "EmptyLatentImage", "inputs": {"width": 512}, "_meta": {"title": "6"}},
    "11": {"class_type": "LoraLoader", "inputs": {}, "_meta": {"title": "SD v1.5 Loader"}},
}


@pytest.fixture
def workflow() -> dict[str, Any]:
    return copy.deepcopy(WORKFLOW)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("KSampler.cfg", ("KSampler", "cfg")),
        ("6.text", ("6", "text")),
        ("Save Image.filename_prefix", ("Save Image", "filename_prefix")),
        ("SD v1.5 Loader.strength", ("SD v1.5 Loader", "strength")),
        ("a.b.c", ("a.b", "c")),
    ],
)
def test_parse_address_splits_at_the_last_dot(address: str, expected: tuple[str, str]) -> None:
    assert inject.parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "problem"), [("KSampler", "no '.'"), (".cfg", "no node"), ("KSampler.", "no input"), ("", "no '.'")]
)
def test_parse_address_refuses_malformed_addresses(address: str, problem: str) -> None:
    with pytest.raises(AddressError) as info:
        inject.parse_address(address)
    assert problem in info.value.message
    assert repr(address) in info.value.message
    assert info.value.where["address"] == address
    assert "<node>.<input>" in (info.value.hint or "")


def test_parse_address_refuses_non_strings() -> None:
    with pytest.raises(AddressError):
        inject.parse_address(5)  # type: ignore[arg-type]


def test_address_error_is_a_template_error_with_stage_inject() -> None:
    with pytest.raises(TemplateError) as info:
        inject.parse_address("nodot")
    assert info.value.to_dict()["stage"] == "inject"


def test_resolve_node_by_id_title_and_class_type(workflow: dict[str, Any]) -> None:
    assert inject.resolve_node(workflow, "3") == "3"
    assert inject.resolve_node(workflow, "Positive") == "6"
    assert inject.resolve_node(workflow, "Save Image") == "9"
    assert inject.resolve_node(workflow, "SaveImage") == "9"
    assert inject.resolve_node(workflow, "CheckpointLoaderSimple") == "4"


def test_resolve_node_id_wins_over_a_title_that_looks_like_an_id(workflow: dict[str, Any]) -> None:
    # node 10 has the title "6", but "6" is a node id, and ids win
    assert inject.resolve_node(workflow, "6") == "6"


def test_resolve_node_title_wins_over_class_type(workflow: dict[str, Any]) -> None:
    workflow["20"] = {"class_type": "Positive", "inputs": {}}
    assert inject.resolve_node(workflow, "Positive") == "6"


def test_resolve_node_unique_title_beats_ambiguous_class_type(workflow: dict[str, Any]) -> None:
    workflow["12"] = {"class_type": "Thing", "inputs": {}, "_meta": {"title": "CLIPTextEncode"}}
    assert inject.resolve_node(workflow, "CLIPTextEncode") == "12"


def test_resolve_node_matching_is_exact(workflow: dict[str, Any]) -> None:
    with pytest.raises(AddressError):
        inject.resolve_node(workflow, "positive")
    with pytest.raises(AddressError):
        inject.resolve_node(workflow, " 3")


def test_resolve_node_no_match_lists_every_candidate(workflow: dict[str, Any]) -> None:
    with pytest.raises(AddressError) as info:
        inject.resolve_node(workflow, "Sampler")
    err = info.value
    assert "'Sampler'" in err.message
    assert "matches no node" in err.message
    assert '3 (KSampler, "KSampler")' in err.message
    assert "4 (CheckpointLoaderSimple)" in err.message
    assert '6 (CLIPTextEncode, "Positive")' in err.message
    # numeric ids sorted numerically
    assert err.message.index("9 (SaveImage") < err.message.index("10 (EmptyLatentImage")
    assert [c["id"] for c in err.details["candidates"]] == ["3", "4", "6", "7", "9", "10", "11"]
    assert err.where["node"] == "Sampler"


def test_resolve_node_ambiguous_class_type_lists_the_matches(workflow: dict[str, Any]) -> None:
    with pytest.raises(AddressError) as info:
        inject.resolve_node(workflow, "CLIPTextEncode")
    err = info.value
    assert "ambiguous" in err.message
    assert '6 (CLIPTextEncode, "Positive")' in err.message
    assert '7 (CLIPTextEncode, "Negative")' in err.message
    assert "KSampler" not in err.message
    assert "node id" in (err.hint or "") and "title" in (err.hint or "")
    assert [m["id"] for m in err.details["matches"]] == ["6", "7"]


def test_resolve_node_ambiguous_title_lists_the_matches(workflow: dict[str, Any]) -> None:
    workflow["7"]["_meta"]["title"] = "Positive"
    with pytest.raises(AddressError) as info:
        inject.resolve_node(workflow, "Positive")
    assert "2 nodes have this title" in info.value.message


def test_resolve_node_in_an_empty_workflow() -> None:
    with pytest.raises(AddressError) as info:
        inject.resolve_node({}, "3")
    assert "empty" in info.value.message


def test_resolve_node_long_candidate_lists_are_shortened() -> None:
    workflow = {str(i): {"class_type": "Note", "inputs": {}} for i in range(100)}
    with pytest.raises(AddressError) as info:
        inject.resolve_node(workflow, "nothing")
    assert f"and {100 - inject.MAX_LISTED} more" in info.value.message
    assert len(info.value.details["candidates"]) == 100


def test_set_input_sets_by_each_kind_of_address(workflow: dict[str, Any]) -> None:
    assert inject.set_input(workflow, "3.seed", 42) == "3"
    assert inject.set_input(workflow, "Positive.text", 'a "fox"\n🦊') == "6"
    assert inject.set_input(workflow, "SaveImage.filename_prefix", "fox") == "9"
    assert inject.set_input(workflow, "SD v1.5 Loader.strength_model", 0.8) == "11"
    assert workflow["3"]["inputs"]["seed"] == 42
    assert workflow["6"]["inputs"]["text"] == 'a "fox"\n🦊'
    assert workflow["9"]["inputs"]["filename_prefix"] == "fox"
    assert workflow["11"]["inputs"]["strength_model"] == 0.8


def test_set_input_may_add_a_new_input_and_replace_a_link(workflow: dict[str, Any]) -> None:
    inject.set_input(workflow, "3.denoise", 0.5)
    inject.set_input(workflow, "3.model", "literal")
    assert workflow["3"]["inputs"]["denoise"] == 0.5
    assert workflow["3"]["inputs"]["model"] == "literal"


def test_set_input_does_not_validate_types(workflow: dict[str, Any]) -> None:
    inject.set_input(workflow, "3.steps", "twenty")
    inject.set_input(workflow, "3.cfg", None)
    assert workflow["3"]["inputs"]["steps"] == "twenty"
    assert workflow["3"]["inputs"]["cfg"] is None


def test_set_input_creates_missing_inputs_mapping() -> None:
    workflow: dict[str, Any] = {"1": {"class_type": "X"}}
    inject.set_input(workflow, "1.a", 1)
    assert workflow["1"]["inputs"] == {"a": 1}


def test_set_input_copies_mutable_values(workflow: dict[str, Any]) -> None:
    value = ["a", "b"]
    inject.set_input(workflow, "3.list", value)
    inject.set_input(workflow, "6.list", value)
    value.append("c")
    workflow["3"]["inputs"]["list"].append("d")
    assert workflow["6"]["inputs"]["list"] == ["a", "b"]


def test_set_input_errors_carry_the_callers_where(workflow: dict[str, Any]) -> None:
    where = {"file": "a.yaml", "job": "a-001"}
    with pytest.raises(AddressError) as info:
        inject.set_input(workflow, "Nope.text", "x", where=where)
    err = info.value
    assert err.where == {"file": "a.yaml", "job": "a-001", "node": "Nope", "address": "Nope.text", "input": "text"}
    assert "'Nope.text'" in err.message
    with pytest.raises(AddressError) as info:
        inject.set_input(workflow, "CLIPTextEncode.text", "x", where=where)
    assert info.value.where["file"] == "a.yaml"
    assert "'6.text'" in (info.value.hint or "")
    with pytest.raises(AddressError) as info:
        inject.set_input(workflow, "nodot", "x", where=where)
    assert info.value.where["job"] == "a-001"


def test_set_input_refuses_a_node_whose_inputs_are_not_an_object() -> None:
    with pytest.raises(AddressError) as info:
        inject.set_input({"1": {"class_type": "X", "inputs": [1]}}, "1.a", 1)
    assert info.value.where["node"] == "1"


def test_apply_overrides_applies_every_address_in_order(workflow: dict[str, Any]) -> None:
    inject.apply_overrides(
        workflow,
        {"6.text": "first", "Positive.text": "second", "KSampler.cfg": 7.5, "Save Image.filename_prefix": "fox"},
        where={"file": "f"},
    )
    assert workflow["6"]["inputs"]["text"] == "second"
    assert workflow["3"]["inputs"]["cfg"] == 7.5
    assert workflow["9"]["inputs"]["filename_prefix"] == "fox"


def test_apply_overrides_with_nothing_changes_nothing(workflow: dict[str, Any]) -> None:
    inject.apply_overrides(workflow, {})
    assert workflow == WORKFLOW


def test_apply_overrides_stops_at_a_bad_address_and_names_it(workflow: dict[str, Any]) -> None:
    with pytest.raises(AddressError) as info:
        inject.apply_overrides(workflow, {"3.seed": 5, "Missing.x": 1}, where={"file": "a.csv", "job": "a-002"})
    assert info.value.where["address"] == "Missing.x"
    assert info.value.where["job"] == "a-002"


def test_describe_node(workflow: dict[str, Any]) -> None:
    assert inject.describe_node(workflow, "6") == {"id": "6", "title": "Positive", "class_type": "CLIPTextEncode"}
    assert inject.describe_node(workflow, "4") == {"id": "4", "title": None, "class_type": "CheckpointLoaderSimple"}
    with pytest.raises(AddressError) as info:
        inject.describe_node(workflow, "99")
    assert "'99'" in info.value.message and "3 (KSampler" in info.value.message


def _video_workflow() -> dict[str, Any]:
    """A SaveVideo with DynamicCombo sub-inputs, a subgraph's inner node, and a title with a dot."""
    return {
        "5": {"class_type": "SaveVideo", "_meta": {"title": "Video v1.0"},
              "inputs": {"format": "mp4", "format.codec": "h264", "format.codec.encoding.crf": 23}},
        "12:3": {"class_type": "ImageScale", "inputs": {"resize_type": "longer", "resize_type.longer_size": 512}},
        "12": {"class_type": "Subgraphish", "inputs": {}},
    }


@pytest.mark.parametrize(("address", "node", "name"), [
    ("5.format.codec", "5", "format.codec"),
    ("5.format.codec.encoding.crf", "5", "format.codec.encoding.crf"),
    ("12:3.resize_type.longer_size", "12:3", "resize_type.longer_size"),
    ("12.x", "12", "x"),
    ("Video v1.0.format.codec", "5", "format.codec"),          # a title with a dot, then a dotted input
    ("SaveVideo.format.codec.encoding.crf", "5", "format.codec.encoding.crf"),
])
def test_an_address_reaches_a_dotted_sub_input_of_the_node_its_longest_prefix_names(
        address: str, node: str, name: str) -> None:
    workflow = _video_workflow()
    assert inject.split_address(workflow, address) == (node, name)
    assert inject.set_input(workflow, address, 7) == node
    assert workflow[node]["inputs"][name] == 7


def test_an_address_whose_prefixes_name_no_node_is_refused_with_the_nodes_listed() -> None:
    with pytest.raises(AddressError) as err:
        inject.set_input(_video_workflow(), "6.format.codec", "h264")
    assert "'6.format'" in err.value.message and "5 (SaveVideo" in err.value.message
    assert err.value.where["input"] == "codec"
