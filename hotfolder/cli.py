"""The ``hotfolder`` command: thin click commands over library functions (the only module using click)."""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import shutil
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from hotfolder import __version__, cancel_requests, daemon, events, plugins, project, service, status
from hotfolder.comfy.object_info import FirstServer
from hotfolder.config import Settings, load_settings
from hotfolder.engine.pause import pause_inbox, pause_path, resume_inbox
from hotfolder.errors import HotfolderError
from hotfolder.log import configure_logging
from hotfolder.redact import redact_data, redact_text
from hotfolder.stages import prepare
from hotfolder.stages.claim import job_folder_name
from hotfolder.status_file import read_all_status
from hotfolder.status_report import format_status, status_problem
from hotfolder.templates import validate
from hotfolder.templates.problems import ERROR, ValidationError


@dataclass
class App:
    options: dict[str, Any]
    config: Path | None
    verbosity: int

    def load(self) -> Settings:
        """Settings from the config file, the environment and the global options (HotfolderError)."""
        return load_settings(self.config, overrides=self.options)

    def settings(self) -> Settings:
        try:
            settings = self.load()
        except HotfolderError as err:
            raise click.ClickException(str(err)) from err
        configure_logging(self.verbosity, fmt=settings.log_format)
        return settings

    def hooks(self, settings: Settings) -> plugins.Hooks:
        """Load the plugins for ``settings``; a plugin that does not load is a startup error."""
        try:
            return plugins.load_hooks(settings)
        except HotfolderError as err:
            raise click.ClickException(str(err)) from err


pass_app = click.make_pass_decorator(App)


PLUGIN_ENV_HELP = """\b
Plugins (docs/plugins.md):
  HOTFOLDER_LOAD_PLUGINS=dist,...     load only these installed plugin packages (empty: none)
  HOTFOLDER_DISABLE_PLUGINS=name,...  never load these plugins
  HOTFOLDER_TRACE_PLUGINS=1           log every plugin hook call (with -v)"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=PLUGIN_ENV_HELP)
@click.version_option(__version__, prog_name="hotfolder")
@click.option("--config", type=click.Path(path_type=Path), help="Config file [default: ./hotfolder.toml; env HOTFOLDER_CONFIG].")
@click.option("--server", "servers", multiple=True, metavar="URL", help="ComfyUI server URL (repeatable) [env HOTFOLDER_SERVERS].")
@click.option("--inbox", type=click.Path(path_type=Path), help="Inbox folder [env HOTFOLDER_INBOX].")
@click.option("--outbox", help="Outbox folder, or s3://bucket/prefix [env HOTFOLDER_OUTBOX].")
@click.option("--templates", type=click.Path(path_type=Path), help="Templates folder [env HOTFOLDER_TEMPLATES].")
@click.option("--default-template", help="Template for scenarios that name none [env HOTFOLDER_DEFAULT_TEMPLATE].")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log lines as text or JSON [env HOTFOLDER_LOG_FORMAT].")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for HTTP details).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, servers: tuple[str, ...], inbox: Path | None, outbox: str | None,
        templates: Path | None, default_template: str | None, log_format: str | None, verbose: int, quiet: bool) -> None:
    """Drop scenario files into inbox/, get ComfyUI renders and a JSON record in outbox/."""
    verbosity = -1 if quiet else verbose
    configure_logging(verbosity, fmt=log_format or "text")
    options = {"servers": list(servers), "inbox": inbox, "outbox": outbox, "templates": templates,
               "default_template": default_template, "log_format": log_format}
    ctx.obj = App(options=options, config=config, verbosity=verbosity)


@cli.command()
@click.option("--once", is_flag=True, help="Process what is in the inbox now, then exit.")
@pass_app
def run(app: App, once: bool) -> None:
    """Run the daemon: recover, scan the inbox, watch it, process every file."""
    settings = app.settings()
    hooks = app.hooks(settings)
    signals = daemon.Signals()
    daemon.install_signal_handlers(signals)
    try:
        counts = daemon.run_daemon(settings, once=once, signals=signals, reload_settings=app.load, hooks=hooks)
    except HotfolderError as err:
        raise click.ClickException(str(err)) from err
    if once:
        click.echo(f"{counts['files_done']} file(s) done, {counts['files_failed']} failed; "
                   f"{counts['published']} job(s) published, {counts['failed']} failed.")
        if counts["files_failed"]:
            sys.exit(1)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_app
def process(app: App, files: tuple[Path, ...]) -> None:
    """Run scenario FILES now, in the foreground; they stay where they are. Exit 1 if any job failed.

    On a terminal a progress bar counts the jobs (a batch of 6 counts 6) and shows the running node's
    step; warnings and errors are printed above it (-v: every step). Otherwise one line per job
    started, done or failed. FILES must be regular files: links, folders, FIFOs and devices are refused."""
    refused = [f"{path}: {why}" for path in files if (why := _not_regular(path))]
    if refused:
        raise click.ClickException("Not processed (hotfolder reads regular files only):\n  " + "\n  ".join(refused))
    settings = app.settings()
    configure_logging(max(-1, app.verbosity - 1), fmt=settings.log_format)  # the display reports each job
    hooks = app.hooks(settings)
    interrupt = threading.Event()
    previous = _cancel_on_ctrl_c(interrupt)
    with _Display(sys.stderr) as display:
        try:
            results = daemon.process_files(settings, list(files), listeners=[display.event], hooks=hooks,
                                           interrupt=interrupt)
        except HotfolderError as err:
            raise click.ClickException(str(err)) from err
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    failed = 0
    for event in results:
        if event.failed:
            failed += 1
            error = event.error or {}
            click.echo(f"FAILED {event.file}: {error.get('message')}", err=True)
            if error.get("hint"):
                click.echo(f"  Hint: {error['hint']}", err=True)
        else:
            click.echo(f"done {event.file}")
    archived = collections.Counter(event.file for event in results)
    for path in files:
        # the engine names a file by its safe name (job.json is _job.json, a newline is _); a file it
        # could not claim, by the name it had
        key = next((k for k in (job_folder_name(path.name), path.name) if archived[k] > 0), None)
        if key is not None:
            archived[key] -= 1
            continue
        failed += 1  # swapped for a link or a FIFO, or gone, after the check above: the claim refused it
        click.echo(f"FAILED {path}: not processed (it was moved, or is no longer a regular file)", err=True)
    if failed:
        sys.exit(1)


def _cancel_on_ctrl_c(interrupt: threading.Event) -> Any:
    """Make Ctrl-C cancel this run's jobs (``interrupt``); a second one exits at once, leaving what is
    recorded for a daemon to adopt. Returns the handler it replaced (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigint(_signum: int, _frame: Any) -> None:
        if interrupt.is_set():
            os.write(2, b"\nSecond Ctrl-C: exiting now; what is left is recorded for a daemon to take up.\n")
            os._exit(130)
        interrupt.set()
        os.write(2, b"\nCtrl-C: cancelling this run's jobs on the server (Ctrl-C again exits at once).\n")

    return signal.signal(signal.SIGINT, on_sigint)


@cli.command("cancel")
@click.argument("name")
@click.option("--wait", "wait_seconds", type=float, default=15.0, show_default=True,
              help="Seconds to wait for a daemon to take the request.")
@pass_app
def cancel_command(app: App, name: str, wait_seconds: float) -> None:
    """Cancel a job (NAME: its name, e.g. night-003) or all jobs of a file (NAME: the file's name, e.g.
    night.yaml) in the running daemon. Queued prompts are removed, running ones interrupted; the input
    goes to failed/ with "cancelled" in its error file and nothing is published for it.

    Works through the shared folder: it drops NAME.cancel into the inbox, which the daemon takes and
    removes (a user of the shared folder can drop that file too). Exit 1 if no daemon took it in time."""
    settings = app.settings()
    name = Path(name).name  # a path to the scenario file means that file
    if not name or name.startswith(".") or name.lower().endswith(cancel_requests.SUFFIX):
        raise click.ClickException(f"Not a job or file name: {name!r}.")
    try:
        path = cancel_requests.write_request(settings.inbox, name, by=cancel_requests.who_asks(),
                                             ready_marker=settings.ready_marker)
    except OSError as err:
        raise click.ClickException(f"Could not write the cancel request into {settings.inbox}: {err}") from err
    deadline = time.monotonic() + wait_seconds
    while os.path.lexists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.path.lexists(path):
        click.echo(f"No daemon took {path} within {wait_seconds:g} s; it stays in the inbox and is handled when "
                   "a daemon runs there (delete it to withdraw the request).", err=True)
        sys.exit(1)
    click.echo(f"Cancel of {name} taken by the daemon: its log names the jobs cancelled; their inputs go to "
               f"{settings.failed_dir}.")


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file ``process`` can read (lstat: links are not followed), or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "is a symbolic link (hotfolder never follows links: give the file it points to)"
    if stat.S_ISDIR(mode):
        return "is a directory (give the scenario files in it)"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


class _Display:
    """What ``process`` shows while it runs; :meth:`event` is the engine's listener.

    On a terminal (``stream`` is a tty): one bar counting jobs, the running job's node and step as
    integers, and hotfolder's log lines printed above it (the bar line is cleared, the log line
    printed, the bar drawn again). Otherwise: one line per job started, done or failed, nothing per
    step. Either way a failure is one line here (the summary after the run has the whole error and
    its hint), so the engine's own log line for it is held back.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.lock = threading.RLock()
        self.bar = click.progressbar(length=0, label="jobs", file=stream, show_pos=True, show_eta=False,
                                     item_show_func=lambda item: item)
        self.rendered: set[str] = set()
        self.failed = 0
        self.drawn = 0  # width of the bar line on screen
        self.shown = ""  # ... and its text
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> _Display:
        logging.getLogger("hotfolder.engine").addFilter(_reported_failure)
        if self.live:
            root = logging.getLogger("hotfolder")
            self._handlers = root.handlers[:]
            root.handlers[:] = [_AboveBar(self, handler) for handler in self._handlers]
            self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("hotfolder.engine").removeFilter(_reported_failure)
        if self.live:
            logging.getLogger("hotfolder").handlers[:] = self._handlers
            with self.lock:
                self.bar.current_item = None
                self._draw()
                click.echo(file=self.stream)

    def event(self, event: events.Event) -> None:
        with self.lock:
            where = f"{event.file} {event.job}" if event.job else event.file
            if isinstance(event, events.Rendered):
                self.rendered.add(event.job_id)
                self._count(total=event.jobs)
            elif isinstance(event, events.Failed):
                self.failed += 1
                if event.job is None and event.job_id not in self.rendered:  # the file itself: one unit
                    self._count(total=1)
                self._count(done=1)
                message = str((event.error or {}).get("message") or "failed").split("\n", 1)[0]
                self._line(f"failed   {where}: {message}", always=True)
            elif isinstance(event, events.Published):
                self._count(done=1)
                self.bar.current_item = None
                self._line(f"done     {where} -> {event.path}")
            elif isinstance(event, events.Submitted):
                self._line(f"started  {where} on {event.server}")
            elif isinstance(event, events.Progress) and event.max:
                self.bar.current_item = f"{where}: node {event.node} {_step(event.detail)}"
            else:
                return
            self._draw()

    def _count(self, *, total: int = 0, done: int = 0) -> None:
        self.bar.length = (self.bar.length or 0) + total
        self.bar.pos += done
        self.bar.finished = self.bar.pos >= self.bar.length
        self.bar.label = f"jobs ({self.failed} failed)" if self.failed else "jobs"

    def _line(self, text: str, *, always: bool = False) -> None:
        """A line of its own: piped, every event's; on a terminal only ``always`` ones, above the bar."""
        if not self.live:
            click.echo(text, file=self.stream)
        elif always:
            self.above(text)

    def _draw(self) -> None:
        if not self.live:
            return
        line = self.bar.format_progress_line()[: max(20, shutil.get_terminal_size().columns - 1)]
        if line == self.shown:
            return
        click.echo("\r" + line.ljust(self.drawn), file=self.stream, nl=False)
        self.drawn, self.shown = len(line), line
        self.stream.flush()

    def above(self, text: str) -> None:
        """Print ``text`` on its own lines above the bar."""
        with self.lock:
            click.echo("\r" + " " * self.drawn + "\r" + text, file=self.stream)
            self.drawn, self.shown = 0, ""
            self._draw()


def _reported_failure(record: logging.LogRecord) -> bool:
    """Log filter: False for the engine's line about a failed job or file (a HotfolderError in its
    arguments), which the display of ``process`` reports instead."""
    args = record.args if isinstance(record.args, tuple) else ()
    return not (record.levelno >= logging.ERROR and any(isinstance(arg, HotfolderError) for arg in args))


def _step(detail: dict[str, Any]) -> str:
    """A node's progress as integers: ``12/20`` steps, or a percentage when the total is fractional
    (a node that reports seconds); ``?`` for what is no progress (a negative or infinite total)."""
    try:
        value, total = float(detail.get("value") or 0), float(detail.get("max") or 0)
    except (TypeError, ValueError, OverflowError):
        return "?"
    if not (math.isfinite(value) and math.isfinite(total)) or total <= 0:
        return "?"
    value = min(max(value, 0.0), total)
    if total >= 1 and total.is_integer():
        return f"{int(value)}/{int(total)}"
    return f"{int(100 * value / total)}%"


class _AboveBar(logging.Handler):
    """A log handler that prints through a :class:`_Display`, formatted as ``inner`` would."""

    def __init__(self, display: _Display, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.display = display
        self.inner = inner

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.above(self.inner.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--job", "job_index", type=int, help="Print only the workflow of job N (1-based) of a batch.")
@click.option("--check", "check_", is_flag=True,
              help="Also validate each workflow against the first reachable server's /object_info (nothing is "
                   "submitted or uploaded); the result goes to stderr. Exit 1 if a job is invalid, 2 if no server answers.")
@pass_app
def render(app: App, file: Path, job_index: int | None, check_: bool) -> None:
    """Print the workflow(s) FILE would submit.

    One job prints its workflow; a batch prints an object mapping each job name to its workflow. No
    server is needed, except for a template in ComfyUI's UI format (converted with the first server
    that answers) and for --check. Files from 'inputs:' appear under the name they will have on the
    server (hotfolder/<hash>.<ext>); they are uploaded only when the job runs.
    """
    settings = app.settings()
    source = FirstServer(settings)
    try:
        jobs = prepare.render_file_jobs(settings, file, hooks=app.hooks(settings), object_info=source)
    except HotfolderError as err:
        raise click.ClickException(str(err)) from err
    if job_index is not None:
        if not 1 <= job_index <= len(jobs):
            raise click.BadParameter(f"{file.name} has {len(jobs)} job(s).", param_hint="--job")
        jobs = [jobs[job_index - 1]]
    out: Any = jobs[0].workflow if len(jobs) == 1 else {job.spec.name: job.workflow for job in jobs}
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    if check_:
        sys.exit(_check_rendered(jobs, source))


def _check_rendered(jobs: list[prepare.Rendered], source: FirstServer) -> int:
    """Validate rendered jobs against the first server that answers; report on stderr; the exit status."""
    found = source()
    if found is None:
        click.echo(redact_text("not checked: no server answered for its /object_info (" + "; ".join(source.errors) + ")"),
                   err=True)
        return 2
    info = found[0]
    invalid = 0
    for job in jobs:
        subject = f"Job {job.spec.name!r} (template {job.template.name!r})"
        problems = validate.validate_workflow(job.workflow, info, scenario_fields=job.fields,
                                              known_files=[item.name for item in job.inputs], warnings=True)
        errors = [p for p in problems if p.severity == ERROR]
        if errors:
            invalid += 1
            click.echo("FAIL " + str(ValidationError.from_problems(problems, subject=subject, server=source.url)),
                       err=True)
            continue
        click.echo(f"ok   {subject}: ComfyUI at {source.url} would accept it", err=True)
        for problem in problems:
            click.echo(f"     (warning) {problem.describe()}", err=True)
        if job.inputs:
            click.echo(f"     {len(job.inputs)} input file(s) would be uploaded first: "
                       + ", ".join(f"{item.path} as {item.name}" for item in job.inputs), err=True)
    return 1 if invalid else 0


@cli.command()
@pass_app
def check(app: App) -> None:
    """Check the config, every server, and every template against each reachable server. Exit 1 if anything is wrong.

    Templates are rendered with their defaults (placeholders for parameters without one) and validated
    against each reachable server's /object_info; every template is checked, so one run reports every
    invalid one."""
    settings = app.settings()
    try:
        hooks: plugins.Hooks | None = plugins.load_hooks(settings)
    except HotfolderError as err:
        hooks = None
        click.echo(redact_text(f"FAIL plugins: {err}"), err=True)
    results = project.check_setup(settings, hooks=hooks)
    for result in results:
        mark = "ok  " if result.ok else "FAIL"
        click.echo(redact_text(f"{mark} {result.what}: {result.message}"))
    if hooks is None or not all(r.ok for r in results):
        sys.exit(1)


@cli.command("plugins")
@click.option("--all", "all_", is_flag=True, help="Include hotfolder's built-in plugins.")
@click.option("--hook", metavar="NAME", help="Only plugins that implement hook NAME.")
@pass_app
def plugins_command(app: App, all_: bool, hook: str | None) -> None:
    """List the loaded plugins and the hooks they implement, as JSON."""
    settings = app.settings()
    try:
        pm = plugins.get_plugin_manager(plugins_dir=settings.plugins)
        listed = plugins.list_plugins(pm, all=all_, hook=hook)
    except HotfolderError as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(listed, indent=2))


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status file as it is (--all: a list of them).")
@click.option("--instance", default=None, help="The daemon to show, by instance_id [default: this one's].")
@click.option("--all", "all_", is_flag=True, help="Show every daemon that has run on this inbox.")
@pass_app
def status_command(app: App, as_json: bool, instance: str | None, all_: bool) -> None:
    """Show a daemon's jobs, progress, servers and recent failures. Exit 1 if it is not running (--all:
    if any is not).

    Each daemon on an inbox writes its own status file. Without --instance, this config's instance_id
    is shown, or the only daemon there is."""
    settings = app.settings()
    try:
        found = redact_data(read_all_status(settings.state_dir))  # files of older versions too
    except HotfolderError as err:
        raise click.ClickException(str(err)) from err
    if not found:
        raise click.ClickException(f"No status in {settings.state_dir / status.STATUS_DIR}: no daemon has run "
                                   "on this inbox yet.")
    if all_:
        chosen = list(found.values())
    else:
        name = instance or settings.instance_id
        if instance is None and name not in found and len(found) == 1:
            name = next(iter(found))  # the only daemon there is
        if name not in found:
            raise click.ClickException(
                f"No status for instance {name!r} in {settings.state_dir / status.STATUS_DIR}.\n"
                f"Hint: daemons that have run here: {', '.join(found)}; use --instance NAME or --all.")
        chosen = [found[name]]
    if as_json:
        click.echo(json.dumps(chosen if all_ else chosen[0], indent=2, ensure_ascii=False))
    else:
        click.echo("\n\n".join(format_status(snapshot) for snapshot in chosen))
        if pause_path(settings.inbox).is_file() and not all(snapshot.get("paused") for snapshot in chosen):
            click.echo(f"\nPAUSED: {pause_path(settings.inbox)} is there (a daemon notices within a second); "
                       "'hotfolder resume' resumes.")
    if any(status_problem(snapshot) for snapshot in chosen):
        sys.exit(1)


@cli.command()
@pass_app
def pause(app: App) -> None:
    """Pause submitting: create inbox/PAUSE. Nothing new is sent to ComfyUI; running prompts finish and
    are published, and files keep being claimed and prepared. Holds across restarts, for every daemon
    on this inbox, until 'hotfolder resume' (or removing the file by hand)."""
    settings = app.settings()
    path = pause_path(settings.inbox)
    try:
        made = pause_inbox(settings.inbox)
    except OSError as err:
        raise click.ClickException(f"Cannot create {path}: {err.strerror or err}.\n"
                                   "Hint: check that the inbox exists and is writable.") from err
    click.echo(f"paused: {path} {'created' if made else 'was already there'}; running prompts finish, "
               "nothing new is submitted until 'hotfolder resume'")


@cli.command()
@pass_app
def resume(app: App) -> None:
    """Resume submitting: remove inbox/PAUSE. The jobs that waited are submitted in their order."""
    settings = app.settings()
    path = pause_path(settings.inbox)
    try:
        removed = resume_inbox(settings.inbox)
    except OSError as err:
        raise click.ClickException(f"Cannot remove {path}: {err.strerror or err}.\n"
                                   "Hint: check that the inbox is writable.") from err
    click.echo(f"resumed: {path} removed" if removed else f"not paused: there is no {path}")


@cli.command("systemd-unit")
@click.option("--user", default="hotfolder", show_default=True, help="The service user.")
@click.option("--group", default=None, help="The service group [default: the user's].")
@pass_app
def systemd_unit(app: App, user: str, group: str | None) -> None:
    """Print a systemd unit for this setup (needs a config file: the unit passes --config only)."""
    settings = app.settings()
    if settings.config_file is None:
        raise click.ClickException(
            "The unit runs 'hotfolder --config FILE run', so settings given as options or environment "
            "variables would be lost.\nHint: create a hotfolder.toml (hotfolder init) and pass --config.")
    click.echo(service.render_unit(settings, executable=[sys.executable, "-m", "hotfolder"],
                                   config_path=settings.config_file, user=user, group=group,
                                   stop_budget=settings.stop_budget), nl=False)


@cli.command()
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create inbox/, outbox/, templates/, plugins/, a hotfolder.toml and example templates in DIRECTORY."""
    made = project.init_project(directory)
    for path in made:
        click.echo(f"created {path}")
    if not made:
        click.echo("nothing to do: everything already exists")


def main() -> None:
    cli(prog_name="hotfolder")
