"""`hf-hardneg inpaint --plan plan.jsonl`: unattended rows checked first, run with a progress bar, resumable."""

from __future__ import annotations

import json

import datasets
import pytest

from _inpaint_fixtures import RESOLUTION, STEPS, catalog, tiny_clipseg_dir, tiny_inpaint_dir  # noqa: F401
from hf_hardneg.cli import main
from hf_hardneg.data.inpaintcoco import NO_DERIVS_LICENSE_IDS
from hf_hardneg.inpaint.batch import PlanDefaults, check_plan

pytestmark = pytest.mark.coco
DOG_AND_HYDRANT = 377575


def _write_plan(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _good_rows(catalog) -> list[dict]:
    """Three edits of real photographs: a colour change, a size change, an object swap within 'animal'."""
    color = next(i for i in catalog.pool("color").image_ids if i != DOG_AND_HYDRANT)
    color_caption = next(c for c in catalog.photo(color).captions if any(
        w in c.lower().split() for w in ("white", "black", "red", "blue", "green", "yellow", "brown")))
    size = next(i for i in catalog.pool("size").image_ids if i not in (color, DOG_AND_HYDRANT))
    return [
        {"coco_image_id": color, "concept": "color", "mask_prompt": "the object",
         "inpaint_prompt": "a purple object", "inpaint_caption": color_caption + " Now in purple.",
         "coco_caption": color_caption, "seed": 5, "mask_threshold": 0.5},
        {"coco_image_id": size, "concept": "size", "mask_prompt": "the object", "inpaint_prompt": "a tiny object",
         "inpaint_caption": catalog.photo(size).captions[0] + " Smaller.", "mask_dilate_x": 4, "mask_threshold": 0.5,
         "quality": "very good"},
        {"coco_image_id": DOG_AND_HYDRANT, "concept": "object", "mask_prompt": "dog",
         "inpaint_prompt": "a grey cat", "inpaint_caption": "A cat is tied to a fire hydrant.", "mask_threshold": 0.5},
    ]


def _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, *extra):
    return main(["inpaint", "--plan", str(tmp_path / "plan.jsonl"), "--export", str(tmp_path / "export"),
                 "--coco-dir", str(coco_mini), "--mask-model", str(tiny_clipseg_dir),
                 "--inpaint-model", str(tiny_inpaint_dir), "--device", "cpu", "--steps", str(STEPS),
                 "--resolution", str(RESOLUTION), *extra])


def test_a_plan_becomes_an_export_that_builds(catalog, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, tmp_path,
                                              capsys):
    rows = _good_rows(catalog)
    _write_plan(tmp_path / "plan.jsonl", rows)
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--seed", "100") == 0
    out = capsys.readouterr()
    assert "plan.jsonl: 3 row(s); wrote 3 sample(s)" in out.out
    assert "inpainting plan.jsonl" in out.err and "3/3" in out.err  # the progress bar
    table = [json.loads(line) for line in (tmp_path / "export" / "annotations.jsonl").read_text().splitlines()]
    assert [r["concept"] for r in table] == ["color", "size", "object"]
    assert [r["inpaint_seed"] for r in table] == [5, 102, 103]  # own seed, else --seed + row number
    assert [r["sample_id"] for r in table] == [f"{r['concept']}-{r['coco_image_id']:012d}-plan-0" for r in table]
    assert [r["quality"] for r in table] == ["okay", "very good", "okay"]
    assert table[1]["mask_dilate_x"] == 4 and table[1]["coco_caption"] == catalog.photo(rows[1]["coco_image_id"]).captions[0]
    assert table[2]["coco_caption"] == "A dog is tied to a fire hydrant."  # the closest COCO caption
    assert table[2]["coco_category"] == "dog"
    assert {r["annotator"] for r in table} == {"batch:plan.jsonl"}
    assert all(r["annotation_seconds"] >= 0 and r["mask_model"] == tiny_clipseg_dir.name for r in table)
    assert f"hf-hardneg build-inpaintcoco --source {tmp_path / 'export'} --output OUT" in out.out

    assert main(["build-inpaintcoco", "--source", str(tmp_path / "export"), "--output", str(tmp_path / "out")]) == 0
    ds = datasets.load_dataset(str(tmp_path / "out"), split="test", cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["coco_image_id"]) == sorted(r["coco_image_id"] for r in rows)
    assert next(r for r in ds if r["concept"] == "object")["supercategory"] == "animal"


def test_rerunning_a_plan_continues_where_it_stopped(catalog, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir,
                                                    tmp_path, capsys):
    rows = _good_rows(catalog)
    _write_plan(tmp_path / "plan.jsonl", rows[:1])
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--no-progress") == 0
    _write_plan(tmp_path / "plan.jsonl", rows)  # the full plan after an interruption
    capsys.readouterr()
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "wrote 2 sample(s)" in out and "skipped (already_in_export): 1" in out
    lines = (tmp_path / "export" / "annotations.jsonl").read_text().splitlines()
    assert len(lines) == 3 and len({json.loads(line)["sample_id"] for line in lines}) == 3
    capsys.readouterr()
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--mask-model", "not/loaded") == 0
    assert "wrote 0 sample(s)" in capsys.readouterr().out  # nothing left: no model is even loaded


def _bad_rows(catalog) -> dict[str, dict | str]:
    good = _good_rows(catalog)
    noderivs = next(i for i in sorted(catalog.index.images) if catalog.photo(i).license_id in NO_DERIVS_LICENSE_IDS)
    return {
        "noderivs_license": dict(good[0], coco_image_id=noderivs, coco_caption=None),
        "outside_supercategory": dict(good[2], inpaint_prompt="a red bus"),
        "unchanged_caption": dict(good[0], inpaint_caption=good[0]["coco_caption"].lower()),
        "missing_column": dict(good[0], inpaint_caption=" "),
        "caption_not_from_coco": dict(good[0], coco_caption="Words COCO never had."),
        "unknown_coco_id": dict(good[0], coco_image_id=123),
        "unknown_concept": dict(good[0], concept="location"),
        "unknown_column": dict(good[0], mask_treshold=0.3),
        "unreadable_row": "{not json",
        "invalid_quality": dict(good[0], quality="great"),
        "duplicate_sample": dict(good[0], sample_id="twice"),
    }


def test_every_bad_row_is_named_before_anything_runs(catalog, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir,
                                                     tmp_path, capsys):
    bad = _bad_rows(catalog)
    rows = [_good_rows(catalog)[1], dict(bad["duplicate_sample"]), *bad.values()]
    _write_plan(tmp_path / "plan.jsonl", rows)
    edits, problems = check_plan(catalog, tmp_path / "plan.jsonl", PlanDefaults())
    assert len(edits) == 2  # the good size row and the first "twice"
    reasons = {where: reason for where, reason, _ in problems}
    expected = {f"plan.jsonl line {i + 3}": reason for i, reason in enumerate(bad)}
    assert reasons == expected
    # a blank new caption: the message says what is missing
    assert any("inpaint_caption missing or empty" in m for _, _, m in problems)

    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir) == 2
    err = capsys.readouterr().err
    assert f"{len(bad)} of {len(rows)} plan row(s) are invalid; nothing was run" in err
    assert "plan.jsonl line 3: COCO image" in err and "forbids derivative works" in err
    assert "'bus' (vehicle) cannot replace 'dog'" in err
    assert not (tmp_path / "export" / "annotations.jsonl").exists()


def test_skip_invalid_counts_each_reason_and_runs_the_rest(catalog, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir,
                                                           tmp_path, capsys):
    bad = _bad_rows(catalog)
    _write_plan(tmp_path / "plan.jsonl", [_good_rows(catalog)[1], dict(bad["duplicate_sample"]), *bad.values()])
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--skip-invalid", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "wrote 2 sample(s)" in out  # the size row and the first "twice"
    for reason in bad:
        assert f"skipped ({reason}): 1" in out
    assert "plan.jsonl line 3: COCO image" in out  # each skipped row is listed with its reason


def test_an_empty_mask_stops_the_run_after_saving_the_rows_before_it(catalog, coco_mini, tiny_clipseg_dir,
                                                                      tiny_inpaint_dir, tmp_path, capsys):
    rows = _good_rows(catalog)
    rows[1]["mask_threshold"] = 1.0  # no probability exceeds 1: an empty mask
    _write_plan(tmp_path / "plan.jsonl", rows)
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--no-progress") == 2
    err = capsys.readouterr().err
    assert "plan.jsonl line 2: the mask of 'the object' at threshold 1.0 is empty" in err and "rerun" in err
    assert len((tmp_path / "export" / "annotations.jsonl").read_text().splitlines()) == 1
    assert _run(tmp_path, coco_mini, tiny_clipseg_dir, tiny_inpaint_dir, "--no-progress", "--skip-invalid") == 0
    out = capsys.readouterr().out
    assert "skipped (empty_mask): 1" in out and "skipped (already_in_export): 1" in out and "wrote 1" in out


def test_a_plan_must_be_jsonl(tmp_path, coco_mini, capsys):
    (tmp_path / "plan.csv").write_text("coco_image_id\n")
    code = main(["inpaint", "--plan", str(tmp_path / "plan.csv"), "--export", str(tmp_path / "e"),
                 "--coco-dir", str(coco_mini)])
    assert code == 2 and "a plan is a .jsonl file" in capsys.readouterr().err
