"""Meta-tests that keep the plugin surface honest: every hook typed, documented, tested, and the
guide's code runs."""

from __future__ import annotations

import inspect
import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hotfolder import engine, hookspecs, plugins
from hotfolder.errors import ScenarioError
from hotfolder.stages import parse
from hotfolder.templates import load, render
from tests.conftest import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"

#: The hooks in the order hookspecs.py and docs/plugins.md present them: pipeline order, then
#: parse_workflow (render stage, when a template is loaded), appended last.
PIPELINE_ORDER = [
    "check_settings",
    "parse_scenario_file",
    "register_scenario_keys",
    "prepare_jinja2_environment",
    "prepare_template_context",
    "prepare_workflow",
    "register_postprocessors",
    "track_event",
    "parse_workflow",
]


@pytest.fixture(scope="module")
def pm() -> plugins.PluginManager:
    return plugins.get_plugin_manager(load_entrypoints=False, plugins_dir=TEST_PLUGINS)


def spec_function(name: str) -> Any:
    return getattr(hookspecs, name)


def test_hooks_are_listed_in_pipeline_order(pm: plugins.PluginManager) -> None:
    assert plugins.hook_names(pm) == PIPELINE_ORDER
    assert hookspecs.__doc__ is not None
    source = Path(hookspecs.__file__).read_text()
    assert source.count("\n@hookspec") == len(PIPELINE_ORDER)


def test_hook_names_use_the_verb_vocabulary(pm: plugins.PluginManager) -> None:
    for name in plugins.hook_names(pm):
        assert re.match(r"^(register|parse|resolve|prepare|check|track)_", name), name


def test_every_hookspec_is_typed_and_says_when_it_runs_and_what_errors_do(pm: plugins.PluginManager) -> None:
    for name in plugins.hook_names(pm):
        function = spec_function(name)
        doc = inspect.getdoc(function) or ""
        first = doc.splitlines()[0]
        assert re.match(r"^(Startup|Parse stage|Render stage|Inject stage|Post-process stage|Every stage)", first), (name, first)
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, name
        for parameter in signature.parameters.values():
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)
            assert f":param {parameter.name}:" in doc, (name, parameter.name)
        assert re.search(r"fails the job|fail the job|fails the scenario|stops hotfolder|refuse|logged", doc), name


def test_only_parse_hooks_are_firstresult(pm: plugins.PluginManager) -> None:
    for name in plugins.hook_names(pm):
        opts = getattr(pm.hook, name).spec.opts
        assert opts["firstresult"] is name.startswith("parse_"), name


def test_the_facade_has_a_typed_method_per_hook(pm: plugins.PluginManager) -> None:
    for name in plugins.hook_names(pm):
        method = getattr(plugins.Hooks, name)
        assert inspect.getdoc(method), name
        hints = inspect.signature(method)
        assert hints.return_annotation is not inspect.Signature.empty, name
        spec_params = list(inspect.signature(spec_function(name)).parameters)
        method_params = [p for p in hints.parameters if p != "self"]
        if name.startswith("register_"):
            assert method_params == [], name  # the facade supplies the callback and returns what was registered
        elif name == "track_event":
            assert method_params == ["event"]  # the facade adds its settings
        else:
            assert method_params == spec_params, name
            assert all(hints.parameters[p].kind is inspect.Parameter.KEYWORD_ONLY for p in method_params), name


def test_no_registered_hook_implementation_has_defaults(pm: plugins.PluginManager) -> None:
    examples = plugins.get_plugin_manager(load_entrypoints=False, plugins_dir=ROOT / "plugins")
    impls = [*plugins.iter_hookimpls(pm), *plugins.iter_hookimpls(examples)]
    assert {impl.plugin_name for _, impl in impls} >= {
        "plugins/all_hooks.py", "plugins/lora_stack.py", "plugins/image_format.py", "plugins/storage.py",
        "plugins/webhook.py", *plugins.DEFAULT_PLUGINS}
    for hook, impl in impls:
        defaults = [p for p in inspect.signature(impl.function).parameters.values() if p.default is not p.empty]
        assert not defaults, (hook, impl.plugin_name, defaults)


def test_the_all_hooks_test_plugin_implements_every_hook(pm: plugins.PluginManager) -> None:
    (entry,) = plugins.list_plugins(pm)
    assert entry["name"] == "plugins/all_hooks.py" and entry["hooks"] == sorted(PIPELINE_ORDER)


# --------------------------------------------------------------------------------------------------
# documentation


def doc_text() -> str:
    return DOCS.read_text(encoding="utf-8")


def test_every_hook_is_documented_with_its_exact_signature(pm: plugins.PluginManager) -> None:
    headings = [line for line in doc_text().splitlines() if line.startswith("### ")]
    documented = []
    for name in plugins.hook_names(pm):
        signature = plugins.hook_signature(name)
        assert f"### `{signature}`" in headings, f"docs/plugins.md needs a heading '### `{signature}`'"
        documented.append(headings.index(f"### `{signature}`"))
    assert documented == sorted(documented), "hooks are documented in pipeline order"
    reference = doc_text().split("## Hook reference", 1)[1]
    for name in plugins.hook_names(pm):
        section = reference.split(f"### `{plugins.hook_signature(name)}`", 1)[1].split("\n### ", 1)[0]
        for part in ("**When:**", "**Parameters:**", "**Contract:**", "```python", "@hookimpl"):
            assert part in section, (name, part)


def test_every_hook_has_a_test_named_after_it(pm: plugins.PluginManager) -> None:
    tests = "\n".join(p.read_text(encoding="utf-8") for p in Path(__file__).parent.rglob("test_*.py"))
    for name in plugins.hook_names(pm):
        assert re.search(rf"^def test_hook_{name}\(", tests, re.MULTILINE), f"no test_hook_{name}"


def test_the_guide_documents_the_environment_switches_and_the_plugin_command() -> None:
    text = doc_text()
    for word in (plugins.LOAD_ENV, plugins.DISABLE_ENV, plugins.TRACE_ENV, "hotfolder plugins",
                 "--all", "--hook", "[project.entry-points.hotfolder]", "hotfolder.testing", "postprocess",
                 "[plugin_config."):
        assert word in text, word
    for path in sorted((ROOT / "plugins").glob("*.py")):
        assert f"`plugins/{path.name}`" in text, path.name


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", doc_text(), re.MULTILINE | re.DOTALL)


def test_every_python_snippet_in_the_guide_compiles() -> None:
    blocks = code_blocks("python")
    assert len(blocks) >= 12
    for block in blocks:
        compile(block, "docs/plugins.md", "exec")


def named_block(first_line: str, *, last: bool = False) -> str:
    found = [b for b in code_blocks("python") if b.startswith(first_line + "\n")]
    assert found, first_line
    return found[-1] if last else found[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for sub in ("plugins", "templates", "tests"):
        (tmp_path / sub).mkdir()
    for path in EXAMPLES.iterdir():
        shutil.copy(path, tmp_path / "templates" / path.name)
    return tmp_path


def tutorial_hooks(project: Path, source: str) -> plugins.Hooks:
    (project / "plugins" / "prefix_by_job.py").write_text(source, encoding="utf-8")
    return plugins.Hooks(plugins.get_plugin_manager(load_entrypoints=False, plugins_dir=project / "plugins"))


def render_one(hooks: plugins.Hooks, project: Path, scenario: bytes) -> dict[str, Any]:
    (spec,) = parse.parse_scenario(Path("red-fox.yaml"), scenario, hooks=hooks)
    template = load.load_template(project / "templates", "invert", hooks=hooks)
    return render.render_workflow(template, spec, hooks=hooks)[0]


def test_the_tutorials_one_file_plugin_works_as_described(project: Path) -> None:
    hooks = tutorial_hooks(project, named_block("# plugins/prefix_by_job.py"))
    assert render_one(hooks, project, b"template: invert\n")["3"]["inputs"]["filename_prefix"] == "red-fox"


def test_the_tutorials_plugin_with_an_option_works_as_described(project: Path) -> None:
    hooks = tutorial_hooks(project, named_block("# plugins/prefix_by_job.py", last=True))
    assert render_one(hooks, project, b"template: invert\nprefix: fox\n")["3"]["inputs"]["filename_prefix"] == "fox"
    with pytest.raises(ScenarioError) as info:
        render_one(hooks, project, b"template: invert\nprefix: a/b\n")
    quoted = "`Scenario 'x.yaml' has an invalid 'prefix': prefix must be a file name without folders, e.g. 'fox'`"
    assert quoted.replace("x.yaml", "red-fox.yaml").strip("`") == info.value.message
    assert quoted in doc_text()


def test_the_tutorials_packaged_plugin_is_found_through_its_entry_point(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pyproject,) = [b for b in code_blocks("toml") if "[project.entry-points.hotfolder]" in b]
    meta = tomllib.loads(pyproject)["project"]
    ((ep_name, module_name),) = meta["entry-points"]["hotfolder"].items()
    site = project / "site"
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    (info / "entry_points.txt").write_text(f"[hotfolder]\n{ep_name} = {module_name}\n")
    (site / f"{module_name}.py").write_text(named_block("# plugins/prefix_by_job.py", last=True))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("HOTFOLDER_LOAD_PLUGINS")
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    try:
        pm = plugins.get_plugin_manager()
        (entry,) = plugins.list_plugins(pm)
        assert (entry["name"], entry["distribution"], entry["version"]) == ("prefix", "hotfolder-prefix", "0.1.0")
        hooks = plugins.Hooks(pm)
        assert render_one(hooks, project, b"template: invert\nprefix: p\n")["3"]["inputs"]["filename_prefix"] == "p"
    finally:
        sys.modules.pop(module_name, None)


def test_the_guides_unit_test_example_passes(project: Path) -> None:
    (project / "plugins" / "prefix_by_job.py").write_text(named_block("# plugins/prefix_by_job.py"))
    test_file = project / "tests" / "test_prefix_by_job.py"
    namespace: dict[str, Any] = {"__file__": str(test_file), "__name__": "doc_example"}
    exec(compile(named_block("# tests/test_prefix_by_job.py"), str(test_file), "exec"), namespace)  # noqa: S102
    namespace["test_saved_images_are_named_after_the_job"]()


ENGINE_HAS_HOOKS = "hooks" in inspect.signature(engine.Engine).parameters


@pytest.mark.skipif(not ENGINE_HAS_HOOKS, reason="runs once the pipeline calls plugins (Engine(hooks=...))")
def test_the_guides_end_to_end_example_passes(project: Path) -> None:
    (project / "plugins" / "prefix_by_job.py").write_text(named_block("# plugins/prefix_by_job.py"))
    test_file = project / "tests" / "test_prefix_by_job_e2e.py"
    namespace: dict[str, Any] = {"__file__": str(test_file), "__name__": "doc_example"}
    exec(compile(named_block("# tests/test_prefix_by_job_e2e.py"), str(test_file), "exec"), namespace)  # noqa: S102
    (project / "run").mkdir()
    namespace["test_outputs_are_named_after_the_job"](project / "run")
