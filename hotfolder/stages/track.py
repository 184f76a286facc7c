"""Stage 7 of 10: track. Follow a queued prompt until it has finished and ComfyUI has recorded it.

The waiting itself lives in :meth:`hotfolder.comfy.client.ComfyClient.wait` (WebSocket plus history
polling). This stage turns the outcome into the job's terms: success, or an
:class:`~hotfolder.errors.ExecutionFailed` that names the node (id, title, class) and the exception.
:func:`track_job` also waits out a server that went away, tells when a prompt was lost (to be
submitted again), interrupts a job over job_timeout, and records how the prompt ran.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from hotfolder.comfy.client import Aborted, Cancelled, ComfyClient, PromptLost, PromptResult, PromptWatch
from hotfolder.errors import ExecutionFailed, JobTimeout, ServerError, ServerUnavailable
from hotfolder.events import Progress, Resubmitted
from hotfolder.record import now_iso
from hotfolder.stages.context import JobContext
from hotfolder.stages.submit import Queued, cancel_on_server

MAX_INPUT_REPR = 200
MAX_RESUBMISSIONS = 5


class Forgotten(threading.Event):
    """Set when the prompt's server came back (its WebSocket reconnected, or it answers again after an
    outage) and provably no longer has the prompt: in neither its queue nor its history. Passed to
    ComfyClient.wait as its cancel flag, so :meth:`is_set` is also true once ``stop`` is. Setting it
    calls ``wake`` (ComfyClient.wake for the prompt), so the wait ends at once: the GPU is idle."""

    def __init__(self, stop: threading.Event, wake: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._stop_flag = stop
        self._wake = wake

    def set(self) -> None:
        super().set()
        if self._wake is not None:
            self._wake()

    def is_set(self) -> bool:
        return self.forgotten or self._stop_flag.is_set()

    @property
    def forgotten(self) -> bool:
        return super().is_set()


def track_job(ctx: JobContext, client: ComfyClient, workflow: dict[str, Any], queued: Queued) -> PromptResult | None:
    """Follow the job's prompt to its end and record how it ran (``job.execution``). None when the
    server lost it (restarted): the job is ``submitting`` again, to be submitted under the same id, at
    once when the server came back without it (see :class:`Forgotten`), else after ``lost_grace``.
    Raises ExecutionFailed, JobTimeout (after interrupting it), JobCancelled (a user cancelled the job:
    its prompt is dequeued or interrupted first), or ServerError after too many losses."""
    job = ctx.job
    prompt_id = job.prompt_id or ""
    watching = ctx.restarts.watching(client, prompt_id) if ctx.restarts is not None else None
    with watching or contextlib.nullcontext(Forgotten(ctx.stop)) as forgot:
        while True:
            try:
                result = track_prompt(client, prompt_id, workflow, deadline=queued.deadline, cancel=forgot,
                                      on_progress=lambda w: _progress(ctx, w), fresh=queued.fresh,
                                      abort=ctx.cancel.event)
            except Aborted:
                cancel_on_server(ctx, client)
                raise ctx.cancelled() from None
            except PromptLost:
                _lost(ctx, client, "vanished from")
                return None
            except Cancelled:
                if ctx.stop.is_set() or not forgot.forgotten:
                    raise
                _lost(ctx, client, "was forgotten by")
                return None
            except ServerUnavailable:
                ctx.wait_for_server(client, movable=True)
                queued = queued._replace(fresh=False)
                if _absent(client, prompt_id):  # it answers again, without the prompt: it restarted
                    forgot.set()
                continue
            except ExecutionFailed:
                if ctx.cancel.is_set():  # interrupted by our own cancel
                    raise ctx.cancelled() from None
                raise
            except TimeoutError:
                _give_up(ctx, client)
                raise JobTimeout(
                    f"Job did not finish within job_timeout = {ctx.settings.job_timeout:g} s on {client.display_url}; it was interrupted.",
                    hint="Raise job_timeout in hotfolder.toml if such jobs are expected to take longer.",
                ) from None
            finally:
                client.forget(prompt_id)
            break
    job.times["finished"] = now_iso()
    w = result.watch
    job.execution = {
        "started": now_iso(w.started) if w.started else None,
        "node_seconds": dict(w.node_seconds),
        "cached_nodes": list(w.cached),
        "comfyui_version": client.comfyui_version(),
        "ui_values": {},
        "outputs": result.outputs,
    }
    return result


def _absent(client: ComfyClient, prompt_id: str) -> bool:
    """Whether the server provably does not have the prompt now (False if it does not answer)."""
    try:
        return client.locate(prompt_id) == "absent"
    except ServerError:
        return False


def _lost(ctx: JobContext, client: ComfyClient, how: str) -> None:
    """The server lost the prompt: the job is ``submitting`` again (same prompt id). ServerError after
    MAX_RESUBMISSIONS losses."""
    job, record = ctx.job, ctx.record
    job.resubmissions += 1
    if job.resubmissions > MAX_RESUBMISSIONS:
        raise ServerError(
            f"Prompt {job.prompt_id} was lost by {client.display_url} {job.resubmissions} times.",
            hint="ComfyUI keeps restarting or something clears its queue; check its log.",
        )
    ctx.log.warning("prompt %s %s %s (restart?); submitting it again with the same id",
                    job.prompt_id, how, client.display_url)
    ctx.emit(Resubmitted(file=record.input_name, job_id=record.job_id, job=job.name,
                         server=client.name, prompt_id=job.prompt_id))
    job.state = "submitting"
    ctx.save()


def _progress(ctx: JobContext, watch: PromptWatch) -> None:
    """A progress event (ComfyClient.wait calls this when the node or its progress changed)."""
    p = watch.progress
    ctx.emit(Progress(file=ctx.record.input_name, job_id=ctx.record.job_id, job=ctx.job.name,
                      node=p.node, value=p.value, max=p.max))


def _give_up(ctx: JobContext, client: ComfyClient) -> None:
    ctx.log.error("job timed out; interrupting prompt %s", ctx.job.prompt_id)
    try:
        client.http.delete_pending(ctx.job.prompt_id or "")
        client.http.interrupt(ctx.job.prompt_id or "")
    except ServerError:
        pass


def track_prompt(client: ComfyClient, prompt_id: str, workflow: dict[str, Any], *, deadline: float,
                 on_progress: Callable[[PromptWatch], None] | None = None,
                 cancel: threading.Event | None = None, fresh: bool = False,
                 abort: threading.Event | None = None) -> PromptResult:
    """Wait for the prompt; return its result, or raise ExecutionFailed for an error or interrupt.
    ``fresh``: it was queued by a POST that just succeeded (see ComfyClient.wait).

    Also raises PromptLost, ServerUnavailable and TimeoutError from the client for the caller to handle.
    """
    result = client.wait(prompt_id, deadline=deadline, on_progress=on_progress, cancel=cancel, fresh=fresh,
                         abort=abort)
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
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    where_node = {"id": node_id, "title": _text(title),
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
