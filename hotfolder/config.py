"""Settings: ``hotfolder.toml``, then ``HOTFOLDER_*`` environment variables, then CLI options (CLI wins).

Relative paths in ``hotfolder.toml`` are relative to the directory holding that file; relative paths from
the environment or the command line are relative to the current directory. Every key is checked: an
unknown key or a value of the wrong type is a :class:`~hotfolder.errors.ConfigError` that names it.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from hotfolder.budgets import DEFAULTS as BUDGETS
from hotfolder.errors import ConfigError

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

    @property
    def display_url(self) -> str:
        """The URL with any user:password removed, safe for logs and sidecars."""
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


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


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
        return self.outbox / ".hotfolder-staging"


# key -> (type, description); the single list of settings a user can set.
KEYS: dict[str, tuple[type, str]] = {
    "inbox": (Path, "folder watched for scenario files"),
    "outbox": (Path, "folder results are published into"),
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
}


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = KEYS[key][0]
    try:
        if kind is Path:
            if not isinstance(value, str | Path) or not str(value):
                raise TypeError
            return Path(value)
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                return value.lower() in {"1", "true", "yes", "on"}
            raise TypeError
        if kind is int:
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise TypeError
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
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"Setting {key!r} from {origin} has an invalid value {value!r}: expected {kind.__name__}.",
            hint=f"{key}: {KEYS[key][1]}.",
            where={"key": key, "origin": origin},
        ) from err
    raise AssertionError(kind)


def _server(entry: Any, origin: str) -> ServerConfig:
    if isinstance(entry, str):
        entry = {"url": entry}
    if not isinstance(entry, dict) or "url" not in entry:
        raise ConfigError(
            f"Server entry {entry!r} in {origin} needs a 'url'.",
            hint='Write servers = ["http://127.0.0.1:8188"] or [[servers]] tables with url = "…".',
        )
    unknown = set(entry) - {"url", "name", "token", "headers", "verify", "weight", "labels", "input_dir"}
    if unknown:
        raise ConfigError(
            f"Unknown server key(s) {', '.join(sorted(map(repr, unknown)))} in {origin}.",
            hint="Server tables accept url, name, token, headers, verify, weight, labels, input_dir.",
        )
    url = str(entry["url"]).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(
            f"Server URL {redact_url(url)!r} in {origin} is not an http(s) URL.",
            hint="Use the address ComfyUI prints at start, e.g. http://127.0.0.1:8188.",
        )
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"Server headers in {origin} must be a table of strings.")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ConfigError(f"Server weight {weight!r} in {origin} must be a number greater than 0.")
    labels = entry.get("labels") or []
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ConfigError(f"Server labels in {origin} must be a list of strings.")
    return ServerConfig(
        url=url,
        name=str(entry.get("name") or parts.netloc.rsplit("@", 1)[-1]),
        token=entry.get("token"),
        headers=dict(headers),
        verify=bool(entry.get("verify", True)),
        weight=float(weight),
        labels=tuple(labels),
        input_dir=Path(entry["input_dir"]).expanduser() if entry.get("input_dir") else None,
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
    for key in KEYS:
        if key in values or key not in raw:
            continue
        value, origin, _ = raw[key]
        values[key] = _coerce(key, value, origin)
    settings = Settings(**values, config_file=config_path if config_path.is_file() else None)
    _check_ranges(settings)
    _check_budgets(settings)
    return settings


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
    if s.outbox == s.inbox or s.outbox.is_relative_to(s.inbox) or s.inbox.is_relative_to(s.outbox):
        raise ConfigError(
            f"inbox {str(s.inbox)!r} and outbox {str(s.outbox)!r} must be separate folders, neither inside the other."
        )


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
