"""Object storage as an outbox: one job's published outputs in an S3-compatible bucket (AWS, MinIO, R2, GCS).

The only module that imports boto3. A destination is ``s3://bucket/prefix``; the endpoint, region and
credentials come from boto3's standard chain (``AWS_ENDPOINT_URL[_S3]``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_PROFILE``, ``~/.aws/config`` and ``credentials``, instance roles), never from hotfolder's config.

A job lands as ``<prefix>/<name>/<file>...`` and its sidecar ``<prefix>/<name>/<name>.json``, written last:
the sidecar is the commit marker, so a consumer that waits for it never reads half a job. Publishing is
idempotent and resumable: every object carries the job's key and its sha256 in its metadata, a job whose
sidecar is there is not published again, and a publish cut off (a crash, the store restarting) uploads only
what is missing or differs on the next try. A folder name that another job holds gets a suffix (``name-2``),
as in the local outbox. docs/s3.md says more and shows a MinIO setup.
"""

from __future__ import annotations

import functools
import hashlib
import json
import mimetypes
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import boto3.session
import botocore.session
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from hotfolder import failpoints
from hotfolder.destination import SCHEME, Destination
from hotfolder.errors import OutputError, filesystem_error
from hotfolder.record import json_bytes
from hotfolder.redact import redact_text, redact_url

if TYPE_CHECKING:
    from hotfolder.config import Settings

MiB = 1024 * 1024
META_JOB = "hotfolder-job"  # x-amz-meta-hotfolder-job: the job key (URL-quoted), who wrote the object
META_SHA = "sha256"  # x-amz-meta-sha256: hex sha256 of the body (multipart ETags are not MD5s)
# Worth a new try from the top: the store is busy or away, or changed under us (a restart lost a multipart
# upload, an object listed a moment ago is gone): the next try lists the folder again.
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "NoSuchUpload",
                    "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "NoSuchKey", "404"}
_CREDENTIAL_HINT = ("Give hotfolder's environment AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN "
                    "for temporary credentials), or AWS_PROFILE naming a profile in ~/.aws/credentials, or run it "
                    "where an instance or task role applies.")


class ObjectStoreError(OutputError):
    """Publishing into object storage failed: credentials, the bucket, its policy, a key the store refuses.
    ``where`` holds the bucket, the key and the job; the hint says how to fix it."""

    stage = "publish"


class ObjectStoreUnavailable(ObjectStoreError):
    """The store did not answer (connection refused, timeouts, 5xx) until the publish deadline passed.
    Nothing is lost: the staged files are still there and the next publish resumes."""


@dataclass(frozen=True)
class Published:
    """What a publish did. ``name`` is the folder the job holds (``name`` or ``name-N``), ``url`` its location;
    ``uploaded`` and ``kept`` list the files sent now and those found already there intact; ``already``: the
    sidecar was there, nothing was done."""

    url: str
    name: str
    uploaded: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    already: bool = False


@dataclass
class _Remote:
    """One object already in the folder: its size and, once asked for (HEAD), its metadata."""

    size: int
    meta: dict[str, str] | None = None


@dataclass
class _Attempt:
    """State that outlives one try of a publish: the hashes of local files (read once)."""

    hashes: dict[tuple[str, int, int], str] = field(default_factory=dict)


_LOADER: list[Any] = []  # botocore's data loader, shared by the sessions of every store (see _new_session)
_LOADER_LOCK = threading.Lock()


def _new_session() -> boto3.session.Session:
    """A boto3 session of its own (sessions are not thread-safe) that shares the process's botocore data loader:
    S3's service model and endpoint rules are read and parsed once, not for every store (~0.1 CPU-s each)."""
    core = botocore.session.get_session()
    with _LOADER_LOCK:
        if _LOADER:
            core.register_component("data_loader", _LOADER[0])
        session = boto3.session.Session(botocore_session=core)
        loader = core.get_component("data_loader")
        loader.search_paths[:] = dict.fromkeys(loader.search_paths)  # each boto3 session appends its data folder
        _LOADER[:] = [loader]
    return session


def _client_config(retry_mode: str, max_attempts: int) -> Config:
    return Config(retries={"mode": retry_mode, "max_attempts": max_attempts}, connect_timeout=10, read_timeout=60,
                  user_agent_extra="hotfolder")


class ObjectStore:
    """One destination with its boto3 client. Thread-safe: the client is created once, here, from a session of
    its own (boto3 sessions are not thread-safe, clients are), and every job thread may call :meth:`publish`.

    ``retry_mode``/``max_attempts`` go to botocore's retry config (it retries throttling, 5xx and dropped
    connections with backoff); what it gives up on while the store is away is retried here, with backoff,
    until ``deadline`` seconds have passed since the publish began. ``transfer`` sets boto3's managed
    transfer, the one way a file goes up or comes down (multipart above 8 MiB, files streamed from disk). ``on_put(key)`` is called after each object
    is written, ``on_bytes(key, n)`` as a file's bytes go out (logging, progress, tests).
    """

    def __init__(self, destination: Destination | str, *, retry_mode: str = "standard", max_attempts: int = 5,
                 deadline: float = 300.0, transfer: TransferConfig | None = None,
                 on_put: Callable[[str], None] | None = None,
                 on_bytes: Callable[[str, int], None] | None = None) -> None:
        self.destination = destination if isinstance(destination, Destination) else Destination.parse(destination)
        self.deadline = deadline
        # use_threads=False: parts go up one after another in the output worker's own thread. s3transfer's
        # pool threads are joined at interpreter exit, so a store that hangs held the daemon's stop past
        # stop_budget; and a pool refuses work once the interpreter shuts down, when a contact sheet may still be
        # going up after `hotfolder process`. The output workers already publish several jobs side by side.
        self.transfer = transfer or TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                                                   use_threads=False)
        self.on_put = on_put
        self.on_bytes = on_bytes
        try:
            self.client = _new_session().client("s3", config=_client_config(retry_mode, max_attempts))
        except ProfileNotFound as err:
            raise ObjectStoreError(f"Cannot publish to {self.destination}: {redact_text(err)}.",
                                   hint="Set AWS_PROFILE to a profile in ~/.aws/config or ~/.aws/credentials, or unset it.",
                                   where={"bucket": self.destination.bucket}) from None
        except BotoCoreError as err:
            raise ObjectStoreError(f"Cannot set up the S3 client for {self.destination}: {redact_text(err)}.",
                                   hint="Check AWS_REGION, AWS_ENDPOINT_URL and ~/.aws/config.",
                                   where={"bucket": self.destination.bucket}) from None

    @property
    def endpoint(self) -> str:
        """The store's URL as the client resolved it (credentials redacted)."""
        return redact_url(self.client.meta.endpoint_url)

    # -- publishing ---------------------------------------------------------------------------------------------

    def publish(self, staging: Path, name: str, sidecar: Mapping[str, Any], files: Iterable[str] | None = None,
                *, stop: threading.Event | None = None) -> Published:
        """Upload ``files`` (paths relative to ``staging``, ``/``-separated; all regular files in it when None)
        as ``<prefix>/<folder>/...``, then the sidecar (with ``published_as``) as ``<folder>/<folder>.json``.

        ``sidecar["job_key"]`` identifies the job: a folder whose sidecar holds it is this job's, already
        published (nothing is done); one whose objects were all written for it is resumed. Raises
        :class:`ObjectStoreError` for what the user must fix, :class:`ObjectStoreUnavailable` when the store
        stayed away past the deadline (or ``stop`` was set while waiting for it)."""
        job_key = str(sidecar.get("job_key") or "")
        if not job_key:
            raise ValueError("the sidecar has no job_key")
        names = sorted(_walk(staging)) if files is None else [_relative(f) for f in files]
        attempt = _Attempt()
        return self._retrying(lambda: self._publish_once(staging, name, sidecar, names, job_key, attempt),
                              job=name, stop=stop)

    def find(self, name: str, job_key: str, *, stop: threading.Event | None = None) -> Published | None:
        """The folder already published for ``job_key`` (``name`` or ``name-N``), if any: after a crash between
        the publish and saving that it happened."""
        def probe() -> Published | None:
            for folder in _folders(name):
                listing = self._list(folder)
                if not listing:
                    return None
                if self.destination.key(folder, f"{folder}.json") in listing and self._sidecar_job(folder) == job_key:
                    return Published(self._url(folder), folder, already=True)
            return None  # pragma: no cover - _folders never ends
        return self._retrying(probe, job=name, stop=stop)

    def _publish_once(self, staging: Path, name: str, sidecar: Mapping[str, Any], files: list[str], job_key: str,
                      attempt: _Attempt) -> Published:
        folder, listing, done = self._claim(name, files, job_key)
        if done:
            return Published(self._url(folder), folder, already=True)
        uploaded, kept = self._send(staging, folder, listing, files, job_key, attempt, name)
        body = json_bytes(dict(sidecar, published_as=folder))  # the bytes a local outbox's sidecar has
        sidecar_key = self.destination.key(folder, f"{folder}.json")
        meta = {META_JOB: quote(job_key, safe=""), META_SHA: hashlib.sha256(body).hexdigest()}
        self._call("write", sidecar_key, name, lambda: self.client.put_object(
            Bucket=self.destination.bucket, Key=sidecar_key, Body=body, ContentType="application/json", Metadata=meta))
        self._put_done(sidecar_key)
        return Published(self._url(folder), folder, tuple(uploaded), tuple(kept))

    def _send(self, staging: Path, folder: str, listing: dict[str, _Remote], files: list[str], job_key: str,
              attempt: _Attempt, name: str, *, keep: bool = True) -> tuple[list[str], list[str]]:
        """Upload ``files`` into ``folder`` in order, keeping (with ``keep``) those already there intact,
        and delete what an earlier try left there that is no longer among them; return (uploaded, kept)."""
        uploaded, kept = [], []
        for rel in files:
            key = self.destination.key(folder, rel)
            path = staging / rel
            size, digest = self._hash(path, attempt, key, job=name)
            remote = listing.get(key)
            if (keep and remote is not None and remote.size == size
                    and self._meta(key, remote, name).get(META_SHA) == digest):
                kept.append(rel)
                continue
            self._upload(path, key, digest, job_key, job=name)
            uploaded.append(rel)
        wanted = {self.destination.key(folder, rel) for rel in files}
        for key in sorted(set(listing) - wanted):  # left by an earlier try with other files: ours (see _claim)
            self._call("delete", key, name, functools.partial(self.client.delete_object, Bucket=self.destination.bucket, Key=key))
        return uploaded, kept

    # -- folders that are not jobs (a batch's contact sheet) and reading back -----------------------------------

    def upload_folder(self, staging: Path, name: str, owner: str, *, last: str,
                      stop: threading.Event | None = None) -> Published:
        """Upload every file of ``staging`` as ``<prefix>/<name>/...`` (``name-N`` when ``name`` holds another's
        objects), ``last`` (a file in it, such as ``index.html``) after all the others. ``owner`` marks the
        objects as a job's key does, so a try cut off is resumed in the same folder; errors as :meth:`publish`."""
        files = [rel for rel in sorted(_walk(staging)) if rel != last] + [_relative(last)]
        attempt = _Attempt()

        def once() -> Published:
            folder, listing, _ = self._claim(name, files, owner)
            uploaded, kept = self._send(staging, folder, listing, files[:-1], owner, attempt, name)
            # ``last`` is never kept: the first _send removed an earlier try's copy, it is written last, again
            self._send(staging, folder, {}, files[-1:], owner, attempt, name, keep=False)
            return Published(self._url(folder), folder, (*uploaded, last), tuple(kept))
        return self._retrying(once, job=name, stop=stop)

    def files(self, folder: str, *, stop: threading.Event | None = None) -> dict[str, int]:
        """The objects under ``<prefix>/<folder>/``: name (relative to it) -> size."""
        base = self.destination.key(folder) + "/"
        return self._retrying(lambda: {key[len(base):]: remote.size for key, remote in self._list(folder).items()},
                              job=folder, stop=stop)

    def read(self, folder: str, name: str, *, limit: int, stop: threading.Event | None = None) -> bytes:
        """The first ``limit`` bytes of ``<prefix>/<folder>/<name>``."""
        key = self.destination.key(folder, _relative(name))
        return self._retrying(lambda: self._call("read", key, folder, lambda: self.client.get_object(
            Bucket=self.destination.bucket, Key=key)["Body"].read(limit)), job=folder, stop=stop)

    def download(self, folder: str, name: str, path: Path, *, stop: threading.Event | None = None) -> None:
        """``<prefix>/<folder>/<name>`` into the file ``path``: boto3's managed download (on the calling thread,
        written beside ``path`` and renamed, a body cut off read again)."""
        key = self.destination.key(folder, _relative(name))
        try:
            self._retrying(lambda: self._call("read", key, folder, lambda: self.client.download_file(
                self.destination.bucket, key, str(path), Config=self.transfer)), job=folder, stop=stop)
        except OSError as err:
            raise filesystem_error(err, path=path, doing="write", where={"key": key}) from None

    def _claim(self, name: str, files: list[str], job_key: str) -> tuple[str, dict[str, _Remote], bool]:
        """The folder this job publishes into, what is in it, and whether its sidecar is there (published).
        A folder is this job's when its sidecar names the job, or when it has no sidecar and every object in
        it was written for the job (a publish cut off); another job's folder, or one holding objects hotfolder
        did not write, is skipped for the next suffix, as is a name that one of the files would collide with."""
        quoted = quote(job_key, safe="")
        for folder in _folders(name):
            if f"{folder}.json" in files:
                continue
            listing = self._list(folder)
            sidecar_key = self.destination.key(folder, f"{folder}.json")
            if sidecar_key in listing:
                if self._sidecar_job(folder) == job_key:
                    return folder, listing, True
                continue
            if all(self._meta(key, remote, name).get(META_JOB) == quoted for key, remote in listing.items()):
                return folder, listing, False
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one request each ---------------------------------------------------------------------------------------

    def _list(self, folder: str) -> dict[str, _Remote]:
        prefix = self.destination.key(folder) + "/"
        out: dict[str, _Remote] = {}

        def run() -> None:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.destination.bucket,
                                                                                Prefix=prefix):
                for item in page.get("Contents") or ():
                    out[item["Key"]] = _Remote(int(item["Size"]))
        self._call("list", prefix, folder, run)
        return out

    def _meta(self, key: str, remote: _Remote, job: str) -> dict[str, str]:
        if remote.meta is None:
            head = self._call("read", key, job, lambda: self.client.head_object(Bucket=self.destination.bucket, Key=key))
            remote.meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return remote.meta

    def _sidecar_job(self, folder: str) -> str | None:
        key = self.destination.key(folder, f"{folder}.json")
        answer = self._call("read", key, folder, lambda: self.client.get_object(Bucket=self.destination.bucket, Key=key))
        try:
            data = json.loads(answer["Body"].read(16 * MiB))
        except ValueError:
            return None
        return data.get("job_key") if isinstance(data, dict) else None

    def _upload(self, path: Path, key: str, digest: str, job_key: str, *, job: str) -> None:
        extra = {"Metadata": {META_JOB: quote(job_key, safe=""), META_SHA: digest},
                 "ContentType": mimetypes.guess_type(path.name)[0] or "application/octet-stream"}
        callback = (lambda n: self.on_bytes(key, n)) if self.on_bytes else None  # type: ignore[misc]
        try:
            self._call("write", key, job, lambda: self.client.upload_file(
                str(path), self.destination.bucket, key, ExtraArgs=extra, Config=self.transfer, Callback=callback))
        except OSError as err:
            raise filesystem_error(err, path=path, doing="read", where={"job": job}) from None
        self._put_done(key)

    def _put_done(self, key: str) -> None:
        failpoints.hit("mid_upload")  # an object is in the store, the job's sidecar maybe not yet
        if self.on_put is not None:
            self.on_put(key)

    def _hash(self, path: Path, attempt: _Attempt, key: str, *, job: str) -> tuple[int, str]:
        """Size and sha256 of a staged file, read once per publish (in 1 MiB pieces)."""
        try:
            stat = path.stat()
            ident = (str(path), stat.st_size, stat.st_mtime_ns)
            if ident not in attempt.hashes:
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    while chunk := fh.read(MiB):
                        digest.update(chunk)
                attempt.hashes[ident] = digest.hexdigest()
        except OSError as err:
            raise filesystem_error(err, path=path, doing="read", where={"job": job, "key": key}) from None
        return stat.st_size, attempt.hashes[ident]

    def _call(self, doing: str, key: str, job: str, run: Callable[[], Any]) -> Any:
        """``run()``, its failures explained: a transient one re-raised for :meth:`_retrying`, the others as
        :class:`ObjectStoreError`."""
        try:
            return run()
        except S3UploadFailedError as err:  # boto3's wrapper around the ClientError of a managed upload
            cause = err.__context__ if isinstance(err.__context__, ClientError) else None
            if cause is None:
                raise self._error(doing, key, job, str(err), "Check the store's log.") from None
            return self._client_error(cause, doing, key, job)
        except ClientError as err:
            return self._client_error(err, doing, key, job)
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as err:
            raise self._error(doing, key, job, f"no usable credentials ({err})", _CREDENTIAL_HINT) from None
        except SSLError as err:
            raise self._error(doing, key, job, f"TLS failed ({err})",
                              "Check the endpoint's certificate, or point AWS_CA_BUNDLE at the CA that signed it.") from None
        except (BotoConnectionError, HTTPClientError):
            raise  # the store is away: _retrying waits for it

    def _client_error(self, err: ClientError, doing: str, key: str, job: str) -> Any:
        code = str(err.response.get("Error", {}).get("Code") or "")
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _TRANSIENT_CODES or status >= 500:
            raise err
        bucket = self.destination.bucket
        if code == "NoSuchBucket":
            why, hint = "the bucket does not exist", f"Create it (aws s3 mb s3://{bucket}, or mc mb ALIAS/{bucket} for MinIO)."
        elif code in ("InvalidAccessKeyId", "InvalidToken", "AuthorizationHeaderMalformed"):
            why, hint = "the store does not know the access key", _CREDENTIAL_HINT
        elif code == "SignatureDoesNotMatch":
            why, hint = "the secret key does not match the access key", "Check AWS_SECRET_ACCESS_KEY or the profile's aws_secret_access_key."
        elif code in ("ExpiredToken", "TokenRefreshRequired", "RequestExpired"):
            why, hint = "the credentials expired", "Renew them (aws sso login, or new temporary credentials) and restart hotfolder."
        elif code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            why = "access denied"
            hint = (f"Allow these credentials s3:ListBucket on arn:aws:s3:::{bucket} and s3:GetObject, s3:PutObject, "
                    f"s3:DeleteObject on arn:aws:s3:::{bucket}/{self.destination.key('*')} in the bucket or user policy.")
        else:
            why, hint = f"{code or status}: {err.response.get('Error', {}).get('Message') or err}", "Check the store's log."
        raise self._error(doing, key, job, why, hint) from None

    def _error(self, doing: str, key: str, job: str, why: str, hint: str,
               cls: type[ObjectStoreError] = ObjectStoreError) -> ObjectStoreError:
        where = {"bucket": self.destination.bucket, "key": key, "job": job, "endpoint": self.endpoint}
        text = f"Cannot {doing} s3://{self.destination.bucket}/{key} (job {job!r}, store {self.endpoint}): {why}."
        return cls(redact_text(text), hint=redact_text(hint), where=where)

    def _retrying(self, run: Callable[[], Any], *, job: str, stop: threading.Event | None) -> Any:
        """``run()`` again, from the top, while the store is away (what botocore's own retries gave up on),
        with backoff, until the deadline; then :class:`ObjectStoreUnavailable`."""
        waiter = stop or threading.Event()
        until = time.monotonic() + self.deadline
        for n in count():
            try:
                return run()
            except (BotoConnectionError, HTTPClientError, ClientError, RetriesExceededError) as err:
                left = until - time.monotonic()
                if left > 0 and waiter.wait(min(0.25 * 2 ** n, 5.0, left)):
                    raise self._error("publish to", self.destination.key(job), job,
                                      f"hotfolder is stopping; the store had not answered ({_brief(err)})",
                                      "The job resumes where it stopped when hotfolder starts again.",
                                      cls=ObjectStoreUnavailable) from None
                if time.monotonic() >= until:
                    raise self._error("publish to", self.destination.key(job), job,
                                      f"the store did not answer within {self.deadline:g} s ({_brief(err)})",
                                      "Check that the store runs and that AWS_ENDPOINT_URL points at it; the job "
                                      "resumes where it stopped.", cls=ObjectStoreUnavailable) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _url(self, folder: str) -> str:
        return f"{SCHEME}{self.destination.bucket}/{self.destination.key(folder)}/"


class ObjectStores:
    """One :class:`ObjectStore` (one client) per destination URL and options, made on first use; thread-safe."""

    def __init__(self) -> None:
        self._stores: dict[tuple[Any, ...], ObjectStore] = {}
        self._lock = threading.Lock()

    def get(self, url: str, **options: Any) -> ObjectStore:
        """The store for ``url`` (``s3://bucket/prefix``) made with ``options`` (those of :class:`ObjectStore`)."""
        destination = Destination.parse(url)
        key = (str(destination), *sorted(options.items()))
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                store = self._stores[key] = ObjectStore(destination, **options)
            return store


_STORES = ObjectStores()


def store_for(settings: Settings, url: str) -> ObjectStore:
    """The process's one store (one boto3 client) for ``url`` with the settings' S3 options, shared by the job
    threads that publish and the contact sheet's thread."""
    return _STORES.get(url, retry_mode=settings.s3_retry_mode, max_attempts=settings.s3_max_attempts,
                       deadline=settings.s3_deadline)


def _folders(name: str) -> Iterable[str]:
    yield name
    for n in count(2):
        yield f"{name}-{n}"


def _walk(staging: Path) -> Iterable[str]:
    for path in staging.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path.relative_to(staging).as_posix()


def _relative(name: str) -> str:
    """``name`` as a key suffix; one that would climb out of the job's folder is refused."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a relative file name: {name!r}")
    return "/".join(parts)


def _brief(err: BaseException) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code") or err)
    if isinstance(err, RetriesExceededError):  # a managed download's body cut off on every try
        return redact_text(err.last_exception)
    return redact_text(err)
