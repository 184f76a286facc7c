"""Stage 7 of 10: track. Follow a queued prompt until it has finished and ComfyUI has recorded it.

The waiting itself lives in :meth:`hotfolder.comfy.client.ComfyClient.wait` (WebSocket plus history
polling). This stage turns the outcome into the job's terms: success, or an
:class:`~hotfolder.errors.ExecutionFailed` that names the node (id, title, class) and the exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hotfolder.comfy.client import ComfyClient, PromptResult, PromptWatch
from hotfolder.errors import ExecutionFailed

MAX_INPUT_REPR = 200


def track_prompt(client: ComfyClient, prompt_id: str, workflow: dict[str, Any], *, deadline: float,
                 on_progress: Callable[[PromptWatch], None] | None = None,
                 cancel: threading.Event | None = None, fresh: bool = False) -> PromptResult:
    """Wait for the prompt; return its result, or raise ExecutionFailed for an error or interrupt.
    ``fresh``: it was queued by a POST that just succeeded (see ComfyClient.wait).

    Also raises PromptLost, ServerUnavailable and TimeoutError from the client for the caller to handle.
    """
    result = client.wait(prompt_id, deadline=deadline, on_progress=on_progress, cancel=cancel, fresh=fresh)
    if result.status != "success":
        raise explain_failure(result, workflow)
    return result


def explain_failure(result: PromptResult, workflow: dict[str, Any]) -> ExecutionFailed:
    data = result.error or {}
    node_id = str(data.get("node_id")) if data.get("node_id") is not None else None
    node = workflow.get(node_id) if node_id else None
    meta = node.get("_meta") if isinstance(node, dict) and isinstance(node.get("_meta"), dict) else {}
    where_node = {"id": node_id, "title": meta.get("title"),
                  "class_type": data.get("node_type") or (node or {}).get("class_type")}
    label = f"node {node_id}" if node_id else "an unknown node"
    if where_node["title"]:
        label += f" {where_node['title']!r}"
    if where_node["class_type"]:
        label += f" ({where_node['class_type']})"
    if result.status == "interrupted":
        return ExecutionFailed(
            f"The prompt was interrupted on ComfyUI at {label}.",
            hint="Someone pressed Cancel or another client sent /interrupt. Move the file back to inbox/ to run it again.",
            where={"node": where_node, "prompt_id": result.prompt_id},
            details={"executed": data.get("executed")},
        )
    exc_type = data.get("exception_type") or "Error"
    exc_message = str(data.get("exception_message") or "no message").strip()
    inputs = {
        k: [str(v)[:MAX_INPUT_REPR] for v in vals] if isinstance(vals, list) else str(vals)[:MAX_INPUT_REPR]
        for k, vals in (data.get("current_inputs") or {}).items()
    }
    return ExecutionFailed(
        f"ComfyUI failed at {label}: {exc_type}: {exc_message}",
        hint="The workflow passed validation but failed while running; check the inputs of that node.",
        where={"node": where_node, "prompt_id": result.prompt_id},
        details={"exception_type": exc_type, "exception_message": exc_message, "current_inputs": inputs,
                 "executed": data.get("executed")},
    )
