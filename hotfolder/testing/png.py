"""A tiny PNG encoder and decoder built on :mod:`zlib` (no Pillow, no numpy).

The test server only needs 8-bit images: it writes RGB (or RGBA) PNGs for ``SaveImage`` and
``PreviewImage`` and reads uploaded PNGs for ``LoadImage``. Text chunks (``tEXt``, and ``iTXt`` for
text that is not Latin-1) carry the ``prompt`` and ``extra_pnginfo`` metadata the way ComfyUI embeds
them, so tests can check that metadata without an imaging library.

Supported on decode: bit depth 8, colour types 0 (grey), 2 (RGB), 3 (palette), 4 (grey + alpha) and
6 (RGBA), not interlaced. Anything else raises :class:`PNGError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

__all__ = [
    "PNG_SIGNATURE",
    "DecodedPNG",
    "PNGError",
    "decode_png",
    "encode_png",
    "read_png_size",
    "read_png_text",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CHANNELS_BY_COLOR_TYPE = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PNGError(ValueError):
    """The bytes are not a PNG this module can read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedPNG:
    """A decoded image: ``pixels`` holds ``height`` rows of ``width * channels`` bytes, top to bottom.

    ``channels`` is 3 (RGB) or 4 (RGBA); grey and palette images are expanded to one of the two.
    """

    width: int
    height: int
    channels: int
    pixels: bytes
    text: dict[str, str] = field(default_factory=dict)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _text_chunk(key: str, value: str) -> bytes:
    keyword = key.encode("latin-1", "replace")[:79]
    try:
        return _chunk(b"tEXt", keyword + b"\x00" + value.encode("latin-1"))
    except UnicodeEncodeError:
        # Like PIL's PngInfo.add_text: text that is not Latin-1 goes into an uncompressed iTXt chunk.
        payload = keyword + b"\x00\x00\x00" + b"\x00" + b"\x00" + value.encode("utf-8")
        return _chunk(b"iTXt", payload)


def encode_png(
    width: int,
    height: int,
    pixels: bytes,
    *,
    channels: int = 3,
    text: list[tuple[str, str]] | None = None,
    compress_level: int = 4,
) -> bytes:
    """Encode 8-bit RGB (``channels=3``) or RGBA (``channels=4``) rows into a PNG file.

    ``pixels`` is row-major, top row first, ``width * height * channels`` bytes. ``text`` entries are
    written as ``tEXt`` chunks before the image data, in order.
    """
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 or 4, not {channels!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"PNG dimensions must be positive, got {width}x{height}")
    stride = width * channels
    if len(pixels) != stride * height:
        raise ValueError(f"expected {stride * height} pixel bytes for {width}x{height}x{channels}, got {len(pixels)}")
    color_type = 2 if channels == 3 else 6
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    # Filter type 0 ("None") on every scanline: simple, and fast to decode again.
    raw = b"".join(b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(height))
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    for key, value in text or ():
        parts.append(_text_chunk(key, value))
    parts.append(_chunk(b"IDAT", zlib.compress(raw, compress_level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _iter_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise PNGError("not a PNG file (bad signature)")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise PNGError(f"truncated {kind!r} chunk")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR":
        raise PNGError("PNG has no IHDR chunk")
    return chunks


def read_png_size(data: bytes) -> tuple[int, int]:
    """Return ``(width, height)`` from the IHDR chunk."""
    chunks = _iter_chunks(data)
    width, height = struct.unpack(">II", chunks[0][1][:8])
    return width, height


def _decode_text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    if kind == b"tEXt":
        key, _, value = body.partition(b"\x00")
        return key.decode("latin-1"), value.decode("latin-1")
    if kind == b"zTXt":
        key, _, rest = body.partition(b"\x00")
        return key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    if kind == b"iTXt":
        key, _, rest = body.partition(b"\x00")
        compressed, _method = rest[0], rest[1]
        _lang, _, rest = rest[2:].partition(b"\x00")
        _translated, _, value = rest.partition(b"\x00")
        if compressed:
            value = zlib.decompress(value)
        return key.decode("latin-1"), value.decode("utf-8")
    return None


def read_png_text(data: bytes) -> dict[str, str]:
    """Return the text chunks (``tEXt``, ``zTXt``, ``iTXt``) of a PNG as a dict."""
    out: dict[str, str] = {}
    for kind, body in _iter_chunks(data):
        item = _decode_text(kind, body)
        if item is not None:
            out[item[0]] = item[1]
    return out


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> bytearray:
    out = bytearray(height * stride)
    prev = bytearray(stride)
    pos = 0
    for row in range(height):
        if pos + 1 + stride > len(raw):
            raise PNGError("image data is truncated")
        ftype = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        elif ftype != 0:
            raise PNGError(f"unknown scanline filter {ftype}")
        out[row * stride : (row + 1) * stride] = line
        prev = line
    return out


def decode_png(data: bytes) -> DecodedPNG:
    """Decode an 8-bit, non-interlaced PNG into RGB or RGBA rows."""
    chunks = _iter_chunks(data)
    width, height, depth, color_type, _comp, _filter, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8:
        raise PNGError(f"bit depth {depth} is not supported")
    if interlace:
        raise PNGError("interlaced PNGs are not supported")
    if color_type not in _CHANNELS_BY_COLOR_TYPE:
        raise PNGError(f"colour type {color_type} is not valid")
    if width == 0 or height == 0:
        raise PNGError("PNG has a zero dimension")
    palette = b""
    transparency = b""
    idat: list[bytes] = []
    text: dict[str, str] = {}
    for kind, body in chunks[1:]:
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            transparency = body
        else:
            item = _decode_text(kind, body)
            if item is not None:
                text[item[0]] = item[1]
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise PNGError(f"image data is corrupt: {err}") from err
    src_channels = _CHANNELS_BY_COLOR_TYPE[color_type]
    stride = width * src_channels
    rows = _unfilter(raw, height, stride, src_channels)
    if color_type == 2:
        return DecodedPNG(width=width, height=height, channels=3, pixels=bytes(rows), text=text)
    if color_type == 6:
        return DecodedPNG(width=width, height=height, channels=4, pixels=bytes(rows), text=text)
    if color_type == 0:
        rgb = bytearray(len(rows) * 3)
        rgb[0::3] = rows
        rgb[1::3] = rows
        rgb[2::3] = rows
        return DecodedPNG(width=width, height=height, channels=3, pixels=bytes(rgb), text=text)
    if color_type == 4:
        rgba = bytearray(width * height * 4)
        grey, alpha = rows[0::2], rows[1::2]
        rgba[0::4] = grey
        rgba[1::4] = grey
        rgba[2::4] = grey
        rgba[3::4] = alpha
        return DecodedPNG(width=width, height=height, channels=4, pixels=bytes(rgba), text=text)
    # colour type 3: palette indices, optional per-entry alpha in tRNS
    if not palette:
        raise PNGError("palette image without a PLTE chunk")
    entries = len(palette) // 3
    if transparency:
        table = [
            palette[i * 3 : i * 3 + 3] + bytes([transparency[i] if i < len(transparency) else 255])
            for i in range(entries)
        ]
        channels = 4
    else:
        table = [palette[i * 3 : i * 3 + 3] for i in range(entries)]
        channels = 3
    try:
        pixels = b"".join(table[index] for index in rows)
    except IndexError as err:
        raise PNGError("palette index out of range") from err
    return DecodedPNG(width=width, height=height, channels=channels, pixels=pixels, text=text)
