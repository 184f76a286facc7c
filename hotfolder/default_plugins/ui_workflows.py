"""The built-in UI workflow converter: a ``.json`` template saved with ComfyUI's plain Save button.

A ``trylast`` implementation of ``parse_workflow``: a plugin that reads the same format itself runs
first and wins. The converter is :func:`hotfolder.templates.convert.convert_ui_workflow`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hotfolder.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hotfolder.templates import convert


@hookimpl(trylast=True)
def parse_workflow(data: Any, name: str, object_info: Callable[[], Mapping[str, Any]]) -> convert.Conversion | None:
    from hotfolder.templates import convert  # noqa: PLC0415 - only for a template not in API format

    return convert.convert_if_ui(data, name, object_info)
