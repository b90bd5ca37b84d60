"""HardNegativeCollator: exact tensors, text order, padding rules, image sources, corrupt images."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

from hf_hardneg.collator import HardNegativeCollator, count_negative_columns
from hf_hardneg.models import text_padding_for
from hf_hardneg.data.images import CorruptImageError
from hf_hardneg.testing import BOS_ID, EOS_ID, PAD_ID, build_word_tokenizer

WORDS = "a white brown black cat dog sits on the red blue bus mat".split()


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([" ".join(WORDS)], max_length=32)


@pytest.fixture(scope="module")
def image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})


def _ids(tokenizer, text: str, width: int) -> list[int]:
    body = [BOS_ID] + tokenizer.convert_tokens_to_ids(text.split()) + [EOS_ID]
    return body + [PAD_ID] * (width - len(body))


def _image(seed: int, mode: str = "RGB", size=(12, 10)) -> PIL.Image.Image:
    array = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    rgba = PIL.Image.fromarray(array, mode="RGBA")
    return rgba if mode == "RGBA" else rgba.convert(mode)


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    _image(seed, size=(64, 48)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_exact_tensors_positives_first_then_negatives_image_major(tokenizer, image_processor):
    rows = [
        {"image": _image(0, "L"), "caption": "a white cat", "negative_1": "a brown cat", "negative_2": "a black cat"},
        {"image": _image(1, "RGBA"), "caption": "the red bus on the mat", "negative_1": "the blue bus on the mat",
         "negative_2": "the red bus on the dog"},
    ]
    batch = HardNegativeCollator(tokenizer, image_processor)(rows)

    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "num_hard_negatives"}
    assert batch["num_hard_negatives"] == 2
    texts = ["a white cat", "the red bus on the mat",  # positives
             "a brown cat", "a black cat",  # image 0's negatives
             "the blue bus on the mat", "the red bus on the dog"]  # image 1's negatives
    expected_ids = torch.tensor([_ids(tokenizer, t, 8) for t in texts])  # longest is 8 tokens: already a multiple
    assert torch.equal(batch["input_ids"], expected_ids)
    assert torch.equal(batch["attention_mask"], (expected_ids != PAD_ID).long())

    # grayscale -> RGB by replication; RGBA composited on white
    gray = np.asarray(rows[0]["image"])
    rgba = np.asarray(rows[1]["image"]).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    on_white = np.rint(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    expected_images = [PIL.Image.fromarray(np.stack([gray] * 3, axis=-1)), PIL.Image.fromarray(on_white)]
    expected_pixels = image_processor(images=expected_images, return_tensors="pt")["pixel_values"]
    assert batch["pixel_values"].shape == (2, 3, 8, 8)
    assert torch.allclose(batch["pixel_values"], expected_pixels, atol=0.02)  # compositing may round by 1/255


def test_dynamic_padding_rounds_up_to_multiple_of_8_and_caps_at_max_length(tokenizer, image_processor):
    row = {"image": _image(0), "caption": "a cat sits on the mat", "negative_1": "a dog"}
    batch = HardNegativeCollator(tokenizer, image_processor)([row])
    assert batch["input_ids"].shape == (2, 8)  # 8 tokens with BOS/EOS
    row["caption"] = "a white cat sits on the red mat"  # 10 tokens -> 16
    batch = HardNegativeCollator(tokenizer, image_processor)([row])
    assert torch.equal(batch["input_ids"][0], torch.tensor(_ids(tokenizer, row["caption"], 16)))
    assert torch.equal(batch["input_ids"][1], torch.tensor(_ids(tokenizer, "a dog", 16)))

    capped = HardNegativeCollator(tokenizer, image_processor, max_length=10)([row])
    assert capped["input_ids"].shape == (2, 10)  # 16 would exceed the model's 10 positions
    assert torch.equal(capped["input_ids"][0], torch.tensor(_ids(tokenizer, row["caption"], 10)))

    row["caption"] = "a white cat sits on the red mat on the blue bus"  # 14 tokens, truncated at 10
    truncated = HardNegativeCollator(tokenizer, image_processor, max_length=10)([row])
    assert truncated["input_ids"].shape == (2, 10)
    assert truncated["input_ids"][0, -1].item() == EOS_ID  # special tokens survive truncation

    full = HardNegativeCollator(tokenizer, image_processor, padding="max_length")([row])
    assert full["input_ids"].shape == (2, 32)  # SigLIP-style: always the model's maximum


def test_left_padding_cap_keeps_the_tokens(image_processor):
    left = build_word_tokenizer([" ".join(WORDS)], max_length=10)
    left.padding_side = "left"
    row = {"image": _image(0), "caption": "a white cat sits on the red mat", "negative_1": "a dog"}
    batch = HardNegativeCollator(left, image_processor)([row])
    body = [BOS_ID] + left.convert_tokens_to_ids(row["caption"].split()) + [EOS_ID]
    assert batch["input_ids"].shape == (2, 10)
    assert batch["input_ids"][0].tolist() == body
    assert batch["input_ids"][1].tolist()[-4:] == [BOS_ID, *left.convert_tokens_to_ids(["a", "dog"]), EOS_ID]
    assert batch["attention_mask"][1].tolist() == [0] * 6 + [1] * 4


def test_number_of_negatives_auto_explicit_and_errors(tokenizer, image_processor):
    row = {"image": _image(0), "caption": "a cat", "negative_1": "a dog", "negative_2": "a bus", "image_id": 7}
    auto = HardNegativeCollator(tokenizer, image_processor)
    assert auto([row])["input_ids"].shape[0] == 3 and auto.num_hard_negatives == 2
    classic = HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=0)([row])
    assert classic["num_hard_negatives"] == 0 and classic["input_ids"].shape[0] == 1

    with pytest.raises(KeyError, match=r"row 0 of the batch \(image_id=7\) has no column 'negative_3'"):
        HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=3)([row])
    with pytest.raises(ValueError, match="None in 'negative_2'.*keep_only_matching"):
        HardNegativeCollator(tokenizer, image_processor)([row, {**row, "negative_2": None}])
    with pytest.raises(KeyError, match="has no column 'text'"):
        HardNegativeCollator(tokenizer, image_processor, caption_column="text")([row])
    with pytest.raises(KeyError, match="has no column 'picture'"):
        HardNegativeCollator(tokenizer, image_processor, image_column="picture")([row])
    with pytest.raises(ValueError, match="without gaps"):
        count_negative_columns(["caption", "negative_1", "negative_3"])
    assert count_negative_columns(["negative_2", "caption", "negative_1"]) == 2


def test_tokenizer_without_max_length_needs_one(image_processor):
    unbounded = build_word_tokenizer(WORDS, max_length=int(1e30))
    with pytest.raises(ValueError, match="pass max_length"):
        HardNegativeCollator(unbounded, image_processor)
    assert HardNegativeCollator(unbounded, image_processor, max_length=16).max_length == 16


def test_image_sources_paths_bytes_and_datasets_entries(tmp_path, tokenizer, image_processor):
    from datasets import Dataset, Image

    paths = []
    for seed in range(2):
        paths.append(tmp_path / f"img{seed}.jpg")
        paths[-1].write_bytes(_jpeg(seed))
    collator = HardNegativeCollator(tokenizer, image_processor, draft_decode=False)
    expected = image_processor(images=[PIL.Image.open(p).convert("RGB") for p in paths],
                               return_tensors="pt")["pixel_values"]
    as_paths = collator([{"image": str(p), "caption": "a cat"} for p in paths])
    assert torch.equal(as_paths["pixel_values"], expected)

    dataset = Dataset.from_dict({"image": [str(p) for p in paths], "caption": ["a cat", "a dog"]})
    dataset = dataset.cast_column("image", Image(decode=False))
    assert isinstance(dataset[0]["image"], dict)
    assert torch.equal(collator(list(dataset))["pixel_values"], expected)

    drafted = HardNegativeCollator(tokenizer, image_processor)([{"image": str(paths[0]), "caption": "a cat"}])
    assert drafted["pixel_values"].shape == (1, 3, 8, 8)  # 64x48 decoded at 1/4 scale, then resized


def test_corrupt_image_error_names_row_and_file(tmp_path, tokenizer, image_processor):
    bad = tmp_path / "000000000042.jpg"
    bad.write_bytes(b"not a jpeg")
    rows = [{"image": _image(0), "caption": "a cat", "image_id": 1},
            {"image": str(bad), "caption": "a dog", "image_id": 42}]
    with pytest.raises(CorruptImageError) as info:
        HardNegativeCollator(tokenizer, image_processor)(rows)
    message = str(info.value)
    assert "row 1 of the batch (image_id=42)" in message and "000000000042.jpg" in message
    assert "skip_corrupt_images=True" in message


def test_skipping_corrupt_images_drops_the_row_and_its_negatives(tmp_path, tokenizer, image_processor, caplog):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    rows = [{"image": _image(0), "caption": "a white cat", "negative_1": "a black cat"},
            {"image": {"path": str(bad), "bytes": None}, "caption": "a red bus", "negative_1": "a blue bus"},
            {"image": _image(2), "caption": "a dog", "negative_1": "a cat"}]
    collator = HardNegativeCollator(tokenizer, image_processor, skip_corrupt_images=True)
    with caplog.at_level(logging.WARNING, logger="hf_hardneg.collator"):
        batch = collator(rows)
    assert batch["num_skipped_images"] == 1
    assert batch["pixel_values"].shape[0] == 2
    kept = ["a white cat", "a dog", "a black cat", "a cat"]
    assert torch.equal(batch["input_ids"], torch.tensor([_ids(tokenizer, t, 8) for t in kept]))
    assert "row 1 of the batch" in caplog.text and "bad.png" in caplog.text

    with pytest.raises(CorruptImageError, match="all 1 images of this batch failed"):
        collator([rows[1]])
    # a text problem is never silently skipped
    with pytest.raises(ValueError, match="None in 'negative_1'"):
        collator([{**rows[0], "negative_1": None}])


def test_text_padding_for_siglip_is_max_length():
    def model(model_type):
        return SimpleNamespace(config=SimpleNamespace(model_type=model_type))

    assert text_padding_for(model("siglip")) == "max_length"
    assert text_padding_for(model("siglip2")) == "max_length"
    assert text_padding_for(model("clip")) == "longest"
    assert text_padding_for(model("vision-text-dual-encoder")) == "longest"
