"""The engine: runs claimed files through the stages against one or more ComfyUI servers.

``watch`` (:mod:`hotfolder.watch`) finds complete files; :class:`Engine` runs everything after it.
The parts: :mod:`~hotfolder.engine.intake` (claim, parse, render), :mod:`~hotfolder.engine.job` (one
job's steps, in order: the only place that order lives), :mod:`~hotfolder.engine.scheduler` (threads,
in-flight places, output workers, backpressure), :mod:`~hotfolder.engine.routing` (which server),
:mod:`~hotfolder.engine.ending` (failure and archive) and :mod:`~hotfolder.engine.recovery` (resuming
after a crash, adopting a dead instance's jobs). See docs/architecture-engine.md.
"""

from hotfolder.engine.engine import Engine

__all__ = ["Engine"]
