"""A loopback S3 server for tests/test_objectstore.py: moto's server mode, with buckets and users made first.

``python tests/s3server.py PORT BUCKET [BUCKET...]`` creates the buckets and two IAM users (``writer``, allowed
everything on S3, and ``nobody``, allowed nothing), prints their keys as one JSON line, then serves S3 on
127.0.0.1:PORT until killed. The buckets exist before the port opens, so a client retrying against a restarted
server never sees it without them. IAM checks apply only when ``INITIAL_NO_AUTH_ACTION_COUNT`` is set (moto's
switch); without it any credentials pass.
"""

from __future__ import annotations

import json
import sys

from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import main

ALLOW_S3 = json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


def prepare(buckets: list[str]) -> dict[str, dict[str, str]]:
    """Create ``buckets`` and the two users; return each user's access key and secret."""
    s3 = get_backend("s3")[DEFAULT_ACCOUNT_ID]["aws"]
    for bucket in buckets:
        s3.create_bucket(bucket, "us-east-1")
    iam = get_backend("iam")[DEFAULT_ACCOUNT_ID]["global"]
    keys = {}
    for user in ("writer", "nobody"):
        iam.create_user("us-east-1", user)
        key = iam.create_access_key(user)
        keys[user] = {"id": key.access_key_id, "secret": key.secret_access_key}
    iam.put_user_policy("writer", "s3", ALLOW_S3)
    return keys


if __name__ == "__main__":
    port, *names = sys.argv[1:]
    print(json.dumps(prepare(names)), flush=True)
    main(["-H", "127.0.0.1", "-p", port])
