"""hotfolder.objectstore against a real S3-compatible server on loopback: moto's server mode in a subprocess
(tests/s3server.py), which a test can kill mid-upload and start again."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")


def skip_without_moto_server() -> None:
    """Skip the module unless tests/s3server.py can run: moto with its server extra, looked up without
    importing it (it runs in a process of its own; importing it costs every test worker ~0.3 CPU-s)."""
    if not all(importlib.util.find_spec(name) for name in ("moto", "flask", "flask_cors")):
        pytest.skip("moto[server] is not installed", allow_module_level=True)


skip_without_moto_server()

from boto3.s3.transfer import TransferConfig  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hotfolder.destination import Destination, is_store_url  # noqa: E402
from hotfolder.errors import ConfigError  # noqa: E402
from hotfolder.objectstore import (  # noqa: E402
    MiB,
    ObjectStore,
    ObjectStoreError,
    ObjectStores,
    ObjectStoreUnavailable,
)
from tests.conftest import wait_until  # noqa: E402

SERVER = Path(__file__).with_name("s3server.py")
BUCKET = "renders"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """tests/s3server.py in a subprocess on 127.0.0.1; ``auth``: moto checks credentials and policies."""

    def __init__(self, *, auth: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = auth
        self.buckets = (BUCKET,)  # made before the port opens; a test may add more before start()
        self.proc: subprocess.Popen[str] | None = None
        self.keys: dict[str, dict[str, str]] = {}
        self.client: object = None

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.proc = subprocess.Popen([sys.executable, str(SERVER), str(self.port), *self.buckets], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        self.keys = json.loads(self.proc.stdout.readline())
        wait_until(self._answers, timeout=30, message=f"the S3 server on port {self.port}")

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    s3 = S3Server()
    s3.start()
    yield s3
    s3.kill()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The standard AWS environment and nothing from this machine's ~/.aws or instance metadata."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return monkeypatch


def use(env: pytest.MonkeyPatch, server: S3Server, key_id: str = "test-key", secret: str = "test-secret") -> None:
    env.setenv("AWS_ENDPOINT_URL", server.url)
    env.setenv("AWS_ACCESS_KEY_ID", key_id)
    env.setenv("AWS_SECRET_ACCESS_KEY", secret)


@pytest.fixture
def s3(server: S3Server, aws_env: pytest.MonkeyPatch) -> S3Server:
    use(aws_env, server)
    return server


def dest() -> str:
    return f"s3://{BUCKET}/jobs/{uuid.uuid4().hex[:8]}"


def inspector(server: S3Server) -> object:
    """A client of the tests' own, to look at what the store holds (one per server: making one takes time)."""
    if server.client is None:
        server.client = boto3.session.Session().client("s3", endpoint_url=server.url, region_name="us-east-1",
                                                       aws_access_key_id="test-key", aws_secret_access_key="test-secret")
    return server.client


def listing(server: S3Server, prefix: str) -> dict[str, bytes]:
    client = inspector(server)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents") or ():
            out[item["Key"][len(prefix):]] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    return out


def stage(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def sidecar(job_key: str = "abc123/0") -> dict[str, object]:
    return {"job_key": job_key, "params": {"seed": 1}, "outputs": []}


class Recorder:
    """on_put: the keys written, in order; ``fail_after``: raise Crash after that many (a crash mid-publish)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.keys: list[str] = []
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def __call__(self, key: str) -> None:
        with self.lock:
            self.keys.append(key)
            if self.fail_after is not None and len(self.keys) >= self.fail_after:
                raise Crash(key)


class Crash(Exception):
    pass


FILES = {"red-fox_00001_.png": b"png" * 1000, "red-fox_00002_.png": b"PNG" * 999, "sub/clip.mp4": os.urandom(5000)}


def test_a_job_lands_complete_with_its_sidecar_written_last(s3: S3Server, tmp_path: Path) -> None:
    url = dest()
    puts = Recorder()
    store = ObjectStore(url, on_put=puts)
    result = store.publish(stage(tmp_path, FILES), "red-fox", sidecar(), sorted(FILES))
    prefix = url[len(f"s3://{BUCKET}/"):] + "/red-fox/"
    assert result.name == "red-fox" and result.url == f"{url}/red-fox/" and not result.already
    assert sorted(result.uploaded) == sorted(FILES) and result.kept == ()
    assert puts.keys[-1] == prefix + "red-fox.json" and len(puts.keys) == len(FILES) + 1
    objects = listing(s3, prefix)
    assert {name: objects[name] for name in FILES} == FILES
    assert json.loads(objects["red-fox.json"]) == dict(sidecar(), published_as="red-fox")
    assert set(objects) == {*FILES, "red-fox.json"}
    head = inspector(s3).head_object(Bucket=BUCKET, Key=prefix + "sub/clip.mp4")
    assert head["Metadata"]["sha256"] == hashlib.sha256(FILES["sub/clip.mp4"]).hexdigest()
    assert head["ContentType"] == "video/mp4"
    assert store.find("red-fox", "abc123/0") == type(result)(result.url, "red-fox", already=True)
    assert store.find("red-fox", "other/0") is None


def test_publishing_a_published_job_again_writes_nothing(s3: S3Server, tmp_path: Path) -> None:
    url = dest()
    staging = stage(tmp_path, FILES)
    ObjectStore(url).publish(staging, "red-fox", sidecar())  # files=None: everything in the staging folder
    before = listing(s3, url[len(f"s3://{BUCKET}/"):] + "/")
    puts = Recorder()
    again = ObjectStore(url, on_put=puts).publish(staging, "red-fox", sidecar(), sorted(FILES))
    assert again.already and again.name == "red-fox" and again.uploaded == ()
    assert puts.keys == []
    assert listing(s3, url[len(f"s3://{BUCKET}/"):] + "/") == before


def test_a_publish_cut_off_resumes_uploading_only_what_is_missing_or_differs(s3: S3Server, tmp_path: Path) -> None:
    url = dest()
    files = {f"f{i}.png": bytes([i]) * (100 + i) for i in range(5)}
    staging = stage(tmp_path, files)
    with pytest.raises(Crash):
        ObjectStore(url, on_put=Recorder(fail_after=3)).publish(staging, "job", sidecar(), sorted(files))
    prefix = url[len(f"s3://{BUCKET}/"):] + "/job/"
    assert set(listing(s3, prefix)) == {"f0.png", "f1.png", "f2.png"}  # no sidecar: not published
    client = inspector(s3)
    meta = client.head_object(Bucket=BUCKET, Key=prefix + "f1.png")["Metadata"]
    client.put_object(Bucket=BUCKET, Key=prefix + "f1.png", Body=b"short", Metadata=meta)  # same sha claimed, size differs
    (staging / "f2.png").write_bytes(b"\xff" * 102)  # same size, other bytes
    client.put_object(Bucket=BUCKET, Key=prefix + "old.png", Body=b"x", Metadata=meta)  # ours, not in this publish
    puts = Recorder()
    result = ObjectStore(url, on_put=puts).publish(staging, "job", sidecar(), sorted(files))
    assert result.name == "job"
    assert sorted(result.uploaded) == ["f1.png", "f2.png", "f3.png", "f4.png"] and result.kept == ("f0.png",)
    assert [k[len(prefix):] for k in puts.keys] == ["f1.png", "f2.png", "f3.png", "f4.png", "job.json"]
    objects = listing(s3, prefix)
    assert objects == {**files, "f2.png": b"\xff" * 102, "job.json": objects["job.json"]}


PUBLISHER = """
import sys, threading
from pathlib import Path
from boto3.s3.transfer import TransferConfig
from hotfolder.objectstore import MiB, ObjectStore

def on_bytes(key, n):
    if key.endswith("b-big.bin"):
        print("mid-upload", flush=True)
        threading.Event().wait()  # hold here until SIGKILLed

config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=1)
store = ObjectStore(sys.argv[1], transfer=config, on_bytes=on_bytes)
store.publish(Path(sys.argv[2]), "job", {"job_key": "abc123/0"}, ["a-small.png", "b-big.bin", "c-small.png"])
"""


def test_a_publisher_sigkilled_mid_upload_is_resumed_without_sending_again_what_landed(s3: S3Server,
                                                                                       tmp_path: Path) -> None:
    files = {"a-small.png": b"a" * 100, "b-big.bin": os.urandom(12 * MiB), "c-small.png": b"c" * 100}
    staging = stage(tmp_path, files)
    url = dest()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, url, str(staging)], env=env, text=True,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "mid-upload\n"
    finally:
        proc.kill()
        proc.wait()
    prefix = url[len(f"s3://{BUCKET}/"):] + "/job/"
    assert set(listing(s3, prefix)) == {"a-small.png"}  # the big file's parts are no object; no sidecar
    puts = Recorder()
    result = ObjectStore(url, on_put=puts).publish(staging, "job", sidecar(), sorted(files))
    assert result.kept == ("a-small.png",) and result.uploaded == ("b-big.bin", "c-small.png")
    assert [k[len(prefix):] for k in puts.keys] == ["b-big.bin", "c-small.png", "job.json"]
    objects = listing(s3, prefix)
    assert {k: v for k, v in objects.items() if k != "job.json"} == files


def test_a_folder_held_by_another_job_or_a_foreign_object_gets_a_suffix(s3: S3Server, tmp_path: Path) -> None:
    url = dest()
    staging = stage(tmp_path, {"a.png": b"a"})
    assert ObjectStore(url).publish(staging, "job", sidecar("one/0")).name == "job"
    assert ObjectStore(url).publish(staging, "job", sidecar("two/0")).name == "job-2"
    assert ObjectStore(url).publish(staging, "job", sidecar("one/0")).already
    prefix = url[len(f"s3://{BUCKET}/"):]
    inspector(s3).put_object(Bucket=BUCKET, Key=f"{prefix}/other/x.png", Body=b"not hotfolder's")
    assert ObjectStore(url).publish(staging, "other", sidecar("three/0")).name == "other-2"
    clash = stage(tmp_path / "clash", {"clash.json": b"{}"})  # an output with the sidecar's name
    assert ObjectStore(url).publish(clash, "clash", sidecar("four/0")).name == "clash-2"


def test_the_store_killed_mid_upload_and_restarted_gets_the_job_complete_once(aws_env: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    server = S3Server()
    server.start()
    try:
        use(aws_env, server)
        files = {"a-small.png": b"a" * 100, "b-big.bin": os.urandom(12 * MiB), "c-small.png": b"c" * 100}
        staging = stage(tmp_path, files)
        killed = threading.Event()
        restarted = threading.Event()

        def restart() -> None:
            server.start()  # moto keeps objects in memory: the restarted store is empty (its bucket is made first)
            restarted.set()

        def on_bytes(key: str, n: int) -> None:
            if key.endswith("b-big.bin") and not killed.is_set():
                killed.set()
                server.kill()
                threading.Thread(target=restart, daemon=True).start()

        puts = Recorder()
        config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
        store = ObjectStore(dest(), max_attempts=2, deadline=60, transfer=config, on_put=puts, on_bytes=on_bytes)
        result = store.publish(staging, "job", sidecar(), sorted(files))
        assert killed.is_set() and restarted.is_set()
        prefix = store.destination.key("job") + "/"
        assert puts.keys[-1] == prefix + "job.json" and puts.keys.count(prefix + "job.json") == 1
        assert puts.keys.count(prefix + "a-small.png") == 2  # written before the kill, lost with the server's memory
        assert sorted(result.uploaded) == sorted(files)
        objects = listing(server, prefix)
        assert {k: v for k, v in objects.items() if k != "job.json"} == files
    finally:
        server.kill()


def test_a_store_that_stays_away_ends_in_a_clear_error_at_the_deadline(aws_env: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    server = S3Server()  # never started: connection refused
    use(aws_env, server)
    store = ObjectStore(dest(), max_attempts=1, deadline=1.5)
    began = time.monotonic()
    with pytest.raises(ObjectStoreUnavailable) as caught:
        store.publish(stage(tmp_path, {"a.png": b"a"}), "job", sidecar())
    assert 1.5 <= time.monotonic() - began < 10
    err = caught.value
    assert server.url in err.message and "within 1.5 s" in err.message and "AWS_ENDPOINT_URL" in (err.hint or "")
    assert err.where["bucket"] == BUCKET and err.where["job"] == "job"
    stop = threading.Event()
    stop.set()  # hotfolder shutting down: no waiting out the deadline
    began = time.monotonic()
    with pytest.raises(ObjectStoreUnavailable, match="stopping"):
        ObjectStore(dest(), max_attempts=1, deadline=600).publish(tmp_path, "job", sidecar(), ["a.png"], stop=stop)
    assert time.monotonic() - began < 10


@pytest.fixture(scope="module")
def auth_server() -> Iterator[S3Server]:
    s3 = S3Server(auth=True)
    s3.start()
    yield s3
    s3.kill()


SECRET = "wR0ng/Secret+Value+0123456789abcdefghijklm"


def refused(store: ObjectStore, tmp_path: Path) -> ObjectStoreError:
    with pytest.raises(ObjectStoreError) as caught:
        store.publish(stage(tmp_path, {"a.png": b"a"}), "job", sidecar())
    err = caught.value
    shown = str(err) + json.dumps(err.to_dict()) + repr(err.where)
    assert SECRET not in shown and err.where["bucket"] == BUCKET and err.where["job"] == "job"
    assert not isinstance(err, ObjectStoreUnavailable)
    return err


def test_a_wrong_secret_is_explained_without_showing_it(auth_server: S3Server, aws_env: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    use(aws_env, auth_server, auth_server.keys["writer"]["id"], SECRET)
    err = refused(ObjectStore(dest()), tmp_path)
    assert "secret key does not match" in err.message and "AWS_SECRET_ACCESS_KEY" in (err.hint or "")


def test_an_unknown_access_key_or_none_at_all_names_the_variables_to_set(auth_server: S3Server,
                                                                        aws_env: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    use(aws_env, auth_server, "AKIAUNKNOWNKEY000000", SECRET)
    err = refused(ObjectStore(dest()), tmp_path)
    assert "does not know the access key" in err.message and "AWS_PROFILE" in (err.hint or "")
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    err = refused(ObjectStore(dest()), tmp_path)
    assert "no usable credentials" in err.message and "AWS_ACCESS_KEY_ID" in (err.hint or "")


def test_access_denied_names_the_permissions_the_policy_must_grant(auth_server: S3Server,
                                                                   aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use(aws_env, auth_server, auth_server.keys["nobody"]["id"], auth_server.keys["nobody"]["secret"])
    err = refused(ObjectStore(dest()), tmp_path)
    assert "access denied" in err.message and "s3:PutObject" in (err.hint or "")
    assert auth_server.keys["nobody"]["secret"] not in str(err) + json.dumps(err.to_dict())


def test_a_missing_bucket_says_to_create_it(auth_server: S3Server, aws_env: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    use(aws_env, auth_server, auth_server.keys["writer"]["id"], auth_server.keys["writer"]["secret"])
    with pytest.raises(ObjectStoreError) as caught:
        ObjectStore("s3://no-such-bucket/x").publish(stage(tmp_path, {"a.png": b"a"}), "job", sidecar())
    err = caught.value
    assert "does not exist" in err.message and "mb s3://no-such-bucket" in (err.hint or "")
    assert err.where["bucket"] == "no-such-bucket" and err.where["key"].startswith("x/job")


def test_a_profile_that_does_not_exist_is_named(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_PROFILE", "render-farm")
    with pytest.raises(ObjectStoreError) as caught:
        ObjectStore(f"s3://{BUCKET}/x")
    assert "render-farm" in caught.value.message and "AWS_PROFILE" in (caught.value.hint or "")


def test_a_large_file_goes_up_in_parts_with_bounded_memory(s3: S3Server, tmp_path: Path) -> None:
    size = 24 * MiB
    with open(tmp_path / "big.bin", "wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    store = ObjectStore(dest(), transfer=config)
    tracemalloc.start()
    try:
        store.publish(tmp_path, "big", sidecar(), ["big.bin"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 2, f"peak {peak / MiB:.1f} MiB while uploading {size / MiB:.0f} MiB"
    head = inspector(s3).head_object(Bucket=BUCKET, Key=store.destination.key("big", "big.bin"))
    assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-5")  # 5 parts: multipart


def test_destinations_parse_and_explain_what_is_wrong() -> None:
    assert Destination.parse("s3://renders") == Destination("renders", "")
    assert Destination.parse("s3://renders/a/b/") == Destination("renders", "a/b")
    assert str(Destination("renders", "a/b")) == "s3://renders/a/b" and Destination("r0s", "").key("j", "x") == "j/x"
    assert is_store_url("s3://x") and not is_store_url("outbox") and not is_store_url(Path("s3:/x"))
    for bad in ("s3://", "s3://UPPER/x", "s3://ab", "s3://user:pw@bucket/x", "s3://b-1/a//b", "s3://b-1/../x", "/tmp"):
        with pytest.raises(ConfigError) as caught:
            Destination.parse(bad)
        assert "pw" not in str(caught.value) + json.dumps(caught.value.to_dict())
    stores = ObjectStores()
    assert stores.get("s3://renders/a") is stores.get("s3://renders/a/") is not stores.get("s3://renders/b")


NAME = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zl", "Zp"], exclude_characters="/\\"),
               min_size=1, max_size=20).filter(lambda s: s not in (".", "..") and not s.endswith(".json"))


@pytest.fixture(scope="module")
def generated_store(server: S3Server) -> Iterator[ObjectStore]:
    """One store for every generated case (each in a folder of its own): making a client takes ~0.2 s."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
            env.setenv(key, value)
        yield ObjectStore(dest())


@settings(max_examples=15)
@given(files=st.dictionaries(st.lists(NAME, min_size=1, max_size=2).map("/".join), st.integers(0, 70_000),
                             min_size=1, max_size=6),
       job=st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True))
def test_generated_jobs_publish_completely_and_once(server: S3Server, generated_store: ObjectStore,
                                                    tmp_path_factory: pytest.TempPathFactory,
                                                    files: dict[str, int], job: str) -> None:
    # a name that is also a folder of another name ("a" and "a/b") cannot exist on disk either
    names = sorted(files)
    if any(b.startswith(a + "/") for a in names for b in names):
        return
    staging = tmp_path_factory.mktemp("job")
    data = {name: os.urandom(size) for name, size in files.items()}
    stage(staging, data)
    store = generated_store
    job = f"{job}-{uuid.uuid4().hex[:6]}"
    puts = Recorder()
    store.on_put = puts
    result = store.publish(staging, job, sidecar(), names)
    prefix = store.destination.key(job) + "/"
    objects = listing(server, prefix)
    assert objects.pop(f"{job}.json") and puts.keys[-1] == f"{prefix}{job}.json"
    assert objects == data and sorted(result.uploaded) == names
    puts.keys.clear()
    assert store.publish(staging, job, sidecar(), names).already and puts.keys == []
