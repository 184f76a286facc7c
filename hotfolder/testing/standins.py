"""Stand-ins for the model nodes: the classic text-to-image graph runs without weights.

The checkpoint, VAE and LoRA loaders, ``CLIPTextEncode``, ``EmptyLatentImage``, ``KSampler`` and
``VAEDecode`` load nothing: the sampler reports its steps and draws a gradient that depends only on its
inputs (model, LoRAs, prompts, seed, settings), so the same inputs give the same pixels.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .values import ImageBatch, NodeContext, NodeFunction, NodeResult, check_size

__all__ = ["STAND_IN_CHECKPOINTS", "STAND_IN_NODES"]



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
    check_size(width, height, batch)
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



#: class_type -> implementation of every stand-in.
STAND_IN_NODES: dict[str, NodeFunction] = {
    **{class_type: _stand_in_loader(*spec) for class_type, spec in STAND_IN_LOADERS.items()},
    "LoraLoader": lora_loader,
    "LoraLoaderModelOnly": lora_loader_model_only,
    "CLIPTextEncode": clip_text_encode,
    "EmptyLatentImage": empty_latent_image,
    "KSampler": ksampler,
    "VAEDecode": vae_decode,
}
