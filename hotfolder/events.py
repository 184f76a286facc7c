"""What happens to files and jobs, as events for progress displays, status, metrics and plugins; and the
job log adapter that prefixes a job's log lines with its file and name."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    """Something that happened to a file or job, for progress displays and logs."""

    kind: str  # claimed, rendered, waiting, submitted, progress, published, failed, archived
    file: str
    job_id: str
    job: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class JobLog(logging.LoggerAdapter):
    """Prefixes job log lines with ``[file job]`` and passes both as fields for JSON logs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**dict(self.extra), **kwargs.get("extra", {})}
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            prefix = f"[{self.extra['file']} {self.extra['job']}] "
            if args:  # the prefix becomes part of a %-format: a '%' in a file name must stay a '%'
                prefix = prefix.replace("%", "%%")
            self.logger.log(level, prefix + str(msg), *args, **kwargs)


