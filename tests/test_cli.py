"""The command line, run as a real process (`python -m hotfolder`)."""

from __future__ import annotations

import json
from pathlib import Path

from hotfolder.testing import ComfyTestServer
from tests.conftest import run_cli


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "process", "render", "check", "init"):
        assert command in result.stdout
    for command in ("run", "process", "render", "check", "init"):
        assert run_cli(command, "--help", cwd=tmp_path).returncode == 0


def test_init_creates_a_working_project_and_never_overwrites(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path / "p"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    p = tmp_path / "p"
    assert (p / "inbox").is_dir() and (p / "outbox").is_dir() and (p / "hotfolder.toml").is_file()
    assert (p / "templates" / "invert.json").is_file() and (p / "templates" / "txt2img.json").is_file()
    (p / "hotfolder.toml").write_text("# mine\n")
    again = run_cli("init", str(p), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (p / "hotfolder.toml").read_text() == "# mine\n"


def test_render_prints_the_workflow_with_native_types(project: Path) -> None:
    (project / "s.yaml").write_text('template: txt2img\nparams: {prompt: "a \\"fox\\"", seed: 42, steps: 9}\n')
    result = run_cli("render", "s.yaml", cwd=project)
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert workflow["3"]["inputs"]["seed"] == 42 and workflow["3"]["inputs"]["steps"] == 9
    assert workflow["6"]["inputs"]["text"] == 'a "fox"'


def test_render_of_a_batch_maps_job_names_to_workflows(project: Path) -> None:
    (project / "b.csv").write_text("prompt,seed\ncat,1\ndog,2\n")
    result = run_cli("--default-template", "txt2img", "render", "b.csv", cwd=project)
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert list(jobs) == ["b-001", "b-002"]
    assert jobs["b-002"]["6"]["inputs"]["text"] == "dog" and jobs["b-002"]["3"]["inputs"]["seed"] == 2
    one = json.loads(run_cli("--default-template", "txt2img", "render", "--job", "1", "b.csv", cwd=project).stdout)
    assert one == jobs["b-001"]


def test_render_errors_are_one_clear_message_not_a_traceback(project: Path) -> None:
    (project / "bad.yaml").write_text("template: nope\n")
    result = run_cli("render", "bad.yaml", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope" in result.stderr and "invert" in result.stderr


def test_check_reports_templates_and_server(project: Path, comfy: ComfyTestServer) -> None:
    result = run_cli("--server", comfy.url, "check", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   template invert" in result.stdout and f"ok   server {comfy.url}" in result.stdout
    (project / "templates" / "broken.json").write_text("{ not json")
    result = run_cli("--server", comfy.url, "check", cwd=project)
    assert result.returncode == 1 and "FAIL template broken" in result.stdout


def test_check_fails_when_the_server_is_unreachable(project: Path) -> None:
    result = run_cli("--server", "http://127.0.0.1:9", "check", cwd=project)
    assert result.returncode == 1 and "FAIL server http://127.0.0.1:9" in result.stdout


def test_process_runs_files_in_the_foreground_and_leaves_them(project: Path, comfy: ComfyTestServer) -> None:
    good = project / "good.yaml"
    good.write_text("params: {width: 8}\n")
    bad = project / "bad.yaml"
    bad.write_text("params: {width: 0}\n")
    result = run_cli("--server", comfy.url, "--default-template", "invert", "process", "good.yaml", "bad.yaml", cwd=project)
    assert result.returncode == 1
    assert "done good.yaml" in result.stdout
    assert "FAILED bad.yaml" in result.stderr and "width" in result.stderr
    assert good.exists() and bad.exists()
    assert (project / "outbox" / "good" / "good.json").is_file()


def test_bad_config_is_a_clear_error(project: Path) -> None:
    (project / "hotfolder.toml").write_text("colour = 1\n")
    result = run_cli("check", cwd=project)
    assert result.returncode == 1 and "'colour'" in result.stderr and "Traceback" not in result.stderr
