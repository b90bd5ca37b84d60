"""Benchmark adapters on tiny fixtures that reproduce each dataset's published schema.

Fixtures are written at test time: Hub-style tables as parquet files (with the
real column names and feature types, e.g. SugarCrepe's ClassLabel whose names
are captions) and raw layouts (SugarCrepe JSON, ARO JSON + images/, Winoground
examples.jsonl + images.zip) built from real COCO photographs in ../shared.
"""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import datasets
import PIL.Image
import pytest

from hf_hardneg.data.images import open_image
from hf_hardneg.evaluation import adapters
from hf_hardneg.evaluation.tasks import MultipleChoiceSet, PairedSet


@pytest.fixture(scope="module")
def coco_val(coco_mini) -> list[tuple[Path, str]]:
    """(image path, one real caption) for the first 6 val2017 images of coco-mini."""
    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    first_caption = {}
    for ann in data["annotations"]:
        first_caption.setdefault(ann["image_id"], ann["caption"].strip())
    out = []
    for img in data["images"][:6]:
        out.append((coco_mini / "images" / "val2017" / img["file_name"], first_caption[img["id"]]))
    return out


def _write_parquet(ds: datasets.Dataset, folder: Path, split: str = "test") -> Path:
    (folder / "data").mkdir(parents=True)
    ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


# ---------------------------------------------------------------- generic loading
def test_load_table_sources(tmp_path):
    ds = datasets.Dataset.from_dict({"a": [1, 2, 3]})
    assert adapters.load_table(ds) is ds
    ds.save_to_disk(str(tmp_path / "saved"))
    assert adapters.load_table(tmp_path / "saved")["a"] == [1, 2, 3]
    datasets.DatasetDict({"test": ds, "train": ds}).save_to_disk(str(tmp_path / "dict"))
    assert len(adapters.load_table(tmp_path / "dict", split="test")) == 3
    with pytest.raises(ValueError, match="available splits"):
        adapters.load_table(tmp_path / "dict", split="validation")
    ds.to_json(str(tmp_path / "rows.jsonl"))
    assert adapters.load_table(tmp_path / "rows.jsonl")["a"] == [1, 2, 3]
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        adapters.load_table(tmp_path / "rows.txt")
    # a folder of data files whose only split is "train" is used whatever split was asked for
    _write_parquet(ds, tmp_path / "folder", split="train")
    assert len(adapters.load_table(tmp_path / "folder", split="test")) == 3


# ---------------------------------------------------------------- SugarCrepe
def _sugarcrepe_hub_fixture(root: Path, coco_val) -> dict[str, list[tuple[str, str]]]:
    """HuggingFaceM4/SugarCrepe_<subset> layout: image, tested_labels=[caption, negative], true_label ClassLabel."""
    pairs = {
        "swap_att": [(c, f"not {c}") for _, c in coco_val[:3]],
        "replace_obj": [(c, c.replace("a ", "one ", 1) + " (replaced)") for _, c in coco_val[3:5]],
    }
    names = sorted({t for rows in pairs.values() for pair in rows for t in pair})
    random.Random(0).shuffle(names)  # the published label vocabulary is an unordered set of captions
    features = datasets.Features({"image": datasets.Image(), "tested_labels": datasets.Sequence(datasets.Value("string")),
                                  "true_label": datasets.ClassLabel(names=names)})
    for offset, (subset, rows) in zip((0, 3), pairs.items()):
        ds = datasets.Dataset.from_dict({
            "image": [str(coco_val[offset + i][0]) for i in range(len(rows))],
            "tested_labels": [list(pair) for pair in rows],
            "true_label": [names.index(pair[0]) for pair in rows],
        }, features=features)
        _write_parquet(ds, root / f"SugarCrepe_{subset}")
    return pairs


def test_sugarcrepe_hub_schema(tmp_path, coco_val):
    pairs = _sugarcrepe_hub_fixture(tmp_path, coco_val)
    mc = adapters.load_sugarcrepe(str(tmp_path / "SugarCrepe_{subset}"), subsets=["swap_att", "replace_obj"])
    assert isinstance(mc, MultipleChoiceSet) and len(mc) == 5
    assert mc.groups == ["swap_att"] * 3 + ["replace_obj"] * 2
    for cands, label, (true, false) in zip(mc.candidates, mc.labels, pairs["swap_att"] + pairs["replace_obj"]):
        assert cands[label] == true and false in cands
    assert open_image(mc.images[mc.image_index[4]]).size == PIL.Image.open(coco_val[4][0]).size
    with pytest.raises(ValueError, match="unknown SugarCrepe subset"):
        adapters.load_sugarcrepe(str(tmp_path), subsets=["swap_rel"])


def test_sugarcrepe_raw_json_with_real_coco_images(tmp_path, coco_val, coco_mini):
    raw = {str(i): {"filename": p.name, "caption": c, "negative_caption": c + " at night"}
           for i, (p, c) in enumerate(coco_val[:4])}
    (tmp_path / "add_att.json").write_text(json.dumps(raw))
    images_dir = coco_mini / "images" / "val2017"
    mc = adapters.load_sugarcrepe(tmp_path, subsets=["add_att"], images_dir=images_dir)
    assert len(mc) == 4 and mc.labels == [0] * 4 and mc.candidates[0][1].endswith(" at night")
    assert Path(mc.images[0]).is_file()
    with pytest.raises(ValueError, match="images_dir"):
        adapters.load_sugarcrepe(tmp_path, subsets=["add_att"])
    with pytest.raises(FileNotFoundError, match="val2017"):
        adapters.load_sugarcrepe(tmp_path, subsets=["add_att"], images_dir=tmp_path)


# ---------------------------------------------------------------- ARO
def test_aro_raw_visual_genome_layout_crops_to_the_box(tmp_path, coco_val):
    (tmp_path / "images").mkdir()
    items = []
    for i, (path, caption) in enumerate(coco_val[:3]):
        (tmp_path / "images" / path.name).symlink_to(path)
        items.append({"image_id": i, "image_path": path.name, "bbox_x": 10, "bbox_y": 20, "bbox_w": 50 + i,
                      "bbox_h": 40, "relation_name": "on" if i < 2 else "under",
                      "true_caption": "the cup is on the table", "false_caption": "the table is on the cup"})
    (tmp_path / "visual_genome_relation.json").write_text(json.dumps(items))
    mc = adapters.load_aro(subsets=["VG-Relation"], sources={"VG-Relation": tmp_path})
    assert len(mc) == 3 and mc.categories == ["on", "on", "under"]
    crop = mc.images[mc.image_index[2]]
    assert isinstance(crop, PIL.Image.Image) and crop.size == (52, 40)
    assert mc.notes == {"VG-Relation images": "3 of 3 cropped to their bbox (ARO's protocol; raw layout), "
                                              "0 without a box used whole"}


def test_aro_hub_schemas(tmp_path, coco_val):
    img = datasets.Image()
    attribution = datasets.Dataset.from_dict({
        "image": [str(p) for p, _ in coco_val[:2]],
        "true_caption": ["the white plate and the red apple", "the black dog and the small cat"],
        "false_caption": ["the red plate and the white apple", "the small dog and the black cat"],
        "attributes": [["white", "red"], ["black", "small"]],
        "obj1": ["plate", "dog"],
    }, features=datasets.Features({"image": img, "true_caption": datasets.Value("string"),
                                   "false_caption": datasets.Value("string"),
                                   "attributes": datasets.Sequence(datasets.Value("string")),
                                   "obj1": datasets.Value("string")}))
    order = datasets.Dataset.from_dict({
        "images": [[str(coco_val[2][0])]],
        "correct_caption": ["a man riding a horse"],
        **{f"hard_text_{k}": [f"perturbed {k}"] for k in range(1, 5)},
    }, features=datasets.Features({"images": datasets.Sequence(img), "correct_caption": datasets.Value("string"),
                                   **{f"hard_text_{k}": datasets.Value("string") for k in range(1, 5)}}))
    _write_parquet(order, tmp_path / "coco_order")
    mc = adapters.load_aro(subsets=["VG-Attribution", "COCO-Order"],
                           sources={"VG-Attribution": attribution, "COCO-Order": tmp_path / "coco_order"})
    assert mc.groups == ["VG-Attribution", "VG-Attribution", "COCO-Order"]
    assert mc.categories == ["white_red", "black_small", "COCO-Order"]
    assert mc.candidates[2] == ["a man riding a horse", "perturbed 1", "perturbed 2", "perturbed 3", "perturbed 4"]
    # the first image of the list column, left undecoded until the encoder asks for it
    assert open_image(mc.images[mc.image_index[2]]).size == PIL.Image.open(coco_val[2][0]).size
    with pytest.raises(ValueError, match="unknown ARO subset"):
        adapters.load_aro(subsets=["VG-Spatial"])


# ---------------------------------------------------------------- Winoground
def test_winoground_raw_layout_with_zipped_images(tmp_path, coco_val):
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as zf:
        for i, (path, _) in enumerate(coco_val[:4]):
            png = tmp_path / f"ex_{i // 2}_img_{i % 2}.png"
            PIL.Image.open(path).convert("RGB").resize((32, 24)).save(png)
            zf.write(png, f"images/{png.name}")
            png.unlink()
    rows = [{"id": k, "caption_0": f"caption {k} a", "caption_1": f"caption {k} b", "image_0": f"ex_{k}_img_0",
             "image_1": f"ex_{k}_img_1", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
             "collapsed_tag": ["Object", "Relation"][k]} for k in range(2)]
    (tmp_path / "examples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ps = adapters.load_winoground(tmp_path)
    assert isinstance(ps, PairedSet) and len(ps) == 2 and ps.groups == ["Object", "Relation"]
    assert ps.caption1 == ["caption 0 b", "caption 1 b"]
    assert PIL.Image.open(ps.images[ps.image1[1]]).size == (32, 24)
    rows[1]["image_1"] = "ex_9_img_1"
    (tmp_path / "examples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(FileNotFoundError, match="ex_9_img_1"):
        adapters.load_winoground(tmp_path)


def test_winoground_errors_name_the_line_as_the_file_numbers_it(tmp_path):
    """Blank lines count: the third line of examples.jsonl is called line 3, whatever came before it."""
    good = {"id": 0, "caption_0": "a", "caption_1": "b", "image_0": "ex_0_img_0", "image_1": "ex_0_img_1"}
    (tmp_path / "images").mkdir()
    for name in ("ex_0_img_0", "ex_0_img_1"):
        PIL.Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{name}.png")
    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps(good) + "\n\n" + json.dumps({"id": 1, "caption_0": "c"}) + "\n")
    with pytest.raises(KeyError, match=r"examples\.jsonl, line 3: missing field\(s\) \['image_0', 'image_1', 'caption_1'\]"):
        adapters.load_winoground(tmp_path)
    examples.write_text(json.dumps(good) + "\n\n\n{not json\n")
    with pytest.raises(ValueError, match=r"examples\.jsonl, line 4: not a JSON object \(Expecting property name"):
        adapters.load_winoground(tmp_path)


# ---------------------------------------------------------------- InpaintCOCO
def test_inpaintcoco_schema(coco_val):
    from hf_hardneg.data.inpaintcoco import INPAINTCOCO_FEATURES

    n = 3
    coco = [PIL.Image.open(p).convert("RGB").resize((40, 30)) for p, _ in coco_val[:n]]
    inpainted = [PIL.Image.eval(im, lambda v: 255 - v) for im in coco]
    row = {name: [None] * n for name in INPAINTCOCO_FEATURES}
    row.update(sample_id=["a", "b", "c"], coco_image_id=[1, 2, 3], concept=["object", "color", "color"], coco_image=coco,
               inpaint_image=inpainted, coco_caption=[c for _, c in coco_val[:n]],
               inpaint_caption=["changed 1", "changed 2", "changed 3"], license_id=[1, 2, 4])
    ds = datasets.Dataset.from_dict(row, features=INPAINTCOCO_FEATURES)
    ps = adapters.load_inpaintcoco_pairs(ds)
    assert ps.groups == ["object", "color", "color"] and ps.caption1[0] == "changed 1"
    assert open_image(ps.images[ps.image0[0]]).size == open_image(ps.images[ps.image1[0]]).size == (40, 30)
    only_color = adapters.load_inpaintcoco_pairs(ds, concept="color")
    assert len(only_color) == 2 and set(only_color.groups) == {"color"}


# ---------------------------------------------------------------- Table-2 captioned sets
def test_captioned_sets_with_published_columns(tmp_path, coco_val):
    img = datasets.Image()
    flickr = datasets.Dataset.from_dict({
        "image": [str(p) for p, _ in coco_val[:2]],
        "caption": [["a red car on the left", "two men"], ["a small brown dog", "a dog on grass"]],
        "sentids": [["0", "1"], ["2", "3"]], "img_id": ["0", "1"], "filename": ["a.jpg", "b.jpg"],
    }, features=datasets.Features({"image": img, "caption": datasets.Sequence(datasets.Value("string")),
                                   "sentids": datasets.Sequence(datasets.Value("string")),
                                   "img_id": datasets.Value("string"), "filename": datasets.Value("string")}))
    _write_parquet(flickr, tmp_path / "flickr")
    ds, spec = adapters.load_captioned("flickr30k", source=tmp_path / "flickr")
    assert spec.caption_column == "caption" and len(ds) == 2

    book = datasets.Dataset.from_dict({"1600px": [str(coco_val[0][0])], "info_alt": ["a tall man in a hat"],
                                       "image_title": ["x"]},
                                      features=datasets.Features({"1600px": img, "info_alt": datasets.Value("string"),
                                                                  "image_title": datasets.Value("string")}))
    ds, spec = adapters.load_captioned("oldbookillustrations", source=book)
    assert spec.image_column == "1600px"

    sbu_urls = datasets.Dataset.from_dict({"image_url": ["http://x/1.jpg"], "user_id": ["u"], "caption": ["a cat"]})
    with pytest.raises(KeyError, match="image URLs"):
        adapters.load_captioned("sbu", source=sbu_urls)
    with pytest.raises(ValueError, match="no default source"):
        adapters.load_captioned("sbu")
    with pytest.raises(ValueError, match="unknown captioned dataset"):
        adapters.load_captioned("laion")


def test_classification_schema(coco_val):
    ds = datasets.Dataset.from_dict(
        {"img": [str(p) for p, _ in coco_val[:3]], "label": [0, 2, 1]},
        features=datasets.Features({"img": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["airplane", "automobile", "bird"])}))
    cs = adapters.load_classification(ds)
    assert cs.class_names == ["airplane", "automobile", "bird"] and cs.labels == [0, 2, 1]
    plain = datasets.Dataset.from_dict({"img": [str(coco_val[0][0])], "label": [0]},
                                       features=datasets.Features({"img": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))
    with pytest.raises(ValueError, match="class_names"):
        adapters.load_classification(plain)
    assert adapters.load_classification(plain, class_names=["cat"]).class_names == ["cat"]


def test_coco_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions_val2017.json"):
        adapters.load_coco(tmp_path)
