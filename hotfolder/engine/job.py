"""One job, read top to bottom: :func:`run_job` is the only place the order of a job's steps lives.

    render (if deferred) → inject → upload → submit → track | download → post-process → publish → archive

The part before ``|`` runs on a job worker, holding one of the server's in-flight places from the
submit to the prompt's end; the rest runs on that server's output workers (see
:mod:`hotfolder.engine.scheduler`), so the submitting side never waits for a download. Each step is a
stage module that owns its retries, record writes and events through the job's
:class:`~hotfolder.stages.context.JobContext`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from hotfolder.comfy.client import ComfyClient, PromptResult
from hotfolder.engine.routing import Failover, Router, move_away
from hotfolder.engine.scheduler import Slots
from hotfolder.record import read_file
from hotfolder.stages import download, publish, submit, track, upload
from hotfolder.stages.context import JobContext


@dataclass
class Services:
    """What a job needs of the engine besides its context: routing, in-flight places, late rendering,
    and the pause (``hold(job)`` waits while the job may not be submitted)."""

    router: Router
    slots: Slots
    render_later: Callable[[JobContext], None]
    hold: Callable[..., None] = lambda job, posting=False, give_up=None: None


@dataclass
class Outputs:
    """The hand-off: a job whose prompt ended (or was downloaded before a restart), for the output workers."""

    ctx: JobContext
    client: ComfyClient
    workflow: dict[str, Any]
    result: PromptResult | None  # None: already downloaded, only the publish is left
    fresh: bool = False  # downloaded by this process, and no publish tried since
    since: float = field(default_factory=time.monotonic)  # when it was handed on


def run_job(ctx: JobContext, services: Services, outputs: Outputs | None = None) -> Generator[Outputs, None, None]:
    """Run one job's steps in order. Without ``outputs`` (on a job worker): up to the prompt's end,
    then yield the hand-off. With them (on an output worker): the rest. Either part can be run again
    from its start (a full disk stopped it): every step skips what the job's state says is done."""
    job, router = ctx.job, services.router
    # a cancelled job is not submitted, downloaded or published (a prompt it has on a server is taken off)
    submit.end_if_cancelled(ctx, router.client_named(job.server) if outputs is None else None)
    if outputs is None:
        services.hold(job, give_up=ctx.check_cancelled)  # paused: wait here, before anything is sent to a server
        if job.state == "unrendered":
            services.render_later(ctx)  # a UI template, once a server answers for its /object_info
        rendered = json.loads(read_file(ctx.record.workflow_path(job.index)))
        while outputs is None:
            client = router.pick(job, rendered, ctx.log)
            try:
                with router.using(client):
                    workflow = upload.with_inputs(ctx, client, rendered)  # inject and upload the input files
                    result = None
                    if job.state in submit.SUBMITTABLE:
                        services.hold(job, give_up=ctx.check_cancelled)  # paused: wait holding no in-flight place
                        with services.slots.hold(client, lambda: submit.end_if_cancelled(ctx, client)):
                            while result is None:  # None: the server lost the prompt; submit it again
                                queued = submit.submit_job(ctx, client, workflow,
                                                           before_post=lambda: services.hold(job, posting=True))
                                result = track.track_job(ctx, client, workflow, queued)
                outputs = Outputs(ctx, client, workflow, result)
            except Failover:
                move_away(ctx, client)
        yield outputs  # the hand-off: the rest runs on the server's output workers
    if outputs.result is not None:
        download.download_job(ctx, outputs.client, outputs.result)
        outputs.result, outputs.fresh = None, True  # run again (a full outbox): not downloaded twice
    ctx.check_cancelled()
    if job.state == "downloaded":
        # run again after a try cut off mid-publish: that try's sidecar may be in the staging folder
        fresh, outputs.fresh = outputs.fresh, False
        publish.publish_job(ctx, outputs.client, outputs.workflow, fresh=fresh)  # post-process and publish
    # archive: the job boundary (engine.ending) archives the file once all its jobs are finished
