"""hotfolder: drop scenario files into a folder, get ComfyUI renders and a JSON record out of another.

For plugin authors: ``from hotfolder import hookimpl, get_plugin_logger`` (see ``docs/plugins.md``).
"""

from hotfolder.hookspecs import hookimpl
from hotfolder.plugin_api import get_plugin_logger
from hotfolder.version import __version__

__all__ = ["__version__", "get_plugin_logger", "hookimpl"]
