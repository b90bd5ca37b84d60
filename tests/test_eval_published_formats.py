"""Benchmarks as users have them: ARO, Winoground and Flickr30k in their published forms, end to end.

Every fixture is written at test time in the published layout from real COCO photographs
(../shared/data/coco-mini); the model is a tiny CLIP built at test time, and the Hub is
never reached (the test session is offline), so a loader that tried would fail here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import datasets
import PIL.Image
import pytest

from hf_hardneg.cli import main
from hf_hardneg.data.images import open_image
from hf_hardneg.evaluation import adapters, evaluate_model
from hf_hardneg.evaluation.reference import REFERENCE_FIGURES, reference_rows, reference_table


@pytest.fixture(scope="module")
def photos(coco_mini) -> list[tuple[Path, str, int, int]]:
    """(path, first caption, width, height) of the first 8 val2017 images of coco-mini."""
    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    first: dict[int, str] = {}
    for ann in data["annotations"]:
        first.setdefault(ann["image_id"], ann["caption"].strip())
    return [(coco_mini / "images" / "val2017" / img["file_name"], first[img["id"]], img["width"], img["height"])
            for img in data["images"][:8]]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, photos):
    from hf_hardneg.testing import make_tiny_model

    path = tmp_path_factory.mktemp("formats_clip")
    make_tiny_model([c for _, c, _, _ in photos] + ["the cup is on the table", "the table is on the cup"], path,
                    kind="clip", seed=3)
    return path


def _parquet(ds: datasets.Dataset, folder: Path, split: str = "test") -> Path:
    (folder / "data").mkdir(parents=True)
    ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


# ---------------------------------------------------------------- ARO
def _aro_order(photos, folder: Path) -> Path:
    """gowitheflow/ARO-COCO-order: images (a list), correct_caption, hard_text_1..4."""
    img = datasets.Image()
    ds = datasets.Dataset.from_dict({
        "images": [[str(p)] for p, _, _, _ in photos[:4]],
        "correct_caption": [c for _, c, _, _ in photos[:4]],
        **{f"hard_text_{k}": [" ".join(reversed(c.split())) + f" {k}" for _, c, _, _ in photos[:4]] for k in range(1, 5)},
    }, features=datasets.Features({"images": datasets.Sequence(img), "correct_caption": datasets.Value("string"),
                                   **{f"hard_text_{k}": datasets.Value("string") for k in range(1, 5)}}))
    return _parquet(ds, folder)


def test_one_aro_subset_runs_alone_from_the_command_line(clip_dir, photos, tmp_path, capsys):
    order = _aro_order(photos, tmp_path / "coco_order")
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(clip_dir), "--tasks", "aro", "--source", f"aro:COCO-Order={order}",
                 "--output", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0  # the other three subsets were not looked for (offline: the Hub would have failed)
    metrics = json.loads((out / "results.json").read_text())["tasks"]["aro"]["metrics"]
    assert set(metrics) == {"COCO-Order", "micro_average", "macro_average"} and metrics["COCO-Order"]["count"] == 4
    assert metrics["COCO-Order"]["chance"] == pytest.approx(0.2)
    assert adapters.load_aro(sources={"COCO-Order": order}).groups == ["COCO-Order"] * 4


def _vg_relation_hub(photos, tmp_path: Path) -> tuple[Path, list[tuple[int, int, int, int]], list[bool]]:
    """gowitheflow/ARO-Visual-Relation: image, bbox {x, y, w, h}, true/false caption, relation_name.

    Rows 0-2 hold the whole photograph (to be cropped); rows 3-4 hold the crop already."""
    images, boxes, cropped_already = [], [], []
    for i, (path, _, width, height) in enumerate(photos[:5]):
        box = (10 + i, 20, width // 2, height // 3)
        if i < 3:
            images.append(str(path))
            cropped_already.append(False)
        else:
            crop = tmp_path / f"crop_{i}.png"
            open_image(path).crop((box[0], box[1], box[0] + box[2], box[1] + box[3])).save(crop)
            images.append(str(crop))
            cropped_already.append(True)
        boxes.append(box)
    box_feature = {k: datasets.Value("int64") for k in "xywh"}
    ds = datasets.Dataset.from_dict({
        "image": images, "bbox": [dict(zip("xywh", b)) for b in boxes],
        "true_caption": ["the cup is on the table"] * 5, "false_caption": ["the table is on the cup"] * 5,
        "relation_name": ["on", "on", "under", "on", "under"],
    }, features=datasets.Features({"image": datasets.Image(), "bbox": box_feature,
                                   "true_caption": datasets.Value("string"), "false_caption": datasets.Value("string"),
                                   "relation_name": datasets.Value("string")}))
    return _parquet(ds, tmp_path / "vg_relation"), boxes, cropped_already


def test_aro_hub_copy_is_cropped_to_its_bbox_unless_already_cropped(photos, tmp_path):
    folder, boxes, already = _vg_relation_hub(photos, tmp_path)
    mc = adapters.load_aro(sources={"VG-Relation": folder})
    assert mc.categories == ["on", "on", "under", "on", "under"]
    for i, (x, y, w, h) in enumerate(boxes):
        image = open_image(mc.images[mc.image_index[i]])
        assert image.size == (w, h)
        if not already[i]:  # the crop is the photograph's region, pixel for pixel
            region = open_image(photos[i][0]).crop((x, y, x + w, y + h))
            assert image.tobytes() == region.tobytes()
    assert mc.notes == {"VG-Relation images": "3 of 5 cropped to their bbox (ARO's protocol), "
                                              "2 already cropped (image size = bbox size)"}


def test_aro_bbox_outside_the_image_names_the_row(photos, tmp_path):
    path, _, width, height = photos[0]
    ds = datasets.Dataset.from_dict({"image": [str(path)], "bbox": [{"x": 5, "y": 5, "w": width, "h": 20}],
                                     "true_caption": ["a"], "false_caption": ["b"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "bbox": {k: datasets.Value("int64") for k in "xywh"},
                                                                "true_caption": datasets.Value("string"),
                                                                "false_caption": datasets.Value("string")}))
    with pytest.raises(ValueError, match=r"row 0: bbox .* does not fit the \d+x\d+ image"):
        adapters.load_aro(sources={"VG-Attribution": ds})


def test_aro_notes_reach_the_results(clip_dir, photos, tmp_path):
    folder, _, _ = _vg_relation_hub(photos, tmp_path)
    res = evaluate_model(clip_dir, ["aro"], tmp_path / "out", sources={"aro": {"VG-Relation": folder}},
                         progress=False, device="cpu")
    assert res["tasks"]["aro"]["notes"]["VG-Relation images"].startswith("3 of 5 cropped")
    assert "3 of 5 cropped to their bbox" in (tmp_path / "out" / "results.md").read_text()


# ---------------------------------------------------------------- Winoground
def _winoground_rows(photos):
    return [{"id": k, "caption_0": photos[2 * k][1], "caption_1": photos[2 * k + 1][1], "image_0": f"ex_{k}_img_0",
             "image_1": f"ex_{k}_img_1", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
             "collapsed_tag": ["Object", "Relation", "Both"][k]} for k in range(3)]


def _winoground_table(photos) -> datasets.Dataset:
    """The Hub's table: image_0, image_1 (images), caption_0, caption_1 and the tags."""
    rows = _winoground_rows(photos)
    data = {key: [r[key] for r in rows] for key in rows[0] if key not in ("image_0", "image_1")}
    data["image_0"] = [PIL.Image.open(photos[2 * k][0]).convert("RGB").resize((40, 30)) for k in range(3)]
    data["image_1"] = [PIL.Image.open(photos[2 * k + 1][0]).convert("RGB").resize((40, 30)) for k in range(3)]
    features = datasets.Features({**{k: datasets.Value("string") for k in ("caption_0", "caption_1", "tag",
                                                                            "secondary_tag", "collapsed_tag")},
                                  "id": datasets.Value("int64"), "num_main_preds": datasets.Value("int64"),
                                  "image_0": datasets.Image(), "image_1": datasets.Image()})
    return datasets.Dataset.from_dict(data, features=features)


def test_winoground_loaded_or_saved_copies_read_like_the_raw_layout(photos, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with zipfile.ZipFile(raw / "images.zip", "w") as zf:
        for k in range(3):
            for j in range(2):
                png = tmp_path / f"ex_{k}_img_{j}.png"
                PIL.Image.open(photos[2 * k + j][0]).convert("RGB").resize((40, 30)).save(png)
                zf.write(png, f"images/{png.name}")
    (raw / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _winoground_rows(photos)))
    table = _winoground_table(photos)
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "winoground.parquet"))
    _parquet(table, tmp_path / "hub_copy")
    reference = adapters.load_winoground(raw)
    assert reference.notes["format"].startswith("raw layout")
    for source in (table, tmp_path / "saved", tmp_path / "winoground.parquet", tmp_path / "hub_copy"):
        ps = adapters.load_winoground(source)
        assert (ps.caption0, ps.caption1, ps.groups) == (reference.caption0, reference.caption1, reference.groups)
        assert ps.notes["format"].startswith("table")
        for k in range(3):
            for mine, theirs in ((ps.image0[k], reference.image0[k]), (ps.image1[k], reference.image1[k])):
                assert open_image(ps.images[mine]).tobytes() == open_image(reference.images[theirs]).tobytes()
    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="neither Winoground's raw layout .* nor a table"):
        adapters.load_winoground(tmp_path / "neither")


# ---------------------------------------------------------------- Flickr30k
def _flickr_nlphuji(photos) -> datasets.Dataset:
    """nlphuji/flickr30k: image, caption (5 per image), sentids, split (Karpathy), img_id, filename."""
    splits = ["train", "test", "val", "test", "train", "test"]
    return datasets.Dataset.from_dict({
        "image": [str(p) for p, _, _, _ in photos[:6]],
        "caption": [[c, "a red car on the left of a small dog"] for _, c, _, _ in photos[:6]],
        "sentids": [[str(2 * i), str(2 * i + 1)] for i in range(6)],
        "split": splits, "img_id": [str(i) for i in range(6)], "filename": [p.name for p, _, _, _ in photos[:6]],
    }, features=datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                   "sentids": datasets.Sequence(datasets.Value("string")),
                                   "split": datasets.Value("string"), "img_id": datasets.Value("string"),
                                   "filename": datasets.Value("string")}))


def test_flickr30k_uses_the_karpathy_test_split_and_says_so(photos, tmp_path):
    folder = _parquet(_flickr_nlphuji(photos), tmp_path / "nlphuji")
    ds, spec = adapters.load_captioned("flickr30k", source=folder)
    assert ds["img_id"] == ["1", "3", "5"]
    assert spec.selection == "split == 'test': 3 of 6 rows (3 of other subsets left out)"
    ds, spec = adapters.load_captioned("flickr30k", source=folder, subset="all")
    assert len(ds) == 6 and "subset='all'" in spec.selection
    ds, spec = adapters.load_captioned("flickr30k", source=folder, subset="val")
    assert ds["img_id"] == ["2"]
    with pytest.raises(ValueError, match=r"no row has split == 'dev'; values found: \['test', 'train', 'val'\]"):
        adapters.load_captioned("flickr30k", source=folder, subset="dev")
    no_split = _flickr_nlphuji(photos).remove_columns("split")  # lmms-lab/flickr30k has no split column
    ds, spec = adapters.load_captioned("flickr30k", source=no_split)
    assert len(ds) == 6 and spec.selection.startswith("all 6 rows: the source has no 'split' column")


def test_flickr30k_split_reaches_the_results(clip_dir, photos, tmp_path):
    folder = _parquet(_flickr_nlphuji(photos), tmp_path / "nlphuji")
    res = evaluate_model(clip_dir, ["flickr30k"], sources={"flickr30k": folder}, concepts=["color", "size"],
                         progress=False, device="cpu")
    entry = res["tasks"]["flickr30k"]
    assert entry["notes"]["rows used"].startswith("split == 'test': 3 of 6 rows")
    # every test-split image has the "a red car ... small dog" caption: 3 colour and 3 size examples
    assert entry["metrics"]["color"]["count"] >= 3 and entry["metrics"]["size"]["count"] >= 3


def test_cli_source_keywords_combine_with_a_path():
    from hf_hardneg.commands import parse_sources

    assert parse_sources(["flickr30k=/data/f", "flickr30k:subset=all"]) == {
        "flickr30k": {"source": "/data/f", "subset": "all"}}
    assert parse_sources(["flickr30k:subset=all", "flickr30k=/data/f"]) == {
        "flickr30k": {"subset": "all", "source": "/data/f"}}
    assert parse_sources(["aro:COCO-Order=/a", "aro:VG-Relation=/b"]) == {"aro": {"COCO-Order": "/a", "VG-Relation": "/b"}}


# ---------------------------------------------------------------- published reference figures
def _fake_results(name: str, values: dict[str, float]) -> dict:
    """Results of the shape evaluate_model writes, with the given accuracies (fractions)."""
    sugar = {s: {"accuracy": values[s], "count": 10} for s in adapters.SUGARCREPE_SUBSETS}
    return {"model": name, "tasks": {
        "sugarcrepe": {"kind": "multiple_choice", "metrics": sugar},
        "winoground": {"kind": "paired", "metrics": {
            "micro_average": {"text_score": values["text"], "image_score": values["image"],
                              "group_score": values["group"], "count": 400}}},
    }}


def test_reference_figures_are_shown_beside_a_run_of_that_model():
    values = {"add_att": 0.70, "add_obj": 0.76, "replace_att": 0.80, "replace_obj": 0.90, "replace_rel": 0.70,
              "swap_att": 0.60, "swap_obj": 0.64, "text": 0.30, "image": 0.12, "group": 0.08}
    res = _fake_results("clip-vit-base-patch32", values)
    ours = {f.name: v for f, v in reference_rows(res)}
    assert ours["replace"] == pytest.approx(100 * (0.80 + 0.90 + 0.70) / 3)
    assert ours["swap"] == pytest.approx(62.0) and ours["add"] == pytest.approx(73.0)
    assert (ours["text"], ours["image"], ours["group"]) == pytest.approx((30.0, 12.0, 8.0))
    assert "VG-Relation" not in ours  # ARO was not run
    table = reference_table(res)
    assert "| sugarcrepe | replace | 80.1 | 80.0 | -0.1 |" in table
    assert "| winoground | group | 8.8 | 8.0 | -0.8 |" in table
    assert "not measured by hf_hardneg" in table
    assert reference_table(_fake_results("runs/hn1_color", values)) is None
    published = {(f.task, f.name): f.value for f in REFERENCE_FIGURES["openai/clip-vit-base-patch32"]}
    assert published == {("aro", "VG-Relation"): 59.9, ("aro", "VG-Attribution"): 63.2, ("aro", "COCO-Order"): 47.6,
                         ("aro", "Flickr30k-Order"): 59.6, ("sugarcrepe", "replace"): 80.1,
                         ("sugarcrepe", "swap"): 62.6, ("sugarcrepe", "add"): 73.0, ("winoground", "text"): 31.3,
                         ("winoground", "image"): 11.0, ("winoground", "group"): 8.8}


def test_evaluate_prints_the_reference_figures_for_clip_vit_base_patch32(clip_dir, photos, tmp_path, capsys):
    table = _winoground_table(photos)
    # a local copy of the weights named like the Hub model (here: the tiny model standing in for them)
    weights = tmp_path / "clip-vit-base-patch32"
    weights.symlink_to(clip_dir, target_is_directory=True)
    code = main(["evaluate", "--model", str(weights), "--tasks", "winoground", "--source",
                 f"winoground={_parquet(table, tmp_path / 'wino')}", "--output", str(tmp_path / "out"),
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "## Published figures for this model" in out
    assert "| winoground | text | 31.3 |" in out and "| winoground | image | 11.0 |" in out
    assert "Published figures exist for tasks not run here: aro, sugarcrepe." in out
    code = main(["evaluate", "--model", str(clip_dir), "--tasks", "winoground", "--source",
                 f"winoground={tmp_path / 'wino'}", "--output", str(tmp_path / "out2"), "--no-progress",
                 "--device", "cpu"])
    assert code == 0 and "Published figures" not in capsys.readouterr().out
