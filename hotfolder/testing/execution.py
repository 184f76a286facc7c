"""Prompt execution: ordering, caching, progress and the WebSocket messages of one prompt.

This follows ComfyUI 0.3.64's ``PromptExecutor`` closely enough that the message stream matches the
captures message for message:

* ``execution_start``, ``execution_cached``, then per node ``progress_state`` (running) before
  ``executing``, ``executed`` for nodes with UI output, ``progress_state`` (finished), and finally
  ``execution_success`` / ``execution_error`` / ``execution_interrupted``.
* Node order is ComfyUI's topological sort with its "UX friendly" pick: a ready output node first, then
  a node that directly unblocks an output, then one two steps away, else the first ready node.
* The cache is ComfyUI's default *classic* cache. A node's key is its class, its literal inputs and the
  keys of the nodes it links to (plus its id for nodes with a hidden ``UNIQUE_ID`` input, plus the file
  hash for LoadImage). At the start of each prompt every entry whose key is not used by the new prompt
  is dropped, so only results of the previous prompt can be reused.
* Per-prompt messages go to the prompt's client only; ``progress`` and ``progress_state`` are
  broadcast when the prompt has no ``client_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .catalog import IMAGE_FILE_NODES, NodeCatalog, expand_dynamic_inputs
from .folders import file_fingerprint, resolve_annotated_file
from .nodes import EXECUTABLE_NODES
from .values import NodeResult

__all__ = [
    "BINARY_PREVIEW_IMAGE",
    "BINARY_PREVIEW_IMAGE_WITH_METADATA",
    "ExecutionHost",
    "ExecutionOutcome",
    "InterruptProcessingException",
    "OutputCache",
    "PromptExecutor",
]

BINARY_PREVIEW_IMAGE = 1
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4
_PNG_FORMAT = 2


class InterruptProcessingException(Exception):
    """Raised inside a node when an interrupt was requested (ComfyUI's exception of the same name)."""


class InjectedNodeFailure(Exception):
    """A failure scripted with ``faults.fail_node``; reported with the exception type the test chose."""

    def __init__(self, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


class ExecutionHost(Protocol):
    """The server side the executor talks to."""

    output_dir: Path
    input_dir: Path
    temp_dir: Path
    last_node_id: str | None

    def emit(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """Queue a JSON message for ``sid`` (``None``: every socket)."""

    def emit_binary(self, event_type: int, payload: bytes, sid: str | None) -> None:
        """Queue a binary frame (``event_type`` is prepended as a big-endian u32)."""

    def supports_preview_metadata(self, sid: str | None) -> bool:
        """Whether the socket of ``sid`` announced ``supports_preview_metadata``."""

    def interrupt_requested(self) -> bool:
        """Whether ``POST /interrupt`` hit the running prompt."""

    async def wait_for_interrupt(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; ``True`` as soon as an interrupt is requested."""

    def node_delay(self, class_type: str) -> float:
        """Extra seconds every execution of ``class_type`` takes (fault injection)."""

    def holding(self, class_type: str, seconds: float) -> contextlib.AbstractContextManager[None]:
        """Marks a node of ``class_type`` waiting out a scripted delay of ``seconds`` while the block runs."""

    def prompt_time(self) -> float:
        """Seconds every prompt lasts at least, its nodes' work included (fault injection)."""

    def take_node_failure(self, class_type: str) -> tuple[str, str] | None:
        """``(message, exception_type)`` if this execution of ``class_type`` must fail (fault injection)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


def _full_type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _format_value(value: Any) -> Any:
    """How ComfyUI 0.3.64 shows an input in ``current_inputs``: plain scalars as is, the rest as ``str()``."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached node result: its outputs and the UI record (``{"meta", "output"}``) if it had one."""

    ui: dict[str, Any] | None
    outputs: tuple[Any, ...]


class OutputCache:
    """ComfyUI's classic output cache, keyed by input signature."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._keys: dict[str, str] = {}

    def set_prompt(self, keys: dict[str, str]) -> None:
        """Switch to a new prompt and drop every entry the new prompt cannot use."""
        self._keys = keys
        used = set(keys.values())
        for key in [k for k in self._entries if k not in used]:
            del self._entries[key]

    def get(self, node_id: str) -> CacheEntry | None:
        key = self._keys.get(node_id)
        return None if key is None else self._entries.get(key)

    def set(self, node_id: str, entry: CacheEntry) -> None:
        key = self._keys.get(node_id)
        if key is not None:
            self._entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)


def compute_cache_keys(prompt: dict[str, Any], catalog: NodeCatalog, dirs: dict[str, Path]) -> dict[str, str]:
    """Input signature of every node in ``prompt`` (a hex digest per node id)."""
    keys: dict[str, str] = {}

    def key_of(node_id: Any, visiting: frozenset[Any]) -> str:
        if isinstance(node_id, str) and node_id in keys:
            return keys[node_id]
        try:
            node = prompt[node_id]
            if node_id in visiting:
                raise ValueError("cycle")
            class_type = node["class_type"]
            info = catalog.get(class_type) or {}
            inputs = node.get("inputs") or {}
            parts: list[Any] = [class_type]
            if class_type in IMAGE_FILE_NODES:
                default = "output" if class_type == "LoadImageOutput" else "input"
                image = inputs.get("image")
                fingerprint = (
                    file_fingerprint(resolve_annotated_file(image, dirs, default)) if isinstance(image, str) else None
                )
                parts.append(fingerprint or uuid.uuid4().hex)  # unreadable file: never cached
            hidden = (info.get("input") or {}).get("hidden") or {}
            if any(v in ("UNIQUE_ID", ["UNIQUE_ID"]) for v in hidden.values()):
                parts.append(["UNIQUE_ID", node_id])
            for name in sorted(inputs):
                value = inputs[name]
                if _is_link(value):
                    parts.append([name, "ANCESTOR", key_of(value[0], visiting | {node_id}), value[1]])
                else:
                    parts.append([name, value])
            digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()
        except (KeyError, TypeError, ValueError, AttributeError):
            digest = uuid.uuid4().hex  # a node that cannot be keyed is never served from the cache
        if isinstance(node_id, str):
            keys[node_id] = digest
        return digest

    for node_id in prompt:
        key_of(node_id, frozenset())
    return keys


class _ProgressRegistry:
    """Per-prompt node states, sent as ``progress_state`` (ComfyUI's ProgressRegistry + WebUI handler)."""

    def __init__(self, host: ExecutionHost, prompt_id: str, client_id: str | None) -> None:
        self.host = host
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _send(self) -> None:
        active = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in self.nodes.items()
            if entry["state"] != "pending"
        }
        self.host.emit("progress_state", {"prompt_id": self.prompt_id, "nodes": active}, self.client_id)

    def start(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=0.0, max=1.0)
        self._send()

    def update(self, node_id: str, value: float, total: float, preview_png: bytes | None) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=value, max=total)
        self._send()
        if preview_png is not None and self.host.supports_preview_metadata(self.client_id):
            metadata = {
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
                "image_type": "image/png",
            }
            blob = json.dumps(metadata).encode("utf-8")
            self.host.emit_binary(
                BINARY_PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(blob)) + blob + preview_png, self.client_id
            )

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry["state"] = "finished"
        entry["value"] = entry["max"]
        self._send()


class _ExecutionList:
    """ComfyUI's TopologicalSort/ExecutionList: pending nodes, block counts and the UX-friendly pick."""

    def __init__(
        self, prompt: dict[str, Any], is_cached: Callable[[str], bool], is_output: Callable[[str], bool]
    ) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in (self.prompt[unique_id].get("inputs") or {}).values():
                if _is_link(value):
                    source = value[0]
                    if not self.is_cached(source):
                        stack.append(source)
                    links.append((source, unique_id))
        for source, target in links:
            if not self.is_cached(source):
                self.add_node(source)
                if target not in self.blocking[source]:
                    self.blocking[source][target] = True
                    self.block_count[target] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def ready(self) -> list[str]:
        return [node_id for node_id in self.pending if self.block_count[node_id] == 0]

    def pick(self) -> str | None:
        ready = self.ready()
        if not ready:
            return None
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self.blocking[node_id]:
                if any(self.is_output(b) for b in self.blocking[blocked]):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]


@dataclass(slots=True, kw_only=True)
class ExecutionOutcome:
    """The history record parts of one executed prompt."""

    success: bool
    messages: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class _PromptRun:
    """The state of the prompt being executed."""

    prompt: dict[str, Any]
    prompt_id: str
    extra_data: dict[str, Any]
    client_id: Any
    progress: _ProgressRegistry
    outcome: ExecutionOutcome
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)


class _NodeRun:
    """The :class:`~hotfolder.testing.values.NodeContext` handed to a running node."""

    def __init__(self, host: ExecutionHost, run: _PromptRun, node_id: str) -> None:
        self._host = host
        self._run = run
        self.node_id = node_id
        self.prompt_id = run.prompt_id
        self.output_dir = host.output_dir
        self.input_dir = host.input_dir
        self.temp_dir = host.temp_dir

    def check_interrupt(self) -> None:
        if self._host.interrupt_requested():
            raise InterruptProcessingException("Processing interrupted")

    async def progress(self, value: float, total: float, preview_png: bytes | None = None) -> None:
        self.check_interrupt()
        value = min(value, total)
        client_id = self._run.client_id
        self._run.progress.update(self.node_id, value, total, preview_png)
        self._host.emit(
            "progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id}, client_id
        )
        if preview_png is not None and not self._host.supports_preview_metadata(client_id):
            self._host.emit_binary(BINARY_PREVIEW_IMAGE, struct.pack(">I", _PNG_FORMAT) + preview_png, client_id)

    async def sleep(self, seconds: float) -> None:
        if await self._host.wait_for_interrupt(seconds):
            raise InterruptProcessingException("Processing interrupted")


class PromptExecutor:
    """Runs one prompt at a time and emits its messages through an :class:`ExecutionHost`."""

    def __init__(self, host: ExecutionHost, catalog: NodeCatalog, cache: OutputCache) -> None:
        self.host = host
        self.catalog = catalog
        self.cache = cache
        #: Rewrites a node's UI output before it is sent and recorded (0.4x: asset ids); None: as is.
        self.enrich_ui: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self._late = 0.0  # seconds a paced prompt's wait aims early (_wait_out_prompt_time)

    @staticmethod
    async def _node_delay(host: ExecutionHost, context: _NodeRun, class_type: str) -> None:
        """Wait out the scripted delay of ``class_type``; lowering it (to 0) releases a node already waiting,
        raising it does not hold one longer."""
        clock = asyncio.get_running_loop().time
        started, delay = clock(), host.node_delay(class_type)
        if delay <= 0:
            return
        with host.holding(class_type, delay):
            while (remaining := min(delay, host.node_delay(class_type)) - (clock() - started)) > 0:
                await context.sleep(min(remaining, 0.05))

    async def _wait_out_prompt_time(self, started: float) -> None:
        """Wait until the scripted prompt time (``pace``) has passed since ``started``; an interrupt ends it.

        Wake-ups come late here (0.5-0.7 ms on a small VM, for asyncio's timers and threads alike), which
        made a paced prompt last T + 1.2 ms. The wait aims early by the lateness measured on the waits
        before it, so that paced prompts last T on average, as a GPU job of fixed length would."""
        loop = asyncio.get_running_loop()
        deadline = started + self.host.prompt_time()
        remaining = deadline - loop.time() - self._late
        if remaining <= 0:
            return
        await self.host.wait_for_interrupt(remaining)
        if not self.host.interrupt_requested():
            self._late = min(0.005, max(0.0, self._late + 0.5 * (loop.time() - deadline)))

    def _is_output(self, prompt: dict[str, Any], node_id: str) -> bool:
        info = self.catalog.get(prompt[node_id]["class_type"]) or {}
        return info.get("output_node") is True

    def _add_message(self, run: _PromptRun, event: str, data: dict[str, Any], *, broadcast: bool) -> None:
        """Record a message for the history entry and send it (ComfyUI's ``add_message``)."""
        data = {**data, "timestamp": _now_ms()}
        run.outcome.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self.host.emit(event, data, run.client_id)

    def _gather_inputs(self, run: _PromptRun, node_id: str) -> dict[str, Any]:
        """The keyword arguments of a node: literals, linked outputs and hidden inputs, in ComfyUI's order."""
        node = run.prompt[node_id]
        info = expand_dynamic_inputs(self.catalog.get(node["class_type"]) or {}, node.get("inputs") or {})
        declared = info.get("input") or {}
        out: dict[str, Any] = {}
        for name, value in (node.get("inputs") or {}).items():
            if _is_link(value):
                source, slot = value[0], int(value[1])
                outputs = run.values.get(source)
                if outputs is None:
                    cached = self.cache.get(source)
                    outputs = cached.outputs if cached is not None else None
                out[name] = outputs[slot] if outputs is not None and slot < len(outputs) else None
            elif any(name in (declared.get(c) or {}) for c in ("required", "optional", "hidden")):
                out[name] = value
        hidden = declared.get("hidden") or {}
        order = (info.get("input_order") or {}).get("hidden") or list(hidden)
        for name in order:
            kind = hidden.get(name)
            if isinstance(kind, list) and kind:  # V3 nodes list it: "prompt": ["PROMPT"]
                kind = kind[0]
            if kind == "PROMPT":
                out[name] = run.prompt
            elif kind == "EXTRA_PNGINFO":
                out[name] = run.extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                out[name] = node_id
            elif kind in ("AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
                out[name] = run.extra_data.get(str(kind).lower())
        return out

    async def execute(
        self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any], execute_outputs: list[str]
    ) -> ExecutionOutcome:
        """Execute ``prompt`` and return what goes into its history entry."""
        host = self.host
        client_id = extra_data.get("client_id")
        run = _PromptRun(
            prompt=prompt,
            prompt_id=prompt_id,
            extra_data=extra_data,
            client_id=client_id,
            progress=_ProgressRegistry(host, prompt_id, client_id),
            outcome=ExecutionOutcome(success=False),
        )
        started = asyncio.get_running_loop().time()  # before the message: sending it is part of the prompt
        self._add_message(run, "execution_start", {"prompt_id": prompt_id}, broadcast=False)
        dirs = {"input": host.input_dir, "output": host.output_dir, "temp": host.temp_dir}
        self.cache.set_prompt(compute_cache_keys(prompt, self.catalog, dirs))
        cached_nodes = [node_id for node_id in prompt if self.cache.get(node_id) is not None]
        self._add_message(run, "execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        current_outputs = list(prompt)
        order = _ExecutionList(prompt, lambda n: self.cache.get(n) is not None, lambda n: self._is_output(prompt, n))
        for output_id in execute_outputs:
            order.add_node(output_id)

        failed = False
        while not order.is_empty():
            node_id = order.pick()
            if node_id is None:  # only possible with a dependency cycle
                blamed = next(iter(order.pending))
                error: dict[str, Any] = {
                    "prompt_id": prompt_id,
                    "node_id": blamed,
                    "node_type": prompt[blamed]["class_type"],
                    "executed": list(run.executed),
                    "exception_message": "Dependency cycle detected\n",
                    "exception_type": "graph.DependencyCycleError",
                    "traceback": [],
                    "current_inputs": [],
                    "current_outputs": current_outputs,
                }
                self._add_message(run, "execution_error", error, broadcast=False)
                failed = True
                break
            failure = await self._execute_node(run, node_id)
            if failure is not None:
                interrupted, details = failure
                head = {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": prompt[node_id]["class_type"],
                    "executed": list(run.executed),
                }
                if interrupted:
                    self._add_message(run, "execution_interrupted", head, broadcast=True)
                else:
                    error = {**head, **details, "current_outputs": current_outputs}
                    self._add_message(run, "execution_error", error, broadcast=False)
                failed = True
                break
            order.complete(node_id)

        if not failed:
            await self._wait_out_prompt_time(started)
            self._add_message(run, "execution_success", {"prompt_id": prompt_id}, broadcast=False)
            run.outcome.success = True
            for node_id, record in run.ui_records.items():
                run.outcome.outputs[node_id] = record["output"]
                run.outcome.meta[node_id] = record["meta"]
        host.last_node_id = None
        return run.outcome

    async def _execute_node(self, run: _PromptRun, node_id: str) -> tuple[bool, dict[str, Any]] | None:
        """Run (or replay from cache) one node. Returns ``None``, or ``(interrupted, error_details)``."""
        host = self.host
        client_id = run.client_id
        class_type = run.prompt[node_id]["class_type"]
        cached = self.cache.get(node_id)
        if cached is not None:
            if client_id is not None:
                output = cached.ui["output"] if cached.ui is not None else None
                executed = {"node": node_id, "display_node": node_id, "output": output, "prompt_id": run.prompt_id}
                host.emit("executed", executed, client_id)
            if cached.ui is not None:
                run.ui_records[node_id] = cached.ui
            run.progress.finish(node_id)
            run.values[node_id] = cached.outputs
            return None

        inputs: dict[str, Any] | None = None
        try:
            run.progress.start(node_id)
            inputs = self._gather_inputs(run, node_id)
            if client_id is not None:
                host.last_node_id = node_id
                host.emit(
                    "executing", {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id}, client_id
                )
            context = _NodeRun(host, run, node_id)
            context.check_interrupt()
            await self._node_delay(host, context, class_type)
            injected = host.take_node_failure(class_type)
            if injected is not None:
                raise InjectedNodeFailure(*injected)
            implementation = EXECUTABLE_NODES.get(class_type)
            if implementation is None:
                raise NotImplementedError(f"node {class_type} is not executable on the hotfolder test server")
            result: NodeResult = await implementation(context, dict(inputs))
        except InterruptProcessingException:
            return True, {}
        except Exception as ex:  # noqa: BLE001 - a node failure becomes execution_error, as in ComfyUI
            kind, _, tb = sys.exc_info()
            exception_type = (
                ex.exception_type if isinstance(ex, InjectedNodeFailure) else _full_type_name(kind or type(ex))
            )
            current_inputs = {name: [_format_value(v)] for name, v in (inputs or {}).items()}
            return False, {
                "exception_message": f"{ex}\n",
                "exception_type": exception_type,
                "traceback": traceback.format_tb(tb),
                "current_inputs": current_inputs,
            }

        record = None
        if result.ui:
            ui = self.enrich_ui(result.ui) if self.enrich_ui is not None else result.ui
            record = {
                "meta": {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id},
                "output": ui,
            }
            run.ui_records[node_id] = record
            if client_id is not None:
                executed = {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.prompt_id}
                host.emit("executed", executed, client_id)
        self.cache.set(node_id, CacheEntry(ui=record, outputs=result.outputs))
        run.values[node_id] = result.outputs
        run.progress.finish(node_id)
        run.executed.append(node_id)
        return None
