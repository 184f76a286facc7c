"""Publishing into object storage (``outbox = "s3://bucket/prefix"``): the staged folder uploaded, sidecar last.

A job's outputs are downloaded and post-processed in a local staging folder (``inbox/.hotfolder/.staging/``)
as for a local outbox; then :meth:`~hotfolder.objectstore.ObjectStore.publish` uploads the files, the sidecar
last (the commit marker), and the staging folder is removed. A run cut off anywhere resumes: while the staging
folder exists the publish is done again and the store keeps what is already there intact (size and sha256);
once it is gone, the result is looked up in the store. A store that is away makes the job wait and try again,
never fail; credentials, permissions or a missing bucket fail it with the store's reason (no secret in it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hotfolder import documents, failpoints, plugins
from hotfolder.comfy.client import Cancelled, ComfyClient
from hotfolder.errors import OutputError
from hotfolder.objectstore import ObjectStoreUnavailable, Published, store_for
from hotfolder.stages.context import JobContext

T = TypeVar("T")
RETRY_PAUSE = 1.0  # seconds between publishes while the store is away (each retries for s3_deadline itself)


def publish_remote(ctx: JobContext, client: ComfyClient, workflow: dict[str, Any], staging: Path, key: str,
                   *, postprocess: Any, fresh: bool, url: str | None = None) -> str:
    """Post-process ``staging`` and upload it as the job's folder in the store at ``url`` (the outbox's when
    None); return its ``s3://`` URL. ``fresh``: downloaded by this process just now, so nothing of it can
    be in the store yet."""
    job, record = ctx.job, ctx.record
    store = store_for(ctx.settings, url or ctx.settings.outbox_url)
    staged = os.path.isdir(staging)
    found = None if fresh else _waiting(ctx, lambda: store.find(job.name, key, stop=ctx.stop))
    if found is None:
        if not staged:
            raise OutputError(f"The staged outputs of job {job.name!r} are gone ({staging}) and it is not in "
                              f"{store.destination}.", hint="Move the input file back to inbox/ to run it again.")
        sidecar = documents.sidecar(record, job, client, workflow)
        if ctx.hooks is not None:
            plugins.run_postprocessors(ctx.hooks, postprocess, staging, sidecar)
        failpoints.hit("mid_publish")
        found = _waiting(ctx, lambda: store.publish(staging, job.name, sidecar, stop=ctx.stop))
        _log(ctx, found)
    if staged:
        shutil.rmtree(staging, ignore_errors=True)  # published: a leftover is found in the store next time
    return found.url


def _log(ctx: JobContext, done: Published) -> None:
    if done.already:
        ctx.log.info("already in the store, sidecar and all: %s", done.url)
    elif done.kept:
        ctx.log.info("resumed the upload to %s: %d file(s) sent, %d already there", done.url, len(done.uploaded),
                     len(done.kept))


def _waiting(ctx: JobContext, call: Callable[[], T]) -> T:
    """``call()`` until the store answers: while it is away (ObjectStoreUnavailable after its own retries)
    the job waits and tries again, and a stop leaves it recorded for the next start (Cancelled)."""
    told = False
    while True:
        try:
            return call()
        except ObjectStoreUnavailable as err:
            if ctx.stop.is_set():
                raise Cancelled(ctx.job.name) from None
            if not told:
                ctx.log.warning("%s The job waits for the store and tries again.", err.message)
                told = True
            ctx.pause(RETRY_PAUSE)
