"""The image input path of training and evaluation: decode in the DataLoader workers, finish where it is cheapest.

A model's image processor resizes, crops, rescales and normalises one image at a
time in float numpy; on the CPU that costs as much as decoding the JPEG. This
module reads what the processor would do from its own config (an
:class:`ImageRecipe`) and runs it in one of three tiers:

* ``"device"`` (chosen when training or evaluating on a GPU): the workers only
  decode to uint8 and pack the batch (:func:`finish_images` turns it into
  ``pixel_values`` on the device, batched: antialiased resize with the
  processor's filter, centre crop, rescale and normalisation);
* ``"cpu"`` (chosen otherwise): the workers decode, resize and crop in uint8 with
  Pillow (the processor's own resize), and normalise once per batch in torch;
* ``"processor"``: the processor itself, per image (today's path; also the fallback
  for processors whose rules we do not know, with a one-line notice).

``draft_decode=True`` (the default) takes the fast road wherever the pixels stay
within rounding of the processor's: JPEGs are decoded at a reduced DCT scale when
that cannot go below the resize target, the CPU tier resizes with torch's
antialiased uint8 kernels (bilinear, bicubic: Pillow's filters, several times
faster) or, for other filters, only the source region that becomes the centre
crop, and normalises with one multiply-add.
``draft_decode=False`` gives the processor's pixels bit for bit in the CPU tier
(full decode, full resize, a look-up table of the processor's float32 values).

``"auto"`` picks ``"device"`` for a CUDA device and ``"cpu"`` otherwise
(:func:`resolve_tier`). Decoding goes through ``simplejpeg`` when it is installed
(the ``fastjpeg`` extra; bit-identical to Pillow's libjpeg-turbo decode, faster)
for plain RGB/grayscale JPEGs, and through :func:`hf_hardneg.data.images.open_image`
for everything else, so every image mode and every error message stays as it was.

Device-tier batches hold images of different sizes, so they are packed rather than
stacked: ``packed_<key>`` is a ``(n, L)`` uint8 tensor whose row ``i`` holds image
``i``'s ``h*w*3`` bytes (HWC, zero-padded to the longest image of the batch) and
``packed_<key>_sizes`` its ``(h, w)``. A landscape and a portrait COCO photo have
the same number of pixels, so little is padded, and the first dimension is still
the batch size the Trainer looks for. JPEGs are draft-decoded (DCT scaling) only
when that cannot go below the resize target; nothing else is resized in the
worker. On the device, images of one size are resized together.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import PIL.Image
import torch

from hf_hardneg.data.images import (
    CorruptImageError,
    _EXIF_ORIENTATION,
    _size_field,
    draft_size_for,
    open_image,
    processor_target_size,
)

logger = logging.getLogger(__name__)

__all__ = ["ImagePipeline", "ImageRecipe", "TIERS", "decode_rgb", "describe_tier", "fast_jpeg_available",
           "finish_images", "normalise_uint8", "pack_uint8", "resolve_tier"]

TIERS = ("auto", "device", "cpu", "processor")
# processors whose whole job is resize -> centre crop -> rescale -> normalise (class names without Pil/Fast)
_KNOWN_PROCESSORS = {"CLIPImageProcessor", "SiglipImageProcessor", "ViTImageProcessor", "ChineseCLIPImageProcessor"}
# Pillow filter -> torch.nn.functional.interpolate mode (antialias=True uses Pillow's kernels, a=-0.5 for bicubic)
_DEVICE_MODES = {PIL.Image.Resampling.BILINEAR: "bilinear", PIL.Image.Resampling.BICUBIC: "bicubic"}
_PACKED = "packed_"
_SIZES_DIFFER = ("images of one batch come out at different sizes ({} and {}): the image processor resizes the "
                 "shortest edge without a centre crop; give it do_center_crop=True and a crop_size, or a fixed "
                 "height and width")
_noticed: set[str] = set()

try:  # optional: pip install hf_hardneg[fastjpeg]
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None


def fast_jpeg_available() -> bool:
    """Whether JPEGs are decoded with simplejpeg (else Pillow)."""
    return _simplejpeg is not None


def _notice_once(message: str) -> None:
    if message not in _noticed:
        _noticed.add(message)
        logger.warning(message)


def resolve_tier(tier: str, device: torch.device | str | None = None) -> str:
    """``"auto"`` -> ``"device"`` on a CUDA device, else ``"cpu"``; other tiers pass through (checked)."""
    if tier not in TIERS:
        raise ValueError(f"image_preprocessing must be one of {', '.join(TIERS)}, got {tier!r}")
    if tier != "auto":
        return tier
    return "device" if device is not None and torch.device(device).type == "cuda" else "cpu"


def _resample_filter(value: Any) -> int | None:
    """The Pillow filter of a processor's ``resample`` (a Pillow enum/int or a torchvision InterpolationMode)."""
    if value is None:
        return int(PIL.Image.Resampling.BILINEAR)  # the processors' own default
    if isinstance(value, (int, np.integer)):
        return int(value)
    name = str(getattr(value, "name", value)).upper().rsplit(".", 1)[-1]
    named = {"NEAREST": 0, "NEAREST_EXACT": 0, "LANCZOS": 1, "BILINEAR": 2, "BICUBIC": 3, "BOX": 4, "HAMMING": 5}
    return named.get(name)


def _processor_name(image_processor: Any) -> str:
    name = type(image_processor).__name__
    for suffix in ("Pil", "Fast"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class ImageRecipe:
    """What an image processor does to an RGB image, read from its config.

    ``resize``: ``("shortest_edge", s)`` (aspect kept, the long side truncated as
    transformers does), ``("fixed", h, w)`` or ``None``; ``crop``: ``(h, w)`` or
    ``None`` (an image smaller than the crop is zero-padded, as the processor does);
    ``rescale``/``mean``/``std``: ``None`` when the processor skips that step.
    """

    resize: tuple | None
    resample: int
    crop: tuple[int, int] | None
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @classmethod
    def from_processor(cls, image_processor: Any) -> "ImageRecipe | None":
        """The recipe of a known processor type, or ``None`` (unknown type or rule: use the processor itself)."""
        if image_processor is None or _processor_name(image_processor) not in _KNOWN_PROCESSORS:
            return None
        if getattr(image_processor, "do_pad", False):
            return None
        resize = None
        if getattr(image_processor, "do_resize", True):
            size = getattr(image_processor, "size", None)
            if _size_field(size, "longest_edge") or _size_field(size, "max_height"):
                return None
            target = processor_target_size(image_processor)
            if target is None:
                return None
            resize = (("shortest_edge", target["shortest_edge"]) if "shortest_edge" in target
                      else ("fixed", target["height"], target["width"]))
        resample = _resample_filter(getattr(image_processor, "resample", None))
        if resample is None:
            return None
        crop = None
        if getattr(image_processor, "do_center_crop", False):
            crop_size = getattr(image_processor, "crop_size", None)
            height, width = _size_field(crop_size, "height"), _size_field(crop_size, "width")
            if not (height and width):
                return None
            crop = (int(height), int(width))
        rescale = float(image_processor.rescale_factor) if getattr(image_processor, "do_rescale", False) else None
        mean = std = None
        if getattr(image_processor, "do_normalize", False):
            mean, std = (_three(getattr(image_processor, name)) for name in ("image_mean", "image_std"))
        return cls(resize, resample, crop, rescale, mean, std)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize step, as the processor computes it."""
        if self.resize is None:
            return height, width
        if self.resize[0] == "fixed":
            return self.resize[1], self.resize[2]
        side = self.resize[1]
        if width <= height:
            return int(side * height / width), side
        return side, int(side * width / height)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, crop_h, crop_w) of the centre crop of an (h, w) image; top/left < 0 means zero padding."""
        if self.crop is None:
            return 0, 0, height, width
        crop_h, crop_w = self.crop
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.crop or self.resized_size(height, width)


def _three(value: Any) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"expected 3 channel values for mean/std, got {values}")
    return tuple(values)  # type: ignore[return-value]


# -- decoding (DataLoader workers) ------------------------------------------------------------------


def _read_bytes(source: Any) -> bytes | None:
    """The encoded bytes of a local file, bytes or datasets entry; ``None`` for anything else (Pillow decides)."""
    if isinstance(source, Mapping):
        if source.get("bytes") is not None:
            return bytes(source["bytes"])
        source = source.get("path")
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)) and "://" not in os.fspath(source):
        try:
            return Path(source).read_bytes()
        except OSError:
            return None  # open_image names the missing file
    return None


def _fast_jpeg(data: bytes, target: Mapping[str, int] | None) -> np.ndarray | None:
    """simplejpeg's decode of a plain, upright RGB/grayscale JPEG (with Pillow's draft scale); else ``None``."""
    try:
        header = PIL.Image.open(io.BytesIO(data))
        if header.format != "JPEG" or header.mode not in ("RGB", "L"):
            return None
        if header.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            return None
        if target:  # learn Pillow's draft size from the header alone, then ask libjpeg for the same scale
            request = draft_size_for(header.size, target)
            if request is not None:
                header.draft("RGB", request)
        width, height = header.size
        array = _simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=width, min_height=height)
    except Exception:  # noqa: BLE001 - any trouble: Pillow decodes it (or names the error) exactly as before
        return None
    return array if array.shape[:2] == (height, width) else None


def decode_rgb(source: Any, target: Mapping[str, int] | None = None) -> np.ndarray:
    """``source`` decoded to an ``(h, w, 3)`` uint8 array, upright; JPEGs draft-decoded towards ``target``.

    Same sources, modes and :class:`~hf_hardneg.data.images.CorruptImageError` as
    :func:`~hf_hardneg.data.images.open_image`, which it uses for all but plain JPEGs.
    """
    if _simplejpeg is not None and not isinstance(source, (PIL.Image.Image, np.ndarray)):
        data = _read_bytes(source)
        if data is not None:
            array = _fast_jpeg(data, target)
            if array is not None:
                return array
    return np.asarray(open_image(source, target))


# -- CPU tier: resize and crop in uint8 ---------------------------------------------------------------


def _resize_and_crop(image: np.ndarray, recipe: ImageRecipe, fast: bool = False) -> np.ndarray:
    """The processor's uint8 resize (Pillow, same filter) and centre crop; bitwise what the processor computes.

    ``fast``: bilinear and bicubic go through torch's antialiased uint8 kernels
    (the same filters as Pillow's, several times faster; a few pixels round
    differently, about 0.004 grey levels on average on coco-mini); other filters
    resize only the source region that becomes the crop (Pillow's ``box``, same
    scale and filter support; a few pixels round differently).
    """
    height, width = image.shape[:2]
    new_h, new_w = recipe.resized_size(height, width)
    top, left, crop_h, crop_w = recipe.crop_box(new_h, new_w)
    inside = top >= 0 and left >= 0 and top + crop_h <= new_h and left + crop_w <= new_w
    if fast and (new_h, new_w) != (height, width) and recipe.resample in _DEVICE_MODES:
        with warnings.catch_warnings():  # Pillow's arrays are read-only; the tensor is only read
            warnings.simplefilter("ignore", UserWarning)
            source = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w), channels-last strides
        resized = torch.nn.functional.interpolate(source, size=(new_h, new_w), mode=_DEVICE_MODES[recipe.resample],
                                                  antialias=True, align_corners=False)
        image, (height, width) = resized[0].permute(1, 2, 0).numpy(), (new_h, new_w)
    elif fast and inside and recipe.crop is not None and (new_h, new_w) != (height, width):
        scale_x, scale_y = width / new_w, height / new_h
        box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
        return np.asarray(PIL.Image.fromarray(image).resize((crop_w, crop_h), resample=recipe.resample, box=box))
    if (new_h, new_w) != (height, width):
        image = np.asarray(PIL.Image.fromarray(image).resize((new_w, new_h), resample=recipe.resample))
    if inside:
        return image[top: top + crop_h, left: left + crop_w]
    out = np.zeros((crop_h, crop_w, 3), dtype=np.uint8)  # smaller than the crop: zero padding, as transformers
    pad_top, pad_left = math.ceil(max(0, crop_h - new_h) / 2), math.ceil(max(0, crop_w - new_w) / 2)
    src_top, src_left = max(0, top), max(0, left)
    rows, cols = min(new_h, crop_h), min(new_w, crop_w)
    out[pad_top: pad_top + rows, pad_left: pad_left + cols] = image[src_top: src_top + rows, src_left: src_left + cols]
    return out


def _normalising_table(recipe: ImageRecipe, device=None) -> torch.Tensor:
    """(3 * 256,) float32: entry 256 c + v is the processor's float32 result for value v of channel c.

    The processor rescales in float64, casts to float32 and normalises in float32;
    the table holds exactly those values, so a look-up reproduces them bit for bit.
    """
    values = torch.arange(256, dtype=torch.float64)
    if recipe.rescale is not None:
        values = values * recipe.rescale
    values = values.to(torch.float32).expand(3, 256)
    if recipe.mean is not None:
        mean = torch.tensor(recipe.mean, dtype=torch.float32).view(3, 1)
        std = torch.tensor(recipe.std, dtype=torch.float32).view(3, 1)
        values = (values - mean) / std
    values = values.reshape(-1).contiguous()
    return values.to(device) if device is not None else values


def normalise_uint8(images: torch.Tensor, recipe: ImageRecipe, table: torch.Tensor | None = None,
                    exact: bool = True) -> torch.Tensor:
    """``(n, h, w, 3)`` uint8 -> ``(n, 3, h, w)`` float32 ``pixel_values`` in one pass over the batch.

    ``exact``: by table look-up, the processor's values bit for bit; otherwise one
    fused multiply-add per value (x * scale/std - mean/std), a tenth of the time,
    within a few float32 rounding steps of the processor.
    """
    if exact:
        table = _normalising_table(recipe, images.device) if table is None else table
        n, height, width, _ = images.shape
        index = images.permute(0, 3, 1, 2).to(dtype=torch.int32, memory_format=torch.contiguous_format)
        index += torch.arange(0, 3 * 256, 256, dtype=torch.int32, device=images.device).view(1, 3, 1, 1)
        return table.index_select(0, index.view(-1)).view(n, 3, height, width)
    scale = recipe.rescale if recipe.rescale is not None else 1.0
    mean = torch.tensor(recipe.mean or (0.0, 0.0, 0.0), dtype=torch.float64)
    std = torch.tensor(recipe.std or (1.0, 1.0, 1.0), dtype=torch.float64)
    factor = (scale / std).to(torch.float32).view(1, 3, 1, 1)
    offset = (-mean / std).to(torch.float32).view(1, 3, 1, 1)
    pixels = images.permute(0, 3, 1, 2).to(dtype=torch.float32, memory_format=torch.contiguous_format)
    return pixels.mul_(factor).add_(offset)


# -- device tier: packed uint8 batches, finished on the device ---------------------------------------


def _shared_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor in shared memory when inside a DataLoader worker (sent to the main process without a copy)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = math.prod(shape)
    if not numel:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(numel * torch.empty(0, dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def pack_uint8(images: Sequence[np.ndarray]) -> tuple[torch.Tensor, tuple[tuple[int, int], ...]]:
    """``(n, L)`` uint8 rows of HWC bytes (zero-padded) and the images' ``(h, w)``.

    The sizes stay plain Python ints: the Trainer and accelerate move tensors to the
    GPU, and reading sizes back from there would make every step wait for the GPU.
    """
    lengths = [image.size for image in images]
    packed = _shared_buffer((len(images), max(lengths)), torch.uint8)
    rows = packed.numpy()
    for row, image in enumerate(images):
        rows[row, : image.size] = image.reshape(-1)
        rows[row, image.size:] = 0
    return packed, tuple((int(image.shape[0]), int(image.shape[1])) for image in images)


def _to(device, values, dtype) -> torch.Tensor:
    # from pageable memory a non-blocking copy is staged at once and does not wait for the GPU's queue
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _finish_packed(packed: torch.Tensor, sizes: Sequence[tuple[int, int]], recipe: ImageRecipe) -> torch.Tensor:
    """Packed uint8 images -> ``(n, 3, H, W)`` float32 pixel values on ``packed``'s device."""
    device = packed.device
    shapes = [(int(height), int(width)) for height, width in sizes]
    if len(shapes) != packed.shape[0]:
        raise ValueError(f"a packed batch of {packed.shape[0]} images has {len(shapes)} sizes; device-tier batches "
                         "cannot be cut by accelerate's dispatch_batches (HardNegCLIPConfig turns it off)")
    out_h, out_w = recipe.output_size(*shapes[0])
    out = None
    groups: dict[tuple[int, int], list[int]] = {}
    for row, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(row)
    mode = _DEVICE_MODES.get(recipe.resample)
    whole = len(groups) == 1
    mean = _to(device, recipe.mean, torch.float32).view(1, 3, 1, 1) if recipe.mean is not None else None
    std = _to(device, recipe.std, torch.float32).view(1, 3, 1, 1) if recipe.std is not None else None
    for (height, width), rows in groups.items():
        index = None if whole else _to(device, rows, torch.int64)
        chosen = packed if whole else packed.index_select(0, index)
        images = chosen[:, : height * width * 3].reshape(len(rows), height, width, 3)
        images = images.permute(0, 3, 1, 2).to(dtype=torch.float32, memory_format=torch.contiguous_format)
        new_h, new_w = recipe.resized_size(height, width)
        if (new_h, new_w) != (height, width):
            if mode is not None:
                images = torch.nn.functional.interpolate(images, size=(new_h, new_w), mode=mode, antialias=True,
                                                         align_corners=False)
            else:  # nearest: Pillow's pixel-centre rule
                images = torch.nn.functional.interpolate(images, size=(new_h, new_w), mode="nearest-exact")
            images = images.clamp_(0, 255).round_()  # the processor resizes in uint8
        top, left, crop_h, crop_w = recipe.crop_box(new_h, new_w)
        if (out_h, out_w) != (crop_h, crop_w):
            raise ValueError(_SIZES_DIFFER.format(f"{out_h}x{out_w}", f"{crop_h}x{crop_w}"))
        if top < 0 or left < 0 or top + crop_h > new_h or left + crop_w > new_w:
            # smaller than the crop: zero padding placed as transformers places it
            padded_h, padded_w = max(crop_h, new_h), max(crop_w, new_w)
            pad_top, pad_left = math.ceil((padded_h - new_h) / 2), math.ceil((padded_w - new_w) / 2)
            images = torch.nn.functional.pad(images, (pad_left, padded_w - new_w - pad_left,
                                                      pad_top, padded_h - new_h - pad_top))
            top, left = top + pad_top, left + pad_left
        images = images[:, :, top: top + crop_h, left: left + crop_w]
        if recipe.rescale is not None:
            images = images * recipe.rescale
        if mean is not None:
            images = (images - mean) / std
        if whole:
            return images.contiguous()
        if out is None:
            out = torch.empty((len(shapes), 3, out_h, out_w), dtype=torch.float32, device=device)
        out.index_copy_(0, index, images)
    return out


def finish_images(batch: dict[str, Any]) -> dict[str, Any]:
    """Turn a device-tier batch's packed uint8 images into ``pixel_values`` where they lie (call after ``.to(device)``).

    A batch without packed images (CPU or processor tier) is returned unchanged,
    so the trainer and the evaluator call this on every batch.
    """
    packed_keys = [key for key in batch if key.startswith(_PACKED) and not key.endswith("_sizes")]
    if not packed_keys:
        return batch
    recipe = batch.get("image_recipe")
    if not isinstance(recipe, ImageRecipe):
        raise ValueError("a batch with packed images needs its 'image_recipe' (made by ImagePipeline.collate)")
    finished = {}
    for key, value in batch.items():
        if key in packed_keys:
            finished[key[len(_PACKED):]] = _finish_packed(value, batch[key + "_sizes"], recipe)
        elif not (key.startswith(_PACKED) or key == "image_recipe"):
            finished[key] = value
    return finished


# -- the pipeline -------------------------------------------------------------------------------------


class ImagePipeline:
    """One image input path for a model's image processor, in a chosen tier (see the module docstring).

    ``open(source)`` runs per image in the workers (decoding, and in the CPU tier
    resize and crop); ``collate(images, key)`` makes the batch's tensors;
    :func:`finish_images` completes device-tier batches on the device.

    Example::

        >>> pipeline = ImagePipeline(image_processor, tier="cpu")
        >>> batch = pipeline.collate([pipeline.open("cat.jpg")])
        >>> batch["pixel_values"].shape
        torch.Size([1, 3, 224, 224])
    """

    def __init__(self, image_processor: Any, tier: str = "auto", draft_decode: bool = True,
                 device: torch.device | str | None = None):
        self.image_processor = image_processor
        self.draft_decode = draft_decode
        self.recipe = ImageRecipe.from_processor(image_processor)
        self.requested_tier = tier
        tier = resolve_tier(tier, device)
        if self.recipe is None and tier != "processor":
            _notice_once(f"image processor {type(image_processor).__name__} is not one whose steps hf_hardneg "
                         "knows (CLIP, SigLIP, ViT, Chinese-CLIP without padding); its images go through the "
                         "processor itself, one at a time")
            tier = "processor"
        if tier == "device" and self.recipe.resample not in _DEVICE_MODES and self.recipe.resample != 0:
            _notice_once(f"resample filter {PIL.Image.Resampling(self.recipe.resample).name} has no antialiased "
                         "torch equivalent: the workers resize and crop, the device only normalises")
        self.tier = tier
        self.target = processor_target_size(image_processor) if draft_decode else None
        self._table: torch.Tensor | None = None

    @property
    def _worker_resizes(self) -> bool:
        return self.tier == "cpu" or (self.tier == "device" and self.recipe.resample not in _DEVICE_MODES
                                      and self.recipe.resample != 0)

    def open(self, source: Any) -> Any:
        """One image as the tier's worker step leaves it (raises CorruptImageError naming the file)."""
        if self.tier == "processor":
            return open_image(source, self.target)
        image = decode_rgb(source, self.target)
        return _resize_and_crop(image, self.recipe, self.draft_decode) if self._worker_resizes else image

    def collate(self, images: Sequence[Any], key: str = "pixel_values") -> dict[str, Any]:
        """The batch entries for ``images`` (from :meth:`open`) under ``key``."""
        if self.tier == "processor":
            return {key: self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]}
        if self.tier == "cpu":
            if self._table is None and not self.draft_decode:
                self._table = _normalising_table(self.recipe)
            if len({image.shape for image in images}) > 1:
                raise ValueError(_SIZES_DIFFER.format(*sorted({f"{i.shape[0]}x{i.shape[1]}" for i in images})[:2]))
            stacked = torch.from_numpy(np.stack(images))
            return {key: normalise_uint8(stacked, self.recipe, self._table, exact=not self.draft_decode)}
        packed, sizes = pack_uint8(images)
        recipe = replace(self.recipe, resize=None, crop=None) if self._worker_resizes else self.recipe
        return {_PACKED + key: packed, _PACKED + key + "_sizes": sizes, "image_recipe": recipe}

    def __call__(self, sources: Sequence[Any], key: str = "pixel_values") -> dict[str, Any]:
        """Open and collate ``sources`` in one go (e.g. outside a DataLoader)."""
        return self.collate([self.open(source) for source in sources], key)


def describe_tier(pipeline: ImagePipeline) -> str:
    """One line for logs: which tier and decoder an image path uses."""
    decoder = "simplejpeg" if fast_jpeg_available() else "Pillow"
    return f"image preprocessing: {pipeline.tier} tier ({decoder} decoding)"

