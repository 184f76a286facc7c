"""The S3 server the end-to-end tests publish into: moto on loopback (tests/s3server.py) with its request
recorder on, so a test reads the order in which objects were written, and each bucket's objects."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")

from tests.test_objectstore import BUCKET, S3Server  # noqa: E402 - skips the importing module without moto[server]

PREFIX = "farm"


class Store(S3Server):
    """The S3 server with moto's request recorder on: the order in which objects were written."""

    def __init__(self, recording: Path, **kwargs: bool) -> None:
        super().__init__(**kwargs)
        self.recording = recording
        self.starts: list[int] = []  # the recording's length at each start

    def start(self) -> None:
        self.starts.append(len(self.requests()))
        os.environ.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(self.recording))
        try:
            super().start()
        finally:
            os.environ.pop("MOTO_ENABLE_RECORDING")
            os.environ.pop("MOTO_RECORDER_FILEPATH")

    def requests(self) -> list[tuple[str, str, str, str]]:
        """(method, bucket, key, query) of every request so far, in order."""
        if not self.recording.exists():
            return []
        out = []
        for line in self.recording.read_text().splitlines():
            entry = json.loads(line)
            url = urlsplit(entry["url"])
            bucket, _, key = unquote(url.path).removeprefix("/").partition("/")
            out.append((entry["method"], bucket, key, url.query))
        return out

    def puts(self, since: int = 0, bucket: str = BUCKET) -> list[str]:
        """The keys of the objects written in ``bucket`` (whole-object PUTs) since request ``since``, in order."""
        return [key for method, where, key, query in self.requests()[since:]
                if method == "PUT" and where == bucket and key and not query]

    def objects(self, bucket: str = BUCKET, prefix: str = PREFIX + "/") -> dict[str, bytes]:
        """Every object of ``bucket`` under ``prefix``: key -> body."""
        key = self.keys["writer"] if self.auth else {"id": "test", "secret": "test"}
        client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=key["id"],
                              aws_secret_access_key=key["secret"])
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents") or ():
                out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return out


@contextmanager
def running_store(folder: Path, buckets: tuple[str, ...] = (BUCKET,)) -> Iterator[Store]:
    """A :class:`Store` holding ``buckets``, recording into ``folder``, started; killed after the block."""
    server = Store(folder / "moto-recording.jsonl")
    server.buckets = buckets
    server.start()
    try:
        yield server
    finally:
        server.kill()
