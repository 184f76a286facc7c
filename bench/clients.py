"""The two reference clients the bench compares hotfolder with. Neither touches a folder of inputs.

* :func:`run_direct`: the upper bound. One ``requests.Session``, one WebSocket (``clientId``), up to
  ``depth`` prompts in flight (hotfolder's ``queue_depth``). A prompt is finished at ``executing`` with
  ``node: null``; its outputs come from the ``executed`` messages; each is fetched through ``/view``
  and dropped. The next prompt is POSTed before the finished one's outputs are fetched.
* :func:`run_sequential`: the seed's loop. POST, wait for ``executing`` ``node: null``,
  ``GET /history/{id}``, fetch every output through ``/view`` into a file, then the next prompt.

Both return ``(seconds, jobs)`` measured from the first POST to the last byte downloaded.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket


class _Socket:
    """One ComfyUI WebSocket; a reader thread turns messages into per-prompt outputs and end events."""

    def __init__(self, base_url: str, client_id: str) -> None:
        parts = urlsplit(base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws = websocket.create_connection(f"{scheme}://{parts.netloc}/ws?clientId={client_id}", timeout=30)
        self.ended: queue.Queue[str] = queue.Queue()
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="bench-ws", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                opcode, data = self.ws.recv_data()
            except Exception:  # noqa: BLE001 - closed
                return
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            kind, body = msg.get("type"), msg.get("data") or {}
            pid = body.get("prompt_id") if isinstance(body, dict) else None
            if pid is None:
                continue
            if kind == "executed":
                for items in (body.get("output") or {}).values():
                    if isinstance(items, list):
                        with self._lock:
                            self.outputs.setdefault(pid, []).extend(
                                i for i in items if isinstance(i, dict) and i.get("filename"))
            elif kind == "executing" and body.get("node") is None:
                self.ended.put(pid)
            elif kind in {"execution_error", "execution_interrupted"}:
                self.ended.put(pid)

    def take_outputs(self, prompt_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return self.outputs.pop(prompt_id, [])

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001
            pass
        self._thread.join(2)


def _post(session: requests.Session, base_url: str, workflow: dict[str, Any], client_id: str) -> str:
    resp = session.post(f"{base_url}/prompt", json={"prompt": workflow, "client_id": client_id}, timeout=30)
    resp.raise_for_status()
    return str(resp.json()["prompt_id"])


def _view(session: requests.Session, base_url: str, item: dict[str, Any], dest: Path | None) -> int:
    params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
    size = 0
    with session.get(f"{base_url}/view", params=params, stream=True, timeout=30) as resp:
        resp.raise_for_status()
        if dest is None:
            for chunk in resp.iter_content(1 << 20):
                size += len(chunk)
        else:
            with open(dest, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
                    size += len(chunk)
    return size


def run_direct(base_url: str, workflows: Iterable[dict[str, Any]], *, depth: int = 2,
               timeout: float = 600.0) -> tuple[float, int]:
    """Up to ``depth`` prompts in flight; returns (seconds, jobs finished)."""
    base_url = base_url.rstrip("/")
    client_id = uuid.uuid4().hex
    todo = list(workflows)
    session = requests.Session()
    sock = _Socket(base_url, client_id)
    try:
        inflight: set[str] = set()
        done = 0
        started = time.time()
        deadline = time.monotonic() + timeout
        i = 0
        while done < len(todo):
            while i < len(todo) and len(inflight) < depth:
                inflight.add(_post(session, base_url, todo[i], client_id))
                i += 1
            pid = sock.ended.get(timeout=max(0.1, deadline - time.monotonic()))
            if pid not in inflight:
                continue
            inflight.discard(pid)
            if i < len(todo):  # keep the server busy before fetching this one's outputs
                inflight.add(_post(session, base_url, todo[i], client_id))
                i += 1
            for item in sock.take_outputs(pid):
                _view(session, base_url, item, None)
            done += 1
        return time.time() - started, done
    finally:
        sock.close()
        session.close()


def run_sequential(base_url: str, workflows: Iterable[dict[str, Any]], dest_dir: Path, *,
                   timeout: float = 600.0) -> tuple[float, int]:
    """The seed's pattern: submit, wait, read history, download into ``dest_dir``, next."""
    base_url = base_url.rstrip("/")
    client_id = uuid.uuid4().hex
    todo = list(workflows)
    session = requests.Session()
    sock = _Socket(base_url, client_id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = 0
        started = time.time()
        deadline = time.monotonic() + timeout
        for n, workflow in enumerate(todo):
            pid = _post(session, base_url, workflow, client_id)
            while sock.ended.get(timeout=max(0.1, deadline - time.monotonic())) != pid:
                pass
            sock.take_outputs(pid)
            entry = session.get(f"{base_url}/history/{pid}", timeout=30).json().get(pid) or {}
            k = 0
            for ui in (entry.get("outputs") or {}).values():
                for items in ui.values():
                    for item in items if isinstance(items, list) else []:
                        if isinstance(item, dict) and item.get("filename"):
                            k += 1
                            _view(session, base_url, item, dest_dir / f"{n:05d}-{k}-{Path(item['filename']).name}")
            done += 1
        return time.time() - started, done
    finally:
        sock.close()
        session.close()
