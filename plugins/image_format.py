"""Image format: convert a job's PNG outputs to WebP, JPEG or AVIF before they are published.

Needs Pillow (``pip install 'hotfolder[images]'``). Choose it per scenario::

    postprocess:
      - {name: image_format, format: webp, quality: 85}

or for every job in ``hotfolder.toml``::

    postprocess = [{name = "image_format", format = "jpeg", quality = 92, keep_png = true}]

Options (all optional):

``format``
    ``webp`` (default), ``jpeg`` (or ``jpg``) or ``avif`` (only if this Pillow can write AVIF; the
    options check says so before anything is submitted).
``quality``
    1..100, default 90.
``keep_png``
    ``false`` (default) replaces each PNG by the converted file; ``true`` keeps both.
``metadata``
    ``true`` (default) keeps the generation parameters in the new file's EXIF, the way ComfyUI's own
    WebP saver does, so that ComfyUI can load the workflow from the file: the PNG's ``prompt`` text
    chunk as ``"prompt:<json>"`` in tag 0x0110 (Model), the other chunks (``workflow``, ``hotfolder``)
    as ``"<key>:<json>"`` in tags 0x010F (Make), 0x010E, ... and the sidecar's resolved parameters
    as ``"parameters:<json>"`` after them. JPEG's EXIF holds at most 64 KiB: chunks that do not fit are
    left out (largest first) with a warning. ``false`` writes no metadata.

The sidecar's ``outputs`` follow: a replaced entry gets the new ``file``, ``size``, ``sha256``,
``format`` and ``converted_from``; with ``keep_png`` a new entry is added after the PNG's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hotfolder import get_plugin_logger, hookimpl

logger = get_plugin_logger(__name__)

FORMATS = {"webp": ("WEBP", ".webp"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg"), "avif": ("AVIF", ".avif")}
DEFAULTS: dict[str, Any] = {"format": "webp", "quality": 90, "keep_png": False, "metadata": True}
#: EXIF tags used for text chunks, in ComfyUI's order: "prompt" in Model, then Make, ImageDescription, ...
PROMPT_TAG = 0x0110
FIRST_EXTRA_TAG = 0x010F
JPEG_EXIF_LIMIT = 65_000


def _pillow() -> Any:
    try:
        from PIL import Image, features
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ValueError("the image_format post-processor needs Pillow: pip install 'hotfolder[images]'") from err
    return Image, features


def writable_formats() -> list[str]:
    """The formats this Pillow can write."""
    _image, features = _pillow()
    out = ["jpeg"]
    if features.check("webp"):
        out.insert(0, "webp")
    if features.check("avif"):
        out.append("avif")
    return out


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate the options and fill in the defaults (raises ValueError with what is wrong)."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))}; options: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **options}
    fmt = out["format"]
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of webp, jpeg, avif")
    out["format"] = "jpeg" if fmt.lower() == "jpg" else fmt.lower()
    if out["format"] not in writable_formats():
        raise ValueError(
            f"this Pillow cannot write {out['format']}; it can write {', '.join(writable_formats())}"
        )
    quality = out["quality"]
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be a whole number from 1 to 100, not {quality!r}")
    for key in ("keep_png", "metadata"):
        if not isinstance(out[key], bool):
            raise ValueError(f"{key} must be true or false, not {out[key]!r}")
    return out


@hookimpl
def register_postprocessors(register):
    register("image_format", convert_images, description="PNG outputs to WebP/JPEG/AVIF (Pillow)",
             check=check_options)


def convert_images(job: Any) -> None:
    """The post-processor: convert every PNG output of ``job`` (a :class:`hotfolder.plugins.StagedJob`)."""
    options = check_options(job.options)
    fmt, suffix = FORMATS[options["format"]]
    for entry in list(job.outputs):
        if not str(entry.get("file", "")).lower().endswith(".png"):
            continue
        source = job.path(entry)
        if not source.is_file():
            _adopt_earlier_result(job, entry, suffix)
            continue
        target = _target(job, Path(entry["file"]).stem + suffix)
        exif = _exif(source, job.sidecar, fmt) if options["metadata"] else None
        _save(source, target, fmt, options["quality"], exif)
        fields = {k: v for k, v in entry.items() if k not in {"file", "size", "sha256"}}
        fields.update(format=options["format"], converted_from=entry["file"])
        if options["keep_png"]:
            new = job.add_output(target, **fields)
            job.outputs.remove(new)
            job.outputs.insert(job.outputs.index(entry) + 1, new)
        else:
            source.unlink()
            entry.update(fields, file=target.name)
            job.refresh_output(entry)
        logger.info("%s: %s -> %s (quality %d)", job.name, source.name, target.name, options["quality"])


def _target(job: Any, name: str) -> Path:
    """Where to write a converted file: ``name``, unless another output already uses that name (a file
    of that name no output lists is this plugin's own leftover from a run a crash interrupted)."""
    listed = {str(entry.get("file")) for entry in job.outputs}
    if name in listed:
        return job.folder / job.free_name(name)
    return job.folder / name  # free, or a leftover of this plugin's interrupted run: replaced


def _adopt_earlier_result(job: Any, entry: dict[str, Any], suffix: str) -> None:
    """A run interrupted by a crash already replaced this PNG: point the entry at its result."""
    earlier = job.folder / (Path(entry["file"]).stem + suffix)
    if not earlier.is_file():
        raise FileNotFoundError(f"output {entry['file']!r} is missing from the job's folder")
    entry.update(format=suffix.lstrip(".").replace("jpg", "jpeg"), converted_from=entry["file"], file=earlier.name)
    job.refresh_output(entry)


def _save(source: Path, target: Path, fmt: str, quality: int, exif: Any) -> None:
    Image, _features = _pillow()
    partial = target.with_name(f".{target.name}.part")
    with Image.open(source) as image:
        image.load()
        if fmt == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        elif image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        kwargs: dict[str, Any] = {"format": fmt, "quality": quality}
        if exif is not None:
            kwargs["exif"] = exif
        image.save(partial, **kwargs)
    partial.replace(target)


def _exif(source: Path, sidecar: dict[str, Any], fmt: str) -> Any:
    """EXIF carrying the PNG's text chunks and the job's parameters (ComfyUI's WebP convention)."""
    Image, _features = _pillow()
    with Image.open(source) as image:
        chunks = {str(k): v for k, v in getattr(image, "text", {}).items() if isinstance(v, str)}
    entries: list[tuple[str, str]] = []
    if "prompt" in chunks:
        entries.append(("prompt", _ascii(chunks.pop("prompt"))))
    entries.extend((key, _ascii(value)) for key, value in chunks.items())
    if sidecar.get("params"):
        entries.append(("parameters", json.dumps(sidecar["params"])))
    while True:
        exif = Image.Exif()
        tag = FIRST_EXTRA_TAG
        for key, value in entries:
            if key == "prompt":
                exif[PROMPT_TAG] = f"prompt:{value}"
            else:
                exif[tag] = f"{key}:{value}"
                tag -= 1
        if fmt != "JPEG" or len(exif.tobytes()) <= JPEG_EXIF_LIMIT or not entries:
            return exif
        largest = max(entries, key=lambda item: len(item[1]))
        logger.warning("%s: metadata %r is too large for JPEG's EXIF; left out", source.name, largest[0])
        entries.remove(largest)


def _ascii(text: str) -> str:
    """EXIF text is ASCII: JSON is re-encoded with \\u escapes, anything else backslash-escaped."""
    if text.isascii():
        return text
    try:
        return json.dumps(json.loads(text))
    except ValueError:
        return text.encode("ascii", "backslashreplace").decode("ascii")
