"""Budgets: work whose size comes from a scenario or a server is bounded, and the thread that watches the
inbox and answers signals never does it.

Listed hostile cases against a real daemon (each ends in failed/ with an error naming its limit, and the
daemon serves a normal file after them), SIGTERM during a hostile render, server answers over their
limits, and generated sizes around every limit (under it works, over it fails naming the limit, never a
hang: every generated example runs under a deadline).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotfolder import budgets, daemon
from hotfolder.comfy.http import ComfyHTTP
from hotfolder.engine import Engine
from hotfolder.errors import OutputError, ScenarioError, ServerError, TemplateError
from hotfolder.spec import JobSpec
from hotfolder.stages import parse, prepare, upload
from hotfolder.templates import load, render
from hotfolder.templates import params as template_params
from hotfolder.testing import ComfyTestServer
from hotfolder.testing.png import encode_png
from tests.conftest import DEFAULT_PROFILE, make_settings, wait_until
from tests.test_daemon import settled, start_daemon, stop

pytestmark = pytest.mark.timeout(120)

SAVE = {"2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "b", "images": ["1", 0]}}}
EMPTY = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
# A .json.j2 template whose loops the scenario sizes: n x m iterations.
LOOP = ("{% for i in range(n) %}{% for j in range(m) %}{% endfor %}{% endfor %}"
        + json.dumps({"1": EMPTY, **SAVE}))
# A .json template whose title is as long as the scenario says (and that uses the params the cases give).
TIMES = {"1": {**EMPTY, "_meta": {"title": "{{ 'x' * n }}", "v": "{{ v }}", "prompt": "{{ prompt }}"}}, **SAVE}
TIMES_SIDECAR = '[params.n]\ntype = "int"\ndefault = 1\n[params.v]\ndefault = 0\n[params.prompt]\ndefault = ""\n'


def write_templates(project: Path) -> None:
    templates = project / "templates"
    (templates / "loop.json.j2").write_text(LOOP)
    (templates / "loop.toml").write_text('[params.n]\ntype = "int"\ndefault = 1\n[params.m]\ntype = "int"\ndefault = 1\n')
    (templates / "times.json").write_text(json.dumps(TIMES))
    (templates / "times.toml").write_text(TIMES_SIDECAR)


def nested(depth: int) -> Any:
    """A value that puts the scenario's top mapping ``depth`` levels deep (top mapping and params count)."""
    value: Any = 1
    for _ in range(depth - 2):
        value = [value]
    return value


def toml(values: dict[str, float]) -> str:
    return "".join(f"{key} = {value!r}\n" for key, value in values.items())


def error_of(project: Path, name: str) -> dict[str, Any]:
    return json.loads((project / "inbox" / "failed" / f"{name}.error.json").read_text())


# --------------------------------------------------------------------------------------------------
# listed hostile cases, one real daemon

# name -> (content, the config key its error must name)
HOSTILE: dict[str, tuple[str | bytes, str]] = {
    "loop.yaml": ("template: loop\nparams: {n: 100000, m: 100000}\n", "render_timeout"),
    "range.yaml": ("template: loop\nparams: {n: 1000000000}\n", "max_render_size"),
    "times.yaml": ("template: times\nparams: {n: 1000000000}\n", "max_render_size"),
    "deep.json": (json.dumps({"params": {"v": nested(200)}}), "max_scenario_depth"),
    "deep.yaml": ("params:\n  v: " + "[" * 200 + "1" + "]" * 200 + "\n", "max_scenario_depth"),
    "repeat.yaml": ("repeat: 600\n", "max_jobs_per_file"),
    "lines.txt": (b"a\n" * 5_000_000, "max_scenario_lines"),
    "rows.csv": (b"width,height\n" + b"8,8\n" * 1_000_000, "max_scenario_lines"),
    "rows.jsonl": (b'{"params": {"width": 8}}\n' * 100_000, "max_scenario_lines"),
}
LIMITS = {"render_timeout": 1.0, "max_scenario_lines": 5000, "max_jobs_per_file": 500, "max_scenario_depth": 16}


def test_listed_hostile_inputs_fail_naming_their_limit_and_the_daemon_serves_on(project: Path,
                                                                                comfy: ComfyTestServer) -> None:
    write_templates(project)
    (project / "hotfolder.toml").write_text(toml(LIMITS))
    proc = start_daemon(project, comfy.url)
    try:
        for name, (content, _key) in HOSTILE.items():
            path = project / "inbox" / f".{name}.part"
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            path.rename(project / "inbox" / name)
        wait_until(lambda: settled(project, list(HOSTILE)), timeout=60, message="every hostile file archived")
        (project / "inbox" / "normal.yaml").write_text("params: {width: 8}\n")
        wait_until(lambda: settled(project, ["normal.yaml"]), timeout=30, message="normal.yaml archived")
        assert proc.poll() is None
    finally:
        log = stop(proc)
    assert (project / "inbox" / "done" / "normal.yaml").exists(), log
    for name, (_content, key) in HOSTILE.items():
        error = error_of(project, name)
        text = json.dumps(error)
        assert key in error["message"] and key in error["hint"], (name, error)
        assert error["file"] == name and name in text, (name, error)
    assert "Traceback" not in log


def test_sigterm_during_a_hostile_render_stops_in_time_and_other_files_are_served(project: Path,
                                                                                  comfy: ComfyTestServer) -> None:
    write_templates(project)
    (project / "hotfolder.toml").write_text(toml({"render_timeout": 600.0, "stop_budget": 1.0}))
    proc = start_daemon(project, comfy.url)
    try:
        (project / "inbox" / "loop.yaml").write_text("template: loop\nparams: {n: 100000, m: 100000}\n")
        wait_until(lambda: not (project / "inbox" / "loop.yaml").exists(), message="loop.yaml claimed")
        (project / "inbox" / "normal.yaml").write_text("params: {width: 8}\n")  # while loop.yaml renders
        wait_until(lambda: settled(project, ["normal.yaml"]), timeout=30, message="normal.yaml archived")
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: proc.poll() is not None, timeout=15, message="the daemon exits on SIGTERM")
        took = time.monotonic() - started
    finally:
        log = stop(proc)
    assert proc.returncode == 0 and took < 15, log
    assert not settled(project, ["loop.yaml"]), log  # left claimed for the next start, not failed
    claimed = [p for p in (project / "inbox" / ".hotfolder").rglob("loop.yaml")]
    assert len(claimed) == 1, log
    record = json.loads((claimed[0].parent / "job.json").read_text())
    assert record["parse_attempts"] == 0, record  # a stop is no crash: not counted toward max_parse_attempts


def test_server_answers_over_their_budget_fail_the_job_naming_the_limit(project: Path, comfy: ComfyTestServer) -> None:
    settings = make_settings(project, comfy.url, max_response_size=100_000, max_download_size=100_000,
                             validate=False, queue_depth=1)
    comfy.faults.silence_websockets()  # the job's end is read from /history
    comfy.faults.oversize("history", 200_000, count=None)
    (project / "inbox" / "history.yaml").write_text("params: {width: 8}\n")
    daemon.run_daemon(settings, once=True)
    error = error_of(project, "history.yaml")
    assert "max_response_size" in error["message"] and error["where"]["limit"] == "max_response_size", error
    comfy.faults.clear()
    # the first /view answer is oversized: whichever of the two jobs downloads first (the two files are
    # prepared on two threads, so which one that is may vary) fails on the limit, the other is published
    comfy.faults.oversize("view", 200_000, chunked=True)
    (project / "inbox" / "view.yaml").write_text("params: {width: 9}\n")
    (project / "inbox" / "after.yaml").write_text("params: {width: 10}\n")
    counts = daemon.run_daemon(settings, once=True)
    (failed,) = [name for name in ("view.yaml", "after.yaml") if (project / "inbox" / "failed" / name).exists()]
    error = error_of(project, failed)
    assert "max_download_size" in error["message"] and error["where"]["limit"] == "max_download_size", error
    other = "after.yaml" if failed == "view.yaml" else "view.yaml"
    assert counts["published"] == 1 and (project / "inbox" / "done" / other).exists()


def test_one_input_file_and_one_template_are_read_once_per_batch_not_once_per_row(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = project / "inbox" / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(encode_png(2, 2, bytes(12)))
    (project / "templates" / "img.json").write_text(json.dumps({
        "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "{{ prefix }}", "images": ["1", 0]}}}))
    (project / "batch.yaml").write_text("template: img\ninputs: {LoadImage.image: inbox/photos/cat.png}\n"
                                        "jobs:\n" + "".join(f"  - params: {{prefix: p{i}}}\n" for i in range(50)))
    hashed: list[str] = []
    real_read = upload._read
    monkeypatch.setattr(upload, "_read", lambda fd, suffix, copy_dir, label, resolved, *a: hashed.append(label) or real_read(fd, suffix, copy_dir, label, resolved, *a))
    parsed: list[int] = []

    class CountingJson:
        def __getattr__(self, name: str) -> Any:
            return getattr(json, name)

        def loads(self, text: Any, *args: Any, **kwargs: Any) -> Any:
            parsed.append(len(text))
            return json.loads(text, *args, **kwargs)

    monkeypatch.setattr(template_params, "json", CountingJson())
    template_params._template_fields.cache_clear()
    settings = make_settings(project, "http://127.0.0.1:9", inputs_root=str(project))
    jobs = prepare.render_file_jobs(settings, project / "batch.yaml")
    assert len(jobs) == 50 and len({job.workflow["1"]["inputs"]["image"] for job in jobs}) == 1
    assert len(hashed) == 1, hashed  # read and hashed once for the file, not once per job
    assert len(parsed) == 1, len(parsed)  # the template's text parsed once, not once per job


# --------------------------------------------------------------------------------------------------
# generated sizes around each limit


def bounded(fn: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Run ``fn`` on a thread and wait for it with the test's own deadline: a hang fails the example."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    threading.Thread(target=run, daemon=True).start()
    wait_until(lambda: box, timeout=timeout, message=f"{fn} to finish (a hang)")
    if "error" in box:
        raise box["error"]
    return box["value"]


SMALL = budgets.Limits(max_scenario_lines=40, max_jobs_per_file=30, max_scenario_depth=8, max_file_size=10**8,
                       max_render_size=2000, render_timeout=0.3)


def _scenario(kind: str, size: int) -> tuple[str, str]:
    """(file name, text) of a scenario whose ``kind`` of size is ``size``."""
    if kind == "lines":
        return "s.txt", "".join("# note\n" if i % 3 == 0 else f"prompt {i}\n" for i in range(size))
    if kind == "jobs":
        return "s.yaml", f"matrix: {{n: {list(range(size // 2))}}}\nrepeat: 2\n" if size % 2 == 0 else f"repeat: {size}\n"
    value = nested(size)
    if kind == "depth-json":
        return "s.json", json.dumps({"params": {"v": value}})
    if kind == "depth-yaml":
        return "s.yaml", "params:\n  v: " + json.dumps(value) + "\n"
    return "s.toml", "[params]\nv = " + json.dumps(value) + "\n"


KEY = {"lines": "max_scenario_lines", "jobs": "max_jobs_per_file", "depth-json": "max_scenario_depth",
       "depth-yaml": "max_scenario_depth", "depth-toml": "max_scenario_depth"}
LIMIT = {"lines": SMALL.max_scenario_lines, "jobs": SMALL.max_jobs_per_file, "depth-json": SMALL.max_scenario_depth,
         "depth-yaml": SMALL.max_scenario_depth, "depth-toml": SMALL.max_scenario_depth}


@settings(max_examples=40)
@given(kind=st.sampled_from(sorted(KEY)), offset=st.integers(-3, 3), far=st.booleans())
@example(kind="depth-yaml", offset=500, far=False)
@example(kind="lines", offset=100_000, far=False)
def test_scenario_budgets_hold_around_each_limit(kind: str, offset: int, far: bool) -> None:
    size = LIMIT[kind] + offset * (50 if far else 1)
    if size < 3:
        return
    name, text = _scenario(kind, size)
    over = size > LIMIT[kind]
    try:
        specs = bounded(lambda: parse.parse_scenario(Path(name), text.encode(), default_template="t", limits=SMALL))
    except ScenarioError as err:
        assert over and KEY[kind] in err.message and err.where.get("limit") == KEY[kind], (size, err)
        return
    assert not over, (kind, size, len(specs))


def _render(source: str, n: int, limits: budgets.Limits = SMALL) -> Any:
    template = load.Template(name="t", path=Path("t.json"), text=json.dumps({"1": {**EMPTY, "_meta": {"title": source}},
                                                                              **SAVE}), kind="json", sha256="0")
    spec = JobSpec(index=1, name="j", source=Path("s.yaml"), params={"n": n})
    return render.render_workflow(template, spec, budget=budgets.RenderBudget(limits))


SIZED = {  # an expression that builds exactly n characters or items
    "times": "{{ 'x' * n }}",
    "center": "{{ 'x' | center(n) }}",
    "ljust": "{{ 'x'.ljust(n) }}",
    "range": "{% for i in range(n) %}{% endfor %}",
    "concat": "{{ ('x' * (n - 1)) ~ 'y' }}",
}


@settings(max_examples=40)
@given(kind=st.sampled_from(sorted(SIZED)), offset=st.integers(-3, 3), far=st.sampled_from([1, 1000, 10**6]))
@example(kind="times", offset=1, far=10**6)
def test_render_size_budget_holds_around_the_limit(kind: str, offset: int, far: int) -> None:
    n = SMALL.max_render_size + offset * far
    if n < 2:
        return
    try:
        workflow, _params = bounded(lambda: _render(SIZED[kind], n))
    except TemplateError as err:
        assert n > SMALL.max_render_size and "max_render_size" in err.message, (kind, n, err)
        assert err.where["limit"] == "max_render_size" and err.where["job"] == "j"
        return
    assert n <= SMALL.max_render_size, (kind, n)
    assert kind == "range" or len(workflow["1"]["_meta"]["title"]) == n


@settings(max_examples=8)
@given(n=st.one_of(st.integers(1, 30), st.integers(5000, 10**6)))
def test_render_time_budget_ends_any_loop_in_time(n: int) -> None:
    started = time.monotonic()
    try:
        bounded(lambda: _render("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", n,
                                budgets.Limits(render_timeout=SMALL.render_timeout, max_render_size=10**7)))
    except TemplateError as err:
        assert "render_timeout" in err.message and err.where["limit"] == "render_timeout", err
        assert n > 30
    assert time.monotonic() - started < SMALL.render_timeout + 2


PROMPT_ID = str(uuid.uuid4())


@pytest.fixture(scope="module")
def server_with_history() -> Any:
    server = ComfyTestServer(comfyui=DEFAULT_PROFILE)
    server.start()
    http = ComfyHTTP(server.url)
    http.post_prompt({"1": EMPTY, **SAVE}, prompt_id=PROMPT_ID, client_id="c")  # 0.4x takes only UUIDs
    entry = wait_until(lambda: http.history(PROMPT_ID), message="the prompt in /history")
    view = entry["outputs"]["2"]["images"][0]
    http.close()
    try:
        yield server, len(json.dumps({PROMPT_ID: entry, "padding": ""})), view
    finally:
        server.stop()


@settings(max_examples=30)
@given(route=st.sampled_from(["history", "view"]), offset=st.integers(-3, 3), chunked=st.booleans(),
       far=st.sampled_from([1, 10**5]))
def test_server_answer_budgets_hold_around_each_limit(server_with_history: Any, tmp_path_factory: Any, route: str,
                                                      offset: int, chunked: bool, far: int) -> None:
    server, base, view = server_with_history
    limit = 20_000
    size = limit + (offset * far if offset > 0 else offset)
    http = ComfyHTTP(server.url, max_response_size=limit, max_download_size=limit)
    server.faults.oversize(route, size - base if route == "history" else size, chunked=chunked)
    try:
        if route == "history":
            bounded(lambda: http.history(PROMPT_ID))
        else:
            dest = tmp_path_factory.mktemp("view") / "out.png"
            got, _sha = bounded(lambda: http.download(filename=view["filename"], subfolder=view["subfolder"],
                                                      type_=view["type"], dest=dest))
            assert got == size
    except (ServerError, OutputError) as err:
        key = "max_response_size" if route == "history" else "max_download_size"
        assert size > limit and err.where["limit"] == key and key in err.message, (route, size, err)
    else:
        assert size <= limit, (route, size)
    finally:
        server.faults.clear()
        http.close()


@pytest.fixture(scope="module")
def engine_project(tmp_path_factory: Any) -> Any:
    project = tmp_path_factory.mktemp("engine")
    for sub in ("inbox", "outbox", "templates"):
        (project / sub).mkdir()
    (project / "templates" / "times.json").write_text(json.dumps(TIMES))
    (project / "templates" / "times.toml").write_text(TIMES_SIDECAR)
    server = ComfyTestServer()
    server.start()
    overrides = {f: getattr(SMALL, f) for f in budgets.KEYS if f not in ("max_response_size", "max_download_size",
                                                                         "max_ws_message_size", "max_file_size")}
    settings = make_settings(project, server.url, default_template="times", **{**overrides, "max_jobs_per_file": 3})
    engine = Engine(settings)
    engine.start()
    try:
        yield project, engine
    finally:
        engine.stop()
        server.stop()


@settings(max_examples=12)
@given(kind=st.sampled_from(["lines", "jobs", "depth-json", "depth-yaml", "render"]), over=st.booleans(),
       number=st.integers(0, 10**6))
def test_an_engine_ends_every_generated_file_once_and_names_the_limit(engine_project: Any, kind: str, over: bool,
                                                                       number: int) -> None:
    project, engine = engine_project
    limit = {"render": SMALL.max_render_size, "jobs": 3}.get(kind) or LIMIT[kind]
    size = limit + 1 if over else limit
    if kind == "render":
        name, text = f"render-{number}.yaml", f"params: {{n: {size}}}\n"
    elif kind == "lines":  # one prompt, the rest comments
        name, text = f"lines-{number}.txt", "#\n" * (size - 1) + "a prompt\n"
    else:
        name, text = _scenario(kind, size)
        name = f"{kind}-{number}{Path(name).suffix}"
    path = project / "inbox" / name
    if (project / "inbox" / "done" / name).exists() or (project / "inbox" / "failed" / name).exists():
        return  # drawn before
    path.write_text(text)
    engine.accept(path, background=True)
    wait_until(lambda: not engine.busy(), timeout=20, message=f"{name} archived")
    ok, done = engine.healthy()[0], (project / "inbox" / "done" / name).exists()
    failed = (project / "inbox" / "failed" / name).exists()
    assert ok and done != failed and failed == over, (name, done, failed)
    if failed:
        error = json.loads((project / "inbox" / "failed" / f"{name}.error.json").read_text())
        key = "max_render_size" if kind == "render" else KEY[kind]
        assert over and key in json.dumps(error), (name, error)


def test_the_budget_defaults_are_the_config_defaults() -> None:
    settings = make_settings(Path("/tmp/nowhere-budgets"), "http://127.0.0.1:9")
    assert budgets.Limits.from_settings(settings) == budgets.DEFAULTS


# expression -> the limit its error names (None: renders), with n = 4294967295 (a seed) or 10**9
EXPRESSIONS: dict[str, str | None] = {
    "{{ 'x' * big }}": "max_render_size",
    "{{ 'x' | center(big) }}": "max_render_size",
    "{{ 'x'.ljust(big) }}": "max_render_size",
    "{{ ('{:>' ~ big ~ '}').format(1) }}": "max_render_size",
    "{{ '%*d' % (big, 1) }}": "max_render_size",
    "{{ range(big) | list | length }}": "max_render_size",
    "{{ lipsum(big) }}": "max_render_size",
    "{{ ('x' * 3000000).replace('', 'yyyy') }}": "max_render_size",
    "{{ (['x' * 9000] * 9000) | join }}": "max_render_size",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}": "max_render_size",
    "{% macro f(s, k) %}{{ f(s + s, k - 1) if k else s | length }}{% endmacro %}{{ f('x', 64) }}": "max_render_size",
    "{{ 10 ** big }}": "MAX_DIGITS",
    "{{ d.get('s', seed) }}": None,
    "{{ '%d' | format(seed) }}": None,
    "{{ '%s-%d' % ('a', seed) }}": None,
    "{{ '{}'.format(seed) }}": None,
    "{{ 2 ** 64 }} {{ seed * seed }}": None,
    "{% for i in range(3) %}{{ i }}{% endfor %}{{ 'ab' * 2 }}{{ [1, 2] | join(',') }}{{ 'x' | center(5) }}": None,
}


@pytest.mark.parametrize("source", list(EXPRESSIONS))
def test_a_template_building_something_huge_is_refused_before_it_is_built(source: str) -> None:
    template = load.Template(name="t", path=Path("t.json"), kind="json", sha256="0",
                               text=json.dumps({"1": {**EMPTY, "_meta": {"title": source}}, **SAVE}))
    values = {"big": 10**9, "seed": 4294967295, "d": {}}
    spec = JobSpec(index=1, name="j", source=Path("s.yaml"), params={k: v for k, v in values.items() if k in source},
                   options={"allow_unused": list(values)})  # 'd' in '%d' is no use of d
    try:
        bounded(lambda: render.render_workflow(template, spec, budget=budgets.RenderBudget(budgets.DEFAULTS)), 5)
    except TemplateError as err:
        assert EXPRESSIONS[source] and err.where["limit"] == EXPRESSIONS[source], (source, err)
        assert err.where["job"] == "j" and err.where["file"] == "s.yaml"
    else:
        assert EXPRESSIONS[source] is None, source


def test_a_file_whose_jobs_keep_running_out_of_render_time_is_refused_after_two(project: Path, comfy) -> None:
    # 40 jobs x render_timeout each would hold a prepare thread 40 times as long: after two, the rest is refused
    write_templates(project)
    (project / "hotfolder.toml").write_text(toml({"render_timeout": 0.3}))
    proc = start_daemon(project, comfy.url)
    try:
        for name in ("slow1.yaml", "slow2.yaml"):
            (project / "inbox" / name).write_text("template: loop\nrepeat: 40\nparams: {n: 100000, m: 100000}\n")
        wait_until(lambda: not (project / "inbox" / "slow2.yaml").exists(), message="claimed")
        (project / "inbox" / "normal.yaml").write_text("params: {width: 8}\n")
        wait_until(lambda: settled(project, ["slow1.yaml", "slow2.yaml", "normal.yaml"]), timeout=60,
                   message="all archived")
    finally:
        log = stop(proc)
    assert (project / "inbox" / "done" / "normal.yaml").exists(), log[-3000:]
    assert log.count("took longer than 0.3 s") == 4, log[-3000:]  # two per slow file
    assert log.count("was not rendered: 2 earlier jobs") == 76, log[-3000:]
