"""What happens to files and jobs, as typed events for progress displays, status, metrics and plugins;
and the job log adapter that prefixes a job's log lines with its file and name.

One frozen dataclass per kind, all sharing :class:`Event` (``kind``, ``file``, ``job_id``, ``job``).
Each also offers ``detail``, the kind's own fields as the dict plugins and status.json have always
read, and :meth:`Event.to_dict` for JSON. This module imports nothing of the engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened to a file (``job`` is None) or to one of its jobs."""

    kind: ClassVar[str] = "event"
    file: str
    job_id: str
    job: str | None = None

    @property
    def detail(self) -> dict[str, Any]:
        """The kind's own fields, as a dict (what ``Event.detail`` held before events were typed)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "job_id": self.job_id, "job": self.job, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class Claimed(Event):
    """A file was taken from the inbox into its job folder."""

    kind: ClassVar[str] = "claimed"


@dataclass(frozen=True, kw_only=True)
class Rendered(Event):
    """A file was parsed and its jobs rendered (``jobs``: how many, failed ones included)."""

    kind: ClassVar[str] = "rendered"
    jobs: int

    @property
    def detail(self) -> dict[str, Any]:
        return {"jobs": self.jobs}


@dataclass(frozen=True, kw_only=True)
class Submitted(Event):
    """A job's prompt was queued on ``server`` (its display URL)."""

    kind: ClassVar[str] = "submitted"
    prompt_id: str | None
    server: str

    @property
    def detail(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "server": self.server}


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """A running job's node or its step changed."""

    kind: ClassVar[str] = "progress"
    node: str | None
    value: float | None
    max: float | None

    @property
    def detail(self) -> dict[str, Any]:
        return {"node": self.node, "value": self.value, "max": self.max}


@dataclass(frozen=True, kw_only=True)
class Resubmitted(Event):
    """A server lost a job's prompt (it restarted): it is submitted again under the same id."""

    kind: ClassVar[str] = "resubmitted"
    server: str
    prompt_id: str | None

    @property
    def detail(self) -> dict[str, Any]:
        return {"server": self.server, "prompt_id": self.prompt_id}


@dataclass(frozen=True, kw_only=True)
class Published(Event):
    """A job's outputs are in the outbox, in the folder ``path``."""

    kind: ClassVar[str] = "published"
    path: str

    @property
    def detail(self) -> dict[str, Any]:
        return {"path": self.path}


@dataclass(frozen=True, kw_only=True)
class Failed(Event):
    """A job failed (``job`` set) or a whole file did (``job`` is None); ``error`` is the error's dict."""

    kind: ClassVar[str] = "failed"
    error: dict[str, Any]

    @property
    def detail(self) -> dict[str, Any]:
        return {"error": self.error}


@dataclass(frozen=True, kw_only=True)
class Archived(Event):
    """A file's input went to ``done/`` or ``failed/`` (``path``; None if it could not be moved, or
    ``hotfolder process`` left it where it was). ``error`` is its error document when it failed;
    ``published`` the outbox folders of its published jobs, in job order."""

    kind: ClassVar[str] = "archived"
    failed: bool
    path: str | None
    error: dict[str, Any] | None = None
    published: tuple[str, ...] = ()

    @property
    def detail(self) -> dict[str, Any]:
        return {"failed": self.failed, "path": self.path, "error": self.error, "published": list(self.published)}


class JobLog(logging.LoggerAdapter):
    """Prefixes job log lines with ``[file job]`` and passes both as fields for JSON logs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**dict(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            extra = self.extra or {}
            prefix = f"[{extra['file']} {extra['job']}] "
            if args:  # the prefix becomes part of a %-format: a '%' in a file name must stay a '%'
                prefix = prefix.replace("%", "%%")
            self.logger.log(level, prefix + str(msg), *args, **kwargs)
