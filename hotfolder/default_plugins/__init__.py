"""hotfolder's built-in plugins: core behaviour written against the same hooks third parties use.

Each module here is listed in :data:`hotfolder.plugins.loader.DEFAULT_PLUGINS` and registered under its
module name (``hotfolder plugins --all`` shows them).
"""
