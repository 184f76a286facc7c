"""Settings precedence and errors: hotfolder.toml < HOTFOLDER_* < command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotfolder.config import load_settings, redact_url
from hotfolder.errors import ConfigError


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
