"""Deprecated-node replacement (the 0.4x profile): the server rewrites a node whose class it no longer has
into its registered replacement on submit, so its history holds another graph than the one sent.
hotfolder still finds the outputs (the node ids stay) and its sidecar keeps the workflow it sent. With
``validate = true`` it reads the replacements (``GET /node_replacements``) and checks such a node as the
server will run it; a malformed answer counts as none."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.comfy.object_info import ObjectInfoCache, parse_node_replacements
from hotfolder.templates.problems import LINK_BAD_SLOT, MISSING_INPUT, NOT_IN_LIST, UNKNOWN_CLASS, UNKNOWN_INPUT
from hotfolder.templates.validate import validate_with_refresh, validate_workflow
from hotfolder.testing import ComfyTestServer, png
from tests.conftest import invoke_cli

TIMEOUT = 10.0

LONGER_EDGE = {  # ResizeImagesByLongerEdge: replaced by ImageScaleToMaxDimension on submit (0.4x)
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0x3366CC}},
    "2": {"class_type": "ResizeImagesByLongerEdge", "_meta": {"title": "Longer edge"},
          "inputs": {"images": ["1", 0], "longer_edge": 32}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "edge"}},
}


def post(server: ComfyTestServer, prompt: dict[str, Any]) -> requests.Response:
    return requests.post(server.url + "/prompt", json={"prompt": prompt}, timeout=TIMEOUT)


def test_the_04x_server_replaces_a_class_it_no_longer_has_and_its_history_shows_the_new_graph() -> None:
    with ComfyTestServer(comfyui="0.4x") as server:
        catalogue = requests.get(server.url + "/object_info", timeout=TIMEOUT).json()
        assert "ResizeImagesByLongerEdge" not in catalogue and "ImageScaleToMaxDimension" in catalogue
        answer = post(server, LONGER_EDGE)
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        server.wait_idle(TIMEOUT)
        entry = server.history()[prompt_id]
        assert entry["status"]["status_str"] == "success"
        ran = entry["prompt"][2]
        assert ran["2"] == {"class_type": "ImageScaleToMaxDimension", "_meta": {"title": "Longer edge"},
                            "inputs": {"image": ["1", 0], "largest_size": 32, "upscale_method": "lanczos"}}
        assert ran["3"] == LONGER_EDGE["3"]  # the link to the replaced node is unchanged (output 0 -> 0)
        job = requests.get(f"{server.url}/api/jobs/{prompt_id}", timeout=TIMEOUT).json()
        assert job["workflow"]["prompt"]["2"]["class_type"] == "ImageScaleToMaxDimension"
        (saved,) = entry["outputs"]["3"]["images"]
        image = png.decode_png((server.output_dir / saved["filename"]).read_bytes())
        assert (image.width, image.height) == (32, 16)  # the longer edge is 32, the aspect kept
    with ComfyTestServer(comfyui="0.3") as old:  # 0.3.64 has neither the class nor the replacement
        refused = post(old, LONGER_EDGE)
        assert refused.status_code == 400 and "ResizeImagesByLongerEdge does not exist" in refused.text


def test_hotfolder_publishes_a_replaced_nodes_output_and_its_sidecar_keeps_the_sent_workflow(project: Path) -> None:
    (project / "templates" / "edge.json").write_text(json.dumps(LONGER_EDGE))
    (project / "edge.yaml").write_text("template: edge\n")
    # hotfolder's own check refuses a class /object_info does not list; the server would replace it
    (project / "hotfolder.toml").write_text("validate = false\n")
    with ComfyTestServer(comfyui="0.4x") as server:
        result = invoke_cli("--server", server.url, "process", "edge.yaml", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        (entry,) = server.history().values()
        assert entry["prompt"][2]["2"]["class_type"] == "ImageScaleToMaxDimension"  # replaced on the server
    folder = project / "outbox" / "edge"
    sidecar = json.loads((folder / "edge.json").read_text())
    assert sidecar["workflow"]["2"]["class_type"] == "ResizeImagesByLongerEdge"  # what was sent
    (output,) = sidecar["outputs"]
    image = png.decode_png((folder / output["file"]).read_bytes())
    assert (image.width, image.height) == (32, 16)


# ComfyUI's answer for its first built-in replacement (app/node_replace_manager.py@b5d74ccb, as_dict)
ANSWER = {"ResizeImagesByLongerEdge": [{
    "new_node_id": "ImageScaleToMaxDimension", "old_node_id": "ResizeImagesByLongerEdge",
    "old_widget_ids": ["longer_edge"],
    "input_mapping": [{"new_id": "image", "old_id": "images"}, {"new_id": "largest_size", "old_id": "longer_edge"},
                      {"new_id": "upscale_method", "set_value": "lanczos"}],
    "output_mapping": [{"new_idx": 0, "old_idx": 0}],
}]}


def test_the_04x_server_lists_its_replacements_and_the_03_server_does_not_know_the_route() -> None:
    with ComfyTestServer(comfyui="0.4x") as server:
        for path in ("/node_replacements", "/api/node_replacements"):
            answer = requests.get(server.url + path, timeout=TIMEOUT)
            assert answer.status_code == 200 and answer.json() == ANSWER
    with ComfyTestServer(comfyui="0.3") as old:  # 0.3.64 has no such route: aiohttp's plain 404
        for path in ("/node_replacements", "/api/node_replacements"):
            answer = requests.get(old.url + path, timeout=TIMEOUT)
            assert (answer.status_code, answer.text) == (404, "404: Not Found")


@pytest.mark.parametrize("comfyui", ["0.3", "0.4x"])
def test_a_replaced_class_runs_with_validation_on_where_the_server_replaces_it(project: Path, comfyui: str) -> None:
    (project / "templates" / "edge.json").write_text(json.dumps(LONGER_EDGE))
    (project / "edge.yaml").write_text("template: edge\n")
    with ComfyTestServer(comfyui=comfyui) as server:
        result = invoke_cli("--server", server.url, "-v", "process", "edge.yaml", cwd=project)
        ran = [entry["prompt"][2] for entry in server.history().values()]
    if comfyui == "0.3":  # 0.3.64 has neither the class nor a replacement: refused before anything is queued
        assert result.returncode != 0 and ran == []
        assert ('node 2 "Longer edge" (ResizeImagesByLongerEdge): class_type \'ResizeImagesByLongerEdge\' is not '
                "a node type this server has") in result.stderr
        assert "replace" not in result.stderr
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("replaces deprecated nodes on submit (the workflow is sent as written): "
            "node 2 ResizeImagesByLongerEdge -> ImageScaleToMaxDimension") in result.stderr
    assert [node["2"]["class_type"] for node in ran] == ["ImageScaleToMaxDimension"]
    folder = project / "outbox" / "edge"
    sidecar = json.loads((folder / "edge.json").read_text())
    assert sidecar["workflow"] == LONGER_EDGE  # what was sent: the user's workflow
    (output,) = sidecar["outputs"]
    image = png.decode_png((folder / output["file"]).read_bytes())
    assert (image.width, image.height) == (32, 16)


def test_a_value_the_new_class_refuses_is_reported_at_its_input_with_the_scenario_field(project: Path) -> None:
    (project / "templates" / "edge.json").write_text(json.dumps(LONGER_EDGE))
    (project / "edge.yaml").write_text("template: edge\nset:\n  Longer edge.longer_edge: 20000\n")
    with ComfyTestServer(comfyui="0.4x") as server:
        result = invoke_cli("--server", server.url, "process", "edge.yaml", cwd=project)
        assert result.returncode != 0 and server.history() == {}
    assert ('node 2 "Longer edge" (ImageScaleToMaxDimension), input largest_size [set by set.Longer edge.longer_edge]: '
            "20000 is above the maximum 16384 (ComfyUI replaces the deprecated ResizeImagesByLongerEdge by "
            "ImageScaleToMaxDimension on submit, largest_size taken from longer_edge)") in result.stderr


@pytest.fixture(scope="module")
def server_04x() -> Iterator[ComfyTestServer]:
    with ComfyTestServer(comfyui="0.4x") as server:
        yield server


@functools.lru_cache(maxsize=4)
def object_info_of(url: str) -> dict[str, Any]:
    """A server's /object_info, read once (generated examples only vary the replacements). Not a fixture:
    Hypothesis would print the whole catalogue with each explicit example."""
    return requests.get(url + "/object_info", timeout=TIMEOUT).json()


def cache_of(server: ComfyTestServer, **http: Any) -> ObjectInfoCache:
    client = ComfyHTTP(server.url, **http)
    return ObjectInfoCache(client.object_info, replacements=client.node_replacements, name=server.url)


def entry(**changes: Any) -> dict[str, Any]:
    return {"ResizeImagesByLongerEdge": [{**ANSWER["ResizeImagesByLongerEdge"][0], **changes}]}


@pytest.mark.parametrize(("answer", "node", "input_name", "kind"), [
    (entry(input_mapping=[{"new_id": "image", "old_id": "images"}, {"new_id": "largest_size", "old_id": "longer_edge"},
                          {"new_id": "upscale_method", "set_value": "sinc"}]), "2", "upscale_method", NOT_IN_LIST),
    (entry(input_mapping=[{"new_id": "image", "old_id": "images"}, {"new_id": "largest_size", "old_id": "edge"},
                          {"new_id": "upscale_method", "set_value": "area"}]), "2", "largest_size", MISSING_INPUT),
    (entry(input_mapping=[{"new_id": "image", "old_id": "images"}, {"new_id": "largest", "old_id": "longer_edge"},
                          {"new_id": "upscale_method", "set_value": "area"}]), "2", "largest_size", MISSING_INPUT),
    (entry(output_mapping=[{"old_idx": 0, "new_idx": 1}]), "3", "images", LINK_BAD_SLOT),
], ids=["set-value-not-a-choice", "old-input-missing", "new-input-misnamed", "output-renumbered-past-the-end"])
def test_a_replacement_that_makes_the_node_invalid_is_reported_against_the_new_class(
        server_04x: ComfyTestServer, answer: Any, node: str, input_name: str, kind: str) -> None:
    server_04x.faults.node_replacements(answer, count=1)
    problems = validate_with_refresh(cache_of(server_04x), LONGER_EDGE)
    (problem,) = problems
    assert (problem.node, problem.input, problem.kind) == (node, input_name, kind)
    assert problem.class_type == ("ImageScaleToMaxDimension" if node == "2" else "SaveImage")
    assert LONGER_EDGE["2"]["class_type"] == "ResizeImagesByLongerEdge"  # the workflow itself is not changed


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@st.composite
def malformed_answers(draw: st.DrawFn) -> Any:
    """ComfyUI's answer with one place made wrong (so a lenient reader would still find the replacement)."""
    answer = copy.deepcopy(ANSWER)
    (first,) = answer["ResizeImagesByLongerEdge"]
    where = draw(st.sampled_from(["answer", "list", "entry", "new_node_id", "input_mapping", "input", "new_id",
                                  "old_id", "output_mapping", "index", "other_class"]))
    not_str = JSON.filter(lambda v: not isinstance(v, str))
    if where == "answer":
        return draw(JSON.filter(lambda v: not isinstance(v, dict) and v is not None))
    if where == "list":
        answer["ResizeImagesByLongerEdge"] = draw(JSON.filter(lambda v: not isinstance(v, list) or v == []))
    elif where == "entry":
        answer["ResizeImagesByLongerEdge"].append(draw(JSON.filter(lambda v: not isinstance(v, dict))))
    elif where == "new_node_id":
        first["new_node_id"] = draw(not_str)
    elif where == "input_mapping":
        first["input_mapping"] = draw(JSON.filter(lambda v: not isinstance(v, list) and v is not None))
    elif where == "input":
        first["input_mapping"][draw(st.integers(0, 2))] = draw(JSON.filter(lambda v: not isinstance(v, dict)))
    elif where == "new_id":
        first["input_mapping"][draw(st.integers(0, 2))]["new_id"] = draw(not_str)
    elif where == "old_id":
        first["input_mapping"][draw(st.integers(0, 1))]["old_id"] = draw(not_str)
    elif where == "output_mapping":
        first["output_mapping"] = draw(JSON.filter(lambda v: not isinstance(v, list) and v is not None))
    elif where == "index":
        bad = JSON.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v >= 0))
        first["output_mapping"][0][draw(st.sampled_from(["old_idx", "new_idx"]))] = draw(bad)
    else:
        answer["ImageBatch"] = [draw(JSON.filter(lambda v: not isinstance(v, dict)))]
    return answer


@settings(max_examples=25)
@given(answer=malformed_answers())
@example(answer=b"not json").via("not JSON")
@example(answer=b"[" * 100_000 + b"]" * 100_000).via("nested past the recursion limit")
@example(answer={"ResizeImagesByLongerEdge": []}).via("no replacement in the list")
def test_a_malformed_answer_leaves_validation_as_without_replacements(server_04x: ComfyTestServer, answer: Any) -> None:
    info = object_info_of(server_04x.url)
    without = validate_workflow(LONGER_EDGE, info)
    assert [p.kind for p in without] == [UNKNOWN_CLASS]
    server_04x.faults.node_replacements(answer, count=1)
    client = ComfyHTTP(server_04x.url)
    cache = ObjectInfoCache(lambda: info, replacements=client.node_replacements)
    assert validate_with_refresh(cache, LONGER_EDGE) == without
    assert cache.replacements() == {}


def test_an_answer_over_max_response_size_counts_as_none(server_04x: ComfyTestServer) -> None:
    size = len(requests.get(server_04x.url + "/object_info", timeout=TIMEOUT).content)
    padding = {"new_node_id": "SaveImage", "input_mapping": [{"new_id": "filename_prefix", "set_value": "x" * (size + 2000)}]}
    server_04x.faults.node_replacements({**ANSWER, "Padding": [padding]}, count=1)  # well-formed, but too large
    cache = cache_of(server_04x, max_response_size=size + 1000)
    assert [p.kind for p in validate_with_refresh(cache, LONGER_EDGE)] == [UNKNOWN_CLASS]
    assert cache.replacements() == {}
    cache.refresh()  # the next fetch reads them again
    assert list(cache.replacements()) == ["ResizeImagesByLongerEdge"]
    assert validate_with_refresh(cache, LONGER_EDGE) == []


def test_a_scenario_field_on_an_input_the_replacement_drops_is_reported(server_04x: ComfyTestServer) -> None:
    info = object_info_of(server_04x.url)
    workflow = copy.deepcopy(LONGER_EDGE)
    workflow["2"]["inputs"]["crop"] = True  # set by a scenario field; ImageScaleToMaxDimension gets no "crop"
    replacements = parse_node_replacements(ANSWER)
    fields = {"2.crop": "set.Longer edge.crop", "2.longer_edge": "params.edge"}
    (problem,) = validate_workflow(workflow, info, scenario_fields=fields, replacements=replacements)
    assert (problem.kind, problem.node, problem.input, problem.field) == (UNKNOWN_INPUT, "2", "crop", "set.Longer edge.crop")
    assert validate_workflow(workflow, info, scenario_fields={"2.longer_edge": "params.edge"},
                             replacements=replacements) == []
