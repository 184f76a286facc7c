"""Logging, configured once by the CLI. Library modules only call ``logging.getLogger(__name__)``.

Two formats:

* ``text`` (the default): ``time level logger: message`` for a terminal or a log file;
* ``json``: one JSON object per line for log shippers, with ``time``, ``level``, ``logger``, ``message``
  and every ``extra=`` field the call gave (``file``, ``job``, ``job_id``, ``server``, ...), plus
  ``exception`` when there is a traceback.

When stderr goes to journald (``JOURNAL_STREAM`` names the stream stderr is connected to, as systemd sets
it), text lines leave out the timestamp, because the journal adds its own, and every line, text or JSON,
starts with a ``<N>`` priority prefix that journald turns into the entry's priority and strips.

Every record is one line, whatever its values hold: in text lines control characters, line separators
and bidi overrides are escaped (``\\n``, ``\\x1b``, ``\\u2028``; :func:`hotfolder.redact.escape_control`), so a
file name cannot forge log lines; a traceback's lines are indented. JSON lines escape them as JSON does.
Both formats pass the message, the traceback and the extra fields through
:func:`hotfolder.redact.redact_text`: the last safety net for credentials.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any, TextIO

from hotfolder.errors import ConfigError
from hotfolder.redact import escape_control, redact_data, redact_text

FORMATS = ("text", "json")

# syslog priorities (sd-daemon(3)): journald reads "<N>" at the start of a line
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = set(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {"message", "asctime"}


def priority(levelno: int) -> int:
    """The syslog priority for a logging level (levels between the standard ones round down)."""
    for level, prio in _PRIORITIES:
        if levelno >= level:
            return prio
    return 7


def stream_is_journal(stream: TextIO, env: dict[str, str] | None = None) -> bool:
    """True if ``stream`` is the journald stream named by ``$JOURNAL_STREAM`` ("<device>:<inode>").

    systemd sets the variable for a service whose output goes to the journal; comparing it with the
    stream itself (as sd_journal_stream_fd(3) recommends) keeps a child whose stderr was redirected, or a
    command run from such a service's shell, from writing journald prefixes into a file or a terminal.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of ``record`` (``file``, ``job``, ...), without logging's own attributes."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _indented(text: str) -> str:
    """A traceback or stack for a text line: credentials redacted, control characters escaped, and every
    line indented, so none of them can pass for a log record of its own."""
    return "\n".join("  " + line for line in escape_control(redact_text(text), keep_newlines=True).split("\n"))


class TextFormatter(logging.Formatter):
    """The text format: one line per record, its message redacted and its control characters escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_control(redact_text(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _indented(super().formatStack(stack_info))


# Characters JSON may leave raw that still end a line for some readers (str.splitlines, JavaScript) or
# reorder what a terminal shows (bidi controls), and lone surrogates (from undecodable file names), which
# no UTF-8 stream can write: written as \u escapes, which decode to the same text.
_JSON_RAW = re.compile("[\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        ts = record.created
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, redact_data(value))
        if record.exc_info:
            out["exception"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = redact_text(self.formatStack(record.stack_info))
        text = json.dumps(out, ensure_ascii=False, default=str)
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _PriorityPrefix(logging.Formatter):
    """Wraps another formatter and puts a ``<N>`` journald priority in front of each line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        prefix = f"<{priority(record.levelno)}>"
        # journald reads each line on its own: a traceback's lines keep the record's priority
        return "\n".join(prefix + line for line in text.split("\n"))


def make_formatter(fmt: str = "text", *, journal: bool = False) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown log format {fmt!r}.", hint="Use 'text' or 'json'.")
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JSONFormatter()
    elif journal:
        formatter = TextFormatter("%(name)s: %(message)s")
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return _PriorityPrefix(formatter) if journal else formatter


def configure_logging(verbosity: int = 0, *, fmt: str = "text", stream: TextIO | None = None,
                      journal: bool | None = None) -> None:
    """verbosity: -1 quiet (warnings), 0 info, 1+ debug; ``fmt``: "text" or "json".

    ``journal`` None means: detect whether ``stream`` (default stderr) is journald's.
    """
    stream = stream or sys.stderr
    if journal is None:
        journal = stream_is_journal(stream)
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt, journal=journal))
    root = logging.getLogger("hotfolder")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Neither format shows the process id or the multiprocessing name; not gathering them saves a
    # getpid() system call per log line (logging's documented switches, set by the CLI only).
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if verbosity < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        logging.getLogger("websocket").setLevel(logging.CRITICAL)
