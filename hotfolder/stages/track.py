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
        raise explain_failure(result, workflow, server=client.display_url)
    return result


def _text(value: Any) -> str | None:
    """A field of the server's error message as text (ids may come as numbers), None if absent or empty."""
    if value is None or (isinstance(value, (str, list, dict)) and not value):
        return None
    return str(value)[:MAX_INPUT_REPR]


def explain_failure(result: PromptResult, workflow: dict[str, Any], *, server: str | None = None) -> ExecutionFailed:
    """The job's error for a prompt that failed or was interrupted on ``server``, from ComfyUI's message
    (whatever shape it has: every field is optional and only read as text)."""
    data = result.error if isinstance(result.error, dict) else {}
    node_id = _text(data.get("node_id"))
    node = workflow.get(node_id) if node_id else None
    meta = node.get("_meta") if isinstance(node, dict) and isinstance(node.get("_meta"), dict) else {}
    where_node = {"id": node_id, "title": _text(meta.get("title")),
                  "class_type": _text(data.get("node_type")) or _text((node or {}).get("class_type"))}
    label = f"node {node_id}" if node_id else "an unknown node"
    if where_node["title"]:
        label += f" {where_node['title']!r}"
    if where_node["class_type"]:
        label += f" ({where_node['class_type']})"
    on = f" at {server}" if server else ""
    where = {"node": where_node, "prompt_id": result.prompt_id, **({"server": server} if server else {})}
    if result.status == "interrupted":
        return ExecutionFailed(
            f"The prompt was interrupted on ComfyUI{on} at {label}.",
            hint="Someone pressed Cancel or another client sent /interrupt. Move the file back to inbox/ to run it again.",
            where=where,
            details={"executed": data.get("executed")},
        )
    exc_type = _text(data.get("exception_type")) or "Error"
    exc_message = str(data.get("exception_message") or "no message").strip()
    current = data.get("current_inputs")
    inputs = {
        str(k): [str(v)[:MAX_INPUT_REPR] for v in vals] if isinstance(vals, list) else str(vals)[:MAX_INPUT_REPR]
        for k, vals in (current.items() if isinstance(current, dict) else ())
    }
    return ExecutionFailed(
        f"ComfyUI{on} failed at {label}: {exc_type}: {exc_message}",
        hint="The workflow passed validation but failed while running; check the inputs of that node.",
        where=where,
        details={"exception_type": exc_type, "exception_message": exc_message, "current_inputs": inputs,
                 "executed": data.get("executed")},
    )
