"""The built-in UI workflow converter: a ``.json`` template saved with ComfyUI's plain Save button.

A ``trylast`` implementation of ``parse_workflow``: a plugin that reads the same format itself runs
first and wins. The converter is :func:`hotfolder.templates.convert.convert_ui_workflow`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hotfolder.hookspecs import hookimpl
from hotfolder.templates import convert


@hookimpl(trylast=True)
def parse_workflow(data: Any, name: str, object_info: Callable[[], Mapping[str, Any]]) -> convert.Conversion | None:
    return convert.convert_if_ui(data, name, object_info)
