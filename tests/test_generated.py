"""Generated scenario documents, template values and server answers, each fed to one running engine.

Every test starts one test ComfyUI and one in-process :class:`~hotfolder.engine.Engine` and feeds it
many generated examples, one file at a time, exactly as the daemon's main loop does (``engine.accept``).
On every example the promises are checked (:meth:`Harness.run`): ``accept`` returns (an exception there
would end the daemon), the engine's threads live, the input ends in exactly one of ``inbox/done/`` and
``inbox/failed/``, a failed one has a readable ``.error.json`` that names the file and gives a hint with
no traceback and no "bug in hotfolder", every published sidecar is valid JSON with the params the
scenario asked for, and nothing is written outside ``outbox/`` and the inbox's own folders.

Bugs found by generation are kept as explicit ``@example``s (and in ``tests/hypothesis-db/``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotfolder.engine import Engine
from hotfolder.testing import ComfyTestServer
from hotfolder.testing.faults import PROMPT_ID
from tests.conftest import make_settings, wait_until

pytestmark = pytest.mark.timeout(300)
# Examples per test: the numbers below (the suite's fixed budget), or HOTFOLDER_HYPOTHESIS_EXAMPLES for a longer hunt.
_HUNT = int(os.environ.get("HOTFOLDER_HYPOTHESIS_EXAMPLES", "0") or 0)


def budget(examples: int) -> int:
    return _HUNT or examples


ECHO = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
          "_meta": {"title": "{{ prompt }}", "seed": "{{ seed }}"}},
    "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "gen", "images": ["1", 0]}},
}
TEMPLATES = {
    # a "{{ x }}" leaf keeps the value's type; text around it renders it as text; .json.j2 writes JSON values
    "echo.json": json.dumps(ECHO),
    "mixed.json": json.dumps({**ECHO, "1": {**ECHO["1"], "_meta": {"title": "pre {{ prompt }} post", "seed": "{{ seed }}"}}}),
    "whole.json.j2": json.dumps(ECHO).replace('"{{ prompt }}"', "{{ prompt }}").replace('"{{ seed }}"', "{{ seed }}"),
}
# every param passes as given (type "any"); the defaults let a scenario leave either out
DEFAULTS = '[params.prompt]\ntype = "any"\ndefault = ""\n[params.seed]\ntype = "any"\ndefault = 0\n'
TEMPLATES.update({f"{name}.toml": DEFAULTS for name in ("echo", "mixed", "whole")})
TITLE = {"echo": lambda p: p, "mixed": lambda p: f"pre {p} post", "whole": lambda p: p}


# --------------------------------------------------------------------------------------------------
# the harness: one server, one engine, many files


@dataclass
class Outcome:
    name: str
    state: str  # done | failed
    error: dict[str, Any] | None
    sidecars: list[dict[str, Any]]


def _tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` outside ``skip``, with its size and mtime."""
    out = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in dirs + files:
            info = os.lstat(here / name)  # a folder's own times change whenever a file comes or goes
            out[str((here / name).relative_to(root))] = (info.st_size, info.st_mtime_ns) if name in files else (0, 0)
    return out


class Harness:
    """One engine on ``project`` against ``comfy``; :meth:`run` drops one file and checks the promises."""

    def __init__(self, project: Path, comfy: ComfyTestServer, **overrides: object) -> None:
        self.project, self.comfy = project, comfy
        self.inbox, self.outbox = project / "inbox", project / "outbox"
        for name, text in TEMPLATES.items():
            (project / "templates" / name).write_text(text, encoding="utf-8")
        values: dict[str, object] = {"poll_interval": 0.1, "lost_grace": 1.0, "history_grace": 1.0,
                                     "job_timeout": 20.0, "default_template": "echo"}
        values.update(overrides)
        self.settings = make_settings(project, comfy.url, **values)
        self.engine = Engine(self.settings)
        self.count = 0
        self.tracebacks: list[logging.LogRecord] = []  # a logged traceback is the "bug" path
        self._catcher = logging.Handler(logging.WARNING)
        self._catcher.emit = lambda record: self.tracebacks.append(record) if record.exc_info else None  # type: ignore[method-assign]
        logging.getLogger("hotfolder").addHandler(self._catcher)
        own = (self.outbox, self.inbox / "done", self.inbox / "failed", self.inbox / ".hotfolder")
        self._skip = own
        self.engine.start()
        self.baseline = _tree(project, own)

    def close(self) -> None:
        logging.getLogger("hotfolder").removeHandler(self._catcher)
        self.engine.stop()

    def run(self, stem: str, suffix: str, data: bytes) -> Outcome:
        """Drop ``data`` as a new file, let the engine take it, wait until it is archived and check the promises."""
        self.count += 1
        self.tracebacks.clear()
        name = f"{self.count:04d}-{stem}{suffix}"
        published_before = {p.name for p in self.outbox.iterdir()}
        tmp = self.inbox / f".{name}.tmp"
        tmp.write_bytes(data)
        path = self.inbox / name
        tmp.rename(path)
        try:
            self.engine.accept(path)
        except Exception as err:  # the daemon's main loop would end here
            raise AssertionError(f"engine.accept raised {type(err).__name__}: {err} (the daemon would die)") from err
        done, failed = self.inbox / "done" / name, self.inbox / "failed" / name
        wait_until(lambda: (done.exists() or failed.exists()) and not self.engine.busy(), timeout=15,
                   message=f"{name} archived")
        healthy, why = self.engine.healthy()
        assert healthy, why
        assert not self.tracebacks, f"a traceback was logged: {self.tracebacks[0].getMessage()} {self.tracebacks[0].exc_info}"
        assert done.exists() != failed.exists(), f"{name} is in both done/ and failed/"
        assert not path.exists(), f"{name} is still in the inbox"
        assert not [p for p in (self.inbox / ".hotfolder").glob("*/*") if p.name == name], f"{name} left in a job folder"
        error = None
        if failed.exists():
            error = self._check_error(name)
        sidecars = self._check_published(name, published_before)
        assert _tree(self.project, self._skip) == self.baseline, "something was written outside outbox/ and the inbox's folders"
        return Outcome(name, "done" if done.exists() else "failed", error, sidecars)

    def _check_error(self, name: str) -> dict[str, Any]:
        raw = (self.inbox / "failed" / f"{name}.error.json").read_bytes()
        error = json.loads(raw.decode("utf-8"))  # strict UTF-8: readable by any tool
        assert error["file"] == name, error
        assert not _has_surrogate(error), f"a lone surrogate escape in the error file: {error}"
        assert isinstance(error.get("message"), str) and error["message"].strip(), error
        hints = [error.get("hint")] + [(j.get("error") or {}).get("hint") for j in error.get("jobs") or []]
        assert any(isinstance(h, str) and h.strip() for h in hints), f"no hint: {error}"
        text = json.dumps(error, ensure_ascii=False)
        assert "Traceback" not in text and 'File "' not in text, f"a traceback in the error file: {text[:2000]}"
        assert "bug in hotfolder" not in text and "Internal error" not in text, f"a user's or server's problem called a bug: {text[:2000]}"
        return error

    def _check_published(self, name: str, before: set[str]) -> list[dict[str, Any]]:
        sidecars = []
        for folder in sorted(self.outbox.iterdir()):
            if folder.name in before or folder.name.startswith("."):
                continue
            assert folder.is_dir() and not folder.is_symlink()
            data = json.loads((folder / f"{folder.name}.json").read_bytes().decode("utf-8"))
            assert data["scenario"]["file"] == name
            assert not _has_surrogate(data), "a lone surrogate escape in a sidecar (strict JSON readers refuse it)"
            sidecars.append(data)
        return sorted(sidecars, key=lambda s: s["job_index"])


@pytest.fixture
def harness(project: Path, comfy: ComfyTestServer) -> Iterator[Harness]:
    h = Harness(project, comfy)
    try:
        yield h
    finally:
        h.close()


# --------------------------------------------------------------------------------------------------
# values


def _with_surrogate(text: str, code: int) -> str:
    return text[: len(text) // 2] + chr(code) + text[len(text) // 2:]


SURROGATE = st.builds(_with_surrogate, st.text(max_size=6), st.integers(0xD800, 0xDFFF))
JINJA = st.sampled_from([
    "{{ 7*7 }}", "{% for x in range(10**9) %}x{% endfor %}", "{{ ''.__class__.__mro__ }}", "{#", "{{", "}}",
    "{% raw %}", "{{ prompt }}", "{{ seed }}", '"', "'", "\\", "\\n", "\n", "\r\n", "\x00", "\\u0000", "%}", "${x}",
])
TEXT = st.one_of(
    st.text(max_size=20),
    st.lists(JINJA | st.text(alphabet="ab {}%#\"'\\\n\t\x00", max_size=4), max_size=5).map("".join),
)
SEED = st.one_of(st.integers(), st.integers(min_value=-2**80, max_value=2**80), st.floats(), st.booleans(),
                 st.none(), st.sampled_from(["random", "RANDOM ", "rand"]), TEXT)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=8)
KEY = st.one_of(st.sampled_from(["prompt", "seed", "noise_seed", "width", "steps", "self", "loop", "range", "super",
                                 "__class__", "None", "true", "a.b", "a b", "{{ x }}", "-", "0"]),
                st.text(min_size=1, max_size=8), SURROGATE)


@st.composite
def params(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        out["prompt"] = draw(st.one_of(TEXT, TEXT, TEXT, VALUE, SURROGATE))
    if draw(st.booleans()):
        out["seed"] = draw(SEED)
    if not draw(st.integers(0, 4)):
        out.update(draw(st.dictionaries(KEY, VALUE, max_size=2)))
    return out


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario mapping: mostly well formed, sometimes with wrong types, unknown keys, batches."""
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        doc["template"] = draw(st.sampled_from(["echo", "mixed", "whole"]) | TEXT | VALUE | SURROGATE
                               | st.text(alphabet="ab", min_size=240, max_size=300))
    else:
        doc["template"] = draw(st.sampled_from(["echo", "mixed", "whole"]))
    doc["params"] = draw(params()) if draw(st.integers(0, 9)) else draw(VALUE)
    if not draw(st.integers(0, 3)):
        doc["name"] = draw(TEXT | SURROGATE | VALUE)
    if not draw(st.integers(0, 5)):
        # small, or refused (too large, zero, negative, not a whole number): never thousands of real jobs
        doc["repeat"] = draw(st.integers(1, 3) | st.integers(max_value=0) | st.integers(min_value=10**5)
                             | st.floats() | st.booleans() | st.none() | TEXT)
    if not draw(st.integers(0, 5)):
        doc["matrix"] = draw(st.dictionaries(st.sampled_from(["prompt", "seed", "extra", "1.width", "Empty Image.color"]) | KEY,
                                             st.lists(SCALAR, min_size=1, max_size=2) | VALUE, max_size=2))
    if not draw(st.integers(0, 6)):
        doc["set"] = draw(st.dictionaries(st.sampled_from(["1.width", "Empty Image.color", "2.filename_prefix",
                                                           "1._meta", "9.x", "nodot", "SaveImage.images"]) | TEXT,
                                          st.sampled_from([8, 16, "gen2"]) | VALUE, max_size=2) | VALUE)
    if not draw(st.integers(0, 6)):  # names that collide once made safe, or not
        name = st.sampled_from(["a", "A", "a ", "../a", ".a", "a/b", "con", ""]) | TEXT
        doc["jobs"] = draw(st.lists(st.fixed_dictionaries({"params": params()}, optional={"name": name}),
                                    min_size=1, max_size=3) | VALUE)
    for key in ("server", "label", "postprocess"):  # a pin no server matches, odd types
        if not draw(st.integers(0, 12)):
            doc[key] = draw(TEXT | VALUE)
    if not draw(st.integers(0, 9)):
        doc[draw(KEY)] = draw(VALUE)
    return doc


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


# --------------------------------------------------------------------------------------------------
# writing a document in each format


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "nan" if math.isnan(value) else "inf" if value == math.inf else "-inf" if value == -math.inf else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string takes JSON's escapes (\ud800 excepted: TOML refuses it)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"


def write_doc(fmt: str, doc: dict[str, Any]) -> bytes:
    if fmt == "json":
        return json.dumps(doc).encode()
    if fmt == "jsonl":
        jobs = doc.pop("jobs", None)
        lines = [json.dumps(doc)] + ([json.dumps(j) for j in jobs] if isinstance(jobs, list) else [])
        return "\n".join(lines).encode()
    if fmt == "yaml":
        try:
            return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8")
        except (yaml.YAMLError, UnicodeEncodeError):
            return json.dumps(doc).encode()  # JSON is YAML too (escapes for what YAML cannot hold raw)
    if fmt == "toml":
        return "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if v is not None).encode(
            "utf-8", "surrogatepass")
    raise AssertionError(fmt)


def expected_params(doc: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """The params each job of ``doc`` (json, yaml or toml) must have in its sidecar, in order."""
    def clean(value: Any) -> Any:  # what the format carries (TOML has no null)
        if fmt == "toml":
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items() if v is not None}
            if isinstance(value, list):
                return [clean(v) for v in value if v is not None]
        return value

    doc = clean(doc)
    top = doc.get("params") or {}
    entries = doc.get("jobs") if isinstance(doc.get("jobs"), list) else [{}]
    out = []
    for entry in entries:
        base = {**top, **(entry.get("params") or {})}
        matrix = doc.get("matrix") or {}
        combos: list[dict[str, Any]] = [{}]
        for key, values in matrix.items():
            combos = [{**c, key: v} for c in combos for v in values]
        for combo in combos:
            for _ in range(doc.get("repeat", 1)):
                out.append({**base, **{k: v for k, v in combo.items() if "." not in k}})
    return out


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)):
        return got == want
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=False))
    return type(got) is type(want) and got == want


def check_params(outcome: Outcome, wanted: list[dict[str, Any]]) -> None:
    assert len(outcome.sidecars) == len(wanted), (len(outcome.sidecars), wanted)
    for sidecar, want in zip(outcome.sidecars, wanted, strict=False):
        got = sidecar["params"]
        for key, value in want.items():
            if key.lower().endswith("seed") and isinstance(value, str) and value.strip().lower() == "random":
                assert isinstance(got[key], int) and 0 <= got[key] < 2**32, got
            else:
                assert key in got and _same(got[key], value), (key, got.get(key), value)
        template = (sidecar["template"] or {}).get("name")
        prompt = got.get("prompt")
        if isinstance(prompt, str) and template in TITLE:
            assert sidecar["workflow"]["1"]["_meta"]["title"] == TITLE[template](prompt)


# --------------------------------------------------------------------------------------------------
# 1. scenario documents and template values


@settings(max_examples=budget(80))
@given(fmt=st.sampled_from(["json", "yaml", "toml", "jsonl"]), doc=documents())
@example(fmt="json", doc={"template": "\ud800", "params": {"prompt": "x"}})  # render stat()ed the name: daemon died
@example(fmt="json", doc={"template": "echo", "params": {"prompt": "a\ud800b"}})
@example(fmt="yaml", doc={"template": "a" * 300, "params": {"prompt": "x"}})  # stat(): ENAMETOOLONG, daemon died
@example(fmt="json", doc={"template": "echo", "params": {"\udc00": 1}, "parmas\ud800": 1})
@example(fmt="yaml", doc={"template": "echo", "name": "\ud800", "params": {"prompt": "x"}})
@example(fmt="json", doc={"template": "echo", "params": {"prompt": "x"}, "server": "\ud800"})
@example(fmt="json", doc={"template": "echo", "params": {"prompt": "x"}, "label": "\udfff"})
@example(fmt="json", doc={"template": "echo", "params": {"prompt": "x"}, "matrix": {"x\ud800": [1]}})
@example(fmt="json", doc={"template": "echo", "params": {"prompt": "{{ 7*7 }}\\\"\n\x00", "seed": 2**70}})
@example(fmt="toml", doc={"template": "echo", "params": {"prompt": "x", "seed": -(2**70)}})
def test_generated_scenario_documents_end_as_promised(harness: Harness, fmt: str, doc: dict[str, Any]) -> None:
    outcome = harness.run("doc", "." + fmt, write_doc(fmt, dict(doc)))
    if _has_surrogate(doc) and fmt in ("json", "jsonl"):  # refused, and for one mapping before anything else
        assert outcome.state == "failed", outcome
        assert fmt == "jsonl" or "surrogate" in outcome.error["message"], outcome.error
    if outcome.state == "done" and fmt != "jsonl":  # accepted: so every key had a valid type
        check_params(outcome, expected_params(doc, fmt))


CELL = st.one_of(st.integers(-10**6, 10**6), st.sampled_from(["true", "FALSE", "a fox", " spaced ", ""]),
                 st.text(alphabet="abc xyz-_", max_size=8), TEXT)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, int):
        return value
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


@settings(max_examples=budget(30))
@given(fmt=st.sampled_from(["csv", "txt"]),
       header=st.lists(st.sampled_from(["prompt", "seed", "name", "template"]) | st.text(max_size=6),
                       min_size=1, max_size=3, unique=True),
       rows=st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=3))
@example(fmt="csv", header=["prompt", "seed"], rows=[["a\x00b", 5, ""]])
def test_generated_csv_and_text_scenarios_end_as_promised(harness: Harness, fmt: str, header: list[str],
                                                         rows: list[list[Any]]) -> None:
    if fmt == "txt":
        lines = [str(row[0]) for row in rows]
        outcome = harness.run("lines", ".txt", "\n".join(lines).encode("utf-8"))
        prompts = [ln.strip() for ln in "\n".join(lines).split("\n") if ln.strip() and not ln.strip().startswith("#")]
        if outcome.state == "done":
            check_params(outcome, [{"prompt": p} for p in prompts])
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([str(c) for c in row[: len(header)]])
    outcome = harness.run("rows", ".csv", buf.getvalue().encode("utf-8"))
    if outcome.state == "done" and all(isinstance(c, int) or not c or re.fullmatch(r"[abc xyz_\-]+|true|FALSE", str(c).strip() or "x")
                                       for row in rows for c in row):
        columns = [h.strip() for h in header]  # a column with a dot is a set: address, not a param
        wanted = [{h: _csv_cell(c) for h, c in zip(columns, row, strict=False) if h not in ("name", "template") and "." not in h
                   and str(c).strip()}
                  for row in rows if any(str(c).strip() for c in row[: len(header)])]
        check_params(outcome, wanted)


# --------------------------------------------------------------------------------------------------
# 2. server answers


FILE_ENTRY = st.fixed_dictionaries({}, optional={
    "filename": st.one_of(st.just("x.png"), st.text(max_size=12), st.sampled_from(
        ["../../etc/passwd", "/etc/passwd", "a/b.png", "..", ".", "x" * 300, "é" * 200 + ".png", "a\x00b", "job.json",
         ".hotfolder", "con.png"]), st.integers(), st.none(), SURROGATE),
    "subfolder": st.one_of(st.just(""), st.sampled_from(["../", "../../..", "/etc", "a/../../b"]), st.integers(), TEXT),
    "type": st.one_of(st.sampled_from(["output", "temp", "input", "weird", ""]), st.integers(), st.none()),
})
OUTPUT_ITEMS = st.lists(st.one_of(FILE_ENTRY, SCALAR, VALUE), max_size=3)
OUTPUTS = st.one_of(
    st.dictionaries(st.sampled_from(["2", "9", ""]) | TEXT,
                    st.dictionaries(st.sampled_from(["images", "gifs", "audio", "3d", "text", "weird"]) | TEXT,
                                    OUTPUT_ITEMS | VALUE, max_size=3) | VALUE, max_size=2),
    VALUE,
)
ERROR_DATA = st.fixed_dictionaries({}, optional={
    "prompt_id": st.just(PROMPT_ID) | VALUE, "node_id": st.sampled_from(["1", "2", "99"]) | VALUE,
    "node_type": VALUE, "exception_message": VALUE | SURROGATE, "exception_type": VALUE,
    "traceback": VALUE, "current_inputs": VALUE, "executed": VALUE, "timestamp": VALUE,
})
MESSAGES = st.lists(st.one_of(
    st.tuples(st.sampled_from(["execution_error", "execution_interrupted", "execution_start", "execution_cached",
                               "execution_success"]), ERROR_DATA).map(list),
    VALUE), max_size=3)
# mostly ComfyUI's shape with odd parts; sometimes any shape at all
STATUS = st.one_of(
    st.fixed_dictionaries({"status_str": st.sampled_from(["success", "error"]), "completed": st.booleans(),
                           "messages": MESSAGES}),
    st.fixed_dictionaries({"status_str": st.sampled_from(["success", "error"])},
                          optional={"completed": VALUE, "messages": VALUE}),
    st.fixed_dictionaries({}, optional={"status_str": VALUE, "completed": VALUE, "messages": MESSAGES | VALUE}),
    VALUE,
)
HISTORY_ENTRY = st.one_of(
    st.fixed_dictionaries({"outputs": OUTPUTS, "status": STATUS}, optional={"prompt": VALUE, "meta": VALUE}),
    st.fixed_dictionaries({"status": STATUS}, optional={"outputs": OUTPUTS}),
    VALUE,
)


def _fill(value: Any, prompt_id: str) -> Any:
    if value == PROMPT_ID:
        return prompt_id
    if isinstance(value, dict):
        return {k: _fill(v, prompt_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, prompt_id) for v in value]
    return value


def _check_server_blamed(outcome: Outcome, url: str) -> None:
    """A failure caused by a malformed answer names the server (or is ComfyUI's own error message)."""
    if outcome.state == "failed":
        text = json.dumps(outcome.error, ensure_ascii=False)
        assert url in text or "ComfyUI" in text, text[:2000]


@pytest.fixture
def quiet_harness(project: Path, comfy: ComfyTestServer) -> Iterator[Harness]:
    comfy.faults.silence_websockets(True)  # the client learns the end from /history alone
    h = Harness(project, comfy)
    try:
        yield h
    finally:
        h.close()


@pytest.mark.slow
@settings(max_examples=budget(30))
@given(entry=HISTORY_ENTRY)
@example(entry={"status": "done", "outputs": {}})
@example(entry={"status": {"status_str": "weird", "completed": False}})
@example(entry={"outputs": {"2": {"images": [{"filename": "../../x.png", "subfolder": "../..", "type": "output"}]}},
                "status": {"status_str": "success", "completed": True}})
@example(entry={"outputs": {"2": {"images": [{"filename": "\ud800.png", "type": "output"}]}},
                "status": {"status_str": "success", "completed": True}})
@example(entry={"status": {"status_str": "error", "messages": [["execution_error", {"node_id": ["x"], "current_inputs": 5}]]}})
@example(entry={"status": {"status_str": "success", "messages": [["execution_cached", {"nodes": 7}],
                                                                 ["execution_start", {"timestamp": "noon"}]]}})
@example(entry={"status": {"status_str": "success", "messages": [["execution_start", {"timestamp": 10**30}]]}})
def test_generated_history_entries_end_as_promised(quiet_harness: Harness, entry: Any) -> None:
    quiet_harness.comfy.faults.history_entry(entry)
    outcome = quiet_harness.run("hist", ".json", json.dumps({"params": {"prompt": "h"}}).encode())
    _check_server_blamed(outcome, quiet_harness.comfy.url)


WS_FRAME = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["executing", "executed", "progress", "execution_start",
                                                     "execution_cached", "execution_error", "execution_interrupted",
                                                     "status", "mystery"]) | VALUE},
                          optional={"data": st.fixed_dictionaries({}, optional={
                              "prompt_id": st.just(PROMPT_ID) | VALUE, "node": VALUE, "display_node": VALUE,
                              "output": OUTPUTS | VALUE, "value": VALUE, "max": VALUE, "nodes": VALUE,
                              "timestamp": VALUE, "exception_message": VALUE}) | VALUE}),
    VALUE, st.text(max_size=20), st.binary(max_size=20),
)


@settings(max_examples=budget(40))
@given(frames=st.lists(WS_FRAME, min_size=1, max_size=4))
@example(frames=[{"type": "execution_start", "data": {"prompt_id": PROMPT_ID, "timestamp": "noon"}}])
@example(frames=[{"type": "execution_start", "data": {"prompt_id": PROMPT_ID, "timestamp": -10**20}}])
@example(frames=[{"type": "execution_cached", "data": {"prompt_id": PROMPT_ID, "nodes": 5}}])
@example(frames=[{"type": "executed", "data": {"prompt_id": PROMPT_ID, "node": "2",
                                               "output": {"images": [{"filename": "../../up.png"}]}}}])
@example(frames=[{"type": "progress", "data": {"prompt_id": PROMPT_ID, "value": "1e999", "max": [1]}}])
@example(frames=["not json", b"\x00\x01binary", "[1, 2]", '{"type": "x"}'])
def test_generated_websocket_messages_end_as_promised(harness: Harness, frames: list[Any]) -> None:
    harness.comfy.faults.ws_frames(frames)
    outcome = harness.run("ws", ".json", json.dumps({"params": {"prompt": "w"}}).encode())
    _check_server_blamed(outcome, harness.comfy.url)


POST_BODY = st.one_of(
    st.builds(json.dumps, st.fixed_dictionaries({}, optional={
        "error": st.fixed_dictionaries({}, optional={"type": VALUE, "message": VALUE, "details": VALUE}) | VALUE,
        "node_errors": st.dictionaries(st.sampled_from(["1", "2", "77"]) | TEXT, st.fixed_dictionaries({}, optional={
            "errors": st.lists(st.fixed_dictionaries({}, optional={
                "type": VALUE, "message": VALUE, "details": VALUE,
                "extra_info": st.fixed_dictionaries({}, optional={"input_name": VALUE, "received_value": VALUE}) | VALUE,
            }) | VALUE, max_size=2) | VALUE,
            "class_type": VALUE}) | VALUE, max_size=2) | VALUE,
    }) | VALUE),
    st.text(max_size=40), st.just("<html><body>502 Bad Gateway</body></html>"),
)


@pytest.mark.slow
@settings(max_examples=budget(20))
@given(status=st.just(400) | st.just(400) | st.sampled_from([401, 403, 404, 413, 429, 500, 502, 503])
       | st.integers(300, 599),
       body=POST_BODY)
@example(status=400, body='{"node_errors": {"1": {"errors": [5]}}}')
@example(status=400, body='{"error": "bad", "node_errors": []}')
@example(status=200, body="[1]")  # "queued" but not: found lost after lost_grace and sent again
@example(status=400, body='{"node_errors": {"1": {"errors": [{"extra_info": {"input_name": ["w"]}}]}}}')
def test_generated_prompt_answers_end_as_promised(harness: Harness, status: int, body: str) -> None:
    harness.comfy.faults.post_status(status, body=body, content_type="application/json")
    outcome = harness.run("post", ".json", json.dumps({"params": {"prompt": "p"}}).encode())
    _check_server_blamed(outcome, harness.comfy.url)


REAL_INFO = json.loads((Path(__file__).parent.parent / "hotfolder" / "testing" / "object_info_core.json").read_text())


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` (real /object_info data) with some of its parts dropped or replaced by any JSON value."""
    if depth > 4 or not draw(st.integers(0, 3)):
        return draw(VALUE) if draw(st.booleans()) else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if draw(st.integers(0, 7)):
                out[key] = draw(mutated(item, depth + 1))
        return out
    if isinstance(value, list):
        return [draw(mutated(item, depth + 1)) for item in value]
    return draw(VALUE)


# ComfyUI's own answer for the template's two node classes, with parts broken; sometimes any JSON at all
OBJECT_INFO = st.one_of(
    st.builds(dict, st.just({"EmptyImage": REAL_INFO["EmptyImage"], "SaveImage": REAL_INFO["SaveImage"]}))
    .flatmap(lambda real: mutated(real)),
    VALUE,
)


@settings(max_examples=budget(30))
@given(answer=OBJECT_INFO)
def test_generated_object_info_answers_end_as_promised(harness: Harness, answer: Any) -> None:
    harness.comfy.faults.object_info(answer)
    for client in harness.engine.clients:  # the engine keeps /object_info: make it ask again
        harness.engine._router.object_info[client.name].invalidate()
    outcome = harness.run("info", ".json", json.dumps({"params": {"prompt": "i"}}).encode())
    _check_server_blamed(outcome, harness.comfy.url)
