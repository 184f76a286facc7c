"""Validation against /object_info (the real server's, captured in hotfolder/testing/object_info_core.json)."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from hotfolder.comfy.object_info import ObjectInfoCache, StopAfterNone
from hotfolder.errors import TemplateError
from hotfolder.spec import JobSpec
from hotfolder.templates import load, render
from hotfolder.templates.nodes import combo_options, is_link, models_in, models_used, types_match
from hotfolder.templates.params import scenario_fields
from hotfolder.templates.problems import Problem, ValidationError
from hotfolder.templates.validate import validate_with_refresh, validate_workflow

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
OBJECT_INFO: dict[str, Any] = json.loads((ROOT / "hotfolder" / "testing" / "object_info_core.json").read_text())
CHECKPOINT = "tiny_sd15_random.safetensors"  # the only checkpoint the test server lists


def job(params: dict[str, Any] | None = None, set_: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec(index=1, name="fox-001", source=Path("/x/inbox/fox.yaml"), params=params or {}, set=set_ or {})


def rendered(
    name: str, params: dict[str, Any] | None = None, set_: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Render a shipped template for one job; return the workflow and its scenario field map."""
    template = load.load_template(TEMPLATES, name)
    spec = job(params, set_)
    workflow, _ = render.render_workflow(template, spec)
    return workflow, scenario_fields(template, spec, workflow)


def txt2img(**params: Any) -> dict[str, Any]:
    return rendered("txt2img", {"prompt": "a red fox", "checkpoint": CHECKPOINT, **params})[0]


def kinds(problems: list[Problem]) -> list[tuple[str, str | None, str | None]]:
    return [(p.kind, p.node, p.input) for p in problems]


# --------------------------------------------------------------------------------------------------
# the shipped templates


def test_shipped_templates_are_valid_with_a_checkpoint_the_server_has() -> None:
    assert validate_workflow(txt2img(), OBJECT_INFO) == []
    workflow, _ = rendered("invert")
    assert validate_workflow(workflow, OBJECT_INFO) == []


def test_default_checkpoint_not_on_the_server_names_field_node_and_choices() -> None:
    workflow, fields = rendered("txt2img", {"prompt": "a red fox"})
    problems = validate_workflow(workflow, OBJECT_INFO, scenario_fields=fields)
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.kind, problem.node, problem.input) == ("not_in_list", "4", "ckpt_name")
    assert problem.title == "Load Checkpoint" and problem.class_type == "CheckpointLoaderSimple"
    assert problem.field == "params.checkpoint"
    assert problem.value == "v1-5-pruned-emaonly.safetensors"
    assert CHECKPOINT in problem.message  # the server has one choice: listed


@pytest.mark.parametrize(
    "given",
    ["tiny_sd15_random", "Tiny_SD15_Random.safetensors", "tiny_sd15_randm.safetensors", "models/tiny_sd15_random.ckpt"],
)
def test_checkpoint_close_to_one_on_the_server_is_suggested(given: str) -> None:
    problems = validate_workflow(txt2img(checkpoint=given), OBJECT_INFO)
    assert kinds(problems) == [("not_in_list", "4", "ckpt_name")]
    assert problems[0].suggestions == (CHECKPOINT,)
    assert f"did you mean {CHECKPOINT!r}?" in problems[0].describe()


def test_sampler_and_scheduler_typos_get_suggestions() -> None:
    workflow, fields = rendered(
        "txt2img", {"prompt": "x", "checkpoint": CHECKPOINT, "sampler": "eulr", "scheduler": "karas"}
    )
    problems = validate_workflow(workflow, OBJECT_INFO, scenario_fields=fields)
    assert kinds(problems) == [("not_in_list", "3", "sampler_name"), ("not_in_list", "3", "scheduler")]
    assert problems[0].suggestions[0] == "euler" and problems[0].field == "params.sampler"
    assert problems[1].suggestions[0] == "karras" and problems[1].field == "params.scheduler"
    assert "42 choices" in problems[0].message


def test_new_combo_format_is_checked_with_suggestions() -> None:
    workflow: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageQuantize", "inputs": {"image": ["1", 0], "colors": 16, "dither": "floyd_steinberg"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "q"}},
    }
    assert OBJECT_INFO["ImageQuantize"]["input"]["required"]["dither"][0] == "COMBO"
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("not_in_list", "2", "dither")]
    assert problems[0].suggestions[0] == "floyd-steinberg"
    workflow["2"]["inputs"]["dither"] = "bayer-4"
    assert validate_workflow(workflow, OBJECT_INFO) == []


def test_multiselect_combo_checks_every_value() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    info["ImageQuantize"]["input"]["required"]["dither"][1]["multiselect"] = True
    workflow = txt2img()
    workflow["20"] = {
        "class_type": "ImageQuantize",
        "inputs": {"image": ["8", 0], "colors": 4, "dither": {"__value__": ["none", "bayr-2"]}},
    }
    workflow["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "q"}}
    problems = validate_workflow(workflow, info)
    assert kinds(problems) == [("not_in_list", "20", "dither")]
    assert problems[0].suggestions[0] == "bayer-2"


# --------------------------------------------------------------------------------------------------
# types and ranges, as lenient as ComfyUI


@pytest.mark.parametrize("value", ["128", 64.7, 512, " 256 "])
def test_int_inputs_accept_what_comfyui_converts(value: Any) -> None:
    workflow = txt2img()
    workflow["5"]["inputs"]["width"] = value
    workflow["5"]["inputs"]["batch_size"] = True  # int(True) == 1
    assert validate_workflow(workflow, OBJECT_INFO) == []


@pytest.mark.parametrize("width", ["abc", "64.5", None, {"a": 1}])
def test_int_inputs_refuse_what_int_cannot_convert(width: Any) -> None:
    workflow = txt2img()
    workflow["5"]["inputs"]["width"] = width
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("invalid_value", "5", "width")]
    assert "not a valid INT" in problems[0].message


def test_float_and_string_conversions() -> None:
    workflow = txt2img()
    workflow["3"]["inputs"]["cfg"] = "7.5"
    workflow["6"]["inputs"]["text"] = 42  # str(42) is fine for ComfyUI
    assert validate_workflow(workflow, OBJECT_INFO) == []
    workflow["3"]["inputs"]["cfg"] = "high"
    assert kinds(validate_workflow(workflow, OBJECT_INFO)) == [("invalid_value", "3", "cfg")]


def test_out_of_range_literals_name_the_limit() -> None:
    workflow = txt2img()
    workflow["5"]["inputs"]["width"] = 8
    workflow["3"]["inputs"]["steps"] = 20000
    workflow["3"]["inputs"]["denoise"] = "1.5"
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("above_max", "3", "steps"), ("above_max", "3", "denoise"), ("below_min", "5", "width")]
    assert problems[0].message == "20000 is above the maximum 10000" and problems[0].suggestions == (10000,)
    assert problems[2].message == "8 is below the minimum 16"


def test_warnings_are_only_returned_when_asked() -> None:
    workflow = txt2img()
    workflow["5"]["inputs"]["width"] = 64.7
    workflow["8"]["inputs"]["vae"] = "ae.safetensors"
    assert validate_workflow(workflow, OBJECT_INFO) == []
    problems = validate_workflow(workflow, OBJECT_INFO, warnings=True)
    assert {(p.kind, p.severity) for p in problems} == {("lossy_number", "warning"), ("literal_for_link", "warning")}
    assert "truncates it to 64" in next(p.message for p in problems if p.kind == "lossy_number")


def test_string_for_a_boolean_is_a_warning() -> None:
    workflow = txt2img()
    workflow["20"] = {"class_type": "ImageInvert", "inputs": {"image": ["8", 0]}}
    info = copy.deepcopy(OBJECT_INFO)
    info["ImageInvert"]["input"]["optional"] = {"flip": ["BOOLEAN", {"default": False}]}
    workflow["20"]["inputs"]["flip"] = "false"
    workflow["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "x"}}
    problems = validate_workflow(workflow, info, warnings=True)
    assert kinds(problems) == [("string_as_boolean", "20", "flip")]


# --------------------------------------------------------------------------------------------------
# structure


def test_missing_required_input() -> None:
    workflow = txt2img()
    del workflow["3"]["inputs"]["steps"]
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("missing_input", "3", "steps")]
    assert problems[0].message == "required input 'steps' (INT) is missing"


def test_unknown_class_is_reported_with_close_class_names() -> None:
    workflow = txt2img()
    workflow["3"]["class_type"] = "KSamplr"
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert ("unknown_class", "3", None) in kinds(problems)
    unknown = next(p for p in problems if p.kind == "unknown_class")
    assert unknown.suggestions[0] == "KSampler"


def test_unknown_class_anywhere_is_reported_even_if_nothing_uses_the_node() -> None:
    workflow = txt2img()
    workflow["99"] = {"class_type": "ImpactWildcardProcessor", "inputs": {}}
    assert kinds(validate_workflow(workflow, OBJECT_INFO)) == [("unknown_class", "99", None)]


def test_nodes_no_output_depends_on_are_not_checked_like_comfyui() -> None:
    workflow = txt2img()
    workflow["99"] = {"class_type": "EmptyLatentImage", "inputs": {"width": "abc"}}
    assert validate_workflow(workflow, OBJECT_INFO) == []


def test_no_output_node() -> None:
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}}}
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("no_outputs", None, None), ("below_min", "1", "width")]


@pytest.mark.parametrize(
    ("link", "kind", "text"),
    [
        (["99", 0], "link_missing_node", "links to node '99', which is not in the workflow"),
        ([4, 0], "link_missing_node", "node ids are strings: '4'"),
        (["4", 5], "link_bad_slot", "which has outputs 0 (MODEL), 1 (CLIP), 2 (VAE)"),
        (["4", "0"], "link_bad_slot", "links to output '0'"),
        (["4"], "bad_link", "must be [node_id, output_slot]"),
        (
            ["5", 0],
            "link_type_mismatch",
            "expects MODEL but is linked to output 0 of node 5 (EmptyLatentImage), which gives LATENT",
        ),
    ],
)
def test_bad_links(link: list[Any], kind: str, text: str) -> None:
    workflow = txt2img()
    workflow["3"]["inputs"]["model"] = link
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [(kind, "3", "model")]
    assert text in problems[0].message
    assert problems[0].value == link


def test_int_link_id_suggests_the_string_id() -> None:
    workflow = txt2img()
    workflow["3"]["inputs"]["model"] = [4, 0]
    assert validate_workflow(workflow, OBJECT_INFO)[0].suggestions == (["4", 0],)


def test_a_link_is_what_comfyui_follows_as_one() -> None:
    # ComfyUI's comfy_execution/graph_utils.py is_link: [str, int or float]; an int node id is a literal there
    assert all(is_link(value) for value in (["4", 0], ["4", 1.0], ["4", True]))
    assert not any(is_link(value) for value in ([4, 0], ["4", "0"], ["4", 0, 1], ("4", 0), "4", None))


def test_any_type_and_combo_outputs_match() -> None:
    assert types_match("IMAGE", "*") and types_match("*", "LATENT")
    assert types_match("IMAGE,MASK", "MASK") and not types_match("IMAGE", "LATENT")
    assert types_match(["euler", "heun"], ["euler"]) and types_match(["a"], "COMBO") and types_match("COMBO", ["a"])
    assert not types_match(["a"], "INT")
    workflow = txt2img()
    workflow["20"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}  # '*' input
    assert validate_workflow(workflow, OBJECT_INFO) == []
    info = copy.deepcopy(OBJECT_INFO)
    info["SamplerPicker"] = {
        "input": {"required": {}},
        "input_order": {"required": []},
        "output": [info["KSampler"]["input"]["required"]["sampler_name"][0]],
        "output_node": False,
    }
    workflow["21"] = {"class_type": "SamplerPicker", "inputs": {}}
    workflow["3"]["inputs"]["sampler_name"] = ["21", 0]
    assert validate_workflow(workflow, info) == []
    workflow["3"]["inputs"]["steps"] = ["21", 0]
    assert kinds(validate_workflow(workflow, info)) == [("link_type_mismatch", "3", "steps")]


def test_cycle_is_reported() -> None:
    workflow = txt2img()
    workflow["20"] = {"class_type": "ImageInvert", "inputs": {"image": ["21", 0]}}
    workflow["21"] = {"class_type": "ImageInvert", "inputs": {"image": ["20", 0]}}
    workflow["9"]["inputs"]["images"] = ["20", 0]
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert [p.kind for p in problems] == ["cycle"]
    assert "20 -> 21 -> 20" in problems[0].message or "21 -> 20 -> 21" in problems[0].message


def test_malformed_and_ui_workflows() -> None:
    assert [p.kind for p in validate_workflow({}, OBJECT_INFO)] == ["not_a_workflow"]
    assert [p.kind for p in validate_workflow([], OBJECT_INFO)] == ["not_a_workflow"]
    ui = json.loads((ROOT / "tests" / "data" / "ui_workflows" / "txt2img_features.json").read_text())
    assert "UI workflow" in validate_workflow(ui, OBJECT_INFO)[0].message
    workflow = txt2img()
    workflow["8"] = {"class_type": "VAEDecode"}
    workflow["10"] = "nonsense"
    assert ("malformed_node", "8", None) in kinds(validate_workflow(workflow, OBJECT_INFO))
    assert ("malformed_node", "10", None) in kinds(validate_workflow(workflow, OBJECT_INFO))


def test_inputs_are_not_changed() -> None:
    workflow = txt2img()
    workflow["5"]["inputs"]["width"] = "128"
    info_before = json.dumps(OBJECT_INFO, sort_keys=True)
    before = copy.deepcopy(workflow)
    validate_workflow(workflow, OBJECT_INFO)
    assert workflow == before and json.dumps(OBJECT_INFO, sort_keys=True) == info_before


def test_value_wrapper_is_unwrapped_like_comfyui() -> None:
    workflow = txt2img()
    workflow["3"]["inputs"]["sampler_name"] = {"__value__": "euler"}
    assert validate_workflow(workflow, OBJECT_INFO) == []


# --------------------------------------------------------------------------------------------------
# scenario fields, unknown inputs, files


def test_scenario_fields_cover_template_variables_sidecar_inputs_and_set() -> None:
    _, fields = rendered("txt2img", {"prompt": "x"}, {"KSampler.cfg": 5, "Negative Prompt.text": "ugly"})
    assert fields["4.ckpt_name"] == "params.checkpoint"
    assert fields["6.text"] == "params.prompt"
    assert fields["3.cfg"] == "set.KSampler.cfg"  # set: wins over the template variable
    assert fields["7.text"] == "set.Negative Prompt.text"


def test_unknown_input_set_by_the_scenario_is_an_error_with_suggestion() -> None:
    workflow, fields = rendered("txt2img", {"prompt": "x", "checkpoint": CHECKPOINT}, {"KSampler.step": 30})
    problems = validate_workflow(workflow, OBJECT_INFO, scenario_fields=fields)
    assert kinds(problems) == [("unknown_input", "3", "step")]
    assert problems[0].field == "set.KSampler.step" and problems[0].suggestions == ("steps",)
    # without a scenario field it is a harmless extra input, as for ComfyUI
    assert validate_workflow(workflow, OBJECT_INFO) == []


def test_uploaded_files_and_subfolder_images_are_accepted() -> None:
    workflow: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "job-3f2a.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("not_in_list", "1", "image")]
    assert validate_workflow(workflow, OBJECT_INFO, known_files={"job-3f2a.png"}) == []
    workflow["1"]["inputs"]["image"] = "hotfolder/job-3f2a.png"
    assert validate_workflow(workflow, OBJECT_INFO) == []
    workflow["1"]["inputs"]["image"] = "cap_upload.png [input]"
    assert validate_workflow(workflow, OBJECT_INFO) == []


def test_empty_model_list_says_the_folder_is_empty() -> None:
    workflow = txt2img()
    workflow["10"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "fox.safetensors",
            "strength_model": 1.0,
            "strength_clip": 1.0,
        },
    }
    workflow["3"]["inputs"]["model"] = ["10", 0]
    problems = validate_workflow(workflow, OBJECT_INFO)
    assert kinds(problems) == [("not_in_list", "10", "lora_name")]
    assert "models/loras folder empty" in problems[0].message


# --------------------------------------------------------------------------------------------------
# ValidationError


def test_validation_error_message_lists_every_problem() -> None:
    workflow, fields = rendered("txt2img", {"prompt": "x", "sampler": "eulr"})
    problems = validate_workflow(workflow, OBJECT_INFO, scenario_fields=fields)
    err = ValidationError.from_problems(
        problems, subject="Job 'fox-001' (template 'txt2img')", server="http://127.0.0.1:8188", where={"job": "fox-001"}
    )
    assert isinstance(err, TemplateError) and err.stage == "validate"
    lines = str(err).splitlines()
    assert (
        lines[0]
        == "Job 'fox-001' (template 'txt2img') would be refused by ComfyUI at http://127.0.0.1:8188: 2 problems"
    )
    assert lines[1] == (
        "  - node 3 (KSampler), input sampler_name [set by params.sampler]: 'eulr' is not one of the "
        "server's 42 choices; did you mean 'euler'?"
    )
    assert lines[2].startswith(
        '  - node 4 "Load Checkpoint" (CheckpointLoaderSimple), input ckpt_name [set by params.checkpoint]'
    )
    assert lines[3].startswith("Hint: ") and "model name" in lines[3]
    data = err.to_dict()
    assert data["stage"] == "validate" and data["where"]["job"] == "fox-001"
    assert data["where"]["node"] == "3" and data["where"]["field"] == "params.sampler"
    assert [p["input"] for p in data["details"]["problems"]] == ["sampler_name", "ckpt_name"]
    json.dumps(data)


def test_validation_error_counts_errors_and_lists_warnings_after_them() -> None:
    warning = Problem(kind="lossy_number", message="truncated", node="5", input="width", severity="warning")
    error = Problem(kind="missing_input", message="missing", node="3", input="steps")
    err = ValidationError.from_problems([warning, error])
    lines = str(err).splitlines()
    assert lines[0].endswith(": 1 problem")
    assert lines[1].startswith("  - node 3") and lines[2].startswith("  - (warning) node 5")


# --------------------------------------------------------------------------------------------------
# models


def test_models_in_reads_both_combo_formats() -> None:
    models = models_in(OBJECT_INFO)
    assert models["checkpoints"] == [CHECKPOINT]
    assert models["loras"] == []
    assert "vae" in models and "diffusion_models" in models
    dither = combo_options(OBJECT_INFO, "ImageQuantize", "dither")
    assert dither is not None and dither[:2] == ["none", "floyd-steinberg"]
    assert combo_options(OBJECT_INFO, "KSampler", "steps") is None
    assert combo_options(OBJECT_INFO, "NoSuchNode", "x") is None


def test_models_used_by_a_workflow() -> None:
    assert models_used(txt2img()) == {"checkpoints": {CHECKPOINT}}


# --------------------------------------------------------------------------------------------------
# ObjectInfoCache


class FakeServer:
    """A /object_info fetcher whose answers and failures the test controls."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.calls = 0
        self.fail: Exception | None = None

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return copy.deepcopy(self.info)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_fetches_once_then_refreshes_when_too_old() -> None:
    server, clock = FakeServer({"A": {}}), Clock()
    cache = ObjectInfoCache(server, max_age=60, clock=clock)
    assert cache.version == 0 and cache.cached() is None
    first = cache.get()
    assert cache.get() is first and server.calls == 1 and cache.version == 1
    clock.now += 59
    assert cache.get() is first and server.calls == 1
    clock.now += 1
    assert cache.get() == first and server.calls == 2
    assert cache.version == 1  # same content: not a change
    server.info = {"A": {}, "B": {}}
    assert "B" in cache.get(refresh=True) and cache.version == 2 and server.calls == 3
    cache.invalidate()
    cache.get()
    assert server.calls == 4 and cache.age() == 0


def test_cache_serves_the_old_copy_when_an_automatic_refresh_fails() -> None:
    server, clock = FakeServer({"A": {}}), Clock()
    cache = ObjectInfoCache(server, max_age=60, retry_after=10, clock=clock)
    old = cache.get()
    server.fail = ConnectionError("server down")
    clock.now += 61
    assert cache.get() is old and server.calls == 2
    clock.now += 5
    assert cache.get() is old and server.calls == 2  # no retry before retry_after
    clock.now += 5
    assert cache.get() is old and server.calls == 3
    with pytest.raises(ConnectionError):
        cache.refresh()
    server.fail = None
    clock.now += 10
    assert cache.get() == old and server.calls == 5


def test_cache_without_a_copy_raises_the_fetch_error() -> None:
    server = FakeServer({})
    server.fail = ConnectionError("refused")
    with pytest.raises(ConnectionError):
        ObjectInfoCache(server).get()


def test_cache_rejects_a_non_object_answer() -> None:
    with pytest.raises(TypeError):
        ObjectInfoCache(lambda: []).get()  # type: ignore[arg-type,return-value]


def test_concurrent_callers_share_one_fetch() -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def fetch() -> dict[str, Any]:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return {"A": {}}

    cache = ObjectInfoCache(fetch)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(8)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)


def test_validate_with_refresh_rechecks_with_fresh_data_when_a_model_might_be_new() -> None:
    old = copy.deepcopy(OBJECT_INFO)
    old["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = []
    server, clock = FakeServer(old), Clock()
    cache = ObjectInfoCache(server, max_age=600, min_refresh_interval=5, clock=clock)
    workflow = txt2img()
    assert kinds(validate_with_refresh(cache, workflow)) == [("not_in_list", "4", "ckpt_name")]  # copy too new to refresh
    assert server.calls == 1
    server.info = OBJECT_INFO  # the model was added on the server
    clock.now += 5
    assert validate_with_refresh(cache, workflow) == []
    assert server.calls == 2 and cache.version == 2
    # a problem a refresh cannot fix does not refetch
    clock.now += 5
    workflow["3"]["inputs"]["steps"] = "many"
    assert kinds(validate_with_refresh(cache, workflow)) == [("invalid_value", "3", "steps")] and server.calls == 2


def test_stop_after_none_asks_until_the_first_none_and_keeps_nothing() -> None:
    answers = iter([({"A": {}}, 1), ({"B": {}}, 2), None, ({"C": {}}, 3)])
    asked: list[int] = []

    def source() -> Any:
        asked.append(1)
        return next(answers)

    once = StopAfterNone(source)
    assert [once(), once()] == [({"A": {}}, 1), ({"B": {}}, 2)]  # not a cache: each call asks again
    assert once() is None and once() is None  # after the first None, no more waits on that server
    assert len(asked) == 3


# --------------------------------------------------------------------------------------------------
# the 2026 /object_info: V3 combos, DynamicCombo and Autogrow inputs

CATALOGUE_2026: dict[str, Any] = json.loads((ROOT / "hotfolder" / "testing" / "object_info_2026.json").read_text())


def resize(**inputs: Any) -> dict[str, Any]:
    """EmptyImage 1 -> ResizeImageMaskNode 2 (``inputs`` added) -> SaveImage 3."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ResizeImageMaskNode", "inputs": {"input": ["1", 0], "scale_method": "area", **inputs}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }


def test_dynamic_combo_keys_and_the_chosen_options_dotted_inputs_are_checked() -> None:
    good = resize(**{"resize_type": "scale longer dimension", "resize_type.longer_size": 1024})
    assert validate_workflow(good, CATALOGUE_2026) == []
    bad_key = resize(**{"resize_type": "scale sideways"})
    (problem,) = validate_workflow(bad_key, CATALOGUE_2026)
    assert (problem.kind, problem.input) == ("not_in_list", "resize_type") and problem.suggestions
    too_big = resize(**{"resize_type": "scale longer dimension", "resize_type.longer_size": 99999})
    assert kinds(validate_workflow(too_big, CATALOGUE_2026)) == [("above_max", "2", "resize_type.longer_size")]
    missing = resize(**{"resize_type": "scale dimensions", "resize_type.width": 64})
    assert kinds(validate_workflow(missing, CATALOGUE_2026)) == [
        ("missing_input", "2", "resize_type.height"), ("missing_input", "2", "resize_type.crop")]
    linked = resize(**{"resize_type": "match size", "resize_type.match": ["1", 0], "resize_type.crop": "center"})
    assert validate_workflow(linked, CATALOGUE_2026) == []
    # an input of an option that is not chosen does nothing: named when the scenario set it
    other = resize(**{"resize_type": "scale by multiplier", "resize_type.multiplier": 2.0, "resize_type.width": 5})
    problems = validate_workflow(other, CATALOGUE_2026, scenario_fields={"2.resize_type.width": "set.2.resize_type.width"})
    assert kinds(problems) == [("unknown_input", "2", "resize_type.width")]


def test_autogrow_entries_are_checked_and_only_the_first_min_required() -> None:
    def batch(**inputs: Any) -> dict[str, Any]:
        return {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "BatchImagesNode", "inputs": inputs},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
        }

    assert validate_workflow(batch(**{"images.image0": ["1", 0], "images.image1": ["1", 0]}), CATALOGUE_2026) == []
    assert kinds(validate_workflow(batch(), CATALOGUE_2026)) == [("missing_input", "2", "images.image0")]
    wrong = batch(**{"images.image0": ["1", 0], "images.image1": ["1", 3]})
    assert kinds(validate_workflow(wrong, CATALOGUE_2026)) == [("link_bad_slot", "2", "images.image1")]


def test_autogrow_templates_with_several_inputs_name_each_by_input_and_ordinal() -> None:
    from hotfolder.templates.nodes import autogrow_entries

    options = {"template": {"input": {"required": {"image": ["IMAGE", {}], "mask": ["MASK", {}]}},
                            "prefix": "ignored", "min": 1, "max": 2}}
    assert [(n, c) for n, c, *_ in autogrow_entries("pairs", options)] == [
        ("pairs.image0", "required"), ("pairs.mask0", "required"), ("pairs.image1", "optional"),
        ("pairs.mask1", "optional")]
    named = {"template": {"input": {"optional": {"value": ["*", {}]}}, "names": ["a", "b"], "min": 2}}
    assert [(n, c) for n, c, *_ in autogrow_entries("values", named)] == [("values.a", "optional"),
                                                                       ("values.b", "optional")]


def test_remote_and_multiselect_v3_combos() -> None:
    workflow = {
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": "anything.png [output]"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert validate_workflow(workflow, CATALOGUE_2026) == []
    info = copy.deepcopy(OBJECT_INFO)
    info["SaveImage"]["input"]["required"]["filename_prefix"] = ["COMBO", {"options": ["a", "b"], "multiselect": True}]
    workflow, _ = rendered("invert")
    save = next(n for n in workflow.values() if n["class_type"] == "SaveImage")
    save["inputs"]["filename_prefix"] = {"__value__": ["a", "b"]}
    assert validate_workflow(workflow, info) == []
    save["inputs"]["filename_prefix"] = {"__value__": ["a", "c"]}
    assert [p.kind for p in validate_workflow(workflow, info)] == ["not_in_list"]
