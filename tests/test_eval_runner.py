"""evaluate_model, the results files and tables, and the `evaluate` / `compare` commands, on real COCO images."""

from __future__ import annotations

import json
import math

import datasets
import PIL.Image
import pytest
import torch

from hf_hardneg.cli import main
from hf_hardneg.evaluation import TASK_NAMES, compare_table, evaluate_model, load_results, summary_rows
from hf_hardneg.evaluation.runner import TASKS


@pytest.fixture(scope="module")
def coco_ds(coco_mini):
    from hf_hardneg.data import load_coco_captions

    return load_coco_captions(coco_mini / "annotations" / "captions_val2017.json", coco_mini / "images" / "val2017")


@pytest.fixture(scope="module")
def coco_clip(tmp_path_factory, coco_ds):
    """A tiny CLIP whose word-level vocabulary covers coco-mini's captions."""
    from hf_hardneg.testing import make_tiny_model

    path = tmp_path_factory.mktemp("coco_clip")
    make_tiny_model(list(coco_ds["caption"]), path, kind="clip", seed=1)
    return path


def _all_numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _all_numbers(v)
    elif isinstance(tree, float):
        yield tree


def test_task_names_are_listed_for_the_cli():
    assert tuple(TASKS) == TASK_NAMES


def test_concept_and_retrieval_share_image_encoding_without_changing_results(coco_clip, coco_mini):
    # the object concept (79 substitutions per caption) is left out to keep this test fast
    kw = dict(coco_dir=coco_mini, progress=False, device="cpu", concepts=["color", "location", "size"])
    both = evaluate_model(coco_clip, ["concept", "retrieval"], **kw)
    alone = {t: evaluate_model(coco_clip, [t], **kw)["tasks"][t] for t in ("concept", "retrieval")}
    for task in ("concept", "retrieval"):
        a, b = both["tasks"][task]["metrics"], alone[task]["metrics"]
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    concept = both["tasks"]["concept"]["metrics"]
    assert set(concept) >= {"color", "location", "size", "micro_average", "macro_average"}
    assert concept["micro_average"]["count"] == sum(concept[c]["count"] for c in ("color", "location", "size"))
    retrieval = both["tasks"]["retrieval"]["metrics"]
    assert retrieval["num_images"] == 159 and retrieval["num_texts"] == 795
    assert all(0.0 <= v <= 1.0 for k, v in retrieval.items() if "_R@" in k)


def test_many_tasks_write_results_and_markdown(coco_clip, coco_mini, coco_ds, tmp_path):
    sugar = tmp_path / "sugarcrepe"
    sugar.mkdir()
    rows = coco_ds.select(range(0, 40, 5))
    raw = {str(i): {"filename": r["file_name"], "caption": r["caption"], "negative_caption": r["caption"] + " upside down"}
           for i, r in enumerate(rows)}
    (sugar / "swap_obj.json").write_text(json.dumps(raw))
    classes = datasets.Dataset.from_dict(
        {"img": [r["image"] for r in rows], "label": [i % 3 for i in range(len(rows))]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "hot_dog"])}))
    flickr = datasets.Dataset.from_dict(
        {"image": [r["image"] for r in rows], "caption": [[r["caption"], "a red bus"] for r in rows]},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))}))
    results = evaluate_model(
        coco_clip, "concept,retrieval,sugarcrepe,zeroshot,flickr30k", tmp_path / "out", coco_dir=coco_mini,
        sources={"sugarcrepe": {"source": sugar, "subsets": ["swap_obj"]}, "zeroshot": classes, "flickr30k": flickr},
        concepts=["color", "object"], max_examples=10, progress=False, device="cpu", name="tiny",
    )
    assert list(results["tasks"]) == ["concept", "retrieval", "sugarcrepe", "zeroshot", "flickr30k"]
    assert results["settings"]["max_examples"] == 10 and results["settings"]["concepts"] == ["color", "object"]
    assert results["tasks"]["concept"]["metrics"]["color"]["count"] == 10
    assert results["tasks"]["retrieval"]["metrics"]["num_images"] == 10
    assert results["tasks"]["sugarcrepe"]["metrics"]["swap_obj"]["count"] == 8  # images via coco_dir/images/val2017
    assert results["tasks"]["zeroshot"]["metrics"]["chance"] == pytest.approx(1 / 3)
    assert all(0.0 <= v <= 1.0 or math.isnan(v) for v in _all_numbers(
        {t: {k: v for k, v in e["metrics"].items() if "rank" not in k} for t, e in results["tasks"].items()}))
    saved = load_results(tmp_path / "out")
    assert saved["model"] == "tiny" and saved["tasks"].keys() == results["tasks"].keys()
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| concept | COCO val2017 | color | accuracy |" in md and "| retrieval | COCO val2017 | t2i | R@5 |" in md
    keys = {r.key for r in summary_rows(results)}
    assert {"concept/macro_average/accuracy", "sugarcrepe/swap_obj/accuracy", "zeroshot/all/top1",
            "flickr30k/color/accuracy"} <= keys


def test_a_model_that_cannot_tell_anything_apart_scores_at_most_chance(coco_clip, coco_mini, coco_ds):
    """Zeroed projections: every embedding is the zero vector, every score ties."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(coco_clip)
    with torch.no_grad():
        model.text_projection.weight.zero_()
        model.visual_projection.weight.zero_()
    rows = coco_ds.select(range(0, 30, 3))
    inpaint = _inpaint_like(rows)
    classes = datasets.Dataset.from_dict(
        {"image": [r["image"] for r in rows], "label": [i % 2 for i in range(len(rows))]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])}))
    res = evaluate_model(model, "concept,retrieval,inpaintcoco,zeroshot", tokenizer=AutoTokenizer.from_pretrained(coco_clip),
                         image_processor=AutoImageProcessor.from_pretrained(coco_clip), coco_dir=coco_mini,
                         sources={"inpaintcoco": inpaint, "zeroshot": classes}, max_examples=20, progress=False)
    concept = res["tasks"]["concept"]["metrics"]
    for c in ("object", "color", "location", "size"):
        assert concept[c]["accuracy"] <= concept[c]["chance"]
        assert concept[c]["accuracy"] == 0.0
    retrieval = res["tasks"]["retrieval"]["metrics"]
    assert all(retrieval[f"{d}_R@{k}"] == 0.0 for d in ("t2i", "i2t") for k in (1, 5, 10))
    assert res["tasks"]["inpaintcoco"]["metrics"]["micro_average"]["group_score"] == 0.0
    assert res["tasks"]["zeroshot"]["metrics"]["top1"] == 0.0


def _inpaint_like(rows):
    from hf_hardneg.data.inpaintcoco import INPAINTCOCO_FEATURES

    n = len(rows)
    data = {name: [None] * n for name in INPAINTCOCO_FEATURES}
    images = [PIL.Image.open(r["image"]["path"] if isinstance(r["image"], dict) else r["image"].filename) for r in rows]
    data.update(sample_id=[str(i) for i in range(n)], coco_image=images,
                inpaint_image=[PIL.Image.eval(im.convert("RGB"), lambda v: 255 - v) for im in images],
                coco_caption=list(rows["caption"]), inpaint_caption=[c + " in black" for c in rows["caption"]],
                concept=[i % 3 for i in range(n)])
    return datasets.Dataset.from_dict(data, features=INPAINTCOCO_FEATURES)


def test_failing_tasks_raise_or_are_recorded(coco_clip, coco_mini):
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_model(coco_clip, ["concept", "vqa"], coco_dir=coco_mini)
    with pytest.raises(ValueError, match="coco_dir"):
        evaluate_model(coco_clip, ["retrieval"], progress=False)
    res = evaluate_model(coco_clip, ["retrieval", "sbu"], coco_dir=coco_mini, max_examples=5, progress=False,
                         on_error="skip")
    assert "retrieval" in res["tasks"] and "no default source" in res["errors"]["sbu"]


def test_cli_evaluate_two_models_then_compare(coco_clip, coco_mini, tmp_path, tiny_clip_dir, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(coco_clip), "--model", str(tiny_clip_dir), "--name", "coco",
                 "--name", "tiny", "--tasks", "concept,retrieval", "--concepts", "color,size",
                 "--coco-dir", str(coco_mini), "--output", str(out), "--max-examples", "8", "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    comparison = (out / "comparison.md").read_text()
    assert "| task | subset | metric | coco | tiny |" in comparison
    assert "| concept | color | accuracy |" in comparison and "| retrieval | t2i | R@5 |" in comparison
    code = main(["compare", str(out / "coco"), str(out / "tiny" / "results.json"), "--names", "A,B",
                 "--metrics", "retrieval/t2i", "--output", str(tmp_path / "t.md")])
    assert code == 0
    table = (tmp_path / "t.md").read_text()
    assert "| task | subset | metric | A | B |" in table and "concept" not in table
    assert table.count("\n") == 2 + 3 + 0  # header, rule, R@1/5/10
    with pytest.raises(SystemExit, match="TASK=PATH"):
        main(["evaluate", "--model", "x", "--output", str(tmp_path), "--source", "nonsense"])


def test_compare_table_marks_missing_values():
    a = {"tasks": {"retrieval": {"kind": "retrieval", "metrics": {"t2i_R@5": 0.5}}}}
    b = {"tasks": {"concept": {"kind": "multiple_choice", "metrics": {"color": {"accuracy": 0.25, "count": 4}}}}}
    table = compare_table({"a": a, "b": b})
    assert "| retrieval | t2i | R@5 | 0.500 | – |" in table
    assert "| concept | color | accuracy | – | 0.250 |" in table
    with pytest.raises(ValueError, match="no results"):
        compare_table({})
