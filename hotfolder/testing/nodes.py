"""The nodes that really run on the test server (the model-free ones), and the table of every node that runs.

Every class in the catalogue (:mod:`~hotfolder.testing.catalog`) passes validation exactly as it would on
ComfyUI, but only these execute: ``EmptyImage``, ``ImageInvert``, ``SaveImage``, ``PreviewImage``,
``PreviewAny``, ``LoadImage`` (also ``LoadImageOutput``), ``TestSleep`` and the ``Primitive*`` nodes
(``PrimitiveInt``, ``PrimitiveFloat``, ``PrimitiveString``, ``PrimitiveStringMultiline``,
``PrimitiveBoolean``); the weightless stand-ins of :mod:`~hotfolder.testing.standins`; and the video nodes of
:mod:`~hotfolder.testing.video` (``ImageBatch``, ``CreateVideo``, ``SaveVideo``, ``SaveWEBM``, ``SaveAnimatedWEBP``,
``VHS_VideoCombine``). Any other class
fails at run time with an ``execution_error`` (``NotImplementedError``), the way a node that crashes would.

``SaveImage`` and ``PreviewImage`` write real PNG files with ComfyUI's naming, counters and metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from . import png
from .folders import resolve_annotated_file, save_image_path
from .standins import STAND_IN_NODES
from .values import ImageBatch, MaskBatch, NodeContext, NodeFunction, NodeResult, check_size
from .video import VIDEO_NODES

__all__ = ["EXECUTABLE_NODES"]


class UnidentifiedImageError(OSError):
    """Raised by LoadImage for a file that is not an image; reported as ``PIL.UnidentifiedImageError``."""


UnidentifiedImageError.__module__ = "PIL"


async def empty_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """EmptyImage: a batch filled with ``color`` (0xRRGGBB)."""
    width, height = int(inputs["width"]), int(inputs["height"])
    batch, color = int(inputs["batch_size"]), int(inputs["color"])
    check_size(width, height, batch)

    def build() -> ImageBatch:
        pixel = bytes(((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF))
        frame = pixel * (width * height)
        return ImageBatch(width, height, tuple(frame for _ in range(batch)))

    return NodeResult((await asyncio.to_thread(build),))


_INVERT = bytes(255 - i for i in range(256))


async def image_invert(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """ImageInvert: ``1 - image``."""
    image: ImageBatch = inputs["image"]
    return NodeResult((ImageBatch(image.width, image.height, tuple(f.translate(_INVERT) for f in image.frames)),))


def _png_metadata(prompt: Any, extra_pnginfo: Any) -> list[tuple[str, str]]:
    text: list[tuple[str, str]] = []
    if prompt is not None:
        text.append(("prompt", json.dumps(prompt)))
    if extra_pnginfo is not None:
        for key in extra_pnginfo:
            text.append((str(key), json.dumps(extra_pnginfo[key])))
    return text


def _write_images(
    images: ImageBatch,
    *,
    prefix: str,
    output_dir: Path,
    kind: str,
    compress_level: int,
    metadata: list[tuple[str, str]],
) -> list[dict[str, str]]:
    target = save_image_path(prefix, output_dir, images.width, images.height)
    results = []
    counter = target.counter
    for batch_number, frame in enumerate(images.frames):
        name = target.filename.replace("%batch_num%", str(batch_number))
        file = f"{name}_{counter:05}_.png"
        data = png.encode_png(images.width, images.height, frame, text=metadata, compress_level=compress_level)
        with open(os.path.join(target.folder, file), "wb") as fh:
            fh.write(data)
        results.append({"filename": file, "subfolder": target.subfolder, "type": kind})
        counter += 1
    return results


async def save_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """SaveImage: write ``{prefix}_{counter:05}_.png`` files into the output folder."""
    images: ImageBatch = inputs["images"]
    metadata = _png_metadata(inputs.get("prompt"), inputs.get("extra_pnginfo"))
    results = await asyncio.to_thread(
        _write_images,
        images,
        prefix=str(inputs.get("filename_prefix", "ComfyUI")),
        output_dir=ctx.output_dir,
        kind="output",
        compress_level=4,
        metadata=metadata,
    )
    return NodeResult((), {"images": results})


async def preview_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """PreviewImage: like SaveImage, into the temp folder as ``ComfyUI_temp_xxxxx_NNNNN_.png``."""
    images: ImageBatch = inputs["images"]
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    metadata = _png_metadata(inputs.get("prompt"), inputs.get("extra_pnginfo"))
    results = await asyncio.to_thread(
        _write_images,
        images,
        prefix=f"ComfyUI_temp_{suffix}",
        output_dir=ctx.temp_dir,
        kind="temp",
        compress_level=1,
        metadata=metadata,
    )
    return NodeResult((), {"images": results})


#: The tiny PNG sent once by TestSleep as a binary PREVIEW_IMAGE frame.
PREVIEW_PNG = png.encode_png(8, 8, bytes((128, 128, 128)) * 64, compress_level=1)


async def test_sleep(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """TestSleep: wait ``seconds`` while reporting float progress, then pass ``value`` through.

    Progress goes out about every 10 ms for short sleeps and every 50 ms for long ones; one preview
    frame (binary PREVIEW_IMAGE) is sent once half the time has passed. An interrupt stops it at the
    next progress report, as ComfyUI's progress hook does.
    """
    seconds = float(inputs["seconds"])
    interval = min(0.05, max(0.01, seconds / 100))
    start = time.perf_counter()
    elapsed = 0.0
    previewed = False
    while elapsed < seconds:
        elapsed = time.perf_counter() - start
        preview = None
        if not previewed and elapsed >= seconds / 2:
            preview, previewed = PREVIEW_PNG, True
        await ctx.progress(min(elapsed, seconds), seconds, preview)
        await asyncio.sleep(interval)
    return NodeResult((inputs["value"],))


def _placeholder(width: int = 64, height: int = 64) -> ImageBatch:
    return ImageBatch(width, height, (bytes((127, 127, 127)) * (width * height),))


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _load_image_file(path: Path) -> tuple[ImageBatch, MaskBatch]:
    data = path.read_bytes()
    empty_mask = MaskBatch(64, 64, (bytes(64 * 64),))
    if data.startswith(png.PNG_SIGNATURE):
        try:
            decoded = png.decode_png(data)
        except png.PNGError:
            return _placeholder(), empty_mask
        check_size(decoded.width, decoded.height, 1)
        if decoded.channels == 3:
            return ImageBatch(decoded.width, decoded.height, (decoded.pixels,)), empty_mask
        rgb = bytearray(decoded.width * decoded.height * 3)
        rgb[0::3] = decoded.pixels[0::4]
        rgb[1::3] = decoded.pixels[1::4]
        rgb[2::3] = decoded.pixels[2::4]
        mask = bytes(255 - a for a in decoded.pixels[3::4])
        return (
            ImageBatch(decoded.width, decoded.height, (bytes(rgb),)),
            MaskBatch(decoded.width, decoded.height, (mask,)),
        )
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        # A real image format this server cannot decode: stand in a grey 64x64 image.
        return _placeholder(), empty_mask
    raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}")


def _image_loader(default_dir: str) -> NodeFunction:
    async def load_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
        """LoadImage: read a PNG from the input folder (IMAGE and MASK outputs).

        PNGs are decoded for real; other image formats give a grey 64x64 stand-in; a file that is no
        image fails like PIL does (``PIL.UnidentifiedImageError``).
        """
        dirs = {"input": ctx.input_dir, "output": ctx.output_dir, "temp": ctx.temp_dir}
        path = resolve_annotated_file(inputs["image"], dirs, default_dir)
        if path is None:
            raise FileNotFoundError(f"[Errno 2] No such file or directory: {inputs['image']!r}")
        image, mask = await asyncio.to_thread(_load_image_file, path)
        return NodeResult((image, mask))

    return load_image


async def image_scale_to_max_dimension(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """ImageScaleToMaxDimension: the longer side becomes ``largest_size``, the other keeps the aspect
    (rounded), as comfy_extras/nodes_images.py@a125cd84 computes it; nearest-neighbour whatever the
    ``upscale_method``."""
    image: ImageBatch = inputs["image"]
    size = int(inputs["largest_size"])
    width, height = image.width, image.height
    if height > width:
        width, height = round(width / height * size), size
    elif width > height:
        width, height = size, round(height / width * size)
    else:
        width = height = size
    check_size(width, height, len(image.frames))
    columns = [x * image.width // width * 3 for x in range(width)] if width else []
    frames = []
    for frame in image.frames:
        rows = []
        for y in range(height):
            start = y * image.height // height * image.width * 3
            rows.append(b"".join(frame[start + c:start + c + 3] for c in columns))
        frames.append(b"".join(rows))
    return NodeResult((ImageBatch(width, height, tuple(frames)),))


async def primitive(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """Primitive* nodes: output the literal ``value``."""
    return NodeResult((inputs["value"],))


async def preview_any(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """PreviewAny: show ``source`` as text (``ui.text``), the way ComfyUI turns any value into a string."""
    source = inputs.get("source")
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is None:
        value = "None"
    else:
        try:
            value = json.dumps(source)
        except (TypeError, ValueError):
            value = str(source)
    return NodeResult((), {"text": [value]})



#: class_type -> implementation, for the nodes that really execute on the test server.
EXECUTABLE_NODES: dict[str, NodeFunction] = {
    "EmptyImage": empty_image,
    "ImageInvert": image_invert,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "TestSleep": test_sleep,
    "LoadImage": _image_loader("input"),
    "LoadImageOutput": _image_loader("output"),
    "PrimitiveInt": primitive,
    "PrimitiveFloat": primitive,
    "PrimitiveString": primitive,
    "PrimitiveStringMultiline": primitive,
    "PrimitiveBoolean": primitive,
    "PreviewAny": preview_any,
    "ImageScaleToMaxDimension": image_scale_to_max_dimension,
    **STAND_IN_NODES,
    **VIDEO_NODES,
}
