"""CPU per call of the client process against the test ComfyUI: the standard library's http.client, a plain
requests Session, and hotfolder's ComfyHTTP (requests underneath), for one POST and for one /view
download written to disk. Shows what the libraries issue 13 mandates cost per job, apart from hotfolder.

    python bench/transport_cost.py
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotfolder.comfy.http import ComfyHTTP  # noqa: E402

ROUNDS, CALLS = 7, 200


def cpu_ms(fn: Callable[[], object], calls: int = CALLS) -> float:
    """CPU milliseconds of this process per call of ``fn`` (after one warm-up call)."""
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return 1000 * (time.process_time() - start) / calls


def main() -> None:
    folder = tempfile.mkdtemp()
    Path(folder, "x.png").write_bytes(b"\x89PNG" + b"0" * 200)
    server = subprocess.Popen([sys.executable, "-m", "hotfolder.testing", "--port", "0", "--output-dir", folder],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().split()[-1]
    dest = os.path.join(folder, "out.bin")
    body = json.dumps({"prompt_id": "x" * 36}).encode()
    try:
        ours = ComfyHTTP(url)
        host, port = url.split("//")[1].rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port))
        session = requests.Session()

        def stdlib_post() -> None:
            conn.request("POST", "/interrupt", body=body,
                         headers={"Content-Type": "application/json", "Accept-Encoding": "identity"})
            conn.getresponse().read()

        def requests_post() -> None:
            session.post(url + "/interrupt", data=body, headers={"Content-Type": "application/json"}).close()

        def stdlib_view() -> None:
            conn.request("GET", "/view?filename=x.png&subfolder=&type=output", headers={"Accept-Encoding": "identity"})
            data = conn.getresponse().read()
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            hashlib.sha256(data).hexdigest()

        calls = [
            ("POST /interrupt, http.client", stdlib_post),
            ("POST /interrupt, requests Session.post", requests_post),
            ("POST /interrupt, ComfyHTTP.interrupt", lambda: ours.interrupt("x" * 36)),
            ("GET /view + write + fsync, http.client", stdlib_view),
            ("GET /view + write + fsync, ComfyHTTP.download",
             lambda: ours.download(filename="x.png", subfolder="", type_="output", dest=dest)),
        ]
        results: dict[str, list[float]] = {name: [] for name, _ in calls}
        for _ in range(ROUNDS):  # interleaved, so that the machine's load falls on all alike
            for name, fn in calls:
                results[name].append(cpu_ms(fn))
        for name, _ in calls:
            print(f"{name:48s} {statistics.median(results[name]):.3f} ms CPU per call "
                  f"(median of {ROUNDS} x {CALLS})")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
