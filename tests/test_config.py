"""Settings precedence and errors: hotfolder.toml < HOTFOLDER_* < command line."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hotfolder.comfy.http import ComfyHTTP
from hotfolder.config import KEYS, LIMITS, load_settings, redact_url
from hotfolder.errors import ConfigError
from tests.conftest import invoke_cli, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hotfolder.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_config_file(tmp_path: Path) -> None:
    s = load_settings(None, env={}, cwd=tmp_path)
    assert s.inbox == tmp_path / "inbox" and s.outbox == tmp_path / "outbox"
    assert [srv.url for srv in s.servers] == ["http://127.0.0.1:8188"]
    assert s.config_file is None


def test_file_then_env_then_cli_take_precedence(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'queue_depth = 3\nsettle_seconds = 2.5\ninbox = "in"\ndefault_template = "a"\n')
    s = load_settings(cfg, env={}, cwd=tmp_path)
    assert (s.queue_depth, s.settle_seconds, s.default_template) == (3, 2.5, "a")
    assert s.inbox == tmp_path / "in"
    s = load_settings(cfg, env={"HOTFOLDER_QUEUE_DEPTH": "4", "HOTFOLDER_DEFAULT_TEMPLATE": "b"}, cwd=tmp_path)
    assert (s.queue_depth, s.default_template) == (4, "b")
    s = load_settings(cfg, env={"HOTFOLDER_DEFAULT_TEMPLATE": "b"}, overrides={"default_template": "c"}, cwd=tmp_path)
    assert s.default_template == "c"


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = write(sub, 'outbox = "../results"\n')
    s = load_settings(cfg, env={}, cwd=Path("/"))
    assert s.outbox == tmp_path / "results"


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'inbx = "x"\nqueue_depht = 2\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={}, cwd=tmp_path)
    assert "'inbx'" in str(info.value) and "'queue_depht'" in str(info.value)


def test_unknown_environment_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOTFOLDER_INBX"):
        load_settings(None, env={"HOTFOLDER_INBX": "x"}, cwd=tmp_path)


def test_bad_values_and_bad_toml_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="queue_depth"):
        load_settings(write(tmp_path, 'queue_depth = "many"\n'), env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="'output_workers' must be at least 1"):
        load_settings(write(tmp_path, "output_workers = 0\n"), env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "queue_depth = \n"), env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={}, cwd=tmp_path)
    (tmp_path / "hotfolder.toml").unlink()
    with pytest.raises(ConfigError, match="http"):
        load_settings(None, env={"HOTFOLDER_SERVERS": "ftp://x"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="separate"):
        load_settings(None, env={}, overrides={"outbox": tmp_path / "inbox" / "out"}, cwd=tmp_path)


def test_servers_from_env_and_tables_with_credentials(tmp_path: Path) -> None:
    s = load_settings(None, env={"HOTFOLDER_SERVERS": "http://a:1, http://b:2"}, cwd=tmp_path)
    assert [x.url for x in s.servers] == ["http://a:1", "http://b:2"]
    cfg = write(tmp_path, '[[servers]]\nurl = "https://u:secret@gpu1:8188"\ntoken = "t0k"\n')
    (srv,) = load_settings(cfg, env={}, cwd=tmp_path).servers
    assert srv.display_url == "https://gpu1:8188"
    assert srv.request_headers() == {"Authorization": "Bearer t0k"}
    assert "t0k" not in repr(srv) and "secret" not in srv.name


def test_redact_url_removes_userinfo() -> None:
    assert redact_url("http://user:pw@host:8188/x") == "http://host:8188/x"
    assert redact_url("http://host:8188") == "http://host:8188"


# -- generated values: accepted and in range, or a ConfigError naming the key; never anything else ---------

def budget(examples: int) -> int:
    """This test's number of generated examples, scaled like the profiles' default of 100 when
    HOTFOLDER_HYPOTHESIS_EXAMPLES asks for a longer hunt (tests/conftest.py)."""
    return max(examples, examples * int(os.environ.get("HOTFOLDER_HYPOTHESIS_EXAMPLES", "0") or 0) // 100)


NUMERIC = sorted(k for k, (kind, _) in KEYS.items() if kind in (int, float))
JUNK = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 0.0, -0.0, 1e-300, 1e300, 2**63, 10**400, float("nan"), float("inf"), float("-inf")]),
    st.booleans(), st.text(max_size=12), st.sampled_from(["nan", "inf", "-inf", "1e999", " 5 ", "0x10", "1_000", "", "5s"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.none(),
)


def _as_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value).replace("inf", "inf")
    if isinstance(value, list):
        return "[" + ", ".join(map(_as_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_as_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def _load_one(tmp_path: Path, key: str, value: Any, source: str) -> Any:
    """Settings with ``key`` set to ``value`` from ``source``; the value as hotfolder took it."""
    if source == "env":
        text = value if isinstance(value, str) else json.dumps(value) if not isinstance(value, float) else repr(value)
        settings = load_settings(None, env={"HOTFOLDER_" + key.upper(): text.replace("\x00", "")}, cwd=tmp_path)
    elif source == "toml":
        if value is None:
            return None
        cfg = tmp_path / "generated.toml"
        cfg.write_text(f"{key} = {_as_toml(value)}\n", encoding="utf-8", errors="surrogateescape")
        settings = load_settings(cfg, env={}, cwd=tmp_path)
    else:
        settings = load_settings(None, env={}, overrides={key: value}, cwd=tmp_path)
    return getattr(settings, key)


def _names(err: ConfigError, key: str) -> bool:
    """The error names the key (or, for a generated file TOML cannot read, the file)."""
    return key in str(err) or err.where.get("key") == key or "is not valid TOML" in str(err)


@settings(max_examples=budget(150))
@given(key=st.sampled_from(NUMERIC), value=JUNK, source=st.sampled_from(["toml", "env", "cli"]))
@example(key="poll_interval", value=float("nan"), source="toml")
@example(key="job_timeout", value=float("inf"), source="env")
@example(key="queue_depth", value=float("inf"), source="toml")  # int(inf): OverflowError
@example(key="http_timeout", value=10**400, source="cli")  # float(huge): OverflowError
@example(key="output_workers", value=2.5, source="toml")  # was silently 2
def test_generated_numbers_are_in_range_or_a_config_error_naming_the_key(tmp_path: Path, key: str, value: Any,
                                                                        source: str) -> None:
    try:
        taken = _load_one(tmp_path, key, value, source)
    except ConfigError as err:
        assert _names(err, key), str(err)
        return
    if taken is None:
        return
    assert isinstance(taken, int | float) and not isinstance(taken, bool) and math.isfinite(taken)
    if key in LIMITS:
        low, inclusive, high = LIMITS[key]
        assert (low <= taken if inclusive else low < taken) and taken <= high


def test_nan_inf_negative_and_zero_timeouts_from_the_config_file_are_refused(tmp_path: Path) -> None:
    for key in ("job_timeout", "connect_timeout", "http_timeout", "poll_interval", "lease_timeout", "stop_budget",
                "history_grace", "lost_grace", "rescan_interval", "status_interval"):
        for bad in ("nan", "inf", "-inf", "-1", "0", "0.0"):
            cfg = write(tmp_path, f"{key} = {bad}\n")
            with pytest.raises(ConfigError, match=re.escape(repr(key))) as info:
                load_settings(cfg, env={}, cwd=tmp_path)
            assert "Traceback" not in str(info.value)
    with pytest.raises(ConfigError, match="at least 0.1"):
        load_settings(write(tmp_path, "poll_interval = 0.01\n"), env={}, cwd=tmp_path)


SECRET = "s3cr3tT0ken"
HOSTS = st.sampled_from(["127.0.0.1", "gpu1.example", "[::1]", "[::1", "", "h st", "::1", "a@b", "\u00e9t\u00e9"])
PORTS = st.sampled_from(["", ":8188", ":0", ":1", ":65535", ":65536", ":-1", ":abc", ":", ":99999999999999999999"])
URLS = st.one_of(
    st.builds(lambda scheme, user, host, port, path, query: f"{scheme}{user}{host}{port}{path}{query}",
              st.sampled_from(["http://", "https://", "ws://", "ftp://", "", "http:/", "HTTP://", "http:///"]),
              st.sampled_from(["", f"u:{SECRET}@", f"{SECRET}@", f"u:{SECRET}/x@", f"u:{SECRET}?@"]),
              HOSTS, PORTS, st.sampled_from(["", "/", "/comfy/", " "]),
              st.sampled_from(["", f"?token={SECRET}", f"?api_key={SECRET}&v=1", "?x=1", "#frag"])),
    st.text(max_size=30),
)
SERVER_VALUES = st.one_of(JUNK, st.just(SECRET), st.dictionaries(st.sampled_from(["Authorization", "X Bad", "a:b"]),
                                                                  st.one_of(st.text(max_size=8), st.integers()),
                                                                  max_size=2))


@settings(max_examples=budget(200))
@given(url=URLS, extra=st.dictionaries(st.sampled_from(["name", "token", "headers", "verify", "weight", "labels",
                                                        "input_dir", "bogus"]), SERVER_VALUES, max_size=2),
       source=st.sampled_from(["toml", "env", "cli"]))
@example(url="http://[::1", extra={}, source="cli")  # urlsplit: ValueError
@example(url="http://127.0.0.1:99999", extra={}, source="env")  # parts.port: ValueError, later
@example(url=f"http://u:{SECRET}/x@host:8188", extra={}, source="cli")  # the password cut the URL short
@example(url=f"u:{SECRET}?@127.0.0.1", extra={}, source="toml")  # found: no "//", a '?' in the password
@example(url=f"http:/u:{SECRET}@127.0.0.1", extra={}, source="toml")  # found: one slash
@example(url=f"http://127.0.0.1?token={SECRET}", extra={}, source="toml")  # found: repr(ServerConfig) showed it
@example(url="http://127.0.0.1:8188", extra={"weight": float("nan")}, source="cli")
@example(url="http://127.0.0.1:8188", extra={"verify": "false"}, source="cli")  # was: True
@example(url="http://127.0.0.1:8188", extra={"token": "a\r\nX-Injected: 1"}, source="cli")
def test_generated_server_urls_and_tables_are_valid_or_a_config_error(tmp_path: Path, url: Any, extra: dict[str, Any],
                                                                       source: str) -> None:
    entry: Any = {"url": url, **extra} if extra or source == "cli" else url
    # the secret is a credential in the URL, the token or the headers; a bad value of another key (a name,
    # a weight) is shown as given
    hidden = not any(SECRET in repr(v) for k, v in extra.items() if k not in ("token", "headers"))
    try:
        if source == "env":
            if not isinstance(url, str) or "," in url or "\x00" in url:
                return
            servers = load_settings(None, env={"HOTFOLDER_SERVERS": url}, cwd=tmp_path).servers
        elif source == "toml":
            table = "".join(f"{k} = {_as_toml(v)}\n" for k, v in (entry if isinstance(entry, dict) else {"url": url}).items()
                            if v is not None)
            cfg = write(tmp_path, "[[servers]]\n" + table)
            servers = load_settings(cfg, env={}, cwd=tmp_path).servers
        else:
            servers = load_settings(None, env={}, overrides={"servers": [entry]}, cwd=tmp_path).servers
    except ConfigError as err:
        assert "servers" in str(err) or "not valid TOML" in str(err) or "Server" in str(err), str(err)
        assert SECRET not in str(err) or not hidden, str(err)
        return
    for server in servers:
        parts = urlsplit(server.url)
        assert parts.scheme.lower() in {"http", "https"} and parts.hostname and parts.port != 0
        assert SECRET not in server.display_url
        if hidden:
            assert SECRET not in server.name and SECRET not in repr(server)
        ComfyHTTP(server.display_url, display_url=server.display_url, headers=server.request_headers(),
                  verify=server.verify).close()


def test_check_and_run_report_bad_values_without_a_traceback_or_the_secret(tmp_path: Path) -> None:
    cases = [(["check"], {"HOTFOLDER_POLL_INTERVAL": "nan"}, "poll_interval"),
             (["--server", f"http://u:{SECRET}@[::1/?token={SECRET}", "run", "--once"], {}, "servers")]
    for args, env, key in cases:
        result = (run_cli if "run" in args else invoke_cli)(*args, cwd=tmp_path, env=env)  # run: its own process
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr and key in result.stderr, result.stderr
        assert SECRET not in result.stdout + result.stderr


@settings(max_examples=budget(150))
@given(key=st.sampled_from(sorted(KEYS)), value=st.one_of(JUNK, st.lists(st.text(max_size=5), max_size=2)),
       source=st.sampled_from(["env", "cli"]))
@example(key="metrics_host", value="a..b", source="env")  # the IDNA codec's UnicodeError, at start
@example(key="inbox", value="a\x00b", source="cli")  # embedded null byte
@example(key="plugin_config", value={"x": 1}, source="cli")
def test_any_value_of_any_key_is_taken_or_a_config_error_naming_it(tmp_path: Path, key: str, value: Any,
                                                                   source: str) -> None:
    try:
        _load_one(tmp_path, key, value, source)
    except ConfigError as err:
        assert _names(err, key) or "Server" in str(err), str(err)


@pytest.mark.parametrize("key, value", [("render_timeout", 1e300), ("render_timeout", 0), ("max_scenario_depth", 0),
                                        ("max_download_size", -1)])
def test_budget_keys_are_range_checked_like_the_others(key: str, value: float, tmp_path: Path) -> None:
    (tmp_path / "hotfolder.toml").write_text(f"{key} = {value!r}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "hotfolder.toml", env={}, cwd=tmp_path)
    assert caught.value.where["key"] == key and "hotfolder.toml" in str(caught.value), caught.value


# -- generated [destinations]: accepted as named folders or store URLs, or a ConfigError naming the key ------

DEST_NAMES = st.one_of(st.sampled_from(["renders", "a", "Review_2", "x.y-z", "outbox", "", "a/b", ".hidden", "-x",
                                        "n" * 64, "n" * 65, "caf\u00e9", "a b"]), st.text(max_size=6))
DEST_VALUES = st.one_of(
    st.sampled_from(["s3://renders", "s3://renders/farm/", "s3://Renders", "s3://r", f"s3://k:{SECRET}@renders/x",
                     "s3://renders/a/../b", "s3://renders//x", "s3://", "results", "/abs/results", "inbox/x", "inbox",
                     "..", "", " ", "a\tb", "a\x00b", "~/results"]),
    st.text(max_size=12), JUNK)
DEST_TABLES = st.dictionaries(DEST_NAMES, st.one_of(DEST_VALUES, st.builds(lambda v: {"url": v}, DEST_VALUES),
                                                    st.dictionaries(st.sampled_from(["url", "region"]), DEST_VALUES,
                                                                    max_size=2)), max_size=4)


@settings(max_examples=budget(150))
@given(table=DEST_TABLES, source=st.sampled_from(["toml", "env", "cli"]))
@example(table={"outbox": "s3://renders"}, source="toml")
@example(table={"a": f"s3://k:{SECRET}@renders/x"}, source="env")
@example(table={"a": "inbox/x"}, source="cli")
@example(table={"a": {"url": "s3://renders", "region": "eu"}}, source="toml")
def test_generated_destinations_are_named_folders_or_urls_or_a_config_error_naming_the_key(
        tmp_path: Path, table: dict[Any, Any], source: str) -> None:
    pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
    try:
        if source == "env":
            text = ",".join(f"{k}={v}" for k, v in table.items())
            if "\x00" in text:
                return
            s = load_settings(None, env={"HOTFOLDER_DESTINATIONS": text}, cwd=tmp_path)
        elif source == "toml":
            lines = "".join(f"{json.dumps(k, ensure_ascii=False)} = {_as_toml(v)}\n" for k, v in table.items()
                            if v is not None)
            s = load_settings(write(tmp_path, "[destinations]\n" + lines), env={}, cwd=tmp_path)
        else:
            s = load_settings(None, env={}, overrides={"destinations": table}, cwd=tmp_path)
    except ConfigError as err:
        assert err.where.get("key") == "destinations" or "is not valid TOML" in str(err), str(err)
        assert SECRET not in str(err), str(err)
        return
    names = [d.name for d in s.destinations]
    assert len(set(names)) == len(names) and "outbox" not in names
    assert s.destination_names == ("outbox", *names)
    for d in s.destinations:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", d.name), d.name
        assert s.destination(d.name) == d
        if d.url:
            assert re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)*", d.url) and SECRET not in d.url, d.url
            assert d.staging_dir == s.state_dir / ".staging"
        else:
            assert d.folder.is_absolute() and not d.folder.is_relative_to(s.inbox) and not s.inbox.is_relative_to(d.folder)
            assert d.staging_dir == d.folder / ".hotfolder-staging"
