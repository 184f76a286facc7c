"""Video and animation nodes of the test server: real small mp4, mkv, webm, GIF and animated WebP files.

``ImageBatch`` joins two batches (animations need frames that differ); ``CreateVideo`` turns an image batch into a video value; ``SaveVideo`` (0.4x catalogue: ``format`` and
``codec`` DynamicCombos, ``format.codec.encoding.crf``) and ``SaveWEBM`` encode it with the ``ffmpeg``
binary of the ``imageio-ffmpeg`` wheel; ``SaveAnimatedWEBP`` writes through Pillow; ``VHS_VideoCombine``
stands for the VideoHelperSuite custom node (GIF and WebP through Pillow, mp4 and webm through ffmpeg).

Output entries follow the evidence: core video nodes answer ``ui.PreviewVideo``, i.e.
``{"images": [{filename, subfolder, type}], "animated": [true]}`` (comfy_api/latest/_ui.py@255ec426,
comfy_extras/nodes_video.py@39b885faf94458563e272c4881fa369717567462); SaveAnimatedWEBP answers
``SavedImages(..., is_animated=True)``, the same shape; VHS_VideoCombine answers ``{"gifs": [{filename,
subfolder, type, format, frame_rate, workflow, fullpath}]}`` (videohelpersuite/nodes.py as forks in the
code index show it). Without Pillow or imageio-ffmpeg the node fails at run time, saying what to install.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .folders import save_image_path
from .values import ImageBatch, NodeContext, NodeResult

__all__ = ["VHS_VIDEO_COMBINE_INFO", "VIDEO_NODES", "VideoValue", "ffmpeg_exe"]


@dataclass(frozen=True, slots=True)
class VideoValue:
    """A ``VIDEO`` made from images (ComfyUI's ``VideoFromComponents``): the frames and the frame rate."""

    images: ImageBatch
    fps: float

    def __str__(self) -> str:
        return f"<VIDEO {len(self.images.frames)} frames {self.images.width}x{self.images.height} @ {self.fps:g} fps>"


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the ``imageio-ffmpeg`` wheel (or ``IMAGEIO_FFMPEG_EXE``); raises if there is none."""
    try:
        import imageio_ffmpeg
    except ModuleNotFoundError:
        raise RuntimeError("video output needs ffmpeg: pip install imageio-ffmpeg (in the test extra)") from None
    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def _pillow() -> Any:
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise RuntimeError("animated image output needs Pillow: pip install Pillow (in the test extra)") from None
    return Image


#: container -> (extension, ffmpeg arguments for the video stream). The codec is the test server's choice
#: (H.264 in mp4/mkv, VP9 in webm: quick to encode); ComfyUI's av1 choice is accepted and written as VP9.
CONTAINERS = {
    "mp4": ("mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]),
    "mkv": ("mkv", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
    "webm": ("webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-b:v", "0", "-pix_fmt", "yuv420p"]),
}


class ExternalError(Exception):
    """What PyAV raises when libx264 refuses the frame size; shown as ``av.error.ExternalError``."""

    __module__ = "av.error"


def _check_h264_size(images: ImageBatch, crf: Any) -> None:
    """ComfyUI's SaveVideo encodes H.264 as yuv420p through PyAV, which fails on an odd width or height
    (seen on a real 0.33.0, REAL-SERVERS.md): raise the same error rather than pad."""
    if images.width % 2 or images.height % 2:
        options = {} if crf is None else {"crf": f"{float(crf)}"}
        raise ExternalError("[Errno 542398533] Generic error in an external library: "
                            f"'avcodec_open2(\"libx264\", {options!r})'")


def encode_video(images: ImageBatch, fps: float, path: str, container: str, crf: float | None) -> None:
    """Encode ``images`` at ``fps`` into ``path`` with ffmpeg (odd sizes are padded to even)."""
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{images.width}x{images.height}", "-r", f"{fps:g}", "-i", "-",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", *CONTAINERS[container][1]]
    if crf is not None:
        args += ["-crf", f"{int(crf)}"]
    result = subprocess.run([*args, path], input=b"".join(images.frames), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {os.path.basename(path)}: {result.stderr.decode(errors='replace')}")


def encode_animation(images: ImageBatch, fps: float, path: str, kind: str, loop: int = 0) -> None:
    """Write ``images`` as an animated GIF or WebP with Pillow."""
    image = _pillow()
    frames = [image.frombytes("RGB", (images.width, images.height), frame) for frame in images.frames]
    duration = max(1, round(1000 / fps))
    options: dict[str, Any] = {"lossless": True} if kind == "webp" else {}
    frames[0].save(path, format=kind.upper(), save_all=True, append_images=frames[1:], duration=duration,
                   loop=loop, **options)


def _target(ctx: NodeContext, prefix: str, images: ImageBatch) -> tuple[str, str, str, int]:
    """(folder, file name stem, subfolder, counter) for a new output file, as SaveImage finds them."""
    target = save_image_path(prefix, ctx.output_dir, images.width, images.height)
    return target.folder, target.filename, target.subfolder, target.counter


def _check_frames(images: Any) -> ImageBatch:
    if not isinstance(images, ImageBatch) or not images.frames:
        raise ValueError(f"expected a non-empty image batch, got {images!r}")
    return images


async def image_batch(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """ImageBatch: ``image1``'s frames then ``image2``'s (same size only: the test server does not rescale)."""
    first, second = _check_frames(inputs["image1"]), _check_frames(inputs["image2"])
    if (first.width, first.height) != (second.width, second.height):
        raise ValueError("ImageBatch on the test server needs two batches of the same size")
    return NodeResult((ImageBatch(first.width, first.height, first.frames + second.frames),))


async def create_video(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """CreateVideo: the images and frame rate as a ``VIDEO``."""
    return NodeResult((VideoValue(_check_frames(inputs["images"]), float(inputs["fps"])),))


async def save_video(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """SaveVideo: ``<prefix>_NNNNN_.<ext>`` in the output folder; ``format`` auto means mp4 unless the
    codec is av1 (then webm), as nodes_video.py@39b885fa decides."""
    video = inputs["video"]
    if not isinstance(video, VideoValue):
        raise TypeError(f"video: expected a VIDEO, got {type(video).__name__}")
    if "format" not in inputs:  # a missing or unknown DynamicCombo key passes validation (catalog.py)
        raise TypeError("SaveVideo.execute() missing 1 required positional argument: 'format'")
    fmt = str(inputs["format"])
    codec = str(inputs.get("format.codec", inputs.get("codec", "auto")))
    crf = inputs.get("format.codec.encoding.crf")
    container = ("webm" if codec == "av1" else "mp4") if fmt == "auto" else fmt
    if container not in CONTAINERS:
        raise ValueError(f"format: unknown container {fmt!r}")
    if container in ("mp4", "mkv") and codec in ("auto", "h264"):
        _check_h264_size(video.images, crf)
    folder, stem, subfolder, counter = _target(ctx, str(inputs.get("filename_prefix", "video/ComfyUI")), video.images)
    file = f"{stem}_{counter:05}_.{CONTAINERS[container][0]}"
    await asyncio.to_thread(encode_video, video.images, video.fps, os.path.join(folder, file), container,
                            None if crf is None else float(crf))
    entry = {"filename": file, "subfolder": subfolder, "type": "output"}
    return NodeResult((video,), {"images": [entry], "animated": [True]})


async def save_webm(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """SaveWEBM: the images as ``<prefix>_NNNNN_.webm`` (ui.PreviewVideo)."""
    images = _check_frames(inputs["images"])
    folder, stem, subfolder, counter = _target(ctx, str(inputs.get("filename_prefix", "ComfyUI")), images)
    file = f"{stem}_{counter:05}_.webm"
    await asyncio.to_thread(encode_video, images, float(inputs["fps"]), os.path.join(folder, file), "webm",
                            float(inputs.get("crf", 32.0)))
    return NodeResult((images,), {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
                                  "animated": [True]})


async def save_animated_webp(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """SaveAnimatedWEBP: the images as one animated ``<prefix>_NNNNN_.webp`` (SavedImages, animated)."""
    images = _check_frames(inputs["images"])
    folder, stem, subfolder, counter = _target(ctx, str(inputs.get("filename_prefix", "ComfyUI")), images)
    file = f"{stem}_{counter:05}_.webp"
    await asyncio.to_thread(encode_animation, images, float(inputs["fps"]), os.path.join(folder, file), "webp")
    return NodeResult((), {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
                           "animated": [True]})


#: VHS_VideoCombine formats the stand-in writes: format -> (extension, writer kind).
VHS_FORMATS = {"image/gif": ("gif", "gif"), "image/webp": ("webp", "webp"),
               "video/h264-mp4": ("mp4", "mp4"), "video/webm": ("webm", "webm")}


def _write_vhs(images: ImageBatch, fps: float, folder: str, stem: str, counter: int, fmt: str, loop: int) -> str:
    """The first frame as ``<stem>_NNNNN.png`` (VHS's "workflow" file), then the animation; its name."""
    ext, kind = VHS_FORMATS[fmt]
    still = io.BytesIO()
    _pillow().frombytes("RGB", (images.width, images.height), images.frames[0]).save(still, format="PNG")
    Path(folder, f"{stem}_{counter:05}.png").write_bytes(still.getvalue())
    file = f"{stem}_{counter:05}.{ext}"
    if kind in ("gif", "webp"):
        encode_animation(images, fps, os.path.join(folder, file), kind, loop)
    else:
        encode_video(images, fps, os.path.join(folder, file), kind, None)
    return file


async def vhs_video_combine(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """VHS_VideoCombine: the images as a GIF, WebP, mp4 or webm; the ``gifs`` UI entry VHS sends."""
    images = _check_frames(inputs["images"])
    fmt, fps = str(inputs["format"]), float(inputs["frame_rate"])
    if fmt not in VHS_FORMATS:
        raise ValueError(f"format: the test server's VHS_VideoCombine writes {', '.join(VHS_FORMATS)}, not {fmt!r}")
    if inputs.get("pingpong"):
        images = ImageBatch(images.width, images.height, images.frames + images.frames[-2:0:-1])
    save_output = bool(inputs.get("save_output", True))
    base = ctx.output_dir if save_output else ctx.temp_dir
    target = save_image_path(str(inputs.get("filename_prefix", "AnimateDiff")), base, images.width, images.height)
    file = await asyncio.to_thread(_write_vhs, images, fps, target.folder, target.filename, target.counter, fmt,
                                   int(inputs.get("loop_count", 0)))
    fullpath = os.path.join(target.folder, file)
    preview = {"filename": file, "subfolder": target.subfolder, "type": "output" if save_output else "temp",
               "format": fmt, "frame_rate": fps, "workflow": f"{target.filename}_{target.counter:05}.png",
               "fullpath": fullpath}
    return NodeResult(((save_output, [fullpath]),), {"gifs": [preview]})


#: /object_info of the VHS_VideoCombine stand-in (the inputs of VideoHelperSuite's node that it reads).
VHS_VIDEO_COMBINE_INFO: dict[str, Any] = {
    "input": {
        "required": {
            "images": ["IMAGE", {}],
            "frame_rate": ["FLOAT", {"default": 8, "min": 1, "step": 1}],
            "loop_count": ["INT", {"default": 0, "min": 0, "max": 100, "step": 1}],
            "filename_prefix": ["STRING", {"default": "AnimateDiff"}],
            "format": [list(VHS_FORMATS), {}],
            "pingpong": ["BOOLEAN", {"default": False}],
            "save_output": ["BOOLEAN", {"default": True}],
        },
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
    },
    "input_order": {
        "required": ["images", "frame_rate", "loop_count", "filename_prefix", "format", "pingpong", "save_output"],
        "hidden": ["prompt", "extra_pnginfo", "unique_id"],
    },
    "output": ["VHS_FILENAMES"],
    "output_is_list": [False],
    "output_name": ["Filenames"],
    "name": "VHS_VideoCombine",
    "display_name": "Video Combine 🎥🅥🅗🅢",
    "description": "",
    "python_module": "custom_nodes.ComfyUI-VideoHelperSuite",
    "category": "Video Helper Suite 🎥🅥🅗🅢",
    "output_node": True,
}

#: class_type -> implementation of the video nodes.
VIDEO_NODES = {
    "ImageBatch": image_batch,
    "CreateVideo": create_video,
    "SaveVideo": save_video,
    "SaveWEBM": save_webm,
    "SaveAnimatedWEBP": save_animated_webp,
    "VHS_VideoCombine": vhs_video_combine,
}
