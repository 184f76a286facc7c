"""The systemd unit text and sd_notify over a real datagram socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder.config import ServerConfig, Settings
from hotfolder.service import Heartbeat, Notifier, quote, render_unit

# A fixed interpreter path, so that the unit does not depend on where this checkout's venv lives (a venv
# under /tmp or /root changes PrivateTmp/ProtectHome on purpose; those cases have their own tests).
PY = ["/usr/bin/python3", "-m", "hotfolder"]


def settings_at(root: Path) -> Settings:
    return Settings(inbox=root / "inbox", outbox=root / "outbox", templates=root / "templates",
                    plugins=root / "plugins", servers=(ServerConfig("http://127.0.0.1:8188"),))


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def comment_above(text: str, key: str) -> str:
    """The comment block right above ``key=`` (directives of the same group may sit between)."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(key + "="))
    block: list[str] = []
    for line in reversed(lines[:index]):
        if line.startswith("#"):
            block.insert(0, line)
        elif block or not line or line.startswith("["):
            break
    return "\n".join(block)


def test_render_unit_has_the_service_settings_the_daemon_relies_on() -> None:
    root = Path("/srv/render")
    text = render_unit(settings_at(root), executable=PY, config_path=root / "hotfolder.toml",
                       user="render", stop_budget=120)
    d = directives(text)
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"] == ["30"]
    assert d["Restart"] == ["on-failure"]
    assert int(d["TimeoutStopSec"][0]) > 120
    assert d["RequiresMountsFor"] == ["/srv/render/inbox /srv/render/outbox /srv/render/templates"]
    assert d["User"] == ["render"] and d["Group"] == ["render"]
    assert d["Environment"] == ["PYTHONUNBUFFERED=1"]
    assert d["ExecStart"] == ["/usr/bin/python3 -m hotfolder --config /srv/render/hotfolder.toml run"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["WorkingDirectory"] == ["/srv/render"]
    assert d["LogRateLimitIntervalSec"] == ["0"]
    assert d["WantedBy"] == ["multi-user.target"]


def test_render_unit_hardening_writes_exactly_inbox_and_outbox() -> None:
    root = Path("/srv/render")
    text = render_unit(settings_at(root), executable=PY, config_path=root / "hotfolder.toml", stop_budget=60)
    d = directives(text)
    assert d["ProtectSystem"] == ["strict"]
    # done/, failed/ and .hotfolder/ are inside the inbox: writable through it, not listed again
    assert d["ReadWritePaths"] == ["/srv/render/inbox /srv/render/outbox"]
    for key, value in {"NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet": ""}.items():
        assert d[key] == [value], key
    # every non-obvious line says why
    for key in ("Type", "WatchdogSec", "TimeoutStopSec", "TimeoutStartSec", "ExecReload", "Environment",
                "LogRateLimitIntervalSec", "RequiresMountsFor", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "NoNewPrivileges", "RestrictAddressFamilies", "PrivateDevices"):
        assert comment_above(text, key), f"{key}= has no comment saying why"


def test_render_unit_extra_write_paths_are_added_once() -> None:
    root = Path("/srv/render")
    s = settings_at(root)
    text = render_unit(s, executable=PY, config_path=None, stop_budget=10,
                       write_paths=[Path("/srv/comfy/input"), s.inbox / "done"])
    assert directives(text)["ReadWritePaths"] == ["/srv/render/inbox /srv/render/outbox /srv/comfy/input"]
    assert "--config" not in directives(text)["ExecStart"][0]


def test_render_unit_keeps_home_folders_readable_when_under_home() -> None:
    text = render_unit(settings_at(Path("/home/alice/render")), executable="/home/alice/.venv/bin/hotfolder",
                       config_path="/home/alice/render/hotfolder.toml", stop_budget=30)
    d = directives(text)
    assert d["ProtectHome"] == ["read-only"]
    assert "/home/alice/render/inbox" in comment_above(text, "ProtectHome")
    assert d["ExecStart"] == ["/home/alice/.venv/bin/hotfolder --config /home/alice/render/hotfolder.toml run"]


def test_render_unit_disables_private_tmp_for_folders_in_tmp() -> None:
    text = render_unit(settings_at(Path("/tmp/render")), executable=PY, config_path=None, stop_budget=30)
    assert "PrivateTmp" not in directives(text)
    assert "#PrivateTmp=yes" in text


def test_quote_escapes_specifiers_spaces_and_dollars() -> None:
    assert quote("/srv/a b") == '"/srv/a b"'
    assert quote("/srv/100%") == "/srv/100%%"
    assert quote("/srv/$x", command=True) == "/srv/$$x"
    assert quote("/srv/$x") == "/srv/$x"
    assert quote('a"b c') == '"a\\"b c"'


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_render_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "my render 100%"
    for sub in ("inbox", "outbox", "templates", "plugins"):
        (root / sub).mkdir(parents=True)
    unit = tmp_path / "hotfolder.service"
    unit.write_text(render_unit(settings_at(root), executable=[sys.executable, "-m", "hotfolder"], config_path=root / "hotfolder.toml",
                                stop_budget=90, write_paths=[tmp_path / "comfy input"]))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "hotfolder.service" not in result.stderr, result.stderr


# -- sd_notify -----------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_notifier_sends_each_message_as_one_datagram(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    try:
        assert notifier.ready("1 running, 0 waiting")
        assert received(sock) == {"READY": "1", "STATUS": "1 running, 0 waiting"}
        assert notifier.watchdog()
        assert received(sock) == {"WATCHDOG": "1"}
        assert notifier.status("3 running,\n12 waiting")
        assert received(sock) == {"STATUS": "3 running, 12 waiting"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        message = received(sock)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert message["RELOADING"] == "1"
        assert before <= int(message["MONOTONIC_USEC"]) <= after
        assert notifier.stopping()
        assert received(sock) == {"STOPPING": "1"}
    finally:
        notifier.close()


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"hotfolder-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.ready()
        assert received(sock) == {"READY": "1"}
    finally:
        notifier.close()
        sock.close()


def test_notifier_does_nothing_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None


def test_notifier_never_raises_when_the_socket_is_gone(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert notifier.ready() is False
    assert Notifier({"NOTIFY_SOCKET": "relative/name"}).ready() is False


def test_notifier_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_interval() is None


def test_notifier_reads_notify_socket_from_the_environment_of_a_real_process(
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {**os.environ, "NOTIFY_SOCKET": path}
    code = "from hotfolder.service import Notifier; n = Notifier(); n.ready(); n.stopping()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert received(sock) == {"READY": "1"}
    assert received(sock) == {"STOPPING": "1"}


def test_heartbeat_pings_at_most_every_interval_and_only_while_healthy(
        notify_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture) -> None:
    sock, path = notify_socket
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    heartbeat = Heartbeat(notifier, clock=lambda: now[0])
    try:
        assert heartbeat.interval == 5.0
        assert heartbeat.beat(True)
        assert received(sock) == {"WATCHDOG": "1"}
        now[0] += 4.9
        assert not heartbeat.beat(True)
        now[0] += 0.2
        assert not heartbeat.beat(False, "the inbox observer died")
        assert not heartbeat.beat(False, "the inbox observer died")
        assert heartbeat.beat(True)
        assert received(sock) == {"WATCHDOG": "1"}
        sock.setblocking(False)  # a local datagram is queued by the time sendto returns
        with pytest.raises(BlockingIOError):  # nothing else was sent
            sock.recv(4096)
    finally:
        notifier.close()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "Not sending watchdog pings: the inbox observer died"]


def test_heartbeat_without_a_watchdog_never_pings(notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket
    assert not Heartbeat(Notifier({"NOTIFY_SOCKET": path})).beat(True)
