"""Where object storage puts results: an ``s3://bucket/prefix`` URL, parsed and checked.

Kept apart from :mod:`hotfolder.objectstore` (the one module importing boto3) so that the settings can
check an ``outbox = "s3://..."`` at startup without boto3 and without importing the layers above them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hotfolder.errors import ConfigError
from hotfolder.redact import redact_url

SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def is_store_url(text: object) -> bool:
    """Whether an outbox setting names object storage (``s3://...``) rather than a folder."""
    return isinstance(text, str) and text.startswith(SCHEME)


@dataclass(frozen=True)
class Destination:
    """Where jobs go: a bucket and a key prefix (``""`` or ``a/b``, no slashes at either end)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Destination:
        """``s3://bucket/prefix`` as a Destination; a malformed one is a :class:`ConfigError` that says why."""
        if not is_store_url(url):
            raise ConfigError(f"{url!r} is not an object storage destination.",
                              hint="Write it as s3://bucket or s3://bucket/prefix.")
        bucket, _, prefix = url[len(SCHEME):].partition("/")
        if "@" in bucket:
            raise ConfigError(f"{redact_url(url)!r} holds credentials (user:password@ before the bucket).",
                              hint="Remove them from the URL: hotfolder takes credentials from the AWS environment "
                                   "(AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role), see docs/s3.md.")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(f"{redact_url(url)!r}: {bucket!r} is not a valid bucket name.",
                              hint="Bucket names are 3-63 lowercase letters, digits, dots and hyphens.")
        prefix = prefix.strip("/")
        parts = prefix.split("/") if prefix else []
        if any(part in ("", ".", "..") for part in parts) or any(ord(c) < 32 for c in prefix):
            raise ConfigError(f"{url!r}: the prefix {prefix!r} has an empty, '.' or '..' part or a control character.",
                              hint="Write the prefix as plain folder names: s3://bucket/renders/2026.")
        return cls(bucket, prefix)

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")
