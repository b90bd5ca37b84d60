"""The two models of the InpaintCOCO tool: CLIPSeg for the mask, a diffusion inpainting pipeline for the edit.

The paper (section 4, appendix A) masks the object to change with the open-vocabulary
segmentation model CLIPSeg (``CIDAS/clipseg-rd64-refined``) and repaints it with Stable
Diffusion 2 Inpainting (``stabilityai/stable-diffusion-2-inpainting``), three candidates
at a time. Both are loaded with ``from_pretrained`` from the Hub or a local folder; any
other CLIPSeg checkpoint, or any checkpoint ``diffusers.AutoPipelineForInpainting`` can
open, works the same. Nothing runs remote code and weights are read as safetensors only;
a Hub token, if one is needed, is taken from the environment by ``huggingface_hub``.

Two choices worth knowing:

* **The mask is a binary image at the photograph's size.** CLIPSeg scores a fixed-size
  square; the scores are resized back to the photograph, thresholded, and then enlarged
  by ``dilate_x``/``dilate_y`` pixels to each side (the annotators' "enlarge in x and y",
  for inserting a larger object than the one masked).
* **Only the masked pixels change.** The pipeline works at about 512 pixels and its
  autoencoder alters every pixel slightly; with ``keep_unmasked=True`` (the default) the
  candidate is resized back to the photograph and pasted into it through the mask, so an
  InpaintCOCO pair differs in the edited region and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from hf_hardneg.inpaint import DEFAULT_INPAINT_MODEL, DEFAULT_MASK_MODEL

__all__ = [
    "DEFAULT_INPAINT_MODEL",
    "DEFAULT_MASK_MODEL",
    "Candidate",
    "ClipSegMasker",
    "Inpainter",
    "Mask",
    "dilate_mask",
    "working_size",
]

INSTALL_HINT = 'pip install "hf_hardneg[inpaint]"'


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_name(model_id: str | os.PathLike) -> str:
    """What the export records as the model: a Hub id as is, a local folder by its name (no local paths)."""
    text = os.fspath(model_id)
    return os.path.basename(os.path.normpath(text)) if os.path.isdir(text) else text


def dilate_mask(mask: np.ndarray, dilate_x: int = 0, dilate_y: int = 0) -> np.ndarray:
    """Grow a boolean mask by ``dilate_x`` pixels left and right and ``dilate_y`` pixels up and down.

    A pixel is set when any set pixel lies within the ``(2 * dilate_y + 1) x (2 * dilate_x + 1)``
    rectangle around it; each axis is a running-count window, so large enlargements stay cheap.
    """
    if dilate_x < 0 or dilate_y < 0:
        raise ValueError(f"mask enlargement must be >= 0 pixels, got x={dilate_x}, y={dilate_y}")
    out = np.asarray(mask, dtype=bool)
    for axis, radius in ((1, int(dilate_x)), (0, int(dilate_y))):
        if radius == 0:
            continue
        length = out.shape[axis]
        counts = np.cumsum(out, axis=axis, dtype=np.int64)
        zero = np.zeros_like(np.take(counts, [0], axis=axis))
        counts = np.concatenate([zero, counts], axis=axis)  # counts[i] = set pixels before index i
        positions = np.arange(length)
        high = np.minimum(positions + radius + 1, length)
        low = np.maximum(positions - radius, 0)
        out = (np.take(counts, high, axis=axis) - np.take(counts, low, axis=axis)) > 0
    return out


@dataclass(frozen=True)
class Mask:
    """A mask for one photograph: ``image`` is mode "L", 255 where the inpainting model may repaint."""

    image: Image.Image
    prompt: str
    threshold: float
    dilate_x: int
    dilate_y: int

    @property
    def coverage(self) -> float:
        """Share of the photograph inside the mask (0 for an empty mask, which cannot be inpainted)."""
        return float(np.count_nonzero(np.asarray(self.image)) / (self.image.width * self.image.height))

    def overlay(self, photo: Image.Image, colour: tuple[int, int, int] = (255, 0, 80), alpha: float = 0.5) -> Image.Image:
        """The photograph with the mask tinted on top, for the annotator to judge the fit."""
        base = photo.convert("RGB")
        tint = Image.new("RGB", base.size, colour)
        weight = self.image.point(lambda v: int(v * alpha))
        return Image.composite(tint, base, weight)


class ClipSegMasker:
    """Text-prompted masks from a CLIPSeg checkpoint (``CLIPSegForImageSegmentation`` and its processor)."""

    def __init__(self, model: Any, processor: Any, model_id: str = DEFAULT_MASK_MODEL):
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id

    @classmethod
    def from_pretrained(
        cls, model_id: str | os.PathLike = DEFAULT_MASK_MODEL, device: str | torch.device | None = None
    ) -> "ClipSegMasker":
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        model = CLIPSegForImageSegmentation.from_pretrained(model_id, use_safetensors=True)
        processor = CLIPSegProcessor.from_pretrained(model_id)
        return cls(model.to(_device(device)), processor, _model_name(model_id))

    @torch.inference_mode()
    def probabilities(self, photo: Image.Image, prompt: str) -> np.ndarray:
        """Per-pixel probability (float32, photograph height x width) that the pixel shows ``prompt``."""
        if not prompt or not prompt.strip():
            raise ValueError("the mask prompt is empty; name the thing to mask, e.g. 'fire hydrant'")
        photo = photo.convert("RGB")
        inputs = self.processor(text=[prompt.strip()], images=[photo], padding=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = self.model(**inputs).logits
        square = logits.reshape(1, 1, *logits.shape[-2:]).float()
        resized = torch.nn.functional.interpolate(
            square, size=(photo.height, photo.width), mode="bilinear", align_corners=False
        )
        return torch.sigmoid(resized)[0, 0].cpu().numpy()

    def mask_from_probabilities(
        self, probabilities: np.ndarray, prompt: str, threshold: float = 0.4, dilate_x: int = 0, dilate_y: int = 0
    ) -> Mask:
        """Threshold and enlarge probabilities already computed (a new threshold needs no new model run)."""
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"mask threshold must lie in [0, 1], got {threshold}")
        binary = dilate_mask(probabilities > float(threshold), dilate_x, dilate_y)
        image = Image.fromarray(binary.astype(np.uint8) * 255, mode="L")
        return Mask(image, prompt.strip(), float(threshold), int(dilate_x), int(dilate_y))

    def mask(
        self, photo: Image.Image, prompt: str, threshold: float = 0.4, dilate_x: int = 0, dilate_y: int = 0
    ) -> Mask:
        return self.mask_from_probabilities(self.probabilities(photo, prompt), prompt, threshold, dilate_x, dilate_y)


@dataclass(frozen=True)
class Candidate:
    """One proposal of the inpainting model; ``seed`` regenerates it with the same settings."""

    index: int
    seed: int
    image: Image.Image


def working_size(size: tuple[int, int], resolution: int, multiple: int) -> tuple[int, int]:
    """(width, height) with the longer side near ``resolution`` and both multiples of ``multiple``.

    Diffusion models are trained near one resolution (512 for SD 2 Inpainting) and need sides
    divisible by their total down-sampling; the aspect ratio is kept as far as rounding allows.
    """
    width, height = size
    scale = resolution / max(width, height)

    def side(value: int) -> int:
        return max(multiple, int(round(value * scale / multiple)) * multiple)

    return side(width), side(height)


class Inpainter:
    """Candidates from any ``diffusers`` inpainting pipeline, each with the seed that reproduces it."""

    def __init__(self, pipeline: Any, model_id: str = DEFAULT_INPAINT_MODEL):
        self.pipeline = pipeline
        self.model_id = model_id
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike = DEFAULT_INPAINT_MODEL,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> "Inpainter":
        try:
            from diffusers import AutoPipelineForInpainting
        except ImportError as err:
            raise ImportError(f"inpainting needs diffusers: {INSTALL_HINT} ({err})") from None
        device = _device(device)
        dtype = torch_dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        pipeline = AutoPipelineForInpainting.from_pretrained(model_id, dtype=dtype, use_safetensors=True)
        return cls(pipeline.to(device), _model_name(model_id))

    @property
    def size_multiple(self) -> int:
        """Total down-sampling of autoencoder and UNet: image sides must be multiples of it."""
        vae_factor = int(getattr(self.pipeline, "vae_scale_factor", 8))
        unet = getattr(self.pipeline, "unet", None)
        blocks = len(getattr(getattr(unet, "config", None), "block_out_channels", ())) or 4
        return vae_factor * 2 ** (blocks - 1)

    def candidates(
        self,
        photo: Image.Image,
        mask: Mask | Image.Image,
        prompt: str,
        seeds: Sequence[int],
        *,
        guidance_scale: float = 7.5,
        num_inference_steps: int = 50,
        negative_prompt: str | None = None,
        resolution: int = 512,
        keep_unmasked: bool = True,
    ) -> list[Candidate]:
        """One candidate per seed, each the size of ``photo`` (RGB).

        Each candidate is its own pipeline run with a CPU generator seeded by its seed, so the
        seed alone reproduces it. (One batched run with a list of generators would not: the
        pipeline samples the masked image's latents with the first generator only.)
        """
        if not prompt or not prompt.strip():
            raise ValueError("the inpainting prompt is empty; describe what to paint, e.g. 'yellow fire hydrant'")
        if not seeds:
            raise ValueError("give at least one seed (one candidate per seed)")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        mask_image = (mask.image if isinstance(mask, Mask) else mask).convert("L")
        photo = photo.convert("RGB")
        if mask_image.size != photo.size:
            raise ValueError(f"mask size {mask_image.size} differs from the photograph's {photo.size}")
        if mask_image.getbbox() is None:
            raise ValueError("the mask is empty: nothing would be repainted; lower the threshold or change the prompt")
        width, height = working_size(photo.size, resolution, self.size_multiple)
        inputs = dict(
            prompt=prompt.strip(),
            negative_prompt=negative_prompt or None,
            image=photo.resize((width, height), Image.Resampling.LANCZOS),
            mask_image=mask_image.resize((width, height), Image.Resampling.NEAREST),
            height=height,
            width=width,
            guidance_scale=float(guidance_scale),
            num_inference_steps=int(num_inference_steps),
        )
        images = [
            self.pipeline(**inputs, generator=torch.Generator(device="cpu").manual_seed(int(seed))).images[0]
            for seed in seeds
        ]
        out = []
        for i, (seed, image) in enumerate(zip(seeds, images)):
            image = image.convert("RGB").resize(photo.size, Image.Resampling.LANCZOS)
            if keep_unmasked:
                image = Image.composite(image, photo, mask_image)
            out.append(Candidate(i, int(seed), image))
        return out
