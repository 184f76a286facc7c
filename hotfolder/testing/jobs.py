"""The jobs API of the 0.4x profile: ``GET /api/jobs``, ``GET /api/jobs/{id}`` and the two cancel routes.

Written from ComfyUI's ``server.py@002c3fb9a504255ccb3edb668c08b8f56e63d14a`` (the handlers ``get_jobs``,
``get_job_by_id``, ``cancel_job_by_id``, ``cancel_jobs_batch``) and
``comfy_execution/jobs.py@172be438576532bd3d7243c5608ddde8a31e2944`` (how queue items and history entries
become jobs); docs/comfy-protocol/AFTER-0.3.64-evidence.md sections 1 to 3 describe the wire format.
A job is a queue item or a history entry seen through one shape: ``pending`` and ``in_progress`` come
from the queue, ``completed``, ``failed`` and ``cancelled`` from the history entry's status messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from .profile import InvalidPromptId, canonical_uuid
from .prompts import PromptQueue

__all__ = ["JOB_STATUSES", "JobsRoutes", "history_job", "queue_job"]

logger = logging.getLogger(__name__)

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
PREVIEWABLE = frozenset({"images", "video", "audio", "3d", "text"})  # jobs.py PREVIEWABLE_MEDIA_TYPES
THREE_D = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_FILES = (".txt", ".md", ".json")


def _present(job: dict[str, Any]) -> dict[str, Any]:
    """Drop the keys whose value is ``None`` (ComfyUI's ``prune_dict``)."""
    return {key: value for key, value in job.items() if value is not None}


def _job_facts(extra_data: Any) -> tuple[Any, Any]:
    """``(create_time, workflow_id)`` of a prompt's extra_data."""
    extra = extra_data if isinstance(extra_data, dict) else {}
    workflow = (extra.get("extra_pnginfo") or {}).get("workflow") or {}
    return extra.get("create_time"), workflow.get("id") if isinstance(workflow, dict) else None


def queue_job(item: list[Any], status: str, *, detail: bool = False) -> dict[str, Any]:
    """A queued (``pending``) or running (``in_progress``) item as a job; ``detail`` adds ``workflow``."""
    number, prompt_id, prompt, extra_data = item[0], item[1], item[2], item[3]
    create_time, workflow_id = _job_facts(extra_data)
    job = _present({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                    "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id})
    if detail:
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _file_item(item: Any) -> dict[str, Any] | None:
    """An output item as a file dict: dicts as they are, a 3D file name as ComfyUI turns it, else None."""
    if isinstance(item, dict):
        return item
    if isinstance(item, str) and item.lower().endswith(THREE_D):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def _previewable(kind: str, item: dict[str, Any]) -> bool:
    fmt = str(item.get("format", ""))
    name = str(item.get("filename", "")).lower()
    return (kind in PREVIEWABLE or fmt.startswith(("video/", "audio/"))
            or name.endswith(THREE_D) or name.endswith(TEXT_FILES))


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """``(outputs_count, previewable_outputs_count, preview_output)``: saved visual media first, then
    other visual media, then a saved text file, then raw text (jobs.py ``get_outputs_summary``)."""
    count = previewable = 0
    slots: dict[str, dict[str, Any]] = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for kind, items in node_outputs.items():
            if kind == "animated" or not isinstance(items, list):
                continue
            for raw in items:
                item = _file_item(raw)
                if item is None:
                    if kind == "text" and raw is not None:
                        text = str(raw[0] if isinstance(raw, tuple) and raw else raw)
                        shown = {"content": text[:1024], **({"truncated": True} if len(text) > 1024 else {})}
                        slots.setdefault("text", {**shown, "nodeId": node_id, "mediaType": kind})
                    continue
                count += 1
                if not _previewable(kind, item):
                    continue
                previewable += 1
                enriched = {**item, "nodeId": node_id, "mediaType": item.get("mediaType", kind)}
                if kind == "text" or str(item.get("filename", "")).lower().endswith(TEXT_FILES):
                    slots.setdefault("text_file", enriched)
                elif item.get("type") == "output":
                    slots.setdefault("output", enriched)
                else:
                    slots.setdefault("other", enriched)
    preview = next((slots[key] for key in ("output", "other", "text_file", "text") if key in slots), None)
    return count, previewable, preview


def _clean_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs as ``GET /api/jobs/{id}`` shows them: ``None`` items dropped, 3D names as file dicts."""
    clean: dict[str, Any] = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            clean[node_id] = node_outputs
            continue
        clean[node_id] = {
            kind: items if kind == "animated" or not isinstance(items, list)
            else [_file_item(i) or i for i in items if i is not None]
            for kind, items in node_outputs.items()
        }
    return clean


def history_job(prompt_id: str, entry: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """A finished prompt's history entry as a job; ``detail`` adds outputs, status and workflow."""
    number, _, prompt, extra_data = entry["prompt"][:4]
    create_time, workflow_id = _job_facts(extra_data)
    status_info = entry.get("status") or {}
    started = ended = error = None
    interrupted = False
    for message in status_info.get("messages", []) if isinstance(status_info, dict) else []:
        if not isinstance(message, (list, tuple)) or len(message) < 2 or not isinstance(message[1], dict):
            continue
        event, data = message[0], message[1]
        if event == "execution_start":
            started = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            ended = data.get("timestamp")
            error = data if event == "execution_error" else error
            interrupted = interrupted or event == "execution_interrupted"
    status_str = status_info.get("status_str") if isinstance(status_info, dict) else None
    status = ("cancelled" if interrupted else "failed") if status_str == "error" else "completed"
    outputs = entry.get("outputs") or {}
    count, previewable, preview = _outputs_summary(outputs)
    job = _present({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                    "execution_start_time": started, "execution_end_time": ended, "execution_error": error,
                    "outputs_count": count, "previewable_outputs_count": previewable,
                    "preview_output": preview, "workflow_id": workflow_id})
    if detail:
        job.update(outputs=_clean_outputs(outputs), execution_status=status_info,
                   workflow={"prompt": prompt, "extra_data": extra_data})
    return job


def _sort_key(sort_by: str) -> Any:
    if sort_by == "execution_duration":
        def duration(job: dict[str, Any]) -> Any:
            start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
            return end - start if end and start else 0
        return duration
    return lambda job: job.get("create_time", 0)


class _BadQuery(Exception):
    """A query parameter ``GET /api/jobs`` refuses (400 with this text)."""


def _list_query(query: Any) -> tuple[list[str], str | None, str, str, int | None, int]:
    """``GET /api/jobs``'s parameters, checked in ComfyUI's order and with its error texts."""
    statuses = list(JOB_STATUSES)
    if query.get("status"):
        statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        invalid = [s for s in statuses if s not in JOB_STATUSES]
        if invalid:
            raise _BadQuery(f"Invalid status value(s): {', '.join(invalid)}. Valid values: {', '.join(JOB_STATUSES)}")
    sort_by = query.get("sort_by", "created_at").lower()
    if sort_by not in ("created_at", "execution_duration"):
        raise _BadQuery("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc").lower()
    if sort_order not in ("asc", "desc"):
        raise _BadQuery("sort_order must be 'asc' or 'desc'")
    limit = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise _BadQuery("limit must be an integer") from None
        if limit <= 0:
            raise _BadQuery("limit must be a positive integer")
    offset = 0
    if "offset" in query:
        try:
            offset = max(0, int(query["offset"]))
        except ValueError:
            raise _BadQuery("offset must be an integer") from None
    return statuses, query.get("workflow_id"), sort_by, sort_order, limit, offset


class JobsRoutes:
    """The jobs API handlers, mixed into :class:`~hotfolder.testing.routes.Routes` (whose ``prompts``
    and ``interrupt`` they use); the 0.4x profile's route table names them."""

    prompts: PromptQueue
    interrupt: asyncio.Event

    async def get_jobs(self, request: web.Request) -> web.Response:
        try:
            statuses, workflow_id, sort_by, sort_order, limit, offset = _list_query(request.query)
        except _BadQuery as err:
            return web.json_response({"error": str(err)}, status=400)
        running, pending, history = self.prompts.snapshot()
        jobs = [queue_job(item, "in_progress") for item in running if "in_progress" in statuses]
        jobs += [queue_job(item, "pending") for item in pending if "pending" in statuses]
        finished = [history_job(prompt_id, entry) for prompt_id, entry in history.items()]
        jobs += [job for job in finished if job["status"] in statuses]
        if workflow_id:
            jobs = [job for job in jobs if job.get("workflow_id") == workflow_id]
        jobs.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
        total = len(jobs)
        page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
        pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
        return web.json_response({"jobs": page, "pagination": pagination})

    async def get_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        running, pending, history = self.prompts.snapshot()
        job = None
        if job_id in history:
            job = history_job(job_id, history[job_id], detail=True)
        else:
            for items, status in ((running, "in_progress"), (pending, "pending")):
                found = next((item for item in items if item[1] == job_id), None)
                if found is not None and job is None:
                    job = queue_job(found, status, detail=True)
        if job is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(job)

    def _cancel(self, job_id: str) -> bool:
        """Interrupt ``job_id`` if it runs, dequeue it if it waits; ``False`` for finished or unknown ids.
        Check and interrupt happen in the event loop that also starts prompts, so a cancel cannot hit a
        prompt that started in between (ComfyUI: ``PromptQueue.interrupt_if_running``)."""
        if self.prompts.delete(job_id):
            logger.info("Cancelling pending prompt %s", job_id)
            return True
        if self.prompts.is_running(job_id):
            logger.info("Cancelling running prompt %s", job_id)
            self.interrupt.set()
            return True
        return False

    async def post_job_cancel(self, request: web.Request) -> web.Response:
        return web.json_response({"cancelled": self._cancel(request.match_info["job_id"])})

    async def post_jobs_cancel(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError:
            return web.json_response({"error": "Request body must be valid JSON"}, status=400)
        job_ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(job_ids, list):
            return web.json_response({"error": "job_ids must be a list"}, status=400)
        invalid = []
        for job_id in job_ids:
            try:
                canonical_uuid(job_id)
            except InvalidPromptId:
                invalid.append(job_id if isinstance(job_id, str) else repr(job_id))
        if invalid:
            return web.json_response({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400)
        results = [self._cancel(job_id) for job_id in job_ids]
        return web.json_response({"cancelled": any(results)})
