"""Settings: ``hotfolder.toml``, then ``HOTFOLDER_*`` environment variables, then CLI options (CLI wins).

Relative paths in ``hotfolder.toml`` are relative to the directory holding that file; relative paths from
the environment or the command line are relative to the current directory. Every key is checked: an
unknown key or a value of the wrong type is a :class:`~hotfolder.errors.ConfigError` that names it.
"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hotfolder.budgets import DEFAULTS as BUDGETS
from hotfolder.destination import DEFAULT, Destination, Outbox, is_store_url, raw_destinations
from hotfolder.errors import ConfigError
from hotfolder.redact import redact_text, redact_url

DEFAULT_SERVER = "http://127.0.0.1:8188"
CONFIG_NAME = "hotfolder.toml"

# Environment switches that are not settings (read elsewhere), so not "unknown".
OTHER_ENV = {"HOTFOLDER_CONFIG", "HOTFOLDER_LOAD_PLUGINS", "HOTFOLDER_DISABLE_PLUGINS", "HOTFOLDER_TRACE_PLUGINS",
             "HOTFOLDER_FAILPOINT"}


def default_instance_id() -> str:
    """The host name, made safe for a folder name: a restarted daemon finds its own jobs at once."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()).strip(".") or "hotfolder"


@dataclass(frozen=True)
class ServerConfig:
    """One ComfyUI server. ``headers`` and ``token`` are credentials: never logged, never in sidecars."""

    url: str
    name: str = ""
    token: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    verify: bool = True
    weight: float = 1.0
    labels: tuple[str, ...] = ()
    input_dir: Path | None = None  # the server's input folder, when it is on this machine (upload retention)

    def __repr__(self) -> str:
        return (f"ServerConfig(url={self.display_url!r}, name={self.name!r}, verify={self.verify!r}, "
                f"weight={self.weight!r}, labels={self.labels!r}, input_dir={self.input_dir!r})")

    @property
    def display_url(self) -> str:
        """The URL without user:password and with credential-like query values as ``***`` (see
        :mod:`hotfolder.redact`): what logs, sidecars, status and error files show."""
        return redact_url(self.url)

    def request_headers(self) -> dict[str, str]:
        """Headers for every HTTP request and the WebSocket: the configured ones, then a bearer
        ``token``, or else HTTP basic auth from ``user:password@`` in the URL."""
        out = dict(self.headers)
        parts = urlsplit(self.url)
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        elif parts.username is not None and "Authorization" not in out:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            out["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return out


@dataclass(frozen=True)
class Settings:
    """Everything the daemon and the commands need, with paths already resolved."""

    inbox: Path
    outbox: Path
    templates: Path
    plugins: Path
    servers: tuple[ServerConfig, ...]
    default_template: str | None = None
    settle_seconds: float = 1.0
    queue_depth: int = 2
    output_workers: int = 4
    job_timeout: float = 3600.0
    connect_timeout: float = 5.0
    http_timeout: float = 30.0
    history_grace: float = 30.0
    lost_grace: float = 15.0
    poll_interval: float = 5.0
    max_file_size: int = BUDGETS.max_file_size
    render_timeout: float = BUDGETS.render_timeout
    max_render_size: int = BUDGETS.max_render_size
    max_scenario_lines: int = BUDGETS.max_scenario_lines
    max_jobs_per_file: int = BUDGETS.max_jobs_per_file
    max_scenario_depth: int = BUDGETS.max_scenario_depth
    max_response_size: int = BUDGETS.max_response_size
    max_download_size: int = BUDGETS.max_download_size
    max_ws_message_size: int = BUDGETS.max_ws_message_size
    download_temp: bool = True
    use_observer: bool = True
    ready_marker: bool = False
    rescan_interval: float = 30.0
    postprocess: list[Any] = field(default_factory=list)
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    instance_id: str = field(default_factory=default_instance_id)
    lease_timeout: float = 60.0
    max_parse_attempts: int = 3
    validate: bool = True
    inputs_root: Path | None = None
    log_format: str = "text"
    status_interval: float = 2.0
    stop_budget: float = 60.0
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    retention_done_days: float = 0.0
    retention_outbox_days: float = 0.0
    retention_uploads_days: float = 0.0
    contact_sheet: bool = True
    s3_retry_mode: str = "standard"
    s3_max_attempts: int = 5
    s3_deadline: float = 300.0
    # outbox = "s3://bucket/prefix": the destination, normalised; ``outbox`` is then the local folder
    # results are staged in before the upload (STAGING_NAME in the state folder).
    outbox_url: str = ""
    # [destinations]: the other places a scenario may send its results to (destination: <name>)
    destinations: tuple[Outbox, ...] = ()
    config_file: Path | None = None

    @property
    def state_dir(self) -> Path:
        return self.inbox / ".hotfolder"

    @property
    def jobs_dir(self) -> Path:
        """This instance's claimed jobs."""
        return self.state_dir / self.instance_id

    @property
    def done_dir(self) -> Path:
        return self.inbox / "done"

    @property
    def failed_dir(self) -> Path:
        return self.inbox / "failed"

    @property
    def staging_dir(self) -> Path:
        """Where a job's outputs are downloaded and post-processed before they are published: a hidden
        folder in a local outbox (one rename publishes), the outbox folder itself for object storage."""
        return self.destination().staging_dir

    @property
    def local_destinations(self) -> tuple[Outbox, ...]:
        """The ``[destinations]`` that are folders on this machine (outboxes too: made, checked, guarded)."""
        return tuple(d for d in self.destinations if not d.url)

    @property
    def destination_names(self) -> tuple[str, ...]:
        """The names a scenario's ``destination:`` may give: ``outbox``, then those of ``[destinations]``."""
        return (DEFAULT, *(d.name for d in self.destinations))

    def destination(self, name: str | None = None) -> Outbox:
        """The destination called ``name`` (None or ``outbox``: the ``outbox`` setting); KeyError if none is."""
        if name is None or name == DEFAULT:
            return Outbox(DEFAULT, self.outbox, self.outbox_url)
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise KeyError(name)


# key -> (type, description); the single list of settings a user can set.
KEYS: dict[str, tuple[type, str]] = {
    "inbox": (Path, "folder watched for scenario files"),
    "outbox": (Path, "folder results are published into, or s3://bucket/prefix for object storage (docs/s3.md)"),
    "templates": (Path, "folder of workflow templates"),
    "plugins": (Path, "folder of one-file plugins"),
    "servers": (list, "ComfyUI servers: URLs or tables with url/token/headers/verify/name"),
    "default_template": (str, "template used when a scenario names none"),
    "settle_seconds": (float, "how long size and mtime must be unchanged before a file is taken"),
    "queue_depth": (int, "jobs kept queued on each server (running + waiting)"),
    "output_workers": (int, "most threads per server that download, post-process and publish finished jobs"),
    "job_timeout": (float, "seconds a job may take on the server before it is interrupted"),
    "connect_timeout": (float, "HTTP connect timeout, seconds"),
    "http_timeout": (float, "HTTP read timeout, seconds"),
    "history_grace": (float, "seconds to wait for /history after ComfyUI reported the end of a prompt"),
    "lost_grace": (float, "seconds a prompt may be missing from both /queue and /history before it is resubmitted"),
    "poll_interval": (float, "seconds between /history polls while a job runs"),
    "max_file_size": (int, "largest scenario file accepted, bytes"),
    "render_timeout": (float, "seconds the template of one job may take to render"),
    "max_render_size": (int, "characters of any value a template builds, and of a job's whole rendered output"),
    "max_scenario_lines": (int, "lines of a .txt, .csv or .jsonl scenario"),
    "max_jobs_per_file": (int, "jobs one scenario file may expand to"),
    "max_scenario_depth": (int, "levels of nested mappings and lists in a scenario"),
    "max_response_size": (int, "bytes of one answer from ComfyUI (/object_info, /history, /queue, errors)"),
    "max_download_size": (int, "bytes of one output file downloaded from ComfyUI"),
    "max_ws_message_size": (int, "bytes of one WebSocket message from ComfyUI (a larger one drops the connection)"),
    "download_temp": (bool, "also download temporary (PreviewImage) outputs"),
    "use_observer": (bool, "use filesystem events (false: scan only, for shares without events)"),
    "ready_marker": (bool, "take a file only once <name>.ready exists beside it"),
    "rescan_interval": (float, "seconds between safety rescans of the inbox"),
    "postprocess": (list, "post-processors for scenarios without 'postprocess:': names or {name, ...options} tables"),
    "plugin_config": (dict, "plugin settings: one [plugin_config.<plugin>] table per plugin"),
    "instance_id": (str, "this daemon's name on a shared inbox (default: the host name)"),
    "lease_timeout": (float, "seconds without a lease renewal before another daemon adopts an instance's jobs"),
    "max_parse_attempts": (int, "a file that stopped hotfolder this many times while being read goes to failed/"),
    "validate": (bool, "check each job against the server's /object_info before submitting it"),
    "inputs_root": (Path, "a folder scenario 'inputs:' files may also come from (default: none, the inbox only)"),
    "log_format": (str, "text or json (one JSON object per line, for log shippers)"),
    "status_interval": (float, "seconds between rewrites of inbox/.hotfolder/status/<instance_id>.json"),
    "stop_budget": (float, "seconds running jobs get to finish on SIGTERM before the rest is left for the next start"),
    "metrics_port": (int, "Prometheus metrics port on metrics_host (0: off; needs the metrics extra)"),
    "metrics_host": (str, "address the metrics endpoint listens on (loopback by default)"),
    "retention_done_days": (float, "delete inbox/done/ entries older than this many days (0: keep)"),
    "retention_outbox_days": (float, "delete outbox/ job folders older than this many days (0: keep)"),
    "retention_uploads_days": (float, "delete files hotfolder uploaded, unused this many days, from the input_dir of servers that have one (0: keep)"),
    "contact_sheet": (bool, "after a batch file, write a labelled contact sheet and an index.html gallery beside its job folders"),
    "s3_retry_mode": (str, "botocore's retry mode for an s3:// outbox: standard, adaptive or legacy"),
    "s3_max_attempts": (int, "tries botocore makes of one S3 request before hotfolder's own retry takes over"),
    "s3_deadline": (float, "seconds one publish retries while the store is away before it logs and starts over"),
    "destinations": (dict, "named places a scenario may send its results to with destination: <name>: folders or s3:// URLs"),
}
# With an s3:// outbox, results are staged here, in the inbox's state folder (hidden: no instance's name).
STAGING_NAME = ".staging"
S3_RETRY_MODES = ("standard", "adaptive", "legacy")


# Ranges of the numeric settings: key -> (lowest, lowest allowed itself?, highest). Every number must also
# be finite. Timeouts must be above 0; the intervals of loops (polls, rescans, status rewrites) at least
# MIN_INTERVAL, so a typo cannot make hotfolder spin; no duration above MAX_SECONDS (a year), which also
# keeps every wait within what the operating system's timers accept.
MIN_INTERVAL = 0.1
MAX_SECONDS = 365 * 24 * 3600.0
LIMITS: dict[str, tuple[float, bool, float]] = {
    "settle_seconds": (0, True, MAX_SECONDS),
    "job_timeout": (0, False, MAX_SECONDS),
    "connect_timeout": (0, False, MAX_SECONDS),
    "http_timeout": (0, False, MAX_SECONDS),
    "history_grace": (0, False, MAX_SECONDS),
    "lost_grace": (0, False, MAX_SECONDS),
    "stop_budget": (0, False, MAX_SECONDS),
    "lease_timeout": (1, True, MAX_SECONDS),
    "poll_interval": (MIN_INTERVAL, True, MAX_SECONDS),
    "rescan_interval": (MIN_INTERVAL, True, MAX_SECONDS),
    "status_interval": (MIN_INTERVAL, True, MAX_SECONDS),
    "retention_done_days": (0, True, 36500),
    "retention_outbox_days": (0, True, 36500),
    "retention_uploads_days": (0, True, 36500),
    "queue_depth": (1, True, 1_000_000),
    "output_workers": (1, True, 1_000_000),
    "max_parse_attempts": (1, True, 1_000_000),
    "max_file_size": (1, True, 2**63 - 1),
    "metrics_port": (0, True, 65535),
    "s3_max_attempts": (1, True, 100),
    "s3_deadline": (0, False, MAX_SECONDS),
    # the budgets (hotfolder.budgets)
    "render_timeout": (0, False, MAX_SECONDS),
    "max_render_size": (1, True, 2**63 - 1),
    "max_scenario_lines": (1, True, 2**63 - 1),
    "max_jobs_per_file": (1, True, 2**63 - 1),
    "max_scenario_depth": (1, True, 1_000_000),
    "max_response_size": (1, True, 2**63 - 1),
    "max_download_size": (1, True, 2**63 - 1),
    "max_ws_message_size": (1, True, 2**63 - 1),
}
_COUNTS = {"queue_depth", "output_workers", "max_parse_attempts", "metrics_port", "max_scenario_lines", "s3_max_attempts",
           "max_jobs_per_file", "max_scenario_depth"}

_EXPECTED: dict[Any, str] = {
    Path: "a path", bool: "true or false", int: "a whole number", float: "a finite number",
    str: "text without control characters", dict: "a table of tables", list: "a list",
    "metrics_host": "a host name or IP address, such as 127.0.0.1 or ::1"}
# control characters (and line separators) have no place in a path, a name or a host
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _in_limits(key: str, number: Any, origin: str) -> Any:
    """``number`` if it is in the range :data:`LIMITS` gives ``key`` (any, for a key not there)."""
    if key not in LIMITS:
        return number
    low, inclusive, high = LIMITS[key]
    if low <= number <= high and (inclusive or number > low):
        return number
    unit = "" if key in _COUNTS else " characters" if key == "max_render_size" else (
        " bytes" if key.endswith("_size") else " days" if key.startswith("retention_") else " seconds")
    if number > high:
        rule = f"must be at most {high:g}{unit}"
    elif low == 0:
        rule = "must not be negative" if inclusive else "must be greater than 0"
    else:
        rule = f"must be at least {low:g}{unit}"
    raise ConfigError(f"Setting {key!r} {rule} (got {number!r} from {origin}).", hint=f"{key}: {KEYS[key][1]}.",
                      where={"key": key, "origin": origin})


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = KEYS[key][0]
    try:
        if kind is Path:
            if not isinstance(value, str | Path) or not str(value) or "\x00" in str(value):
                raise TypeError
            return Path(value)
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                return value.lower() in {"1", "true", "yes", "on"}
            raise TypeError
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError  # 2.5 workers: not silently 2; nan and inf are not whole either
            return _in_limits(key, int(value), origin)
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError
            if not math.isfinite(float(value)):
                raise ValueError
            return _in_limits(key, float(value), origin)
        if kind is str:
            if not isinstance(value, str) or _CONTROL.search(value):
                raise TypeError
            if key == "metrics_host" and not _is_host(value):
                raise ValueError
            return value
        if kind is dict:
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise TypeError
            return value
        if kind is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise TypeError
            return value
    except (TypeError, ValueError, OverflowError) as err:
        shown = repr(redact_url(value)) if isinstance(value, str) else redact_text(repr(value))
        raise ConfigError(
            f"Setting {key!r} from {origin} has an invalid value {shown if len(shown) <= 80 else shown[:77] + '...'}: "
            f"expected {_EXPECTED.get(key, _EXPECTED.get(kind, kind.__name__))}.",
            hint=f"{key}: {KEYS[key][1]}.",
            where={"key": key, "origin": origin},
        ) from err
    raise AssertionError(kind)


def _is_host(host: str) -> bool:
    """An IP address, or a name the IDNA codec can encode (what ``socket.getaddrinfo`` will need)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        return bool(host) and len(host) <= 253 and " " not in host and bool(host.encode("idna"))
    except UnicodeError:
        return False


SERVER_KEYS = ("url", "name", "token", "headers", "verify", "weight", "labels", "input_dir")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def parse_server_url(url: Any, where: str) -> str:
    """The server URL ``url`` checked (http or https, a host, a valid port) and without a trailing '/';
    ConfigError naming ``where`` and the redacted URL otherwise."""
    hint = "Use the address ComfyUI prints at start, e.g. http://127.0.0.1:8188 (https://host:port behind a proxy)."
    if not isinstance(url, str):
        raise ConfigError(f"Server URL {redact_text(repr(url))} in {where} is not text.", hint=hint)
    url = url.strip().rstrip("/")
    shown = redact_url(url)
    if not url or _CONTROL.search(url) or " " in url:
        raise ConfigError(f"Server URL {redact_url(url)!r} in {where} is empty or holds spaces or control "
                          "characters.", hint=hint)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:  # its text may quote a password cut short (it names no secret here)
        why = ("its port is not a number from 1 to 65535 (in a password, write '/', '?', '#' and '@' as %2F, %3F, "
               "%23 and %40)" if "port" in str(err).lower() else "it is not a valid URL (an IPv6 address goes in [])")
        raise ConfigError(f"Server URL {shown!r} in {where} cannot be parsed: {why}.", hint=hint) from None
    if parts.scheme.lower() not in {"http", "https"}:
        extra = " (hotfolder derives the ws:// or wss:// WebSocket address itself)" if parts.scheme in {"ws", "wss"} else ""
        raise ConfigError(f"Server URL {shown!r} in {where} is not an http(s) URL{extra}.", hint=hint)
    if not parts.hostname:
        raise ConfigError(f"Server URL {shown!r} in {where} has no host.", hint=hint)
    if port == 0:
        raise ConfigError(f"Server URL {shown!r} in {where} has port 0.", hint="Ports run from 1 to 65535. " + hint)
    return url


def _server(entry: Any, origin: str) -> ServerConfig:
    where = f"{origin} (setting 'servers')"
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict) or "url" not in entry:
        raise ConfigError(
            f"Server entry {redact_text(repr(entry))} in {where} needs a 'url'.",
            hint='Write servers = ["http://127.0.0.1:8188"] or [[servers]] tables with url = "…".',
        )
    unknown = set(entry) - set(SERVER_KEYS)
    if unknown:
        raise ConfigError(
            f"Unknown server key(s) {', '.join(sorted(map(repr, map(str, unknown))))} in {where}.",
            hint="Server tables accept " + ", ".join(SERVER_KEYS) + ".",
        )
    url = parse_server_url(entry["url"], where)
    shown = redact_url(url)
    token = entry.get("token")
    if token is not None and (not isinstance(token, str) or not token or _CONTROL.search(token)):
        raise ConfigError(f"The token of server {shown!r} in {where} must be non-empty text without control characters.")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and _HEADER_NAME.fullmatch(k) and isinstance(v, str) and not _CONTROL.search(v)
            for k, v in headers.items()):
        raise ConfigError(f"The headers of server {shown!r} in {where} must be a table of header names to text "
                          "without control characters.", hint="Write headers as a TOML table: header name = \"value\".")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1e6:
        raise ConfigError(f"Server weight {weight!r} of {shown!r} in {where} must be a number greater than 0 "
                          "(at most 1000000).")
    verify = entry.get("verify", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"Server 'verify' of {shown!r} in {where} must be true or false (got {verify!r}).")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or _CONTROL.search(name)):
        raise ConfigError(f"Server name {name!r} of {shown!r} in {where} must be non-empty text without control "
                          "characters.")
    labels = entry.get("labels") or []
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ConfigError(f"Server labels in {where} must be a list of strings.")
    input_dir = entry.get("input_dir")
    if input_dir is not None and (not isinstance(input_dir, str) or not input_dir or "\x00" in input_dir):
        raise ConfigError(f"Server input_dir {input_dir!r} of {shown!r} in {where} must be a path.")
    return ServerConfig(
        url=url,
        name=name or urlsplit(url).netloc.rsplit("@", 1)[-1],
        token=token,
        headers=dict(headers),
        verify=verify,
        weight=float(weight),
        labels=tuple(labels),
        input_dir=Path(input_dir).expanduser() if input_dir else None,
    )


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"Cannot read config file {str(path)!r}: {err.strerror}.", where={"file": str(path)}) from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"Config file {str(path)!r} is not valid TOML: {err}.", where={"file": str(path)}
        ) from err
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {', '.join(map(repr, unknown))} in {str(path)!r}.",
            hint="Valid keys: " + ", ".join(sorted(KEYS)) + ".",
            where={"file": str(path), "keys": unknown},
        )
    return data


def load_settings(
    config_path: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build :class:`Settings` from the config file, the environment and CLI ``overrides``.

    ``config_path`` None means ``$HOTFOLDER_CONFIG`` or ``./hotfolder.toml`` if it exists. A path given
    explicitly must exist.
    """
    env = dict(os.environ if env is None else env)
    cwd = cwd or Path.cwd()
    explicit = config_path is not None or "HOTFOLDER_CONFIG" in env
    if config_path is None:
        config_path = Path(env.get("HOTFOLDER_CONFIG", CONFIG_NAME))
    if not config_path.is_absolute():
        config_path = cwd / config_path
    raw: dict[str, tuple[Any, str, Path]] = {}
    if config_path.is_file():
        for key, value in read_config_file(config_path).items():
            raw[key] = (value, str(config_path), config_path.parent)
    elif explicit:
        raise ConfigError(
            f"Config file {str(config_path)!r} does not exist.",
            hint="Create one with 'hotfolder init', or leave out --config to use the defaults.",
        )
    unknown_env = sorted(
        k for k in env if k.startswith("HOTFOLDER_") and k not in OTHER_ENV and k[10:].lower() not in KEYS
    )
    if unknown_env:
        raise ConfigError(
            f"Unknown environment variable(s) {', '.join(unknown_env)}.",
            hint="Valid: " + ", ".join("HOTFOLDER_" + k.upper() for k in sorted(KEYS)) + ".",
        )
    for key in KEYS:
        name = "HOTFOLDER_" + key.upper()
        if name in env:
            raw[key] = (env[name], f"${name}", cwd)
    for key, value in (overrides or {}).items():
        if value is None or value == () or value == []:
            continue
        if key not in KEYS:
            raise ConfigError(f"Unknown setting {key!r}.")
        raw[key] = (value, "the command line", cwd)

    values: dict[str, Any] = {}
    base = config_path.parent if config_path.is_file() else cwd
    defaults = {"inbox": "inbox", "outbox": "outbox", "templates": "templates", "plugins": "plugins"}
    for key, default in defaults.items():
        value, origin, rel = raw.get(key, (default, "defaults", base))
        if key == "outbox" and is_store_url(value):
            values["outbox_url"] = _store_url(value, origin)
            values[key] = values["inbox"] / ".hotfolder" / STAGING_NAME
            continue
        path = _coerce(key, value, origin).expanduser()
        values[key] = (path if path.is_absolute() else rel / path).resolve()
    if "inputs_root" in raw:
        value, origin, rel = raw["inputs_root"]
        path = _coerce("inputs_root", value, origin).expanduser()
        values["inputs_root"] = (path if path.is_absolute() else rel / path).resolve()
    servers_raw, servers_origin, _ = raw.get("servers", ([DEFAULT_SERVER], "defaults", base))
    servers_list = _coerce("servers", servers_raw, servers_origin)
    if not servers_list:
        raise ConfigError(f"No ComfyUI server configured in {servers_origin}.", hint=f"Add servers = [\"{DEFAULT_SERVER}\"].")
    values["servers"] = tuple(_server(s, servers_origin) for s in servers_list)
    names = [server.name for server in values["servers"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"Server name(s) {', '.join(map(repr, twice))} appear more than once in {servers_origin}.",
            hint="List each server once, or give each a distinct name = \"…\" in a [[servers]] table.",
        )
    if "destinations" in raw:
        values["destinations"] = _destinations(*raw["destinations"], values["inbox"])
    for key in KEYS:
        if key in values or key not in raw:
            continue
        value, origin, _ = raw[key]
        values[key] = _coerce(key, value, origin)
    settings = Settings(**values, config_file=config_path if config_path.is_file() else None)
    _check_ranges(settings)
    _check_budgets(settings)
    return settings


def _store_url(value: str, origin: str, key: str = "outbox") -> str:
    """An ``s3://bucket/prefix`` outbox, checked and normalised; ConfigError naming ``origin`` otherwise,
    or when boto3 (the s3 extra) is not installed."""
    try:
        destination = Destination.parse(value)
    except ConfigError as err:
        raise ConfigError(f"Setting {key!r} from {origin}: {err.message}", hint=err.hint,
                          where={"key": key.partition(".")[0], "origin": origin}) from None
    if importlib.util.find_spec("boto3") is None:
        raise ConfigError(f"Setting {key!r} from {origin} is object storage ({destination}), but boto3 is not "
                          "installed.", hint="Install the s3 extra: pip install 'hotfolder[s3]'.",
                          where={"key": key.partition(".")[0], "origin": origin})
    return str(destination)


def _destinations(value: Any, origin: str, rel: Path, inbox: Path) -> tuple[Outbox, ...]:
    """``[destinations]``: each a folder (relative to ``rel``) or object storage, staged like an s3:// outbox."""
    out = []
    for name, target in raw_destinations(value, origin).items():
        if is_store_url(target):
            url = _store_url(target, origin, key=f"destinations.{name}")
            out.append(Outbox(name, inbox / ".hotfolder" / STAGING_NAME, url))
            continue
        path = Path(target).expanduser()
        out.append(Outbox(name, (path if path.is_absolute() else rel / path).resolve()))
    return tuple(out)


def _check_ranges(s: Settings) -> None:
    positive = ["settle_seconds", "job_timeout", "connect_timeout", "http_timeout", "poll_interval", "lease_timeout",
                "max_parse_attempts", "status_interval", "stop_budget"]
    for key in positive:
        if getattr(s, key) <= 0 and key != "settle_seconds":
            raise ConfigError(f"Setting {key!r} must be greater than 0 (got {getattr(s, key)!r}).")
    if s.settle_seconds < 0:
        raise ConfigError(f"Setting 'settle_seconds' must not be negative (got {s.settle_seconds!r}).")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", s.instance_id) or s.instance_id.startswith(".") or s.instance_id in {"leases", "status"}:
        raise ConfigError(f"Setting 'instance_id' {s.instance_id!r} must be letters, digits, '_', '-' or '.' "
                          "(not starting with '.', and not 'leases' or 'status', the names of hotfolder's own folders).")
    if s.log_format not in {"text", "json"}:
        raise ConfigError(f"Setting 'log_format' must be 'text' or 'json' (got {s.log_format!r}).")
    if not 0 <= s.metrics_port <= 65535:
        raise ConfigError(f"Setting 'metrics_port' must be between 0 and 65535 (got {s.metrics_port!r}).")
    for key in ("retention_done_days", "retention_outbox_days", "retention_uploads_days"):
        if getattr(s, key) < 0:
            raise ConfigError(f"Setting {key!r} must not be negative (0 keeps everything).")
    if s.queue_depth < 1:
        raise ConfigError(f"Setting 'queue_depth' must be at least 1 (got {s.queue_depth!r}).")
    if s.output_workers < 1:
        raise ConfigError(f"Setting 'output_workers' must be at least 1 (got {s.output_workers!r}).")
    if s.s3_retry_mode not in S3_RETRY_MODES:
        raise ConfigError(f"Setting 's3_retry_mode' must be one of {', '.join(S3_RETRY_MODES)} "
                          f"(got {s.s3_retry_mode!r}).", hint=f"s3_retry_mode: {KEYS['s3_retry_mode'][1]}.")
    for outbox in (s.destination(), *s.destinations):
        if outbox.url:
            continue  # the staging folder is in the inbox's state folder on purpose
        what = "outbox" if outbox.name == DEFAULT else f"destination {outbox.name!r}"
        if outbox.folder == s.inbox or outbox.folder.is_relative_to(s.inbox) or s.inbox.is_relative_to(outbox.folder):
            raise ConfigError(f"inbox {str(s.inbox)!r} and {what} {str(outbox.folder)!r} must be separate folders, "
                              "neither inside the other.", where={"key": "outbox" if what == "outbox" else "destinations"})


def _check_budgets(s: Settings) -> None:
    """Every budget (hotfolder.budgets) is a finite number greater than 0."""
    for key in ("max_file_size", *(f for f in BUDGETS.__dataclass_fields__ if f != "max_file_size")):
        value = getattr(s, key)
        if not value > 0 or value == float("inf"):  # also NaN
            raise ConfigError(f"Setting {key!r} must be a number greater than 0 (got {value!r}).",
                              hint=f"{key}: {KEYS[key][1]}.", where={"key": key})


def with_changes(settings: Settings, **changes: Any) -> Settings:
    names = {f.name for f in fields(Settings)}
    bad = set(changes) - names
    if bad:
        raise ConfigError(f"Unknown setting(s) {sorted(bad)!r}.")
    return replace(settings, **changes)
