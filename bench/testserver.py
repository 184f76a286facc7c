"""One test ComfyUI server in its own process, steered over stdin (bench use only).

``python bench/testserver.py [--output-dir DIR]`` starts a :class:`hotfolder.testing.ComfyTestServer` on a
free 127.0.0.1 port and prints one JSON line ``{"url": ..., "output_dir": ...}``. It then reads commands,
one per line on stdin, and answers each with one JSON line on stdout:

``delay CLASS SECONDS``   every execution of CLASS takes SECONDS longer (0 removes the delay)
``clear``                 remove every fault
``requests``              the recorded requests: method, path, time (``time.time()``, taken when the body
                          has been read) and, for ``POST /prompt``, the prompt_id and the EmptyImage inputs
``forget``                forget the recorded requests
``quit``                  stop

End of stdin (the bench died) also stops it. The bench runs servers as processes so that their work does
not share a GIL with the daemon's, the clients' or the bench's.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # input and temp beside the output, in the bench's own temp folder: nothing is left behind even when
    # the process is killed
    beside = Path(args.output_dir).parent if args.output_dir else None
    server = ComfyTestServer(host="127.0.0.1", port=args.port, output_dir=args.output_dir,
                             input_dir=beside / "input" if beside else None, temp_dir=beside / "temp" if beside else None)
    server.start()

    def reply(data: Any) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    reply({"url": server.url, "output_dir": str(server.output_dir)})
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd = words[0]
            if cmd == "delay":
                server.faults.node_delay(words[1], float(words[2]))
                reply({"ok": True})
            elif cmd == "clear":
                server.faults.clear()
                reply({"ok": True})
            elif cmd == "requests":
                rows = []
                for r in server.requests:
                    row: dict[str, Any] = {"method": r.method, "path": r.path, "time": r.time}
                    if r.method == "POST" and r.path == "/prompt":
                        row.update(_marks(r.json))
                    rows.append(row)
                reply(rows)
            elif cmd == "forget":
                server.clear_requests()
                reply({"ok": True})
            elif cmd == "quit":
                reply({"ok": True})
                break
            else:
                reply({"error": f"unknown command {cmd!r}"})
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
