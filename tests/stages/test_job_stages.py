"""The job stages read and run alone: submit, track, download and publish one job against the test
ComfyUI through a JobContext made of plain callables, with no Engine, scheduler or router."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.comfy.client import ComfyClient
from hotfolder.events import Event, JobLog, Published, Submitted
from hotfolder.record import FileRecord, JobState
from hotfolder.stages import download, parse, publish, submit, track
from hotfolder.stages.context import JobContext
from hotfolder.stages.upload import Uploads
from hotfolder.templates import load, render
from hotfolder.testing import ComfyTestServer
from tests.conftest import make_settings


@pytest.fixture
def client(comfy: ComfyTestServer, project: Path) -> Iterator[ComfyClient]:
    settings = make_settings(project, comfy.url)
    one = ComfyClient(settings.servers[0], poll_interval=0.5, history_grace=5.0)
    one.start()
    try:
        yield one
    finally:
        one.close()


def job_context(project: Path, comfy: ComfyTestServer, events: list[Event], counts: dict[str, int]) -> JobContext:
    settings = make_settings(project, comfy.url)
    (spec,) = parse.parse_scenario(Path("fox.yaml"), b"params: {width: 8, height: 8}\n", default_template="invert")
    folder = project / "job"
    folder.mkdir()
    record = FileRecord(job_id="J1", input_name="fox.yaml", folder=folder)
    job = JobState(index=1, name="fox", spec=spec)
    record.jobs = [job]

    def unexpected_wait(client: ComfyClient, **kwargs: Any) -> None:
        raise AssertionError(f"the test server went away: {client.display_url}")

    return JobContext(record=record, job=job, log=JobLog(logging.getLogger("test"), {"file": "fox.yaml", "job": "fox"}),
                      get_settings=lambda: settings, get_hooks=lambda: None, stop=threading.Event(), emit=events.append,
                      count=lambda name: counts.__setitem__(name, counts.get(name, 0) + 1),
                      wait_for_server=unexpected_wait, uploads=Uploads([]))


def test_one_job_runs_stage_by_stage_through_its_context(project: Path, comfy: ComfyTestServer,
                                                         client: ComfyClient) -> None:
    events: list[Event] = []
    counts: dict[str, int] = {}
    ctx = job_context(project, comfy, events, counts)
    workflow, _ = render.render_workflow(load.load_template(project / "templates", "invert"), ctx.job.spec)
    saved: list[tuple[str, str | None, str]] = []  # (state, prompt_id, where the server has it) at each save
    real_save = ctx.record.save

    def save(*, durable: bool = True) -> None:
        prompt_id = ctx.job.prompt_id
        saved.append((ctx.job.state, prompt_id, client.locate(prompt_id) if prompt_id else "-"))
        real_save(durable=durable)

    ctx.record.save = save  # type: ignore[method-assign]
    queued = submit.submit_job(ctx, client, workflow)
    # the prompt_id is on disk before the POST: the server did not have it when the record was saved
    assert saved[0] == ("submitting", ctx.job.prompt_id, "absent")
    assert ctx.job.state == "submitted" and queued.fresh
    assert events == [Submitted(file="fox.yaml", job_id="J1", job="fox", prompt_id=ctx.job.prompt_id,
                                server=client.display_url)]
    result = track.track_job(ctx, client, workflow, queued)
    assert result is not None and result.status == "success" and ctx.job.execution["outputs"]
    download.download_job(ctx, client, result)
    assert ctx.job.state == "downloaded" and len(ctx.job.outputs) == 1
    publish.publish_job(ctx, client, workflow, fresh=True)
    folder = project / "outbox" / "fox"
    assert ctx.job.state == "published" and (folder / "fox.json").is_file() and counts == {"published": 1}
    assert events[-1] == Published(file="fox.yaml", job_id="J1", job="fox", path=str(folder))
