"""CLIPSeg masks and diffusers inpainting through the real loading code, on tiny random checkpoints saved at test time."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from _inpaint_fixtures import RESOLUTION, STEPS, inpainter, masker, tiny_clipseg_dir, tiny_inpaint_dir  # noqa: F401
from hf_hardneg.inpaint.models import ClipSegMasker, Inpainter, Mask, dilate_mask, working_size


def _photo(size=(80, 56)) -> Image.Image:
    """A non-square test picture with some structure (a disc on a gradient)."""
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    image = Image.fromarray(np.stack([ramp, ramp[::-1, ::-1], np.full_like(ramp, 90)], -1).astype(np.uint8), "RGB")
    ImageDraw.Draw(image).ellipse((20, 10, 50, 40), fill=(200, 30, 30))
    return image


def _box_mask(size, box) -> Mask:
    image = Image.new("L", size, 0)
    image.paste(255, box)
    return Mask(image, "a box", 0.5, 0, 0)


def _reference_dilation(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        out[max(0, y - dy): y + dy + 1, max(0, x - dx): x + dx + 1] = True
    return out


# -- mask enlargement ---------------------------------------------------------------------
def test_dilation_grows_a_pixel_into_the_rectangle_asked_for():
    mask = np.zeros((9, 11), dtype=bool)
    mask[4, 5] = True
    grown = dilate_mask(mask, dilate_x=2, dilate_y=1)
    assert np.array_equal(np.argwhere(grown).min(0), [3, 3]) and np.array_equal(np.argwhere(grown).max(0), [5, 7])
    assert grown.sum() == 3 * 5
    assert np.array_equal(dilate_mask(mask, 0, 0), mask)


@pytest.mark.parametrize("dx, dy", [(1, 0), (0, 3), (2, 2), (7, 1)])
def test_dilation_matches_a_brute_force_reference(dx, dy):
    rng = np.random.default_rng(dx * 10 + dy)
    mask = rng.random((23, 31)) > 0.93
    mask[0, 0] = mask[-1, -1] = True  # edges clip the rectangle
    assert np.array_equal(dilate_mask(mask, dx, dy), _reference_dilation(mask, dx, dy))


def test_dilation_refuses_negative_sizes():
    with pytest.raises(ValueError, match=">= 0 pixels"):
        dilate_mask(np.zeros((3, 3), bool), -1, 0)


def test_working_size_keeps_aspect_and_the_models_multiple():
    assert working_size((640, 480), 512, 64) == (512, 384)
    width, height = working_size((640, 457), 512, 64)
    assert (width, height) == (512, 384) and width % 64 == 0 and height % 64 == 0
    assert working_size((30, 500), 512, 64) == (64, 512)  # a side never rounds to 0


# -- CLIPSeg ------------------------------------------------------------------------------
def test_clipseg_mask_has_the_photographs_size_and_mode(masker):
    photo = _photo()
    probabilities = masker.probabilities(photo, "a red disc")
    assert probabilities.shape == (photo.height, photo.width) and probabilities.dtype == np.float32
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    threshold = float(np.median(probabilities))  # a threshold that splits this random model's scores
    mask = masker.mask(photo, "a red disc", threshold=threshold)
    assert mask.image.mode == "L" and mask.image.size == photo.size
    pixels = np.asarray(mask.image)
    assert set(np.unique(pixels)) <= {0, 255}
    assert np.array_equal(pixels == 255, probabilities > threshold)
    assert 0.0 < mask.coverage < 1.0
    wider = masker.mask_from_probabilities(probabilities, "a red disc", threshold, dilate_x=3, dilate_y=1)
    assert np.array_equal(np.asarray(wider.image) == 255, _reference_dilation(pixels == 255, 3, 1))
    assert (wider.threshold, wider.dilate_x, wider.dilate_y, wider.prompt) == (threshold, 3, 1, "a red disc")
    overlay = mask.overlay(photo)
    assert overlay.mode == "RGB" and overlay.size == photo.size


def test_clipseg_records_the_model_by_name_not_by_local_path(masker, tiny_clipseg_dir):
    assert masker.model_id == tiny_clipseg_dir.name
    assert str(tiny_clipseg_dir.parent) not in masker.model_id


def test_clipseg_refuses_empty_prompts_and_bad_thresholds(masker):
    with pytest.raises(ValueError, match="mask prompt is empty"):
        masker.probabilities(_photo(), "  ")
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        masker.mask(_photo(), "disc", threshold=1.5)


def test_clipseg_loads_safetensors_only(tiny_clipseg_dir, tmp_path):
    """A folder with only a pickle checkpoint is refused rather than unpickled."""
    import shutil

    import torch

    copy = tmp_path / "pickled"
    shutil.copytree(tiny_clipseg_dir, copy)
    from safetensors.torch import load_file

    torch.save(load_file(copy / "model.safetensors"), copy / "pytorch_model.bin")
    (copy / "model.safetensors").unlink()
    with pytest.raises(OSError):
        ClipSegMasker.from_pretrained(copy, device="cpu")


# -- inpainting ---------------------------------------------------------------------------
def test_inpainting_candidates_have_the_photographs_size_and_their_seeds(inpainter):
    photo = _photo()
    mask = _box_mask(photo.size, (16, 8, 56, 44))
    candidates = inpainter.candidates(photo, mask, "a blue disc", seeds=[7, 8, 9], num_inference_steps=STEPS,
                                      resolution=RESOLUTION)
    assert [c.seed for c in candidates] == [7, 8, 9] and [c.index for c in candidates] == [0, 1, 2]
    inside = np.asarray(mask.image) == 255
    original = np.asarray(photo)
    for candidate in candidates:
        assert candidate.image.mode == "RGB" and candidate.image.size == photo.size
        pixels = np.asarray(candidate.image)
        assert np.array_equal(pixels[~inside], original[~inside])  # only the masked region changed
        assert not np.array_equal(pixels[inside], original[inside])
    assert not np.array_equal(np.asarray(candidates[0].image), np.asarray(candidates[1].image))
    # a seed reproduces its candidate alone, whatever else was drawn with it
    (again,) = inpainter.candidates(photo, mask, "a blue disc", seeds=[8], num_inference_steps=STEPS,
                                    resolution=RESOLUTION)
    assert np.array_equal(np.asarray(again.image), np.asarray(candidates[1].image))


def test_inpainting_without_overlay_returns_the_models_whole_picture(inpainter):
    photo = _photo()
    mask = _box_mask(photo.size, (16, 8, 56, 44))
    (raw,) = inpainter.candidates(photo, mask, "a blue disc", seeds=[1], num_inference_steps=STEPS,
                                  resolution=RESOLUTION, keep_unmasked=False)
    outside = np.asarray(mask.image) == 0
    assert raw.image.size == photo.size
    assert not np.array_equal(np.asarray(raw.image)[outside], np.asarray(photo)[outside])


def test_inpainting_loads_any_inpainting_checkpoint_through_the_auto_pipeline(inpainter, tiny_inpaint_dir):
    from diffusers import StableDiffusionInpaintPipeline

    assert isinstance(inpainter.pipeline, StableDiffusionInpaintPipeline)
    assert inpainter.model_id == tiny_inpaint_dir.name
    assert inpainter.size_multiple == 2 * 2  # tiny autoencoder halves once, the UNet once more


def test_inpainting_refuses_what_it_cannot_paint(inpainter):
    photo = _photo()
    with pytest.raises(ValueError, match="mask is empty"):
        inpainter.candidates(photo, Image.new("L", photo.size, 0), "x", seeds=[0])
    with pytest.raises(ValueError, match="differs from the photograph"):
        inpainter.candidates(photo, Image.new("L", (8, 8), 255), "x", seeds=[0])
    with pytest.raises(ValueError, match="inpainting prompt is empty"):
        inpainter.candidates(photo, _box_mask(photo.size, (0, 0, 8, 8)), " ", seeds=[0])
    with pytest.raises(ValueError, match="at least one seed"):
        inpainter.candidates(photo, _box_mask(photo.size, (0, 0, 8, 8)), "x", seeds=[])


def test_missing_diffusers_gives_the_install_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(ImportError, match=r'pip install "hf_hardneg\[inpaint\]"'):
        Inpainter.from_pretrained("anything")
