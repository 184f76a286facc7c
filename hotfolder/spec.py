"""Plain value types passed between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JobSpec:
    """One job expanded from a scenario file, with every random value already drawn.

    ``index`` is the 1-based position of the job within its file. ``name`` is the job name used for the
    outbox folder (already unique within the file). ``template`` is ``None`` when the scenario names none
    (the configured default applies). ``params`` are template variables, ``set`` maps node addresses
    (``"6.text"``, ``"KSampler.cfg"``) to values, ``inputs`` maps node addresses to local file paths
    (relative to the scenario file). ``source`` is the scenario file's path, ``line`` the line the job came
    from where the format has lines (csv, jsonl, txt).
    """

    index: int
    name: str
    source: Path
    template: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    line: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    matrix: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "source": str(self.source),
            "template": self.template,
            "params": self.params,
            "set": self.set,
            "inputs": self.inputs,
            "line": self.line,
            "options": self.options,
            "matrix": self.matrix,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(
            index=data["index"],
            name=data["name"],
            source=Path(data["source"]),
            template=data.get("template"),
            params=dict(data.get("params") or {}),
            set=dict(data.get("set") or {}),
            inputs=dict(data.get("inputs") or {}),
            line=data.get("line"),
            options=dict(data.get("options") or {}),
            matrix=dict(data.get("matrix") or {}),
        )
