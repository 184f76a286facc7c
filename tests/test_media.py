"""hotfolder.media: media facts read from real files made in the test run, and from server metadata.

Images come from Pillow; video and audio from the ffmpeg binary of the imageio-ffmpeg wheel (those tests
skip when it is missing). Each fact is checked against what the encoder was told to produce, and the
image facts against Pillow's own reading. Generated cases truncate and flip bytes of every sample: the
probe never raises, never logs an unexpected error and returns within a bounded time.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hotfolder import media
from hotfolder.media import KINDS, probe

SIZE = (40, 30)
FRAMES = 5
FRAME_MS = 100
# Examples per generated test: the numbers below, or HOTFOLDER_HYPOTHESIS_EXAMPLES for a longer hunt.
_HUNT = int(os.environ.get("HOTFOLDER_HYPOTHESIS_EXAMPLES", "0") or 0)


def _ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None


FFMPEG = _ffmpeg()
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="no ffmpeg binary: install the test extra (imageio-ffmpeg) to make real mp4/webm files")

# name: (ffmpeg arguments after the input, width, height, fps, frames): what ffmpeg is told to produce.
VIDEOS = {
    "h264.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], 64, 48, 12.0, 24),
    "ntsc.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"], 80, 60, 30000 / 1001, 20),
    "h264.mov": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], 64, 48, 25.0, 10),
    "vp9.webm": (["-c:v", "libvpx-vp9", "-b:v", "100k"], 64, 48, 12.0, 24),
    "vp9.mkv": (["-c:v", "libvpx-vp9", "-b:v", "100k"], 48, 64, 8.0, 12),
    "ffmpeg.gif": ([], 64, 48, 10.0, 7),
}
AUDIO = {"tone.flac": 1.5, "tone.wav": 1.25, "tone.m4a": 2.0, "tone.opus": None, "tone.mp3": None}  # None: not read


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", SIZE, (i * 50, 255 - i * 50, 0)) for i in range(FRAMES)]


def _make_images(folder: Path) -> dict[str, Path]:
    frames = _frames()
    animated = {"save_all": True, "append_images": frames[1:], "duration": FRAME_MS, "loop": 0}
    out = {}
    for name, kwargs in {
        "still.png": {}, "still.jpg": {}, "still.gif": {}, "still.bmp": {}, "lossy.webp": {"quality": 50},
        "lossless.webp": {"lossless": True}, "anim.gif": animated, "anim.png": animated, "anim.webp": animated,
    }.items():
        frames[0].save(folder / name, **kwargs)
        out[name] = folder / name
    return out


def _run_ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=60)


def _make_media(folder: Path) -> dict[str, Path]:
    out = {}
    for name, (codec, width, height, fps, frames) in VIDEOS.items():
        rate = "30000/1001" if abs(fps - 30000 / 1001) < 1e-9 else str(fps)
        _run_ffmpeg("-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={rate}",
                    "-frames:v", str(frames), *codec, str(folder / name))
        out[name] = folder / name
    for name, seconds in AUDIO.items():
        _run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds or 1}", str(folder / name))
        out[name] = folder / name
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if FFMPEG is None:
        pytest.skip("no ffmpeg binary: install the test extra (imageio-ffmpeg) to make real mp4/webm files")
    return _make_media(tmp_path_factory.mktemp("media"))


# --- facts per format ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fmt", [
    ("still.png", "png"), ("still.jpg", "jpeg"), ("still.gif", "gif"), ("still.bmp", "bmp"),
    ("lossy.webp", "webp"), ("lossless.webp", "webp"),
])
def test_still_images_give_their_size(images: dict[str, Path], name: str, fmt: str) -> None:
    facts = probe(images[name])
    with Image.open(images[name]) as pillow:
        assert pillow.size == SIZE
    assert facts.to_dict() == {"kind": "image", "format": fmt, "width": SIZE[0], "height": SIZE[1]}


@pytest.mark.parametrize("name,fmt", [("anim.gif", "gif"), ("anim.png", "png"), ("anim.webp", "webp")])
def test_animations_give_frames_rate_and_duration(images: dict[str, Path], name: str, fmt: str) -> None:
    facts = probe(images[name])
    with Image.open(images[name]) as pillow:
        assert pillow.n_frames == FRAMES
    assert facts == media.MediaFacts(
        kind="animation", format=fmt, width=SIZE[0], height=SIZE[1],
        frame_rate=1000 / FRAME_MS, frame_count=FRAMES, duration=FRAMES * FRAME_MS / 1000)


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_videos_give_what_ffmpeg_was_told(videos: dict[str, Path], name: str) -> None:
    _codec, width, height, fps, frames = VIDEOS[name]
    facts = probe(videos[name])
    assert facts.kind == ("animation" if name.endswith(".gif") else "video")
    assert facts.format == {"webm": "webm", "mkv": "mkv", "mp4": "mp4", "mov": "mov", "gif": "gif"}[name[-4:].lstrip(".")]
    assert (facts.width, facts.height) == (width, height)
    assert facts.frame_rate == pytest.approx(fps, rel=1e-3)
    assert abs(facts.duration - frames / fps) <= 1 / fps, facts
    if name.endswith((".webm", ".mkv")):
        assert facts.frame_count is None  # Matroska keeps no frame count in its headers
    else:
        assert facts.frame_count == frames


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(AUDIO))
def test_audio_gives_its_duration(videos: dict[str, Path], name: str) -> None:
    facts = probe(videos[name])
    assert (facts.kind, facts.format, facts.width, facts.frame_rate) == ("audio", name.split(".")[1], None, None)
    if AUDIO[name] is None:  # Ogg and MP3 keep no duration in a header: it takes a scan
        assert facts.duration is None
    else:
        assert facts.duration == pytest.approx(AUDIO[name], abs=0.05)  # AAC adds its priming samples


def test_unknown_content_is_other_with_the_extension_as_format(tmp_path: Path) -> None:
    path = tmp_path / "mesh.GLB"
    path.write_bytes(b"glTF" + bytes(40))
    assert probe(path).to_dict() == {"kind": "other", "format": "glb"}
    (tmp_path / "empty").write_bytes(b"")
    assert probe(tmp_path / "empty").to_dict() == {"kind": "other"}


def test_an_unreadable_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "gone.mp4")
    with pytest.raises(IsADirectoryError):
        probe(tmp_path)


# --- the server's metadata ---------------------------------------------------------------------------


def test_server_metadata_wins_where_it_is_sane(images: dict[str, Path]) -> None:
    # ComfyUI 0.4x's shape (app/assets/services/video_metadata.py): kind, width, height, duration, fps, frame_count.
    server = {"kind": "video", "width": 640, "height": 480, "duration": 3.5, "fps": 24, "frame_count": 84}
    facts = probe(images["anim.webp"], server)
    assert facts.to_dict() == {"kind": "animation", "format": "webp", "width": 640, "height": 480,
                               "frame_rate": 24.0, "frame_count": 84, "duration": 3.5}


@pytest.mark.parametrize("bad", [
    {"width": True, "height": -1, "fps": float("nan"), "duration": "2", "frame_count": 0},
    {"width": 1.5, "height": None, "fps": float("inf"), "duration": -3, "frame_count": "84"},
    ["width", 640], "metadata", None,
])
def test_insane_server_values_leave_the_header_facts(images: dict[str, Path], bad: object) -> None:
    assert probe(images["anim.gif"], bad) == probe(images["anim.gif"])


def test_server_kind_is_used_only_when_the_header_says_nothing(tmp_path: Path, images: dict[str, Path]) -> None:
    path = tmp_path / "clip.xyz"
    path.write_bytes(bytes(100))
    assert probe(path, {"kind": "video", "width": 8}).to_dict() == {"kind": "video", "format": "xyz", "width": 8}
    assert probe(images["anim.gif"], {"kind": "image"}).kind == "animation"  # the server's kind is by MIME type
    assert probe(path, {"kind": "hologram"}).kind == "other"


# --- bounds ------------------------------------------------------------------------------------------


def test_the_step_bound_gives_partial_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [Image.new("L", (16, 16), i) for i in range(60)]
    frames[0].save(tmp_path / "long.gif", save_all=True, append_images=frames[1:], duration=40)
    assert probe(tmp_path / "long.gif").frame_count == 60
    monkeypatch.setattr(media, "MAX_STEPS", 50)
    facts = probe(tmp_path / "long.gif")
    assert (facts.width, facts.height, facts.frame_count, facts.duration) == (16, 16, None, None)


@needs_ffmpeg
def test_boxes_are_skipped_by_seeking_not_read(videos: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    data = videos["h264.mp4"].read_bytes()
    ftyp = struct.unpack(">I", data[:4])[0]
    padding = 24 * 1024 * 1024
    big = tmp_path / "padded.mp4"
    big.write_bytes(data[:ftyp] + struct.pack(">I4s", padding + 8, b"free") + bytes(padding) + data[ftyp:])
    monkeypatch.setattr(media, "MAX_READ", 64 * 1024)
    assert probe(big) == probe(videos["h264.mp4"])


@needs_ffmpeg
def test_the_read_bound_gives_partial_facts(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "MAX_READ", 100)  # the whole walk of this file reads about 200 bytes
    facts = probe(videos["h264.mp4"])
    assert (facts.kind, facts.format, facts.frame_count, facts.frame_rate, facts.duration) == ("other", "mp4", None, None, 2.0)


@pytest.mark.parametrize("blob", [
    struct.pack(">I4s4s", 16, b"ftyp", b"isom") + bytes(4) + struct.pack(">I4sQ", 1, b"moov", 2**63),
    struct.pack(">I4s4s", 16, b"ftyp", b"isom") + bytes(4) + struct.pack(">I4s", 3, b"moov") + bytes(64),
    struct.pack(">I4s4s", 12, b"ftyp", b"isom") + struct.pack(">I4s", 0, b"moov") + struct.pack(">I4s", 0, b"trak") * 9,
    b"\x1a\x45\xdf\xa3\x80" + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + b"\x15\x49\xa9\x66\x00" * 20,
    b"\x1a\x45\xdf\xa3\x00\x00",
    b"RIFF\xff\xff\xff\xffWEBPVP8X\xff\xff\xff\xff",
    b"GIF89a\x10\x00\x10\x00\xf7\x00\x00",
    b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 0xFFFFFFF0, b"IHDR"),
    b"\xff\xd8\xff\xe0\x00\x00",
])
def test_malformed_headers_give_partial_facts(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "x"
    path.write_bytes(blob)
    facts = probe(path)
    assert facts.kind in KINDS and facts.format


def test_deeply_nested_boxes_stop_at_the_depth_bound(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nested = b""
    for _ in range(3000):
        nested = struct.pack(">I4s", 8 + len(nested), b"mdia") + nested
    trak = struct.pack(">I4s", 8 + len(nested), b"trak") + nested
    path = tmp_path / "deep.mp4"
    path.write_bytes(struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0) + struct.pack(">I4s", 8 + len(trak), b"moov") + trak)
    assert probe(path).to_dict() == {"kind": "other", "format": "mp4"}
    assert not caplog.records


# --- generated: truncations and byte flips ---------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    found = {name: path.read_bytes() for name, path in images.items()}
    if FFMPEG is not None:
        found.update({name: path.read_bytes() for name, path in _make_media(tmp_path_factory.mktemp("fuzz")).items()})
    return found


def _probe_bounded(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    started = time.monotonic()
    facts = probe(path)
    assert time.monotonic() - started < 2.0, "probe took too long"
    assert not [r for r in caplog.records if r.name == "hotfolder.media"], "an unexpected error was logged"
    assert facts.kind in KINDS
    for value in (facts.width, facts.height, facts.frame_count):
        assert value is None or (isinstance(value, int) and value > 0)
    for value in (facts.frame_rate, facts.duration):
        assert value is None or (math.isfinite(value) and value > 0)


@settings(max_examples=_HUNT or 40)
@given(data=st.data())
def test_truncated_files_never_raise(samples: dict[str, bytes], tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture, data: st.DataObject) -> None:
    caplog.set_level(logging.WARNING, logger="hotfolder.media")
    name = data.draw(st.sampled_from(sorted(samples)))
    blob = samples[name]
    cut = data.draw(st.integers(0, len(blob)))
    path = tmp_path / "cut"
    path.write_bytes(blob[:cut])
    _probe_bounded(path, caplog)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg makes the Matroska sample")
@pytest.mark.parametrize(("at", "value"), [(283, 0), (351, 1)])
def test_a_flipped_matroska_header_never_gives_a_zero_duration_or_frame_rate(
        samples: dict[str, bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture, at: int, value: int) -> None:
    """Found by test_flipped_bytes_never_raise: with these bytes of ffmpeg's vp9.mkv changed, the Duration
    (283) or the frame time (351) became so small or so large that the value, rounded for the sidecar,
    was 0.0. A value that rounds to nothing is unknown (None)."""
    blob = bytearray(samples["vp9.mkv"])
    blob[at] = value
    path = tmp_path / "flipped.mkv"
    path.write_bytes(bytes(blob))
    _probe_bounded(path, caplog)
    (tmp_path / "whole.mkv").write_bytes(samples["vp9.mkv"])
    whole, flipped = probe(tmp_path / "whole.mkv"), probe(path)
    if (flipped.duration, flipped.frame_rate) == (whole.duration, whole.frame_rate):
        pytest.skip("this ffmpeg lays vp9.mkv out differently: the byte holds neither Duration nor frame time")


def test_a_duration_or_frame_rate_that_rounds_to_nothing_is_unknown() -> None:
    facts = media._cleaned(media.MediaFacts(kind="video", duration=4e-7, frame_rate=1e-9))
    assert (facts.duration, facts.frame_rate) == (None, None)
    facts = media._cleaned(media.MediaFacts(kind="video", duration=1.5, frame_rate=8.0))
    assert (facts.duration, facts.frame_rate) == (1.5, 8.0)


@settings(max_examples=_HUNT or 60)
@given(data=st.data())
def test_flipped_bytes_never_raise(samples: dict[str, bytes], tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture, data: st.DataObject) -> None:
    caplog.set_level(logging.WARNING, logger="hotfolder.media")
    name = data.draw(st.sampled_from(sorted(samples)))
    blob = bytearray(samples[name])
    # Headers sit near the start (or in a moov at the end): flip there more often than in the frames.
    head = min(len(blob), 512)
    spots = st.one_of(st.integers(0, head - 1), st.integers(len(blob) - head, len(blob) - 1), st.integers(0, len(blob) - 1))
    for at, value in data.draw(st.lists(st.tuples(spots, st.integers(0, 255)), min_size=1, max_size=8)):
        blob[at] = value
    path = tmp_path / "flipped"
    path.write_bytes(bytes(blob))
    _probe_bounded(path, caplog)
