"""The per-file pipeline stages: one module per stage, each with a verb-phrase public function. The
stages a job runs take its :class:`~hotfolder.stages.context.JobContext` and own their retries, record
writes and events.

The order in which a job runs them is set by ``hotfolder.engine.job.run_job`` (claim, parse and render
by ``hotfolder.engine.intake``); this list follows it, and each module's docstring opens with its number ("Stage N of 10: ...").

1. intake (``hotfolder/watch.py``, outside this package: a long-lived watcher, not a per-file step)
2. ``claim``: take a complete inbox file by one atomic rename into its own job folder
3. ``parse``: turn the claimed scenario file into ``JobSpec`` objects (``parse_scenario``)
4. render (``hotfolder.templates``, outside this package): fill a workflow template for one job
   (``load.load_template``, ``render.render_workflow``, ``prepare.render_job``)
5. inject (``hotfolder.templates.inject``): set node inputs by ``<node>.<input>`` address (``set_input``,
   ``apply_overrides``), done while rendering
6. ``submit``: POST the workflow under hotfolder's own prompt_id
7. ``track``: follow the prompt until ComfyUI has finished and recorded it
8. ``download``: stream the outputs into staging
9. ``publish``: move the finished staging folder into ``outbox/<job-name>/``
10. ``archive``: move the input to ``inbox/done/`` or ``inbox/failed/``
"""
