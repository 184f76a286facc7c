"""Tests for loading and rendering templates: hotfolder.templates.load, sidecar and render."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import pytest

from hotfolder.errors import AddressError, TemplateError
from hotfolder.spec import JobSpec
from hotfolder.templates import load, render
from hotfolder.templates.cache import compiler_for, make_environment
from hotfolder.templates.sidecar import MISSING, ParamSpec

TXT2IMG: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": "{{ seed }}",
            "steps": "{{ steps }}",
            "cfg": 8,
            "sampler_name": "euler",
            "model": ["4", 0],
            "positive": ["6", 0],
        },
        "_meta": {"title": "KSampler"},
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "{{ prompt }}", "clip": ["4", 1]},
        "_meta": {"title": "Positive"},
    },
    "7": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "blurry", "clip": ["4", 1]},
        "_meta": {"title": "Negative"},
    },
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "fox-{{ seed }}", "images": ["8", 0]}},
}

PLAIN: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 8.0}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}, "_meta": {"title": "Positive"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "y"}, "_meta": {"title": "Negative"}},
}

LOOP_J2 = """{
  "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": {{ checkpoint }}}},
  {% for lora in loras %}
  "{{ 10 + loop.index }}": {
    "class_type": "LoraLoader",
    "inputs": {"lora_name": {{ lora.name }}, "strength_model": {{ lora.strength }},
               "model": [{{ (loop.index0 + 10) | string if not loop.first else "1" }}, 0]}
  },
  {% endfor %}
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": {{ prompt }}, "seed_note": {{ seed }}}}
}
"""

NASTY = "a \"red\" fox\\n in C:\\path\\ with\nnewlines\ttabs, {braces}, 'quotes', </script> & emoji 🦊👨‍👩‍👧 and \u2028"


def write(folder: Path, name: str, content: str | bytes | dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, dict):
        content = json.dumps(content, indent=2)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def job(params: dict[str, Any] | None = None, **kwargs: Any) -> JobSpec:
    return JobSpec(
        index=1, name="fox-001", source=Path("/x/inbox/.hotfolder/j/fox.yaml"), params=params or {}, **kwargs
    )


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    write(folder, "txt2img.json", TXT2IMG)
    write(folder, "plain.json", PLAIN)
    write(folder, "loop.json.j2", LOOP_J2)
    return folder


def render_one(
    templates: Path, name: str, params: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    return render.render_workflow(load.load_template(templates, name), job(params, **kwargs))


# --------------------------------------------------------------------------------------------------
# load_template


@pytest.mark.parametrize("name", ["txt2img", "txt2img.json", " txt2img "])
def test_load_template_finds_json_by_name_with_or_without_extension(templates: Path, name: str) -> None:
    template = load.load_template(templates, name)
    assert (template.name, template.kind, template.path) == ("txt2img", "json", templates / "txt2img.json")
    assert template.sha256 == hashlib.sha256((templates / "txt2img.json").read_bytes()).hexdigest()
    assert template.text == (templates / "txt2img.json").read_text()
    assert template.sidecar is None


@pytest.mark.parametrize("name", ["loop", "loop.json.j2"])
def test_load_template_finds_whole_file_jinja(templates: Path, name: str) -> None:
    template = load.load_template(templates, name)
    assert (template.name, template.kind, template.path.name) == ("loop", "jinja", "loop.json.j2")


def test_load_template_prefers_json_over_json_j2(templates: Path) -> None:
    write(templates, "txt2img.json.j2", LOOP_J2)
    assert load.load_template(templates, "txt2img").kind == "json"
    assert load.load_template(templates, "txt2img.json.j2").kind == "jinja"


def test_load_template_with_explicit_extension_looks_only_for_that_file(templates: Path) -> None:
    with pytest.raises(TemplateError):
        load.load_template(templates, "loop.json")


@pytest.mark.parametrize(
    "name", ["../secret", "/etc/passwd", "sub/txt2img", "sub\\txt2img", "..", ".hidden", "a..b", "", "  ", "x\x00y"]
)
def test_load_template_refuses_names_that_could_leave_the_folder(templates: Path, name: str) -> None:
    write(templates.parent, "secret.json", PLAIN)
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, name)
    assert info.value.hint


def test_load_template_not_found_lists_the_available_templates(templates: Path) -> None:
    write(templates, "notes.txt", "not a template")
    write(templates, ".hidden.json", PLAIN)
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "txt2im")
    err = info.value
    assert "'txt2im'" in err.message and "not found" in err.message
    assert err.hint == "Available templates: 'loop', 'plain', 'txt2img'."
    assert err.where == {"template": "txt2im"}
    assert load.available_templates(templates) == ["loop", "plain", "txt2img"]


def test_load_template_in_an_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TemplateError) as info:
        load.load_template(tmp_path / "empty", "x")
    assert "no *.json" in (info.value.hint or "")
    with pytest.raises(TemplateError) as info:
        load.load_template(tmp_path / "missing", "x")
    assert "does not exist" in (info.value.hint or "")


def test_load_template_malformed_json_reports_line_and_column(templates: Path) -> None:
    write(templates, "bad.json", '{\n  "3": {"class_type": "KSampler", "inputs": {}},\n}\n')
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "bad")
    err = info.value
    assert (err.where["line"], err.where["column"]) == (3, 1)
    assert "'bad'" in err.message and "line 3, column 1" in err.message
    assert isinstance(err.__cause__, json.JSONDecodeError)


def test_load_template_refuses_a_ui_format_workflow_with_export_directions(templates: Path) -> None:
    ui = {
        "last_node_id": 9,
        "last_link_id": 9,
        "nodes": [{"id": 3, "type": "KSampler"}],
        "links": [[1, 4, 0, 3, 0, "MODEL"]],
        "version": 0.4,
    }
    write(templates, "ui.json", ui)
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "ui")
    err = info.value
    assert err.message == "Template 'ui' is a ComfyUI UI workflow, not API format"
    assert "Save (API Format)" in (err.hint or "") and "Export (API)" in (err.hint or "")
    assert "dev mode" in (err.hint or "").lower()


@pytest.mark.parametrize(
    ("content", "node", "problem"),
    [
        ({"3": {"class_type": "KSampler", "inputs": {}}, "4": {"inputs": {}}}, "4", "class_type"),
        ({"3": {"class_type": "KSampler"}}, "3", "inputs"),
        ({"3": {"class_type": 5, "inputs": {}}}, "3", "class_type"),
        ({"3": {"class_type": "KSampler", "inputs": {}}, "7": [1, 2]}, "7", "not a node object"),
        ({"prompt": {"3": {"class_type": "KSampler", "inputs": {}}}, "client_id": "x"}, "prompt", "class_type"),
    ],
)
def test_load_template_refuses_non_api_nodes_naming_the_first_bad_node(
    templates: Path, content: dict[str, Any], node: str, problem: str
) -> None:
    write(templates, "bad.json", content)
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "bad")
    assert info.value.where["node"] == node
    assert f"node {node!r}" in info.value.message and problem in info.value.message


@pytest.mark.parametrize("content", ["[1, 2]", "{}", '"x"'])
def test_load_template_refuses_a_top_level_that_is_not_a_workflow(templates: Path, content: str) -> None:
    write(templates, "bad.json", content)
    with pytest.raises(TemplateError):
        load.load_template(templates, "bad")


def test_load_template_reports_a_jinja_syntax_error_in_a_json_string(templates: Path) -> None:
    write(templates, "bad.json", {"3": {"class_type": "KSampler", "inputs": {"seed": "{{ seed + }}"}}})
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "bad")
    err = info.value
    assert (err.where["node"], err.where["input"], err.where["template"]) == ("3", "seed", "bad")
    assert "syntax error" in err.message


def test_load_template_reports_a_jinja_syntax_error_in_a_j2_file_with_its_line(templates: Path) -> None:
    write(templates, "bad.json.j2", '{\n  "1": {"class_type": "X", "inputs": {}},\n  {% for x in %}\n}\n')
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "bad")
    assert info.value.where["line"] == 3
    assert "'bad'" in info.value.message and "line 3" in info.value.message


def test_load_template_refuses_invalid_utf8(templates: Path) -> None:
    write(templates, "bad.json", b'{"3": {"class_type": "K\xff", "inputs": {}}}')
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "bad")
    assert "UTF-8" in info.value.message


# --------------------------------------------------------------------------------------------------
# .json templates ("leaf Jinja")


def test_render_workflow_single_expressions_keep_their_type(templates: Path) -> None:
    workflow, params = render_one(templates, "txt2img", {"seed": 42, "steps": 20, "prompt": "a fox"})
    assert workflow["3"]["inputs"]["seed"] == 42
    assert workflow["3"]["inputs"]["steps"] == 20
    assert workflow["6"]["inputs"]["text"] == "a fox"
    assert workflow["9"]["inputs"]["filename_prefix"] == "fox-42"
    assert workflow["3"]["inputs"]["model"] == ["4", 0]
    assert params == {"seed": 42, "steps": 20, "prompt": "a fox"}


@pytest.mark.parametrize(
    ("source", "params", "expected"),
    [
        ("{{ seed }}", {"seed": 7}, 7),
        ("  {{ seed }}\n", {"seed": 7}, 7),
        ("{{- seed -}}", {"seed": 7}, 7),
        ("{{seed}}", {"seed": 7}, 7),
        ("{{ seed + 1 }}", {"seed": 7}, 8),
        ("{{ cfg }}", {"cfg": 7.5}, 7.5),
        ("{{ flag }}", {"flag": False}, False),
        ("{{ nothing }}", {"nothing": None}, None),
        ("{{ loras }}", {"loras": [{"name": "a", "w": 1}]}, [{"name": "a", "w": 1}]),
        ("{{ opts }}", {"opts": {"a": [1, 2.5, None]}}, {"a": [1, 2.5, None]}),
        ("{{ true }}", {"true": "a param named true"}, True),  # Jinja's constant, not the variable
        ("{{ none }}", {"none": 3}, None),
        ("{{ (1, 2) }}", {}, [1, 2]),
        ("{{ steps | int }}", {"steps": "20"}, 20),
        ("{{ seed }}-{{ seed }}", {"seed": 7}, "7-7"),
        ("{{ a }} {{ b }}", {"a": 1, "b": 2}, "1 2"),
        ("seed={{ seed }}", {"seed": 7}, "seed=7"),
        ("{% if hires %}yes{% else %}no{% endif %}", {"hires": True}, "yes"),
        ("{{ prompt }}\n", {"prompt": "p"}, "p"),
        ("{{ prompt }} and more\n", {"prompt": "p"}, "p and more\n"),
    ],
)
def test_render_workflow_leaf_strings(templates: Path, source: str, params: dict[str, Any], expected: Any) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"v": source}}})
    # a param named true/none is unused (Jinja reads its constant): the scenario must say it knows
    workflow, _ = render_one(templates, "leaf", params, options={"allow_unused": ["true", "none"]})
    assert workflow["1"]["inputs"]["v"] == expected
    assert type(workflow["1"]["inputs"]["v"]) is type(expected)


def test_render_workflow_prompt_with_quotes_backslashes_newlines_and_emoji_arrives_intact(templates: Path) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"a": "{{ prompt }}", "b": "<{{ prompt }}>"}}})
    workflow, _ = render_one(templates, "leaf", {"prompt": NASTY})
    assert workflow["1"]["inputs"]["a"] == NASTY
    assert workflow["1"]["inputs"]["b"] == f"<{NASTY}>"
    assert json.loads(json.dumps(workflow)) == workflow


def test_render_workflow_does_not_evaluate_jinja_inside_parameter_values(templates: Path) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"a": "{{ prompt }}", "b": "say {{ prompt }}"}}})
    evil = "{{ 7*7 }} {% for x in range(3) %}{{ x }}{% endfor %} {{ ''.__class__ }}"
    workflow, _ = render_one(templates, "leaf", {"prompt": evil})
    assert workflow["1"]["inputs"]["a"] == evil
    assert workflow["1"]["inputs"]["b"] == f"say {evil}"


def test_render_workflow_does_not_render_keys_or_non_jinja_strings(templates: Path) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"{{ k }}": "{ not jinja }", "n": 1.5}}})
    workflow, _ = render_one(templates, "leaf")
    assert workflow["1"]["inputs"] == {"{{ k }}": "{ not jinja }", "n": 1.5}


def test_render_workflow_renders_strings_in_lists_and_meta(templates: Path) -> None:
    write(
        templates,
        "leaf.json",
        {"1": {"class_type": "X", "inputs": {"l": ["{{ a }}", ["x{{ a }}"]]}, "_meta": {"title": "T {{ a }}"}}},
    )
    workflow, _ = render_one(templates, "leaf", {"a": 3})
    assert workflow["1"]["inputs"]["l"] == [3, ["x3"]]
    assert workflow["1"]["_meta"]["title"] == "T 3"


def test_render_workflow_returns_a_new_dict_each_time(templates: Path) -> None:
    template = load.load_template(templates, "txt2img")
    first, _ = render.render_workflow(template, job({"seed": 1, "steps": 2, "prompt": "a"}))
    first["3"]["inputs"]["model"].append("mutated")
    first["4"]["inputs"]["ckpt_name"] = "mutated"
    second, _ = render.render_workflow(template, job({"seed": 1, "steps": 2, "prompt": "a"}))
    assert second["3"]["inputs"]["model"] == ["4", 0]
    assert second["4"]["inputs"]["ckpt_name"] == "v1-5.safetensors"
    assert json.loads(template.text) == TXT2IMG


def test_render_workflow_undefined_variable_names_variable_template_scenario_and_job(templates: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_one(templates, "txt2img", {"seed": 1, "prompt": "a"})
    err = info.value
    assert err.where == {
        "file": "fox.yaml",
        "job": "fox-001",
        "template": "txt2img",
        "variable": "steps",
        "node": "3",
        "input": "steps",
    }
    assert (
        "'steps'" in err.message
        and "'txt2img'" in err.message
        and "'fox.yaml'" in err.message
        and "'fox-001'" in err.message
    )
    assert "params" in (err.hint or "") and "txt2img.toml" in (err.hint or "")
    assert isinstance(err.__cause__, jinja2.UndefinedError)


def test_render_workflow_undefined_variable_inside_text(templates: Path) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"a": "a photo of {{ subject }}"}}})
    with pytest.raises(TemplateError) as info:
        render_one(templates, "leaf")
    assert info.value.where["variable"] == "subject"


def test_render_workflow_undefined_attribute_is_an_error(templates: Path) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"a": "{{ lora.name }}"}}})
    with pytest.raises(TemplateError) as info:
        render_one(templates, "leaf", {"lora": {"weight": 1}})
    assert "'name'" in info.value.message


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ loras.append(1) }}",
        "{{ opts.update({'a': 1}) }}",
        "x {{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{{ c }}{% endfor %}",
        "{{ self._TemplateReference__context }}",
    ],
)
def test_render_workflow_sandbox_blocks_escape_attempts(templates: Path, expression: str) -> None:
    write(templates, "evil.json", {"1": {"class_type": "X", "inputs": {"a": expression}}})
    extras = {"options": {"allow_unused": ["loras", "opts"]}}  # each expression reads one of them at most
    with pytest.raises(TemplateError) as info:
        render_one(templates, "evil", {"loras": ["a"], "opts": {}}, **extras)
    assert info.value.where["template"] == "evil"
    assert isinstance(info.value.__cause__, jinja2.sandbox.SecurityError)
    write(templates, "evil2.json.j2", '{"1": {"class_type": "X", "inputs": {"a": ' + expression + "}}}")
    with pytest.raises(TemplateError) as info:
        render_one(templates, "evil2", {"loras": ["a"], "opts": {}}, **extras)
    assert isinstance(info.value.__cause__, jinja2.sandbox.SecurityError)
    assert info.value.where["line"] == 1


def test_render_workflow_security_error_says_sandboxed(templates: Path) -> None:
    write(templates, "evil.json", {"1": {"class_type": "X", "inputs": {"a": "{{ cycler.__init__.__globals__ }}"}}})
    with pytest.raises(TemplateError) as info:
        render_one(templates, "evil")
    assert "unsafe" in info.value.message
    assert "sandboxed" in (info.value.hint or "")
    assert isinstance(info.value.__cause__, jinja2.sandbox.SecurityError)


@pytest.mark.parametrize("expression", ["{{ range(3) }}", "{{ cycler }}", "{{ x / 0 }}", "{{ 'a' + 1 }}", "{{ nan }}"])
def test_render_workflow_bad_values_and_runtime_errors_are_template_errors(templates: Path, expression: str) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "X", "inputs": {"a": expression}}})
    with pytest.raises(TemplateError) as info:
        render_one(templates, "leaf", {"x": 1, "nan": float("nan")}, options={"allow_unused": ["x", "nan"]})
    assert (info.value.where["node"], info.value.where["input"]) == ("1", "a")


def test_render_workflow_rendering_class_type_away_is_refused(templates: Path) -> None:
    write(templates, "leaf.json", {"1": {"class_type": "{{ cls }}", "inputs": {}}})
    assert render_one(templates, "leaf", {"cls": "KSampler"})[0]["1"]["class_type"] == "KSampler"
    with pytest.raises(TemplateError) as info:
        render_one(templates, "leaf", {"cls": 5})
    assert info.value.where["node"] == "1"


# --------------------------------------------------------------------------------------------------
# .json.j2 templates (whole-file Jinja)


def test_render_workflow_j2_loop_adds_nodes(templates: Path) -> None:
    params = {
        "checkpoint": "sd.safetensors",
        "prompt": "a fox",
        "seed": 5,
        "loras": [{"name": "a.safetensors", "strength": 0.5}, {"name": "b.safetensors", "strength": 1}],
    }
    workflow, resolved = render_one(templates, "loop", params)
    assert sorted(workflow) == ["1", "11", "12", "6"]
    assert workflow["11"]["inputs"] == {"lora_name": "a.safetensors", "strength_model": 0.5, "model": ["1", 0]}
    assert workflow["12"]["inputs"] == {"lora_name": "b.safetensors", "strength_model": 1, "model": ["11", 0]}
    assert workflow["6"]["inputs"] == {"text": "a fox", "seed_note": 5}
    assert resolved == params
    workflow, _ = render_one(templates, "loop", {**params, "loras": []})
    assert sorted(workflow) == ["1", "6"]


def test_render_workflow_j2_emits_every_value_as_json(templates: Path) -> None:
    params = {"checkpoint": "c", "prompt": NASTY, "seed": 2**40, "loras": []}
    workflow, _ = render_one(templates, "loop", params)
    assert workflow["6"]["inputs"]["text"] == NASTY
    assert workflow["6"]["inputs"]["seed_note"] == 2**40


def test_render_workflow_j2_does_not_evaluate_jinja_in_values(templates: Path) -> None:
    params = {"checkpoint": "c", "prompt": '{{ 7*7 }}", "x": {% raw %}', "seed": 1, "loras": []}
    workflow, _ = render_one(templates, "loop", params)
    assert workflow["6"]["inputs"]["text"] == params["prompt"]


def test_render_workflow_j2_tojson_is_not_encoded_twice(templates: Path) -> None:
    write(
        templates, "t.json.j2", '{"1": {"class_type": "X", "inputs": {"a": {{ prompt | tojson }}, "b": {{ "x" ~ n }}}}}'
    )
    workflow, _ = render_one(templates, "t", {"prompt": "a <b> & 'c'", "n": 3})
    assert workflow["1"]["inputs"] == {"a": "a <b> & 'c'", "b": "x3"}


def test_render_workflow_j2_quoted_expression_gives_a_json_error_with_the_line_and_a_hint(templates: Path) -> None:
    write(templates, "q.json.j2", '{\n  "1": {"class_type": "X",\n    "inputs": {"text": "{{ prompt }}"}}\n}\n')
    with pytest.raises(TemplateError) as info:
        render_one(templates, "q", {"prompt": "a fox"})
    err = info.value
    assert err.where["line"] == 3
    assert '"text": ""a fox""' in err.message
    assert '"text": {{ prompt }}' in (err.hint or "")
    assert err.where["file"] == "fox.yaml" and err.where["job"] == "fox-001"


def test_render_workflow_j2_undefined_variable_names_the_line(templates: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_one(templates, "loop", {"checkpoint": "c", "prompt": "p", "loras": []})
    err = info.value
    assert (err.where["variable"], err.where["line"], err.where["template"]) == ("seed", 10, "loop")
    assert "'seed'" in err.message and "'loop'" in err.message and "line 10" in err.message


def test_render_workflow_j2_value_json_cannot_hold(templates: Path) -> None:
    write(templates, "t.json.j2", '{"1": {"class_type": "X",\n "inputs": {"a": {{ range(2) }}}}}')
    with pytest.raises(TemplateError) as info:
        render_one(templates, "t")
    assert info.value.where["line"] == 2


def test_render_workflow_j2_that_renders_a_ui_workflow_is_refused(templates: Path) -> None:
    write(templates, "ui.json.j2", '{"nodes": [], "links": {{ links }}}')
    with pytest.raises(TemplateError) as info:
        render_one(templates, "ui", {"links": []})
    assert "UI workflow" in info.value.message


# --------------------------------------------------------------------------------------------------
# sidecars


SIDECAR = """
description = "Classic SD1.5 text to image"

[params.prompt]
default = "a red fox"
type = "string"
input = "Positive.text"
description = "positive prompt"

[params.seed]
default = "random"
type = "int"
input = "3.seed"

[params.steps]
default = 20
type = "int"
input = "KSampler.steps"

[params.cfg]
type = "float"
input = ["3.cfg"]

[params.size]
type = "int"
input = ["5.width", "EmptyLatentImage.height"]

[params.hires]
type = "bool"
default = false

[params]
negative = "Negative.text"
"""


@pytest.fixture
def sidecar(templates: Path) -> Path:
    return write(templates, "plain.toml", SIDECAR)


def test_load_template_reads_the_sidecar(templates: Path, sidecar: Path) -> None:
    template = load.load_template(templates, "plain")
    side = template.sidecar
    assert side is not None
    assert side.path == sidecar
    assert side.sha256 == hashlib.sha256(sidecar.read_bytes()).hexdigest()
    assert template.sha256 == hashlib.sha256((templates / "plain.json").read_bytes()).hexdigest()
    assert side.description == "Classic SD1.5 text to image"
    assert side.params["prompt"] == ParamSpec(
        "prompt", "a red fox", "string", ["Positive.text"], "positive prompt"
    )
    assert side.params["seed"].default == "random"
    assert side.params["cfg"].default is MISSING
    assert side.params["size"].inputs == ["5.width", "EmptyLatentImage.height"]
    assert side.params["negative"] == ParamSpec("negative", MISSING, "any", ["Negative.text"], "")
    assert repr(MISSING) == "MISSING"


def test_render_workflow_fills_a_plain_workflow_through_the_sidecar(templates: Path, sidecar: Path) -> None:
    workflow, params = render_one(templates, "plain", {"cfg": "6.5", "size": "768", "negative": "ugly", "steps": 30})
    assert workflow["6"]["inputs"]["text"] == "a red fox"
    assert workflow["7"]["inputs"]["text"] == "ugly"
    assert workflow["3"]["inputs"]["steps"] == 30
    assert workflow["3"]["inputs"]["cfg"] == 6.5
    assert workflow["5"]["inputs"] == {"width": 768, "height": 768}
    seed = workflow["3"]["inputs"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert params == {
        "prompt": "a red fox",
        "seed": seed,
        "steps": 30,
        "hires": False,
        "cfg": 6.5,
        "size": 768,
        "negative": "ugly",
    }


def test_render_workflow_draws_a_new_seed_per_job_for_a_random_default(templates: Path, sidecar: Path) -> None:
    template = load.load_template(templates, "plain")
    seeds = {render.render_workflow(template, job())[1]["seed"] for _ in range(5)}
    assert len(seeds) == 5


def test_render_workflow_draws_a_seed_for_a_random_param_value(templates: Path) -> None:
    workflow, params = render_one(templates, "txt2img", {"seed": "Random", "steps": 1, "prompt": "p"})
    assert isinstance(params["seed"], int)
    assert workflow["3"]["inputs"]["seed"] == params["seed"]


def test_render_workflow_params_without_value_leave_the_node_alone(templates: Path, sidecar: Path) -> None:
    workflow, params = render_one(templates, "plain")
    assert workflow["3"]["inputs"]["cfg"] == 8.0
    assert workflow["7"]["inputs"]["text"] == "y"
    assert "cfg" not in params


def test_render_workflow_set_overrides_win_over_the_sidecar(templates: Path, sidecar: Path) -> None:
    workflow, _ = render_one(templates, "plain", {"steps": 30}, set={"KSampler.steps": 4, "Positive.text": "from set"})
    assert workflow["3"]["inputs"]["steps"] == 4
    assert workflow["6"]["inputs"]["text"] == "from set"


def test_render_workflow_values_set_through_the_sidecar_are_not_rendered(templates: Path, sidecar: Path) -> None:
    workflow, _ = render_one(templates, "plain", {"prompt": "{{ 7*7 }}"}, set={"Negative.text": "{{ 6*6 }}"})
    assert workflow["6"]["inputs"]["text"] == "{{ 7*7 }}"
    assert workflow["7"]["inputs"]["text"] == "{{ 6*6 }}"


def test_render_workflow_leaves_spec_inputs_for_a_later_stage(templates: Path) -> None:
    workflow, _ = render_one(templates, "plain", inputs={"Missing.image": "a.png"})
    assert workflow == PLAIN


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"steps": "twenty"}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"cfg": "high"}, "cfg"),
        ({"cfg": [1]}, "cfg"),
        ({"hires": "maybe"}, "hires"),
        ({"hires": 2}, "hires"),
        ({"prompt": None}, "prompt"),
        ({"prompt": {"a": 1}}, "prompt"),
    ],
)
def test_render_workflow_type_mismatch_names_param_template_and_scenario(
    templates: Path, sidecar: Path, params: dict[str, Any], name: str
) -> None:
    with pytest.raises(TemplateError) as info:
        render_one(templates, "plain", params)
    err = info.value
    assert err.where["variable"] == name and err.where["template"] == "plain" and err.where["file"] == "fox.yaml"
    assert repr(name) in err.message and "'plain'" in err.message and "'fox.yaml'" in err.message


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"steps": "20"}, {"steps": 20}),
        ({"steps": 20.0}, {"steps": 20}),
        ({"cfg": 7}, {"cfg": 7.0}),
        ({"hires": "TRUE"}, {"hires": True}),
        ({"hires": 0}, {"hires": False}),
        ({"hires": "1"}, {"hires": True}),
        ({"prompt": 42}, {"prompt": "42"}),
    ],
)
def test_render_workflow_coerces_declared_types(
    templates: Path, sidecar: Path, params: dict[str, Any], expected: dict[str, Any]
) -> None:
    _, resolved = render_one(templates, "plain", params)
    for key, value in expected.items():
        assert resolved[key] == value and type(resolved[key]) is type(value)


def test_render_workflow_sidecar_defaults_feed_jinja_templates(templates: Path) -> None:
    write(
        templates,
        "loop.toml",
        '[params.checkpoint]\ndefault = "sd15.safetensors"\n'
        '[params.loras]\ndefault = []\n[params.seed]\ndefault = "random"\n',
    )
    workflow, params = render_one(templates, "loop", {"prompt": "p"})
    assert workflow["1"]["inputs"]["ckpt_name"] == "sd15.safetensors"
    assert isinstance(workflow["6"]["inputs"]["seed_note"], int)
    assert params["seed"] == workflow["6"]["inputs"]["seed_note"]


def test_render_workflow_bad_sidecar_address_is_an_address_error(templates: Path) -> None:
    write(templates, "plain.toml", '[params]\nprompt = "CLIPTextEncode.text"\n')
    with pytest.raises(AddressError) as info:
        render_one(templates, "plain", {"prompt": "x"})
    err = info.value
    assert "ambiguous" in err.message
    assert (err.where["variable"], err.where["file"], err.where["job"]) == ("prompt", "fox.yaml", "fox-001")


def test_render_workflow_bad_set_address_lists_candidates(templates: Path) -> None:
    with pytest.raises(AddressError) as info:
        render_one(templates, "plain", set={"Sampler.cfg": 1})
    assert '6 (CLIPTextEncode, "Positive")' in info.value.message
    assert info.value.where["file"] == "fox.yaml"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('descripton = "x"\n', "'descripton'"),
        ("[params.seed]\ndefault = 1\ninputs = '3.seed'\n", "'inputs'"),
        ("[params.seed]\ntype = 'integer'\n", "'integer'"),
        ("[params.seed]\ntype = 'int'\ndefault = 'abc'\n", "not an integer"),
        ("[params]\nprompt = 'a red fox'\n", "no '.'"),
        ("[params]\nprompt = 5\n", "table or a node address"),
        ("[params.prompt]\ninput = 5\n", "not an address"),
        ("[params.prompt]\ninput = ['6.text', '']\n", "no '.'"),
        ("params = 5\n", "'params' must be a table"),
        ("description = 5\n", "'description' must be a string"),
    ],
)
def test_load_template_refuses_a_bad_sidecar(templates: Path, text: str, needle: str) -> None:
    write(templates, "plain.toml", text)
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "plain")
    assert needle in info.value.message
    assert "'plain.toml'" in info.value.message
    assert info.value.where["template"] == "plain"


def test_load_template_short_form_without_a_dot_hints_at_defaults(templates: Path) -> None:
    write(templates, "plain.toml", "[params]\nprompt = 'a red fox'\n")
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "plain")
    assert "[params.prompt]" in (info.value.hint or "")


def test_load_template_invalid_sidecar_toml_reports_the_line(templates: Path) -> None:
    write(templates, "plain.toml", 'description = "x"\n[params.seed]\ndefault = \n')
    with pytest.raises(TemplateError) as info:
        load.load_template(templates, "plain")
    assert info.value.where["line"] == 3
    assert "line 3" in info.value.message


# --------------------------------------------------------------------------------------------------
# environment and diagnostics


def test_make_environment_is_sandboxed_and_strict() -> None:
    env = make_environment()
    assert isinstance(env, jinja2.sandbox.SandboxedEnvironment)
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ x }}").render()
    assert make_environment(json_output=True).from_string("{{ x }}").render(x='a"b') == '"a\\"b"'


def test_render_workflow_refuses_params_the_template_never_uses(templates: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_one(templates, "txt2img", {"seed": 1, "steps": 2, "prompt": "p", "stpes": 3})
    assert "'stpes'" in info.value.message and "'steps'" in (info.value.hint or "")
    assert "'prompt'" not in info.value.message


def test_render_workflow_error_to_dict_has_the_render_stage(templates: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_one(templates, "txt2img", {})
    out = info.value.to_dict()
    assert out["stage"] == "render"
    assert out["where"]["template"] == "txt2img"


def test_template_cache_reuses_an_unchanged_template_and_reloads_every_kind_of_edit(tmp_path: Path) -> None:
    import os
    cache = load.TemplateCache()
    wf = tmp_path / "t.json"
    wf.write_text(json.dumps(TXT2IMG))
    first = cache.get(tmp_path, "t")
    assert cache.get(tmp_path, "t") is first  # nothing changed: not read again

    edited = json.loads(json.dumps(TXT2IMG))
    edited["3"]["inputs"]["cfg"] = 7  # same size as before: only the mtime tells
    wf.write_text(json.dumps(edited))
    st = wf.stat()
    os.utime(wf, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = cache.get(tmp_path, "t")
    assert second is not first and second.sha256 != first.sha256

    (tmp_path / "t.toml").write_text('description = "now with a sidecar"\n')
    third = cache.get(tmp_path, "t")
    assert third is not second and third.sidecar is not None

    (tmp_path / "t.json.j2").write_text(json.dumps(TXT2IMG))
    wf.unlink()  # the .json.j2 twin is the template now
    assert cache.get(tmp_path, "t").kind == "jinja"

    (tmp_path / "t.json.j2").unlink()
    with pytest.raises(TemplateError, match="not found"):
        cache.get(tmp_path, "t")  # a deleted template is not served from memory
    with pytest.raises(TemplateError, match="plain file name"):
        cache.get(tmp_path, "../t")


def test_loading_and_rendering_share_one_compile_cache(templates: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = compiler_for(None).env(json_output=False)
    compiled: list[str] = []
    real = env.compile_expression
    monkeypatch.setattr(env, "compile_expression", lambda source, **kw: compiled.append(source) or real(source, **kw))
    write(templates, "once.json", json.dumps({"1": {"class_type": "X", "inputs": {"n": "{{ n * 7919 }}"}}}))
    template = load.load_template(templates, "once")
    for n in range(3):
        assert render.render_workflow(template, job({"n": n}))[0]["1"]["inputs"]["n"] == n * 7919
    assert compiled == ["n * 7919"]  # compiled when the template was loaded, never again
