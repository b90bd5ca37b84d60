"""Robust, fast image opening for training and evaluation.

Datasets in the wild hold every kind of image: grayscale scans, CMYK JPEGs from
print workflows, RGBA/palette PNGs, 16-bit TIFFs, truncated downloads. A vision
encoder wants 8-bit RGB, and a training run wants a clear message naming the file
when one of them cannot be read, not a stack trace from deep inside a DataLoader
worker.

Decoding is also the usual bottleneck of CLIP training on a fast GPU: a COCO
JPEG is ~640x480 and the model looks at 224x224. Pillow's JPEG *draft mode* lets
libjpeg decode directly at 1/2, 1/4 or 1/8 scale (DCT scaling), which skips most
of the work; we request the smallest scale that still leaves the image at least
as large as the processor's resize target, so the processor's own resize and crop
still decide the final pixels.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = [
    "CorruptImageError",
    "describe_image_source",
    "draft_size_for",
    "open_image",
    "processor_target_size",
    "to_rgb",
]

# EXIF orientations that swap width and height (rotations by 90/270 degrees).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


class CorruptImageError(ValueError):
    """An image could not be decoded. The message names the file (and row, when known) and the fix."""


def describe_image_source(source: Any) -> str:
    """A short human-readable name for an image source, for error messages and skip logs."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Mapping):
        if source.get("path"):
            return str(source["path"])
        if source.get("bytes") is not None:
            return f"<{len(source['bytes'])} bytes without a path>"
        return "<empty image entry: neither 'path' nor 'bytes'>"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes without a path>"
    if isinstance(source, PIL.Image.Image):
        name = getattr(source, "filename", "") or ""
        return name or f"<in-memory {source.mode} image {source.size[0]}x{source.size[1]}>"
    return f"<{type(source).__name__}>"


def _size_field(size: Any, name: str) -> int | None:
    # transformers 5 uses a SizeDict (attributes), 4.x a plain dict
    if size is None:
        return None
    if isinstance(size, Mapping):
        return size.get(name)
    return getattr(size, name, None)


def processor_target_size(image_processor: Any) -> dict[str, int] | None:
    """The resize target of a Hugging Face image processor, as ``{"shortest_edge": s}`` or ``{"height", "width"}``.

    Returns ``None`` when the processor does not resize (or uses a rule we do not
    know), in which case images are decoded at full size.
    """
    if image_processor is None or not getattr(image_processor, "do_resize", True):
        return None
    size = getattr(image_processor, "size", None)
    if isinstance(size, int):
        return {"shortest_edge": size}
    shortest = _size_field(size, "shortest_edge")
    if shortest:
        return {"shortest_edge": int(shortest)}
    height, width = _size_field(size, "height"), _size_field(size, "width")
    if height and width:
        return {"height": int(height), "width": int(width)}
    return None


def draft_size_for(image_size: tuple[int, int], target: Mapping[str, int] | None) -> tuple[int, int] | None:
    """The smallest (width, height) a draft decode may produce without going below the resize target.

    For a shortest-edge resize the aspect ratio is kept, so both sides are scaled
    by the same factor; for a fixed (height, width) resize each side has its own
    bound. ``None`` means "decode at full size".
    """
    if not target:
        return None
    width, height = image_size
    if "shortest_edge" in target:
        scale = target["shortest_edge"] / max(1, min(width, height))
        return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))
    return int(target["width"]), int(target["height"])


def to_rgb(image: PIL.Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> PIL.Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    - transparency (RGBA, LA, PA, palette with a transparent colour) is composited
      on ``background`` (white), so transparent pixels do not turn into whatever
      colour happens to be stored under them;
    - 16/32-bit integer images (``I;16*``, ``I``) are rescaled from their full
      range to 0..255 instead of being clipped (Pillow's ``convert`` would saturate);
    - float images (``F``) are taken as 0..1 when their maximum is at most 1, else
      as 0..255;
    - everything else (L, 1, CMYK, YCbCr, LAB, HSV, P) goes through Pillow's convert.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = PIL.Image.new("RGBA", rgba.size, background + (255,))
        return PIL.Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image).astype(np.float64)
        if np.nanmax(array, initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(np.rint(array)), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")


def _open_raw(source: Any) -> PIL.Image.Image:
    if isinstance(source, PIL.Image.Image):
        return source
    if isinstance(source, Mapping):
        if source.get("bytes") is not None:
            return PIL.Image.open(io.BytesIO(source["bytes"]))
        path = source.get("path")
        if not path:
            raise ValueError("image entry has neither 'path' nor 'bytes'")
        return _open_path(path)
    if isinstance(source, (bytes, bytearray)):
        return PIL.Image.open(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source)
    if isinstance(source, np.ndarray):
        return PIL.Image.fromarray(source)
    raise TypeError(
        f"cannot read an image from a {type(source).__name__}; expected a PIL image, a file path, bytes, "
        "or a datasets Image entry ({'path': ..., 'bytes': ...})"
    )


def _open_path(path: str | os.PathLike) -> PIL.Image.Image:
    text = os.fspath(path)
    if "://" in text:
        # remote files (hf://, s3://, https://) the way `datasets` reaches them; tokens come from the environment
        from datasets.utils.file_utils import xopen

        with xopen(text, "rb") as handle:
            return PIL.Image.open(io.BytesIO(handle.read()))
    return PIL.Image.open(Path(text))


def open_image(source: Any, target: Mapping[str, int] | None = None) -> PIL.Image.Image:
    """Open ``source`` as a fully decoded 8-bit RGB image, upright according to its EXIF orientation.

    ``source`` may be a PIL image, a path, raw bytes, a numpy array or a ``datasets``
    Image entry (``{"path": ..., "bytes": ...}``, what ``Image(decode=False)`` yields).
    ``target`` is the processor's resize target (see :func:`processor_target_size`);
    when given and the file is a JPEG, it is draft-decoded at the smallest DCT
    scale that stays at or above the target.

    Raises :class:`CorruptImageError` naming the file when it cannot be decoded.
    """
    try:
        image = _open_raw(source)
        if target and image.format == "JPEG" and not getattr(image, "decoderconfig", None):
            orientation = image.getexif().get(_EXIF_ORIENTATION)
            request_target = dict(target)
            if orientation in _TRANSPOSING_ORIENTATIONS and "height" in request_target:
                request_target["height"], request_target["width"] = request_target["width"], request_target["height"]
            request = draft_size_for(image.size, request_target)
            if request is not None:
                image.draft("RGB", request)
        image.load()
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = PIL.ImageOps.exif_transpose(image)
        return to_rgb(image)
    except CorruptImageError:
        raise
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        # Pillow reports unreadable/truncated files as OSError (UnidentifiedImageError is one),
        # some broken headers as ValueError/SyntaxError
        raise CorruptImageError(f"cannot decode image {describe_image_source(source)}: {err}") from err
