"""Shared fixtures: a real test ComfyUI server on loopback and a hermetic hotfolder project in tmp_path."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase

from hotfolder.cli import cli
from hotfolder.config import Settings, load_settings
from hotfolder.testing import ComfyTestServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "hotfolder" / "examples"

# Generated tests (Hypothesis). Examples that once failed are kept in tests/hypothesis-db/ (committed) and
# replayed first on every run; CI only reads it, and a failure there prints the blob that replays it
# (@reproduce_failure). Locally ("dev", the default) new cases are drawn each run and failures are saved
# into the database: commit them with the fix, and add an @example for each one worth naming.
# HOTFOLDER_HYPOTHESIS_EXAMPLES raises the budget for a longer hunt (the autouse fixture below clears
# HOTFOLDER_* variables only for the tests themselves, after this is read).
_HYPOTHESIS_DB = DirectoryBasedExampleDatabase(str(ROOT / "tests" / "hypothesis-db"))
_BUDGET = int(os.environ.get("HOTFOLDER_HYPOTHESIS_EXAMPLES", "0") or 0)
settings.register_profile(
    "dev", database=_HYPOTHESIS_DB, deadline=None, max_examples=_BUDGET or 100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile(
    "ci", database=ReadOnlyDatabase(_HYPOTHESIS_DB), deadline=None, max_examples=_BUDGET or 100,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HOTFOLDER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOTFOLDER_LOAD_PLUGINS", "")


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """Undo a test's logging setup (configure_logging, the CLI run in-process), so none leaks into the next."""
    with _logging_restored():
        yield


# The test ComfyUI's protocol profiles (docs/comfy-protocol/PROFILES.md). A test that uses `comfy` (or
# `comfyui_profile` for a server of its own) and is marked `both_profiles` (a module's pytestmark or one
# test's mark: the end-to-end cases) runs once on each, with ids [0.3] and [0.4x]; any other runs on
# DEFAULT_PROFILE only: $HOTFOLDER_TESTING_COMFYUI (read here, before _hermetic_env clears it) or "0.3".
# HOTFOLDER_TEST_PROFILES=all runs every such test on both (a long run, to find what 0.4x breaks).
PROFILES = ("0.3", "0.4x")
DEFAULT_PROFILE = os.environ.get("HOTFOLDER_TESTING_COMFYUI") or PROFILES[0]
_ALL_ON_BOTH = os.environ.get("HOTFOLDER_TEST_PROFILES") == "all"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "comfyui_profile" in metafunc.fixturenames and (
            _ALL_ON_BOTH or metafunc.definition.get_closest_marker("both_profiles") is not None):
        metafunc.parametrize("comfyui_profile", PROFILES, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (stable order otherwise): under ``-n 4`` they start while the quick ones fill the
    other workers, instead of one of them running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def comfyui_profile(request: pytest.FixtureRequest) -> str:
    """The protocol profile the test's ComfyTestServer plays ("0.3" or "0.4x")."""
    return str(getattr(request, "param", DEFAULT_PROFILE))


@pytest.fixture
def comfy(comfyui_profile: str) -> Iterator[ComfyTestServer]:
    server = ComfyTestServer(comfyui=comfyui_profile)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with inbox/, outbox/, templates/ (the shipped examples) and test templates."""
    for sub in ("inbox", "outbox", "templates", "plugins"):
        (tmp_path / sub).mkdir()
    for path in EXAMPLES.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / "templates" / path.name)
    return tmp_path


def make_settings(project: Path, server_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "inbox": project / "inbox", "outbox": project / "outbox", "templates": project / "templates",
        "servers": [server_url], "default_template": "invert", "settle_seconds": 0.1,
        "poll_interval": 0.5, "lost_grace": 2.0, "history_grace": 5.0, "http_timeout": 5.0,
        "job_timeout": 60.0,
    }
    values.update(overrides)
    return load_settings(None, env={}, overrides=values, cwd=project)


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        event.wait(0.05)


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "hotfolder", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)


def invoke_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``hotfolder ARGS`` in this process with click's CliRunner, as :func:`run_cli` runs it in a new one.

    For commands that need no process of their own (not ``run``: it installs signal handlers). The
    environment is run_cli's (no HOTFOLDER_* variable but those in ``env``); the logging setup the command
    makes is undone afterwards; an exception the command does not turn into an exit status is raised here
    (a real process would print its traceback); a thread the command leaves running (but the
    test ComfyUI's) fails the test.
    """
    cleared: dict[str, str | None] = {key: None for key in os.environ if key.startswith("HOTFOLDER_")}
    cleared.update(env or {})
    threads = set(threading.enumerate())
    with _logging_restored(), contextlib.chdir(cwd):
        result = CliRunner().invoke(cli, list(args), prog_name="hotfolder", env=cleared, catch_exceptions=False)
    # asyncio_N: the test ComfyUI's executor threads (they live as long as the server fixture)
    left = lambda: [t.name for t in threading.enumerate() if t not in threads and not t.name.startswith("asyncio_")]  # noqa: E731
    try:
        wait_until(lambda: not left(), timeout=5)
    except AssertionError:
        raise AssertionError(f"'hotfolder {' '.join(args)}' left threads running: {left()}") from None
    return subprocess.CompletedProcess(["hotfolder", *args], result.exit_code, result.stdout, result.stderr)


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """Undo what hotfolder.log.configure_logging changes (handlers, levels, logging's switches)."""
    names = ("hotfolder", "urllib3", "websocket")
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in map(logging.getLogger, names)]
    switches = logging.logProcesses, logging.logMultiprocessing
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
        logging.logProcesses, logging.logMultiprocessing = switches


def four_frames(width: int = 33) -> dict[str, Any]:
    """API nodes making four ``width``x20 frames (blue, orange, blue, orange) as node "1", for the video
    tests (H.264 needs an even width: ComfyUI's SaveVideo fails on odd sizes)."""
    def empty(color: int) -> dict[str, Any]:
        return {"class_type": "EmptyImage", "inputs": {"width": width, "height": 20, "batch_size": 1, "color": color}}

    return {
        "10": empty(0x3366CC),
        "11": empty(0xCC9933),
        "12": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "1": {"class_type": "ImageBatch", "inputs": {"image1": ["12", 0], "image2": ["12", 0]}},
    }
