"""Stage 9 of 10: publish. Move a finished staging folder into ``outbox/<job-name>/`` in one rename.

Files are downloaded into ``outbox/.hotfolder-staging/<job>/`` (hidden, same filesystem), the sidecar
``<name>.json`` is written last, then the folder is renamed into place, so a consumer never sees a
half-written result. A name that is taken gets a suffix (``red-fox-2``); nothing is ever overwritten,
not even an output that has the sidecar's name (``red-fox.json`` from ComfyUI or a post-processor):
then the folder and its sidecar take the next free suffix. :func:`publish_job` does it for a job,
running its post-processors on the staging folder first. With an ``s3://`` outbox the staging folder
is in the inbox's state folder and :mod:`~hotfolder.stages.publish_s3` uploads it instead of the rename.
A scenario's ``destination:`` picks one of hotfolder.toml's ``[destinations]`` instead of the outbox
(:attr:`JobContext.destination`); the same rules hold in each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hotfolder import documents, failpoints, plugins
from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import OutputError
from hotfolder.events import Published
from hotfolder.fsguard import at_path
from hotfolder.paths import rename_noreplace, unique_name
from hotfolder.record import fsync_dir, write_json_private
from hotfolder.stages.context import JobContext


def publish_job(ctx: JobContext, client: ComfyClient, workflow: dict[str, Any], *, fresh: bool = False) -> None:
    """Post-process the job's staging folder and publish it; the job becomes ``published``. A run cut
    off after the publish rename finds its result in the outbox instead. ``fresh``: the outputs were
    downloaded by this process just now (not before a restart)."""
    job, record, destination = ctx.job, ctx.record, ctx.destination
    key = f"{record.job_id}/{job.index}"
    staging = Path(job.staging or "")
    if destination.url:
        from hotfolder.stages import publish_s3  # boto3 (the s3 extra) only for an s3:// outbox

        _finish(ctx, publish_s3.publish_remote(ctx, client, workflow, staging, key, url=destination.url,
                                                  postprocess=postprocess_options(ctx), fresh=fresh))
        return
    # The publish rename moves the staging folder away: while it exists, nothing was published yet.
    # Only a run cut off after that rename has to look through the outbox for its result.
    staged = os.path.isdir(staging)
    existing = None if staged else find_published(destination.folder, job.name, key)
    if existing is None:
        if not staged:
            raise OutputError(f"The staged outputs of job {job.name!r} are gone ({staging}).",
                              hint="Move the input file back to inbox/ to run it again.")
        sidecar = documents.sidecar(record, job, client, workflow)
        if ctx.hooks is not None:
            plugins.run_postprocessors(ctx.hooks, postprocess_options(ctx), staging, sidecar)
        existing = publish_folder(staging, destination.folder, job.name, sidecar, fresh=fresh)
    _finish(ctx, str(existing))


def _finish(ctx: JobContext, existing: str) -> None:
    """The job is published as ``existing`` (a folder, or an s3:// URL): record, count and tell it."""
    job, record = ctx.job, ctx.record
    job.published = existing
    job.state = "published"
    # Counted and told before the record is saved: a save that a full inbox stops is redone without
    # the publish (the job is "published" in memory), so this is reached once.
    ctx.count("published")
    ctx.log.info("published %d file(s) as %s", len(job.outputs), existing)
    ctx.emit(Published(file=record.input_name, job_id=record.job_id, job=job.name, path=existing))
    if not record.all_finished():
        ctx.save(durable=False)  # redone after a power cut, never repeated outside
    # else: the last job's state goes into the record with the archive name (archived next). Cut off
    # before that, the job is "downloaded" with its staging folder gone, and this finds its result in
    # the outbox instead of publishing it again.


def postprocess_options(ctx: JobContext) -> Any:
    """The job's ``postprocess:`` if its scenario has one, else ``postprocess`` from hotfolder.toml."""
    options = ctx.job.spec.options if ctx.job.spec is not None else {}
    return options["postprocess"] if "postprocess" in options else ctx.settings.postprocess


def publish_folder(staging: Path, outbox: Path, name: str, sidecar: dict[str, Any], *, fresh: bool = False) -> Path:
    """Write the sidecar into ``staging`` and rename it to a free ``outbox/<name>[-N]``; return the path.
    ``fresh``: this process filled ``staging`` just now, so no sidecar of a run cut off earlier is in it."""
    folder, base = os.fspath(staging), os.fspath(outbox)
    taken: set[str] = set()
    written = None  # our sidecar under a name that turned out to be taken
    listed = {entry.get("file") for entry in sidecar.get("outputs") or () if isinstance(entry, dict)}
    while True:
        final = unique_name(outbox, name, taken)
        if not fresh:
            for entry in os.scandir(folder):  # a sidecar left by a run cut off before a name clash
                if (entry.name.endswith(".json") and entry.name.startswith(name) and entry.name != f"{final}.json"
                        and entry.name not in listed and _is_sidecar(Path(entry.path), sidecar)):
                    os.unlink(entry.path)
        elif written is not None:
            os.unlink(os.path.join(folder, written))
            written = None
        own = os.path.join(folder, f"{final}.json")
        if os.path.lexists(own) and (fresh or f"{final}.json" in listed or not _ours(Path(own), sidecar)):
            taken.add(final)  # an output of the job has the sidecar's name: never overwrite it
            continue
        # Straight into the file: nobody reads the staging folder, and a run cut off mid-write writes it again.
        sidecar_path = os.path.join(folder, f"{final}.json")
        with at_path(sidecar_path):  # a write refused (a full outbox) names the file
            write_json_private(sidecar_path, dict(sidecar, published_as=final), fsync=True)
        fsync_dir(folder)
        failpoints.hit("mid_publish")
        try:
            rename_noreplace(folder, os.path.join(base, final))
        except FileExistsError:
            taken.add(final)
            written = f"{final}.json"
            continue
        except FileNotFoundError:
            if os.path.isdir(base) or not os.path.isdir(folder):
                raise
            outbox.mkdir(parents=True, exist_ok=True)  # removed while hotfolder ran (staging normally lives inside it)
            written = f"{final}.json"
            continue
        fsync_dir(base)
        return outbox / final


def _is_sidecar(path: Path, sidecar: dict[str, Any]) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("job_key") == sidecar.get("job_key")


def _ours(path: Path, sidecar: dict[str, Any]) -> bool:
    """Whether ``path``, left in a staging folder by a run cut off while publishing, is that run's sidecar:
    one for this job, or one cut off mid-write (not JSON). An output is listed in the sidecar instead."""
    try:
        data = json.loads(path.read_bytes())
    except ValueError:
        return True
    except OSError:
        return False
    return isinstance(data, dict) and data.get("job_key") == sidecar.get("job_key")


def find_published(outbox: Path, name: str, job_key: str) -> Path | None:
    """The outbox folder already published for ``job_key`` (after a crash mid-publish), if any."""
    if not outbox.is_dir():
        return None
    for entry in os.scandir(outbox):
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name != name and not entry.name.startswith(f"{name}-"):
            continue
        sidecar = Path(entry.path) / f"{entry.name}.json"
        if _is_sidecar(sidecar, {"job_key": job_key}):
            return Path(entry.path)
    return None
