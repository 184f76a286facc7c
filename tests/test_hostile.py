"""Bad and hostile inputs against one running daemon: each ends as promised, the daemon stays up, and
nothing is written outside outbox/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.paths import safe_filename
from hotfolder.stages.download import OutputRef, download_outputs
from hotfolder.testing import ComfyTestServer
from tests.conftest import wait_until
from tests.scenarios import BAD_INPUTS, TEMPLATES
from tests.test_daemon import settled, start_daemon, stop

pytestmark = pytest.mark.timeout(240)

JINJA_ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}"

# name -> (content, "done" | "failed")
HOSTILE: dict[str, tuple[str | bytes, str]] = {
    "my scene with spaces.yaml": ("params: {width: 8}\n", "done"),
    "ünïcødé 🦊.yaml": ("params: {width: 9}\n", "done"),
    "ctrl\x01\x7fname.yaml": ("params: {width: 10}\n", "done"),
    "dotdot-name.yaml": ("name: ../../../escaped\nparams: {width: 11}\n", "done"),
    "abs-name.yaml": ("name: /etc/cron.d/evil\nparams: {width: 12}\n", "done"),
    "jinja-in-prompt.yaml": (f"template: echo\nparams:\n  prompt: {json.dumps(JINJA_ESCAPE)}\n", "done"),
    "prefix-escape.yaml": ('set:\n  "Save Image.filename_prefix": "../../../../tmp/escape"\n', "failed"),
    "garbage.yaml": (os.urandom(4096), "failed"),
    "nul-bytes.json": (b'{"params": {"width": 8}}\x00\x00', "failed"),
    "utf16.json": ('{"params": {}}'.encode("utf-16"), "failed"),
    "not-a-mapping.yaml": ("- just\n- a list\n", "failed"),
    "huge-repeat.yaml": ("repeat: 100000000\n", "failed"),
    "deep.json": ("[" * 5000 + "]" * 5000, "failed"),
    "yaml-bomb.yaml": ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                       'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
                       'params: {bomb: [*d,*d,*d,*d,*d,*d,*d,*d,*d]}\n', "failed"),
    "python-tag.yaml": ("params: !!python/object/apply:os.system ['echo pwned']\n", "failed"),
    "template-escape.yaml": ("template: ../../etc/passwd\n", "failed"),
    "wrong-type.yaml": ("params: 5\n", "failed"),
    "negative-repeat.toml": ("repeat = -1\n", "failed"),
    "inputs-escape.yaml": ('inputs:\n  "LoadImage.image": ../../etc/passwd\n', "failed"),
}

BIG = "big.yaml"  # 200 MB, refused unread


def test_at_least_30_bad_and_hostile_inputs_end_as_promised(project: Path, comfy: ComfyTestServer, tmp_path: Path) -> None:
    (project / "templates" / "echo.json").write_text(json.dumps({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
              "_meta": {"title": "{{ prompt }}"}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "echo", "images": ["1", 0]}},
    }))
    for name, data in TEMPLATES.items():
        (project / "templates" / name).write_text(json.dumps(data))
    proc = start_daemon(project, comfy.url)
    names: list[str] = []
    try:
        for name, (content, _) in {**{k: (v[0], "failed") for k, v in BAD_INPUTS.items()}, **HOSTILE}.items():
            tmp = project / "inbox" / f".{len(names)}.tmp"
            tmp.write_bytes(content if isinstance(content, bytes) else content.encode())
            tmp.rename(project / "inbox" / name)
            names.append(name)
        with open(project / "inbox" / ".big.tmp", "wb") as fh:
            fh.truncate(200 * 1024 * 1024)
        (project / "inbox" / ".big.tmp").rename(project / "inbox" / BIG)
        names.append(BIG)
        (project / "inbox" / "passwd.yaml").symlink_to("/etc/passwd")
        assert len(names) + 1 >= 30
        archived = [safe_filename(name, portable=False) for name in names]
        wait_until(lambda: settled(project, archived), timeout=150, message="every hostile input archived")
        assert proc.poll() is None, "the daemon died"
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    expected = {**{k: "failed" for k in BAD_INPUTS}, **{k: v[1] for k, v in HOSTILE.items()}, BIG: "failed"}
    for name, outcome in expected.items():
        safe = safe_filename(name, portable=False)  # control characters in a name become '_'
        assert (project / "inbox" / outcome / safe).exists(), f"{name!r} not in {outcome}/\n{log[-4000:]}"
        if outcome == "failed":
            error = json.loads((project / "inbox" / "failed" / f"{safe}.error.json").read_text())
            assert error["message"] and error["file"] == safe and error["original_name"] == name
    assert (project / "inbox" / "passwd.yaml").is_symlink(), "the symlink was touched"
    assert "root:" not in json.dumps([p.name for p in (project / "outbox").iterdir()])
    # nothing outside outbox/: every published folder is a direct child with a safe name
    for folder in (project / "outbox").iterdir():
        assert folder.parent == project / "outbox" and not folder.name.startswith(".") or folder.name == ".hotfolder-staging"
        assert "/" not in folder.name and "\x01" not in folder.name
    assert not (project / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    assert not Path("/tmp/escape_00001_.png").exists()
    big = json.loads((project / "inbox" / "failed" / f"{BIG}.error.json").read_text())
    assert "over the limit" in big["message"]
    jinja = json.loads((project / "outbox" / "jinja-in-prompt" / "jinja-in-prompt.json").read_text())
    assert jinja["workflow"]["1"]["_meta"]["title"] == JINJA_ESCAPE  # data, never evaluated


def test_a_server_output_entry_with_a_path_escape_cannot_write_outside_staging(comfy: ComfyTestServer, tmp_path: Path) -> None:
    # A hostile server that really serves escaping names (ComfyUI itself would answer 400/403): only
    # hotfolder's own naming keeps every file inside the job's staging folder.
    staging = tmp_path / "outbox" / ".hotfolder-staging" / "job"
    comfy.faults.view_body(b"hostile bytes", count=None)
    refs = [
        OutputRef("9", "images", "x.png", "../../", "output"),
        OutputRef("9", "images", "./../../../escaped.png", "", "output"),
        OutputRef("9", "images", "../../../etc/passwd", "", "output"),
    ]
    http = ComfyHTTP(comfy.url)
    try:
        entries = download_outputs(http, refs, staging)
    finally:
        http.close()
    assert [r.query["filename"] for r in comfy.requests if r.path == "/view"] == [ref.filename for ref in refs]
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(staging / entry["file"] for entry in entries) and len(written) == len(refs)
    assert all(path.read_bytes() == b"hostile bytes" for path in written)
