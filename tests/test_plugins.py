"""The plugin system: loading (built-ins, entry points, plugins/ files), switches, errors, and each hook.

Hook-level behaviour is driven through the stage functions the pipeline calls (parse, render,
run_postprocessors, Hooks.track_event), with the real plugin files in tests/plugins/.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder import plugins
from hotfolder.config import Settings
from hotfolder.errors import PluginError, ScenarioError, TemplateError
from hotfolder.events import Archived, Claimed, Failed, Progress, Published, Submitted
from hotfolder.spec import JobSpec
from hotfolder.stages import parse
from hotfolder.templates import load, render
from tests.conftest import EXAMPLES

TESTS = Path(__file__).resolve().parent
TEST_PLUGINS = TESTS / "plugins"
ALL_HOOKS = "plugins/all_hooks.py"


# --------------------------------------------------------------------------------------------------
# helpers


def with_plugin_settings(settings: Settings, **extra: Any) -> Settings:
    """``settings`` plus fields such as ``plugin_config``/``postprocess`` (real fields once config.py
    has them; until then a frozen subclass with the same fields)."""
    names = {f.name for f in dataclasses.fields(settings)}
    if set(extra) <= names:
        return dataclasses.replace(settings, **extra)
    cls = dataclasses.make_dataclass(
        "PluginSettings",
        [(key, Any, dataclasses.field(default=None)) for key in extra if key not in names],
        bases=(type(settings),),
        frozen=True,
    )
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return cls(**values, **extra)  # type: ignore[no-any-return]


def minimal_settings(tmp_path: Path, **extra: Any) -> Settings:
    base = Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", templates=tmp_path / "templates",
                    plugins=tmp_path / "plugins", servers=())
    return with_plugin_settings(base, **extra) if extra else base


def write_plugin(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def calls(pm: plugins.PluginManager, hook: str) -> list[Any]:
    module = pm.get_plugin(ALL_HOOKS)
    return [detail for name, detail in module.CALLS if name == hook]


@pytest.fixture
def pm() -> plugins.PluginManager:
    return plugins.get_plugin_manager(plugins_dir=TEST_PLUGINS)


@pytest.fixture
def hooks(pm: plugins.PluginManager) -> plugins.Hooks:
    return plugins.Hooks(pm)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    for path in EXAMPLES.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def spec(name: str = "job", **fields: Any) -> JobSpec:
    return JobSpec(index=1, name=name, source=Path("s.yaml"), **fields)


# --------------------------------------------------------------------------------------------------
# loading


def test_manager_loads_builtins_then_local_files_and_lists_them(pm: plugins.PluginManager) -> None:
    names = [name for name, _ in pm.list_name_plugin()]
    assert names[: len(plugins.DEFAULT_PLUGINS)] == list(plugins.DEFAULT_PLUGINS)
    assert ALL_HOOKS in names
    listed = plugins.list_plugins(pm)
    assert [entry["name"] for entry in listed] == [ALL_HOOKS]
    (entry,) = listed
    assert entry["path"] == str(TEST_PLUGINS / "all_hooks.py")
    assert entry["hooks"] == sorted(plugins.hook_names(pm))
    everything = plugins.list_plugins(pm, all=True)
    assert {e["name"] for e in everything} == {ALL_HOOKS, *plugins.DEFAULT_PLUGINS}
    builtin = next(e for e in everything if e["name"] == "hotfolder.default_plugins.scenario_formats")
    assert builtin["hooks"] == ["parse_scenario_file"]
    converter = next(e for e in everything if e["name"] == "hotfolder.default_plugins.ui_workflows")
    assert converter["hooks"] == ["parse_workflow"]
    assert json.loads(json.dumps(everything)) == everything


def test_list_plugins_filters_by_hook_and_refuses_an_unknown_hook(pm: plugins.PluginManager) -> None:
    assert [e["name"] for e in plugins.list_plugins(pm, all=True, hook="parse_scenario_file")] == [
        "hotfolder.default_plugins.scenario_formats", ALL_HOOKS,
    ]
    assert plugins.list_plugins(pm, hook="parse_scenario_file") == plugins.list_plugins(pm)
    with pytest.raises(PluginError, match="no hook named 'prepare_workfow'") as info:
        plugins.list_plugins(pm, hook="prepare_workfow")
    assert "prepare_workflow" in (info.value.hint or "")


def test_each_manager_imports_fresh_local_plugin_modules(tmp_path: Path) -> None:
    write_plugin(tmp_path, "counter.py", """
        from hotfolder import hookimpl
        VERSION = 1
        @hookimpl
        def track_event(event):
            pass
    """)
    first = plugins.get_plugin_manager(plugins_dir=tmp_path).get_plugin("plugins/counter.py")
    write_plugin(tmp_path, "counter.py", "from hotfolder import hookimpl\nVERSION = 2\n")
    second = plugins.get_plugin_manager(plugins_dir=tmp_path).get_plugin("plugins/counter.py")
    assert (first.VERSION, second.VERSION) == (1, 2)
    assert second.__name__ == "hotfolder._local_plugins.counter"


def test_files_starting_with_underscore_are_not_plugins(tmp_path: Path) -> None:
    write_plugin(tmp_path, "_helper.py", "raise RuntimeError('never imported')\n")
    pm = plugins.get_plugin_manager(plugins_dir=tmp_path)
    assert plugins.list_plugins(pm) == []


def test_a_plugin_file_with_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "broken.py", "from hotfolder import hookimpl\n\ndef oops(:\n    pass\n")
    with pytest.raises(PluginError) as info:
        plugins.get_plugin_manager(plugins_dir=tmp_path)
    message = str(info.value)
    assert str(path) in message and "syntax error at line 3" in message
    assert info.value.where == {"file": str(path), "line": 3}


def test_a_plugin_file_that_fails_to_import_names_the_file_and_the_error(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "needs.py", "import hotfolder_no_such_module\n")
    with pytest.raises(PluginError) as info:
        plugins.get_plugin_manager(plugins_dir=tmp_path)
    assert str(path) in str(info.value) and "ModuleNotFoundError" in str(info.value)
    assert "hotfolder._local_plugins.needs" not in sys.modules


def test_a_misspelt_hook_name_is_a_startup_error_naming_file_hook_and_suggestion(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "typo.py", """
        from hotfolder import hookimpl

        @hookimpl
        def prepare_workfow(workflow):
            pass
    """)
    with pytest.raises(PluginError) as info:
        plugins.get_plugin_manager(plugins_dir=tmp_path)
    error = info.value
    assert "'plugins/typo.py'" in error.message and f"{path}:4" in error.message
    assert "unknown hook 'prepare_workfow'" in error.message
    assert error.hint is not None and error.hint.startswith("Did you mean 'prepare_workflow'?")
    assert error.where["hook"] == "prepare_workfow"


def test_a_hook_with_an_unknown_parameter_is_a_startup_error(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "sig.py", """
        from hotfolder import hookimpl

        @hookimpl
        def prepare_workflow(workflow, spec, scenario):
            pass
    """)
    with pytest.raises(PluginError) as info:
        plugins.get_plugin_manager(plugins_dir=tmp_path)
    message = info.value.message
    assert str(path) in message and "'prepare_workflow'" in message and "'scenario'" in message
    assert "prepare_workflow(workflow, spec, template)" in message


def test_a_hook_parameter_with_a_default_is_a_startup_error(tmp_path: Path) -> None:
    write_plugin(tmp_path, "defaults.py", """
        from hotfolder import hookimpl

        @hookimpl
        def track_event(event, settings=None):
            pass
    """)
    with pytest.raises(PluginError, match="'settings' a default value"):
        plugins.get_plugin_manager(plugins_dir=tmp_path)


def test_a_wrapper_on_a_hook_called_one_by_one_is_a_startup_error(tmp_path: Path) -> None:
    write_plugin(tmp_path, "wrap.py", """
        from hotfolder import hookimpl

        @hookimpl(wrapper=True)
        def track_event(event):
            return (yield)
    """)
    with pytest.raises(PluginError, match="wrapper for hook 'track_event'"):
        plugins.get_plugin_manager(plugins_dir=tmp_path)


def test_wrappers_are_allowed_on_stage_hooks(tmp_path: Path, templates: Path) -> None:
    write_plugin(tmp_path, "timing.py", """
        from hotfolder import hookimpl
        SEEN = []

        @hookimpl(wrapper=True)
        def prepare_workflow(workflow):
            SEEN.append(len(workflow))
            return (yield)
    """)
    pm = plugins.get_plugin_manager(plugins_dir=tmp_path)
    hooks = plugins.Hooks(pm)
    template = load.load_template(templates, "invert", hooks=hooks)
    render.render_workflow(template, spec(), hooks=hooks)
    assert pm.get_plugin("plugins/timing.py").SEEN == [3]


# --------------------------------------------------------------------------------------------------
# entry points and switches


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution ``hotfolder-fake`` 0.1 with entry point ``fake = hotfolder_fake``, on sys.path."""
    site = tmp_path / "site"
    (site / "hotfolder_fake-0.1.dist-info").mkdir(parents=True)
    (site / "hotfolder_fake-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hotfolder-fake\nVersion: 0.1\n", encoding="utf-8")
    (site / "hotfolder_fake-0.1.dist-info" / "entry_points.txt").write_text(
        "[hotfolder]\nfake = hotfolder_fake\n", encoding="utf-8")
    (site / "hotfolder_fake.py").write_text(textwrap.dedent("""
        from hotfolder import hookimpl

        @hookimpl
        def prepare_jinja2_environment(env):
            env.filters["fake"] = lambda value: f"fake:{value}"
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "hotfolder_fake", raising=False)
    yield site
    sys.modules.pop("hotfolder_fake", None)


def test_a_packaged_plugin_is_discovered_through_its_entry_point(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch, templates: Path
) -> None:
    monkeypatch.delenv("HOTFOLDER_LOAD_PLUGINS")
    pm = plugins.get_plugin_manager()
    (entry,) = plugins.list_plugins(pm)
    assert entry == {
        "name": "fake", "hooks": ["prepare_jinja2_environment"], "distribution": "hotfolder-fake",
        "version": "0.1", "path": str(installed_plugin / "hotfolder_fake.py"),
    }
    (templates / "f.json").write_text('{"1": {"class_type": "X", "inputs": {"v": "{{ 7 | fake }}"}}}')
    hooks = plugins.Hooks(pm)
    workflow, _ = render.render_workflow(load.load_template(templates, "f", hooks=hooks), spec(), hooks=hooks)
    assert workflow["1"]["inputs"]["v"] == "fake:7"


@pytest.mark.parametrize(
    ("allow", "loaded"),
    [("hotfolder-fake", True), ("hotfolder_Fake, other", True), ("", False), ("other", False)],
)
def test_load_plugins_allowlist_selects_distributions(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch, allow: str, loaded: bool
) -> None:
    monkeypatch.setenv("HOTFOLDER_LOAD_PLUGINS", allow)
    pm = plugins.get_plugin_manager()
    assert (pm.get_plugin("fake") is not None) is loaded


def test_load_entrypoints_false_skips_installed_plugins(installed_plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOTFOLDER_LOAD_PLUGINS")
    assert plugins.get_plugin_manager(load_entrypoints=False).get_plugin("fake") is None


@pytest.mark.parametrize("name", ["fake", "hotfolder-fake"])
def test_disable_plugins_blocks_an_entry_point_by_name_or_distribution(
    installed_plugin: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv("HOTFOLDER_LOAD_PLUGINS")
    monkeypatch.setenv("HOTFOLDER_DISABLE_PLUGINS", f"other, {name}")
    assert plugins.get_plugin_manager().get_plugin("fake") is None


@pytest.mark.parametrize("name", ["all_hooks", ALL_HOOKS])
def test_disable_plugins_blocks_a_local_file(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("HOTFOLDER_DISABLE_PLUGINS", name)
    assert plugins.get_plugin_manager(plugins_dir=TEST_PLUGINS).get_plugin(ALL_HOOKS) is None
    assert plugins.get_plugin_manager(plugins_dir=TEST_PLUGINS, blocked=()).get_plugin(ALL_HOOKS) is None


def test_blocked_argument_can_disable_a_builtin() -> None:
    pm = plugins.get_plugin_manager(blocked=["hotfolder.default_plugins.scenario_formats"])
    hooks = plugins.Hooks(pm)
    with pytest.raises(ScenarioError, match="unsupported file type '.yaml'"):
        parse.parse_scenario(Path("a.yaml"), b"params: {a: 1}\n", hooks=hooks)


def test_a_broken_entry_point_names_the_distribution(installed_plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (installed_plugin / "hotfolder_fake.py").write_text("raise ImportError('missing libfoo')\n")
    monkeypatch.delenv("HOTFOLDER_LOAD_PLUGINS")
    with pytest.raises(PluginError, match="Plugin 'fake' from hotfolder-fake 0.1 failed to import") as info:
        plugins.get_plugin_manager()
    assert "HOTFOLDER_DISABLE_PLUGINS=fake" in (info.value.hint or "")


def test_trace_plugins_logs_every_hook_call(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HOTFOLDER_TRACE_PLUGINS", "1")
    pm = plugins.get_plugin_manager(plugins_dir=TEST_PLUGINS)
    with caplog.at_level(logging.DEBUG, logger="hotfolder.plugins"):
        hooks = plugins.Hooks(pm)
        hooks.parse_scenario_file(path=Path("a.json"), text="{}")
        hooks.track_event(Claimed(file="a.json", job_id="j1"))
    text = caplog.text
    assert "hook parse_scenario_file(path=PosixPath('a.json'), text='{}') -> plugins/all_hooks.py, " \
           "hotfolder.default_plugins.scenario_formats" in text
    assert "hook parse_scenario_file returned [({}, None)]" in text
    assert "hook register_postprocessors(register=" in text
    assert "hook track_event(event=Claimed(file='a.json'" in text


def test_no_tracing_without_the_switch(caplog: pytest.LogCaptureFixture) -> None:
    pm = plugins.get_plugin_manager(plugins_dir=TEST_PLUGINS)
    with caplog.at_level(logging.DEBUG, logger="hotfolder.plugins"):
        plugins.Hooks(pm).parse_scenario_file(path=Path("a.json"), text="{}")
    assert "hook parse_scenario_file" not in caplog.text


def test_importing_hotfolder_loads_no_plugins(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import importlib.metadata, pluggy
        def boom(*args, **kwargs):
            raise SystemExit("plugins were loaded at import time")
        importlib.metadata.distributions = boom
        importlib.metadata.entry_points = boom
        pluggy.PluginManager.load_setuptools_entrypoints = boom
        import hotfolder, hotfolder.plugins, hotfolder.engine, hotfolder.cli, hotfolder.daemon
        assert hotfolder.hookimpl is hotfolder.hookspecs.hookimpl
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_get_plugin_logger_names_the_plugin(caplog: pytest.LogCaptureFixture) -> None:
    log = plugins.get_plugin_logger("hotfolder._local_plugins.webhook")
    assert log.logger.name == "hotfolder.plugins.webhook"
    with caplog.at_level(logging.INFO, logger="hotfolder.plugins"):
        log.info("sent %d", 3)
    assert caplog.records[-1].getMessage() == "[webhook] sent 3"
    assert plugins.get_plugin_logger("hotfolder_fancy").logger.name == "hotfolder.plugins.hotfolder_fancy"


# --------------------------------------------------------------------------------------------------
# one test per hook (tests/test_hookspecs.py checks that each hook has one)


def test_hook_check_settings(tmp_path: Path) -> None:
    pm = plugins.get_plugin_manager(plugins_dir=TEST_PLUGINS)
    settings = minimal_settings(tmp_path, plugin_config={"all_hooks": {}})
    plugins.Hooks(pm, settings)
    assert calls(pm, "check_settings") == [settings]
    refusing = minimal_settings(tmp_path, plugin_config={"all_hooks": {"refuse": True}})
    with pytest.raises(PluginError) as info:
        plugins.Hooks(pm, refusing)
    assert info.value.message == f"Plugin {ALL_HOOKS!r} refuses the settings: all_hooks was told to refuse these settings"
    assert "HOTFOLDER_DISABLE_PLUGINS" in (info.value.hint or "")
    plugins.Hooks(pm)  # no settings (e.g. 'hotfolder render' without a config): not called
    assert len(calls(pm, "check_settings")) == 2


def test_hook_parse_scenario_file(pm: plugins.PluginManager, hooks: plugins.Hooks) -> None:
    jobs = parse.parse_scenario(Path("list.prompts"), b"a fox\n\na cat\n", hooks=hooks, default_template="t")
    assert [(j.name, j.params, j.line, j.options) for j in jobs] == [
        ("list-001", {"prompt": "a fox"}, 1, {"style": "loud"}),
        ("list-002", {"prompt": "a cat"}, 3, {"style": "loud"}),
    ]
    # the built-in formats answer through the same hook, identically to parsing without plugins
    data = b"params: {prompt: a fox, seed: 7}\nrepeat: 2\n"
    with_hooks = parse.parse_scenario(Path("f.yaml"), data, hooks=hooks)
    assert [j.to_dict() for j in with_hooks] == [j.to_dict() for j in parse.parse_scenario(Path("f.yaml"), data)]
    assert calls(pm, "parse_scenario_file") == ["list.prompts", "f.yaml"]
    # a plugin's own bug names the plugin and the hook
    with pytest.raises(PluginError) as info:
        parse.parse_scenario(Path("bad.prompts"), b"one\n!\n", hooks=hooks)
    assert info.value.message.startswith(f"Plugin {ALL_HOOKS!r} failed in hook 'parse_scenario_file': RuntimeError")
    line = (TEST_PLUGINS / "all_hooks.py").read_text().splitlines().index('            raise RuntimeError("a line with only \'!\'")') + 1
    assert info.value.where["raised_at"] == f"{TEST_PLUGINS / 'all_hooks.py'}:{line}"
    # nobody reads the suffix
    with pytest.raises(ScenarioError, match="unsupported file type '.xml'") as unknown:
        parse.parse_scenario(Path("a.xml"), b"<jobs/>", hooks=hooks)
    assert "no plugin reads '.xml'" in (unknown.value.hint or "")
    with pytest.raises(ScenarioError, match="unsupported file type '.png'"):
        parse.parse_scenario(Path("a.png"), b"\x89PNG\r\n\x1a\n\xff\xfe", hooks=hooks)


def test_hook_parse_scenario_file_results_are_checked(tmp_path: Path) -> None:
    write_plugin(tmp_path, "odd.py", """
        from hotfolder import hookimpl

        @hookimpl
        def parse_scenario_file(path, text):
            if path.suffix == ".bare":
                return [{"params": {"n": 1}}, ({"params": {"n": 2}}, 9)]
            if path.suffix == ".odd":
                return [["not", "a", "job"]]
            if path.suffix == ".str":
                return "jobs"
            return None
    """)
    hooks = plugins.Hooks(plugins.get_plugin_manager(plugins_dir=tmp_path))
    jobs = parse.parse_scenario(Path("x.bare"), b"anything", hooks=hooks)
    assert [(j.params, j.line) for j in jobs] == [({"n": 1}, None), ({"n": 2}, 9)]
    with pytest.raises(PluginError, match=r"returned \['not', 'a', 'job'\] for 'x.odd' as a job"):
        parse.parse_scenario(Path("x.odd"), b"anything", hooks=hooks)
    with pytest.raises(PluginError, match="returned str for 'x.str', not a list") as info:
        parse.parse_scenario(Path("x.str"), b"anything", hooks=hooks)
    assert "plugins/odd.py" in (info.value.hint or "")


def test_hook_register_scenario_keys(hooks: plugins.Hooks) -> None:
    assert hooks.scenario_keys["style"].plugin == ALL_HOOKS
    (job,) = parse.parse_scenario(Path("a.yaml"), b"style: quiet\nparams: {prompt: x}\n", hooks=hooks)
    assert job.options == {"style": "quiet"}
    jobs = parse.parse_scenario(
        Path("b.yaml"), b"style: quiet\npostprocess: [stamp]\njobs:\n  - {}\n  - {style: loud}\n", hooks=hooks)
    assert [j.options for j in jobs] == [{"postprocess": ["stamp"], "style": "quiet"},
                                         {"postprocess": ["stamp"], "style": "loud"}]
    with pytest.raises(ScenarioError) as info:
        parse.parse_scenario(Path("c.yaml"), b"style: shouting\n", hooks=hooks)
    assert info.value.message == "Scenario 'c.yaml' has an invalid 'style': style must be 'loud' or 'quiet', not 'shouting'"
    assert info.value.where == {"file": "c.yaml", "key": "style"}
    with pytest.raises(ScenarioError, match="unknown key 'stlye'") as typo:
        parse.parse_scenario(Path("d.yaml"), b"stlye: loud\n", hooks=hooks)
    assert "Did you mean 'style' instead of 'stlye'?" in (typo.value.hint or "")
    # without plugins the key is unknown, as before
    with pytest.raises(ScenarioError, match="unknown key 'style'"):
        parse.parse_scenario(Path("a.yaml"), b"style: quiet\n")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('register("params")', "registers the scenario key 'params', which is built in"),
        ('register("allow_unused")', "registers the scenario key 'allow_unused', which is built in"),
        ('register("destination")', "registers the scenario key 'destination', which is built in"),
        ('register("two words")', "registers the scenario key 'two words', which is not a plain name"),
        ('register("style")', "Plugins 'plugins/zz.py' and 'plugins/all_hooks.py' both register the scenario key 'style'"),
        ('register("ok", check=lambda v: {}["boom"])', None),
    ],
)
def test_register_scenario_keys_refuses_clashes_at_startup(tmp_path: Path, source: str, message: str | None) -> None:
    (tmp_path / "all_hooks.py").write_bytes((TEST_PLUGINS / "all_hooks.py").read_bytes())
    write_plugin(tmp_path, "zz.py", f"""
        from hotfolder import hookimpl

        @hookimpl
        def register_scenario_keys(register):
            {source}
    """)
    pm = plugins.get_plugin_manager(plugins_dir=tmp_path)
    if message is not None:
        with pytest.raises(PluginError, match=message):
            plugins.Hooks(pm)
        return
    # a check that crashes (not ValueError) is the plugin's bug, reported with its name
    with pytest.raises(PluginError, match="Plugin 'plugins/zz.py' failed while checking the scenario key 'ok'"):
        parse.parse_scenario(Path("a.yaml"), b"ok: 1\n", hooks=plugins.Hooks(pm))


def test_hook_prepare_jinja2_environment(pm: plugins.PluginManager, hooks: plugins.Hooks, templates: Path) -> None:
    (templates / "leaf.json").write_text(json.dumps({
        "1": {"class_type": "X", "inputs": {"text": "{{ prompt | shout }}", "g": "{{ plugin_greeting }}"}},
    }))
    (templates / "whole.json.j2").write_text(
        '{"1": {"class_type": "X", "inputs": {"text": {{ prompt | shout }}, "g": {{ plugin_greeting }}}}}')
    job = spec(params={"prompt": "fox"}, options={"style": "quiet"})
    for name in ("leaf", "whole"):
        template = load.load_template(templates, name, hooks=hooks)
        workflow, _ = render.render_workflow(template, job, hooks=hooks)
        assert workflow["1"]["inputs"] == {"text": "FOX!", "g": "hello from all_hooks"}
    assert len(calls(pm, "prepare_jinja2_environment")) == 2  # one per environment, made once
    # without the plugin the filter does not exist: a clear template error at load time
    with pytest.raises(TemplateError, match="No filter named 'shout'"):
        load.load_template(templates, "leaf")


def test_hook_prepare_template_context(pm: plugins.PluginManager, hooks: plugins.Hooks, templates: Path) -> None:
    (templates / "ctx.json").write_text(json.dumps({
        "1": {"class_type": "X", "inputs": {"text": "{{ prompt }}", "style": "{{ style }}", "n": "{{ n }}"}},
    }))
    template = load.load_template(templates, "ctx", hooks=hooks)
    workflow, params = render.render_workflow(
        template, spec("loud-job", params={"prompt": "a fox", "n": 3}, options={"style": "loud"}), hooks=hooks)
    assert workflow["1"]["inputs"] == {"text": "A FOX", "style": "loud", "n": 3}
    assert params == {"prompt": "A FOX", "n": 3}  # changed params are recorded; 'style' is template-only
    assert calls(pm, "prepare_template_context") == ["loud-job"]
    with pytest.raises(TemplateError, match="undefined variable 'style'"):
        render.render_workflow(template, spec(params={"prompt": "x", "n": 1}))


def test_hook_prepare_workflow(pm: plugins.PluginManager, hooks: plugins.Hooks, templates: Path) -> None:
    template = load.load_template(templates, "invert", hooks=hooks)
    workflow, _ = render.render_workflow(template, spec("w", set={"Invert.image": ["1", 0]}), hooks=hooks)
    assert {node["_meta"]["all_hooks"] for node in workflow.values()} == {"invert"}
    assert calls(pm, "prepare_workflow") == [("w", "invert")]


def test_prepare_workflow_failures_fail_the_job_naming_the_plugin(tmp_path: Path, templates: Path) -> None:
    write_plugin(tmp_path, "breaker.py", """
        from hotfolder import hookimpl
        from hotfolder.errors import TemplateError

        @hookimpl
        def prepare_workflow(workflow, spec):
            mode = spec.params.get("mode")
            if mode == "crash":
                workflow["1"]["inputs"]["missing"] = spec.params["no-such-param"]
            elif mode == "explain":
                raise TemplateError("the breaker needs a checkpoint", hint="use txt2img")
            elif mode == "break":
                workflow["99"] = "not a node"
    """)
    hooks = plugins.Hooks(plugins.get_plugin_manager(plugins_dir=tmp_path))
    template = load.load_template(templates, "invert", hooks=hooks)
    with pytest.raises(PluginError) as crash:
        render.render_workflow(template, spec(params={"mode": "crash"}, options={"allow_unused": ["mode"]}), hooks=hooks)
    assert crash.value.message == "Plugin 'plugins/breaker.py' failed in hook 'prepare_workflow': KeyError: 'no-such-param'"
    assert crash.value.where["plugin"] == "plugins/breaker.py"
    with pytest.raises(TemplateError) as explained:
        render.render_workflow(template, spec(params={"mode": "explain"}, options={"allow_unused": ["mode"]}), hooks=hooks)
    assert explained.value.message == "the breaker needs a checkpoint"
    assert explained.value.where == {"plugin": "plugins/breaker.py", "hook": "prepare_workflow"}
    with pytest.raises(PluginError, match="no longer an API workflow after the plugins' prepare_workflow") as broken:
        render.render_workflow(template, spec(params={"mode": "break"}, options={"allow_unused": ["mode"]}), hooks=hooks)
    assert broken.value.where["node"] == "99"


def test_hook_parse_workflow(pm: plugins.PluginManager, hooks: plugins.Hooks, templates: Path) -> None:
    # a plugin's own format: converted when the template is loaded, then rendered like any .json template
    (templates / "mine.json").write_text(json.dumps(
        {"all_hooks": [["EmptyImage", {"width": "{{ size }}"}], ["SaveImage", {"images": ["1", 0]}]]}))
    template = load.load_template(templates, "mine", hooks=hooks)
    assert (template.source_format, template.conversion["from"]) == ("plugin", "plugin")
    workflow, _ = render.render_workflow(template, spec(params={"size": 64}), hooks=hooks)
    assert (workflow["1"]["class_type"], workflow["1"]["inputs"]) == ("EmptyImage", {"width": 64})
    # an API template is never offered to the hook
    load.load_template(templates, "invert", hooks=hooks)
    assert calls(pm, "parse_workflow") == ["mine"]
    # a format nobody reads: the same error as without plugins
    (templates / "odd.json").write_text(json.dumps({"1": {"class_type": "X"}}))
    for with_hooks in (hooks, None):
        with pytest.raises(TemplateError, match="node '1' has no 'inputs' object"):
            load.load_template(templates, "odd", hooks=with_hooks)
    # the built-in UI converter answers last, through the same hook, as it converts without plugins
    (templates / "ui.json").write_bytes((TESTS / "data" / "ui_workflows" / "txt2img_features.json").read_bytes())
    info = json.loads((TESTS.parent / "hotfolder" / "testing" / "object_info_core.json").read_text())
    converted = load.load_template(templates, "ui", hooks=hooks, object_info=info)
    assert converted.source_format == "ui" and calls(pm, "parse_workflow")[-1] == "ui"
    assert converted.text == load.load_template(templates, "ui", object_info=info).text
    with pytest.raises(load.ObjectInfoUnavailable):  # no server: the job waits for one
        load.load_template(templates, "ui", hooks=hooks)
    blocked = plugins.Hooks(plugins.get_plugin_manager(blocked=["hotfolder.default_plugins.ui_workflows"]))
    with pytest.raises(TemplateError, match="is a ComfyUI UI workflow, not API format"):
        load.load_template(templates, "ui", hooks=blocked, object_info=info)


def test_hook_parse_workflow_results_are_checked(tmp_path: Path, templates: Path) -> None:
    write_plugin(tmp_path, "odd.py", """
        from hotfolder import hookimpl

        @hookimpl
        def parse_workflow(data):
            return data.get("answer")
    """)
    hooks = plugins.Hooks(plugins.get_plugin_manager(plugins_dir=tmp_path))
    (templates / "str.json").write_text(json.dumps({"answer": "a workflow"}))
    with pytest.raises(PluginError, match="returned str for template 'str', not an API workflow") as info:
        load.load_template(templates, "str", hooks=hooks)
    assert "plugins/odd.py" in (info.value.hint or "")
    (templates / "bad.json").write_text(json.dumps({"answer": {"1": "not a node"}}))
    with pytest.raises(TemplateError, match="node '1' is a JSON str, not a node object"):
        load.load_template(templates, "bad", hooks=hooks)


def test_hook_register_postprocessors(pm: plugins.PluginManager, hooks: plugins.Hooks, tmp_path: Path) -> None:
    assert hooks.postprocessors["stamp"].plugin == ALL_HOOKS
    staging = tmp_path / ".staging" / "job"
    staging.mkdir(parents=True)
    (staging / "a.png").write_bytes(b"png")
    sidecar: dict[str, Any] = {"name": "job", "outputs": [{"file": "a.png", "size": 3, "sha256": "x"}]}
    plugins.run_postprocessors(hooks, ["stamp", {"name": "stamp", "text": "second"}], staging, sidecar)
    assert (staging / "stamp.txt").read_text() == "stamped" and (staging / "stamp-2.txt").read_text() == "second"
    assert [o["file"] for o in sidecar["outputs"]] == ["a.png", "stamp.txt", "stamp-2.txt"]
    assert sidecar["outputs"][2]["size"] == 6 and len(sidecar["outputs"][2]["sha256"]) == 64
    assert sidecar["stamp"] == "second"
    assert sidecar["postprocess"] == [
        {"name": "stamp", "plugin": ALL_HOOKS, "options": {"text": "stamped"}},
        {"name": "stamp", "plugin": ALL_HOOKS, "options": {"text": "second"}},
    ]
    assert calls(pm, "register_postprocessors") == [None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("stamp", [("stamp", {"text": "stamped"})]),
        ({"stamp": {"text": "t"}}, [("stamp", {"text": "t"})]),
        ({"stamp": None}, [("stamp", {"text": "stamped"})]),
        ([{"name": "stamp", "text": "t"}, "stamp"], [("stamp", {"text": "t"}), ("stamp", {"text": "stamped"})]),
    ],
)
def test_parse_postprocess_accepts_names_tables_and_mappings(hooks: plugins.Hooks, value: Any, expected: Any) -> None:
    assert plugins.parse_postprocess(hooks, value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["stmap"], "Unknown post-processor 'stmap'"),
        ([{"name": "stamp", "colour": "red"}], "Post-processor 'stamp' does not accept its options: unknown options"),
        ([{"text": "no name"}], "is neither a name nor a table with a 'name'"),
        (5, "'postprocess' is int"),
        ({"stamp": 3}, "gives 'stamp' the options 3, not a table"),
    ],
)
def test_parse_postprocess_explains_bad_choices(hooks: plugins.Hooks, value: Any, message: str) -> None:
    with pytest.raises(PluginError, match=message) as info:
        plugins.parse_postprocess(hooks, value)
    if "stmap" in message:
        assert info.value.hint == "Did you mean 'stamp'? Post-processors: stamp."


def test_a_failing_postprocessor_fails_the_job_naming_it(tmp_path: Path) -> None:
    write_plugin(tmp_path, "bad_post.py", """
        from hotfolder import hookimpl
        from hotfolder.errors import OutputError

        def crash(job):
            1 / 0

        def explain(job):
            raise OutputError("disk full", hint="free some space")

        @hookimpl
        def register_postprocessors(register):
            register("crash", crash)
            register("explain", explain)
    """)
    hooks = plugins.Hooks(plugins.get_plugin_manager(plugins_dir=tmp_path))
    folder = tmp_path / "staged"
    folder.mkdir()
    with pytest.raises(PluginError) as crash:
        plugins.run_postprocessors(hooks, ["crash"], folder, {"name": "j"})
    assert crash.value.message == "Post-processor 'crash' (plugin 'plugins/bad_post.py') failed: ZeroDivisionError: division by zero"
    with pytest.raises(Exception, match="disk full") as explained:
        plugins.run_postprocessors(hooks, ["explain"], folder, {"name": "j"})
    assert explained.value.where == {"postprocessor": "explain", "plugin": "plugins/bad_post.py"}


def test_staged_job_refuses_outputs_outside_its_folder(tmp_path: Path) -> None:
    job = plugins.StagedJob(folder=tmp_path / "job", sidecar={"name": "job"})
    job.folder.mkdir()
    (tmp_path / "elsewhere.txt").write_text("x")
    with pytest.raises(PluginError, match="not a file directly inside the job's folder"):
        job.add_output(tmp_path / "elsewhere.txt")
    (job.folder / "a.txt").write_text("abc")
    entry = job.add_output(job.folder / "a.txt", kind="text")
    assert entry == {"file": "a.txt", "kind": "text", "size": 3,
                     "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    job.remove_output(entry)
    assert job.outputs == [] and not (job.folder / "a.txt").exists()


def test_hook_track_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_plugin(tmp_path, "a_broken_notifier.py", """
        from hotfolder import hookimpl

        @hookimpl
        def track_event(event):
            raise ConnectionError("notifier down")
    """)
    (tmp_path / "all_hooks.py").write_bytes((TEST_PLUGINS / "all_hooks.py").read_bytes())
    pm = plugins.get_plugin_manager(plugins_dir=tmp_path)
    settings = minimal_settings(tmp_path)
    hooks = plugins.Hooks(pm, settings)
    with caplog.at_level(logging.ERROR, logger="hotfolder.plugins"):
        for event in (Claimed(file="a.yaml", job_id="j1", job="a"),
                      Submitted(file="a.yaml", job_id="j1", job="a", prompt_id="p", server="s"),
                      Progress(file="a.yaml", job_id="j1", job="a", node="1", value=1, max=2),
                      Published(file="a.yaml", job_id="j1", job="a", path="/out/a"),
                      Failed(file="a.yaml", job_id="j1", job="a", error={"message": "x"}),
                      Archived(file="a.yaml", job_id="j1", job="a", failed=False, path=None)):
            hooks.track_event(event)
    assert calls(pm, "track_event") == ["claimed", "submitted", "progress", "published", "failed", "archived"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 6
    assert errors[0] == "Plugin 'plugins/a_broken_notifier.py' failed in hook 'track_event' (ignored): ConnectionError: notifier down"
