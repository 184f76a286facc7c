"""The built-in scenario formats (``.json``, ``.yaml``/``.yml``, ``.toml``, ``.csv``, ``.jsonl``, ``.txt``).

A ``trylast`` implementation of ``parse_scenario_file``: a plugin that handles one of these suffixes
itself runs first and wins. The parsers live in :data:`hotfolder.stages.parse.FORMATS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hotfolder.hookspecs import hookimpl
from hotfolder.stages import parse


@hookimpl(trylast=True)
def parse_scenario_file(path: Path, text: str) -> list[tuple[dict[str, Any], int | None]] | None:
    parser = parse.FORMATS.get(path.suffix.lower())
    if parser is None:
        return None
    return parser(path, text)
