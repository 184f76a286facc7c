"""Test ComfyUI servers in one process of their own, steered over stdin (bench use only).

``python bench/testserver.py [--output-dir DIR]`` starts one :class:`hotfolder.testing.ComfyTestServer`
on a free 127.0.0.1 port; ``--count K --root DIR`` starts K of them (folders ``DIR/s<i>/output`` ...),
each on its own port and event loop, all in this one process: a farm of 32 servers is one process that
shares the machine's cores with the daemon, not 32. It prints one JSON line ``{"url": ..., "output_dir":
..., "servers": [{"url": ..., "output_dir": ...}, ...]}`` (``url``: the first server's), then reads
commands, one per line on stdin, and answers each with one JSON line on stdout. A command applies to
every server, or with a leading ``@I`` to server I only:

``delay CLASS SECONDS``   every execution of CLASS takes SECONDS longer (0 removes the delay)
``pace SECONDS``          every prompt lasts SECONDS in all, from its start to its end (0 removes it): the
                          model of a GPU job, which occupies the GPU for T whatever the stand-in nodes
                          themselves cost (their work counts into T, it is not added to it)
``clear``                 remove every fault
``requests``              the recorded requests: method, path, time (``time.time()``, taken when the body
                          has been read), server (its index) and, for ``POST /prompt``, the prompt_id
                          and the EmptyImage inputs
``forget``                forget the recorded requests
``restart``               stop and start again on the same port, forgetting queue and history (a
                          restarted ComfyUI); answers ``{"answering": time.time()}`` once it listens again
``quit``                  stop

End of stdin (the bench died) also stops it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from hotfolder.testing import ComfyTestServer


def _marks(body: Any) -> dict[str, Any]:
    """What identifies a bench job in a POST /prompt body: its prompt_id and the EmptyImage inputs."""
    out: dict[str, Any] = {}
    if not isinstance(body, dict):
        return out
    out["prompt_id"] = body.get("prompt_id")
    prompt = body.get("prompt")
    if isinstance(prompt, dict):
        for node in prompt.values():
            if isinstance(node, dict) and node.get("class_type") == "EmptyImage":
                inputs = node.get("inputs") or {}
                out["color"] = inputs.get("color")
                out["width"] = inputs.get("width")
                break
    return out


def _server(output_dir: Path | None) -> ComfyTestServer:
    # input and temp beside the output, in the bench's own temp folder: nothing is left behind even when
    # the process is killed
    beside = output_dir.parent if output_dir else None
    return ComfyTestServer(host="127.0.0.1", port=0, output_dir=output_dir,
                           input_dir=beside / "input" if beside else None,
                           temp_dir=beside / "temp" if beside else None)


def _requests(servers: list[ComfyTestServer], chosen: list[int]) -> list[dict[str, Any]]:
    rows = []
    for i in chosen:
        for r in servers[i].requests:
            row: dict[str, Any] = {"method": r.method, "path": r.path, "time": r.time, "server": i}
            if r.method == "POST" and r.path == "/prompt":
                row.update(_marks(r.json))
            rows.append(row)
    rows.sort(key=lambda row: row["time"])
    return rows


def _command(servers: list[ComfyTestServer], words: list[str]) -> Any:
    """Run one command; return its answer."""
    chosen = list(range(len(servers)))
    if words[0].startswith("@"):
        chosen = [int(words[0][1:])]
        words = words[1:]
    cmd, args = words[0], words[1:]
    if cmd == "delay":
        for i in chosen:
            servers[i].faults.node_delay(args[0], float(args[1]))
    elif cmd == "pace":
        for i in chosen:
            servers[i].faults.prompt_time(float(args[0]))
    elif cmd == "clear":
        for i in chosen:
            servers[i].faults.clear()
    elif cmd == "requests":
        return _requests(servers, chosen)
    elif cmd == "forget":
        for i in chosen:
            servers[i].clear_requests()
    elif cmd == "restart":
        for i in chosen:
            servers[i].restart()
        return {"ok": True, "answering": time.time()}
    else:
        return {"error": f"unknown command {cmd!r}"}
    return {"ok": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=None, help="the output folder of a single server")
    parser.add_argument("--count", type=int, default=1, help="how many servers")
    parser.add_argument("--root", type=Path, default=None, help="with --count: folder for the servers' folders")
    args = parser.parse_args()
    if args.count > 1 or args.root is not None:
        outputs: list[Path | None] = [args.root / f"s{i}" / "output" if args.root else None for i in range(args.count)]
    else:
        outputs = [args.output_dir]
    servers: list[ComfyTestServer] = []

    def reply(data: Any) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    try:
        for output in outputs:
            servers.append(_server(output).start())
        described = [{"url": s.url, "output_dir": str(s.output_dir)} for s in servers]
        reply({**described[0], "servers": described})
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words == ["quit"]:
                reply({"ok": True})
                break
            try:
                reply(_command(servers, words))
            except (IndexError, ValueError) as err:
                reply({"error": f"bad command {line.strip()!r}: {err}"})
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
