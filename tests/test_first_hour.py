"""A new user's first hour: the README's "Five minutes" walkthrough, run as written, with real processes.

The walkthrough is read from README.md itself, so the README cannot drift from what works: every line of
its block is either run here or is a line this test knows (a comment's expected ``ls`` output is
compared with the folder). Also: the stand-in server explains a missing aiohttp in one line, lists only
models it can execute (and runs the shipped txt2img template with its defaults), and ``hotfolder run``
says when a server does not answer, once per change.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotfolder.comfy.reach import Reachability
from hotfolder.errors import ServerError, ServerUnavailable
from hotfolder.spec import JobSpec
from hotfolder.templates import load, render
from hotfolder.testing import ComfyTestServer, png
from tests.conftest import EXAMPLES, ROOT, invoke_cli, wait_until

pytestmark = pytest.mark.timeout(90)


def five_minute_block() -> list[str]:
    """The command lines of the README's "Five minutes" block (a line per command, comments kept)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Five minutes", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Output:
    """The merged stdout/stderr lines of a child process, read by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def having(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)
        return "\n".join(self.lines)


def spawn(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Output:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}, **(env or {})}
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return Output(proc)


# --------------------------------------------------------------------------------------------------
# (a) the walkthrough


def test_the_five_minute_walkthrough_works_as_written(tmp_path: Path) -> None:
    lines = five_minute_block()
    project: Path | None = None
    server: Output | None = None
    daemon: Output | None = None
    try:
        for line in lines:
            command, _, comment = line.partition("#")
            command, comment = command.strip(), comment.strip()
            words = shlex.split(command) if command else []
            if command.startswith("python3 -m venv"):
                # the install must bring what the stand-in server needs (aiohttp is in the testing extra)
                assert "pip install -e '.[testing]'" in command, line
            elif command.startswith("hotfolder init"):
                name = words[2]
                result = invoke_cli("init", name, cwd=tmp_path)
                assert result.returncode == 0, result.stderr
                assert "&& cd " + name in command
                project = tmp_path / name
                made = sorted(p.name for p in project.iterdir())
                assert made == sorted(w.rstrip("/") for w in comment.split()), (made, comment)
            elif command.startswith("python -m hotfolder.testing"):
                assert project is not None and words[-1] == "&" and words[3:5] == ["--port", "8188"]
                server = spawn("-m", "hotfolder.testing", "--port", "0", cwd=project)
                listening = wait_until(lambda: server.having("listening on"), message="the stand-in listening")
                url = listening[0].rsplit(" ", 1)[1]
                # the config init wrote points at 8188; this test's stand-in listens on a free port
                config = project / "hotfolder.toml"
                assert "http://127.0.0.1:8188" in config.read_text()
                config.write_text(config.read_text().replace("http://127.0.0.1:8188", url))
            elif command == "hotfolder check":
                assert project is not None
                result = invoke_cli("check", cwd=project)
                assert result.returncode == 0, result.stdout + result.stderr
                assert "FAIL" not in result.stdout and "Traceback" not in result.stderr, result.stdout
            elif command == "hotfolder run &":
                assert project is not None
                daemon = spawn("-m", "hotfolder", "run", cwd=project)
            elif command.startswith("printf "):
                assert project is not None
                match = re.fullmatch(r"printf '([^']*)' > (\S+)", command)
                assert match, line
                (project / match[2]).write_bytes(match[1].encode().decode("unicode_escape").encode())
            elif command.startswith("ls "):
                assert project is not None
                folder, expected = project / words[1], sorted(comment.split())
                wait_until(lambda: folder.is_dir() and sorted(os.listdir(folder)) == expected, timeout=30,
                           message=f"{words[1]} holding {expected}")
            elif command.startswith("sleep "):
                continue  # the waits above stand in for it
            elif command.startswith("kill "):
                assert daemon is not None and server is not None
                log = daemon.stop()
                assert daemon.proc.returncode == 0, log
                server.stop()
            else:
                raise AssertionError(f"the test does not know this README line: {line!r}")
        assert project is not None and daemon is not None
        sidecar = json.loads((project / "outbox" / "red-fox" / "red-fox.json").read_text())
        assert sidecar["name"] == "red-fox" and sidecar["params"]["color"] == 0xFF4400
        assert "Traceback" not in "\n".join(daemon.lines)
    finally:
        for proc in (daemon, server):
            if proc is not None:
                proc.stop()


def test_the_stand_in_without_aiohttp_says_how_to_install_it(tmp_path: Path) -> None:
    code = ("import runpy, sys; sys.modules['aiohttp'] = None; sys.argv = ['hotfolder.testing', '--port', '0']; "
            "runpy.run_module('hotfolder.testing', run_name='__main__', alter_sys=True)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, text=True, capture_output=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "aiohttp" in result.stderr and "pip install 'hotfolder[testing]'" in result.stderr


# --------------------------------------------------------------------------------------------------
# (b) run says when a server does not answer, and when it is back


class Refuser:
    """A port that takes connections and closes them at once, counting them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.attempts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.close()
            self.attempts += 1

    def __enter__(self) -> Refuser:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_run_says_once_per_change_when_a_server_stops_or_starts_answering(tmp_path: Path) -> None:
    assert invoke_cli("init", "p", cwd=tmp_path).returncode == 0
    project = tmp_path / "p"
    port = free_port()
    url = f"http://user:s3cret@127.0.0.1:{port}"
    # a stopping server may take connections it never answers: a short connect_timeout keeps the test short
    daemon = spawn("-m", "hotfolder", "--server", url, "run", cwd=project, env={"HOTFOLDER_CONNECT_TIMEOUT": "1"})
    server = ComfyTestServer(port=port)
    try:
        down = wait_until(lambda: daemon.having("is not answering"), message="the not-answering line")
        assert f"ComfyUI at http://127.0.0.1:{port}" in down[0] and "connection refused" in down[0], down
        assert "servers" in down[0]  # what to do: which setting names the server
        with Refuser(port) as refuser:  # proof that the daemon retried while the server was away
            wait_until(lambda: refuser.attempts >= 2, message="two more connection attempts")
        server.start()
        wait_until(lambda: daemon.having("is back"), message="the back line")
        server.stop()
        wait_until(lambda: len(daemon.having("is not answering")) == 2, message="the second not-answering line")
    finally:
        log = daemon.stop()
        server.stop()
    assert daemon.proc.returncode == 0, log
    # one line per change, not one per retry; the password in the URL never printed
    assert len(daemon.having("is not answering")) == 2 and len(daemon.having("is back")) == 1, log
    assert "s3cret" not in log and "Traceback" not in log


# --------------------------------------------------------------------------------------------------
# (c) the stand-in lists only models it can execute

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx", ".yaml")


def choices(spec: list[Any]) -> list[Any] | None:
    if spec and isinstance(spec[0], list):
        return spec[0]
    if len(spec) > 1 and isinstance(spec[1], dict) and isinstance(spec[1].get("options"), list):
        return spec[1]["options"]
    return None


def model_inputs(info: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(class, input, listed value) for every model file a node offers: a choice that names a model
    file, or any choice of a ``*Loader``'s ``*_name`` input."""
    found = []
    for class_type, entry in info.items():
        for section in ("required", "optional"):
            for name, spec in ((entry.get("input") or {}).get(section) or {}).items():
                options = choices(spec) or []
                loader = "Loader" in class_type and name.endswith("_name")
                if loader or any(str(o).endswith(MODEL_EXTENSIONS) for o in options):
                    found += [(class_type, name, option) for option in options]
    return found


def run_prompt(server: ComfyTestServer, workflow: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(server.url + "/prompt", json={"prompt": workflow}, timeout=10)
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]

    def entry() -> Any:
        return requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json().get(prompt_id)

    return wait_until(entry, timeout=30, message="the prompt's history")  # type: ignore[return-value]


def defaults(entry: dict[str, Any], skip: str) -> dict[str, Any]:
    """The required inputs of a node with their defaults (first choice for a list), except ``skip``."""
    out = {}
    for name, spec in (entry["input"].get("required") or {}).items():
        if name == skip:
            continue
        options = choices(spec)
        out[name] = options[0] if options else spec[1].get("default")
    return out


def test_the_stand_in_lists_only_models_it_can_execute(comfy: ComfyTestServer) -> None:
    info = requests.get(comfy.url + "/object_info", timeout=10).json()
    offered = model_inputs(info)
    assert ("CheckpointLoaderSimple", "ckpt_name", "v1-5-pruned-emaonly.safetensors") in offered
    for class_type, name, value in offered:
        workflow = {
            "1": {"class_type": class_type, "inputs": {**defaults(info[class_type], name), name: value}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }
        entry = run_prompt(comfy, workflow)
        assert entry["status"]["status_str"] == "success", (class_type, name, value, entry["status"])


def test_the_stand_in_runs_the_shipped_txt2img_template_with_its_defaults(comfy: ComfyTestServer) -> None:
    template = load.load_template(EXAMPLES, "txt2img")
    images = []
    for seed in (1, 2):
        spec = JobSpec(index=1, name="fox", source=Path("fox.yaml"), template="txt2img",
                       params={"prompt": "a red fox", "seed": seed, "width": 64, "height": 48, "steps": 3})
        workflow, _ = render.render_workflow(template, spec)
        entry = run_prompt(comfy, workflow)
        assert entry["status"]["status_str"] == "success", entry["status"]
        (saved,) = entry["outputs"]["9"]["images"]
        decoded = png.decode_png((comfy.output_dir / saved["subfolder"] / saved["filename"]).read_bytes())
        assert (decoded.width, decoded.height) == (64, 48)
        images.append(decoded.pixels)
    assert images[0] != images[1]  # the seed changes the picture


# --------------------------------------------------------------------------------------------------
# the not-answering line, for any failure: one line, the cause named, nothing the server sent quoted

class BadHandshake(Exception):
    """Like websocket-client's WebSocketBadStatusException: a status code, and the answer in its text."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(text)
        self.status_code = status_code


def failures(secret: str, code: int) -> list[BaseException]:
    """The ways a call can fail, each carrying ``secret`` in its text the way a server's answer could."""
    body = f"Authorization: Bearer {secret}\n<html>{secret}</html>"
    unavailable = ServerUnavailable(f"ComfyUI is not reachable: {body}")
    unavailable.__cause__ = ConnectionRefusedError(111, "Connection refused")
    timed_out = ServerUnavailable(f"no answer {body}")
    timed_out.__cause__ = TimeoutError(f"timed out {secret}")
    tls = ssl.SSLCertVerificationError(1, f"certificate verify failed {secret}")
    tls.verify_message = "self-signed certificate"
    return [
        unavailable, timed_out, tls, socket.gaierror(-2, "Name or service not known"),
        OSError(113, "No route to host"), BadHandshake(code, f"Handshake status {code} -+-+- {body}"),
        ServerError(f"ComfyUI at http://h:1 answered GET /system_stats with HTTP {code}: {body!r}."),
    ]


@settings(max_examples=40)
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30),
       code=st.integers(100, 599))
@example(text="t0ken-s3cret", code=401)
def test_the_not_answering_line_names_the_cause_and_quotes_nothing_the_server_sent(text: str, code: int) -> None:
    secret = f"SECRET{text}"  # a prefix no line holds, so a match is a leak
    for err in failures(secret, code):
        reach = Reachability(f"https://me:{quote(secret)}@gpu1.example:8188?token={quote(secret)}#{quote(secret)}")
        with _captured() as lines:
            reach.down(err)
            reach.down(err)  # a retry failing the same way: no second line
            reach.up()
        assert len(lines) == 2 and "\n" not in lines[0], lines
        assert "ComfyUI at https://gpu1.example:8188?token=***#*** is not answering: " in lines[0]
        assert secret not in lines[0] and quote(secret) not in lines[0] and "Bearer" not in lines[0], (type(err), lines[0])
        assert lines[1].startswith("ComfyUI at https://gpu1.example:8188?token=***#*** is back"), lines


class _captured:
    """The messages logged by hotfolder.comfy.reach inside the block."""

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.lines.append(record.getMessage())  # type: ignore[method-assign]
        self.logger = logging.getLogger("hotfolder.comfy.reach")
        self.logger.addHandler(self.handler)
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
