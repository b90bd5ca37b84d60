"""InpaintCOCO builder and loader, on a raw export made at test time from real COCO photographs.

The "inpainted" images are real COCO val2017 photographs (downscaled) whose annotated
object was recoloured, erased or shrunk through its polygon mask with Pillow, with new
captions that say so; only photographs whose licence allows derivatives are edited.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
from PIL import Image, ImageDraw, ImageOps, ImageStat

from hf_hardneg.data.inpaintcoco import (
    COCO_TEXT_LICENSE,
    INPAINTCOCO_CONCEPTS,
    INPAINTCOCO_FEATURES,
    NO_DERIVS_LICENSE_IDS,
    PUBLISHED_INPAINTCOCO_FEATURES,
    load_inpaintcoco,
)
from hf_hardneg.data.inpaintcoco_builder import REPORT_FILE_NAME, build_inpaintcoco, push_inpaintcoco
from hf_hardneg.data.inpaintcoco_export import (
    REQUIRED_COLUMNS,
    SKIP_REASONS,
    CocoIndex,
    InpaintCOCOBuildError,
    check_rows,
    read_table,
)

pytestmark = pytest.mark.coco
REPO_ROOT = Path(__file__).resolve().parents[1]
PER_CONCEPT = 3
TABLE_COLUMNS = [*REQUIRED_COLUMNS, "sample_id", "coco_annotation_id", "coco_category"]


# -- a raw export built from real photographs --------------------------------------------------
@pytest.fixture(scope="module")
def coco(coco_mini):
    ann_dir = coco_mini / "annotations"
    captions = json.loads((ann_dir / "captions_val2017.json").read_text())
    instances = json.loads((ann_dir / "instances_val2017.json").read_text())
    caps: dict[int, list[str]] = {}
    raw: dict[int, list[str]] = {}
    for ann in captions["annotations"]:
        caps.setdefault(ann["image_id"], []).append(ann["caption"].strip())
        raw.setdefault(ann["image_id"], []).append(ann["caption"])
    return SimpleNamespace(
        root=coco_mini,
        images_dir=coco_mini / "images" / "val2017",
        images={img["id"]: img for img in captions["images"]},
        licenses={lic["id"]: lic for lic in captions["licenses"]},
        captions=caps,
        raw_captions=raw,
        categories={cat["id"]: cat for cat in instances["categories"]},
        annotations=instances["annotations"],
    )


def _word(name: str) -> re.Pattern:
    return re.compile(rf"\b{re.escape(name)}(?:e?s)?\b", re.IGNORECASE)


def _candidates(coco) -> list[tuple[dict, dict, str]]:
    """(image, instance, caption): the largest polygon object per derivative-friendly image
    whose category name one of the image's captions mentions."""
    best: dict[int, tuple[dict, dict, str]] = {}
    supers = [c["supercategory"] for c in coco.categories.values()]
    for ann in sorted(coco.annotations, key=lambda a: (a["image_id"], a["id"])):
        image = coco.images[ann["image_id"]]
        if image["license"] in NO_DERIVS_LICENSE_IDS or ann["iscrowd"] or not isinstance(ann["segmentation"], list):
            continue
        if supers.count(coco.categories[ann["category_id"]]["supercategory"]) < 2:
            continue  # "person": no other object of its super-category to swap in
        if ann["area"] < 0.03 * image["width"] * image["height"]:
            continue
        name = coco.categories[ann["category_id"]]["name"]
        caption = next((c for c in coco.captions[image["id"]] if _word(name).search(c)), None)
        if caption and (image["id"] not in best or ann["area"] > best[image["id"]][1]["area"]):
            best[image["id"]] = (image, ann, caption)
    return [best[k] for k in sorted(best)]


def _edit(coco, image: dict, ann: dict, concept: str) -> Image.Image:
    """Recolour (color), erase (object) or shrink (size) the object inside its polygon mask."""
    with Image.open(coco.images_dir / image["file_name"]) as src:
        src.draft("RGB", (image["width"] // 4, image["height"] // 4))  # small, fast test images
        photo = src.convert("RGB")
    sx, sy = photo.width / image["width"], photo.height / image["height"]
    mask = Image.new("L", photo.size, 0)
    draw = ImageDraw.Draw(mask)
    for poly in ann["segmentation"]:
        draw.polygon([(x * sx, y * sy) for x, y in zip(poly[::2], poly[1::2])], fill=255)
    background = tuple(int(v) for v in ImageStat.Stat(photo, mask=ImageOps.invert(mask)).mean)
    edited = photo.copy()
    if concept == "color":
        blue = ImageOps.colorize(photo.convert("L"), black=(0, 0, 60), white=(140, 170, 255))
        edited.paste(blue, mask=mask)
    else:
        edited.paste(background, mask=mask)
        if concept == "size":
            box = mask.getbbox()
            small = (max(1, (box[2] - box[0]) // 2), max(1, (box[3] - box[1]) // 2))
            piece, piece_mask = photo.crop(box).resize(small), mask.crop(box).resize(small)
            edited.paste(piece, (box[0] + small[0] // 2, box[1] + small[1] // 2), piece_mask)
    return edited


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _make_rows(coco, source: Path) -> list[dict]:
    """PER_CONCEPT edits per concept on distinct photographs; returns table rows plus expectations."""
    (source / "inpainted").mkdir(parents=True, exist_ok=True)
    picks = _candidates(coco)
    assert len(picks) >= PER_CONCEPT * len(INPAINTCOCO_CONCEPTS), "coco-mini should offer enough editable objects"
    rows = []
    for i, (image, ann, caption) in enumerate(picks[: PER_CONCEPT * len(INPAINTCOCO_CONCEPTS)]):
        concept = INPAINTCOCO_CONCEPTS[i % len(INPAINTCOCO_CONCEPTS)]
        category = coco.categories[ann["category_id"]]
        name = category["name"]
        match = _word(name).search(caption)
        if concept == "object":
            sibling = next(
                c["name"] for c in coco.categories.values()
                if c["supercategory"] == category["supercategory"] and c["id"] != category["id"]
            )
            new_word, prompt = sibling, f"a {sibling}"
        elif concept == "color":
            new_word, prompt = f"blue {name}", f"completely blue {name}"
        else:
            new_word, prompt = f"tiny {name}", f"tiny {name}"
        new_caption = caption[: match.start()] + new_word + caption[match.start() + len(name):]
        file_name = f"inpainted/{image['id']}_{concept}.png"
        (source / file_name).write_bytes(_png(_edit(coco, image, ann, concept)))
        license = coco.licenses[image["license"]]
        row = {
            "coco_image_id": image["id"],
            "concept": concept,
            "coco_caption": caption,
            "inpaint_caption": new_caption,
            "inpaint_file_name": file_name,
            "quality": "very good" if i % 2 == 0 else "okay",
            "mask_prompt": name,
            "inpaint_prompt": prompt,
            # exercise all three ways to name the changed object and both id styles
            "sample_id": f"s{i:02d}" if i % 3 else "",
            "coco_annotation_id": ann["id"] if i % 3 == 1 else "",
            "coco_category": name if i % 3 == 2 else "",
        }
        expected = {
            "sample_id": row["sample_id"] or f"{concept}-{image['id']:012d}-0",
            "coco_image_id": image["id"],
            "concept": concept,
            "coco_caption": caption,
            "inpaint_caption": new_caption,
            "quality": row["quality"],
            "supercategory": category["supercategory"],
            "license_id": image["license"],
            "license_name": license["name"],
            "license_url": license["url"],
            "flickr_url": image["flickr_url"],
            "coco_url": image["coco_url"],
            "mask_prompt": name,
            "inpaint_prompt": prompt,
            "coco_details": {
                "captions": coco.raw_captions[image["id"]], "coco_url": image["coco_url"],
                "date_captured": image["date_captured"], "flickr_url": image["flickr_url"],
                "height": image["height"], "id": image["id"], "image_license": license["name"],
                "text_license": COCO_TEXT_LICENSE, "width": image["width"],
            },
            "coco_bytes": (coco.images_dir / image["file_name"]).read_bytes(),
            "inpaint_bytes": (source / file_name).read_bytes(),
        }
        rows.append({"table": row, "expected": expected})
    return rows


def _write_table(source: Path, table_rows: list[dict], fmt: str = "csv") -> Path:
    if fmt == "csv":
        path = source / "annotations.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
            writer.writeheader()
            writer.writerows(table_rows)
    else:
        path = source / "annotations.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in table_rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def export(coco, tmp_path_factory):
    source = tmp_path_factory.mktemp("inpaint_export")
    rows = _make_rows(coco, source)
    _write_table(source, [r["table"] for r in rows])
    return SimpleNamespace(source=source, rows=rows)


@pytest.fixture(scope="module")
def built(coco, export, tmp_path_factory):
    output = tmp_path_factory.mktemp("inpaint_out") / "inpaintcoco"
    # tiny shard bound: several shards per concept, so sharding and the config globs are exercised
    report = build_inpaintcoco(export.source, output, coco_dir=coco.root, max_shard_size="150KB")
    return SimpleNamespace(output=output, report=report, cache=tmp_path_factory.mktemp("hf_cache"))


def _derived_export(export, tmp_path: Path, extra_rows: list[dict], fmt: str = "csv") -> Path:
    """A new export folder sharing the good images (via a symlink) with some extra rows appended."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inpainted").symlink_to(export.source / "inpainted", target_is_directory=True)
    _write_table(source, [r["table"] for r in export.rows] + extra_rows, fmt)
    return source


def _good(export, tag: str, **changes) -> dict:
    """Row 0 with some fields changed; its own id and new caption keep it from duplicating row 0."""
    row = dict(export.rows[0]["table"])
    row.update(sample_id=f"bad-{tag}", inpaint_caption=f"{row['inpaint_caption']} ({tag})")
    row.update(changes)
    return row


# -- round trip ---------------------------------------------------------------------------
def test_build_writes_shards_card_and_report(built, export):
    out = built.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", REPORT_FILE_NAME, "data"]
    shards = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert {s.split("/")[1] for s in shards} == set(INPAINTCOCO_CONCEPTS)
    assert len(shards) > len(INPAINTCOCO_CONCEPTS)  # the 150KB bound split every concept
    assert all(re.fullmatch(r"data/(object|color|size)/test-\d{5}-of-\d{5}\.parquet", s) for s in shards)
    assert built.report.written == len(export.rows)
    assert built.report.written_by_concept == {c: PER_CONCEPT for c in INPAINTCOCO_CONCEPTS}
    assert built.report.skipped == []
    saved = json.loads((out / REPORT_FILE_NAME).read_text())
    assert saved["written"]["total"] == len(export.rows)
    assert saved["skipped"] == {"total": 0, "by_reason": {}, "by_concept": {}, "rows": []}
    assert saved["written"]["shards"] == shards


@pytest.mark.parametrize("config", [None, *INPAINTCOCO_CONCEPTS])
def test_load_dataset_round_trip_checks_every_field(built, export, config):
    ds = datasets.load_dataset(str(built.output), config, split="test", cache_dir=str(built.cache))
    assert ds.features == INPAINTCOCO_FEATURES
    wanted = [r["expected"] for r in export.rows if config in (None, r["expected"]["concept"])]
    assert sorted(ds["sample_id"]) == sorted(e["sample_id"] for e in wanted)
    raw = ds.cast_column("coco_image", datasets.Image(decode=False)).cast_column(
        "inpaint_image", datasets.Image(decode=False)
    )
    by_id = {row["sample_id"]: row for row in raw}
    for exp in wanted:
        row = by_id[exp["sample_id"]]
        for key in ("coco_image_id", "coco_caption", "inpaint_caption", "quality", "supercategory", "license_id",
                    "license_name", "license_url", "flickr_url", "coco_url", "mask_prompt", "inpaint_prompt"):
            assert row[key] == exp[key], (exp["sample_id"], key)
        assert row["concept"] == exp["concept"]  # a string, as in the published dataset
        assert row["coco_details"] == exp["coco_details"]
        assert row["inpaint_details"]["mask_prompt"] == exp["mask_prompt"]
        assert row["inpaint_details"]["inpaint_prompt"] == exp["inpaint_prompt"]
        assert row["inpaint_details"]["quality"] == exp["quality"]
        assert row["worker"] is None and row["mask"] is None  # the table records neither
        assert row["coco_image"]["bytes"] == exp["coco_bytes"]  # original JPEG, not re-encoded
        assert row["inpaint_image"]["bytes"] == exp["inpaint_bytes"]
        assert "/" not in row["coco_image"]["path"]  # no local directory leaks into the files
    decoded = ds[0]
    exp = next(e for e in wanted if e["sample_id"] == decoded["sample_id"])
    assert decoded["coco_image"].size == Image.open(io.BytesIO(exp["coco_bytes"])).size
    assert decoded["inpaint_image"].size == Image.open(io.BytesIO(exp["inpaint_bytes"])).size


def test_load_inpaintcoco_selects_concept_and_validates(built, export):
    color = load_inpaintcoco(built.output, concept="color", cache_dir=str(built.cache))
    assert set(color["concept"]) == {"color"}
    assert len(color) == PER_CONCEPT
    assert len(load_inpaintcoco(str(built.output), cache_dir=str(built.cache))) == len(export.rows)
    with pytest.raises(ValueError, match="location"):
        load_inpaintcoco(built.output, concept="location")


def test_load_inpaintcoco_reads_a_single_config_publication(tmp_path):
    """Other publications (one default config, string concepts, fewer columns) still load by concept."""
    folder = tmp_path / "published"
    folder.mkdir()
    pixels = [Image.new("RGB", (4, 4), c) for c in ("red", "blue", "green")]
    datasets.Dataset.from_dict(
        {"coco_image": pixels, "inpaint_image": pixels[::-1], "coco_caption": ["a", "b", "c"],
         "inpaint_caption": ["x", "y", "z"], "concept": ["color", "Size", "color"]},
        features=datasets.Features({"coco_image": datasets.Image(), "inpaint_image": datasets.Image(),
                                    "coco_caption": datasets.Value("string"),
                                    "inpaint_caption": datasets.Value("string"), "concept": datasets.Value("string")}),
    ).to_parquet(folder / "test-00000-of-00001.parquet")
    cache = str(tmp_path / "cache")
    color = load_inpaintcoco(folder, concept="color", cache_dir=cache)
    assert color["coco_caption"] == ["a", "c"]
    assert load_inpaintcoco(folder, concept="size", cache_dir=cache)["inpaint_caption"] == ["y"]
    assert len(load_inpaintcoco(folder, cache_dir=cache)) == 3


def _published_fixture(built, folder: Path) -> None:
    """phiyodr/InpaintCOCO's layout: one default config, data/test-*.parquet, exactly its published columns."""
    ours = datasets.load_dataset(str(built.output), split="test", cache_dir=str(built.cache))
    published = ours.select_columns(list(PUBLISHED_INPAINTCOCO_FEATURES)).cast(PUBLISHED_INPAINTCOCO_FEATURES)
    (folder / "data").mkdir(parents=True)
    published.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))


def test_a_build_and_the_published_dataset_can_be_swapped(built, export, tmp_path):
    ours = datasets.load_dataset(str(built.output), "color", split="test", cache_dir=str(built.cache))
    for name, feature in PUBLISHED_INPAINTCOCO_FEATURES.items():  # every published column, same type
        assert ours.features[name] == feature, name
    assert list(ours.features)[: len(PUBLISHED_INPAINTCOCO_FEATURES)] == list(PUBLISHED_INPAINTCOCO_FEATURES)
    folder = tmp_path / "published"
    _published_fixture(built, folder)
    cache = str(tmp_path / "cache")

    def summary(dataset):  # code written against either dataset, reading only published columns
        return sorted((r["concept"], r["coco_details"]["id"], r["coco_details"]["image_license"], r["coco_caption"],
                       r["inpaint_caption"], r["coco_image"].size) for r in dataset)

    theirs = load_inpaintcoco(folder, concept="color", cache_dir=cache)
    assert summary(theirs) == summary(ours) and len(theirs) == PER_CONCEPT
    assert len(load_inpaintcoco(folder, cache_dir=cache)) == len(export.rows)
    from hf_hardneg.evaluation.adapters import load_inpaintcoco_pairs

    pairs_theirs = load_inpaintcoco_pairs(folder)
    pairs_ours = load_inpaintcoco_pairs(built.output)
    assert sorted(zip(pairs_theirs.groups, pairs_theirs.caption1)) == sorted(zip(pairs_ours.groups, pairs_ours.caption1))


def test_load_inpaintcoco_rejects_a_dataset_without_its_columns(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    datasets.Dataset.from_dict({"image_id": [1], "caption": ["a cat"]}).to_parquet(folder / "test.parquet")
    with pytest.raises(ValueError, match=r"is not InpaintCOCO: it lacks the columns \['coco_image'"):
        load_inpaintcoco(folder, cache_dir=str(tmp_path / "cache"))
    datasets.Dataset.from_dict(  # the image/caption columns, but nothing to select a concept by
        {"coco_image": [None], "inpaint_image": [None], "coco_caption": ["a"], "inpaint_caption": ["b"]},
        features=datasets.Features({"coco_image": datasets.Image(), "inpaint_image": datasets.Image(),
                                    "coco_caption": datasets.Value("string"),
                                    "inpaint_caption": datasets.Value("string")}),
    ).to_parquet(folder / "test.parquet")
    with pytest.raises(ValueError, match="no 'concept' column"):
        load_inpaintcoco(folder, concept="color", cache_dir=str(tmp_path / "cache2"))


def test_card_yaml_and_prose(built, export):
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    text = (built.output / "README.md").read_text()
    card = DatasetCard(text)
    data = card.data.to_dict()
    assert data["license"] == "other" and data["pretty_name"] == "InpaintCOCO"
    assert {"image-to-text", "text-to-image"} <= set(data["task_categories"])
    configs = {c["config_name"]: c for c in data["configs"]}
    assert set(configs) == {"all", *INPAINTCOCO_CONCEPTS} and configs["all"]["default"] is True
    assert configs["color"]["data_files"] == [{"split": "test", "path": "data/color/test-*.parquet"}]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos["all"].features == INPAINTCOCO_FEATURES
    assert infos["all"].splits["test"].num_examples == len(export.rows)
    assert infos["size"].splits["test"].num_examples == PER_CONCEPT
    body = card.text
    for feature in INPAINTCOCO_FEATURES:
        assert f"`{feature}`" in body
    licences = ((1, "Attribution-NonCommercial-ShareAlike License"), (3, "Attribution-NonCommercial-NoDerivs License"))
    for lid, lic in licences:
        assert re.search(rf"\| {lid} \| \[{re.escape(lic)}\]\(http[^)]+\) \| ", body)
    assert re.search(r"\| 6 \| \[Attribution-NoDerivs License\].*\*\*no\*\* \(excluded\) \| 0 \|", body)
    assert "s(coco_image, coco_caption) > s(inpaint_image, coco_caption)" in body
    assert "s(inpaint_image, inpaint_caption) > s(coco_image, inpaint_caption)" in body
    assert 'load_dataset("<user>/inpaintcoco", "color", split="test")' in body
    assert "@inproceedings{" in body and "Rösch" not in body  # BibTeX-escaped umlaut
    assert "Advances in Language and Vision Research" in body
    assert f"holds **{len(export.rows)}** samples" in body
    assert str(export.source) not in text  # no local paths in what gets published


# -- reading the table ---------------------------------------------------------------------------
def test_csv_and_jsonl_tables_give_the_same_samples(coco, export, tmp_path):
    index = CocoIndex.load(
        coco.root / "annotations" / "captions_val2017.json",
        coco.images_dir,
        coco.root / "annotations" / "instances_val2017.json",
    )
    jsonl_source = _derived_export(export, tmp_path, [], fmt="jsonl")
    from_csv, problems_csv = check_rows(read_table(export.source / "annotations.csv")[0], index, export.source)
    from_jsonl, problems_jsonl = check_rows(read_table(jsonl_source / "annotations.jsonl")[0], index, jsonl_source)
    assert problems_csv == problems_jsonl == []
    strip = lambda s: {k: v for k, v in vars(s).items() if k not in {"where", "inpaint_image_path"}}  # noqa: E731
    assert [strip(s) for s in from_csv] == [strip(s) for s in from_jsonl]


def test_unparsable_lines_are_rows_with_a_reason(coco, tmp_path):
    index = CocoIndex.load(coco.root / "annotations" / "captions_val2017.json", coco.images_dir)
    header = ",".join(REQUIRED_COLUMNS)
    csv_table = tmp_path / "annotations.csv"
    csv_table.write_text(f"{header}\n397133,color,a,b,x.png,okay,m,p,EXTRA\n")
    jsonl_table = tmp_path / "annotations.jsonl"
    jsonl_table.write_text(json.dumps(dict.fromkeys(REQUIRED_COLUMNS, "")) + "\n\n{not json\n")
    for table, line in ((csv_table, 2), (jsonl_table, 3)):
        rows, _ = read_table(table)
        samples, problems = check_rows(rows, index, tmp_path)
        bad = [p for p in problems if p.reason == "unreadable_row"]
        assert len(bad) == 1 and bad[0].where == f"{table.name} line {line}", problems


def test_custom_card_template(coco, export, tmp_path):
    good = tmp_path / "card.md.j2"
    good.write_text("---\n{{ card_data }}\n---\n# My InpaintCOCO ({{ total }} samples)\n")
    build_inpaintcoco(export.source, tmp_path / "out", coco_dir=coco.root, card_template=good)
    assert "# My InpaintCOCO (9 samples)" in (tmp_path / "out" / "README.md").read_text()
    typo = tmp_path / "typo.md.j2"
    typo.write_text("---\n{{ card_data }}\n---\n{{ totl }}\n")
    with pytest.raises(InpaintCOCOBuildError, match="does not render a valid card.*'totl' is undefined"):
        build_inpaintcoco(export.source, tmp_path / "out2", coco_dir=coco.root, card_template=typo)
    assert not (tmp_path / "out2").exists()


def test_edited_original_caption_is_kept_but_noted(coco, export, tmp_path):
    row = _good(export, "paraphrase", coco_caption="A picture: " + export.rows[0]["table"]["coco_caption"],
                inpaint_file_name="another_edit.png")
    source = _derived_export(export, tmp_path, [row])
    (source / "another_edit.png").write_bytes(export.rows[0]["expected"]["inpaint_bytes"])
    report = build_inpaintcoco(source, tmp_path / "out", coco_dir=coco.root)
    assert report.written == len(export.rows) + 1
    assert report.caption_not_from_coco == [f"annotations.csv line {len(export.rows) + 2}"]
    assert "1 coco_caption(s) are not verbatim COCO captions" in report.summary()


def test_supercategory_is_read_off_the_mask_prompt(coco):
    index = CocoIndex.load(
        coco.root / "annotations" / "captions_val2017.json",
        coco.images_dir,
        coco.root / "annotations" / "instances_val2017.json",
    )
    image_id = 377575  # a dog tied to a fire hydrant
    assert index.infer_supercategory(image_id, "red fire hydrant") == "outdoor"
    assert index.infer_supercategory(image_id, "Dogs") == "animal"
    assert index.infer_supercategory(image_id, "hot dog") == "food"  # not the animal inside "hot dog"
    assert index.infer_supercategory(image_id, "old motorbike") == "vehicle"  # paper's spelling of motorcycle
    assert index.infer_supercategory(image_id, "jacket") is None  # not a COCO category: no guess
    assert index.infer_supercategory(image_id, "dog and bus") == "animal"  # only the dog is in this photo
    assert index.infer_supercategory(image_id, "dog by a fire hydrant") is None  # both are: no guess


# -- bad input: one error naming every bad row, or counted skips ---------------------------------------
BAD_ROWS = {
    "unreadable_row": lambda ex, coco: _good(ex, "id", coco_image_id="12a"),
    "unknown_concept": lambda ex, coco: _good(ex, "concept", concept="location"),
    "unknown_coco_id": lambda ex, coco: _good(ex, "coco-id", coco_image_id=999999999),
    "noderivs_license": lambda ex, coco: _good(
        ex, "nd", coco_image_id=next(i for i, im in sorted(coco.images.items()) if im["license"] == 3)
    ),
    "empty_caption": lambda ex, coco: _good(ex, "empty", inpaint_caption="   "),
    "unchanged_caption": lambda ex, coco: _good(
        ex, "same", inpaint_caption=ex.rows[0]["table"]["coco_caption"].strip().upper().rstrip(".") + "."
    ),
    "invalid_quality": lambda ex, coco: _good(ex, "quality", quality="great"),
    # an instance id of another photograph (row 1 names its object by instance id)
    "unknown_object": lambda ex, coco: _good(
        ex, "object", coco_annotation_id=ex.rows[1]["table"]["coco_annotation_id"]
    ),
    "missing_image": lambda ex, coco: _good(ex, "missing", inpaint_file_name="inpainted/does_not_exist.png"),
    "corrupt_image": lambda ex, coco: _good(ex, "corrupt", inpaint_file_name="broken.png"),
    "duplicate_sample": lambda ex, coco: dict(ex.rows[1]["table"]),
}


def _bad_source(export, coco, tmp_path, reasons) -> Path:
    source = _derived_export(export, tmp_path, [BAD_ROWS[r](export, coco) for r in reasons])
    (source / "broken.png").write_bytes(_png(Image.new("RGB", (8, 8)))[:40])  # truncated PNG
    return source


def test_every_reason_is_covered():
    assert set(BAD_ROWS) == set(SKIP_REASONS)


@pytest.mark.parametrize("reason", sorted(SKIP_REASONS))
def test_bad_row_is_an_error_naming_the_row(coco, export, tmp_path, reason):
    source = _bad_source(export, coco, tmp_path, [reason])
    line = len(export.rows) + 2  # header + good rows, 1-based
    with pytest.raises(InpaintCOCOBuildError) as err:
        build_inpaintcoco(source, tmp_path / "out", coco_dir=coco.root)
    message = str(err.value)
    assert f"annotations.csv line {line}:" in message and f"[{reason}]" in message
    assert "1 of" in message and "--skip-invalid" in message
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]


def test_noderivs_message_names_the_licence(coco, export, tmp_path):
    source = _bad_source(export, coco, tmp_path, ["noderivs_license"])
    with pytest.raises(InpaintCOCOBuildError, match=r"licence 3 \(Attribution-NonCommercial-NoDerivs License\)"):
        build_inpaintcoco(source, tmp_path / "out", coco_dir=coco.root)


def test_skip_invalid_counts_every_reason_and_keeps_the_good_rows(coco, export, tmp_path, capsys):
    from hf_hardneg.cli import main

    reasons = sorted(SKIP_REASONS)
    source = _bad_source(export, coco, tmp_path, reasons)
    out = tmp_path / "out"
    code = main(["build-inpaintcoco", "--source", str(source), "--output", str(out),
                 "--coco-dir", str(coco.root), "--skip-invalid"])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / REPORT_FILE_NAME).read_text())
    assert report["written"]["total"] == len(export.rows)
    assert report["skipped"]["total"] == len(reasons)
    assert report["skipped"]["by_reason"] == {r: 1 for r in reasons}
    assert sum(report["skipped"]["by_concept"].values()) == len(reasons)
    assert report["skipped"]["by_concept"]["location"] == 1  # counted under the value the row gave
    rows = {r["reason"]: r for r in report["skipped"]["rows"]}
    assert rows["duplicate_sample"]["message"].startswith("same sample_id as annotations.csv line 3")
    assert all(r["row"].startswith("annotations.csv line ") for r in rows.values())
    assert f"wrote {len(export.rows)} of {len(export.rows) + len(reasons)} rows" in printed
    assert "skipped by reason: " in printed and "noderivs_license 1" in printed
    assert "skipped by concept: " in printed
    ds = datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(export.rows)
    noderivs_id = BAD_ROWS["noderivs_license"](export, coco)["coco_image_id"]
    assert noderivs_id not in ds["coco_image_id"]


def test_missing_original_photograph(coco, export, tmp_path):
    images = tmp_path / "val2017"
    images.mkdir()
    first = export.rows[0]["expected"]["coco_image_id"]
    for row in export.rows[1:]:
        name = coco.images[row["expected"]["coco_image_id"]]["file_name"]
        (images / name).symlink_to(coco.images_dir / name)
    missing = coco.images[first]["file_name"]
    with pytest.raises(InpaintCOCOBuildError, match=rf"original COCO image {missing} not found"):
        build_inpaintcoco(export.source, tmp_path / "out", coco_dir=coco.root, coco_images=images)


# -- whole-file problems ------------------------------------------------------------------------
def test_fatal_input_problems(coco, export, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InpaintCOCOBuildError, match="annotations.csv or annotations.jsonl"):
        build_inpaintcoco(empty, tmp_path / "o1", coco_dir=coco.root)
    with pytest.raises(InpaintCOCOBuildError, match="COCO captions file not found"):
        build_inpaintcoco(export.source, tmp_path / "o2")  # no SOURCE/coco
    no_quality = tmp_path / "noq"
    no_quality.mkdir()
    (no_quality / "annotations.csv").write_text("coco_image_id,concept\n1,color\n")
    with pytest.raises(InpaintCOCOBuildError, match=r"lacks the required column\(s\) \['coco_caption'"):
        build_inpaintcoco(no_quality, tmp_path / "o3", coco_dir=coco.root)
    with pytest.raises(InpaintCOCOBuildError, match="--max-shard-size"):
        build_inpaintcoco(export.source, tmp_path / "o4", coco_dir=coco.root, max_shard_size="lots")
    with pytest.raises(InpaintCOCOBuildError, match="no COCO instances file was found; pass .* --instances"):
        build_inpaintcoco(  # the table names objects by instance id, which needs instances_val2017.json
            export.source, tmp_path / "o5", coco_dir=empty,
            coco_captions=coco.root / "annotations" / "captions_val2017.json", coco_images=coco.images_dir,
        )


def test_output_folder_is_protected(coco, export, built, tmp_path):
    with pytest.raises(InpaintCOCOBuildError, match="not empty; pass --overwrite"):
        build_inpaintcoco(export.source, built.output, coco_dir=coco.root)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(InpaintCOCOBuildError, match="refusing to delete"):
        build_inpaintcoco(export.source, foreign, coco_dir=coco.root, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "keep me"


# -- command line and push ------------------------------------------------------------------------
def test_build_script_is_the_same_command(coco, export, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "dataset_scripts" / "inpaintcoco" / "build.py"),
         "--source", str(export.source), "--output", str(out), "--coco-dir", str(coco.root)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "written by concept: object 3, color 3, size 3" in result.stdout
    assert (out / "README.md").is_file()


def test_cli_reports_bad_input_with_exit_code_1(export, tmp_path, capsys):
    from hf_hardneg.cli import main

    assert main(["build-inpaintcoco", "--source", str(export.source), "--output", str(tmp_path / "o")]) == 1
    assert "error: COCO captions file not found" in capsys.readouterr().err


class _FakeHub:
    """Stands in for the Hub at huggingface_hub's HfApi boundary and records what would be committed."""

    def __init__(self):
        self.calls = []

    def install(self, monkeypatch):
        from huggingface_hub import HfApi
        from huggingface_hub.utils import filter_repo_objects

        fake = self

        def create_repo(api, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
            fake.calls.append(("create_repo", {"repo_id": repo_id, "repo_type": repo_type, "private": private,
                                               "exist_ok": exist_ok, "token": api.token, **kwargs}))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(api, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            folder = Path(folder_path)
            local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            files = list(filter_repo_objects(local, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
            committed = {f: (folder / f).read_bytes() for f in files}
            fake.calls.append(("upload_folder", {"repo_id": repo_id, "files": committed, "token": api.token, **kwargs}))

        def repo_info(api, repo_id, *, repo_type=None, **kwargs):  # the upload path checks that a --private repo is
            created = [c for name, c in fake.calls if name == "create_repo" and c["repo_id"] == repo_id]
            return SimpleNamespace(id=repo_id, private=bool(created and created[-1]["private"]))

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(HfApi, "repo_info", repo_info)
        return self


def test_push_to_hub_commits_card_and_shards_only(coco, export, tmp_path, monkeypatch, capsys):
    from huggingface_hub import DatasetCard

    from hf_hardneg.cli import main

    secret = "hf_" + "TestOnlyNotARealToken0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    hub = _FakeHub().install(monkeypatch)
    out = tmp_path / "out"
    code = main(["build-inpaintcoco", "--source", str(export.source), "--output", str(out), "--coco-dir",
                 str(coco.root), "--push-to-hub", "someone/inpaintcoco", "--private"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert secret not in captured.out + captured.err
    (kind, repo), (kind2, upload) = hub.calls
    assert (kind, kind2) == ("create_repo", "upload_folder")
    assert repo["repo_id"] == "someone/inpaintcoco" and repo["repo_type"] == "dataset"
    assert repo["private"] is True and repo["exist_ok"] is True
    assert repo["token"] is None and upload["token"] is None  # huggingface_hub resolves it from the env
    assert upload["repo_type"] == "dataset" and upload["delete_patterns"] == ["data/**"]
    files = upload["files"]
    assert REPORT_FILE_NAME not in files  # holds local paths
    assert set(files) == {"README.md", *(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))}
    card = DatasetCard(files["README.md"].decode())
    assert 'load_dataset("someone/inpaintcoco", "color", split="test")' in card.text
    assert {c["config_name"] for c in card.data.configs} == {"all", *INPAINTCOCO_CONCEPTS}
    assert "pushed to https://huggingface.co/datasets/someone/inpaintcoco" in captured.out


def test_push_without_a_token_fails_before_building(coco, export, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from hf_hardneg.cli import main

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    hub = _FakeHub().install(monkeypatch)
    out = tmp_path / "out"
    code = main(["build-inpaintcoco", "--source", str(export.source), "--output", str(out), "--coco-dir",
                 str(coco.root), "--push-to-hub", "someone/inpaintcoco"])
    assert code == 1
    assert "hf auth login" in capsys.readouterr().err
    assert hub.calls == [] and not out.exists()
    with pytest.raises(InpaintCOCOBuildError, match="not an InpaintCOCO build"):
        push_inpaintcoco(tmp_path, "someone/inpaintcoco")
