"""Node definitions of the test server: the ``/object_info`` catalogue and the nodes that really run.

The catalogue is the complete ``/object_info`` answer of a real ComfyUI 0.3.64 (496 core classes,
shipped as ``object_info_core.json``) plus ``TestSleep`` from ComfyUI's test node pack. Every class in
it passes validation exactly as it would on ComfyUI, but only these model-free nodes execute:

``EmptyImage``, ``ImageInvert``, ``SaveImage``, ``PreviewImage``, ``PreviewAny``, ``LoadImage`` (also
``LoadImageOutput``), ``TestSleep`` and the ``Primitive*`` nodes (``PrimitiveInt``, ``PrimitiveFloat``,
``PrimitiveString``, ``PrimitiveStringMultiline``, ``PrimitiveBoolean``); and stand-ins for the model
nodes of the classic text-to-image graph (the checkpoint, VAE and LoRA loaders, ``CLIPTextEncode``,
``EmptyLatentImage``, ``KSampler``, ``VAEDecode``), which load no weights: the sampler reports its steps
and draws a gradient that depends only on its inputs (model, LoRAs, prompts, seed, settings).

The model lists are honest: every checkpoint the catalogue offers (:data:`STAND_IN_CHECKPOINTS`) and
``pixel_space`` for ``VAELoader`` run; the other model folders are empty. Any other class fails at run
time with an ``execution_error`` (``NotImplementedError``), the way a node that crashes would.

Images are kept as :class:`ImageBatch` (8-bit RGB rows per batch item) and masks as :class:`MaskBatch`;
``SaveImage`` and ``PreviewImage`` write real PNG files with ComfyUI's naming, counters and metadata.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import importlib.resources
import json
import mimetypes
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import png

__all__ = [
    "EXECUTABLE_NODES",
    "ImageBatch",
    "MaskBatch",
    "NodeCatalog",
    "NodeContext",
    "NodeResult",
    "annotated_filepath",
    "resolve_annotated_file",
]

#: Largest image (width * height * batch) the nodes agree to build, to keep a shared test machine safe.
MAX_PIXELS = 4096 * 4096

#: The ``TestSleep`` node of ComfyUI's test pack (``tests/execution/testing_nodes``), as /object_info shows it.
TEST_SLEEP_INFO: dict[str, Any] = {
    "input": {
        "required": {
            "value": ["*", {}],
            "seconds": [
                "FLOAT",
                {
                    "default": 1.0,
                    "min": 0.0,
                    "max": 9999.0,
                    "step": 0.01,
                    "tooltip": "The amount of time to sleep in seconds.",
                },
            ],
        },
        "hidden": {"unique_id": "UNIQUE_ID"},
    },
    "input_order": {"required": ["value", "seconds"], "hidden": ["unique_id"]},
    "output": ["*"],
    "output_is_list": [False],
    "output_name": ["*"],
    "name": "TestSleep",
    "display_name": "Test Sleep",
    "description": "",
    "python_module": "custom_nodes.testing-pack",
    "category": "_for_testing",
    "output_node": False,
}

#: Nodes whose image input is checked by a custom validation (ComfyUI's ``VALIDATE_INPUTS``).
IMAGE_FILE_NODES = frozenset({"LoadImage", "LoadImageMask", "LoadImageOutput"})


@functools.cache
def _core_object_info() -> dict[str, Any]:
    text = importlib.resources.files(__package__).joinpath("object_info_core.json").read_text("utf-8")
    info: dict[str, Any] = json.loads(text)
    return info


def _is_image_name(name: str) -> bool:
    kind, _ = mimetypes.guess_type(name)
    return kind is not None and kind.startswith("image/")


# Loader inputs that list a model folder's files, for ComfyTestServer.set_models.
MODEL_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "checkpoints": (("CheckpointLoaderSimple", "ckpt_name"), ("CheckpointLoader", "ckpt_name"),
                    ("ImageOnlyCheckpointLoader", "ckpt_name"), ("unCLIPCheckpointLoader", "ckpt_name"),
                    ("CreateHookModelAsLora", "ckpt_name"), ("CreateHookModelAsLoraModelOnly", "ckpt_name")),
    "loras": (("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name")),
    "vae": (("VAELoader", "vae_name"),),
}


class NodeCatalog:
    """The node classes this server knows, with ComfyUI's ``/object_info`` entries.

    Entries are shared and must be treated as read-only. ``LoadImage``'s file list is the only live
    part: :meth:`object_info` fills it from the input directory at request time, like ComfyUI.
    """

    def __init__(self, *, input_dir: Path) -> None:
        self._input_dir = input_dir
        self._classes: dict[str, dict[str, Any]] = {**_core_object_info(), "TestSleep": TEST_SLEEP_INFO}
        self._json_cache: tuple[tuple[str, ...], bytes] | None = None
        self.set_models("checkpoints", list(STAND_IN_CHECKPOINTS))  # the models the stand-in loaders run

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._classes

    def get(self, class_type: Any) -> dict[str, Any] | None:
        """Return the entry of ``class_type``, or ``None``. An unhashable name raises ``TypeError``."""
        return self._classes.get(class_type)

    def __len__(self) -> int:
        return len(self._classes)

    def _input_files(self) -> list[str]:
        try:
            names = os.listdir(self._input_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self._input_dir, n)))

    def _with_live_lists(self, files: list[str], classes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        images = [f for f in files if _is_image_name(f)]
        out = dict(classes)
        for class_type, names in (("LoadImage", images), ("LoadImageMask", files)):
            if class_type in out:
                entry = copy.deepcopy(out[class_type])
                entry["input"]["required"]["image"][0] = names
                out[class_type] = entry
        return out

    def set_models(self, folder: str, names: list[str]) -> None:
        """Replace the file list of a model folder (``checkpoints``, ``loras``) in every loader that
        offers it, as if the server had those files."""
        for class_type, input_name in MODEL_INPUTS.get(folder, ()):
            entry = self._classes.get(class_type)
            if entry is None:
                continue
            entry = copy.deepcopy(entry)
            for section in entry["input"].values():
                if isinstance(section, dict) and input_name in section:
                    spec = section[input_name]
                    if spec and isinstance(spec[0], list):
                        spec[0] = list(names)
                    elif len(spec) > 1 and isinstance(spec[1], dict) and "options" in spec[1]:
                        spec[1]["options"] = list(names)
            self._classes[class_type] = entry
        self._json_cache = None

    def object_info(self) -> dict[str, Any]:
        """The full ``GET /object_info`` answer (a new dict; entries other than LoadImage are shared)."""
        return self._with_live_lists(self._input_files(), self._classes)

    def object_info_json(self) -> bytes:
        """``GET /object_info`` serialised, cached until the input directory listing changes."""
        files = self._input_files()
        key = tuple(files)
        if self._json_cache is None or self._json_cache[0] != key:
            body = json.dumps(self._with_live_lists(files, self._classes)).encode("utf-8")
            self._json_cache = (key, body)
        return self._json_cache[1]

    def one(self, class_type: str) -> dict[str, Any]:
        """``GET /object_info/{class}``: ``{class: info}`` or ``{}``."""
        if class_type not in self._classes:
            return {}
        live = self._with_live_lists(self._input_files(), {class_type: self._classes[class_type]})
        return {class_type: live[class_type]}


# --------------------------------------------------------------------------------------------------
# Values that flow between nodes


@dataclass(frozen=True, slots=True)
class ImageBatch:
    """A batch of 8-bit RGB images (ComfyUI's ``IMAGE``): ``frames[i]`` is ``height`` rows of ``width * 3`` bytes."""

    width: int
    height: int
    frames: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"ImageBatch(shape=[{len(self.frames)}, {self.height}, {self.width}, 3])"


@dataclass(frozen=True, slots=True)
class MaskBatch:
    """A batch of masks (ComfyUI's ``MASK``): one byte per pixel, 0 = 0.0 and 255 = 1.0."""

    width: int
    height: int
    frames: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"MaskBatch(shape=[{len(self.frames)}, {self.height}, {self.width}])"


@dataclass(frozen=True, slots=True)
class NodeResult:
    """What a node returns: one value per output slot, and the UI dict sent in ``executed`` (if any)."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None = None


class NodeContext(Protocol):
    """What the executor gives a running node."""

    node_id: str
    prompt_id: str
    output_dir: Path
    input_dir: Path
    temp_dir: Path

    def check_interrupt(self) -> None:
        """Raise the interrupt exception if ``POST /interrupt`` was received."""

    async def progress(self, value: float, total: float, preview_png: bytes | None = None) -> None:
        """Report progress like ComfyUI's ``ProgressBar`` (checks for an interrupt first)."""

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise the interrupt exception as soon as an interrupt arrives."""


NodeFunction = Callable[[NodeContext, dict[str, Any]], Awaitable[NodeResult]]


class UnidentifiedImageError(OSError):
    """Raised by LoadImage for a file that is not an image; reported as ``PIL.UnidentifiedImageError``."""


UnidentifiedImageError.__module__ = "PIL"


# --------------------------------------------------------------------------------------------------
# Paths, as ComfyUI's folder_paths does them


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """Split ``"x.png [output]"`` into ``("x.png", "output")``; plain names give ``(name, None)``."""
    for kind in ("output", "input", "temp"):
        suffix = f"[{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix) - 1], kind
    return name, None


def resolve_annotated_file(name: Any, dirs: dict[str, Path], default: str = "input") -> Path | None:
    """Resolve a LoadImage value (``"x.png"``, ``"sub/x.png"``, ``"x.png [output]"``) to a path.

    Returns ``None`` when the name is not a string or points outside its base directory (the test
    server is stricter than ComfyUI there: it never reads files outside its own folders).
    """
    if not isinstance(name, str) or not name:
        return None
    plain, kind = annotated_filepath(name)
    base = dirs[kind or default]
    path = os.path.abspath(os.path.join(base, plain))
    if os.path.commonpath((str(base), path)) != str(base):
        return None
    return Path(path)


class _SavePath:
    """Where SaveImage writes: folder, base name, next counter and the subfolder reported to clients."""

    def __init__(self, folder: str, filename: str, counter: int, subfolder: str) -> None:
        self.folder = folder
        self.filename = filename
        self.counter = counter
        self.subfolder = subfolder


def _expand_prefix_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": str(now.tm_mon).zfill(2),
        "%day%": str(now.tm_mday).zfill(2),
        "%hour%": str(now.tm_hour).zfill(2),
        "%minute%": str(now.tm_min).zfill(2),
        "%second%": str(now.tm_sec).zfill(2),
    }
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


def save_image_path(prefix: str, output_dir: Path, width: int, height: int) -> _SavePath:
    """ComfyUI's ``get_save_image_path``: resolve subfolder and the next ``_NNNNN_`` counter.

    The counter continues after the highest existing ``{name}_{counter}_`` file in the folder, so it
    survives restarts. A prefix that leaves the output folder raises ``Exception`` with ComfyUI's text.
    """
    if "%" in prefix:
        prefix = _expand_prefix_vars(prefix, width, height)
    base = str(output_dir)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    folder = os.path.join(base, subfolder)
    common = os.path.commonpath((base, os.path.abspath(folder)))
    if common != base:
        raise Exception(  # ComfyUI raises a bare Exception; clients see its type name
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {base}"
            f"\n         commonpath: {common}"
        )
    counter = 1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        names = []
    prefix_len = len(filename)
    wanted = os.path.normcase(filename)
    for name in names:
        head = name[: prefix_len + 1]
        if os.path.normcase(head[:-1]) != wanted or head[-1:] != "_":
            continue
        try:
            digits = int(name[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        counter = max(counter, digits + 1)
    return _SavePath(folder, filename, counter, subfolder)


# --------------------------------------------------------------------------------------------------
# Node implementations


def _check_size(width: int, height: int, batch: int) -> None:
    for dim in (batch, height, width):
        if dim < 0:
            raise RuntimeError(
                f"Trying to create tensor with negative dimension {dim}: [{batch}, {height}, {width}, 1]"
            )
    if width * height * batch > MAX_PIXELS:
        raise RuntimeError(
            f"hotfolder.testing refuses to build a {batch}x{width}x{height} image "
            f"(more than {MAX_PIXELS} pixels); use smaller test images"
        )


async def empty_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """EmptyImage: a batch filled with ``color`` (0xRRGGBB)."""
    width, height = int(inputs["width"]), int(inputs["height"])
    batch, color = int(inputs["batch_size"]), int(inputs["color"])
    _check_size(width, height, batch)

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
        _check_size(decoded.width, decoded.height, 1)
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


# --------------------------------------------------------------------------------------------------
# Stand-ins for the model nodes: the classic text-to-image graph runs, and draws a deterministic pattern


#: The model files the test server lists, and "loads" as stand-ins: a tiny SD1.5 name, and the file name
#: the classic SD1.5 workflows (and hotfolder's txt2img example) use by default.
STAND_IN_CHECKPOINTS = ("tiny_sd15_random.safetensors", "v1-5-pruned-emaonly.safetensors")


@dataclass(frozen=True, slots=True)
class StandInModel:
    """What a stand-in loader outputs (``MODEL``, ``CLIP``, ``VAE``, ``CLIP_VISION``, ``HOOKS``): the
    file it stands for and the LoRAs applied to it. No weights: the sampler draws from these names."""

    kind: str
    name: str
    loras: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        loras = "".join(f" + {name} x{strength:g}" for name, strength in self.loras)
        return f"<stand-in {self.kind} {self.name}{loras}>"


@dataclass(frozen=True, slots=True)
class Conditioning:
    """A stand-in ``CONDITIONING``: the encoded text and the CLIP that encoded it."""

    text: str
    clip: str

    def __str__(self) -> str:
        return f"<stand-in CONDITIONING {self.text!r}>"


@dataclass(frozen=True, slots=True)
class Latent:
    """A stand-in ``LATENT``: the image size in pixels and, once sampled, one small RGB picture per batch
    item at 1/8 of the size (``None``: an empty latent, decoded as grey)."""

    width: int
    height: int
    batch: int
    frames: tuple[bytes, ...] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return max(1, (self.width + 7) // 8), max(1, (self.height + 7) // 8)

    def __str__(self) -> str:
        return f"<stand-in LATENT [{self.batch}, 4, {self.grid[1]}, {self.grid[0]}]>"


#: class_type -> (the input naming the model file, the output kinds), for the loaders that run as stand-ins.
STAND_IN_LOADERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ("ckpt_name", ("MODEL", "CLIP", "VAE")),
    "CheckpointLoader": ("ckpt_name", ("MODEL", "CLIP", "VAE")),
    "ImageOnlyCheckpointLoader": ("ckpt_name", ("MODEL", "CLIP_VISION", "VAE")),
    "unCLIPCheckpointLoader": ("ckpt_name", ("MODEL", "CLIP", "VAE", "CLIP_VISION")),
    "CreateHookModelAsLora": ("ckpt_name", ("HOOKS",)),
    "CreateHookModelAsLoraModelOnly": ("ckpt_name", ("HOOKS",)),
    "VAELoader": ("vae_name", ("VAE",)),
}


def _stand_in_loader(input_name: str, kinds: tuple[str, ...]) -> NodeFunction:
    async def load(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
        """A model loader: one stand-in per output, named after the file (validation checked the name)."""
        name = str(inputs[input_name])
        return NodeResult(tuple(StandInModel(kind, name) for kind in kinds))

    return load


def _with_lora(model: Any, name: str, strength: float) -> Any:
    if not isinstance(model, StandInModel):
        raise TypeError(f"expected a stand-in model, got {type(model).__name__}")
    return StandInModel(model.kind, model.name, (*model.loras, (name, strength)))


async def lora_loader(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """LoraLoader: the model and CLIP, with the LoRA noted (it changes what the sampler draws)."""
    name = str(inputs["lora_name"])
    return NodeResult((_with_lora(inputs["model"], name, float(inputs["strength_model"])),
                       _with_lora(inputs["clip"], name, float(inputs["strength_clip"]))))


async def lora_loader_model_only(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """LoraLoaderModelOnly: the model with the LoRA noted."""
    return NodeResult((_with_lora(inputs["model"], str(inputs["lora_name"]), float(inputs["strength_model"])),))


async def clip_text_encode(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """CLIPTextEncode: keeps the text, for the sampler to draw from."""
    return NodeResult((Conditioning(str(inputs["text"]), str(inputs["clip"])),))


async def empty_latent_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """EmptyLatentImage: an empty latent of ``width`` x ``height`` pixels, ``batch_size`` items."""
    width, height, batch = int(inputs["width"]), int(inputs["height"]), int(inputs["batch_size"])
    _check_size(width, height, batch)
    return NodeResult((Latent(width, height, batch),))


def _gradient(width: int, height: int, digest: bytes) -> bytes:
    """A ``width`` x ``height`` RGB picture: four corner colours taken from ``digest``, blended."""
    corners = [digest[i:i + 3] for i in (0, 3, 6, 9)]
    rows = []
    for y in range(height):
        fy = y / (height - 1) if height > 1 else 0.0
        left = [a + (b - a) * fy for a, b in zip(corners[0], corners[2], strict=True)]
        right = [a + (b - a) * fy for a, b in zip(corners[1], corners[3], strict=True)]
        row = bytearray()
        for x in range(width):
            fx = x / (width - 1) if width > 1 else 0.0
            row += bytes(int(a + (b - a) * fx) for a, b in zip(left, right, strict=True))
        rows.append(bytes(row))
    return b"".join(rows)


async def ksampler(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """KSampler: reports a progress step per ``steps`` (as ComfyUI does) and "samples" a picture that
    depends only on the model, LoRAs, prompts, seed and settings: the same inputs give the same pixels."""
    latent: Latent = inputs["latent_image"]
    if not isinstance(latent, Latent):
        raise TypeError(f"latent_image: expected a latent, got {type(latent).__name__}")
    steps = int(inputs["steps"])
    recipe = json.dumps([str(inputs["model"]), str(inputs["positive"]), str(inputs["negative"]), inputs["seed"],
                         steps, inputs["cfg"], inputs["sampler_name"], inputs["scheduler"], inputs["denoise"]],
                        default=str)
    for step in range(steps):
        await ctx.progress(step + 1, steps)
    width, height = latent.grid

    def sample() -> tuple[bytes, ...]:
        return tuple(_gradient(width, height, hashlib.sha256(f"{recipe}/{i}".encode()).digest())
                     for i in range(latent.batch))

    return NodeResult((Latent(latent.width, latent.height, latent.batch, await asyncio.to_thread(sample)),))


def _upscale(frame: bytes, grid: tuple[int, int], width: int, height: int) -> bytes:
    """Blow a latent-sized picture up 8 times (nearest neighbour), cut to ``width`` x ``height``."""
    columns, lines = grid
    rows = []
    for y in range(lines):
        line = frame[y * columns * 3:(y + 1) * columns * 3]
        row = b"".join(line[x * 3:x * 3 + 3] * 8 for x in range(columns))[: width * 3]
        rows += [row] * 8
    return b"".join(rows[:height])


async def vae_decode(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """VAEDecode: the sampled latent as a full-size image (an empty latent decodes to grey)."""
    latent: Latent = inputs["samples"]
    if not isinstance(latent, Latent):
        raise TypeError(f"samples: expected a latent, got {type(latent).__name__}")

    def decode() -> ImageBatch:
        if latent.frames is None:
            grey = bytes((128, 128, 128)) * (latent.width * latent.height)
            return ImageBatch(latent.width, latent.height, tuple(grey for _ in range(latent.batch)))
        return ImageBatch(latent.width, latent.height,
                          tuple(_upscale(f, latent.grid, latent.width, latent.height) for f in latent.frames))

    return NodeResult((await asyncio.to_thread(decode),))


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
    **{class_type: _stand_in_loader(*spec) for class_type, spec in STAND_IN_LOADERS.items()},
    "LoraLoader": lora_loader,
    "LoraLoaderModelOnly": lora_loader_model_only,
    "CLIPTextEncode": clip_text_encode,
    "EmptyLatentImage": empty_latent_image,
    "KSampler": ksampler,
    "VAEDecode": vae_decode,
}


def file_fingerprint(path: Path | None) -> str | None:
    """LoadImage's ``IS_CHANGED``: the SHA-256 of the file, or ``None`` if it cannot be read."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
