"""The two JSON documents hotfolder writes for users: the sidecar published beside a job's outputs
(``outbox/<job>/<job>.json``) and the error document beside a failed input (``failed/<file>.error.json``).
Their fields are a file format: add to them, never rename or remove."""

from __future__ import annotations

from typing import Any

from hotfolder.comfy.client import ComfyClient
from hotfolder.record import FileRecord, JobState, now_iso
from hotfolder.redact import redact_data
from hotfolder.version import __version__


def sidecar(record: FileRecord, job: JobState, client: ComfyClient, workflow: dict[str, Any]) -> dict[str, Any]:
    """The sidecar of ``job``, run on ``client`` with ``workflow``, as it is published now."""
    spec = job.spec
    ex = job.execution
    return {
        "hotfolder_version": __version__,
        "job_key": f"{record.job_id}/{job.index}",
        "job_id": record.job_id,
        "job_index": job.index,
        "jobs_in_file": len(record.jobs),
        "name": job.name,
        "scenario": {"file": record.input_name, "original_name": record.original_name or record.input_name,
                     "sha256": record.sha256, "line": spec.line if spec else None},
        "template": job.template,
        "params": job.params,
        "set": (spec.set if spec else None) or {},
        **({"matrix": spec.matrix} if spec is not None and spec.matrix else {}),
        "inputs": [
            {key: item.get(key) for key in ("address", "path", "local", "sha256", "size", "uploaded", "server")}
            for item in job.inputs
        ],
        "workflow": workflow,
        "server": client.display_url,
        "prompt_id": job.prompt_id,
        "comfyui_version": ex.get("comfyui_version"),
        "timestamps": {
            "claimed": record.claimed_at,
            "submitted": job.times.get("submitted"),
            "started": ex.get("started"),
            "finished": job.times.get("finished"),
            "published": now_iso(),
        },
        "node_seconds": ex.get("node_seconds") or {},
        "cached_nodes": ex.get("cached_nodes") or [],
        "outputs": job.outputs,
        "ui_values": redact_data(ex.get("ui_values") or {}),  # the server's text (a node may show a header)
        "attempts": record.attempts + 1,
        "submissions": job.submissions,
        "resubmissions": job.resubmissions,
    }


def error_document(record: FileRecord) -> dict[str, Any] | None:
    """The error document of a file whose parse failed or some of whose jobs failed; None if none did."""
    failed = [job for job in record.jobs if job.state == "failed"]
    if record.error is None and not failed:
        return None
    doc: dict[str, Any] = {"file": record.input_name, "original_name": record.original_name or record.input_name,
                           "job_id": record.job_id, "failed_at": now_iso()}
    if record.error is not None:
        doc.update(record.error)
    else:
        first = failed[0].error or {}
        doc.update(first)
        if len(record.jobs) > 1:
            doc["message"] = f"{len(failed)} of {len(record.jobs)} jobs failed. First: {first.get('message')}"
    doc["jobs"] = [
        {"index": job.index, "name": job.name, "state": job.state, "published": job.published,
         "prompt_id": job.prompt_id, "error": job.error}
        for job in record.jobs
    ]
    return doc
