"""The command line, run in-process with click's CliRunner (tests/conftest.py invoke_cli); the daemon's own process is tested in test_daemon.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotfolder.testing import ComfyTestServer
from tests.conftest import invoke_cli


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = invoke_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "process", "render", "check", "init"):
        assert command in result.stdout
    for command in ("run", "process", "render", "check", "init"):
        assert invoke_cli(command, "--help", cwd=tmp_path).returncode == 0


def test_init_creates_a_working_project_and_never_overwrites(tmp_path: Path) -> None:
    result = invoke_cli("init", str(tmp_path / "p"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    p = tmp_path / "p"
    assert (p / "inbox").is_dir() and (p / "outbox").is_dir() and (p / "hotfolder.toml").is_file()
    assert (p / "templates" / "invert.json").is_file() and (p / "templates" / "txt2img.json").is_file()
    (p / "hotfolder.toml").write_text("# mine\n")
    again = invoke_cli("init", str(p), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (p / "hotfolder.toml").read_text() == "# mine\n"


def test_render_prints_the_workflow_with_native_types(project: Path) -> None:
    (project / "s.yaml").write_text('template: txt2img\nparams: {prompt: "a \\"fox\\"", seed: 42, steps: 9}\n')
    result = invoke_cli("render", "s.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert workflow["3"]["inputs"]["seed"] == 42 and workflow["3"]["inputs"]["steps"] == 9
    assert workflow["6"]["inputs"]["text"] == 'a "fox"'


def test_render_of_a_batch_maps_job_names_to_workflows(project: Path) -> None:
    (project / "b.csv").write_text("prompt,seed\ncat,1\ndog,2\n")
    result = invoke_cli("--default-template", "txt2img", "render", "b.csv", cwd=project)
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert list(jobs) == ["b-001", "b-002"]
    assert jobs["b-002"]["6"]["inputs"]["text"] == "dog" and jobs["b-002"]["3"]["inputs"]["seed"] == 2
    one = json.loads(invoke_cli("--default-template", "txt2img", "render", "--job", "1", "b.csv", cwd=project).stdout)
    assert one == jobs["b-001"]


def test_render_errors_are_one_clear_message_not_a_traceback(project: Path) -> None:
    (project / "bad.yaml").write_text("template: nope\n")
    result = invoke_cli("render", "bad.yaml", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope" in result.stderr and "invert" in result.stderr


@pytest.mark.both_profiles
def test_check_reports_templates_and_server(project: Path, comfy: ComfyTestServer) -> None:
    comfy.set_models("checkpoints", ["v1-5-pruned-emaonly.safetensors"])  # txt2img's default checkpoint
    result = invoke_cli("--server", comfy.url, "check", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   template invert: valid, 3 nodes, accepted by" in result.stdout
    assert f"ok   server {comfy.url}" in result.stdout
    assert "ok   template txt2img" in result.stdout and "needs 'prompt' from each scenario" in result.stdout
    (project / "templates" / "broken.json").write_text("{ not json")
    result = invoke_cli("--server", comfy.url, "check", cwd=project)
    assert result.returncode == 1 and "FAIL template broken" in result.stdout


def test_check_fails_when_the_server_is_unreachable(project: Path) -> None:
    result = invoke_cli("--server", "http://127.0.0.1:9", "check", cwd=project)
    assert result.returncode == 1 and "FAIL server http://127.0.0.1:9" in result.stdout


@pytest.mark.both_profiles
def test_process_runs_files_in_the_foreground_and_leaves_them(project: Path, comfy: ComfyTestServer) -> None:
    good = project / "good.yaml"
    good.write_text("params: {width: 8}\n")
    bad = project / "bad.yaml"
    bad.write_text("params: {width: 0}\n")
    result = invoke_cli("--server", comfy.url, "--default-template", "invert", "process", "good.yaml", "bad.yaml", cwd=project)
    assert result.returncode == 1
    assert "done good.yaml" in result.stdout
    assert "FAILED bad.yaml" in result.stderr and "width" in result.stderr
    assert good.exists() and bad.exists()
    assert (project / "outbox" / "good" / "good.json").is_file()


def test_bad_config_is_a_clear_error(project: Path) -> None:
    (project / "hotfolder.toml").write_text("colour = 1\n")
    result = invoke_cli("check", cwd=project)
    assert result.returncode == 1 and "'colour'" in result.stderr and "Traceback" not in result.stderr


def test_check_validates_every_template_against_the_server_and_reports_every_invalid_one(
        project: Path, comfy: ComfyTestServer) -> None:
    comfy.set_models("checkpoints", ["tiny_sd15_random.safetensors"])  # a server without txt2img's default model
    invert = json.loads((project / "templates" / "invert.json").read_text())
    sampler = json.loads((project / "templates" / "txt2img.json").read_text())
    wrong_class = dict(invert, **{"2": {"class_type": "ImageInvertt", "inputs": {"image": ["1", 0]}}})
    (project / "templates" / "wrong_class.json").write_text(json.dumps(wrong_class))
    (project / "templates" / "wrong_sampler.json").write_text(json.dumps(sampler))
    (project / "templates" / "wrong_sampler.toml").write_text(
        (project / "templates" / "txt2img.toml").read_text().replace('default = "euler"', 'default = "eulr"'))
    result = invoke_cli("--server", comfy.url, "check", cwd=project)
    assert result.returncode == 1
    out = result.stdout
    assert "ok   template invert" in out
    # the three invalid templates, each with what is wrong, where, and the closest valid choices
    assert "FAIL template wrong_class: Template 'wrong_class' with its defaults would be refused" in out
    assert "'ImageInvertt' is not a node type this server has; did you mean 'ImageInvert'" in out
    assert "FAIL template wrong_sampler" in out and "[set by params.sampler]" in out and "'eulr'" in out
    assert "did you mean 'euler'" in out
    assert "FAIL template txt2img" in out and "'v1-5-pruned-emaonly.safetensors'" in out
    assert "'tiny_sd15_random.safetensors'" in out


def test_check_converts_ui_templates_and_skips_placeholder_inputs(project: Path, comfy: ComfyTestServer) -> None:
    from tests.test_ui_templates import UI_INVERT

    (project / "templates" / "txt2img.json").unlink()
    (project / "templates" / "ui_invert.json").write_text(json.dumps(UI_INVERT))
    template = json.loads((project / "templates" / "invert.json").read_text())
    (project / "templates" / "sized.json").write_text(json.dumps(template))  # no sidecar: width etc. undefined
    result = invoke_cli("--server", comfy.url, "check", cwd=project)
    assert result.returncode == 0, result.stdout
    assert "ok   template ui_invert: valid, 3 nodes" in result.stdout and "UI workflow, converted" in result.stdout
    assert "parameters found by role: prefix=12.filename_prefix" in result.stdout
    assert "ok   template sized" in result.stdout and "needs 'batch_size', 'color', 'height', 'prefix', 'width'" in result.stdout
    offline = invoke_cli("--server", "http://127.0.0.1:9", "check", cwd=project)
    assert offline.returncode == 1 and "FAIL server http://127.0.0.1:9" in offline.stdout
    assert "ok   template ui_invert: a ComfyUI UI workflow" in offline.stdout
    assert "ok   template invert: valid, 3 nodes (not validated: no server reachable)" in offline.stdout


def test_render_check_validates_without_submitting(project: Path, comfy: ComfyTestServer) -> None:
    (project / "good.yaml").write_text("template: invert\nparams: {width: 8}\n")
    good = invoke_cli("--server", comfy.url, "render", "--check", "good.yaml", cwd=project)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["1"]["inputs"]["width"] == 8  # stdout stays the workflow
    assert f"ok   Job 'good' (template 'invert'): ComfyUI at {comfy.url} would accept it" in good.stderr
    (project / "bad.csv").write_text("width\n8\n0\n")
    bad = invoke_cli("--server", comfy.url, "--default-template", "invert", "render", "--check", "bad.csv", cwd=project)
    assert bad.returncode == 1
    assert set(json.loads(bad.stdout)) == {"bad-001", "bad-002"}
    assert "ok   Job 'bad-001'" in bad.stderr
    assert "FAIL Job 'bad-002' (template 'invert') would be refused" in bad.stderr
    assert "[set by params.width]" in bad.stderr and "below the minimum 1" in bad.stderr
    offline = invoke_cli("--server", "http://127.0.0.1:9", "render", "--check", "good.yaml", cwd=project)
    assert offline.returncode == 2 and json.loads(offline.stdout)["1"]["inputs"]["width"] == 8
    assert "not checked: no server answered" in offline.stderr
    assert not [r for r in comfy.requests if r["method"] == "POST"]
