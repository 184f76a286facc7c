"""StatusBoard from pipeline events, the status file writer, and the `hotfolder status` report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hotfolder.errors import HotfolderError
from hotfolder.events import Archived, Claimed, Event, Failed, Progress, Published, Rendered, Submitted
from hotfolder.status import FAILURE_WINDOW, StatusBoard
from hotfolder.status_file import StatusWriter, read_all_status, status_path
from hotfolder.status_report import format_status, status_problem
from tests.conftest import wait_until


class Clock:
    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def feed(board: StatusBoard, *events: Event) -> None:
    for event in events:
        board(event)


def busy_board(clock: Clock) -> StatusBoard:
    board = StatusBoard(servers=[("gpu1", "http://gpu1:8188"), ("gpu2", "http://gpu2:8188")],
                        instance="render1", clock=clock)
    board.server_state("gpu1", "http://gpu1:8188", up=True, queue=2)
    board.server_state("gpu2", "http://gpu2:8188", up=False)
    board.set_state("running")
    feed(board,
         Claimed(file="a.yaml", job_id="J1"),
         Rendered(file="a.yaml", job_id="J1", jobs=3),
         Submitted(file="a.yaml", job_id="J1", job="a-001", prompt_id="p1", server="http://gpu1:8188"),
         Progress(file="a.yaml", job_id="J1", job="a-001", node="3", value=5, max=20),
         Claimed(file="b.csv", job_id="J2"))
    return board


def test_board_tracks_running_jobs_progress_and_waiting_counts() -> None:
    clock = Clock()
    board = busy_board(clock)
    snap = board.snapshot()
    assert [(j["file"], j["job"], j["server"], j["state"], j["node"], j["value"], j["max"], j["percent"])
            for j in snap["running"]] == [("a.yaml", "a-001", "gpu1", "running", "3", 5, 20, 25.0)]
    assert snap["waiting"] == 3  # a-002, a-003, and b.csv still being read
    assert [(w["file"], w["jobs"]) for w in snap["waiting_files"]] == [("a.yaml", 2), ("b.csv", 1)]
    assert {s["name"]: (s["up"], s["queue"], s["running"]) for s in snap["servers"]} == {
        "gpu1": (True, 2, 1), "gpu2": (False, None, 0)}
    assert board.summary() == "1 running, 3 waiting, server gpu2 down"
    json.dumps(snap)  # JSON-able


def test_board_moves_jobs_through_publish_failure_and_archive() -> None:
    clock = Clock()
    board = busy_board(clock)
    clock.now += 10
    feed(board,
         Published(file="a.yaml", job_id="J1", job="a-001", path="/out/a-001"),
         Failed(file="a.yaml", job_id="J1", job="a-002", error={"message": "Node 6 input 'text' is missing."}),
         Submitted(file="a.yaml", job_id="J1", job="a-003", prompt_id="p3", server="gpu1"))
    snap = board.snapshot()
    assert [(j["job"], j["state"], j["percent"]) for j in snap["running"]] == [("a-003", "queued", None)]
    assert snap["waiting"] == 1
    assert snap["failures"] == [{"file": "a.yaml", "job": "a-002", "job_id": "J1",
                                 "message": "Node 6 input 'text' is missing.", "time": snap["updated"]}]
    feed(board,
         Published(file="a.yaml", job_id="J1", job="a-003", path=""),
         Archived(file="a.yaml", job_id="J1", failed=True, path=None),
         Failed(file="b.csv", job_id="J2", error={"message": "not valid CSV"}),
         Archived(file="b.csv", job_id="J2", failed=True, path=None))
    snap = board.snapshot()
    assert snap["running"] == [] and snap["waiting"] == 0
    assert snap["counts"] == {"published": 2, "failed": 1, "files_done": 0, "files_failed": 2}
    assert [f["file"] for f in snap["failures"]] == ["b.csv", "a.yaml"]
    board.server_state("gpu2", "http://gpu2:8188", up=True)
    assert board.summary() == "idle"


def test_board_forgets_failures_older_than_an_hour() -> None:
    clock = Clock()
    board = StatusBoard(clock=clock)
    feed(board, Failed(file="old.yaml", job_id="J1", error={"message": "old"}))
    clock.now += FAILURE_WINDOW - 1
    feed(board, Failed(file="new.yaml", job_id="J2", error={"message": "new"}))
    assert [f["file"] for f in board.snapshot()["failures"]] == ["new.yaml", "old.yaml"]
    clock.now += 2
    assert [f["file"] for f in board.snapshot()["failures"]] == ["new.yaml"]


def test_board_handles_jobs_resumed_after_a_restart_without_claim_events() -> None:
    board = StatusBoard()
    feed(board, Submitted(file="r.yaml", job_id="J9", job="r-002", prompt_id=None, server="http://gpu1:8188"),
         Progress(file="r.yaml", job_id="J9", job="r-003", node="7", value=1, max=4))
    snap = board.snapshot()
    assert [j["job"] for j in snap["running"]] == ["r-002", "r-003"]
    assert snap["waiting"] == 0
    assert snap["running"][0]["server"] == "http://gpu1:8188"  # unknown server: shown by what we know


def test_board_is_consistent_under_concurrent_events_and_snapshots() -> None:
    board = StatusBoard()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                job_id = f"J{n}-{i}"
                feed(board, Claimed(file=f"{job_id}.yaml", job_id=job_id),
                     Rendered(file=f"{job_id}.yaml", job_id=job_id, jobs=1),
                     Submitted(file=f"{job_id}.yaml", job_id=job_id, job="x", prompt_id=None, server="s"),
                     Progress(file=f"{job_id}.yaml", job_id=job_id, job="x", node="1", value=1, max=2),
                     Published(file=f"{job_id}.yaml", job_id=job_id, job="x", path=""),
                     Archived(file=f"{job_id}.yaml", job_id=job_id, failed=False, path=None))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        json.dumps(board.snapshot())
    for t in threads:
        t.join()
    assert not errors
    snap = board.snapshot()
    assert snap["counts"] == {"published": 800, "failed": 0, "files_done": 800, "files_failed": 0}
    assert snap["running"] == [] and snap["waiting"] == 0


# -- the status file -----------------------------------------------------------------------------


def test_writer_writes_the_status_file_periodically_and_on_flush(tmp_path: Path) -> None:
    board = busy_board(Clock(time.time()))
    path = status_path(tmp_path / ".hotfolder", "render1")
    written: list[str] = []
    writer = StatusWriter(board, path, interval=0.05, on_write=lambda snap: written.append(snap["summary"]))
    writer.start()
    try:
        wait_until(lambda: writer.writes >= 3, timeout=10, message="three periodic writes")
        feed(board, Published(file="a.yaml", job_id="J1", job="a-001", path=""))
        assert writer.flush(timeout=10)
        data = read_all_status(tmp_path / ".hotfolder").get("render1")
        assert data is not None
        assert data["running"] == [] and data["interval"] == 0.05 and data["pid"] == os.getpid()
        assert written[-1] == "0 running, 3 waiting, server gpu2 down"
    finally:
        writer.stop()
    assert read_all_status(tmp_path / ".hotfolder")["render1"]["state"] == "stopped"
    assert sorted(p.name for p in path.parent.iterdir()) == ["render1.json"]  # no temp files left


def test_writer_on_a_slow_interval_still_writes_at_once_on_flush(tmp_path: Path) -> None:
    board = StatusBoard()
    writer = StatusWriter(board, tmp_path / "status.json", interval=3600)
    writer.start()
    try:
        wait_until(lambda: writer.writes == 1, timeout=10, message="the first write")
        board.set_state("running")
        assert writer.flush(timeout=10)
        assert writer.writes == 2
        assert json.loads((tmp_path / "status.json").read_text())["state"] == "running"
    finally:
        writer.stop(final_state=None)


def test_writer_survives_an_unwritable_status_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = StatusWriter(StatusBoard(), blocker / "status.json", interval=3600)
    writer.start()
    try:
        assert writer.flush(timeout=10) is False
        assert writer.flush(timeout=10) is False
    finally:
        writer.stop()
    assert sum("Cannot write the status file" in r.getMessage() for r in caplog.records) == 1


def test_read_all_status_is_empty_without_a_file_and_explains_a_broken_one(tmp_path: Path) -> None:
    assert read_all_status(tmp_path) == {}
    (tmp_path / "status").mkdir()
    (tmp_path / "status" / "a.json").write_text("{not json")
    with pytest.raises(HotfolderError, match="not valid JSON"):
        read_all_status(tmp_path)


def test_each_daemon_on_an_inbox_has_its_own_status_file(tmp_path: Path) -> None:
    writers = [StatusWriter(StatusBoard(), status_path(tmp_path, name), interval=3600) for name in ("gpu-a", "gpu-b")]
    for writer in writers:
        writer.board.set_state("running")
        writer.start()
    try:
        assert all(writer.flush(timeout=10) for writer in writers)
        assert sorted(read_all_status(tmp_path)) == ["gpu-a", "gpu-b"]
    finally:
        writers[0].stop()
        writers[1].stop(final_state=None)
    found = read_all_status(tmp_path)
    assert found["gpu-a"]["state"] == "stopped" and found["gpu-b"]["state"] == "running"


# -- hotfolder status ----------------------------------------------------------------------------


def test_format_status_shows_progress_servers_and_failures() -> None:
    clock = Clock(time.time())
    board = busy_board(clock)
    feed(board, Failed(file="c.yaml", job_id="J3", error={"message": "Unknown template 'nope'."}))
    snap = board.snapshot()
    snap["interval"] = 2.0
    clock.now += 75
    text = format_status(snap, now=clock.now - 74, alive=lambda pid: True)
    lines = text.splitlines()
    assert lines[0].startswith("hotfolder render1 on ") and ": running, up 1 s" in lines[0]
    assert "1 running, 3 waiting, server gpu2 down" in lines[1]
    row = next(line for line in lines if "a-001" in line)
    assert row.split() == ["a.yaml", "a-001", "gpu1", "running", "3", "5/20", "25%", "1", "s"]
    assert any(line.split()[:3] == ["gpu2", "http://gpu2:8188", "DOWN"] for line in lines)
    assert any("c.yaml: Unknown template 'nope'." in line for line in lines)
    assert "NOT RUNNING" not in text


def test_format_status_flags_a_stale_file_and_a_dead_writer() -> None:
    board = StatusBoard(clock=Clock(1_000_000.0))
    snap = board.snapshot()
    snap["interval"] = 2.0
    assert status_problem(snap, now=1_000_005.0, alive=lambda pid: True) is None
    assert "stuck" in status_problem(snap, now=1_000_007.0, alive=lambda pid: True)
    dead = format_status(snap, now=1_000_001.0, alive=lambda pid: False)
    assert dead.splitlines()[0].endswith(f"DAEMON NOT RUNNING (process {os.getpid()} is gone)")
    snap["state"] = "stopped"
    assert status_problem(snap, now=1_000_060.0) == "daemon not running (stopped 1 min ago)"


def test_status_problem_checks_a_real_process_id() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=60)
    gone = int(proc.stdout)
    snap = StatusBoard().snapshot()
    snap["interval"] = 2.0
    assert status_problem(snap) is None  # written by this (live) process just now
    snap["pid"] = gone
    assert status_problem(snap) == f"daemon not running (process {gone} is gone)"
    snap["host"] = "another-host"  # a pid on another machine (shared inbox) cannot be checked
    assert status_problem(snap) is None


# -- with the real engine ------------------------------------------------------------------------


def test_board_and_writer_follow_a_real_daemon_run(project: Path, comfy) -> None:
    from hotfolder.daemon import run_daemon
    from tests.conftest import make_settings

    settings = make_settings(project, comfy.url)
    (project / "inbox" / "pair.yaml").write_text("repeat: 2\nparams: {width: 8}\n")
    (project / "inbox" / "bad.yaml").write_text("template: no-such-template\n")
    board = StatusBoard(servers=[(s.name, s.display_url) for s in settings.servers])
    writer = StatusWriter(board, status_path(settings.state_dir, settings.instance_id), interval=0.1)
    listeners: list = [board]
    try:
        from hotfolder.metrics import Metrics
        metrics = Metrics(board=board)
        listeners.append(metrics)
    except ImportError:
        metrics = None
    writer.start()
    try:
        counts = run_daemon(settings, once=True, listeners=listeners)
        assert writer.flush(timeout=10)
    finally:
        writer.stop(final_state=None)
    snap = read_all_status(settings.state_dir)[settings.instance_id]
    assert snap is not None
    assert snap["counts"] == {"published": 2, "failed": 1, "files_done": 1, "files_failed": 1}
    # the engine's own counts miss a job whose workflow did not render (no "failed" event for it)
    assert {k: v for k, v in counts.items() if k != "failed"} == {"published": 2, "files_done": 1, "files_failed": 1}
    assert snap["running"] == [] and snap["waiting"] == 0
    assert [f["file"] for f in snap["failures"]] == ["bad.yaml"]
    assert "no-such-template" in snap["failures"][0]["message"]
    if metrics is not None:
        text = metrics.exposition().decode()
        assert 'hotfolder_jobs_total{outcome="published"} 2.0' in text
        assert 'hotfolder_files_total{outcome="failed"} 1.0' in text
        assert 'hotfolder_jobs_total{outcome="failed"} 1.0' in text
        assert 'hotfolder_stage_duration_seconds_count{stage="run"} 2.0' in text


def test_status_command_shows_this_daemon_one_by_name_or_all(tmp_path: Path) -> None:
    from tests.conftest import invoke_cli

    state = tmp_path / "inbox" / ".hotfolder"
    for name, state_name in (("gpu-a", "running"), ("gpu-b", "stopped")):
        writer = StatusWriter(StatusBoard(instance=name), status_path(state, name), interval=3600)
        writer.stop(final_state=state_name)  # one write, as a daemon leaves it
    env = {"HOTFOLDER_INSTANCE_ID": "gpu-a"}
    shown = invoke_cli("status", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "gpu-a" in shown.stdout and "gpu-b" not in shown.stdout
    other = invoke_cli("status", "--instance", "gpu-b", cwd=tmp_path, env=env)
    assert other.returncode == 1 and "DAEMON NOT RUNNING (stopped" in other.stdout
    both = invoke_cli("status", "--all", "--json", cwd=tmp_path, env=env)
    assert both.returncode == 1 and [s["instance"] for s in json.loads(both.stdout)] == ["gpu-a", "gpu-b"]
    unknown = invoke_cli("status", cwd=tmp_path, env={"HOTFOLDER_INSTANCE_ID": "gpu-c"})
    assert unknown.returncode == 1 and "daemons that have run here: gpu-a, gpu-b" in unknown.stderr


def test_the_status_folder_is_never_taken_for_a_dead_daemons_folder(tmp_path: Path) -> None:
    from hotfolder.lease import Lease

    state = tmp_path / ".hotfolder"
    StatusWriter(StatusBoard(instance="gpu-a"), status_path(state, "gpu-a"), interval=3600).stop()
    (state / "gone").mkdir()  # a daemon's folder without a lease: adopted by the others
    assert Lease(state, "gpu-b").orphaned_instances() == ["gone"]


def test_a_paused_daemon_says_so_in_the_file_the_summary_and_the_report() -> None:
    clock = Clock(time.time())
    board = busy_board(clock)
    assert board.snapshot()["paused"] is None
    board.set_submit_paused(clock.now - 5)
    snap = board.snapshot()
    assert snap["paused"].endswith("Z")
    assert snap["summary"].startswith("PAUSED (inbox/PAUSE")  # the sd_notify STATUS= line
    assert "PAUSED" in format_status(snap, now=clock.now, alive=lambda pid: True).splitlines()[1]
    board.set_submit_paused(None)
    assert board.snapshot()["paused"] is None and "PAUSED" not in board.summary()


# -- the server's own view of each job (the jobs API) ----------------------------------------------


def status_rows(project: Path) -> list[dict]:
    """The running jobs in the only status file of the project's daemon ([] before it is written)."""
    found = read_all_status(project / "inbox" / ".hotfolder")
    return next(iter(found.values()))["running"] if found else []


def job_list_requests(comfy) -> list:
    """The ``GET /api/jobs`` list requests the server saw (not the probe, which asks for one job)."""
    return [r for r in comfy.requests if r.method == "GET" and r.path == "/api/jobs" and "status" in r.query]


@pytest.mark.both_profiles
def test_status_shows_each_jobs_state_and_queue_place_on_the_server_when_it_has_the_jobs_api(
        project: Path, comfy) -> None:
    """On 0.4x the status file and ``hotfolder status`` show the server's state of each of our prompts
    (one in_progress, the others pending #1, #2 in the server's queue order), from one ``GET /api/jobs``
    per status interval at most; on 0.3 they show hotfolder's own view (queued, running), as before."""
    from tests.conftest import invoke_cli
    from tests.test_daemon import stop

    interval = 0.2
    (project / "hotfolder.toml").write_text(f"queue_depth = 3\nstatus_interval = {interval}\nstop_budget = 0.5\n")
    comfy.faults.node_delay("ImageInvert", 60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFOLDER_")}
    env.update({"HOTFOLDER_SETTLE_SECONDS": "0.2", "HOTFOLDER_POLL_INTERVAL": "0.5"})
    proc = subprocess.Popen([sys.executable, "-m", "hotfolder", "--server", comfy.url, "--default-template", "invert",
                             "run"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    jobs_api = comfy.profile.name == "0.4x"
    try:
        (project / "inbox" / "night.yaml").write_text("repeat: 3\nparams: {width: 8}\n")

        def on_server() -> list[list]:
            assert proc.poll() is None, "the daemon exited"
            queue = comfy.queue()
            return queue["queue_running"] + sorted(queue["queue_pending"], key=lambda item: item[0])

        wait_until(lambda: len(on_server()) == 3 and comfy.queue()["queue_running"], timeout=60,
                   message="three prompts on the server, one running")
        order = [item[1] for item in on_server()]  # running, then pending in the order they will start
        if jobs_api:
            expected = [("in_progress", None), ("pending", 1), ("pending", 2)]
        else:
            expected = [(None, None)] * 3
        by_prompt = lambda: {row["prompt_id"]: (row["server_state"], row["queue_position"])  # noqa: E731
                             for row in status_rows(project)}
        wait_until(lambda: [by_prompt().get(p) for p in order] == expected, timeout=30,
                   message=f"the status file showing {expected}")
        shown = invoke_cli("status", cwd=project)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        states = sorted(line.split()[3] + (" " + line.split()[4] if line.split()[3] == "pending" else "")
                        for line in shown.stdout.splitlines() if line.strip().startswith("night.yaml "))
        if jobs_api:
            assert states == ["in_progress", "pending #1", "pending #2"], shown.stdout
        else:  # hotfolder's own view, as before the jobs API
            assert len(states) == 3 and set(states) <= {"queued", "running"}, shown.stdout
        # the cost: over ten status intervals, one GET /api/jobs per interval at most (three jobs, one server)
        comfy.clear_requests()
        since = time.time()
        wait_until(lambda: next(iter(read_all_status(project / "inbox" / ".hotfolder").values()))["updated_unix"]
                   >= since + 10 * interval, message="ten status intervals")
        asked = len(job_list_requests(comfy))
        window = time.time() - since
        if jobs_api:
            assert 1 <= asked <= window / interval + 1, (asked, window)
        else:
            assert asked == 0
    finally:
        comfy.faults.node_delay("ImageInvert", 0)
        log = stop(proc)
        print(log)  # shown when the test fails
    assert proc.returncode == 0, log


def test_the_servers_view_of_a_job_is_believed_only_for_a_while_and_only_for_our_prompts() -> None:
    clock = Clock()
    board = busy_board(clock)
    assert board.prompts_on("gpu1") == {"p1"} and board.prompts_on("gpu2") == set()
    board.server_jobs("gpu1", {"p1": ("pending", 3), "someone-elses": ("in_progress", None)}, valid_for=6)
    (row,) = board.snapshot()["running"]
    assert (row["state"], row["server_state"], row["queue_position"]) == ("running", "pending", 3)
    assert "pending #3" in format_status(board.snapshot(), now=clock.now, alive=lambda pid: True)
    clock.now += 7  # no newer answer (a slow server): hotfolder's own view again
    (row,) = board.snapshot()["running"]
    assert (row["state"], row["server_state"], row["queue_position"]) == ("running", None, None)
    assert " running " in format_status(board.snapshot(), now=clock.now, alive=lambda pid: True)
