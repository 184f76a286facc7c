"""Errors hotfolder reports to its users.

Every error a user can cause or meet carries enough to act on: what failed, where (file, job, node,
input), and a hint. The daemon catches :class:`HotfolderError` at the job boundary and turns it into
``inbox/failed/<name>.error.json``; the CLI turns it into a one-line message and exit status 1.
"""

from __future__ import annotations

from typing import Any

from hotfolder.redact import redact_data, redact_text


class HotfolderError(Exception):
    """Base class: a failure explained to the user, never shown as a bare traceback.

    ``stage`` names the pipeline stage, ``where`` holds structured location fields (file, job, node,
    input, line, ...), ``hint`` says how to fix it.
    """

    stage = "hotfolder"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: dict[str, Any] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = dict(where or {})
        self.details = details

    def __str__(self) -> str:
        """The message and the hint, credentials redacted (:mod:`hotfolder.redact`)."""
        text = self.message
        if self.hint:
            text += f"\nHint: {self.hint}"
        return redact_text(text)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape written into error files, credentials redacted (a server's answer in
        ``details`` may quote them)."""
        out: dict[str, Any] = {
            "stage": self.stage,
            "error": type(self).__name__,
            "message": self.message,
        }
        if self.where:
            out["where"] = self.where
        if self.hint:
            out["hint"] = self.hint
        if self.details is not None:
            out["details"] = self.details
        return redact_data(out)


class ConfigError(HotfolderError):
    """hotfolder.toml, HOTFOLDER_* variables or CLI options are wrong. Seen at startup."""

    stage = "config"


class ScenarioError(HotfolderError):
    """A scenario file cannot be read or expanded into jobs. The input goes to failed/."""

    stage = "parse"


class TemplateError(HotfolderError):
    """A template is missing, malformed, in UI format, or fails to render for a job."""

    stage = "render"


class AddressError(TemplateError):
    """A node address (``<node>.<input>``) matches no node or several nodes."""

    stage = "inject"


class ServerError(HotfolderError):
    """ComfyUI could not be reached or answered something unusable. Jobs wait and retry; not a job failure."""

    stage = "server"


class ServerUnavailable(ServerError):
    """ComfyUI is not reachable right now (connection refused, DNS, TLS). Retry later."""


class OutcomeUnknown(ServerError):
    """A request may or may not have taken effect (timeout, connection dropped mid-request)."""


class UploadError(HotfolderError):
    """ComfyUI refused a scenario's input file (``POST /upload/image``). The job fails."""

    stage = "upload"


class PromptRejected(HotfolderError):
    """ComfyUI refused the workflow (HTTP 400, node_errors). The job fails."""

    stage = "submit"


class ExecutionFailed(HotfolderError):
    """ComfyUI ran the workflow and it failed (execution_error) or was interrupted."""

    stage = "track"


class JobTimeout(HotfolderError):
    """The job did not finish within its deadline."""

    stage = "track"


class OutputError(HotfolderError):
    """An output could not be downloaded or published."""

    stage = "download"


class PluginError(HotfolderError):
    """A plugin failed to load or broke its contract."""

    stage = "plugins"
