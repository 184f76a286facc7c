"""Workflow templates: finding and loading them, rendering them for a job, and what that needs.

``load`` finds and checks a template (``sidecar``: its ``.toml``; ``workflow``: its JSON and the API
format; ``roles``: parameters found in a plain export; ``convert``: UI workflows to API format, through
the built-in ``parse_workflow`` plugin). ``render`` fills one for a job (``cache``: the one Jinja compile
cache; ``params``: which param goes where; ``render_errors``: failures as readable errors; ``inject``:
setting node inputs by address). ``validate`` checks a workflow against a server's node catalogue
(``nodes``: reading it; ``problems``: what is found). ``prepare`` renders a scenario's jobs, with or
without a daemon. ``/object_info`` itself is fetched and cached by :mod:`hotfolder.comfy.object_info`.

This package imports nothing here: import its modules (``from hotfolder.templates import load, render``).
"""
