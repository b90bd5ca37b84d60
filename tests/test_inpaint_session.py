"""The annotation workflow on real COCO photographs with tiny random models: one full sample, the
refusals on the way, and resuming after a crash with at most the photograph in hand lost."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from _inpaint_fixtures import RESOLUTION, STEPS, catalog, inpainter, masker, tiny_clipseg_dir, tiny_inpaint_dir  # noqa: F401
from hf_hardneg.inpaint.catalog import CocoCatalog
from hf_hardneg.inpaint.export import TABLE_NAME, ExportFolder
from hf_hardneg.inpaint.rules import RuleViolation
from hf_hardneg.inpaint.session import AnnotationSession, GenerationSettings

pytestmark = pytest.mark.coco


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _session(catalog, masker, inpainter, root, concept="color", clock=None, **kwargs) -> AnnotationSession:
    export = ExportFolder(root, coco_dir=catalog.index.images_dir.parents[1])
    settings = GenerationSettings(num_candidates=3, num_inference_steps=STEPS, resolution=RESOLUTION)
    return AnnotationSession(catalog, export, concept, "tt", masker, inpainter, settings=settings,
                             clock=clock or FakeClock(), **kwargs)


def _annotate(session, choice=1, quality="very good", seed=11, **save):
    task = session.current()
    session.make_mask("the main object", threshold=0.5, dilate_x=2, dilate_y=1)
    session.inpaint("a purple object", seed=seed)
    caption = session.captions(task)[0]["text"]
    return task, session.save(choice, quality, caption, save.pop("inpaint_caption", caption + " It is purple now."),
                              **save)


def test_one_full_annotation_writes_a_complete_row(catalog, masker, inpainter, tmp_path):
    clock = FakeClock()
    session = _session(catalog, masker, inpainter, tmp_path / "export", clock=clock)
    task = session.current()
    assert task.photo.image_id == session.pool.image_ids[0]
    captions = session.captions(task)
    assert captions and all(c["text"] in task.photo.captions for c in captions)
    for caption in captions:  # every caption shown holds a colour keyword, marked by its span
        assert caption["keywords"] and all(caption["text"][a:b].lower() in
                                           {"white", "black", "red", "blue", "green", "yellow", "brown", "orange",
                                            "pink", "purple", "gray", "grey"} for a, b in caption["keywords"])
    mask = session.make_mask("the main object", threshold=0.5, dilate_x=2, dilate_y=1)
    assert mask.image.size == (task.photo.width, task.photo.height) and mask.image.mode == "L"
    candidates = session.inpaint("a purple object", seed=11)
    assert [c.seed for c in candidates] == [11, 12, 13]
    assert all(c.image.size == mask.image.size and c.image.mode == "RGB" for c in candidates)
    clock.now += 42.5
    caption = captions[0]["text"]
    row = session.save(2, "okay", caption, caption + " It is purple now.")
    assert row == {
        "coco_image_id": task.photo.image_id, "concept": "color", "coco_caption": caption,
        "inpaint_caption": caption + " It is purple now.", "inpaint_file_name": f"inpainted/{row['sample_id']}.png",
        "quality": "okay", "mask_prompt": "the main object", "inpaint_prompt": "a purple object",
        "sample_id": f"color-{task.photo.image_id:012d}-0", "coco_category": "",
        "mask_file_name": f"masks/{row['sample_id']}.png", "mask_threshold": 0.5, "mask_dilate_x": 2,
        "mask_dilate_y": 1, "mask_model": masker.model_id, "inpaint_model": inpainter.model_id, "inpaint_seed": 13,
        "guidance_scale": 7.5, "num_inference_steps": STEPS, "annotator": "tt", "annotation_seconds": 42.5,
    }
    root = tmp_path / "export"
    with Image.open(root / row["inpaint_file_name"]) as saved:
        assert np.array_equal(np.asarray(saved), np.asarray(candidates[2].image))
    with Image.open(root / row["mask_file_name"]) as saved:
        assert np.array_equal(np.asarray(saved), np.asarray(mask.image))
    table = [json.loads(line) for line in (root / TABLE_NAME).read_text().splitlines()]
    assert table == [row]
    assert session.current().photo.image_id == session.pool.image_ids[1]  # on to the next photograph
    progress = session.progress()
    assert (progress["saved"], progress["skipped"], progress["remaining"]) == (1, 0, len(session.pool.image_ids) - 1)
    assert progress["saved_by_concept"] == {"color": 1}


def test_a_new_mask_discards_candidates_painted_into_the_old_one(catalog, masker, inpainter, tmp_path):
    session = _session(catalog, masker, inpainter, tmp_path / "e")
    task = session.current()
    caption = task.photo.captions[0]
    with pytest.raises(ValueError, match="make a mask first"):
        session.inpaint("a purple object")
    session.make_mask("thing", threshold=0.5)
    session.inpaint("a purple object", seed=1)
    session.make_mask("thing", threshold=0.6)  # reuses CLIPSeg's scores, clears the candidates
    with pytest.raises(ValueError, match="nothing to save yet"):
        session.save(0, "okay", caption, caption + " changed")
    session.inpaint("a purple object", seed=1)
    with pytest.raises(ValueError, match=r"choose one of the 3 candidates \(1-3\)"):
        session.save(3, "okay", caption, caption + " changed")
    with pytest.raises(ValueError, match="is not the photograph in hand"):
        session.make_mask("thing", image_id=task.photo.image_id + 1)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"inpaint_caption": "same"}, "unchanged_caption"),
        ({"inpaint_caption": "  "}, "empty_caption"),
        ({"quality": "superb"}, "invalid_quality"),
        ({"coco_caption": "A caption COCO never wrote."}, "caption_not_from_coco"),
    ],
)
def test_refused_saves_write_nothing(catalog, masker, inpainter, tmp_path, kwargs, reason):
    session = _session(catalog, masker, inpainter, tmp_path / "e")
    task = session.current()
    session.make_mask("thing", threshold=0.5)
    session.inpaint("a purple object", seed=1)
    caption = session.captions(task)[0]["text"]
    values = {"coco_caption": caption, "inpaint_caption": caption + " changed", "quality": "okay", **kwargs}
    if values["inpaint_caption"] == "same":
        values["inpaint_caption"] = caption.upper()
    with pytest.raises(RuleViolation) as err:
        session.save(0, values["quality"], values["coco_caption"], values["inpaint_caption"])
    assert err.value.reason == reason
    assert not (tmp_path / "e" / TABLE_NAME).exists() and session.export.rows == []
    assert session.current() is task  # the photograph stays in hand, the candidates with it


def test_object_replacement_outside_the_supercategory_is_refused(catalog, masker, inpainter, tmp_path):
    session = _session(catalog, masker, inpainter, tmp_path / "e", concept="object")
    while True:  # the first photograph with an annotated object that has siblings in its super-category
        task = session.current()
        named = [c for c in task.photo.categories if catalog.same_supercategory(c)]
        if named:
            break
        session.skip("no annotated object")
    changed = named[0]
    supercategory = catalog.category(changed)["supercategory"]
    other = next(c["name"] for c in catalog.index.categories.values() if c["supercategory"] != supercategory
                 and c["supercategory"] != "person")
    session.make_mask(changed, threshold=0.5)
    session.inpaint(f"a {other}", seed=3)
    caption = task.photo.captions[0]
    with pytest.raises(RuleViolation, match=rf"cannot replace '{changed}'.*allowed: "
                                            rf"{', '.join(catalog.same_supercategory(changed))}"):
        session.save(0, "okay", caption, caption + " (edited)", category=changed)
    row = session.save(0, "okay", caption, caption + " (edited)", category=changed,
                       replacement=catalog.same_supercategory(changed)[0])
    assert row["coco_category"] == changed


def test_the_object_concept_needs_the_instances_file(coco_mini, masker, inpainter, tmp_path):
    captions_only = CocoCatalog.load(captions_json=coco_mini / "annotations" / "captions_val2017.json",
                                     images_dir=coco_mini / "images" / "val2017")
    assert not captions_only.has_instances
    with pytest.raises(ValueError, match="needs COCO's instances_val2017.json"):
        _session(captions_only, masker, inpainter, tmp_path / "e", concept="object")


def test_restart_continues_with_the_next_unannotated_photograph(catalog, masker, inpainter, tmp_path):
    root = tmp_path / "export"
    first = _session(catalog, masker, inpainter, root, seed=5)
    order = first.pool.image_ids
    saved_task, _ = _annotate(first)
    assert first.current().photo.image_id == order[1]
    first.skip("blurry")
    third = first.current()
    first.make_mask("thing", threshold=0.5)  # work on the photograph in hand ...
    first.inpaint("a purple object", seed=2)
    # ... and then the process dies: no close(), no further write
    del first

    again = _session(catalog, masker, inpainter, root, seed=99)  # the stored order wins over a new seed
    assert again.pool.image_ids == order
    assert again.current().photo.image_id == third.photo.image_id == order[2]
    progress = again.progress()
    assert (progress["saved"], progress["skipped"]) == (1, 1)
    assert saved_task.photo.image_id not in again.remaining() and order[1] not in again.remaining()
    state = json.loads((root / ".annotate-color.json").read_text())
    assert state["skipped"] == {str(order[1]): "blurry"} and state["seed"] == 5
    _annotate(again)
    assert [r["coco_image_id"] for r in again.export.rows] == [order[0], order[2]]


def test_the_state_file_is_replaced_whole_or_not_at_all(catalog, masker, inpainter, tmp_path, monkeypatch):
    session = _session(catalog, masker, inpainter, tmp_path / "e")
    state_path = tmp_path / "e" / ".annotate-color.json"
    before = state_path.read_text()
    def power_cut(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        session.skip("x")
    monkeypatch.undo()
    assert state_path.read_text() == before and json.loads(before)["skipped"] == {}
    assert not list((tmp_path / "e").glob(".*.tmp"))


def test_a_damaged_state_file_is_named(catalog, masker, inpainter, tmp_path):
    root = tmp_path / "e"
    root.mkdir()
    (root / ".annotate-color.json").write_text("{half")
    with pytest.raises(ValueError, match=r"\.annotate-color\.json cannot be read .*delete it to start over"):
        _session(catalog, masker, inpainter, root)


def test_an_annotator_id_is_required(catalog, masker, inpainter, tmp_path):
    with pytest.raises(ValueError, match="give an annotator id"):
        AnnotationSession(catalog, ExportFolder(tmp_path / "e"), "color", " ", masker, inpainter)
