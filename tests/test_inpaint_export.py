"""The export the annotation tool writes is exactly what `build-inpaintcoco` reads, provenance columns included."""

from __future__ import annotations

import csv
import io
import json
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from _inpaint_fixtures import catalog  # noqa: F401
from hf_hardneg.data.inpaintcoco import INPAINTCOCO_FEATURES, NO_DERIVS_LICENSE_IDS
from hf_hardneg.data.inpaintcoco_builder import build_inpaintcoco
from hf_hardneg.data.inpaintcoco_export import (
    OPTIONAL_COLUMNS,
    PROVENANCE_COLUMNS,
    REQUIRED_COLUMNS,
    InpaintCOCOBuildError,
)
from hf_hardneg.inpaint.export import TABLE_NAME, ExportFolder, SavedEdit

pytestmark = pytest.mark.coco


def _photo_with_keyword(catalog, word: str):
    """A derivative-friendly photograph one of whose captions holds ``word``, and that caption."""
    for image_id in sorted(catalog.index.images):
        photo = catalog.photo(image_id)
        caption = next((c for c in photo.captions if f" {word} " in f" {c.lower()} "), None)
        if caption and not photo.no_derivs and photo.path.is_file():
            return photo, caption
    raise AssertionError(f"coco-mini has no editable photograph with {word!r} in a caption")


def _edit(photo, caption: str, sample_id: str, **changes) -> SavedEdit:
    values = dict(
        sample_id=sample_id, coco_image_id=photo.image_id, concept="color", coco_caption=caption,
        inpaint_caption=caption.replace("white", "purple", 1), quality="okay", mask_prompt="white thing",
        inpaint_prompt="purple thing", coco_category=None, mask_threshold=0.35, mask_dilate_x=4, mask_dilate_y=2,
        mask_model="CIDAS/clipseg-rd64-refined", inpaint_model="stabilityai/stable-diffusion-2-inpainting",
        inpaint_seed=123456789, guidance_scale=7.5, num_inference_steps=50, annotator="ab",
        annotation_seconds=61.25,
    )
    values.update(changes)
    return SavedEdit(**values)


def _images(photo) -> tuple[Image.Image, Image.Image]:
    with Image.open(photo.path) as src:
        image = src.convert("RGB")
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (10, 10, image.width // 2, image.height // 2))
    edited = Image.composite(Image.new("RGB", image.size, (128, 0, 128)), image, mask)
    return edited, mask


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_export_rows_use_only_columns_the_builder_knows(catalog, tmp_path):
    photo, caption = _photo_with_keyword(catalog, "white")
    row = _edit(photo, caption, "color-x").row()
    assert set(REQUIRED_COLUMNS) <= set(row) <= set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    assert set(PROVENANCE_COLUMNS) <= set(row)
    assert row["inpaint_file_name"] == "inpainted/color-x.png" and row["mask_file_name"] == "masks/color-x.png"


def test_export_round_trips_through_the_builder_and_load_dataset(catalog, coco_mini, tmp_path):
    photo, caption = _photo_with_keyword(catalog, "white")
    export_dir = tmp_path / "export"
    edited, mask = _images(photo)
    with ExportFolder(export_dir, coco_dir=coco_mini) as export:
        sample_id = export.next_sample_id("color", photo.image_id)
        assert sample_id == f"color-{photo.image_id:012d}-0"  # the builder's default id
        export.add(_edit(photo, caption, sample_id), edited, mask)
        second = export.next_sample_id("color", photo.image_id)
        assert second.endswith("-1")
        export.add(_edit(photo, caption, second, inpaint_caption=caption + " Purple now.", quality="very good",
                         annotation_seconds=3.0, inpaint_seed=7), edited, mask)
        command = export.build_command(str(tmp_path / "out"))
    assert (export_dir / "coco").resolve() == coco_mini.resolve()
    assert command == f"hf-hardneg build-inpaintcoco --source {export_dir} --output {tmp_path / 'out'}"

    from hf_hardneg.cli import main

    assert main(command.split()[1:]) == 0  # the command it prints is the whole publishing step
    ds = datasets.load_dataset(str(tmp_path / "out"), "color", split="test", cache_dir=str(tmp_path / "cache"))
    assert ds.features == INPAINTCOCO_FEATURES and len(ds) == 2
    first = ds[0]
    assert first["sample_id"] == sample_id and first["coco_image_id"] == photo.image_id
    assert first["coco_caption"] == caption and first["inpaint_caption"] == caption.replace("white", "purple", 1)
    assert first["license_id"] == photo.license_id and first["license_id"] not in NO_DERIVS_LICENSE_IDS
    assert (first["mask_threshold"], first["mask_dilate_x"], first["mask_dilate_y"]) == (0.35, 4, 2)
    assert (first["inpaint_seed"], first["guidance_scale"], first["num_inference_steps"]) == (123456789, 7.5, 50)
    assert (first["annotator"], first["annotation_seconds"]) == ("ab", 61.25)
    assert first["worker"] == "ab" and first["inpaint_details"]["guidance_scale"] == 7.5  # the published columns
    assert first["mask_model"] == "CIDAS/clipseg-rd64-refined"
    assert first["inpaint_model"] == "stabilityai/stable-diffusion-2-inpainting"
    assert first["mask"].mode == "L" and first["mask"].size == (photo.width, photo.height)
    assert np.array_equal(np.asarray(first["mask"]), np.asarray(mask))
    assert np.array_equal(np.asarray(first["inpaint_image"]), np.asarray(edited))  # PNG: lossless
    assert ds[1]["quality"] == "very good" and ds[1]["inpaint_seed"] == 7
    raw = ds.cast_column("coco_image", datasets.Image(decode=False))
    assert raw[0]["coco_image"]["bytes"] == photo.path.read_bytes()


def test_export_reopens_with_its_rows_and_refuses_a_second_writer(catalog, tmp_path):
    photo, caption = _photo_with_keyword(catalog, "white")
    edited, mask = _images(photo)
    folder = ExportFolder(tmp_path / "e")
    folder.add(_edit(photo, caption, "color-a"), edited, mask)
    with pytest.raises(ValueError, match="already in"):
        folder.add(_edit(photo, caption, "color-a"), edited, mask)
    lock = tmp_path / "e" / ".hf-hardneg-inpaint.lock"
    lock.write_text("1\n")  # pid 1 is always alive: another annotation process holds the folder
    with pytest.raises(ValueError, match="is being written by process 1"):
        ExportFolder(tmp_path / "e")
    lock.write_text("999999999\n")  # a crashed process: its lock is taken over
    with ExportFolder(tmp_path / "e") as again:
        assert [r["sample_id"] for r in again.rows] == ["color-a"]
        assert again.done("color") == {photo.image_id}
    assert not lock.exists()


def test_a_broken_table_line_is_named_not_dropped(tmp_path):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / TABLE_NAME).write_text('{"sample_id": "a"}\n{not json\n')
    with pytest.raises(ValueError, match=rf"{TABLE_NAME} line 2 cannot be read .*fix or delete that line"):
        ExportFolder(folder)


def test_a_folder_with_a_csv_table_is_refused(tmp_path):
    (tmp_path / "annotations.csv").write_text("coco_image_id\n")
    with pytest.raises(ValueError, match="holds annotations.csv"):
        ExportFolder(tmp_path)


def test_a_crash_while_writing_the_table_keeps_the_old_one(catalog, tmp_path, monkeypatch):
    photo, caption = _photo_with_keyword(catalog, "white")
    edited, mask = _images(photo)
    folder = ExportFolder(tmp_path / "e")
    folder.add(_edit(photo, caption, "color-a"), edited, mask)
    before = (tmp_path / "e" / TABLE_NAME).read_bytes()

    real_replace = os.replace

    def crash_on_the_table(src, dst):
        if os.path.basename(dst) == TABLE_NAME:
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_table)
    with pytest.raises(OSError, match="disk gone"):
        folder.add(_edit(photo, caption, "color-b", inpaint_caption="b"), edited, mask)
    monkeypatch.undo()
    assert (tmp_path / "e" / "inpainted" / "color-b.png").is_file()  # the images were written first ...
    assert (tmp_path / "e" / TABLE_NAME).read_bytes() == before  # ... but the table is the old one, whole
    assert [r["sample_id"] for r in folder.rows] == ["color-a"]
    assert not [p for p in (tmp_path / "e").rglob("*.tmp")]  # no temporary file left behind
    folder.close()
    with ExportFolder(tmp_path / "e") as again:  # the retry after the crash saves the sample
        again.add(_edit(photo, caption, "color-b", inpaint_caption="b"), edited, mask)
        assert [r["sample_id"] for r in again.rows] == ["color-a", "color-b"]


# -- the builder's side: provenance columns in a hand-written CSV export ---------------------------
def _csv_export(tmp_path, catalog, coco_mini, rows_changes: list[dict]):
    photo, caption = _photo_with_keyword(catalog, "white")
    source = tmp_path / "src"
    (source / "edits").mkdir(parents=True)
    edited, mask = _images(photo)
    (source / "edits" / "m.png").write_bytes(_png(mask))
    base = {
        "coco_image_id": photo.image_id, "concept": "color", "coco_caption": caption,
        "inpaint_caption": caption.replace("white", "purple", 1),
        "quality": "okay", "mask_prompt": "white thing", "inpaint_prompt": "purple thing",
        "mask_file_name": "edits/m.png", "mask_threshold": "0.5", "mask_dilate_x": "3", "mask_dilate_y": "",
        "inpaint_seed": "42", "guidance_scale": "", "num_inference_steps": "25", "annotator": "pr",
        "annotation_seconds": "12.5", "mask_model": "", "inpaint_model": "my-inpainter",
    }
    rows = []
    for i, change in enumerate(rows_changes):
        row = dict(base, sample_id=f"s{i}", inpaint_caption=f"{base['inpaint_caption']} ({i})",
                   inpaint_file_name=f"edits/e{i}.png")
        (source / row["inpaint_file_name"]).write_bytes(_png(edited))
        row.update(change)
        rows.append(row)
    with (source / "annotations.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return source, photo


def test_builder_carries_provenance_columns_and_leaves_blanks_null(catalog, coco_mini, tmp_path):
    source, photo = _csv_export(tmp_path, catalog, coco_mini, [{}, {"mask_file_name": "", "inpaint_seed": ""}])
    report = build_inpaintcoco(source, tmp_path / "out", coco_dir=coco_mini)
    assert report.ignored_columns == []  # the provenance columns are known, not "extra"
    ds = datasets.load_dataset(str(tmp_path / "out"), split="test", cache_dir=str(tmp_path / "cache"))
    by_id = {row["sample_id"]: row for row in ds}
    full, bare = by_id["s0"], by_id["s1"]
    assert (full["mask_threshold"], full["mask_dilate_x"], full["mask_dilate_y"]) == (0.5, 3, None)
    assert (full["inpaint_seed"], full["guidance_scale"], full["num_inference_steps"]) == (42, None, 25)
    assert (full["annotator"], full["annotation_seconds"], full["mask_model"], full["inpaint_model"]) == (
        "pr", 12.5, None, "my-inpainter")
    assert full["mask"].size == (photo.width, photo.height)
    assert bare["mask"] is None and bare["inpaint_seed"] is None
    card = (tmp_path / "out" / "README.md").read_text()
    for name in PROVENANCE_COLUMNS:
        assert f"`{'mask' if name == 'mask_file_name' else name}`" in card


@pytest.mark.parametrize(
    "change, reason, message",
    [
        ({"inpaint_seed": "abc"}, "unreadable_row", "inpaint_seed='abc' is not a whole number"),
        ({"num_inference_steps": "2.5"}, "unreadable_row", "num_inference_steps='2.5' is not a whole number"),
        ({"mask_threshold": "high"}, "unreadable_row", "mask_threshold='high' is not a number"),
        ({"annotation_seconds": "-3"}, "unreadable_row", "annotation_seconds=-3.0 is negative"),
        ({"mask_file_name": "edits/none.png"}, "missing_image", "mask image 'edits/none.png' not found"),
        ({"mask_file_name": "../m.png"}, "missing_image", "must be a path relative to the export folder"),
        ({"mask_file_name": "edits/broken.png"}, "corrupt_image", "mask image broken.png cannot be decoded"),
    ],
)
def test_builder_rejects_bad_provenance_naming_the_row(catalog, coco_mini, tmp_path, change, reason, message):
    source, _ = _csv_export(tmp_path, catalog, coco_mini, [{}, change])
    (source / "edits" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InpaintCOCOBuildError) as err:
        build_inpaintcoco(source, tmp_path / "out", coco_dir=coco_mini)
    text = str(err.value)
    assert "annotations.csv line 3:" in text and f"[{reason}]" in text and message in text
    report = build_inpaintcoco(source, tmp_path / "out2", coco_dir=coco_mini, skip_invalid=True)
    assert report.written == 1 and report.skipped_by_reason == {reason: 1}
    saved = json.loads((tmp_path / "out2" / "build_report.json").read_text())
    assert saved["skipped"]["rows"][0]["row"] == "annotations.csv line 3"
