"""Whether a ComfyUI server answers, as hotfolder last saw it, told in one log line per change.

The WebSocket thread reports every connection attempt and the job workers report every call that
found the server away and the first one that worked again; a line is logged only when the server
starts or stops answering, never once per retry (the line names the first failure of each time away;
``failure`` holds the latest).
:func:`explain` turns a failed connection into what failed and what to do, without quoting anything
the server or a proxy sent (an error body may repeat a request's credentials).
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from hotfolder.errors import HotfolderError
from hotfolder.redact import redact_url

logger = logging.getLogger(__name__)

FIX_ADDRESS = "Start ComfyUI there, or correct the address in `servers` (hotfolder.toml, or --server)."


def causes(err: BaseException) -> list[BaseException]:
    """``err`` and what caused it, outermost first (a ServerUnavailable wraps requests' error, which wraps
    urllib3's, which wraps the OSError): its ``__cause__``, ``__context__``, or the error it was made from
    (urllib3's ``reason``, or the first argument)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__ or _made_from(current)
    return chain


def _made_from(err: BaseException) -> BaseException | None:
    reason = getattr(err, "reason", None)
    if isinstance(reason, BaseException):
        return reason
    first = err.args[0] if err.args else None
    return first if isinstance(first, BaseException) else None


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError:
        port = None
    return f"{parts.hostname}:{port}" if port else str(parts.hostname)


def explain(err: BaseException, url: str) -> tuple[str, str]:
    """(what failed, what to do) for a failed call to the server at ``url`` (a display URL)."""
    for cause in causes(err):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"its TLS certificate is not trusted ({cause.verify_message})",
                    "If the server uses a private CA, point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its certificate "
                    "(or, only on a trusted network, set verify = false for this server).")
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or type(cause).__name__
            return (f"TLS failed ({reason})",
                    "Check the scheme: https:// for a server with TLS, http:// for one without.")
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused (nothing listens on {_host_port(url)})", FIX_ADDRESS
        if isinstance(cause, socket.gaierror):
            return (f"host name {urlsplit(url).hostname!r} not found",
                    "Correct the host name in `servers` (hotfolder.toml, or --server), or check the DNS.")
        if type(cause).__name__ == "WebSocketAddressException":  # websocket-client's failed name lookup
            return (f"host name {urlsplit(url).hostname!r} not found",
                    "Correct the host name in `servers` (hotfolder.toml, or --server), or check the DNS.")
        if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__:
            return ("no answer in time (timeout)",
                    "Check that the machine is up and that no firewall drops the connection "
                    "(connect_timeout sets how long hotfolder waits).")
        status = getattr(cause, "status_code", None)  # a WebSocket handshake the server turned down
        if isinstance(status, int):
            if status in (401, 403):
                return (f"it refused hotfolder's WebSocket (HTTP {status})",
                        "Check the token or headers configured for this server in `servers`.")
            return (f"its WebSocket answered HTTP {status}",
                    "Check that the address is ComfyUI's (with its path, if it runs behind a proxy).")
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:], FIX_ADDRESS
    if isinstance(err, HotfolderError):
        answered = re.search(r"answered (\S+ \S+) with HTTP (\d+)", err.message)
        if answered:
            return (f"it answers {answered[1]} with HTTP {answered[2]}",
                    "Check ComfyUI's log, or the proxy in front of it.")
    return f"{type(err).__name__}", FIX_ADDRESS


class Reachability:
    """One server's answering state; :meth:`down` and :meth:`up` log a line when it changes.

    ``waiting`` ends the not-answering line: what happens to the jobs meanwhile.
    """

    def __init__(self, display_url: str, *, waiting: str = "Jobs wait until it answers; hotfolder keeps trying.") -> None:
        self.display_url = redact_url(display_url)
        self.waiting = waiting
        self._lock = threading.Lock()
        self.answering: bool | None = None  # None: not known yet
        self.failure: str | None = None  # what failed, while not answering
        self._since = 0.0

    def down(self, err: BaseException) -> None:
        """A call or a connection attempt failed with ``err``."""
        what, todo = explain(err, self.display_url)
        with self._lock:
            before, self.answering, self.failure = self.answering, False, what
            if before is False:
                return  # still away (a retry failing, perhaps in another way: one line per change)
            self._since = time.monotonic()
        logger.warning("ComfyUI at %s is not answering: %s. %s %s", self.display_url, what, todo, self.waiting,
                       extra={"server": self.display_url})

    def up(self) -> None:
        """A call or a connection attempt worked."""
        with self._lock:
            before, self.answering, self.failure = self.answering, True, None
            away = time.monotonic() - self._since
        if before is None:
            logger.info("ComfyUI at %s answers.", self.display_url, extra={"server": self.display_url})
        elif before is False:
            logger.info("ComfyUI at %s is back (it did not answer for %.0f s).", self.display_url, away,
                        extra={"server": self.display_url})
