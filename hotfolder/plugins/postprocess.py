"""Post-processing: the post-processors plugins register, choosing them (``postprocess:``) and running them.

A job's ``postprocess`` choice (its scenario key, or else the configured default) is read by
:func:`parse_postprocess`; :func:`run_postprocessors` runs the chosen ones, in order, on the job's
staging folder (a :class:`~hotfolder.plugin_api.StagedJob`) between download and publish.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hotfolder import fsguard
from hotfolder.errors import HotfolderError, PluginError, filesystem_error
from hotfolder.plugin_api import StagedJob
from hotfolder.plugins.loader import error_location, short_repr

logger = logging.getLogger("hotfolder.plugins")


@dataclass(frozen=True)
class Postprocessor:
    """A post-processor a plugin offered: ``function(job)`` and its options ``check``."""

    name: str
    plugin: str
    function: Callable[[StagedJob], None]
    description: str = ""
    check: Callable[[dict[str, Any]], Any] | None = None


class HasPostprocessors(Protocol):
    """What choosing and running post-processors needs: the registered ones by name (:class:`Hooks`)."""

    @property
    def postprocessors(self) -> Mapping[str, Postprocessor]: ...


def parse_postprocess(hooks: HasPostprocessors, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """Turn a ``postprocess`` value into ``[(name, options), ...]``, checking names and options.

    ``value`` is ``None`` (nothing), a name, a list of names and ``{"name": ..., **options}`` tables, or
    a mapping ``{name: options}``. Raise :class:`PluginError` for an unknown name (listing the known
    ones) or options the post-processor's ``check`` refuses.
    """
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, Mapping):
        items = []
        for name, options in value.items():
            if options is not None and not isinstance(options, Mapping):
                raise _postprocess_error(f"'postprocess' gives {name!r} the options {short_repr(options)}, not a table")
            items.append({**(options or {}), "name": name})
    elif isinstance(value, list):
        items = value
    else:
        raise _postprocess_error(f"'postprocess' is {type(value).__name__}; expected a list of names or tables")
    chosen = []
    for item in items:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name = item["name"]
            options = {k: copy.deepcopy(v) for k, v in item.items() if k != "name"}
        else:
            raise _postprocess_error(
                f"'postprocess' entry {short_repr(item)} is neither a name nor a table with a 'name'"
            )
        processor = hooks.postprocessors.get(name)
        if processor is None:
            close = difflib.get_close_matches(name, list(hooks.postprocessors), n=1, cutoff=0.6)
            known = ", ".join(sorted(hooks.postprocessors)) or "(none: no plugin registers one)"
            raise _postprocess_error(
                f"Unknown post-processor {name!r}",
                hint=(f"Did you mean {close[0]!r}? " if close else "") + f"Post-processors: {known}.",
                name=name,
            )
        if processor.check is not None:
            try:
                replaced = processor.check(copy.deepcopy(options))
            except (ValueError, TypeError) as err:
                raise _postprocess_error(
                    f"Post-processor {name!r} does not accept its options: {err}", name=name, plugin=processor.plugin
                ) from err
            if replaced is not None:
                options = dict(replaced)
        chosen.append((name, options))
    return chosen


def _postprocess_error(message: str, *, hint: str | None = None, **where: Any) -> PluginError:
    return PluginError(
        message + ".",
        hint=hint or "Write postprocess: [name, {name: other, option: value}] (see docs/plugins.md).",
        where={"key": "postprocess", **where},
    )


def run_postprocessors(hooks: HasPostprocessors, postprocess: Any, staging_dir: Path, sidecar: dict[str, Any]) -> None:
    """Run the chosen post-processors, in order, on a finished job's staging folder and sidecar.

    ``postprocess`` is the job's choice (its scenario ``postprocess:`` or else the configured default;
    see :func:`parse_postprocess`). Records ``sidecar["postprocess"]`` (name, plugin, options of each).
    A failing post-processor fails the job: its :class:`~hotfolder.errors.HotfolderError` passes
    through, anything else becomes a :class:`PluginError` naming the post-processor and its plugin.
    """
    chosen = parse_postprocess(hooks, postprocess)
    if not chosen:
        return
    done = sidecar.setdefault("postprocess", [])
    for name, options in chosen:
        processor = hooks.postprocessors[name]
        job = StagedJob(folder=staging_dir, sidecar=sidecar, options=options)
        logger.debug("[%s] post-processor %s (%s) %s", job.name, name, processor.plugin, options)
        try:
            processor.function(job)
        except HotfolderError as err:
            err.where.setdefault("postprocessor", name)
            err.where.setdefault("plugin", processor.plugin)
            raise
        except OSError as err:
            if err.errno in fsguard.SYSTEMIC:
                raise  # a full or read-only outbox: the job waits, staged, and runs this again once it recovers
            problem = filesystem_error(err, path=staging_dir)
            raise PluginError(
                f"Post-processor {name!r} (plugin {processor.plugin!r}) failed: {problem.message}",
                hint=problem.hint,
                where={"postprocessor": name, "plugin": processor.plugin, **error_location(err)},
            ) from err
        except Exception as err:  # noqa: BLE001 - a post-processor's failure fails the job, named
            raise PluginError(
                f"Post-processor {name!r} (plugin {processor.plugin!r}) failed: {type(err).__name__}: {err}",
                hint="Check the post-processor's options; if they are right, this is a bug in the plugin.",
                where={"postprocessor": name, "plugin": processor.plugin, **error_location(err)},
            ) from err
        done.append({"name": name, "plugin": processor.plugin, "options": _jsonable(options)})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
