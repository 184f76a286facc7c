"""Parameter roles found from a workflow's shape, independent of node ids."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from hotfolder.templates.convert import convert_ui_workflow, is_ui_workflow
from hotfolder.templates.roles import ROLES, find_roles

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG: dict[str, Any] = json.loads((ROOT / "templates" / "txt2img.json").read_text())
OBJECT_INFO: dict[str, Any] = json.loads((ROOT / "hotfolder" / "testing" / "object_info_core.json").read_text())
FIXTURES = Path(__file__).resolve().parent / "data" / "ui_workflows"

EXPECTED_TXT2IMG = {
    "prompt": "6.text",
    "negative": "7.text",
    "seed": "3.seed",
    "steps": "3.steps",
    "cfg": "3.cfg",
    "sampler": "3.sampler_name",
    "scheduler": "3.scheduler",
    "denoise": "3.denoise",
    "width": "5.width",
    "height": "5.height",
    "batch_size": "5.batch_size",
    "checkpoint": "4.ckpt_name",
    "prefix": "9.filename_prefix",
}


def renumber(workflow: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """The same workflow with node ids replaced (and links rewritten), in a shuffled order."""
    out: dict[str, Any] = {}
    items = list(workflow.items())
    random.Random(7).shuffle(items)
    for node_id, node in items:
        node = copy.deepcopy(node)
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                node["inputs"][name] = [mapping[value[0]], value[1]]
        out[mapping[node_id]] = node
    return out


def test_txt2img_roles() -> None:
    roles = find_roles(TXT2IMG)
    assert roles.roles == EXPECTED_TXT2IMG
    assert list(roles.roles) == [r for r in ROLES if r in EXPECTED_TXT2IMG]  # stable order
    assert roles.reasons == {"image": "no LoadImage node"}
    assert "prompt: 6.text" in roles.describe() and "image: not set (no LoadImage node)" in roles.describe()


def test_roles_follow_the_graph_when_ids_change() -> None:
    mapping = {"3": "41", "4": "17", "5": "102", "6": "8", "7": "9", "8": "3", "9": "55"}
    roles = find_roles(renumber(TXT2IMG, mapping))
    expected = {role: f"{mapping[a.split('.')[0]]}.{a.split('.')[1]}" for role, a in EXPECTED_TXT2IMG.items()}
    assert roles.roles == expected


def test_prompts_are_told_apart_by_links_not_titles_or_order() -> None:
    workflow = copy.deepcopy(TXT2IMG)
    workflow["3"]["inputs"]["positive"], workflow["3"]["inputs"]["negative"] = ["7", 0], ["6", 0]
    for node in workflow.values():
        node.pop("_meta", None)
    roles = find_roles(workflow).roles
    assert roles["prompt"] == "7.text" and roles["negative"] == "6.text"


def test_two_samplers_make_their_settings_ambiguous() -> None:
    workflow = copy.deepcopy(TXT2IMG)
    workflow["10"] = copy.deepcopy(workflow["3"])  # a second pass on the first one's latent
    workflow["10"]["inputs"]["latent_image"] = ["3", 0]
    workflow["8"]["inputs"]["samples"] = ["10", 0]
    roles = find_roles(workflow)
    assert roles.roles["prompt"] == "6.text" and roles.roles["negative"] == "7.text"  # shared encoders
    assert roles.roles["width"] == "5.width"
    for role in ("seed", "steps", "cfg", "sampler", "scheduler", "denoise"):
        assert role not in roles.roles
        assert roles.reasons[role].startswith("ambiguous: 3.")
    assert roles.reasons["seed"] == "ambiguous: 3.seed, 10.seed"


def test_shared_primitive_is_one_role() -> None:
    workflow = copy.deepcopy(TXT2IMG)
    workflow["10"] = copy.deepcopy(workflow["3"])
    workflow["10"]["inputs"]["latent_image"] = ["3", 0]
    workflow["20"] = {"class_type": "PrimitiveInt", "inputs": {"value": 1234}, "_meta": {"title": "Seed"}}
    workflow["3"]["inputs"]["seed"] = ["20", 0]
    workflow["10"]["inputs"]["seed"] = ["20", 0]
    roles = find_roles(workflow)
    assert roles.roles["seed"] == "20.value"


def test_prompt_through_conditioning_nodes_and_a_string_primitive() -> None:
    workflow = copy.deepcopy(TXT2IMG)
    workflow["11"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["12", 0], "image": ["13", 0],
                   "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0},
    }  # fmt: skip
    workflow["14"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["11", 0], "guidance": 3.5}}
    workflow["3"]["inputs"]["positive"] = ["14", 0]
    workflow["3"]["inputs"]["negative"] = ["11", 1]
    workflow["15"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a fox"}}
    workflow["6"]["inputs"]["text"] = ["15", 0]
    roles = find_roles(workflow).roles
    assert roles["prompt"] == "15.value"
    assert roles["negative"] == "7.text"
    assert roles["seed"] == "3.seed"  # ControlNetApplyAdvanced has positive/negative but is not a sampler


def test_zeroed_negative_is_not_a_role() -> None:
    workflow = copy.deepcopy(TXT2IMG)
    workflow["12"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}
    workflow["3"]["inputs"]["negative"] = ["12", 0]
    del workflow["7"]
    roles = find_roles(workflow)
    assert roles.roles["prompt"] == "6.text"
    assert "negative" not in roles.roles and "zeroed out" in roles.reasons["negative"]


def test_custom_sampler_pipeline() -> None:
    workflow = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "a", "clip_name2": "b", "type": "flux"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a fox"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}},
        "5": {
            "class_type": "CFGGuider",
            "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "cfg": 1.0},
        },
        "6": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 4, "denoise": 1.0},
        },
        "9": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 1}},
        "10": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["6", 0],
                "guider": ["5", 0],
                "sampler": ["7", 0],
                "sigmas": ["8", 0],
                "latent_image": ["9", 0],
            },
        },
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["12", 0]}},
        "12": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "flux"}},
    }
    roles = find_roles(workflow)
    assert roles.roles == {
        "prompt": "3.text", "negative": "4.text", "seed": "6.noise_seed", "steps": "8.steps", "cfg": "5.cfg",
        "sampler": "7.sampler_name", "scheduler": "8.scheduler", "denoise": "8.denoise", "width": "9.width",
        "height": "9.height", "batch_size": "9.batch_size", "prefix": "13.filename_prefix",
    }  # fmt: skip
    assert roles.reasons["checkpoint"] == "no node has a ckpt_name input"


def test_img2img_size_comes_from_the_nearest_sized_node_and_image_role() -> None:
    workflow = copy.deepcopy(TXT2IMG)
    del workflow["5"]
    workflow["20"] = {"class_type": "LoadImage", "inputs": {"image": "cap_upload.png"}}
    workflow["21"] = {
        "class_type": "ImageScale",
        "inputs": {"image": ["20", 0], "upscale_method": "area", "width": 768, "height": 512, "crop": "disabled"},
    }
    workflow["22"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["21", 0], "vae": ["4", 2]}}
    workflow["3"]["inputs"]["latent_image"] = ["22", 0]
    roles = find_roles(workflow)
    assert roles.roles["width"] == "21.width" and roles.roles["height"] == "21.height"
    assert "batch_size" not in roles.roles
    assert roles.roles["image"] == "20.image"


def test_no_sampler() -> None:
    workflow = json.loads((ROOT / "templates" / "invert.json").read_text())
    roles = find_roles(workflow)
    assert roles.roles == {"prefix": "3.filename_prefix"}
    assert roles.reasons["prompt"] == "no sampler with positive and negative links"
    assert roles.reasons["width"] == "no sampler with a latent_image link"


def test_converted_ui_workflows_keep_their_roles() -> None:
    ui = json.loads((FIXTURES / "txt2img_features.json").read_text())
    roles = find_roles(convert_ui_workflow(ui, OBJECT_INFO).workflow)
    assert (
        roles.roles["prompt"] == "6.text"
        and roles.roles["seed"] == "3.seed"
        and roles.roles["prefix"] == "9.filename_prefix"
    )
    sdxl = json.loads((FIXTURES / "sdxl_simple_example.json").read_text())
    roles = find_roles(convert_ui_workflow(sdxl, OBJECT_INFO).workflow)
    assert roles.reasons["prompt"] == "ambiguous: 6.text, 15.text"  # base and refiner encode the prompt twice
    assert roles.reasons["seed"] == "ambiguous: 10.noise_seed, 11.noise_seed"
    assert roles.roles["width"] == "5.width"


def test_roles_are_found_inside_subgraphs_through_their_flattened_ids() -> None:
    """An official workflow whose sampler, prompt and latent sit in a subgraph (instance 57)."""
    package = pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    ui = json.loads((resources.files(package) / "templates" / "image_z_image_turbo.json").read_text(encoding="utf-8"))
    roles = find_roles(convert_ui_workflow(ui, OBJECT_INFO).workflow).roles
    assert roles["prompt"] == "57:27.text" and roles["seed"] == "57:3.seed" and roles["width"] == "57:13.width"
    assert roles["prefix"] == "9.filename_prefix"


def test_real_single_sampler_workflows_have_prompt_and_seed() -> None:
    package = pytest.importorskip("comfyui_workflow_templates_json")
    from importlib import resources

    folder = resources.files(package) / "templates"
    checked = 0
    for name in (
        "image_sdxl_simple.json",
        "flux_schnell.json",
        "text_to_video_wan.json",
        "hidream_i1_dev.json",
        "image_to_video_wan.json",
    ):
        ui = json.loads((folder / name).read_text(encoding="utf-8"))
        assert is_ui_workflow(ui)
        workflow = convert_ui_workflow(ui, OBJECT_INFO, name=name).workflow
        roles = find_roles(workflow)
        for role in ("prompt", "negative", "seed", "steps", "cfg", "sampler", "width", "height", "prefix"):
            assert role in roles.roles, (name, role, roles.reasons.get(role))
            node_id, _, input_name = roles.roles[role].rpartition(".")
            assert input_name in workflow[node_id]["inputs"]
        assert isinstance(workflow[roles.roles["prompt"].split(".")[0]]["inputs"]["text"], str)
        checked += 1
    assert checked == 5


# --------------------------------------------------------------------------------------------------
# roles as template parameters: a plain export (no sidecar, no Jinja) is filled by role names


PLAIN_VALUES = {
    "3.seed": 8566257, "3.steps": 20, "3.cfg": 8, "3.sampler_name": "euler", "3.scheduler": "normal",
    "4.ckpt_name": "v1-5-pruned-emaonly.safetensors", "5.width": 512, "5.height": 512, "5.batch_size": 1,
    "6.text": "beautiful scenery", "7.text": "text, watermark", "9.filename_prefix": "ComfyUI",
}


def plain_export(mapping: dict[str, str]) -> dict[str, Any]:
    """The shipped txt2img as ComfyUI exports it (literals, no Jinja), with node ids renumbered."""
    workflow = copy.deepcopy(TXT2IMG)
    for address, value in PLAIN_VALUES.items():
        node_id, name = address.split(".")
        workflow[node_id]["inputs"][name] = value
    return renumber(workflow, mapping)


def render_plain(tmp_path: Path, workflow: dict[str, Any], params: dict[str, Any], sidecar: str | None = None,
                 **spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from hotfolder.spec import JobSpec
    from hotfolder.templates import load, render

    (tmp_path / "plain.json").write_text(json.dumps(workflow))
    if sidecar is not None:
        (tmp_path / "plain.toml").write_text(sidecar)
    template = load.load_template(tmp_path, "plain")
    job = JobSpec(index=1, name="job", source=Path("s.yaml"), template="plain", params=params, **spec)
    return render.render_workflow(template, job)


def test_a_plain_export_is_filled_by_role_names_whatever_its_node_ids(tmp_path: Path) -> None:
    mapping = {"3": "41", "4": "17", "5": "102", "6": "8", "7": "9", "8": "3", "9": "55"}
    params = {"prompt": "a red fox", "negative": "blurry", "seed": 42, "steps": 12, "cfg": 6.5,
              "sampler": "dpmpp_2m", "scheduler": "karras", "width": 640, "height": 384, "batch_size": 2,
              "checkpoint": "tiny_sd15_random.safetensors", "prefix": "fox"}
    workflow, resolved = render_plain(tmp_path, plain_export(mapping), params)
    assert resolved == params
    inputs = {node_id: node["inputs"] for node_id, node in workflow.items()}
    assert inputs["8"]["text"] == "a red fox" and inputs["9"]["text"] == "blurry"
    assert (inputs["41"]["seed"], inputs["41"]["steps"], inputs["41"]["cfg"]) == (42, 12, 6.5)
    assert (inputs["41"]["sampler_name"], inputs["41"]["scheduler"]) == ("dpmpp_2m", "karras")
    assert (inputs["102"]["width"], inputs["102"]["height"], inputs["102"]["batch_size"]) == (640, 384, 2)
    assert inputs["17"]["ckpt_name"] == "tiny_sd15_random.safetensors" and inputs["55"]["filename_prefix"] == "fox"
    # what a scenario leaves out keeps the exported value; a random seed is drawn
    workflow, resolved = render_plain(tmp_path, plain_export(mapping), {"prompt": "a cat", "seed": "random"})
    assert workflow["8"]["inputs"]["text"] == "a cat" and workflow["9"]["inputs"]["text"] == "text, watermark"
    assert isinstance(resolved["seed"], int) and workflow["41"]["inputs"]["seed"] == resolved["seed"]
    assert workflow["41"]["inputs"]["steps"] == 20


def test_roles_are_the_template_parameters_and_map_problems_to_scenario_fields(tmp_path: Path) -> None:
    from hotfolder.spec import JobSpec
    from hotfolder.templates import load, render, validate
    from hotfolder.templates.params import scenario_fields

    (tmp_path / "plain.json").write_text(json.dumps(plain_export({str(i): str(i + 100) for i in range(3, 10)})))
    template = load.load_template(tmp_path, "plain")
    assert template.roles["prompt"] == "106.text" and template.sidecar is None
    assert set(template.params) == set(EXPECTED_TXT2IMG)
    job = JobSpec(index=1, name="job", source=Path("s.yaml"), template="plain", params={"sampler": "eulr"})
    workflow, _ = render.render_workflow(template, job)
    fields = scenario_fields(template, job, workflow)
    assert fields == {"103.sampler_name": "params.sampler"}  # only what the job set
    problems = validate.validate_workflow(workflow, OBJECT_INFO, scenario_fields=fields)
    sampler = next(p for p in problems if p.input == "sampler_name")
    assert sampler.field == "params.sampler" and "euler" in sampler.suggestions


def test_a_sidecar_wins_over_roles(tmp_path: Path) -> None:
    from hotfolder.errors import TemplateError

    workflow, resolved = render_plain(tmp_path, plain_export({str(i): str(i) for i in range(3, 10)}),
                                      {"prompt": "a red fox"}, sidecar='[params]\nprompt = "7.text"\n')
    assert workflow["7"]["inputs"]["text"] == "a red fox"  # where the sidecar says, not the role's 6.text
    assert workflow["6"]["inputs"]["text"] == "beautiful scenery"
    assert workflow["3"]["inputs"]["steps"] == 20
    with pytest.raises(TemplateError, match="'steps'"):  # no parameter of this template: an error, not ignored
        render_plain(tmp_path, plain_export({str(i): str(i) for i in range(3, 10)}),
                     {"prompt": "a red fox", "steps": 5}, sidecar='[params]\nprompt = "7.text"\n')


def test_a_template_with_jinja_gets_no_roles(tmp_path: Path) -> None:
    from hotfolder.templates import load

    workflow = plain_export({str(i): str(i) for i in range(3, 10)})
    workflow["6"]["inputs"]["text"] = "{{ subject }} in the snow"
    (tmp_path / "jinja.json").write_text(json.dumps(workflow))
    assert load.load_template(tmp_path, "jinja").roles == {}
