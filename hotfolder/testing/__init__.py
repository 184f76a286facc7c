"""A ComfyUI test server: test hotfolder (and hotfolder plugins) against real sockets, without a GPU.

``hotfolder.testing`` runs a small aiohttp server that speaks ComfyUI's HTTP and WebSocket protocol
the way ComfyUI 0.3.64 does (message shapes, message order, error bodies, quirks), or with
``comfyui="0.4x"`` the way 2026 releases do (see "Protocol profiles" below), but executes only a
handful of model-free nodes. Your code talks to it with the same ``requests`` and ``websocket-client``
calls it uses against a real ComfyUI. Nothing is mocked. Install it with the ``testing`` extra
(``pip install 'hotfolder[testing]'``), which brings in aiohttp; without it, importing the server
classes raises ``ModuleNotFoundError`` saying so, and ``python -m hotfolder.testing`` prints that in one
line and exits with status 1.

Quick start (pytest)::

    import pytest
    from hotfolder.testing import ComfyTestServer

    @pytest.fixture
    def comfy():
        with ComfyTestServer() as srv:      # 127.0.0.1, a free port, private temp folders
            yield srv

    def test_my_plugin_renders(comfy):
        settings = {"server": comfy.url}    # e.g. "http://127.0.0.1:40123"
        ...                                 # run your code against comfy.url
        comfy.wait_idle()                   # nothing queued or running any more
        assert list(comfy.output_dir.glob("*.png"))
        assert comfy.requests[-1].path == "/view"

From a shell (foreground until Ctrl-C; prints one line ``hotfolder.testing listening on URL``)::

    python -m hotfolder.testing --port 8188 --output-dir /tmp/comfy-out

For https and wss, pass ``ComfyTestServer(ssl_context=ctx)`` (a server-side ``ssl.SSLContext``);
``url`` then starts with ``https://``. ``tests/test_tls.py`` makes one with ``trustme``.

What runs
---------
``/object_info`` is the complete answer of a real ComfyUI (496 core node classes) plus ``TestSleep``
from ComfyUI's test pack, with model lists that name only models it runs. Every class validates exactly
like on ComfyUI (``node_errors`` included), but only these nodes execute; any other class fails at run
time with an ``execution_error`` (``NotImplementedError``):

==========================  =================================================================
``EmptyImage``              width, height, batch_size, color (0xRRGGBB)
``ImageInvert``             inverts the image
``SaveImage``               real PNGs ``{prefix}_{counter:05}_.png`` in ``output_dir`` (``a/b``
                            prefix: subfolder ``a``), with the ``prompt`` and ``extra_pnginfo``
                            text chunks; counters continue like ComfyUI's
``PreviewImage``            PNGs ``ComfyUI_temp_xxxxx_00001_.png`` in ``temp_dir``, type ``temp``
``LoadImage``               reads a file from ``input_dir`` (``"sub/x.png"`` allowed); PNGs are
                            decoded, other image formats become a grey 64x64 image
``TestSleep``               ``value`` (any type) passes through after ``seconds``, sending float
                            ``progress`` every 10-50 ms and one binary PREVIEW_IMAGE frame
``Primitive*``              ``PrimitiveInt``/``Float``/``String``/``StringMultiline``/``Boolean``
``PreviewAny``              ``source`` shown as text (``ui.text``)
model nodes (stand-ins)     ``CheckpointLoaderSimple`` and the other checkpoint loaders,
                            ``VAELoader``, ``LoraLoader``, ``CLIPTextEncode``,
                            ``EmptyLatentImage``, ``KSampler``, ``VAEDecode``: no weights; the
                            sampler sends one ``progress`` per step and draws a gradient that
                            depends only on its inputs (same inputs, same pixels). The checkpoints
                            listed: ``tiny_sd15_random.safetensors`` and
                            ``v1-5-pruned-emaonly.safetensors`` (``set_models`` changes the list)
==========================  =================================================================

The video nodes write real files: ``ImageBatch`` joins two batches, ``CreateVideo`` makes a video of
images and fps, ``SaveVideo`` writes ``{prefix}_{counter:05}_.mp4`` (mkv, webm) through the ffmpeg of
``imageio-ffmpeg``, ``SaveWEBM`` a webm, ``SaveAnimatedWEBP`` an animated WebP through Pillow (all
answer ``images`` + ``animated: [true]``); on 0.4x, ``VHS_VideoCombine`` writes GIF, WebP, mp4 or webm
and answers VideoHelperSuite's ``gifs`` entries. ``ImageScaleToMaxDimension`` scales (nearest
neighbour) so that the longer side is ``largest_size``.

Keep images tiny (8x8 to 64x64): the nodes are pure Python.

Protocol profiles
-----------------
``ComfyTestServer(comfyui="0.3")`` (the default; ``None`` reads ``$HOTFOLDER_TESTING_COMFYUI``) plays
ComfyUI 0.3.64; ``comfyui="0.4x"`` (``python -m hotfolder.testing --comfyui 0.4x``) adds the jobs API
(``GET /api/jobs``, ``GET /api/jobs/{id}``, ``POST /api/jobs/{id}/cancel``, ``POST /api/jobs/cancel``),
refuses a ``prompt_id`` that is not a canonical lowercase UUID (400 ``invalid_prompt_id``), serves the
2026 node catalogue (V3 combos, a DynamicCombo ``SaveVideo`` with dotted sub-inputs), puts asset ``id``
/ ``preview_id`` on output entries, broadcasts ``assets.seed.*`` messages after ``/object_info``, and
replaces the deprecated ``ResizeImagesByLongerEdge`` (no longer in its catalogue) by
``ImageScaleToMaxDimension`` on submit, so ``/history`` holds another graph than the one sent
(``GET /node_replacements`` lists that replacement; 0.3 answers it 404).
docs/comfy-protocol/PROFILES.md lists each behaviour with its ComfyUI source.

What is faithful
----------------
* ``POST /prompt``: client_id, prompt_id, number, front, extra_data (API keys stripped),
  partial_execution_targets, the global counter, the 400 bodies (``error`` + ``node_errors``) and the
  plain-text 500s; the Origin check (403).
* WebSocket: first ``status`` frame with ``sid``, ``feature_flags`` reply, exact message order
  (``status`` twice, ``execution_start``, ``execution_cached``, ``progress_state``/``executing``/
  ``executed``, ``execution_success``, ``status``, ``executing`` with ``node: null`` last), per-client
  routing, broadcasts, the reconnect ``executing`` without ``prompt_id``, the two-sockets-one-clientId
  bug, binary preview frames (type 1, or type 4 for clients with ``supports_preview_metadata``).
* Caching: ComfyUI's default "classic" cache; an identical re-run is all cached, re-sends ``executed``
  with the old file names and writes no file. Only results used by the previous prompt survive.
* Errors and interrupts: ``execution_error`` / ``execution_interrupted`` with all fields, history
  ``status_str: "error"``; ``POST /interrupt`` with a prompt_id only hits the running prompt.
* ``/queue`` (heap order), ``/history`` (``max_items``/``offset``), ``/view`` (400/403/404 rules),
  ``/upload/image`` (same bytes keep the name, different bytes get ``name (1).png``).
* ``stop()`` and ``restart()`` behave like killing ComfyUI: no close frames (clients see 1006 /
  "connection lost"), queue and history are gone, output files stay.

Python API
----------
``ComfyTestServer(host="127.0.0.1", port=0, output_dir=None, *, input_dir=None, temp_dir=None,
comfyui=None)``

* ``start()`` / ``stop()`` / ``restart()`` / context manager; ``url``, ``port``, ``running``, ``profile``;
  ``output_dir``, ``input_dir``, ``temp_dir`` (``Path``).
* ``requests``: every :class:`RecordedRequest` (``method``, ``path``, ``query``, ``json``, ``time``,
  ``headers``; dict-style access works too); ``clear_requests()``.
* ``history()``, ``queue()``, ``executed_prompt_ids`` (start order, to spot duplicate submissions),
  ``held_nodes()`` (nodes waiting out a ``node_delay`` now, to catch a prompt mid-run), ``wait_idle(timeout=10)``.

Faults (``srv.faults``, thread-safe, kept across ``restart()``)::

    srv.faults.post_status(500)                   # next POST /prompt: 500, not queued
    srv.faults.post_status(400, body="<html>")    # ... with any body (content_type= too)
    srv.faults.post_hang(seconds=30)              # next POST /prompt: queued, answer delayed
    srv.faults.view_status(500, count=2)          # next two /view fail
    srv.faults.view_status(500, skip=1)           # the /view after the next one fails
    srv.faults.view_body(b"x", count=None)        # every /view answers these bytes, whatever name it asks for
    srv.faults.history_delay(2.0)                 # history written 2 s after the prompt ends
    srv.faults.oversize("history", 10**6)         # next /history/{id} carries 1 MB more (chunked=True: no length)
    srv.faults.oversize("view", 10**6, count=None)  # every /view answers 1 MB instead of the file
    srv.faults.history_entry({"status": 5})       # next prompt's history entry is this JSON instead
    srv.faults.ws_frames([{"type": "progress", "data": {"prompt_id": faults.PROMPT_ID, "value": "x"}},
                          "not json", b"binary"])  # sent right after the next execution_start
    srv.faults.object_info({"EmptyImage": 5})     # GET /object_info answers this (until cleared)
    srv.faults.node_replacements([1], count=1)    # next GET /node_replacements (0.4x) answers this
    srv.faults.drop_websockets()                  # abort every socket now (no close frame)
    srv.faults.drop_websockets_every(0.5)         # ... and keep doing it (0 stops)
    srv.faults.silence_websockets(True)           # sockets stay open, receive nothing
    srv.faults.fail_node("SaveImage", message="disk full", exception_type="OSError")
    srv.faults.node_delay("EmptyImage", 1.5)      # slow node, interruptible
    srv.faults.clear()

Simplifications
---------------
No real models (the model nodes are stand-ins, above), no JPEG/WebP: ``/view?preview=...`` returns the
original file. Only ``LoadImage`` and
friends have custom validation (``VALIDATE_INPUTS``); ``LoadImage`` refuses files outside the
server's folders. ``display_node``/``parent_node`` always equal the node itself (no graph expansion).
Not implemented: ``/upload/mask``, ``/userdata``, ``/internal/*``, the frontend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import COMFYUI_VERSION, ComfyTestServer, RecordedRequest

__all__ = ["COMFYUI_VERSION", "ComfyTestServer", "RecordedRequest"]

#: What to do when aiohttp is missing (``python -m hotfolder.testing`` prints it as its one line).
MISSING_AIOHTTP = ("hotfolder.testing needs aiohttp, which is not installed here. "
                   "Install it with: pip install 'hotfolder[testing]' (or, in a clone: pip install -e '.[testing]')")


def load_server() -> Any:
    """Import :mod:`hotfolder.testing.server` (the part that needs aiohttp); a missing aiohttp is a
    ``ModuleNotFoundError`` that says how to install it."""
    try:
        from . import server
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "aiohttp":
            raise
        raise ModuleNotFoundError(MISSING_AIOHTTP, name="aiohttp") from err
    return server


def __getattr__(name: str) -> Any:
    """The server classes are imported on first use, so ``python -m hotfolder.testing`` and the
    model-free parts (nodes, png) load without aiohttp."""
    if name in __all__:
        return getattr(load_server(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
