"""CPU per job, stage by stage: where hotfolder's own time goes.

Runs ``hotfolder process`` in this process on ``--jobs`` trivial scenario files against a test ComfyUI
in a child process, and times (``time.thread_time``, CPU of the calling thread only) the pipeline's
stages and a few functions inside them. Prints milliseconds of CPU per job. Stages nest (``run_job``
holds submit, ``finish`` download and publish), so the rows do not add up to the total.

    .venv/bin/python bench/stagecost.py --jobs 300

The profile of bench/run.py (``--profile``) shows the same with every function, but cProfile's cost
per call inflates pure-Python code about threefold; these timers cost a few microseconds per call.
For a sampling view of the running daemon, ``py-spy record --gil --pid PID`` works too.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(owner: Any, name: str, key: str, acc: collections.Counter[str]) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            acc[key] += time.thread_time() - start

    setattr(owner, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()

    from hotfolder import cli, record
    from hotfolder.comfy import client, http, ws
    from hotfolder.engine import ending, engine, intake, routing
    from hotfolder.stages import archive, claim, download, parse, publish, submit

    root = Path(tempfile.mkdtemp(prefix="hotfolder-stagecost-"))
    server = subprocess.Popen([sys.executable, "-m", "hotfolder.testing", "--port", "0", "--output-dir",
                               str(root / "output")], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[-1]  # "hotfolder.testing listening on URL"
        subprocess.run([sys.executable, "-m", "hotfolder", "init", str(root / "project")], check=True,
                       stdout=subprocess.DEVNULL)
        config = root / "project" / "hotfolder.toml"
        config.write_text(config.read_text().replace('servers = ["http://127.0.0.1:8188"]', f'servers = ["{url}"]'))
        files = []
        for i in range(args.jobs + 1):
            path = root / "project" / "inbox" / f"b{i:05d}.json"
            path.write_text(json.dumps({"params": {"width": 8, "height": 8, "color": 1000 + i, "prefix": "stagecost/x"}}))
            files.append(str(path))
        acc: collections.Counter[str] = collections.Counter()
        timers = [
            (intake.Intake, "accept", "accept (main thread)"), (claim, "claim_file", "  claim"),
            (parse, "parse_scenario", "  parse"), (intake, "render_job", "  render"),
            (engine.Engine, "_submit_side", "run_job to the hand-off (job workers)"),
            (routing.Router, "_capable", "  validate"),
            (submit, "submit_job", "  submit"), (http.ComfyHTTP, "post_prompt", "    POST /prompt"),
            (engine.Engine, "_output_side", "run_job from the hand-off (output workers)"),
            (download, "download_job", "  download"), (http.ComfyHTTP, "download", "    GET /view"),
            (publish, "publish_job", "  publish"), (publish, "publish_folder", "    publish_folder"),
            (ending.Endings, "archive", "  archive"), (archive, "archive_input", "    archive_input"),
            (ws.EventStream, "_run", "websocket thread"), (client.ComfyClient, "_on_message", "  routing"),
            (record.FileRecord, "save", "record saves (all threads)"),
            (logging.Logger, "_log", "logging (all threads)"),
        ]
        for owner, name, key in timers:
            _timed(owner, name, key, acc)
        os.chdir(root / "project")
        # one warm-up file (imports, first connection, /object_info), then the measured ones
        for batch, _measure in ((files[:1], False), (files[1:], True)):
            acc.clear()
            cpu = time.process_time()
            sys.argv = ["hotfolder", "process", *batch]
            try:
                with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    cli.main()
            except SystemExit as done:
                if done.code:
                    print(f"hotfolder process exited {done.code}", file=sys.stderr)
                    return 1
            cpu = time.process_time() - cpu
        print(f"{args.jobs} jobs; process CPU per job (includes start-up and shutdown): {1000 * cpu / args.jobs:.2f} ms")
        width = max(len(key) for _, _, key in timers)
        for _, _, key in timers:
            print(f"{key:<{width}}  {1000 * acc[key] / args.jobs:6.2f} ms")
        return 0
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
