"""The values that flow between the test server's nodes, and what a running node may ask of the executor.

Images are kept as :class:`ImageBatch` (8-bit RGB rows per batch item) and masks as :class:`MaskBatch`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["MAX_PIXELS", "ImageBatch", "MaskBatch", "NodeContext", "NodeFunction", "NodeResult", "check_size"]

#: Largest image (width * height * batch) the nodes agree to build, to keep a shared test machine safe.
MAX_PIXELS = 4096 * 4096


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


def check_size(width: int, height: int, batch: int) -> None:
    """Refuse a negative dimension (as torch does) or an image over :data:`MAX_PIXELS` (to spare the machine)."""
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

