"""hotfolder: drop scenario files into a folder, get ComfyUI renders and a JSON record out of another.

For plugin authors: ``from hotfolder import hookimpl, get_plugin_logger`` (see ``docs/plugins.md``).
"""

__version__ = "0.1.0"

from hotfolder.hookspecs import hookimpl  # noqa: E402 - after __version__, which submodules import
from hotfolder.plugin_api import get_plugin_logger  # noqa: E402

__all__ = ["__version__", "get_plugin_logger", "hookimpl"]
