"""The newer compositional suites (SugarCrepe++, MMVP-VLM, VALSE, What'sUp, ColorSwap) on fixtures in their
published formats, built at test time from real COCO photographs (../shared/data/coco-mini)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import PIL.Image
import pytest
import torch

from hf_hardneg.data.images import open_image
from hf_hardneg.evaluation import compositional, evaluate_model
from hf_hardneg.evaluation.encoding import as_embedder
from hf_hardneg.evaluation.tasks import MultipleChoiceSet, PairedSet, TripletSet, triplet_correct


@pytest.fixture(scope="module")
def photos(coco_mini) -> list[tuple[Path, str]]:
    """(path, first caption) of the first 10 val2017 images of coco-mini."""
    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    first: dict[int, str] = {}
    for ann in data["annotations"]:
        first.setdefault(ann["image_id"], ann["caption"].strip())
    return [(coco_mini / "images" / "val2017" / img["file_name"], first[img["id"]]) for img in data["images"][:10]]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, photos):
    from hf_hardneg.testing import make_tiny_model

    path = tmp_path_factory.mktemp("suites_clip")
    make_tiny_model([c for _, c in photos] + ["a photo of the dog is facing left right"], path, kind="clip", seed=5)
    return path


# ---------------------------------------------------------------- SugarCrepe++
def _sugarcrepe_pp_raw(folder: Path, photos) -> dict[str, list[dict]]:
    """<subset>.json: lists of {id, filename, caption, caption2, negative_caption} over COCO val2017."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "swap_att": [{"id": i, "filename": p.name, "caption": c, "caption2": f"{c} (said otherwise)",
                      "negative_caption": " ".join(reversed(c.split()))} for i, (p, c) in enumerate(photos[:4])],
        "replace_rel": [{"id": i, "filename": p.name, "caption": c, "caption2": c.lower(),
                         "negative_caption": c.replace(" ", " not ", 1)} for i, (p, c) in enumerate(photos[4:7])],
    }
    for subset, items in data.items():
        (folder / f"{subset}.json").write_text(json.dumps(items, indent=1))
    return data


def test_sugarcrepe_pp_raw_json_and_table(photos, coco_mini, tmp_path):
    data = _sugarcrepe_pp_raw(tmp_path / "scpp", photos)
    images_dir = coco_mini / "images" / "val2017"
    ts = compositional.load_sugarcrepe_pp(tmp_path / "scpp", images_dir=images_dir)
    assert isinstance(ts, TripletSet) and len(ts) == 7
    assert ts.groups == ["replace_rel"] * 3 + ["swap_att"] * 4  # the files present, in the published order
    assert ts.positive2[3] == data["swap_att"][0]["caption2"] and ts.negative[0] == data["replace_rel"][0]["negative_caption"]
    assert Path(ts.images[ts.image_index[3]]).name == photos[0][0].name
    with pytest.raises(ValueError, match="images_dir"):
        compositional.load_sugarcrepe_pp(tmp_path / "scpp")
    with pytest.raises(FileNotFoundError, match="add_obj|replace_obj"):
        compositional.load_sugarcrepe_pp(tmp_path / "scpp", subsets=["replace_obj"], images_dir=images_dir)
    table = datasets.Dataset.from_dict(
        {"image": [str(p) for p, _ in photos[:4]], **{k: [ex[k] for ex in data["swap_att"]]
                                                     for k in ("caption", "caption2", "negative_caption")}},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                    "caption2": datasets.Value("string"), "negative_caption": datasets.Value("string")}))
    from_table = compositional.load_sugarcrepe_pp(table, subsets=["swap_att"])
    assert from_table.positive1 == ts.positive1[3:] and from_table.groups == ["swap_att"] * 4
    (tmp_path / "hub_swap_att" / "data").mkdir(parents=True)  # a Parquet copy of one subset, as on the Hub
    table.to_parquet(str(tmp_path / "hub_swap_att" / "data" / "train-00000-of-00001.parquet"))
    from_parquet = compositional.load_sugarcrepe_pp(tmp_path / "hub_swap_att", subsets="swap_att")
    assert from_parquet.negative == ts.negative[3:] and from_parquet.groups == ["swap_att"] * 4
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "swap_obj.json").write_text(json.dumps([{"id": 0, "filename": "x.jpg", "caption": "a"}]))
    with pytest.raises(KeyError, match=r"swap_obj.json, example 0 \(id 0\): missing field\(s\) \['caption2', 'negative_caption'\]"):
        compositional.load_sugarcrepe_pp(bad, images_dir=images_dir)


def test_triplet_rules_count_ties_against_the_true_captions():
    image = torch.tensor([[0.5, 0.6, 0.4], [0.5, 0.3, 0.4], [0.5, 0.5, 0.5]])
    text = torch.tensor([[0.9, 0.2, 0.3], [0.2, 0.1, 0.3], [0.4, 0.4, 0.1]])
    itt, tot = triplet_correct(image, text, tie_tolerance=1e-5)
    assert itt.tolist() == [True, False, False] and tot.tolist() == [True, False, False]


def test_sugarcrepe_pp_scores_match_the_embeddings(clip_dir, photos, coco_mini, tmp_path):
    _sugarcrepe_pp_raw(tmp_path / "scpp", photos)
    res = evaluate_model(clip_dir, ["sugarcrepe_pp"], sources={"sugarcrepe_pp": tmp_path / "scpp"},
                         coco_dir=coco_mini, progress=False, device="cpu")  # images from coco_dir's val2017
    metrics = res["tasks"]["sugarcrepe_pp"]["metrics"]
    ts = compositional.load_sugarcrepe_pp(tmp_path / "scpp", images_dir=coco_mini / "images" / "val2017")
    embedder = as_embedder(str(clip_dir), device="cpu", progress=False)
    img = embedder.embed_images([ts.images[i] for i in ts.image_index]).double()
    p1, p2, neg = (embedder.embed_texts(list(t)).double() for t in (ts.positive1, ts.positive2, ts.negative))
    dot = lambda a, b: (a * b).sum(-1)  # noqa: E731
    itt = (dot(img, p1) > dot(img, neg)) & (dot(img, p2) > dot(img, neg))
    tot = (dot(p1, p2) > dot(p1, neg)) & (dot(p1, p2) > dot(p2, neg))
    for group in ("replace_rel", "swap_att"):
        idx = torch.tensor([g == group for g in ts.groups])
        assert metrics[group]["itt_score"] == pytest.approx(itt[idx].double().mean().item())
        assert metrics[group]["tot_score"] == pytest.approx(tot[idx].double().mean().item())
    assert metrics["micro_average"]["count"] == 7


# ---------------------------------------------------------------- MMVP-VLM
def _mmvp(folder: Path, photos, image_folder: str = "MLLM_VLM Images") -> list[list[str]]:
    """Questions.csv (question id, pattern, statement; consecutive pairs) + <images>/<pattern>/<id>.jpg."""
    rows = [["1", "Orientation", "the dog is facing left"], ["2", "Orientation", "the dog is facing right"],
            ["3", "Color", "the cup is red"], ["4", "Color", "the cup is blue"]]
    for (qid, pattern, _), (path, _) in zip(rows, photos):
        target = folder / image_folder / pattern
        target.mkdir(parents=True, exist_ok=True)
        PIL.Image.open(path).convert("RGB").resize((48, 36)).save(target / f"{qid}.jpg")
    with open(folder / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Question ID", "Type", "Statement"], *rows])
    return rows


def test_mmvp_vlm_folder_layout(photos, tmp_path):
    rows = _mmvp(tmp_path / "mmvp", photos)
    ps = compositional.load_mmvp_vlm(tmp_path / "mmvp")
    assert isinstance(ps, PairedSet) and len(ps) == 2 and ps.groups == ["Orientation", "Color"]
    assert ps.caption0 == ["a photo of the dog is facing left", "a photo of the cup is red"]
    assert ps.caption1[1] == "a photo of " + rows[3][2]
    assert Path(ps.images[ps.image1[1]]).as_posix().endswith("MLLM_VLM Images/Color/4.jpg")
    assert "image_score" in ps.notes["published_score"]
    with open(tmp_path / "mmvp" / "Questions.csv", "a", newline="") as f:
        csv.writer(f).writerow(["5", "Color", "an odd one out"])
    with pytest.raises(ValueError, match="5 statements; MMVP-VLM's rows come in pairs"):
        compositional.load_mmvp_vlm(tmp_path / "mmvp")
    rows2 = _mmvp(tmp_path / "other", photos, image_folder="MMVP_VLM_Images")
    (tmp_path / "other" / "MMVP_VLM_Images" / "Color" / "4.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Questions.csv, line 5: image .*Color/4.jpg not found"):
        compositional.load_mmvp_vlm(tmp_path / "other")
    assert rows2 == rows


# ---------------------------------------------------------------- VALSE
def test_valse_pieces_keep_validated_examples(photos, tmp_path):
    (tmp_path / "data").mkdir()
    images = tmp_path / "images" / "visual7w"
    images.mkdir(parents=True)
    for path, _ in photos[:3]:
        (images / path.name).symlink_to(path)

    def item(i, votes):
        path, caption = photos[i]
        return {"dataset": "visual7w", "original_split": "test", "dataset_idx": str(i), "linguistic_phenomena": "counting",
                "image_file": path.name, "caption": caption, "foil": caption + " twice", "classes": "x",
                "classes_foil": "y", "mturk": votes}

    counting = {"counting_0": item(0, {"foil": 0, "caption": 3, "other": 0}),
                "counting_1": item(1, {"foil": 2, "caption": 1, "other": 0}),  # not validated
                "counting_2": item(2, {"foil": 1, "caption": 2, "other": 0})}
    existence = {"existence_0": {**item(1, {"foil": 0, "caption": 2, "other": 1}), "linguistic_phenomena": "existence"}}
    (tmp_path / "data" / "counting-hard.json").write_text(json.dumps(counting))
    (tmp_path / "data" / "existence.json").write_text(json.dumps(existence))
    mc = compositional.load_valse(tmp_path, images_dir=tmp_path / "images")  # found under <images_dir>/<dataset>/
    assert isinstance(mc, MultipleChoiceSet) and mc.groups == ["counting-hard", "counting-hard", "existence"]
    assert mc.candidates[1] == [photos[2][1], photos[2][1] + " twice"] and mc.labels == [0, 0, 0]
    assert mc.skipped == {"counting-hard: not validated (mturk caption votes < 2)": 1}
    assert mc.categories == ["counting", "counting", "existence"]
    everything = compositional.load_valse(tmp_path, images_dir={"visual7w": images}, valid_only=False)
    assert len(everything) == 4 and everything.skipped == {}
    with pytest.raises(ValueError, match="images_dir"):
        compositional.load_valse(tmp_path)
    with pytest.raises(FileNotFoundError, match="image file"):
        compositional.load_valse(tmp_path, images_dir=tmp_path)


# ---------------------------------------------------------------- What'sUp
def test_whatsup_published_files(photos, coco_mini, tmp_path):
    root = tmp_path / "whatsup"
    (root / "controlled_images").mkdir(parents=True)
    controlled = []
    for i, (path, _) in enumerate(photos[:2]):
        name = f"mug_{['left_of', 'on'][i]}_table.jpeg"
        PIL.Image.open(path).convert("RGB").resize((40, 30)).save(root / "controlled_images" / name)
        controlled.append({"image_path": f"data/controlled_images/{name}",  # the authors' own data folder
                           "caption_options": ["A mug to the left of a table", "A mug to the right of a table",
                                               "A mug on a table", "A mug under a table"]})
    (root / "controlled_images_dataset.json").write_text(json.dumps(controlled))
    image_ids = [int(p.stem) for p, _ in photos[:3]]
    (root / "coco_qa_one_obj.json").write_text(json.dumps(
        [[image_id, "A photo of a dog on the left", "A photo of a dog on the right"] for image_id in image_ids]))
    mc = compositional.load_whatsup(root, coco_images_dir=coco_mini / "images" / "val2017")
    assert mc.groups == ["Controlled-A"] * 2 + ["COCO-QA-one"] * 3
    assert len(mc.candidates[0]) == 4 and len(mc.candidates[2]) == 2 and set(mc.labels) == {0}
    assert Path(mc.images[mc.image_index[2]]).name == f"{image_ids[0]:012d}.jpg"
    alone = compositional.load_whatsup(root, subsets=["Controlled-A"])
    assert alone.groups == ["Controlled-A"] * 2
    with pytest.raises(FileNotFoundError, match="COCO-QA-one images"):
        compositional.load_whatsup(root)  # no val2017/ under the root and no coco_images_dir
    with pytest.raises(ValueError, match="unknown What'sUp subset"):
        compositional.load_whatsup(root, subsets=["Controlled-C"])


# ---------------------------------------------------------------- ColorSwap
def _colorswap(photos) -> datasets.Dataset:
    """stanfordnlp/colorswap: id, image_1, image_2, caption_1, caption_2 (+ sources)."""
    return datasets.Dataset.from_dict({
        "id": [0, 1],
        "image_1": [PIL.Image.open(photos[0][0]).convert("RGB").resize((40, 30)),
                    PIL.Image.open(photos[2][0]).convert("RGB").resize((40, 30))],
        "image_2": [PIL.Image.open(photos[1][0]).convert("RGB").resize((40, 30)),
                    PIL.Image.open(photos[3][0]).convert("RGB").resize((40, 30))],
        "caption_1": ["a red cup on a white table", "a blue bus by a yellow house"],
        "caption_2": ["a white cup on a red table", "a yellow bus by a blue house"],
        "image_source": ["midjourney", "dalle3"], "caption_source": ["human", "human"],
    }, features=datasets.Features({"id": datasets.Value("int64"), "image_1": datasets.Image(),
                                   "image_2": datasets.Image(), "caption_1": datasets.Value("string"),
                                   "caption_2": datasets.Value("string"), "image_source": datasets.Value("string"),
                                   "caption_source": datasets.Value("string")}))


def test_colorswap_table(photos, tmp_path):
    table = _colorswap(photos)
    (tmp_path / "cs" / "data").mkdir(parents=True)
    table.to_parquet(str(tmp_path / "cs" / "data" / "test-00000-of-00001.parquet"))
    ps = compositional.load_colorswap(tmp_path / "cs")
    assert ps.caption0 == list(table["caption_1"]) and ps.caption1 == list(table["caption_2"])
    assert open_image(ps.images[ps.image1[1]]).size == (40, 30)
    with pytest.raises(KeyError, match="ColorSwap's columns"):
        compositional.load_colorswap(table.remove_columns("image_2"))


def test_the_new_tasks_run_through_evaluate(clip_dir, photos, coco_mini, tmp_path):
    _mmvp(tmp_path / "mmvp", photos)
    res = evaluate_model(clip_dir, ["mmvp_vlm", "colorswap"], tmp_path / "out",
                         sources={"mmvp_vlm": tmp_path / "mmvp", "colorswap": _colorswap(photos)},
                         progress=False, device="cpu")
    mmvp = res["tasks"]["mmvp_vlm"]
    assert mmvp["kind"] == "paired" and set(mmvp["metrics"]) >= {"Orientation", "Color", "micro_average"}
    assert mmvp["notes"]["prompt"] == "statements prefixed with 'a photo of '"
    assert res["tasks"]["colorswap"]["metrics"]["all"]["count"] == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| mmvp_vlm |" in md and "| colorswap |" in md
