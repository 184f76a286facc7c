"""Stage 6 of 10: submit. POST the rendered workflow under our own prompt_id.

:func:`submit_job` chooses the prompt_id and records it before the POST, waits while the server is
away, and attaches to a prompt an earlier POST (cut off by a crash) already queued. A POST whose outcome is unknown
(timeout, dropped connection, HTTP 500) is resolved by asking the server whether it has the prompt; only
a prompt it provably does not have is sent again, under the same id. A 400 becomes a
:class:`~hotfolder.errors.PromptRejected` whose ``details`` list each problem by node id, title, class and
input, in words a user can act on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from hotfolder import failpoints
from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import OutcomeUnknown, PromptRejected, ServerError, ServerUnavailable
from hotfolder.events import Submitted
from hotfolder.record import now_iso
from hotfolder.stages.context import JobContext

#: The job states in which a job still has to be submitted, or tracked to its end.
SUBMITTABLE = frozenset({"pending", "submitting", "submitted"})
#: Seconds a POST waits for the server's WebSocket to be connected, so the prompt's messages reach us.
#: A prompt sent again (a restarted server forgot it) waits less: its GPU is idle, and while the
#: WebSocket catches up the prompt is followed through /history.
WS_WAIT, WS_WAIT_RESEND = 2.0, 0.1


class Queued(NamedTuple):
    """What :func:`submit_job` did: ``fresh`` when its POST queued the prompt just now (its WebSocket
    messages are all still to come); ``deadline`` (monotonic) for the job's end, from job_timeout."""

    fresh: bool
    deadline: float


def submit_job(ctx: JobContext, client: ComfyClient, workflow: dict[str, Any],
               before_post: Callable[[], None] | None = None) -> Queued:
    """Queue the job's prompt on ``client`` (or attach to it if an earlier POST got there); a job
    already ``submitted`` is left as it is. Waits while the server is away (ctx.wait_for_server may
    move the job instead); PromptRejected on a 400. ``before_post`` is called once it is sure a POST
    follows (it waits while submitting is paused)."""
    job, record = ctx.job, ctx.record
    if job.state not in {"pending", "submitting"}:
        return Queued(False, time.monotonic() + ctx.settings.job_timeout)
    if ctx.cancel.is_set():
        if job.prompt_id is not None and job.submissions > 0:  # an earlier POST may have queued it
            cancel_on_server(ctx, client)
        raise ctx.cancelled()  # not submitted
    if job.prompt_id is None:
        job.prompt_id = str(uuid.uuid4())
    elif job.state == "submitting" and job.submissions > 0:
        # An earlier POST under this id may have reached the server (crash mid-POST): never run it twice.
        where = _locate(ctx, client, job.prompt_id)
        if where != "absent":
            job.state = "submitted"
            ctx.save(durable=False)  # redone after a power cut, never repeated outside
            ctx.log.info("prompt %s is already on %s (%s); attaching to it", job.prompt_id, client.display_url, where)
            return Queued(False, time.monotonic() + ctx.settings.job_timeout)
    if before_post is not None:
        before_post()
    ws_wait = WS_WAIT_RESEND if job.submissions else WS_WAIT
    job.server = client.name
    job.state = "submitting"
    job.submissions += 1
    job.times["submitted"] = now_iso()
    ctx.save()  # the prompt_id is on disk before the POST
    extra = {"extra_pnginfo": {"hotfolder": {"job": f"{record.job_id}/{job.index}", "file": record.input_name}}}
    while True:
        try:
            client.wait_ws(ws_wait)
            if before_post is not None:  # asked again right before each POST: the wait above, or a retry's,
                before_post()            # may have outlasted a pause or a stop (the job stays "submitting")
            ctx.check_cancelled()  # and a cancel: nothing of a cancelled job is sent, ever
            where = submit_prompt(client, workflow, prompt_id=job.prompt_id, extra_data=extra)
            failpoints.hit("after_post")
            break
        except ServerUnavailable:
            ctx.wait_for_server(client, movable=True)
        except OutcomeUnknown as err:
            ctx.log.warning("%s; checking again before resubmitting", err.message)
            ctx.pause(1.0)
    # No record write here: nothing outside happens before the next one ("downloaded", before the
    # publish). A record still saying "submitting" after a crash is looked up on the server first
    # (_locate), so the prompt is attached to, never sent twice.
    job.state = "submitted"
    ctx.log.info("submitted to %s as prompt %s (%s)", client.display_url, job.prompt_id, where)
    ctx.emit(Submitted(file=record.input_name, job_id=record.job_id, job=job.name,
                       prompt_id=job.prompt_id, server=client.display_url))
    return Queued(where == "queued", time.monotonic() + ctx.settings.job_timeout)


def end_if_cancelled(ctx: JobContext, client: ComfyClient | None) -> None:
    """Raise JobCancelled if a user cancelled the job. A prompt it may have on ``client`` (sent before it
    waited here, perhaps by an earlier run of the daemon) is taken off the server first."""
    if not ctx.cancel.is_set():
        return
    job = ctx.job
    if client is not None and job.prompt_id and job.submissions and job.state in ("submitting", "submitted"):
        cancel_on_server(ctx, client)
    raise ctx.cancelled()


def cancel_on_server(ctx: JobContext, client: ComfyClient) -> None:
    """Take the job's prompt off the server (dequeue or interrupt it, never another prompt); a server
    that does not answer is logged (the prompt may still run there; nothing of it is published)."""
    prompt_id = ctx.job.prompt_id or ""
    try:
        how = client.cancel(prompt_id, together=ctx.cancel.together)
    except ServerError as err:
        ctx.log.warning("could not cancel prompt %s on %s: %s", prompt_id, client.display_url, err.message)
        return
    ctx.log.info("cancelled prompt %s on %s (%s)", prompt_id, client.display_url, how)


def _locate(ctx: JobContext, client: ComfyClient, prompt_id: str) -> str:
    while True:
        try:
            return client.locate(prompt_id)
        except ServerUnavailable:
            ctx.wait_for_server(client)


def submit_prompt(client: ComfyClient, workflow: dict[str, Any], *, prompt_id: str,
                  extra_data: dict[str, Any] | None = None) -> str:
    """Queue the prompt; returns 'queued' or, after an unknown outcome, where the server has it.

    Raises OutcomeUnknown again when the server has no trace of it (the caller retries the POST),
    ServerUnavailable while the server is away, PromptRejected on a 400.
    """
    try:
        client.submit(workflow, prompt_id=prompt_id, extra_data=extra_data)
        return "queued"
    except OutcomeUnknown:
        where = client.locate(prompt_id)
        if where == "absent":
            raise
        return where
    except PromptRejected as err:
        raise explain_rejection(err, workflow) from None


def _node(workflow: dict[str, Any], node_id: str) -> dict[str, Any]:
    node = workflow.get(node_id)
    if not isinstance(node, dict):
        return {"id": node_id, "title": None, "class_type": None}
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return {"id": node_id, "title": title, "class_type": node.get("class_type")}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def explain_rejection(err: PromptRejected, workflow: dict[str, Any]) -> PromptRejected:
    """Turn ComfyUI's 400 body into one problem per node input, each naming node id, title, class.
    Every part of the body is optional and may have any shape (a proxy's answer, another version's)."""
    body = _mapping(err.details)
    top = body.get("error")
    top = {"message": str(top)} if isinstance(top, str) and top else _mapping(top)
    problems: list[dict[str, Any]] = []
    for node_id, info in _mapping(body.get("node_errors")).items():
        node = _node(workflow, str(node_id))
        info = _mapping(info)
        if info.get("class_type") and not node["class_type"]:
            node["class_type"] = str(info["class_type"])
        items = info.get("errors")
        for item in items if isinstance(items, list) else []:
            item = item if isinstance(item, dict) else {"message": str(item)}
            extra = _mapping(item.get("extra_info"))
            problem = {
                "node": node,
                "input": extra.get("input_name"),
                "type": item.get("type"),
                "message": item.get("message") or item.get("type") or "refused",
                "details": item.get("details"),
            }
            if "received_value" in extra:
                problem["received_value"] = extra["received_value"]
            problems.append(problem)
    lines = []
    for p in problems:
        node = p["node"]
        label = f"node {node['id']}"
        if node.get("title"):
            label += f" {node['title']!r}"
        if node.get("class_type"):
            label += f" ({node['class_type']})"
        where = f", input {p['input']!r}" if p.get("input") else ""
        detail = f": {p['details']}" if p.get("details") else ""
        lines.append(f"  - {label}{where}: {p['message']}{detail}")
    server = err.where.get("server")
    message = f"ComfyUI{f' at {server}' if server else ''} rejected the workflow: {top.get('message') or 'validation failed'}"
    if top.get("details") and not problems:
        message += f" ({top['details']})"
    if lines:
        message += "\n" + "\n".join(lines)
    hint = "Fix the named inputs in the scenario's params/set or in the template, then move the file back to inbox/."
    if top.get("type") == "invalid_prompt":
        hint = ("A node class is missing on the server: install the custom node pack that provides it, "
                "or change the template.")
    location = dict(err.where)
    if problems:
        first = problems[0]
        location.update({"node": first["node"], "input": first.get("input")})
    return PromptRejected(message, hint=hint, where=location,
                          details={"error": top, "problems": problems})
