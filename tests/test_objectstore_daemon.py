"""An ``s3://`` outbox end to end: the real hotfolder process with the test ComfyUI, publishing into moto's S3
server on loopback (tests/s3server.py, recording every request it gets), also when the daemon is SIGKILLed
mid-upload and when the S3 server dies mid-upload and comes back empty."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")

from hotfolder.comfy.client import Cancelled  # noqa: E402
from hotfolder.config import load_settings  # noqa: E402
from hotfolder.errors import ConfigError  # noqa: E402
from hotfolder.events import JobLog  # noqa: E402
from hotfolder.objectstore import ObjectStoreUnavailable  # noqa: E402
from hotfolder.record import FileRecord, JobState  # noqa: E402
from hotfolder.stages import publish_s3  # noqa: E402
from hotfolder.stages.context import JobContext  # noqa: E402
from hotfolder.testing import ComfyTestServer  # noqa: E402
from tests._gallery import resolved_links  # noqa: E402
from tests._s3 import PREFIX, Store, running_store  # noqa: E402 - skips the module without moto[server]
from tests.conftest import run_cli, wait_until  # noqa: E402
from tests.test_faults import archived, kill  # noqa: E402
from tests.test_objectstore import BUCKET, S3Server, free_port  # noqa: E402

pytestmark = pytest.mark.timeout(180)

SECRET = "s3cr3t-never-in-a-log"
MATRIX = "matrix:\n  width: [8, 16, 24]\n  height: [8, 16]\n"  # 6 jobs


class Cutter:
    """A loopback TCP relay in front of the store that runs ``cut()`` when the first request matching ``pattern``
    arrives, before passing it on, and drops that connection: the store dies exactly there. Connections
    the store refuses are dropped at once."""

    def __init__(self, target: int, pattern: bytes, cut: Callable[[], None]) -> None:
        self.target, self.pattern, self.cut = target, re.compile(pattern), cut
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fired = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        try:
            while data := src.recv(65536):
                if watch and not self.fired.is_set() and self.pattern.search(data):
                    self.fired.set()
                    self.cut()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with running_store(tmp_path) as server:
        yield server


def environment(project: Path, store: S3Server, **extra: str) -> dict[str, str]:
    """hotfolder's environment: the outbox in the store, the standard AWS variables, nothing from ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTFOLDER_", "AWS_"))}
    env.update({"HOTFOLDER_SETTLE_SECONDS": "0.1", "HOTFOLDER_POLL_INTERVAL": "0.5", "HOTFOLDER_LOST_GRACE": "1.5",
                "HOTFOLDER_HTTP_TIMEOUT": "2", "HOTFOLDER_DEFAULT_TEMPLATE": "invert",
                "HOTFOLDER_OUTBOX": f"s3://{BUCKET}/{PREFIX}", "HOTFOLDER_S3_DEADLINE": "1",
                "HOTFOLDER_S3_MAX_ATTEMPTS": "2",
                "AWS_ENDPOINT_URL": store.url, "AWS_ACCESS_KEY_ID": "AKIATESTKEY", "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": str(project / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(project / "aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env


def daemon(project: Path, url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(project / "daemon.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "hotfolder", "--server", url, "run"], cwd=project, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def drop(project: Path, name: str, text: str = MATRIX) -> None:
    tmp = project / "inbox" / f".{name}.tmp"
    tmp.write_text(text)
    tmp.rename(project / "inbox" / name)


def in_sheet(key: str) -> bool:
    """Whether ``key`` is in a batch's contact sheet folder (``<prefix>/<file stem>-sheet[-N]/``), not a job's."""
    return re.fullmatch(r"[^/]+/[^/]+-sheet(-\d+)?/.+", key) is not None


def audit(store: Store, *, since: int = 0, lost: frozenset[str] = frozenset()) -> dict[str, int]:
    """Every job folder in the store complete (each file its sidecar lists, of its size), each job once, each
    sidecar written after every file of its folder (since request ``since``). Returns the counts (contact
    sheet folders apart: ``sheets`` counts their index.html pages)."""
    everything = store.objects()
    objects = {key: body for key, body in everything.items() if not in_sheet(key)}
    puts = [key for key in store.puts(since) if not in_sheet(key)]
    sidecars = {key: json.loads(body) for key, body in objects.items()
                if key.count("/") == 2 and key.endswith(".json") and key.split("/")[1] + ".json" == key.split("/")[2]}
    keys = Counter(sidecar["job_key"] for sidecar in sidecars.values())
    assert all(n == 1 for n in keys.values()), f"a job published twice: {keys}"
    for key, sidecar in sidecars.items():
        folder = key.rsplit("/", 1)[0]
        assert sidecar["published_as"] == folder.split("/")[1]
        for entry in sidecar["outputs"]:
            assert len(objects[f"{folder}/{entry['file']}"]) == entry["size"], (folder, entry)
            assert puts.index(f"{folder}/{entry['file']}") < puts.index(key), f"{key} written before {entry['file']}"
    orphans = {key for key in objects if key.rsplit("/", 1)[0] + ".json" not in {k.rsplit("/", 1)[0] + ".json" for k in sidecars}}
    assert not orphans, f"objects without a sidecar: {orphans}"
    assert len(sidecars) + len(lost) == 6, f"{len(sidecars)} job(s) in the store, {len(lost)} lost with the store"
    twice = {key: n for key, n in Counter(puts).items() if n > 1}
    return {"jobs": len(sidecars), "objects": len(objects), "puts": len(puts), "written_twice": len(twice),
            "lost": len(lost), "sheets": len([key for key in everything if in_sheet(key) and key.endswith("/index.html")])}


def no_secret(project: Path, store: Store) -> None:
    """The secret key is in no file hotfolder wrote (logs, records, error files) and in no object."""
    for path in project.rglob("*"):
        if path.is_file() and not path.name.startswith("aws-"):
            assert SECRET.encode() not in path.read_bytes(), path
    assert not [key for key, body in store.objects().items() if SECRET.encode() in body]


def test_a_batch_lands_in_the_store_complete_once_sidecar_last(project: Path, comfy: ComfyTestServer,
                                                                 store: Store) -> None:
    (project / "sweep.yaml").write_text(MATRIX)
    result = run_cli("--server", comfy.url, "-v", "process", "sweep.yaml", cwd=project, env=environment(project, store))
    assert result.returncode == 0, result.stdout + result.stderr
    (project / "daemon.log").write_text(result.stdout + result.stderr)
    counts = audit(store)
    assert counts["written_twice"] == 0 and counts["objects"] == 12, counts
    staging = project / "inbox" / ".hotfolder" / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), "staged outputs left behind"
    assert not (project / "outbox").exists() or not any((project / "outbox").iterdir()), "something went to outbox/"
    # the batch's contact sheet and gallery, beside the job folders, after every job's sidecar, index.html last
    puts = store.puts()
    sheet = f"{PREFIX}/sweep-sheet"
    assert counts["sheets"] == 1 and puts[-1] == f"{sheet}/index.html", puts[-4:]
    assert max(i for i, key in enumerate(puts) if not in_sheet(key)) < puts.index(f"{sheet}/contact-sheet.png")
    links = set(resolved_links(store.objects()[f"{sheet}/index.html"], sheet))
    assert len(links) == 1 + 2 * 6 and links <= set(store.objects()), links - set(store.objects())
    no_secret(project, store)
    print("\nbatch:", counts)


@pytest.mark.slow
def test_a_store_refusing_the_credentials_fails_the_job_with_how_to_fix_it(
        project: Path, comfy: ComfyTestServer, tmp_path: Path) -> None:
    strict = Store(tmp_path / "strict.jsonl", auth=True)
    strict.start()
    try:
        (project / "one.yaml").write_text("params: {width: 8, height: 8}\n")
        result = run_cli("--server", comfy.url, "process", "one.yaml", cwd=project, env=environment(project, strict))
        (project / "daemon.log").write_text(result.stdout + result.stderr)
        text = result.stdout + result.stderr
        assert result.returncode != 0, text
        assert "does not know the access key" in text and "AWS_ACCESS_KEY_ID" in text, text
        no_secret(project, strict)
    finally:
        strict.kill()


def test_an_s3_outbox_is_checked_when_settings_load(tmp_path: Path) -> None:
    settings = load_settings(None, env={}, overrides={"outbox": "s3://renders/farm/"}, cwd=tmp_path)
    assert settings.outbox_url == "s3://renders/farm"
    assert settings.staging_dir == tmp_path / "inbox" / ".hotfolder" / ".staging"
    for bad, why in (("s3://Renders", "not a valid bucket name"), ("s3://key:pw@renders/x", "holds credentials"),
                     ("s3://renders/a/../b", "'..' part")):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, env={}, overrides={"outbox": bad}, cwd=tmp_path)
        assert why in caught.value.message and "Setting 'outbox'" in caught.value.message and "pw" not in str(caught.value)
    with pytest.raises(ConfigError, match="s3_retry_mode"):
        load_settings(None, env={"HOTFOLDER_S3_RETRY_MODE": "eager"}, overrides={"outbox": "s3://renders"}, cwd=tmp_path)


def test_a_job_waits_while_the_store_is_away_and_stops_with_the_daemon(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish_s3, "RETRY_PAUSE", 0.01)
    stop = threading.Event()
    ctx = JobContext(record=FileRecord(job_id="J1", input_name="fox.yaml", folder=tmp_path),
                     job=JobState(index=1, name="fox"), log=JobLog(logging.getLogger("test"), {"file": "fox.yaml", "job": "fox"}),
                     get_settings=lambda: None, get_hooks=lambda: None, stop=stop,  # type: ignore[arg-type,return-value]
                     emit=lambda event: None, count=lambda name: None, wait_for_server=lambda *a, **k: None, uploads=None)
    calls: list[int] = []

    def away_then(answer: str | None) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ObjectStoreUnavailable("the store did not answer")
        if answer is None:
            stop.set()  # the daemon stops while the store is still away
            if len(calls) < 6:
                raise ObjectStoreUnavailable("the store did not answer")
            return "kept waiting after the stop"
        return answer

    assert publish_s3._waiting(ctx, lambda: away_then("published")) == "published" and len(calls) == 3
    calls.clear()
    with pytest.raises(Cancelled):
        publish_s3._waiting(ctx, lambda: away_then(None))
    assert len(calls) == 3


@pytest.mark.slow
def test_the_daemon_killed_mid_upload_resumes_without_uploading_twice(project: Path, comfy: ComfyTestServer,
                                                                      store: Store) -> None:
    drop(project, "sweep.yaml")
    env = environment(project, store)
    first = daemon(project, comfy.url, dict(env, HOTFOLDER_FAILPOINT="mid_upload:3"))
    first.wait(60)
    assert first.returncode == -signal.SIGKILL, "the failpoint was not reached"
    before = store.puts()
    second = daemon(project, comfy.url, env)
    try:
        wait_until(lambda: archived(project, ["sweep.yaml"]), timeout=60, message="the batch archived after the kill")
    finally:
        kill(second, signal.SIGTERM)
    counts = audit(store)
    assert not (project / "inbox" / "failed").exists() or not any((project / "inbox" / "failed").iterdir())
    assert counts["written_twice"] == 0, f"re-uploaded after the kill: {counts}"
    # the kill came at the third upload; output workers publishing beside it may have put one more each
    assert 3 <= len(before) < 12 and counts["objects"] == 12, before
    assert "already there" in (project / "daemon.log").read_text(), "no publish was resumed"
    no_secret(project, store)
    print("\ndaemon killed:", dict(counts, kills=1, written_before_kill=len(before)))


@pytest.mark.slow
def test_the_store_dying_mid_upload_and_coming_back_empty(project: Path, comfy: ComfyTestServer, store: Store) -> None:
    # The store dies when the first sidecar is on its way: a job's files are in, its commit marker is not.
    cutter = Cutter(store.port, rb"PUT /%s/%s/[^ /]+/[^ /]+\.json " % (BUCKET.encode(), PREFIX.encode()), store.kill)
    drop(project, "sweep.yaml")
    proc = daemon(project, comfy.url, environment(project, store, AWS_ENDPOINT_URL=cutter.url))
    try:
        wait_until(cutter.fired.is_set, timeout=60, message="the first sidecar on its way")
        before = store.puts()
        wait_until(lambda: "waits for the store" in (project / "daemon.log").read_text(), timeout=30,
                   message="a job waiting for the store")
        store.start()  # moto keeps nothing: the bucket is empty again
        wait_until(lambda: archived(project, ["sweep.yaml"]), timeout=60, message="the batch archived")
    finally:
        kill(proc, signal.SIGTERM)
        cutter.close()
    assert before and not [key for key in before if key.endswith(".json")], before
    counts = audit(store, since=store.starts[-1])
    assert counts["written_twice"] == 0 and counts["objects"] == 12, counts
    assert set(before) <= set(store.puts(store.starts[-1])), "a file the store forgot was not uploaded again"
    assert not (project / "inbox" / "failed").exists() or not any((project / "inbox" / "failed").iterdir())
    no_secret(project, store)
    print("\nstore killed:", dict(counts, kills=1, written_before_kill=len(before)))


@pytest.mark.slow
def test_a_daemon_stopped_while_jobs_wait_for_the_store_publishes_them_at_the_next_start(project: Path, comfy: ComfyTestServer,
                                                                           store: Store) -> None:
    cutter = Cutter(store.port, rb"PUT /%s/%s/[^ /]+/[^ /]+\.json " % (BUCKET.encode(), PREFIX.encode()), store.kill)
    drop(project, "sweep.yaml")
    env = environment(project, store, AWS_ENDPOINT_URL=cutter.url, HOTFOLDER_STOP_BUDGET="1")
    first = daemon(project, comfy.url, env)
    try:
        wait_until(lambda: "waits for the store" in (project / "daemon.log").read_text(), timeout=60,
                   message="a job waiting for the store")
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0, "the daemon did not stop (after stop_budget) while jobs waited for the store"
        store.start()
        second = daemon(project, comfy.url, env)
        try:
            wait_until(lambda: archived(project, ["sweep.yaml"]), timeout=60, message="the batch archived")
        finally:
            kill(second, signal.SIGTERM)
    finally:
        kill(first)
        cutter.close()
    counts = audit(store, since=store.starts[-1])
    assert counts["written_twice"] == 0 and counts["objects"] == 12, counts
    assert not (project / "inbox" / "failed").exists() or not any((project / "inbox" / "failed").iterdir())
