"""Edited scenes (InpaintCOCO-style pairs of the synthetic world): each caption is true of exactly one image.

The checks use the independent caption grammar of ``test_synthetic`` on the scene
metadata and on the rendered pixels, not the generator's own helpers.
"""

from __future__ import annotations

import numpy as np
import pytest

from hf_hardneg.synthetic import (
    EDITABLE_CONCEPTS,
    WorldConfig,
    edit_scene,
    iter_scenes,
    make_edited_pairs,
    render_scene,
)
from test_synthetic import caption_problems

WORLDS = {"grid": WorldConfig(layout="grid"), "free": WorldConfig(), "demo": WorldConfig(
    layout="grid", min_objects=1, max_objects=2, p_relation=0.0, p_side=1.0)}


def _row(scene, image=None):
    """A scene as the dataset row the caption grammar reads."""
    return {"objects": [{"noun": o.noun, "color": o.color, "size": o.size, "x0": o.box[0], "y0": o.box[1],
                         "x1": o.box[2], "y1": o.box[3], "depth": o.depth} for o in scene.objects],
            "background": scene.background, "image": image if image is not None else render_scene(scene)}


@pytest.mark.parametrize("world", list(WORLDS))
@pytest.mark.parametrize("concept", EDITABLE_CONCEPTS)
def test_edited_caption_is_true_of_the_edit_and_false_of_the_original(world, concept):
    config = WORLDS[world]
    made = 0
    for i, scene, caption, _ in iter_scenes(150, seed=3, config=config):
        edit = edit_scene(scene, caption, concept, np.random.default_rng(i), config)
        if edit is None:
            continue
        made += 1
        assert edit.caption != caption and edit.concept == concept
        assert caption_problems(caption, _row(scene)) == []
        assert caption_problems(edit.caption, _row(edit.scene)) == [], (caption, edit.caption)
        # each caption is false of the other picture (for location only when the grammar can read the
        # relation: "in front of" needs the overlap the free layout sometimes has)
        assert caption_problems(edit.caption, _row(scene)) != [], (caption, edit.caption)
        assert caption_problems(caption, _row(edit.scene)) != [], (caption, edit.caption)
        # the pictures differ, the background and the number of objects do not
        assert edit.scene.background == scene.background and len(edit.scene.objects) == len(scene.objects)
        assert not np.array_equal(np.asarray(render_scene(scene)), np.asarray(render_scene(edit.scene)))
    assert made >= 15, f"only {made} of 150 {world} scenes could be edited on {concept}"


def test_only_the_named_object_changes_for_attribute_edits():
    config = WORLDS["grid"]
    for i, scene, caption, _ in iter_scenes(80, seed=5, config=config):
        for concept in ("color", "size", "object"):
            edit = edit_scene(scene, caption, concept, np.random.default_rng(i), config)
            if edit is None:
                continue
            changed = [(a, b) for a, b in zip(scene.objects, edit.scene.objects) if a != b]
            assert len(changed) == 1
            before, after = changed[0]
            if concept == "color":
                assert (before.color, after.color) == (edit.keyword, edit.replacement)
                assert before.box == after.box and before.noun == after.noun
            elif concept == "size":
                assert {before.size, after.size} == {"small", "large"}
                assert before.center == pytest.approx(after.center, abs=1e-2)
            else:
                assert before.noun == edit.keyword and after.noun == edit.replacement
                assert after.noun not in {o.noun for o in scene.objects}
                assert before.box == after.box and before.color == after.color


def test_no_edit_when_the_caption_does_not_name_the_concept():
    config = WORLDS["grid"]
    _, scene, caption, coarse = next(iter_scenes(1, seed=0, config=config))
    for concept in ("color", "size", "location"):
        assert edit_scene(scene, coarse, concept, np.random.default_rng(0), config) is None
    with pytest.raises(ValueError, match="editable concepts"):
        edit_scene(scene, caption, "texture", np.random.default_rng(0), config)


def test_edited_pairs_dataset_has_the_inpaintcoco_columns_and_counts_what_it_left_out():
    config = WORLDS["demo"]
    ds = make_edited_pairs(60, seed=1, config=config, start=10)
    assert {"concept", "coco_image", "coco_caption", "inpaint_image", "inpaint_caption"} <= set(ds.column_names)
    assert set(ds["concept"]) <= set(EDITABLE_CONCEPTS) and len(set(ds["concept"])) >= 3
    assert f"{len(ds)} edited pairs of 60 synthetic scenes" in ds.info.description
    assert ds[0]["scene_id"] >= 10 and ds[0]["coco_image"].size == (32, 32)
    only_size = make_edited_pairs(60, seed=1, config=config, start=10, concepts=["size"])
    assert set(only_size["concept"]) == {"size"} and len(only_size) < 60
    assert f"{60 - len(only_size)} scenes left out" in only_size.info.description
    with pytest.raises(ValueError, match="choose among"):
        make_edited_pairs(4, concepts=["texture"])


def test_edited_pairs_score_as_inpaintcoco_and_train_as_paired_edits(tmp_path):
    """The pairs load in the InpaintCOCO evaluation and become trainer rows with image negatives."""
    from hf_hardneg.data.paired_edits import paired_edit_rows
    from hf_hardneg.evaluation import evaluate_model
    from hf_hardneg.testing import make_tiny_model

    pairs = make_edited_pairs(24, seed=2, config=WORLDS["demo"])
    rows = paired_edit_rows(pairs, pairing="both")
    assert len(rows) == 2 * len(pairs)
    assert rows[0]["negative_1"] == pairs[0]["inpaint_caption"] and rows[1]["negative_1"] == pairs[0]["coco_caption"]
    model, tok, proc = make_tiny_model(list(pairs["coco_caption"]) + list(pairs["inpaint_caption"]),
                                       hidden_size=32, num_layers=1, max_length=40)
    results = evaluate_model(model, tasks=("inpaintcoco",), tokenizer=tok, image_processor=proc,
                             sources={"inpaintcoco": pairs}, progress=False, device="cpu")
    metrics = results["tasks"]["inpaintcoco"]["metrics"]
    assert metrics["micro_average"]["count"] == len(pairs)
    assert set(metrics) >= set(pairs["concept"])
