"""hf_hardneg.data.image_pipeline: recipes read from processor configs, pixel parity of both tiers, decoding, wiring."""

from __future__ import annotations

import io
import logging

import numpy as np
import PIL.Image
import pytest
import torch

from hf_hardneg.data import image_pipeline
from hf_hardneg.data.image_pipeline import (
    ImagePipeline,
    ImageRecipe,
    decode_rgb,
    fast_jpeg_available,
    finish_images,
    resolve_tier,
)
from hf_hardneg.data.images import CorruptImageError, open_image

torch.set_num_threads(1)


def _processors():
    from transformers import CLIPImageProcessor, SiglipImageProcessor, ViTImageProcessor

    # the defaults are the published configs of openai/clip-vit-base-patch32 and google/siglip-base-patch16-224
    return {"clip": CLIPImageProcessor(), "siglip": SiglipImageProcessor(), "vit": ViTImageProcessor()}


@pytest.fixture(scope="module")
def processors():
    return _processors()


def _coco_files(coco_mini, count=24):
    files = sorted((coco_mini / "images" / "val2017").glob("*.jpg"))[:count]
    assert len(files) == count
    return files


def _random_image(height, width, seed=0, mode="RGB"):
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(array).convert(mode)


def _jpeg(image: PIL.Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


# -- recipes ---------------------------------------------------------------------------------------------------


def test_recipes_follow_each_processor_config(processors):
    clip = ImageRecipe.from_processor(processors["clip"])
    assert clip.resize == ("shortest_edge", 224) and clip.crop == (224, 224)
    assert clip.resample == PIL.Image.Resampling.BICUBIC and clip.rescale == pytest.approx(1 / 255)
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    siglip = ImageRecipe.from_processor(processors["siglip"])
    assert siglip.resize == ("fixed", 224, 224) and siglip.crop is None and siglip.mean == (0.5, 0.5, 0.5)
    vit = ImageRecipe.from_processor(processors["vit"])  # what VisionTextDualEncoderProcessor wraps
    assert vit.resample == PIL.Image.Resampling.BILINEAR and vit.resize == ("fixed", 224, 224)

    from transformers import CLIPImageProcessor

    custom = ImageRecipe.from_processor(CLIPImageProcessor(
        size={"shortest_edge": 40}, crop_size={"height": 32, "width": 24}, resample=PIL.Image.Resampling.LANCZOS,
        rescale_factor=0.5, image_mean=[0.1, 0.2, 0.3], image_std=[1.0, 2.0, 3.0]))
    assert custom == ImageRecipe(("shortest_edge", 40), 1, (32, 24), 0.5, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    bare = ImageRecipe.from_processor(CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False,
                                                         do_normalize=False))
    assert (bare.resize, bare.crop, bare.rescale, bare.mean, bare.std) == (None, None, None, None, None)
    assert clip.resized_size(480, 640) == (224, 298) and clip.resized_size(640, 427) == (335, 224)


def test_unknown_processor_falls_back_to_itself_with_one_notice(caplog):
    class MyProcessor:
        size = {"shortest_edge": 8}

        def __call__(self, images, return_tensors):
            return {"pixel_values": torch.stack([torch.full((3, 2, 2), float(np.asarray(i).mean())) for i in images])}

    image_pipeline._noticed.clear()
    with caplog.at_level(logging.WARNING, logger="hf_hardneg.data.image_pipeline"):
        first = ImagePipeline(MyProcessor(), tier="device")
        ImagePipeline(MyProcessor(), tier="cpu")
    assert first.tier == "processor" and ImageRecipe.from_processor(MyProcessor()) is None
    notices = [r for r in caplog.records if "MyProcessor" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()
    batch = first([_random_image(4, 4)])
    assert batch["pixel_values"].shape == (1, 3, 2, 2)


def test_resolve_tier():
    assert resolve_tier("auto", "cuda:0") == "device" and resolve_tier("auto", "cpu") == "cpu"
    assert resolve_tier("auto", None) == "cpu" and resolve_tier("processor", "cuda") == "processor"
    with pytest.raises(ValueError, match="one of auto, device, cpu, processor"):
        resolve_tier("gpu")


# -- pixel parity ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip", "siglip", "vit"])
def test_both_tiers_match_the_processor_on_fully_decoded_coco_images(coco_mini, processors, name):
    processor = processors[name]
    files = _coco_files(coco_mini)
    expected = processor(images=[PIL.Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
    for tier in ("cpu", "device"):
        for draft in (True, False):
            got = finish_images(ImagePipeline(processor, tier=tier, draft_decode=draft)(files))["pixel_values"]
            assert got.shape == expected.shape and got.dtype == torch.float32
            difference = (got - expected).abs().mean().item()
            assert difference <= 0.03, (tier, draft, difference)
            if tier == "cpu" and not draft:  # the processor's own uint8 resize and float32 arithmetic
                assert torch.equal(got, expected)
            if tier == "device" and not draft:  # float resize: only rounding-level differences
                assert difference < 0.005


def test_mixed_sizes_and_images_smaller_than_the_crop(processors):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 30, "width": 20})
    images = [_random_image(40, 64, 1), _random_image(64, 40, 2), _random_image(40, 64, 3), _random_image(9, 13, 4)]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    cpu = ImagePipeline(processor, tier="cpu", draft_decode=False)(images)["pixel_values"]
    assert torch.equal(cpu, expected)  # zero padding where the resized image is narrower than the crop
    fast = ImagePipeline(processor, tier="cpu")(images)["pixel_values"]  # only the crop region resized
    assert (fast - expected).abs().mean() < 0.005
    packed = ImagePipeline(processor, tier="device")(images)
    assert packed["packed_pixel_values"].dtype == torch.uint8 and packed["packed_pixel_values"].shape[0] == 4
    assert packed["packed_pixel_values_sizes"] == ((40, 64), (64, 40), (40, 64), (9, 13))  # host ints
    device = finish_images(packed)
    assert set(device) == {"pixel_values"}
    assert device["pixel_values"].shape == expected.shape
    assert (device["pixel_values"] - expected).abs().mean() < 0.02
    assert torch.equal(device["pixel_values"][3, :, :3], expected[3, :, :3])  # zero-padded rows, normalised alike


def test_filters_without_a_torch_equivalent_resize_in_the_worker(processors):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                   resample=PIL.Image.Resampling.LANCZOS)
    images = [_random_image(30, 50, 5), _random_image(50, 30, 6)]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    packed = ImagePipeline(processor, tier="device", draft_decode=False)(images)
    assert packed["packed_pixel_values_sizes"] == ((16, 16), (16, 16))
    assert torch.allclose(finish_images(packed)["pixel_values"], expected, atol=1e-5)
    fast = ImagePipeline(processor, tier="cpu")(images)["pixel_values"]  # Pillow resizes only the crop's region
    assert 0 < (fast - expected).abs().mean() < 0.01


def test_shortest_edge_without_crop_gives_a_clear_error():
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 16}, do_center_crop=False)
    images = [_random_image(30, 50), _random_image(50, 30)]
    for tier in ("cpu", "device"):
        with pytest.raises(ValueError, match="different sizes .*do_center_crop=True"):
            finish_images(ImagePipeline(processor, tier=tier)(images))


# -- decoding ------------------------------------------------------------------------------------------------------


def test_decoding_matches_pillow_for_every_mode(tmp_path):
    rgb = _random_image(48, 64)
    cases = {
        "rgb.jpg": _jpeg(rgb),
        "gray.jpg": _jpeg(rgb.convert("L")),
        "cmyk.jpg": _jpeg(rgb.convert("CMYK")),
    }
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    cases["rotated.jpg"] = _jpeg(rgb, exif=exif)
    buffer = io.BytesIO()
    rgba = rgb.convert("RGBA")
    rgba.putalpha(100)
    rgba.save(buffer, format="PNG")
    cases["rgba.png"] = buffer.getvalue()
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20).save(buffer, format="PNG")
    cases["16bit.png"] = buffer.getvalue()
    buffer = io.BytesIO()
    rgb.convert("P").save(buffer, format="PNG")
    cases["palette.png"] = buffer.getvalue()
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for source in (path, str(path), data, {"path": None, "bytes": data}, {"path": str(path), "bytes": None}):
            for target in (None, {"shortest_edge": 8}):
                got, expected = decode_rgb(source, target), np.asarray(open_image(source, target))
                assert got.dtype == np.uint8 and np.array_equal(got, expected), (name, target)
    assert decode_rgb(rgb).shape == (48, 64, 3) and decode_rgb(np.zeros((2, 3, 3), np.uint8)).shape == (2, 3, 3)


def test_corrupt_and_truncated_files_still_name_the_file(tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(_jpeg(_random_image(64, 64))[:300])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    for path in (truncated, broken, tmp_path / "missing.jpg"):
        with pytest.raises(CorruptImageError, match=path.name):
            decode_rgb({"path": str(path), "bytes": None}, {"shortest_edge": 8})


def test_fast_decoder_is_bit_identical_to_pillow_on_coco(coco_mini):
    if not fast_jpeg_available():
        pytest.skip("simplejpeg is not installed (pip install hf_hardneg[fastjpeg])")
    for file in _coco_files(coco_mini, 8):
        assert image_pipeline._fast_jpeg(file.read_bytes(), None) is not None  # the fast path is taken
        for target in (None, {"shortest_edge": 32}, {"shortest_edge": 224}):
            assert np.array_equal(decode_rgb(file, target), np.asarray(open_image(file, target)))


# -- wiring: collator, DataLoader workers, trainer, evaluator ------------------------------------------------------


def _rows(count=6):
    return [{"image": _random_image(36 + 4 * (i % 2), 40, i), "caption": "a cat", "negative_1": "a dog",
             "negative_image_1": _random_image(40, 36, 10 + i)} for i in range(count)]


def test_collator_tiers_agree_and_device_batches_keep_the_batch_size_first(tiny_clip_dir):
    from transformers import AutoImageProcessor, AutoTokenizer

    from hf_hardneg.collator import HardNegativeCollator

    tokenizer, processor = AutoTokenizer.from_pretrained(tiny_clip_dir), AutoImageProcessor.from_pretrained(tiny_clip_dir)
    rows = _rows()
    cpu = HardNegativeCollator(tokenizer, processor, image_preprocessing="cpu")(rows)
    collator = HardNegativeCollator(tokenizer, processor, image_preprocessing="device")
    device = collator(rows)
    assert collator.image_tier == "device" and next(iter(device)) == "packed_pixel_values"
    assert device["packed_pixel_values"].shape[0] == len(rows)
    finished = finish_images(device)
    assert "image_recipe" not in finished and not any(k.startswith("packed_") for k in finished)
    for key in ("pixel_values", "negative_pixel_values"):
        assert finished[key].shape == cpu[key].shape
        assert (finished[key] - cpu[key]).abs().mean() < 0.03
    assert torch.equal(finished["input_ids"], cpu["input_ids"])
    auto = HardNegativeCollator(tokenizer, processor)
    assert auto.image_tier == "cpu" and auto.for_device("cuda").image_tier == "device"
    assert auto.for_device("cpu").image_tier == "cpu"


def test_device_batches_come_through_dataloader_workers(tiny_clip_dir):
    from transformers import AutoImageProcessor

    pipeline = ImagePipeline(AutoImageProcessor.from_pretrained(tiny_clip_dir), tier="device")
    images = [_random_image(36 + i, 40, i) for i in range(4)]
    loader = torch.utils.data.DataLoader(images, batch_size=2, num_workers=1,
                                         collate_fn=lambda batch: pipeline([image for image in batch]))
    batches = [finish_images(batch)["pixel_values"] for batch in loader]
    assert torch.equal(torch.cat(batches), finish_images(pipeline(images))["pixel_values"])


def test_trainer_finishes_device_batches_in_its_input_step(tmp_path, tiny_clip_dir, tiny_captions):
    from test_trainer import hand_loss, load_tiny, make_args, make_rows

    from hf_hardneg.data.prepare import prepare_image_column
    from hf_hardneg.loss import replacement_generator
    from hf_hardneg.trainer import HardNegCLIPTrainer

    model, tokenizer, image_processor = load_tiny(tiny_clip_dir, torch.float64)
    rows = make_rows(tiny_captions)
    trainer = HardNegCLIPTrainer(model, make_args(tmp_path, num_hard_negatives=1, substitution_seed=3,
                                                  image_preprocessing="device"),
                                 train_dataset=rows, eval_dataset=rows,
                                 processing_class=tokenizer, image_processor=image_processor)
    assert trainer.data_collator.image_tier == "device"
    loss = trainer.evaluate()["eval_loss"]
    batch = trainer.data_collator(list(prepare_image_column(rows)))
    assert "packed_pixel_values" in batch
    with torch.no_grad():
        expected = hand_loss(model, finish_images(batch), replacement_generator(3, -1))
    assert loss == pytest.approx(expected.item(), rel=1e-9)
    trainer.train()  # three steps through training_step -> _prepare_inputs
    assert all(np.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)
    auto = HardNegCLIPTrainer(model, make_args(tmp_path), train_dataset=rows, processing_class=tokenizer,
                              image_processor=image_processor)
    assert auto.data_collator.image_tier == "cpu"  # auto on a CPU-only run


def test_evaluator_embeds_the_same_in_both_tiers(tiny_clip_dir):
    from hf_hardneg.evaluation.encoding import Embedder

    images = [_random_image(30 + 3 * i, 40, i) for i in range(5)]
    cpu = Embedder.from_pretrained(tiny_clip_dir, device="cpu", progress=False, batch_size=2,
                                   image_preprocessing="cpu")
    reference = Embedder.from_pretrained(tiny_clip_dir, device="cpu", progress=False, image_preprocessing="processor")
    device = Embedder.from_pretrained(tiny_clip_dir, device="cpu", progress=False, batch_size=2,
                                      image_preprocessing="device")
    expected = reference.embed_images(images)
    assert torch.allclose(cpu.embed_images(images), expected, atol=2e-3)  # torch's uint8 resize: a few pixels differ
    assert torch.allclose(device.embed_images(images), expected, atol=0.05)
