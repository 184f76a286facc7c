"""The plugin system: loading plugins, calling hooks, running post-processors.

Quick start for plugin authors (the full guide is ``docs/plugins.md``). Drop a file into ``plugins/``::

    # plugins/shout.py
    from hotfolder import hookimpl

    @hookimpl
    def prepare_jinja2_environment(env):
        env.filters["shout"] = lambda text: str(text).upper() + "!"

and write ``"{{ prompt | shout }}"`` in a template. To share it, package it with an entry point in the
``hotfolder`` group: ``[project.entry-points.hotfolder] shout = "hotfolder_shout"``. Hooks and their
contracts are in :mod:`hotfolder.hookspecs`, the types they hand over in :mod:`hotfolder.plugin_api`.

This package's modules: :mod:`~hotfolder.plugins.loader` builds the plugin manager (built-ins, entry
points, ``plugins/*.py``) and lists plugins; :mod:`~hotfolder.plugins.hooks` is :class:`Hooks`, the
typed facade the pipeline calls plugins through; :mod:`~hotfolder.plugins.postprocess` chooses and
runs post-processors. The names below are the public ones, importable from ``hotfolder.plugins``.
"""

from hotfolder.plugin_api import StagedJob, file_digest, get_plugin_logger, plugin_config
from hotfolder.plugins.hooks import Hooks, ScenarioKey, load_hooks
from hotfolder.plugins.loader import (
    DEFAULT_PLUGINS,
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    LOAD_ENV,
    TRACE_ENV,
    PluginManager,
    get_plugin_manager,
    hook_names,
    hook_signature,
    iter_hookimpls,
    list_plugins,
    load_local_plugins,
)
from hotfolder.plugins.postprocess import Postprocessor, parse_postprocess, run_postprocessors

__all__ = [
    "DEFAULT_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "LOAD_ENV",
    "TRACE_ENV",
    "Hooks",
    "PluginManager",
    "Postprocessor",
    "ScenarioKey",
    "StagedJob",
    "file_digest",
    "get_plugin_logger",
    "get_plugin_manager",
    "hook_names",
    "hook_signature",
    "iter_hookimpls",
    "list_plugins",
    "load_hooks",
    "load_local_plugins",
    "parse_postprocess",
    "plugin_config",
    "run_postprocessors",
]
