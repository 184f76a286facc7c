"""The test ComfyUI server: an aiohttp app in a background thread, plus its Python control API.

:class:`ComfyTestServer` owns the folders, the fault script (:class:`~hotfolder.testing.faults.Faults`),
the request log and the list of executed prompt ids; these survive ``restart()``. Everything a real
ComfyUI process loses when it is killed (queue, history, cache, sockets, the prompt counter) lives in a
:class:`~hotfolder.testing.runtime.Runtime` that is created by ``start()`` and thrown away by ``stop()``.
What the server answers is decided by its protocol profile (:mod:`~hotfolder.testing.profile`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import shutil
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .catalog import NodeCatalog
from .faults import Faults
from .middleware import RecordedRequest
from .profile import DEFAULT_PROFILE, PROFILES, Profile
from .runtime import Runtime

__all__ = ["COMFYUI_VERSION", "PROFILE_ENV", "ComfyTestServer", "RecordedRequest"]

logger = logging.getLogger(__name__)

#: The environment variable that picks the profile of a server not given one (a whole test run on 0.4x).
PROFILE_ENV = "HOTFOLDER_TESTING_COMFYUI"

#: Reported as ``system.comfyui_version`` by ``GET /system_stats``.
COMFYUI_VERSION = DEFAULT_PROFILE.comfyui_version


def _wipe_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


class ComfyTestServer:
    """A ComfyUI look-alike on a real socket. See the package docstring for a guide.

    ``output_dir=None`` gives the server a private temporary folder (``output/``, ``input/``,
    ``temp/``), removed when the server object is garbage collected. ``input_dir`` and ``temp_dir``
    default to siblings in that private folder as well. The temp folder is wiped at every start.
    ``comfyui`` names the protocol profile played: ``"0.3"`` or ``"0.4x"``; ``None`` takes the
    ``HOTFOLDER_TESTING_COMFYUI`` environment variable, else ``"0.3"``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        input_dir: str | os.PathLike[str] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        comfyui: str | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self._requested_port = port
        self.port = port
        base: Path | None = None
        self._finalizer: weakref.finalize[..., ComfyTestServer] | None = None
        if output_dir is None or input_dir is None or temp_dir is None:
            base = Path(tempfile.mkdtemp(prefix="hotfolder-testing-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(base), ignore_errors=True)
        self.output_dir = self._prepare_dir(output_dir, base, "output")
        self.input_dir = self._prepare_dir(input_dir, base, "input")
        self.temp_dir = self._prepare_dir(temp_dir, base, "temp")
        comfyui = comfyui or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE.name
        if comfyui not in PROFILES:
            raise ValueError(f"unknown ComfyUI profile {comfyui!r} (argument comfyui= or ${PROFILE_ENV}); "
                             f"choose one of: {', '.join(PROFILES)}")
        self._profile = PROFILES[comfyui]
        self.faults = Faults(drop_websockets=self._drop_websockets, changed=self._faults_changed)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._executed: list[str] = []
        self._catalog = NodeCatalog(input_dir=self.input_dir, object_info=self._profile.object_info,
                                    test_pack=self._profile.test_pack,
                                    removed=tuple(r.old_class for r in self._profile.node_replacements))
        self._runtime: Runtime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _prepare_dir(path: str | os.PathLike[str] | None, base: Path | None, name: str) -> Path:
        if path is None:
            assert base is not None
            resolved = base / name
        else:
            resolved = Path(path)
        resolved.mkdir(parents=True, exist_ok=True)
        return resolved.resolve()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running (or last) server (``https://`` with an ``ssl_context``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def start(self) -> ComfyTestServer:
        """Start listening in a background daemon thread; returns once connections are accepted."""
        self._start(self._requested_port)
        return self

    def _start(self, port: int) -> None:
        if self.running:
            raise RuntimeError("the test server is already running")
        _wipe_directory(self.temp_dir)
        ready = threading.Event()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=self._serve, args=(port, ready, result), name="hotfolder-testing", daemon=True)
        thread.start()
        ready.wait()
        if "error" in result:
            thread.join()
            raise result["error"]
        self._thread = thread
        logger.debug("hotfolder.testing listening on %s", self.url)

    def _serve(self, port: int, ready: threading.Event, result: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runtime = Runtime(profile=self._profile, faults=self.faults, catalog=self._catalog, cond=self._cond,
                          dirs={"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir},
                          record=self._record, executed=self._started_executing)
        try:
            loop.run_until_complete(runtime.start(self.host, port, self.ssl_context))
        except BaseException as err:  # noqa: BLE001 - re-raised in the thread that called start()
            result["error"] = err
            loop.close()
            ready.set()
            return
        with self._lock:
            self._runtime = runtime
            self._loop = loop
            self.port = runtime.port
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        """Stop abruptly, like SIGTERM: sockets are dropped without close frames, the port is closed.

        The running prompt and the queue are lost. Does nothing if the server is not running.
        """
        thread, loop, runtime = self._thread, self._loop, self._runtime
        if thread is None or loop is None or runtime is None:
            return
        if thread.is_alive():
            asyncio.run_coroutine_threadsafe(runtime.shutdown(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        with self._lock:
            self._thread = None
            self._loop = None
            self._cond.notify_all()

    def restart(self) -> None:
        """``stop()`` then ``start()`` on the same port: queue, history, cache and temp files are forgotten."""
        port = self.port
        self.stop()
        self._start(port)

    def discard_private_folder(self) -> None:
        """Remove the temp folder the server made for the folders it was not given (at once; otherwise
        when the object is collected or the interpreter exits). For a process about to die abruptly."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> ComfyTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ComfyTestServer {self.url} {state}>"

    @property
    def profile(self) -> Profile:
        """The protocol profile this server plays (:data:`~hotfolder.testing.profile.PROFILES`)."""
        return self._profile

    # -- inspection -------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received so far (a copy), oldest first; kept across restarts."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _started_executing(self, prompt_id: str) -> None:
        with self._lock:
            self._executed.append(prompt_id)

    @property
    def executed_prompt_ids(self) -> list[str]:
        """Prompt ids in the order they started executing (a copy; kept across restarts)."""
        with self._lock:
            return list(self._executed)

    def held_nodes(self) -> list[tuple[str, float]]:
        """(class_type, seconds) of each node now waiting out a scripted delay (``faults.node_delay``),
        with the delay it started under: lowering the delay ends such a wait early, raising it does not
        lengthen it, so a test that must catch a prompt mid-run waits for its node to show up here."""
        with self._lock:
            runtime = self._runtime
            return list(runtime.held) if runtime is not None else []

    def history(self) -> dict[str, Any]:
        """A copy of the history, as ``GET /history`` returns it."""
        with self._lock:
            runtime = self._runtime
            return copy.deepcopy(runtime.prompts.history) if runtime is not None else {}

    def queue(self) -> dict[str, list[list[Any]]]:
        """A copy of the queue, as ``GET /queue`` returns it (pending items in heap order)."""
        with self._lock:
            runtime = self._runtime
            if runtime is None:
                return {"queue_running": [], "queue_pending": []}
            return copy.deepcopy(runtime.prompts.listing())

    def _is_idle(self) -> bool:
        runtime = self._runtime
        if runtime is None or not self.running:
            return True
        return runtime.prompts.is_idle()

    def set_models(self, folder: str, names: list[str]) -> None:
        """Pretend the server has exactly ``names`` in a model folder (``checkpoints``, ``loras``,
        ``vae``): ``/object_info`` and validation change accordingly. The files need not exist: the
        stand-in loaders run any name listed."""
        with self._lock:
            self._catalog.set_models(folder, names)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or running (and delayed history entries are written).

        Returns ``True``; raises ``TimeoutError`` after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(self._is_idle, timeout):
                raise TimeoutError(f"the test server was still busy after {timeout} s: {self.queue()}")
        return True

    # -- hooks for Faults -------------------------------------------------------------------------

    def _call_in_loop(self, action: Callable[[Runtime], None]) -> None:
        """Run ``action(runtime)`` in the server's event loop and wait for it; nothing while stopped."""
        loop, runtime = self._loop, self._runtime
        if loop is None or runtime is None or not self.running:
            return

        async def call() -> None:
            action(runtime)

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def _drop_websockets(self) -> None:
        self._call_in_loop(lambda runtime: runtime.sockets.abort_all())

    def _faults_changed(self) -> None:
        self._call_in_loop(Runtime.configure_dropper)
