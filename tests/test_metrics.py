"""Prometheus metrics, scraped from the real HTTP endpoint on loopback."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from hotfolder import metrics as metrics_module
from hotfolder.errors import ConfigError
from hotfolder.events import Archived, Claimed, Event, Failed, Progress, Published, Rendered, Resubmitted, Submitted
from hotfolder.status import StatusBoard

pytest.importorskip("prometheus_client")

from hotfolder.metrics import Metrics, MetricsServer, start_metrics_server  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture
def served() -> Iterator[tuple[Metrics, StatusBoard, Clock, MetricsServer]]:
    clock = Clock()
    board = StatusBoard(servers=[("gpu1", "http://gpu1:8188"), ("gpu2", "http://gpu2:8188")])
    metrics = Metrics(board=board, clock=clock)
    server = start_metrics_server(0, metrics=metrics)
    try:
        yield metrics, board, clock, server
    finally:
        server.close()


def test_metrics_endpoint_reports_jobs_durations_queues_and_servers(
        served: tuple[Metrics, StatusBoard, Clock, MetricsServer]) -> None:
    metrics, board, clock, server = served
    assert server.url.startswith("http://127.0.0.1:")
    reconnects = {"gpu1": 0}
    metrics.watch_reconnects("gpu1", lambda: reconnects["gpu1"])
    board.server_state("gpu1", "http://gpu1:8188", up=True, queue=4)
    board.server_state("gpu2", "http://gpu2:8188", up=False)

    def emit(event: Event) -> None:
        board(event)
        metrics(event)

    emit(Claimed(file="a.yaml", job_id="J1"))
    clock.now += 1
    emit(Rendered(file="a.yaml", job_id="J1", jobs=2))
    clock.now += 2
    emit(Submitted(file="a.yaml", job_id="J1", job="a-001", prompt_id="p", server="http://gpu1:8188"))
    clock.now += 3
    emit(Progress(file="a.yaml", job_id="J1", job="a-001", node="3", value=1, max=10))

    live = scrape(server.url)
    assert live["hotfolder_jobs_waiting"] == 1
    assert live['hotfolder_jobs_running{server="gpu1"}'] == 1
    assert live['hotfolder_jobs_running{server="gpu2"}'] == 0
    assert live['hotfolder_server_up{server="gpu1"}'] == 1
    assert live['hotfolder_server_up{server="gpu2"}'] == 0
    assert live['hotfolder_server_queue{server="gpu1"}'] == 4
    assert live['hotfolder_websocket_reconnects_total{server="gpu1"}'] == 0

    clock.now += 4
    emit(Resubmitted(file="a.yaml", job_id="J1", job="a-001", server="gpu1", prompt_id=None))
    emit(Published(file="a.yaml", job_id="J1", job="a-001", path=""))
    emit(Failed(file="a.yaml", job_id="J1", job="a-002", error={"message": "bad"}))
    emit(Archived(file="a.yaml", job_id="J1", failed=True, path=None))
    reconnects["gpu1"] = 2

    done = scrape(server.url)
    assert done['hotfolder_jobs_total{outcome="published"}'] == 1
    assert done['hotfolder_jobs_total{outcome="failed"}'] == 1
    assert done['hotfolder_files_total{outcome="failed"}'] == 1
    assert done['hotfolder_files_total{outcome="done"}'] == 0
    assert done['hotfolder_job_duration_seconds_sum{outcome="published"}'] == 10
    assert done['hotfolder_job_duration_seconds_count{outcome="failed"}'] == 1
    assert {stage: done[f'hotfolder_stage_duration_seconds_sum{{stage="{stage}"}}']
            for stage in ("prepare", "wait", "queued", "run")} == {"prepare": 1, "wait": 2, "queued": 3, "run": 4}
    assert done['hotfolder_stage_duration_seconds_bucket{le="5.0",stage="run"}'] == 1
    assert done['hotfolder_resubmissions_total{server="gpu1"}'] == 1
    assert done['hotfolder_websocket_reconnects_total{server="gpu1"}'] == 2
    assert done["hotfolder_jobs_waiting"] == 0


def test_metrics_registry_is_private_to_each_instance() -> None:
    first, second = Metrics(), Metrics()  # would clash on prometheus-client's global registry
    first.observe(Published(file="a.yaml", job_id="J1", job="a-001", path=""))
    assert b'hotfolder_jobs_total{outcome="published"} 1.0' in first.exposition()
    assert b'hotfolder_jobs_total{outcome="published"} 0.0' in second.exposition()
    assert b"hotfolder_jobs_waiting" not in first.exposition()  # no board: no gauges


def test_metrics_server_refuses_a_non_loopback_address() -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        start_metrics_server(0, "0.0.0.0", metrics=Metrics())


def test_metrics_server_reports_a_busy_port_as_a_config_error() -> None:
    metrics = Metrics()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(ConfigError, match="Cannot serve metrics"):
            start_metrics_server(taken.getsockname()[1], metrics=metrics)
    finally:
        taken.close()


def test_metrics_server_serves_on_ipv6_loopback_when_available() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = start_metrics_server(0, "::1", metrics=Metrics())
    try:
        assert re.match(r"http://\[::1\]:\d+/metrics$", server.url)
        assert 'hotfolder_jobs_total{outcome="failed"}' in scrape(server.url)
    finally:
        server.close()


def test_metrics_without_prometheus_client_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "prometheus_client", None)
    assert not metrics_module.available()
    with pytest.raises(ConfigError, match="prometheus-client is not installed") as info:
        Metrics()
    assert "hotfolder[metrics]" in str(info.value)
