"""The job context: what a stage may do besides its own work, for one job.

A stage gets a :class:`JobContext` and through it emits events, saves the job's record, waits for a
server, honours a stop and logs with the job's prefix. The engine builds one per job; a test can build
one with plain callables, so a stage can be run and read alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hotfolder.comfy.client import Cancelled, ComfyClient, Dequeue
from hotfolder.config import Settings
from hotfolder.destination import Outbox
from hotfolder.errors import JobCancelled, OutputError
from hotfolder.events import Event, JobLog
from hotfolder.record import FileRecord, JobState


class CancelFlag:
    """Set once a user cancels the job; ``reason`` says who and when ("by ... at ...", for its error file)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        #: the prompts cancelled with this one on its server (taken off the queue before it is stopped)
        self.together: Dequeue | None = None

    def set(self, reason: str, together: Dequeue | None = None) -> bool:
        """Cancel with ``reason``; False if it already was (the first reason stays)."""
        if self.event.is_set():
            return False
        self.reason, self.together = reason, together
        self.event.set()
        return True

    def is_set(self) -> bool:
        return self.event.is_set()


@dataclass
class JobContext:
    """One job and the engine services its stages use.

    ``wait_for_server(client, movable=...)`` returns once the server answers (with ``movable``, it may
    raise to move the job to another server instead); ``count(name)`` adds one to the engine's counts;
    ``uploads`` remembers what each server already has (see :class:`hotfolder.stages.upload.Uploads`);
    ``restarts.watching(client, prompt_id)``, if given, is a context manager yielding the flag set when
    the server comes back without the prompt (see :class:`hotfolder.stages.track.Forgotten`).
    """

    record: FileRecord
    job: JobState
    log: JobLog
    get_settings: Callable[[], Settings]  # the settings now (a reload may change some)
    get_hooks: Callable[[], Any]  # the plugins' hooks now (plugins.Hooks | None; a reload may change them)
    stop: threading.Event
    emit: Callable[[Event], None]
    count: Callable[[str], None]
    wait_for_server: Callable[..., None]
    uploads: Any  # stages.upload.Uploads
    restarts: Any = None  # engine.routing.Router, or None: a lost prompt is found after lost_grace only
    cancel: CancelFlag = field(default_factory=CancelFlag)  # set: a user cancelled this job

    @property
    def settings(self) -> Settings:
        return self.get_settings()

    @property
    def hooks(self) -> Any:
        return self.get_hooks()

    @property
    def destination(self) -> Outbox:
        """Where the job's results go: its scenario's ``destination:``, else the outbox. A name the settings
        no longer have (a reload removed it) is an :class:`OutputError` naming the ones they have."""
        settings = self.settings
        name = self.job.spec.options.get("destination") if self.job.spec is not None else None
        try:
            return settings.destination(name)
        except KeyError:
            raise OutputError(
                f"Job {self.job.name!r} goes to destination {name!r}, which the settings no longer define "
                f"(allowed: {', '.join(settings.destination_names)}).",
                hint="Add it back to [destinations] in hotfolder.toml and move the input file back to inbox/.",
                where={**self.where(), "key": "destination"}) from None

    def save(self, *, durable: bool = True) -> None:
        """Write the job's record (see :meth:`FileRecord.save`)."""
        self.record.save(durable=durable)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``; raise Cancelled if the engine stops meanwhile (the job stays recorded)."""
        self.stop.wait(seconds)
        if self.stop.is_set():
            raise Cancelled(self.job.name)

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a user cancelled the job (the job fails with it)."""
        if self.cancel.is_set():
            raise self.cancelled()

    def cancelled(self) -> JobCancelled:
        """The error of a cancelled job: who cancelled it and when."""
        return JobCancelled(
            f"Job {self.job.name} of {self.record.input_name} was cancelled {self.cancel.reason}.",
            hint="Nothing was published for it. Move the file back to inbox/ to run it again.",
            where=self.where(),
        )

    def where(self, client: ComfyClient | None = None) -> dict[str, Any]:
        """The error location fields for this job (and the server)."""
        out = {"file": self.record.input_name, "job": self.job.name}
        if client is not None:
            out["server"] = client.display_url
        return out
