"""Media facts of an output file: kind, format, size, frame rate, frame count and duration.

:func:`probe` reads them from the file's header and container structure, never decoding a frame:
PNG IHDR (APNG acTL/fcTL), JPEG SOF, GIF screen descriptor and blocks, WebP VP8/VP8L/VP8X (ANIM/ANMF),
ISO BMFF boxes (MP4, MOV, M4A, AVIF: mvhd, tkhd, mdhd, hdlr, stts, stsz, ispe), EBML (WebM, Matroska:
Info and Tracks), WAV fmt/data, FLAC STREAMINFO, BMP; Ogg (Opus) and MP3 by format only. The
server's ``metadata`` for the output entry (ComfyUI 0.4x: ``kind``, ``width``, ``height``, ``duration``,
``fps``, ``frame_count``) wins where it gives a sane value; the header fills the rest, and says whether
a GIF, WebP or PNG is animated.

The walkers are written here because no small, kept, pure-Python library reads these facts:
pymediainfo needs libmediainfo, PyAV needs FFmpeg's libraries, hachoir (2.8 MB) gives no frame rate
or frame count for MP4 or Matroska, pymp4 and enzyme cover one container each and are barely kept,
tinytag and mutagen read audio only; Pillow is optional in hotfolder, and its WebP ``n_frames`` reads
the whole file. Hard bounds: at most ``MAX_READ`` bytes read and ``MAX_STEPS`` boxes, elements, chunks
or blocks per file; a size field past its parent or past EOF is clipped, one too small stops the walk.
A malformed or truncated file gives partial facts (None fields), never an exception; only an OSError
from opening or reading the file reaches the caller.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_READ = 4 * 1024 * 1024
MAX_STEPS = 300_000
KINDS = ("image", "video", "animation", "audio", "other")

# What a malformed file can raise while its fields are unpacked; anything else is a bug, logged.
_MALFORMED = (struct.error, ValueError, IndexError, OverflowError, ZeroDivisionError, UnicodeDecodeError)


@dataclass
class MediaFacts:
    """What the sidecar says about one output file; None where the file does not tell."""

    kind: str = "other"
    format: str | None = None
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    frame_count: int | None = None
    duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The facts without the None fields (the sidecar's ``media`` object)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


def probe(path: str | os.PathLike[str], metadata: Any = None) -> MediaFacts:
    """The media facts of the file at ``path``, with the server's ``metadata`` dict when given.

    Raises OSError when the file cannot be opened or read; any malformed content gives partial facts.
    """
    facts = MediaFacts()
    with open(path, "rb", buffering=0) as fh:
        source = _Source(fh)
        try:
            _parse(source, facts)
        except (_Stop, *_MALFORMED):
            pass
        except OSError:
            raise
        except Exception:  # a bug here must not fail the job: the facts are a courtesy
            log.warning("media: unexpected error reading %s; its facts may be partial", path, exc_info=True)
    if facts.format is None:
        facts.format = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or None
    _merge_server(facts, metadata)
    return _cleaned(facts)


class _Stop(Exception):
    """A bound was hit or the data ended: stop reading, keep what was found."""


class _Source:
    """Positioned reads from an open file, counted against MAX_READ and MAX_STEPS."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size
        self.spent = 0
        self.steps = 0

    def peek(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer at EOF, none past it)."""
        n = min(n, self.size - offset)
        if offset < 0 or n <= 0:
            return b""
        if self.spent + n > MAX_READ:
            raise _Stop
        self.spent += n
        self.fh.seek(offset)
        data = b""
        while len(data) < n:
            chunk = self.fh.read(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def need(self, offset: int, n: int) -> bytes:
        """Exactly ``n`` bytes at ``offset``, else stop (truncated file)."""
        data = self.peek(offset, n)
        if len(data) != n:
            raise _Stop
        return data

    def tick(self) -> None:
        """Count one structural step; stop when a file has too many."""
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Stop


def _parse(src: _Source, f: MediaFacts) -> None:
    """Recognise the format by its magic bytes and run its walker."""
    head = src.peek(0, 16)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        _png(src, f)
    elif head.startswith(b"\xff\xd8\xff"):
        _jpeg(src, f)
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        _gif(src, f)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        _webp(src, f)
    elif head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        _wav(src, f)
    elif head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        _isobmff(src, f)
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        _ebml(src, f)
    elif head.startswith(b"fLaC"):
        _flac(src, f)
    elif head.startswith(b"OggS"):
        f.kind, f.format = "audio", "opus" if src.peek(28, 8) == b"OpusHead" else "ogg"
    elif head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        f.kind, f.format = "audio", "mp3"
    elif head.startswith(b"BM") and len(head) >= 2:
        _bmp(src, f)


# --- still and animated images ---------------------------------------------------------------------


def _png(src: _Source, f: MediaFacts) -> None:
    """IHDR for the size; acTL makes it an APNG, whose fcTL chunks give the frame delays."""
    f.kind, f.format = "image", "png"
    pos, frames, delay = 8, None, 0.0
    while pos + 8 <= src.size:
        src.tick()
        length, ctype = struct.unpack(">I4s", src.need(pos, 8))
        if ctype == b"IHDR":
            f.width, f.height = struct.unpack(">II", src.need(pos + 8, 8))
        elif ctype == b"acTL":
            frames = struct.unpack(">I", src.need(pos + 8, 4))[0]
            if frames > 1:
                f.kind, f.frame_count = "animation", frames
        elif ctype == b"fcTL" and frames:
            num, den = struct.unpack(">HH", src.need(pos + 8 + 20, 4))
            delay += num / (den or 100)
            f.duration = delay
        elif ctype == b"IEND" or (ctype == b"IDAT" and not frames):
            break
        pos += 12 + length
    if f.kind == "animation" and f.duration and f.frame_count:
        f.frame_rate = f.frame_count / f.duration


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(src: _Source, f: MediaFacts) -> None:
    """Walk the markers to the first SOFn, which holds the height and width."""
    f.kind, f.format = "image", "jpeg"
    pos = 2
    while True:
        src.tick()
        if src.need(pos, 1) != b"\xff":
            return
        marker = src.need(pos + 1, 1)[0]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no SOF before the data
            return
        length = struct.unpack(">H", src.need(pos + 2, 2))[0]
        if marker in _SOF:
            f.height, f.width = struct.unpack(">HH", src.need(pos + 5, 4))
            return
        if length < 2:
            return
        pos += 2 + length


def _gif(src: _Source, f: MediaFacts) -> None:
    """Logical screen size, then the blocks: one image descriptor per frame, delays from the GCEs."""
    f.kind, f.format = "image", "gif"
    f.width, f.height, packed = struct.unpack("<HHB", src.need(6, 5))
    pos = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
    frames, centis = 0, 0
    while True:
        src.tick()
        block = src.need(pos, 1)[0]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            if src.need(pos + 1, 1)[0] == 0xF9:
                centis += struct.unpack("<H", src.need(pos + 4, 2))[0]
            pos = _gif_subblocks(src, pos + 2)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, data sub-blocks
            frames += 1
            local = src.need(pos + 9, 1)[0]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            pos = _gif_subblocks(src, pos + 1)
        else:
            break
    if frames > 1:
        f.kind, f.frame_count = "animation", frames
        f.duration = centis / 100
        f.frame_rate = frames / f.duration if centis else None


def _gif_subblocks(src: _Source, pos: int) -> int:
    """The offset after the sub-block chain starting at ``pos`` (each: a length byte and its data)."""
    while True:
        src.tick()
        n = src.need(pos, 1)[0]
        pos += 1 + n
        if n == 0:
            return pos


def _riff_chunks(src: _Source, start: int, end: int):
    """(fourcc, data offset, data size) of the RIFF chunks between start and end."""
    pos = start
    while pos + 8 <= end:
        src.tick()
        fourcc, size = struct.unpack("<4sI", src.need(pos, 8))
        yield fourcc, pos + 8, size
        pos += 8 + size + (size & 1)


def _webp(src: _Source, f: MediaFacts) -> None:
    """VP8 / VP8L / VP8X for the size; ANMF chunks count the frames and add their durations."""
    f.kind, f.format = "image", "webp"
    frames, millis = 0, 0
    for fourcc, at, _size in _riff_chunks(src, 12, src.size):
        if fourcc == b"VP8X":
            flags, w, h = struct.unpack("<B3x3s3s", src.need(at, 10))
            f.width, f.height = _u24(w) + 1, _u24(h) + 1
            if not flags & 0x02:  # no animation flag: the rest is one still image
                return
        elif fourcc == b"VP8 " and f.width is None:
            w, h = struct.unpack("<HH", src.need(at + 6, 4))
            f.width, f.height = w & 0x3FFF, h & 0x3FFF
            return
        elif fourcc == b"VP8L" and f.width is None:
            bits = struct.unpack("<I", src.need(at + 1, 4))[0]
            f.width, f.height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            return
        elif fourcc == b"ANMF":
            frames += 1
            millis += _u24(src.need(at + 12, 3))
            f.kind, f.frame_count, f.duration = "animation", frames, millis / 1000
    if frames and millis:
        f.frame_rate = frames * 1000 / millis


def _bmp(src: _Source, f: MediaFacts) -> None:
    """BITMAPINFOHEADER width and height (height negative for top-down rows)."""
    f.kind, f.format = "image", "bmp"
    w, h = struct.unpack("<ii", src.need(18, 8))
    f.width, f.height = abs(w), abs(h)


def _u24(b: bytes) -> int:
    return b[0] | b[1] << 8 | b[2] << 16


# --- ISO base media (MP4, MOV, M4A, AVIF) ----------------------------------------------------------

_BRANDS = {b"qt  ": "mov", b"M4A ": "m4a", b"M4V ": "m4v", b"avif": "avif", b"avis": "avif"}
_MAX_DEPTH = 8


def _boxes(src: _Source, start: int, end: int):
    """(type, data start, data end) of the boxes between start and end; data end is clipped to end."""
    pos = start
    while pos + 8 <= end:
        src.tick()
        size, btype = struct.unpack(">I4s", src.need(pos, 8))
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", src.need(pos + 8, 8))[0], 16
        elif size == 0:  # to the end of the enclosing box
            size = end - pos
        if size < head:
            return
        yield btype, pos + head, min(pos + size, end)
        pos += size


def _isobmff(src: _Source, f: MediaFacts) -> None:
    """ftyp for the format, moov for the tracks (wherever it sits), meta/ispe for an AVIF's size."""
    f.format, brand = "mov", b""
    for btype, a, b in _boxes(src, 0, src.size):
        if btype == b"ftyp":
            brand = src.need(a, 4)
            f.format = _BRANDS.get(brand, "3gp" if brand.startswith(b"3g") else "mp4")
            if f.format == "avif":
                f.kind = "image"
        elif btype == b"moov":
            _moov(src, a, b, f)
            return
        elif btype == b"meta" and f.format == "avif":
            _avif_meta(src, a + 4, b, f, 0)  # meta is a full box: version and flags first
            if brand == b"avif" and f.width is not None:
                return  # a still AVIF has no moov


def _avif_meta(src: _Source, a: int, b: int, f: MediaFacts, depth: int) -> None:
    """The first ispe (image spatial extent) under meta/iprp/ipco."""
    for btype, s, e in _boxes(src, a, b):
        if btype in (b"iprp", b"ipco") and depth < _MAX_DEPTH:
            _avif_meta(src, s, e, f, depth + 1)
        elif btype == b"ispe":
            f.width, f.height = struct.unpack(">II", src.need(s + 4, 8))
        if f.width is not None:
            return


def _moov(src: _Source, a: int, b: int, f: MediaFacts) -> None:
    """mvhd and every trak; the first video track (else the first sound track) gives the facts."""
    movie: dict[str, Any] = {}
    tracks: list[dict[str, Any]] = []
    try:
        for btype, s, e in _boxes(src, a, b):
            if btype == b"mvhd":
                movie.update(_time_header(src, s, created_fields=2))
            elif btype == b"trak":
                track: dict[str, Any] = {}
                tracks.append(track)
                _trak(src, s, e, track, 0)
    finally:
        _apply_tracks(f, movie, tracks)


_TRAK_CONTAINERS = (b"mdia", b"minf", b"stbl")


def _trak(src: _Source, a: int, b: int, track: dict[str, Any], depth: int) -> None:
    """Fill ``track`` from tkhd (size), hdlr (kind), mdhd (time), stts (delays) and stsz (samples)."""
    for btype, s, e in _boxes(src, a, b):
        if btype in _TRAK_CONTAINERS and depth < _MAX_DEPTH:
            _trak(src, s, e, track, depth + 1)
        elif btype == b"tkhd":
            version = src.need(s, 1)[0]
            at = s + (92 if version == 1 else 80)  # width and height end the box, 16.16 fixed point
            w, h = struct.unpack(">II", src.need(at - 4, 8))
            track["width"], track["height"] = w >> 16, h >> 16
        elif btype == b"hdlr":
            track.setdefault("handler", src.need(s + 8, 4))  # MOV: minf has a data handler too
        elif btype == b"mdhd":
            track.update(_time_header(src, s, created_fields=2))
        elif btype == b"stts":
            count = struct.unpack(">I", src.need(s + 4, 4))[0]
            if count * 8 <= min(e - s - 8, MAX_READ // 2):
                table = src.need(s + 8, count * 8)
                pairs = list(struct.iter_unpack(">II", table))
                track["samples"] = sum(n for n, _ in pairs)
                track["ticks"] = sum(n * d for n, d in pairs)
        elif btype == b"stsz":
            track.setdefault("samples", struct.unpack(">I", src.need(s + 8, 4))[0])


def _time_header(src: _Source, s: int, created_fields: int) -> dict[str, int]:
    """timescale and duration of an mvhd or mdhd (after version, flags, creation and change times)."""
    version = src.need(s, 1)[0]
    if version == 1:
        scale, duration = struct.unpack(">IQ", src.need(s + 4 + 8 * created_fields, 12))
    else:
        scale, duration = struct.unpack(">II", src.need(s + 4 + 4 * created_fields, 8))
    return {"timescale": scale, "duration": duration}


def _apply_tracks(f: MediaFacts, movie: dict[str, Any], tracks: list[dict[str, Any]]) -> None:
    """Facts from the first video track, else the first sound track, else the movie header."""
    video = [t for t in tracks if t.get("handler") in (b"vide", b"pict")]  # pict: AVIF image sequences
    sound = [t for t in tracks if t.get("handler") == b"soun"]
    track = (video or sound or [{}])[0]
    if video:
        f.kind = "animation" if f.format == "avif" else "video"
        f.width, f.height = track.get("width"), track.get("height")
    elif sound:
        f.kind = "audio"
    f.duration = _ratio(track.get("duration"), track.get("timescale")) or _ratio(
        movie.get("duration"), movie.get("timescale")
    )
    if video:
        f.frame_count = track.get("samples")
        ticks_per_frame = _ratio(track.get("ticks"), track.get("samples"))
        f.frame_rate = _ratio(track.get("timescale"), ticks_per_frame)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


# --- EBML (WebM, Matroska) -------------------------------------------------------------------------

_EBML_DOCTYPE, _SEGMENT, _INFO, _TRACKS, _CLUSTER = 0x4282, 0x18538067, 0x1549A966, 0x1654AE6B, 0x1F43B675
_TIMESCALE, _DURATION, _TRACK_ENTRY, _TRACK_TYPE = 0x2AD7B1, 0x4489, 0xAE, 0x83
_DEFAULT_DURATION, _VIDEO, _PIXEL_WIDTH, _PIXEL_HEIGHT = 0x23E383, 0xE0, 0xB0, 0xBA


def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-size integer at ``at``: (value, length); value None when all bits are set."""
    first = data[at]
    if first == 0:
        raise ValueError("EBML length over 8 bytes")
    length = 9 - first.bit_length()
    raw = int.from_bytes(data[at : at + length], "big")
    if len(data) < at + length:
        raise IndexError("EBML number cut off")
    if keep_marker:
        return raw, length
    value = raw & ((1 << (7 * length)) - 1)
    return (None if value == (1 << (7 * length)) - 1 else value), length


def _elements(src: _Source, start: int, end: int):
    """(id, data start, data end or None when the size is unknown) of the EBML elements in a master."""
    pos = start
    while pos < end:
        src.tick()
        head = src.peek(pos, 12)
        if not head:
            return
        eid, id_len = _vint(head, 0, keep_marker=True)
        size, size_len = _vint(head, id_len, keep_marker=False)
        data = pos + id_len + size_len
        if size is None:
            yield eid, data, None
            return  # an unknown size can only be followed by walking its children
        yield eid, data, min(data + size, end)
        pos = data + size


def _ebml_uint(src: _Source, a: int, b: int) -> int:
    return int.from_bytes(src.need(a, min(b - a, 8)), "big")


def _ebml(src: _Source, f: MediaFacts) -> None:
    """DocType from the EBML header; Segment Info (timescale, duration) and Tracks (size, frame time)."""
    f.format = "mkv"
    for eid, a, b in _elements(src, 0, src.size):
        end = src.size if b is None else b
        if eid == 0x1A45DFA3:
            for cid, s, e in _elements(src, a, end):
                if cid == _EBML_DOCTYPE and e is not None and e - s <= 64:
                    f.format = "webm" if src.need(s, e - s).rstrip(b"\0") == b"webm" else "mkv"
        elif eid == _SEGMENT:
            _segment(src, a, end, f)
            return


def _segment(src: _Source, a: int, b: int, f: MediaFacts) -> None:
    """Walk the Segment's children until Info and Tracks are both read (Clusters are skipped by size)."""
    info: dict[str, Any] = {}
    track: dict[str, Any] = {}
    try:
        for eid, s, e in _elements(src, a, b):
            if eid == _INFO and e is not None:
                for cid, cs, ce in _elements(src, s, e):
                    if cid == _TIMESCALE and ce is not None:
                        info["scale"] = _ebml_uint(src, cs, ce)
                    elif cid == _DURATION and ce in (cs + 4, cs + 8):
                        info["duration"] = struct.unpack(">f" if ce - cs == 4 else ">d", src.need(cs, ce - cs))[0]
            elif eid == _TRACKS and e is not None:
                _tracks(src, s, e, track)
            if info and track:
                return
            if e is None:
                return
    finally:
        _apply_segment(f, info, track)


def _tracks(src: _Source, a: int, b: int, chosen: dict[str, Any]) -> None:
    """Fill ``chosen`` with the first video track entry, else the first audio one."""
    for eid, s, e in _elements(src, a, b):
        if eid != _TRACK_ENTRY or e is None:
            continue
        entry: dict[str, Any] = {}
        for cid, cs, ce in _elements(src, s, e):
            if ce is None:
                break
            if cid == _TRACK_TYPE:
                entry["type"] = _ebml_uint(src, cs, ce)
            elif cid == _DEFAULT_DURATION:
                entry["frame_ns"] = _ebml_uint(src, cs, ce)
            elif cid == _VIDEO:
                for vid, vs, ve in _elements(src, cs, ce):
                    if vid in (_PIXEL_WIDTH, _PIXEL_HEIGHT) and ve is not None:
                        entry["width" if vid == _PIXEL_WIDTH else "height"] = _ebml_uint(src, vs, ve)
        if entry.get("type") == 1:
            chosen.clear()
            chosen.update(entry)
            return
        if entry.get("type") == 2 and not chosen:
            chosen.update(entry)


def _apply_segment(f: MediaFacts, info: dict[str, Any], track: dict[str, Any]) -> None:
    """Matroska Duration counts TimecodeScale nanoseconds (default 1 ms)."""
    if "duration" in info:
        f.duration = info["duration"] * info.get("scale", 1_000_000) / 1e9
    if track.get("type") == 1:
        f.kind, f.width, f.height = "video", track.get("width"), track.get("height")
        f.frame_rate = _ratio(1e9, track.get("frame_ns"))
    elif track.get("type") == 2:
        f.kind = "audio"


# --- audio --------------------------------------------------------------------------------------------


def _wav(src: _Source, f: MediaFacts) -> None:
    """Duration is the data chunk's size over the fmt chunk's byte rate."""
    f.kind, f.format = "audio", "wav"
    byte_rate = None
    for fourcc, at, size in _riff_chunks(src, 12, src.size):
        if fourcc == b"fmt ":
            byte_rate = struct.unpack("<I", src.need(at + 8, 4))[0]
        elif fourcc == b"data":
            f.duration = _ratio(min(size, src.size - at), byte_rate)
            return


def _flac(src: _Source, f: MediaFacts) -> None:
    """STREAMINFO (the first metadata block): sample rate and total samples."""
    f.kind, f.format = "audio", "flac"
    info = src.need(8, 18)
    bits = int.from_bytes(info[10:18], "big")
    rate, samples = bits >> 44, bits & ((1 << 36) - 1)
    f.duration = _ratio(samples, rate)


# --- server metadata and cleaning ------------------------------------------------------------------


def _merge_server(f: MediaFacts, metadata: Any) -> None:
    """Take the server's sane values (ComfyUI's ``metadata`` keys) over the header's."""
    if not isinstance(metadata, dict):
        return
    for key, field in (("width", "width"), ("height", "height"), ("frame_count", "frame_count")):
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            setattr(f, field, value)
    for key, field in (("fps", "frame_rate"), ("duration", "duration")):
        value = metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            setattr(f, field, float(value))
    kind = metadata.get("kind")
    if f.kind == "other" and kind in KINDS:
        f.kind = kind


def _cleaned(f: MediaFacts) -> MediaFacts:
    """Zero, negative or absurd values become None; floats are rounded to what a sidecar needs."""
    for field in ("width", "height", "frame_count"):
        value = getattr(f, field)
        if not isinstance(value, int) or not 0 < value < 1 << 32:
            setattr(f, field, None)
    for field in ("frame_rate", "duration"):
        value = getattr(f, field)
        if isinstance(value, float | int) and math.isfinite(value):
            value = round(float(value), 6)  # rounded first: a value under a millionth is as good as none
        setattr(f, field, value if isinstance(value, float) and 0 < value < 1e9 else None)
    return f
