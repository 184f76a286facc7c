"""What hotfolder hands to plugins and what plugins may call: the types of the plugin API.

A low module: it imports nothing of the engine, so :mod:`hotfolder.hookspecs` (the hook contracts)
and any plugin can import it. Plugin authors reach these names through ``hotfolder`` and
``hotfolder.plugins`` (``from hotfolder.plugins import plugin_config, StagedJob``); the guide is
``docs/plugins.md``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hotfolder.errors import PluginError
from hotfolder.paths import safe_filename, unique_name

__all__ = [
    "LOCAL_MODULE_PREFIX",
    "Conversion",
    "RegisterPostprocessor",
    "RegisterScenarioKey",
    "StagedJob",
    "TemplateInfo",
    "file_digest",
    "get_plugin_logger",
    "plugin_config",
]

#: Local plugin files are imported under this private package name, as ``<prefix>.<stem>``.
LOCAL_MODULE_PREFIX = "hotfolder._local_plugins"


class RegisterScenarioKey(Protocol):
    """The ``register`` callback of ``register_scenario_keys``."""

    def __call__(self, name: str, *, description: str = "", check: Callable[[Any], Any] | None = None) -> None:
        """Allow the key ``name`` in scenario files (top level, ``jobs:`` entries and ``.jsonl`` lines).

        :param name: the key, e.g. ``"loras"``; it must not be a built-in key or another plugin's.
        :param description: one line for ``hotfolder plugins`` and error hints.
        :param check: called at parse time with the key's value (plain JSON data); raise ``ValueError``
            with a message to reject it (the scenario fails with that message), return ``None`` to keep
            the value or return a replacement (a normalised form) to keep instead.
        """


class RegisterPostprocessor(Protocol):
    """The ``register`` callback of ``register_postprocessors``."""

    def __call__(
        self,
        name: str,
        function: Callable[[StagedJob], None],
        *,
        description: str = "",
        check: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Offer the post-processor ``name``; scenarios and ``hotfolder.toml`` choose it by that name.

        :param function: called as ``function(job)`` with a :class:`StagedJob`.
        :param description: one line for ``hotfolder plugins``.
        :param check: called with the options when a scenario or the config chooses this
            post-processor, before anything is submitted; raise ``ValueError`` to reject them, return
            ``None`` to keep them or a replacement mapping (defaults filled in).
        """


class TemplateInfo(Protocol):
    """The template a job came from, as ``prepare_workflow`` sees it (a loaded, checked template)."""

    @property
    def name(self) -> str:
        """The template's name (its file name without the suffix)."""

    @property
    def path(self) -> Path:
        """The template file."""

    @property
    def sha256(self) -> str:
        """SHA-256 of the template file's bytes."""


@dataclass
class StagedJob:
    """A finished job just before it is published: what a post-processor works on.

    ``folder`` is the job's hidden staging folder, holding the downloaded files; it becomes
    ``outbox/<job>/`` when every post-processor has run. ``sidecar`` is the dict that will be written as
    ``<job>.json``: change it in place (``sidecar["outputs"]`` lists the files). ``options`` are this
    post-processor's options from the scenario or ``hotfolder.toml`` (after its ``check``).
    """

    folder: Path
    sidecar: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The job name (the outbox folder's name)."""
        return str(self.sidecar.get("name") or self.folder.name)

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The sidecar's output entries (``file``, ``node``, ``kind``, ``size``, ``sha256``, ...)."""
        outputs = self.sidecar.setdefault("outputs", [])
        assert isinstance(outputs, list)
        return outputs

    def path(self, entry: Mapping[str, Any]) -> Path:
        """The staged file of an output entry."""
        return self.folder / safe_filename(str(entry["file"]))

    def free_name(self, name: str) -> str:
        """``name`` made safe and unique in the folder (``x.webp``, ``x-2.webp``, ...)."""
        return unique_name(self.folder, safe_filename(name))

    def add_output(self, path: Path, **fields: Any) -> dict[str, Any]:
        """Record a file you wrote into :attr:`folder` as an output; return its new entry."""
        if path.parent.resolve() != self.folder.resolve() or not path.is_file():
            raise PluginError(
                f"Post-processor output {str(path)!r} is not a file directly inside the job's folder.",
                hint="Write new files into StagedJob.folder (use StagedJob.free_name for a name).",
            )
        entry = {"file": path.name, **fields}
        self.outputs.append(entry)
        self.refresh_output(entry)
        return entry

    def refresh_output(self, entry: dict[str, Any]) -> None:
        """Recompute ``size`` and ``sha256`` of an entry whose file changed (or was renamed)."""
        size, sha = file_digest(self.path(entry))
        entry["size"], entry["sha256"] = size, sha

    def remove_output(self, entry: dict[str, Any]) -> None:
        """Delete an output's file and its entry."""
        self.path(entry).unlink(missing_ok=True)
        self.outputs[:] = [e for e in self.outputs if e is not entry]


def file_digest(path: Path) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def plugin_config(settings: Any, name: str) -> dict[str, Any]:
    """The ``[plugin_config.<name>]`` table of ``hotfolder.toml`` (``{}`` if there is none or no settings)."""
    tables = getattr(settings, "plugin_config", None) or {}
    table = tables.get(name) or {}
    return dict(table)


_PLUGIN_MODULE_PREFIXES = (f"{LOCAL_MODULE_PREFIX}.", "hotfolder.default_plugins.")


class _PluginLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{(self.extra or {}).get('plugin')}] {msg}", kwargs


def get_plugin_logger(name: str) -> logging.LoggerAdapter:
    """A logger for a plugin: ``hotfolder.plugins.<name>``, every line prefixed ``[<name>]``.

    Pass your module's ``__name__``; hotfolder's private prefix of local plugin modules is removed.
    """
    for prefix in _PLUGIN_MODULE_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return _PluginLogger(logging.getLogger(f"hotfolder.plugins.{name}"), {"plugin": name})


@dataclass
class Conversion:
    """A template converted to API format: what the built-in UI converter
    (:func:`hotfolder.templates.convert.convert_ui_workflow`) and a ``parse_workflow`` plugin give.

    ``workflow`` is the API workflow; ``source_format`` what the template was (``"ui"``). ``warnings`` are things the user may want to know (values
    defaulted or ignored, inputs left unconnected by a bypass). ``controls`` maps
    ``"<node_id>.<input>"`` to its control_after_generate mode where that is not ``"fixed"``
    (``"randomize"``: the UI would draw a new seed per run; the saved value is used here).
    ``dropped`` lists the UI nodes that have no API node (notes, reroutes, primitives, muted and
    bypassed nodes) as ``"<id> (<type>): <why>"``.
    """

    workflow: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    controls: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    source_format: str = "ui"
