"""Where results go: an ``s3://bucket/prefix`` URL, parsed and checked, and the named destinations.

Kept apart from :mod:`hotfolder.objectstore` (the one module importing boto3) so that the settings can
check an ``outbox = "s3://..."`` at startup without boto3 and without importing the layers above them.
:class:`Outbox` is one place results go (the ``outbox`` setting, or one of ``[destinations]``, which a
scenario picks by name with ``destination:``); :func:`raw_destinations` reads that setting's shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.errors import ConfigError
from hotfolder.redact import redact_text, redact_url

SCHEME = "s3://"
DEFAULT = "outbox"  #: the name a scenario gives the ``outbox`` setting (also what no ``destination:`` means)
MAX_DESTINATIONS = 100
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
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


@dataclass(frozen=True)
class Outbox:
    """One place results go, by name: a local ``folder``, or object storage (``url``, ``s3://bucket/prefix``;
    ``folder`` is then the local folder its jobs are staged in before the upload)."""

    name: str
    folder: Path
    url: str = ""

    @property
    def staging_dir(self) -> Path:
        """Where a job's outputs are downloaded and post-processed before they are published: a hidden
        folder inside a local outbox (one rename publishes), ``folder`` itself for object storage."""
        return self.folder if self.url else self.folder / ".hotfolder-staging"

    def __str__(self) -> str:
        return self.url or str(self.folder)


def raw_destinations(value: Any, origin: str) -> dict[str, str]:
    """The ``destinations`` setting as name -> what ``outbox`` accepts (a folder or ``s3://bucket/prefix``),
    names and shape checked. From hotfolder.toml a table (``name = "..."``, or ``[destinations.name]`` with
    ``url = "..."``); from the environment or command line also ``name=...,name=...``."""
    hint = ('Write [destinations] in hotfolder.toml with name = "s3://bucket/prefix" or name = "/a/folder" per line '
            '(or HOTFOLDER_DESTINATIONS="name=s3://bucket/prefix,name2=/a/folder").')
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise _error(f"{redact_text(value[:60])!r} is not a list of name=destination pairs", origin, hint)
        value = {name.strip(): target.strip() for name, _, target in pairs}
    if not isinstance(value, dict):
        raise _error(f"expected a table of names, got {type(value).__name__}", origin, hint)
    if len(value) > MAX_DESTINATIONS:
        raise _error(f"{len(value)} destinations, more than {MAX_DESTINATIONS}", origin, hint)
    out = {}
    for name, target in value.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise _error(f"the name {name!r} is not {NAME_RULE}", origin, hint)
        if name == DEFAULT:
            raise _error(f"the name {DEFAULT!r} is the 'outbox' setting's own", origin,
                         f"Set outbox = \"...\" for it, and give the others other names. {hint}")
        if isinstance(target, dict):
            if set(target) != {"url"}:
                raise _error(f"the table of {name!r} must hold exactly one key, url (got "
                             f"{', '.join(map(repr, map(str, target))) or 'none'})", origin, hint)
            target = target["url"]
        if not isinstance(target, str) or not target.strip() or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in target):
            raise _error(f"{name!r} must be a folder or an s3://bucket/prefix URL (text without control characters)",
                         origin, hint)
        out[name] = target.strip()
    return out


def _error(why: str, origin: str, hint: str) -> ConfigError:
    return ConfigError(f"Setting 'destinations' from {origin}: {why}.", hint=hint,
                       where={"key": "destinations", "origin": origin})
