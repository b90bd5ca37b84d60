"""Original/edited image pairs as training rows, the collator's hard-negative images, and train.py on real edits.

The edits are made at test time from coco-mini: an object of the photograph recoloured
through its COCO polygon mask, with the caption's colour word changed to match.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import ImageDraw, ImageOps

from hf_hardneg.collator import HardNegativeCollator
from hf_hardneg.data.paired_edits import paired_edit_rows
from hf_hardneg.testing import make_tiny_model

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange")


def _pairs(n=3, unchanged=False):
    from datasets import Dataset

    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(2 * n + 2)]
    before = [f"a red ball number {i}" for i in range(n)] + (["A cat."] if unchanged else [])
    after = [f"a blue ball number {i}" for i in range(n)] + ([" a cat. "] if unchanged else [])  # no change
    rows = len(before)
    return Dataset.from_dict({"coco_image": images[:rows], "inpaint_image": images[rows: 2 * rows],
                              "coco_caption": before, "inpaint_caption": after})


def test_each_pair_gives_two_rows_whose_negatives_are_the_other_side(caplog):
    pairs = _pairs(unchanged=True)
    with caplog.at_level(logging.WARNING, logger="hf_hardneg"):
        rows = paired_edit_rows(pairs)
    assert "left out 1 of 4 pairs" in caplog.text
    assert rows.column_names == ["image", "caption", "negative_1", "negative_image_1", "edit_side", "pair_index"]
    assert rows["edit_side"] == ["original", "edited"] * 3 and rows["pair_index"] == [0, 0, 1, 1, 2, 2]
    first, second = rows[0], rows[1]
    assert (first["caption"], first["negative_1"]) == ("a red ball number 0", "a blue ball number 0")
    assert (second["caption"], second["negative_1"]) == ("a blue ball number 0", "a red ball number 0")
    assert first["image"] == second["negative_image_1"] and second["image"] == first["negative_image_1"]
    assert paired_edit_rows(pairs, pairing="edited")["edit_side"] == ["edited"] * 3
    with pytest.raises(ValueError, match=r"no column\(s\) \['after'\]"):
        paired_edit_rows(pairs, edited_image_column="after")


def test_collator_decodes_the_hard_negative_images_on_the_same_path(tiny_captions):
    _, tokenizer, image_processor = make_tiny_model(tiny_captions)
    rows = list(paired_edit_rows(_pairs(), pairing="original"))
    for row in rows:
        row["negative_image_2"] = row["image"]  # m = 2: a second, image-major
    batch = HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=1)(rows)
    assert batch["num_hard_negative_images"] == 2
    assert batch["negative_pixel_values"].shape == (6, *batch["pixel_values"].shape[1:])
    # exactly what the image processor makes of those images, in the order [row0 neg1, row0 neg2, row1 neg1, ...]
    single = HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=1, num_hard_negative_images=0)
    expected = [single([{**row, "image": row[f"negative_image_{j}"]}])["pixel_values"][0]
                for row in rows for j in (1, 2)]
    torch.testing.assert_close(batch["negative_pixel_values"], torch.stack(expected), rtol=0, atol=0)
    with pytest.raises(KeyError, match="negative_image_3"):
        HardNegativeCollator(tokenizer, image_processor, num_hard_negatives=1, num_hard_negative_images=3)(rows)


def _recoloured_pairs(coco_mini, limit=12):
    """(photograph, caption) -> (photograph with one object recoloured through its mask, caption with the new colour)."""
    ann_dir = coco_mini / "annotations"
    captions = json.loads((ann_dir / "captions_val2017.json").read_text())
    instances = json.loads((ann_dir / "instances_val2017.json").read_text())
    images = {img["id"]: img for img in captions["images"]}
    by_image = {}
    for ann in instances["annotations"]:
        if isinstance(ann["segmentation"], list) and ann["area"] > by_image.get(ann["image_id"], {}).get("area", 0):
            by_image[ann["image_id"]] = ann
    rows = {"coco_image": [], "coco_caption": [], "inpaint_image": [], "inpaint_caption": []}
    for ann in captions["annotations"]:
        if len(rows["coco_caption"]) == limit:
            break
        words = ann["caption"].strip().split()
        colour = next((w for w in words if w.lower() in COLOURS), None)
        if colour is None or ann["image_id"] not in by_image or ann["image_id"] in {r for r in rows.get("_ids", [])}:
            continue
        image = images[ann["image_id"]]
        if image["license"] in (3, 6):  # NoDerivs: never edited
            continue
        with PIL.Image.open(coco_mini / "images" / "val2017" / image["file_name"]) as photo:
            photo = photo.convert("RGB").resize((64, 48))
        sx, sy = 64 / image["width"], 48 / image["height"]
        mask = PIL.Image.new("L", photo.size, 0)
        for poly in by_image[ann["image_id"]]["segmentation"]:
            ImageDraw.Draw(mask).polygon([(x * sx, y * sy) for x, y in zip(poly[::2], poly[1::2])], fill=255)
        edited = photo.copy()
        edited.paste(ImageOps.colorize(photo.convert("L"), black=(0, 0, 60), white=(140, 170, 255)), mask=mask)
        new = "blue" if colour.lower() != "blue" else "red"
        rows["coco_image"].append(photo)
        rows["inpaint_image"].append(edited)
        rows["coco_caption"].append(ann["caption"].strip())
        rows["inpaint_caption"].append(" ".join(new if w == colour else w for w in words))
    return rows


@pytest.mark.coco
@pytest.mark.slow
def test_train_script_trains_on_real_edit_pairs(train_script, coco_mini, tiny_clip_dir, tmp_path):
    from datasets import Dataset

    pairs = _recoloured_pairs(coco_mini)
    assert len(pairs["coco_caption"]) >= 8
    Dataset.from_dict(pairs).save_to_disk(tmp_path / "pairs")
    out = tmp_path / "run"
    code = train_script.main([
        "--model_name_or_path", str(tiny_clip_dir), "--dataset_path", str(tmp_path / "pairs"), "--paired_edits",
        "--image_column", "coco_image", "--caption_column", "coco_caption",
        "--num_hard_negatives", "1", "--num_hard_negative_images", "1", "--hard_negative_mode", "replace",
        "--per_device_train_batch_size", "8", "--max_steps", "3", "--logging_steps", "1", "--save_strategy", "no",
        "--use_cpu", "true", "--report_to", "none", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
        "--output_dir", str(out)])
    assert code == 0
    logs = [log for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in log]
    assert [log["step"] for log in logs] == [1, 2, 3]
    assert all(0 <= log["image_hard_negative_accuracy"] <= 1 and 0 <= log["hard_negative_accuracy"] <= 1
               for log in logs)
    with pytest.raises(ValueError, match="--num_hard_negative_images 2 but the training data has 1"):
        train_script.main(["--model_name_or_path", str(tiny_clip_dir), "--dataset_path", str(tmp_path / "pairs"),
                           "--paired_edits", "--image_column", "coco_image", "--caption_column", "coco_caption",
                           "--num_hard_negatives", "1", "--num_hard_negative_images", "2",
                           "--output_dir", str(tmp_path / "run2"), "--use_cpu", "true", "--report_to", "none"])
