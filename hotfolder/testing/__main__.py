"""``python -m hotfolder.testing``: run the test ComfyUI server in the foreground until Ctrl-C.

When the server accepts connections it prints exactly one line to stdout and flushes it::

    hotfolder.testing listening on http://127.0.0.1:8188

so a parent process (a daemon test) can wait for that line, with ``--port 0`` for a free port.
SIGTERM kills the process abruptly, which is what a killed ComfyUI looks like to clients (only its
private temp folder, if it made one, is removed first).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from . import load_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hotfolder.testing",
        description="Run the hotfolder test ComfyUI server (model-free nodes, and weightless stand-ins for the "
                    "model nodes) until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8188, help="port, 0 for a free one (default: %(default)s)")
    parser.add_argument("--output-dir", default=None, help="output folder (default: a private temp folder)")
    parser.add_argument("--input-dir", default=None, help="input folder for uploads and LoadImage")
    parser.add_argument("--temp-dir", default=None, help="temp folder for PreviewImage (wiped at start)")
    parser.add_argument("--comfyui", default=None, choices=("0.3", "0.4x"),
                        help="protocol profile: the ComfyUI version to play (default: $HOTFOLDER_TESTING_COMFYUI, "
                             "else 0.3)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and errors to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        server_module = load_server()
    except ModuleNotFoundError as err:
        if err.name != "aiohttp":
            raise
        print(err, file=sys.stderr)  # one line: what is missing and the command that installs it
        return 1
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    server = server_module.ComfyTestServer(
        host=args.host,
        port=args.port,
        output_dir=args.output_dir,
        input_dir=args.input_dir,
        temp_dir=args.temp_dir,
        comfyui=args.comfyui,
    )
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if SIGINT came in ignored

    def terminated(signum: int, _frame: object) -> None:
        # As abrupt as a killed ComfyUI (no close frames, no goodbye), but the private temp folder made
        # for the folders not given on the command line goes: nothing else could ever remove it.
        server.discard_private_folder()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    blockable = hasattr(signal, "pthread_sigmask")
    if blockable:  # the server's threads inherit a blocked SIGINT, so Ctrl-C reaches this thread
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server.start()
    except OSError as err:
        print(f"hotfolder.testing: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    finally:
        if blockable:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    print(f"hotfolder.testing listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
