"""UI workflow (nodes/links) -> API format, checked against the real server's object_info."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.templates.convert import ConversionError, convert_ui_workflow, is_ui_workflow, ui_to_api
from hotfolder.templates.nodes import declared_inputs, input_spec, is_file_choice
from hotfolder.templates.problems import LINK_BAD_SLOT, NOT_IN_LIST, Problem
from hotfolder.templates.subgraph import flatten_subgraphs, has_subgraphs
from hotfolder.templates.validate import validate_workflow

ROOT = Path(__file__).resolve().parent.parent
OBJECT_INFO: dict[str, Any] = json.loads((ROOT / "hotfolder" / "testing" / "object_info_core.json").read_text())
FIXTURES = Path(__file__).resolve().parent / "data" / "ui_workflows"
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def node(ui: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(n for n in ui["nodes"] if n["id"] == node_id)


def ui_node(
    node_id: int,
    kind: str,
    widgets: Any = (),
    *,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    mode: int = 0,
    title: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node_id,
        "type": kind,
        "mode": mode,
        "inputs": inputs or [],
        "outputs": outputs or [],
        "widgets_values": widgets if isinstance(widgets, dict) else list(widgets),
    }
    if title is not None:
        out["title"] = title
    return out


def model_problem(problem: Problem) -> bool:
    """A missing model or input file: the test server lists one checkpoint and a few images only."""
    if problem.kind != NOT_IN_LIST or problem.class_type is None or problem.input is None:
        return False
    spec = input_spec(OBJECT_INFO[problem.class_type], problem.input)
    assert spec is not None
    return is_file_choice(problem.class_type, problem.input, spec[0], spec[2])


# --------------------------------------------------------------------------------------------------
# the hand-written fixture: reroute, primitive, control_after_generate, bypass, mute, note, group


def test_fixture_converts_to_the_api_workflow_the_frontend_would_queue() -> None:
    ui = fixture("txt2img_features.json")
    before = copy.deepcopy(ui)
    result = convert_ui_workflow(ui, OBJECT_INFO, name="txt2img_features")
    assert ui == before  # not changed
    assert result.workflow == {
        "3": {
            "inputs": {
                "seed": 156680208700286,
                "steps": 20,
                "cfg": 7.5,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],  # through the Reroute
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
            "class_type": "KSampler",
            "_meta": {"title": "KSampler"},  # no title: the display name
        },
        "4": {
            "inputs": {"ckpt_name": "tiny_sd15_random.safetensors"},
            "class_type": "CheckpointLoaderSimple",
            "_meta": {"title": "Model"},
        },
        "5": {
            "inputs": {"width": 512, "height": 384, "batch_size": 1},
            "class_type": "EmptyLatentImage",
            "_meta": {"title": "Empty Latent Image"},
        },
        "6": {
            "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]},  # the primitive's value
            "class_type": "CLIPTextEncode",
            "_meta": {"title": "Positive"},
        },
        "7": {
            "inputs": {"text": "blurry, low quality", "clip": ["4", 1]},
            "class_type": "CLIPTextEncode",
            "_meta": {"title": "CLIP Text Encode (Prompt)"},
        },
        "8": {
            "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
            "class_type": "VAEDecode",
            "_meta": {"title": "VAE Decode"},
        },
        "9": {
            "inputs": {"filename_prefix": "fixtures/txt2img", "images": ["8", 0]},  # around the bypassed invert
            "class_type": "SaveImage",
            "_meta": {"title": "Save"},
        },
    }
    assert result.controls == {"3.seed": "randomize"}
    dropped = "\n".join(result.dropped)
    for gone in (
        "11 (ImageInvert): bypassed",
        "12 (PreviewImage): muted",
        "13 (Note)",
        "20 (Reroute)",
        "30 (PrimitiveNode)",
    ):
        assert gone in dropped
    assert validate_workflow(result.workflow, OBJECT_INFO) == []


def test_is_ui_workflow_tells_the_formats_apart() -> None:
    assert is_ui_workflow(fixture("txt2img_features.json"))
    assert not is_ui_workflow(json.loads((ROOT / "templates" / "txt2img.json").read_text()))
    assert not is_ui_workflow([])


def test_api_workflow_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConversionError, match="not a UI workflow"):
        convert_ui_workflow({"3": {"class_type": "KSampler", "inputs": {}}}, OBJECT_INFO)


def test_control_value_is_recognised_without_the_flag_in_older_object_info() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    del info["KSampler"]["input"]["required"]["seed"][1]["control_after_generate"]
    workflow = ui_to_api(fixture("txt2img_features.json"), info)
    assert workflow["3"]["inputs"]["seed"] == 156680208700286
    assert workflow["3"]["inputs"]["steps"] == 20


def test_seed_saved_without_a_control_value_still_lines_up() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 3)["widgets_values"] = [7, 20, 7.5, "euler", "normal", 1]  # an old frontend: no control widget
    workflow = ui_to_api(ui, OBJECT_INFO)
    assert workflow["3"]["inputs"] == {**workflow["3"]["inputs"], "seed": 7, "steps": 20, "cfg": 7.5, "denoise": 1}


def test_fixed_control_is_not_reported() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 3)["widgets_values"][1] = "fixed"
    assert convert_ui_workflow(ui, OBJECT_INFO).controls == {}


def test_missing_widget_values_take_the_defaults_with_a_warning() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 5)["widgets_values"] = [640]
    result = convert_ui_workflow(ui, OBJECT_INFO)
    assert result.workflow["5"]["inputs"] == {"width": 640, "height": 512, "batch_size": 1}
    assert any("'height'" in w and "default" in w for w in result.warnings)


def test_extra_trailing_widget_values_are_ignored_with_a_warning() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 9)["widgets_values"] = ["fixtures/txt2img", "some preview state"]
    result = convert_ui_workflow(ui, OBJECT_INFO)
    assert result.workflow["9"]["inputs"]["filename_prefix"] == "fixtures/txt2img"
    assert any("ignored" in w for w in result.warnings)


def test_widget_values_as_a_dict_are_mapped_by_name() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 5)["widgets_values"] = {"height": 768, "width": 1024, "batch_size": 2}
    assert ui_to_api(ui, OBJECT_INFO)["5"]["inputs"] == {"width": 1024, "height": 768, "batch_size": 2}


def test_links_as_objects_are_understood() -> None:
    ui = fixture("txt2img_features.json")
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    ui["links"] = [dict(zip(keys, link, strict=True)) for link in ui["links"]]
    assert ui_to_api(ui, OBJECT_INFO) == ui_to_api(fixture("txt2img_features.json"), OBJECT_INFO)


def test_a_widget_converted_to_an_input_and_linked_to_a_node_becomes_a_link() -> None:
    ui = fixture("txt2img_features.json")
    ui["nodes"].append(
        ui_node(40, "PrimitiveInt", [99, "fixed"], outputs=[{"name": "INT", "type": "INT", "links": [14]}])
    )
    node(ui, 3)["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 14})
    ui["links"].append([14, 40, 0, 3, 4, "INT"])
    workflow = ui_to_api(ui, OBJECT_INFO)
    assert workflow["3"]["inputs"]["steps"] == ["40", 0]
    assert workflow["40"] == {"inputs": {"value": 99}, "class_type": "PrimitiveInt", "_meta": {"title": "Int"}}
    assert validate_workflow(workflow, OBJECT_INFO) == []


def test_primitive_through_a_reroute_reaches_its_widget() -> None:
    ui = fixture("txt2img_features.json")
    ui["nodes"].append(
        ui_node(
            41,
            "Reroute",
            inputs=[{"name": "", "type": "*", "link": 10}],
            outputs=[{"name": "", "type": "STRING", "links": [15]}],
        )
    )
    for link in ui["links"]:
        if link[0] == 10:
            link[3], link[4] = 41, 0
    ui["links"].append([15, 41, 0, 6, 1, "STRING"])
    node(ui, 6)["inputs"][1]["link"] = 15
    assert ui_to_api(ui, OBJECT_INFO)["6"]["inputs"]["text"] == "a red fox in the snow"


def test_inputs_linked_to_a_muted_node_are_left_out_like_the_frontend_does() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 7)["mode"] = 2  # mute the negative prompt
    result = convert_ui_workflow(ui, OBJECT_INFO)
    assert "7" not in result.workflow
    assert "negative" not in result.workflow["3"]["inputs"]
    assert any("negative" in w and "muted" in w for w in result.warnings)
    problems = validate_workflow(result.workflow, OBJECT_INFO)
    assert [(p.kind, p.node, p.input) for p in problems] == [("missing_input", "3", "negative")]


def test_bypassed_node_passes_the_input_of_the_matching_type() -> None:
    ui = fixture("txt2img_features.json")
    # A LoraLoader between the checkpoint and its users, bypassed: MODEL goes to MODEL, CLIP to CLIP.
    lora = ui_node(
        50,
        "LoraLoader",
        ["some_lora.safetensors", 0.8, 0.8],
        inputs=[{"name": "model", "type": "MODEL", "link": 1}, {"name": "clip", "type": "CLIP", "link": 16}],
        outputs=[{"name": "MODEL", "type": "MODEL", "links": [17]}, {"name": "CLIP", "type": "CLIP", "links": [2]}],
        mode=4,
    )
    ui["nodes"].append(lora)
    for link in ui["links"]:
        if link[0] == 1:
            link[3], link[4] = 50, 0
        if link[0] == 2:
            link[1], link[2] = 50, 1
    ui["links"] += [[16, 4, 1, 50, 1, "CLIP"], [17, 50, 0, 20, 0, "MODEL"]]
    node(ui, 20)["inputs"][0]["link"] = 17
    workflow = ui_to_api(ui, OBJECT_INFO)
    assert "50" not in workflow
    assert workflow["3"]["inputs"]["model"] == ["4", 0]
    assert workflow["6"]["inputs"]["clip"] == ["4", 1]


def test_bypassed_node_without_a_matching_input_leaves_the_input_out() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 5)["mode"] = 4  # EmptyLatentImage has no LATENT input to pass on
    result = convert_ui_workflow(ui, OBJECT_INFO)
    assert "latent_image" not in result.workflow["3"]["inputs"]
    assert any("bypassed" in w and "LATENT" in w for w in result.warnings)


def test_load_image_upload_button_value_is_skipped() -> None:
    ui = {
        "nodes": [
            ui_node(
                1, "LoadImage", ["cap_upload.png", "image"], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]
            ),
            ui_node(2, "SaveImage", ["out"], inputs=[{"name": "images", "type": "IMAGE", "link": 1}]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    result = convert_ui_workflow(ui, OBJECT_INFO)
    assert result.workflow["1"]["inputs"] == {"image": "cap_upload.png"}
    assert result.warnings == []


def test_list_widget_values_are_wrapped_so_they_are_not_read_as_links() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    info["SaveImage"]["input"]["required"]["filename_prefix"] = ["COMBO", {"options": ["a", "b"], "multiselect": True}]
    ui = fixture("txt2img_features.json")
    node(ui, 9)["widgets_values"] = [["a", "b"]]
    assert ui_to_api(ui, info)["9"]["inputs"]["filename_prefix"] == {"__value__": ["a", "b"]}


# --------------------------------------------------------------------------------------------------
# what cannot be converted faithfully


def test_a_subgraph_is_flattened_into_instance_colon_inner_nodes() -> None:
    ui = fixture("txt2img_features.json")
    uuid = "7f1c7c3e-9d1a-4a4e-8c66-3f5b2d6a9e10"
    inner = ui_node(3, "EmptyImage", [16, 8, 1, 0], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}])
    ui["definitions"] = {"subgraphs": [{
        "id": uuid, "name": "Image block", "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE"}],
        "nodes": [inner], "links": [{"id": 1, "origin_id": 3, "origin_slot": 0, "target_id": -20,
                                     "target_slot": 0, "type": "IMAGE"}]}]}  # fmt: skip
    ui["nodes"].append(ui_node(60, uuid, title="Block", outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [90]}]))
    ui["nodes"].append(ui_node(61, "SaveImage", ["sub"], inputs=[{"name": "images", "type": "IMAGE", "link": 90}]))
    ui["links"].append([90, 60, 0, 61, 0, "IMAGE"])
    workflow = convert_ui_workflow(ui, OBJECT_INFO, name="mine").workflow
    assert workflow["60:3"]["inputs"] == {"width": 16, "height": 8, "batch_size": 1, "color": 0}
    assert workflow["61"]["inputs"]["images"] == ["60:3", 0]
    assert "60" not in workflow and list(workflow)[-1] == "60:3"


def test_muted_subgraph_is_simply_dropped() -> None:
    ui = fixture("txt2img_features.json")
    uuid = "7f1c7c3e-9d1a-4a4e-8c66-3f5b2d6a9e10"
    ui["definitions"] = {"subgraphs": [{"id": uuid, "name": "Upscale block"}]}
    ui["nodes"].append(ui_node(60, uuid, mode=2))
    assert "60" not in ui_to_api(ui, OBJECT_INFO)


def test_group_node_is_refused_naming_the_node() -> None:
    ui = fixture("txt2img_features.json")
    ui["extra"]["groupNodes"] = {"MyGroup": {"nodes": [], "links": []}}
    ui["nodes"].append(ui_node(61, "workflow>MyGroup"))
    with pytest.raises(ConversionError, match=r"node 61 \(workflow>MyGroup\) is a group node") as caught:
        convert_ui_workflow(ui, OBJECT_INFO)
    assert "Convert to nodes" in (caught.value.hint or "")


def test_unknown_classes_are_all_named_in_one_error() -> None:
    ui = fixture("txt2img_features.json")
    ui["nodes"].append(ui_node(62, "ImpactWildcardProcessor", title="Wildcards"))
    ui["nodes"].append(ui_node(63, "UltimateSDUpscale"))
    with pytest.raises(ConversionError) as caught:
        convert_ui_workflow(ui, OBJECT_INFO)
    message = caught.value.message
    assert "'ImpactWildcardProcessor'" in message and "'UltimateSDUpscale'" in message
    assert 'node 62 "Wildcards"' in message and "custom node" in (caught.value.hint or "")


def test_browser_filled_input_is_refused() -> None:
    ui = {
        "nodes": [
            ui_node(
                1, "WebcamCapture", ["", 640, 480, True], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]
            ),
            ui_node(2, "SaveImage", ["out"], inputs=[{"name": "images", "type": "IMAGE", "link": 1}]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    with pytest.raises(ConversionError, match=r"'image' of node 1 \(WebcamCapture\) is filled by the browser"):
        convert_ui_workflow(ui, OBJECT_INFO)


def test_an_optional_browser_filled_input_is_left_out_even_with_a_default() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    info["SaveImage"]["input"]["optional"] = {"snapshot": ["WEBCAM", {"default": "cam.png"}]}
    ui = fixture("txt2img_features.json")
    node(ui, 9)["widgets_values"] = ["out", "live"]
    assert ui_to_api(ui, info)["9"]["inputs"] == {"filename_prefix": "out", "images": ["8", 0]}


def test_widget_values_that_do_not_line_up_are_refused() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 3)["widgets_values"] = [1, "randomize", "euler", 20, 7.5, "normal", 1]  # a different node version
    with pytest.raises(ConversionError) as caught:
        convert_ui_workflow(ui, OBJECT_INFO)
    err = caught.value
    assert "do not line up" in err.message and "'steps'" in err.message and "node 3 (KSampler)" in err.message
    assert err.where["input"] == "steps"


def test_broken_link_is_refused() -> None:
    ui = fixture("txt2img_features.json")
    ui["links"] = [link for link in ui["links"] if link[0] != 8]
    with pytest.raises(ConversionError, match=r"'latent_image' of node 3 \(KSampler\) uses link 8"):
        convert_ui_workflow(ui, OBJECT_INFO)


def test_reroute_loop_is_refused() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 20)["inputs"][0]["link"] = 5  # the reroute feeds itself
    ui["links"] = [link for link in ui["links"] if link[0] != 1] + [[5, 20, 0, 20, 0, "*"]]
    with pytest.raises(ConversionError, match="circle"):
        convert_ui_workflow(ui, OBJECT_INFO)


# --------------------------------------------------------------------------------------------------
# real workflows written by ComfyUI's Save button


def test_real_sdxl_example_converts_with_primitives_and_seed_controls() -> None:
    ui = fixture("sdxl_simple_example.json")
    result = convert_ui_workflow(ui, OBJECT_INFO, name="sdxl_simple_example")
    workflow = result.workflow
    assert workflow["10"]["inputs"] == {
        "add_noise": "enable",
        "noise_seed": 721897303308196,
        "steps": 25,  # from the "steps" PrimitiveNode
        "cfg": 8,
        "sampler_name": "euler",
        "scheduler": "normal",
        "start_at_step": 0,
        "end_at_step": 20,  # from the "end_at_step" PrimitiveNode
        "return_with_leftover_noise": "enable",
        "model": ["4", 0],
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    assert workflow["11"]["inputs"]["start_at_step"] == 20 and workflow["11"]["inputs"]["end_at_step"] == 10000
    prompt = node(ui, 51)["widgets_values"][0]
    assert workflow["6"]["inputs"]["text"] == prompt and workflow["15"]["inputs"]["text"] == prompt
    assert workflow["10"]["_meta"]["title"] == "KSampler (Advanced) - BASE"
    assert result.controls == {"10.noise_seed": "randomize"}
    assert {n["type"] for n in ui["nodes"] if str(n["id"]) not in workflow} == FRONTEND_ONLY - {"Reroute"}
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert problems and all(model_problem(p) for p in problems)
    assert {p.value for p in problems} == {"sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"}


def _package_folder() -> Any:
    package = pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    return resources.files(package) / "templates"


def _package_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    folder = _package_folder()
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        if is_ui_workflow(data):
            yield entry.name, data


def _convertible(flat: dict[str, Any]) -> bool:
    """Node classes all on the test server (``flat``: the workflow with its subgraphs flattened)."""
    return all(n.get("type") in OBJECT_INFO or n.get("type") in FRONTEND_ONLY for n in flat["nodes"])


def _literal_inputs_come_from_the_ui(ui: dict[str, Any], workflow: dict[str, Any], warnings: list[str]) -> None:
    """Every literal input is a saved widget value of its node, a PrimitiveNode value, or a reported default;
    every UI node with widgets keeps all its widget inputs (as literals or links)."""
    by_id = {str(n["id"]): n for n in ui["nodes"]}
    primitive_values = [
        n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "PrimitiveNode" and n.get("widgets_values")
    ]
    for node_id, api_node in workflow.items():
        saved = by_id[node_id].get("widgets_values") or []
        saved = list(saved.values()) if isinstance(saved, dict) else saved
        info = OBJECT_INFO[api_node["class_type"]]
        for name, value in api_node["inputs"].items():
            if isinstance(value, list):
                continue
            plain = value["__value__"] if isinstance(value, dict) and "__value__" in value else value
            defaulted = any(f"no saved value for {name!r}" in w and f"node {node_id} " in w for w in warnings)
            assert plain in saved or plain in primitive_values or defaulted, (node_id, name, value, saved)
        for name, category in declared_inputs(info):
            spec = input_spec(info, name)
            assert spec is not None
            kind, _, options = spec
            is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if category == "required" and is_widget and not options.get("forceInput"):
                assert name in api_node["inputs"], (node_id, api_node["class_type"], name)


def test_real_ui_workflows_from_the_templates_package_convert_and_validate() -> None:
    """Every packaged UI workflow whose classes the test server has converts; the converted workflow
    passes validation except for model/input files the test server does not have, and except for
    API nodes whose schema changed after the server's version (the templates are newer)."""
    converted: list[str] = []
    version_drift: list[str] = []
    candidates = subgraphs = 0
    for name, ui in _package_templates():
        flat = flatten_subgraphs(ui, name=name)
        if not _convertible(flat):
            continue
        candidates += 1
        subgraphs += has_subgraphs(ui)
        try:
            result = convert_ui_workflow(ui, OBJECT_INFO, name=name)
        except ConversionError as error:
            # The server (0.3.64) predates these node revisions: a combo value (a newer model, a new
            # method) it does not list. Non-API nodes only in workflows that use subgraphs.
            culprit = str(error.where.get("class_type"))
            assert OBJECT_INFO[culprit].get("api_node") is True or has_subgraphs(ui), (name, error.message)
            assert error.where["construct"] == "combo choice" and "choices of COMBO" in error.message, error.message
            version_drift.append(name)
            continue
        _literal_inputs_come_from_the_ui(flat, result.workflow, result.warnings)
        problems = [p for p in validate_workflow(result.workflow, OBJECT_INFO) if not model_problem(p)]
        if not problems:
            converted.append(name)
            continue
        for problem in problems:
            # The server (0.3.64) predates these API-node revisions: a newer model name, or outputs it lacks.
            culprit = str(problem.class_type)
            if problem.kind == LINK_BAD_SLOT:
                culprit = result.workflow[problem.value[0]]["class_type"]
            assert OBJECT_INFO[culprit].get("api_node") is True, (name, problem.describe())
            assert problem.kind in (NOT_IN_LIST, LINK_BAD_SLOT), (name, problem.describe())
        version_drift.append(name)
    assert candidates >= 80 and subgraphs >= 1, (candidates, subgraphs)
    assert len(converted) >= 70, (len(converted), version_drift)
    for expected in ("sdxl_simple_example.json", "hidream_e1_1.json", "flux_schnell.json", "image_to_video_wan.json"):
        assert expected in converted


def test_real_workflow_with_reroute_and_primitives() -> None:
    ui = json.loads((_package_folder() / "hidream_e1_1.json").read_text(encoding="utf-8"))  # not all 644 (0.8 CPU-s)
    assert is_ui_workflow(ui)
    workflow = ui_to_api(ui, OBJECT_INFO)
    # Reroute 48 carries CFGNorm's MODEL to BasicScheduler and DualCFGGuider.
    assert workflow["49"]["inputs"]["model"] == ["55", 0]
    assert workflow["53"]["inputs"]["model"] == ["55", 0]
    # PrimitiveNodes "CFG" (3) and "Image CFG" (1.5) push their values into DualCFGGuider.
    assert workflow["53"]["inputs"]["cfg_conds"] == 3
    assert workflow["53"]["inputs"]["cfg_cond2_negative"] == 1.5
    assert "48" not in workflow and "56" not in workflow and "57" not in workflow


# --------------------------------------------------------------------------------------------------
# the 2026 /object_info: V3 combos, DynamicCombo, Autogrow, advanced inputs (hotfolder/testing/object_info_2026.json)

CATALOGUE_2026: dict[str, Any] = json.loads((ROOT / "hotfolder" / "testing" / "object_info_2026.json").read_text())


def _one(kind: str, values: Any, inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A UI workflow of node 1 of class ``kind`` feeding nothing."""
    return {"nodes": [ui_node(1, kind, values, inputs=inputs)], "links": []}


def test_a_combo_value_that_is_not_one_of_the_options_is_refused_naming_node_and_input() -> None:
    ui = fixture("txt2img_features.json")
    node(ui, 3)["widgets_values"] = [1, "fixed", 20, 7.5, "no_such_sampler", "normal", 1]
    with pytest.raises(ConversionError) as caught:
        convert_ui_workflow(ui, OBJECT_INFO)
    err = caught.value
    assert "node 3 (KSampler)" in err.message and "'sampler_name'" in err.message and "no_such_sampler" in err.message
    assert err.where["input"] == "sampler_name" and err.where["construct"] == "combo choice"


def test_a_misaligned_string_no_longer_lands_on_a_combo() -> None:
    """The converter without DynamicCombo knowledge put "scale longer dimension" into scale_method."""
    info = copy.deepcopy(CATALOGUE_2026)
    del info["ResizeImageMaskNode"]["input"]["required"]["resize_type"]
    with pytest.raises(ConversionError) as caught:
        convert_ui_workflow(_one("ResizeImageMaskNode", ["scale longer dimension", 2048, "lanczos"]), info)
    assert caught.value.where["input"] == "scale_method" and caught.value.where["construct"] == "combo choice"


def test_combos_whose_options_the_server_does_not_list_take_any_value() -> None:
    # a remote combo (the browser fetches its options) and an empty list (no input files yet)
    remote = ui_to_api(_one("LoadImageOutput", ["ComfyUI_00001_.png [output]", False, "refresh"]), CATALOGUE_2026)
    assert remote["1"]["inputs"]["image"] == "ComfyUI_00001_.png [output]"
    assert ui_to_api(_one("LoadImage", ["mine.png", "image"]), CATALOGUE_2026)["1"]["inputs"]["image"] == "mine.png"
    info = copy.deepcopy(OBJECT_INFO)
    info["SaveImage"]["input"]["required"]["filename_prefix"] = ["COMBO", {"options": []}]  # not a file choice
    assert ui_to_api(_one("SaveImage", ["voice one"]), info)["1"]["inputs"]["filename_prefix"] == "voice one"
    # a model this server lacks is the validator's to name (with the closest files), not a misalignment
    ui = fixture("txt2img_features.json")
    node(ui, 4)["widgets_values"] = ["not_here.safetensors"]
    assert ui_to_api(ui, OBJECT_INFO)["4"]["inputs"]["ckpt_name"] == "not_here.safetensors"


def test_a_multiselect_combo_takes_a_list_of_its_options_only() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    info["SaveImage"]["input"]["required"]["filename_prefix"] = ["COMBO", {"options": ["a", "b"], "multiselect": True}]
    ui = fixture("txt2img_features.json")
    node(ui, 9)["widgets_values"] = [["a", "c"]]
    with pytest.raises(ConversionError, match="filename_prefix"):
        convert_ui_workflow(ui, info)


def test_dynamic_combo_values_go_to_dotted_sub_inputs() -> None:
    result = convert_ui_workflow(_one("ResizeImageMaskNode", ["scale longer dimension", 2048, "lanczos"]), CATALOGUE_2026)
    assert result.workflow["1"]["inputs"] == {
        "resize_type": "scale longer dimension", "resize_type.longer_size": 2048, "scale_method": "lanczos"}
    two = ui_to_api(_one("ResizeImageMaskNode", ["scale dimensions", 640, 480, "disabled", "area"]), CATALOGUE_2026)
    assert two["1"]["inputs"] == {"resize_type": "scale dimensions", "resize_type.width": 640,
                                  "resize_type.height": 480, "resize_type.crop": "disabled", "scale_method": "area"}


def test_dynamic_combo_sockets_are_linked_by_their_dotted_names_and_unknown_keys_refused() -> None:
    ui = _one("ResizeImageMaskNode", ["match size", "center", "area"],
              inputs=[{"name": "resize_type.match", "type": "IMAGE,MASK", "link": 1}])
    ui["nodes"].append(ui_node(2, "EmptyImage", [8, 8, 1, 0], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]))
    ui["links"] = [[1, 2, 0, 1, 0, "IMAGE"]]
    inputs = ui_to_api(ui, CATALOGUE_2026)["1"]["inputs"]
    assert inputs == {"resize_type": "match size", "resize_type.match": ["2", 0], "resize_type.crop": "center",
                      "scale_method": "area"}
    with pytest.raises(ConversionError) as caught:
        convert_ui_workflow(_one("ResizeImageMaskNode", ["scale sideways", 2, "area"]), CATALOGUE_2026)
    assert caught.value.where["input"] == "resize_type" and "DynamicCombo" in caught.value.message


def test_dynamic_combo_with_optional_sub_inputs_seed_and_advanced_inputs() -> None:
    values = ["a poem", 256, "on", 0.7, 64, 0.95, 0.05, 1.05, 7, 0.5, False, True]
    result = convert_ui_workflow(_one("TextGenerate", values), CATALOGUE_2026)
    assert result.workflow["1"]["inputs"] == {
        "prompt": "a poem", "max_length": 256, "sampling_mode": "on", "sampling_mode.temperature": 0.7,
        "sampling_mode.top_k": 64, "sampling_mode.top_p": 0.95, "sampling_mode.min_p": 0.05,
        "sampling_mode.repetition_penalty": 1.05, "sampling_mode.seed": 7, "sampling_mode.presence_penalty": 0.5,
        "thinking": False, "use_default_template": True,  # 'advanced': a widget like any other
    }
    # a seed inside a DynamicCombo keeps its control_after_generate value out of the inputs
    values[8:9] = [7, "randomize"]
    result = convert_ui_workflow(_one("TextGenerate", values), CATALOGUE_2026)
    assert result.workflow["1"]["inputs"]["sampling_mode.presence_penalty"] == 0.5
    assert result.controls == {"1.sampling_mode.seed": "randomize"}
    off = ui_to_api(_one("TextGenerate", ["a poem", 256, "off", False, True]), CATALOGUE_2026)["1"]["inputs"]
    assert off == {"prompt": "a poem", "max_length": 256, "sampling_mode": "off", "thinking": False,
                   "use_default_template": True}


def test_a_primitive_that_sets_a_dynamic_combo_key_brings_that_options_sub_inputs() -> None:
    """As the frontend: setting the key rebuilds the sub-widgets with their defaults."""
    ui = _one("ResizeImageMaskNode", ["scale longer dimension", 2048, "area"],
              inputs=[{"name": "resize_type", "type": "COMBO", "link": 1, "widget": {"name": "resize_type"}}])
    ui["nodes"].append(ui_node(2, "PrimitiveNode", ["scale by multiplier"],
                               outputs=[{"name": "COMBO", "type": "COMBO", "links": [1]}]))
    ui["links"] = [[1, 2, 0, 1, 0, "COMBO"]]
    result = convert_ui_workflow(ui, CATALOGUE_2026)
    assert result.workflow["1"]["inputs"] == {"resize_type": "scale by multiplier", "resize_type.multiplier": 1.0,
                                              "scale_method": "area"}
    assert any("'resize_type.multiplier' belongs to the option" in w for w in result.warnings)
    node(ui, 2)["widgets_values"] = ["scale longer dimension"]  # the same key: the saved values stay
    assert ui_to_api(ui, CATALOGUE_2026)["1"]["inputs"]["resize_type.longer_size"] == 2048


def test_autogrow_sockets_inside_a_dynamic_combo_option_stay_linked() -> None:
    """GPT Image's model option holds an Autogrow of images: model.images.image_1, ... (found against comfy-cli)."""
    spec = CATALOGUE_2026["OpenAIGPTImageNodeV2"]["input"]["required"]["model"]
    option = spec[1]["options"][0]
    assert any(s[0] == "COMFY_AUTOGROW_V3" for g in option["inputs"].values() for s in g.values())
    names = [n for g in option["inputs"].values() for n, s in g.items() if s[0] == "COMFY_AUTOGROW_V3"]
    info = {"Probe": {"input": {"required": {"model": spec}}, "input_order": {"required": ["model"]}, "output": []}}
    entry = f"model.{names[0]}.image_1"
    defaults = convert_ui_workflow(_one("Probe", [option["key"]]), info).workflow["1"]["inputs"]
    ui = _one("Probe", [defaults[k] for k in defaults], inputs=[{"name": entry, "type": "IMAGE", "link": 1}])
    ui["nodes"].append(ui_node(2, "EmptyImage", [8, 8, 1, 0], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]))
    ui["links"] = [[1, 2, 0, 1, 0, "IMAGE"]]
    assert ui_to_api(ui, {**CATALOGUE_2026, **info})["1"]["inputs"][entry] == ["2", 0]


def test_missing_dynamic_combo_values_take_the_defaults_of_the_default_option() -> None:
    result = convert_ui_workflow(_one("ResizeImageMaskNode", []), CATALOGUE_2026)
    inputs = result.workflow["1"]["inputs"]
    assert inputs["resize_type"] == "scale dimensions" and inputs["resize_type.width"] == 512
    assert inputs["resize_type.crop"] == "center" and "scale_method" in inputs
    assert any("no saved value for 'resize_type.height'" in w for w in result.warnings)


def test_socketless_inputs_of_any_type_are_widgets() -> None:
    assert ui_to_api(_one("ColorToRGBInt", ["#0a9299"]), CATALOGUE_2026)["1"]["inputs"] == {"color": "#0a9299"}
    curve = {"points": [[0, 0], [0.4, 0.5], [1, 1]], "interpolation": "monotone_cubic"}
    assert ui_to_api(_one("CurveEditor", [curve]), CATALOGUE_2026)["1"]["inputs"]["curve"] == curve


def test_autogrow_entries_are_sockets_named_by_their_dotted_names() -> None:
    ui = _one("BatchImagesNode", (), inputs=[
        {"name": "images.image0", "type": "IMAGE", "link": 1}, {"name": "images.image1", "type": "IMAGE", "link": 2},
        {"name": "images.image2", "type": "IMAGE", "link": None}])  # fmt: skip
    for source in (2, 3):
        ui["nodes"].append(ui_node(source, "EmptyImage", [8, 8, 1, 0],
                                   outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [source - 1]}]))
    ui["links"] = [[1, 2, 0, 1, 0, "IMAGE"], [2, 3, 0, 1, 1, "IMAGE"]]
    assert ui_to_api(ui, CATALOGUE_2026)["1"]["inputs"] == {"images.image0": ["2", 0], "images.image1": ["3", 0]}


def test_promoted_subgraph_values_land_on_the_inner_inputs_and_leave_nothing_dangling() -> None:
    uuid = "0c4f9a6e-3b52-4d8e-a1f7-9e2b6c5d4a31"
    inner = ui_node(4, "ResizeImageMaskNode", ["scale longer dimension", 1024, "area"], inputs=[
        {"name": "input", "type": "IMAGE,MASK", "link": 1},
        {"name": "resize_type.longer_size", "type": "INT", "link": 2, "widget": {"name": "resize_type.longer_size"}}],
        outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [3]}])  # fmt: skip
    ui = {
        "nodes": [
            ui_node(1, "EmptyImage", [8, 8, 1, 0], outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [10]}]),
            ui_node(2, uuid, [2048], inputs=[
                {"name": "image", "type": "IMAGE", "link": 10},
                {"name": "size", "type": "INT", "link": None, "widget": {"name": "size"}}],
                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [11]}]),
            ui_node(3, "SaveImage", ["out"], inputs=[{"name": "images", "type": "IMAGE", "link": 11}]),
        ],
        "links": [[10, 1, 0, 2, 0, "IMAGE"], [11, 2, 0, 3, 0, "IMAGE"]],
        "definitions": {"subgraphs": [{
            "id": uuid, "name": "Resize", "inputs": [{"name": "image", "type": "IMAGE"}, {"name": "size", "type": "INT"}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE"}], "nodes": [inner],
            "links": [[1, -10, 0, 4, 0, "IMAGE"], [2, -10, 1, 4, 1, "INT"], [3, 4, 0, -20, 0, "IMAGE"]]}]},
    }  # fmt: skip
    result = convert_ui_workflow(ui, CATALOGUE_2026)
    assert result.workflow["2:4"]["inputs"] == {"input": ["1", 0], "resize_type": "scale longer dimension",
                                                "resize_type.longer_size": 2048, "scale_method": "area"}
    assert result.workflow["3"]["inputs"]["images"] == ["2:4", 0]
    assert set(result.workflow) == {"1", "2:4", "3"}
    assert "2:promoted1 (PrimitiveNode): its value is set on the inputs it feeds" in result.dropped
    assert validate_workflow(result.workflow, CATALOGUE_2026) == []
