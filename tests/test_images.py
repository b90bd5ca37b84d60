"""hf_hardneg.data.images: mode conversion, JPEG draft decoding, errors that name the file."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest

from hf_hardneg.data.images import (
    CorruptImageError,
    draft_size_for,
    open_image,
    processor_target_size,
    to_rgb,
)


def _jpeg_bytes(width: int, height: int, mode: str = "RGB", exif_orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    array = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
    image = PIL.Image.fromarray(array[..., 0] if channels == 1 else array, mode=mode)
    buffer = io.BytesIO()
    kwargs = {}
    if exif_orientation is not None:
        exif = PIL.Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def test_rgb_passes_through_unchanged():
    image = PIL.Image.new("RGB", (3, 2), (10, 20, 30))
    assert to_rgb(image) is image


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),  # pure red in naive CMYK
        ("I;16", 65535, (255, 255, 255)),  # 16-bit full range -> 8-bit full range, not clipped
        ("I;16", 32896, (128, 128, 128)),
        ("I", 65535, (255, 255, 255)),
        ("F", 0.5, (128, 128, 128)),  # floats in [0, 1]
        ("F", 200.0, (200, 200, 200)),  # floats in [0, 255]
    ],
)
def test_modes_become_8bit_rgb(mode, value, expected):
    out = to_rgb(PIL.Image.new(mode, (4, 3), value))
    assert out.mode == "RGB" and out.size == (4, 3)
    assert out.getpixel((1, 1)) == expected


def test_transparency_is_composited_on_white():
    rgba = PIL.Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    out = to_rgb(rgba)
    assert out.getpixel((0, 0)) == (255, 255, 255)  # fully transparent black -> white background
    assert out.getpixel((1, 0)) == (0, 0, 255)
    half = to_rgb(PIL.Image.new("LA", (1, 1), (0, 128)))
    assert half.getpixel((0, 0)) == (127, 127, 127)


def test_palette_with_transparent_index():
    palette_image = PIL.Image.new("P", (2, 1), 0)
    palette_image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    palette_image.info["transparency"] = 0
    out = to_rgb(palette_image)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 255, 0)
    palette_image.info.pop("transparency")
    assert to_rgb(palette_image).getpixel((0, 0)) == (255, 0, 0)


def test_processor_target_size_reads_both_size_conventions(tiny_clip_dir):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    assert processor_target_size(processor) == {"shortest_edge": 32}

    class FixedSize:  # transformers 4.x style: a plain dict
        do_resize = True
        size = {"height": 224, "width": 160}

    assert processor_target_size(FixedSize()) == {"height": 224, "width": 160}
    FixedSize.do_resize = False
    assert processor_target_size(FixedSize()) is None


def test_draft_request_never_goes_below_target():
    assert draft_size_for((640, 480), {"shortest_edge": 224}) == (299, 224)
    assert draft_size_for((640, 480), {"height": 32, "width": 32}) == (32, 32)
    assert draft_size_for((640, 480), None) is None


@pytest.mark.parametrize("target, expected_size", [
    ({"shortest_edge": 224}, (320, 240)),  # 1/2 scale: 1/4 would give 160x120 < 224
    ({"shortest_edge": 32}, (80, 60)),  # 1/8 is libjpeg's smallest scale
    ({"height": 100, "width": 300}, (320, 240)),  # each side bounded on its own
    (None, (640, 480)),
])
def test_jpeg_draft_decoding_scales(target, expected_size):
    image = open_image(_jpeg_bytes(640, 480), target)
    assert image.size == expected_size and image.mode == "RGB"


def test_exif_orientation_is_applied_and_draft_respects_it():
    rotated = open_image({"bytes": _jpeg_bytes(64, 32, exif_orientation=6), "path": None})
    assert rotated.size == (32, 64)  # orientation 6: rotate 90 degrees
    drafted = open_image(_jpeg_bytes(640, 320, exif_orientation=6), {"height": 160, "width": 80})
    assert drafted.size == (80, 160)


def test_cmyk_and_grayscale_jpegs(tmp_path):
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_jpeg_bytes(40, 30, mode="CMYK"))
    assert open_image(path, {"shortest_edge": 8}).mode == "RGB"
    assert open_image(_jpeg_bytes(40, 30, mode="L")).mode == "RGB"


def test_sources_path_bytes_dict_array(tmp_path):
    data = _jpeg_bytes(16, 8)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    expected = np.asarray(open_image(data))
    for source in (path, str(path), {"path": str(path), "bytes": None}, {"path": None, "bytes": data}):
        assert np.array_equal(np.asarray(open_image(source)), expected)
    assert open_image(np.zeros((2, 3, 3), dtype=np.uint8)).size == (3, 2)
    with pytest.raises(TypeError, match="cannot read an image from a int"):
        open_image(5)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        open_image(broken)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(_jpeg_bytes(64, 64)[:300])
    with pytest.raises(CorruptImageError, match="truncated.jpg"):
        open_image({"path": str(truncated), "bytes": None}, {"shortest_edge": 8})
    with pytest.raises(CorruptImageError, match="missing.jpg"):
        open_image(tmp_path / "missing.jpg")
    with pytest.raises(CorruptImageError, match="neither 'path' nor 'bytes'"):
        open_image({"path": None, "bytes": None})


def test_real_coco_jpegs_decode_at_reduced_scale(coco_mini):
    files = sorted((coco_mini / "images" / "val2017").glob("*.jpg"))[:5]
    assert files
    for file in files:
        full = open_image(file)
        drafted = open_image(file, {"shortest_edge": 32})
        assert min(drafted.size) >= 32
        assert drafted.size[0] <= full.size[0] // 8 + 1  # ~640 px wide: decoded at 1/8 scale
        at_224 = open_image(file, {"shortest_edge": 224})  # halved only when the short side is >= 448
        assert min(at_224.size) >= 224
        assert at_224.size[0] == (full.size[0] if min(full.size) < 448 else (full.size[0] + 1) // 2)
