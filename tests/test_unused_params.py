"""Every scenario param lands somewhere: a param the template never uses, or a role the workflow has
twice, fails the job with an error naming the param and the candidates; a scenario opts out per key
with ``allow_unused:`` (a CSV with a ``#notes`` column)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hotfolder import daemon
from hotfolder.errors import ScenarioError, TemplateError
from hotfolder.spec import JobSpec
from hotfolder.stages import parse
from hotfolder.templates import load, render
from hotfolder.testing import ComfyTestServer
from tests.conftest import EXAMPLES, make_settings

# An SDXL base + refiner export: two samplers, so "prompt" and "seed" are each two nodes (ambiguous).
TWO_SAMPLERS: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]},
          "_meta": {"title": "Positive Base"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "10": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 7, "sampler_name": "euler",
           "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
           "negative": ["7", 0], "latent_image": ["5", 0]}},
    "15": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
    "16": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "11": {"class_type": "KSampler", "inputs": {"seed": 2, "steps": 20, "cfg": 7, "sampler_name": "euler",
           "scheduler": "normal", "denoise": 0.3, "model": ["4", 0], "positive": ["15", 0],
           "negative": ["16", 0], "latent_image": ["10", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdxl", "images": ["8", 0]}},
}


@pytest.fixture
def templates(project: Path) -> Path:
    """The project's templates (the shipped examples, tests/conftest.py) and a two-sampler workflow."""
    folder = project / "templates"
    (folder / "sdxl.json").write_text(json.dumps(TWO_SAMPLERS))
    return folder


def render_params(templates: Path, name: str, params: dict[str, Any], *, allow: list[str] | None = None,
                  source: str = "s.yaml") -> tuple[dict[str, Any], dict[str, Any]]:
    template = load.load_template(templates, name)
    spec = JobSpec(index=1, name="j", source=Path(source), template=name, params=params,
                   options={"allow_unused": allow} if allow is not None else {})
    return render.render_workflow(template, spec)


def test_a_typo_param_is_an_error_naming_it_the_file_the_template_and_the_close_matches(templates: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_params(templates, "txt2img", {"promt": "a fox", "steps": 4}, source="fox.yaml")
    err = info.value
    text = str(err)
    assert "'promt'" in text and "'fox.yaml'" in text and "'txt2img'" in text
    assert "'prompt'" in err.hint  # did you mean
    assert err.where["variable"] == "promt" and err.where["template"] == "txt2img"
    assert err.details["unused"]["promt"]["candidates"][0] == "prompt"


def test_an_ambiguous_role_is_an_error_naming_the_nodes_and_how_to_address_one(templates: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render_params(templates, "sdxl", {"prompt": "a cat"})
    err = info.value
    assert "'prompt'" in err.message and "ambiguous" in err.message
    assert "6.text" in err.message and "15.text" in err.message and "Positive Base" in err.message
    assert "set:" in err.hint and '"6.text"' in err.hint
    assert err.details["ambiguous"]["prompt"]["nodes"] == ["6.text", "15.text"]


def test_a_role_the_workflow_lacks_says_why(templates: Path) -> None:
    plain = {k: v for k, v in TWO_SAMPLERS.items() if k not in ("11", "15", "16")}
    (templates / "plain.json").write_text(json.dumps(plain))
    render_params(templates, "plain", {"prompt": "a cat", "seed": 3})  # unambiguous roles: fine
    with pytest.raises(TemplateError) as info:
        render_params(templates, "plain", {"image": "x.png"})
    assert "'image'" in info.value.message and "no LoadImage node" in info.value.message


def test_allow_unused_opts_out_per_key_only(templates: Path) -> None:
    workflow, params = render_params(templates, "txt2img", {"prompt": "p", "notes": "for the deck"}, allow=["notes"])
    assert params["notes"] == "for the deck"
    with pytest.raises(TemplateError) as info:
        render_params(templates, "txt2img", {"prompt": "p", "notes": "x", "comment": "y"}, allow=["notes"])
    assert "'comment'" in info.value.message and "'notes'" not in info.value.message
    assert "allow_unused" in info.value.hint


def test_allow_unused_in_every_format_and_a_hash_column_in_csv() -> None:
    yaml_specs = parse.parse_scenario(Path("a.yaml"), b"params: {prompt: p, notes: n}\nallow_unused: [notes]\n"
                                      b"jobs:\n  - params: {extra: 1}\n    allow_unused: [extra]\n")
    assert sorted(yaml_specs[0].options["allow_unused"]) == ["extra", "notes"]
    specs = parse.parse_scenario(Path("b.csv"), b"prompt,#notes,KSampler.cfg\na fox,first,7\na cat,,8\n")
    assert [s.params for s in specs] == [{"prompt": "a fox", "notes": "first"}, {"prompt": "a cat"}]
    assert all(s.options["allow_unused"] == ["notes"] for s in specs)
    with pytest.raises(ScenarioError, match="'notes'"):
        parse.parse_scenario(Path("c.csv"), b"notes,#notes\n1,2\n")
    with pytest.raises(ScenarioError, match="allow_unused"):
        parse.parse_scenario(Path("d.yaml"), b"allow_unused: [1]\n")


def test_the_daemon_fails_unused_and_ambiguous_params_and_runs_opted_out_ones(
        project: Path, comfy: ComfyTestServer) -> None:
    (project / "templates" / "sdxl.json").write_text(json.dumps(TWO_SAMPLERS))
    inbox = project / "inbox"
    (inbox / "typo.yaml").write_text("params: {widht: 8}\n")
    (inbox / "twice.yaml").write_text("template: sdxl\nparams: {prompt: a cat}\n")
    (inbox / "noted.yaml").write_text("params: {width: 8, notes: for the deck}\nallow_unused: [notes]\n")
    (inbox / "rows.csv").write_text("width,#notes\n8,first row\n9,\n")
    counts = daemon.run_daemon(make_settings(project, comfy.url), once=True)
    assert counts["files_failed"] == 2 and counts["files_done"] == 2, counts
    typo = json.loads((inbox / "failed" / "typo.yaml.error.json").read_text())
    text = json.dumps(typo)
    assert "'widht'" in text and "'width'" in text and "'invert'" in text and "typo.yaml" in text
    twice = json.dumps(json.loads((inbox / "failed" / "twice.yaml.error.json").read_text()))
    assert "ambiguous" in twice and "6.text" in twice and "15.text" in twice
    assert (inbox / "done" / "noted.yaml").exists() and (inbox / "done" / "rows.csv").exists()
    sidecar = json.loads((project / "outbox" / "rows-001" / "rows-001.json").read_text())
    assert sidecar["params"]["notes"] == "first row"
    assert not (project / "outbox" / "typo").exists()


# -- generated: random keys mixed with the template's real variables -----------------------------

PLAIN = {k: v for k, v in TWO_SAMPLERS.items() if k not in ("11", "15", "16")}  # one sampler: every role once
LOOSE = {  # Jinja only, no sidecar: the names the template reads are its params
    "1": {"class_type": "EmptyImage", "inputs": {"width": "{{ size | default(8) }}", "height": 8, "batch_size": 1,
          "color": "{{ colour if colour is defined else 0 }}"}},
    "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "{{ tag | default('x') }}", "images": ["1", 0]}},
}
#: template -> the names it takes (invert: its sidecar's params, all with defaults; plain: its roles)
KNOWN = {
    "invert": ("width", "height", "batch_size", "color", "prefix"),
    "plain": ("prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "denoise", "width", "height",
              "batch_size", "checkpoint", "prefix"),
    "loose": ("size", "colour", "tag"),
}


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("templates")
    for path in EXAMPLES.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "plain.json").write_text(json.dumps(PLAIN))
    (folder / "loose.json").write_text(json.dumps(LOOSE))
    return folder


@st.composite
def jobs(draw: st.DrawFn) -> tuple[str, dict[str, int], list[str]]:
    """A template, params mixing its own names with random keys, and some of the random keys opted out."""
    name = draw(st.sampled_from(sorted(KNOWN)))
    keys = st.one_of(st.sampled_from(KNOWN[name]), st.text(min_size=1, max_size=12).filter(str.strip))
    params = draw(st.dictionaries(keys, st.integers(min_value=1, max_value=64), max_size=8))
    unknown = [key for key in params if key not in KNOWN[name]]
    allowed = draw(st.lists(st.sampled_from(unknown), unique=True)) if unknown else []
    return name, params, allowed


@hsettings(max_examples=150)
@given(job=jobs())
@example(job=("invert", {"widht": 8}, []))
@example(job=("invert", {"notes": 1, "width": 8}, ["notes"]))
@example(job=("plain", {"promt": 1, "seed": 3}, []))
@example(job=("loose", {"range": 3, "size": 9}, []))  # a Jinja global the template does not read
def test_generated_params_fail_exactly_when_an_unknown_key_is_not_opted_out(
        generated_dir: Path, job: tuple[str, dict[str, int], list[str]]) -> None:
    name, params, allowed = job
    document = {"template": name, "params": params, **({"allow_unused": allowed} if allowed else {})}
    (spec,) = parse.parse_scenario(Path("gen.json"), json.dumps(document).encode())
    template = load.load_template(generated_dir, name)
    missing = [key for key in params if key not in KNOWN[name] and key not in allowed]
    if not missing:
        workflow, resolved = render.render_workflow(template, spec)
        assert set(params) <= set(resolved)  # opted-out params are still there (the sidecar records them)
        return
    with pytest.raises(TemplateError) as info:
        render.render_workflow(template, spec)
    assert info.value.where["file"] == "gen.json" and info.value.where["template"] == name
    for key in missing:
        assert repr(key) in info.value.message
        assert key in info.value.details["unused"]
    for key in allowed:
        assert key not in info.value.details["unused"]
