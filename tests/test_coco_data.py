"""load_coco_captions on the real COCO slice, and its errors on broken files."""

from __future__ import annotations

import json
import logging

import PIL.Image
import pytest
from datasets import Image, Value

from hf_hardneg.data import load_coco_captions, read_captions


@pytest.fixture(scope="module")
def val_json(coco_mini):
    return coco_mini / "annotations" / "captions_val2017.json"


@pytest.fixture(scope="module")
def val_images(coco_mini):
    return coco_mini / "images" / "val2017"


def test_one_row_per_caption_with_licence(val_json, val_images):
    raw = json.loads(val_json.read_text(encoding="utf-8"))
    ds = load_coco_captions(val_json, val_images)
    assert len(ds) == len(raw["annotations"]) == 795
    assert list(ds.features) == ["image", "caption", "image_id", "caption_id", "license", "license_name",
                                 "license_url", "file_name", "coco_url", "flickr_url"]
    assert isinstance(ds.features["image"], Image)
    assert ds.features["image_id"] == Value("int64")

    first = raw["annotations"][0]
    image = next(i for i in raw["images"] if i["id"] == first["image_id"])
    lic = next(x for x in raw["licenses"] if x["id"] == image["license"])
    row = ds[0]
    assert row["caption"] == first["caption"].strip()
    assert (row["image_id"], row["caption_id"]) == (first["image_id"], first["id"])
    assert (row["license"], row["license_name"], row["license_url"]) == (lic["id"], lic["name"], lic["url"])
    assert (row["file_name"], row["coco_url"], row["flickr_url"]) == (
        image["file_name"], image["coco_url"], image["flickr_url"])
    assert row["image"].size == (image["width"], image["height"])
    # NoDerivs licences (ids 3 and 6) stay visible per row, so users can exclude them
    assert {3, 6} & set(ds["license"])


def test_train_split_and_unstripped_captions(coco_mini):
    ds = load_coco_captions(coco_mini / "annotations" / "captions_train2017.json", coco_mini / "images" / "train2017",
                            strip_captions=False)
    assert len(ds) == 400
    assert any(c.endswith(" ") for c in ds["caption"])


def _write(tmp_path, data, name="captions.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def _tiny_coco(tmp_path, captions):
    (tmp_path / "img").mkdir(exist_ok=True)
    PIL.Image.new("RGB", (4, 3), "red").save(tmp_path / "img" / "1.jpg")
    return {
        "licenses": [{"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}],
        "images": [{"id": 1, "file_name": "1.jpg", "license": 4, "coco_url": "c", "flickr_url": "f"}],
        "annotations": [{"id": 10 + i, "image_id": 1, "caption": c} for i, c in enumerate(captions)],
    }


def test_invalid_captions_raise_naming_file_and_annotation(tmp_path):
    path = _write(tmp_path, _tiny_coco(tmp_path, ["a cat", None]))
    with pytest.raises(ValueError, match=r"captions.json: annotations\[1\] \(caption id 11, image 1\): caption is missing"):
        load_coco_captions(path, tmp_path / "img")
    path = _write(tmp_path, _tiny_coco(tmp_path, ["a cat", 42]))
    with pytest.raises(ValueError, match=r"annotations\[1\].*a int, not a string"):
        load_coco_captions(path, tmp_path / "img")


def test_invalid_captions_skipped_are_counted(tmp_path, caplog):
    path = _write(tmp_path, _tiny_coco(tmp_path, ["a cat", None, "  ", 3, "a dog "]))
    with caplog.at_level(logging.WARNING, logger="hf_hardneg.data.coco"):
        ds = load_coco_captions(path, tmp_path / "img", on_invalid="skip")
    assert ds["caption"] == ["a cat", "a dog"]
    assert "skipped 3 invalid caption(s)" in caplog.text and "annotations[1] (id 11)" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"annotations": [', r"captions.json: not valid JSON \(line 1, column 18\)"),
        ("[1, 2]", "not a COCO caption file"),
        ({"annotations": [{"id": 1, "caption": "a cat"}]}, r"annotations\[0\] has no 'image_id' field"),
        ({"annotations": [{"id": "x", "image_id": 1, "caption": "a"}]}, "'id' must be an integer"),
        ({"images": [], "annotations": [{"id": 1, "image_id": 5, "caption": "a cat"}]},
         r"refers to image 5, which is not in the file's 'images' list"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, content, message):
    (tmp_path / "img").mkdir()
    with pytest.raises(ValueError, match=message):
        load_coco_captions(_write(tmp_path, content), tmp_path / "img")


def test_missing_files_and_folders(tmp_path, val_json, coco_mini):
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        load_coco_captions(tmp_path / "nope.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="images folder not found"):
        load_coco_captions(val_json, tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"795|159 image file\(s\) referenced by .* are not in"):
        load_coco_captions(val_json, coco_mini / "images" / "train2017")
    ds = load_coco_captions(val_json, tmp_path, verify_files=False)
    assert len(ds) == 795


def test_unknown_licence_is_kept_with_empty_name(tmp_path, caplog):
    data = _tiny_coco(tmp_path, ["a cat"])
    data["images"][0]["license"] = 99
    with caplog.at_level(logging.WARNING, logger="hf_hardneg.data.coco"):
        ds = load_coco_captions(_write(tmp_path, data), tmp_path / "img")
    assert ds[0]["license"] == 99 and ds[0]["license_name"] is None
    assert ds[0]["image"].size == (4, 3)
    assert "licence id(s) [99]" in caplog.text


def test_read_captions_formats(tmp_path, val_json):
    coco = read_captions(val_json)
    assert len(coco) == 795 and coco[0].where == "annotations[0] (id 11734)"
    assert read_captions(_write(tmp_path, ["a cat", {"caption": "a dog", "id": 4}], "l.json"))[1].caption_id == 4
    jsonl = _write(tmp_path, '{"caption": "a cat"}\n\n"a dog"\n', "c.jsonl")
    records = read_captions(jsonl)
    assert [(r.caption, r.where) for r in records] == [("a cat", "line 1"), ("a dog", "line 3")]
    with pytest.raises(ValueError, match=r"c2.jsonl: line 2 is not valid JSON"):
        read_captions(_write(tmp_path, '{"caption": "a"}\n{oops\n', "c2.jsonl"))
    txt = read_captions(_write(tmp_path, "a cat\n\na dog\n", "c.txt"))
    assert [r.caption for r in txt] == ["a cat", "", "a dog"]


def test_load_inpaintcoco_is_lazy():
    import hf_hardneg.data as data

    assert "load_inpaintcoco" in dir(data)
    with pytest.raises(AttributeError):
        data.no_such_loader  # noqa: B018


def test_bundled_example_captions_cover_every_concept():
    from hf_hardneg.concepts import CONCEPTS
    from hf_hardneg.data import EXAMPLE_CAPTIONS, load_example_captions
    from hf_hardneg.substitution import find_keywords

    captions = load_example_captions()
    assert len(captions) >= 30 and all(isinstance(c, str) and c.strip() for c in captions)
    assert EXAMPLE_CAPTIONS.is_file()
    for name in CONCEPTS:
        assert sum(bool(find_keywords(c, name)) for c in captions) >= 10, name
