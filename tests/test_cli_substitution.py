"""`hf-hardneg stats` and `hf-hardneg negatives` end to end on the real COCO slice."""

from __future__ import annotations

import json

import pytest

from hf_hardneg.cli import main
from hf_hardneg.data import load_coco_captions
from hf_hardneg.substitution import add_hard_negatives, enumerate_negatives, find_keywords


@pytest.fixture(scope="module")
def val_json(coco_mini):
    return coco_mini / "annotations" / "captions_val2017.json"


def _captions(path):
    return [a["caption"] for a in json.loads(path.read_text(encoding="utf-8"))["annotations"]]


def test_stats_json_counts(val_json, capsys):
    assert main(["stats", "--captions", str(val_json), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats) == ["object", "color", "location", "size"]
    captions = _captions(val_json)
    for name, s in stats.items():
        with_kw = [c for c in captions if find_keywords(c, name)]
        assert s["captions"] == len(captions) == 795
        assert s["invalid"] == 0
        assert s["with_keyword"] == len(with_kw) > 0
        assert s["negatives_first_occurrence"] == sum(len(enumerate_negatives(c, name)) for c in with_kw)
        assert s["negatives"] == sum(len(enumerate_negatives(c, name, occurrence=None)) for c in with_kw)
        assert s["keyword_occurrences"] >= s["with_keyword"]
    assert stats["color"]["top_keywords"]["white"] > 0


def test_stats_table_and_concept_choice(val_json, capsys):
    assert main(["stats", "--captions", str(val_json), "--concept", "size", "--concept", "object_coco"]) == 0
    out = capsys.readouterr().out
    assert "795 captions" in out
    lines = out.splitlines()
    assert lines[1].startswith("keyword matching: size case-sensitive, object_coco case-sensitive")
    assert lines[3].startswith("size") and lines[4].startswith("object_coco")


def test_stats_match_case_sensitively_as_the_paper_counted(val_json, capsys):
    """coco-mini's 795 val captions: case-sensitive matching (the default) leaves out the captions whose only
    keyword is capitalised ("Small boy holding a kite", "Black bear outside", "A BIPLANE AND A SMALL BOAT")."""
    assert main(["stats", "--captions", str(val_json), "--json"]) == 0
    sensitive = json.loads(capsys.readouterr().out)
    assert main(["stats", "--captions", str(val_json), "--json", "--case-insensitive"]) == 0
    insensitive = json.loads(capsys.readouterr().out)
    counts = {name: (sensitive[name]["with_keyword"], insensitive[name]["with_keyword"]) for name in sensitive}
    assert counts == {"object": (455, 467), "color": (114, 117), "location": (76, 77), "size": (62, 66)}
    assert all(sensitive[n]["case_sensitive"] and not insensitive[n]["case_sensitive"] for n in sensitive)


def test_stats_counts_invalid_captions(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"annotations": [{"id": 1, "image_id": 1, "caption": "a red cat"},
                                                {"id": 2, "image_id": 1, "caption": None},
                                                {"id": 3, "image_id": 1, "caption": "   "}]}), encoding="utf-8")
    assert main(["stats", "--captions", str(path), "--concept", "color", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["color"] == {
        "captions": 3, "invalid": 2, "with_keyword": 1, "keyword_occurrences": 1, "negatives": 8,
        "negatives_first_occurrence": 8, "top_keywords": {"red": 1}, "case_sensitive": True}
    assert main(["stats", "--captions", str(path)]) == 0
    assert "2 invalid caption(s)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concept", "texture"], "unknown concept 'texture'"),
        (["--captions-broken"], "not valid JSON (line 1"),
        (["--missing"], "caption file not found"),
    ],
)
def test_stats_errors(tmp_path, val_json, capsys, args, message):
    broken = tmp_path / "broken.json"
    broken.write_text('{"annotations": [', encoding="utf-8")
    captions = {"--captions-broken": str(broken), "--missing": str(tmp_path / "none.json")}.get(args[0])
    argv = ["stats", "--captions", captions or str(val_json)] + ([] if captions else args)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "hf-hardneg stats: error" in err


def test_negatives_match_add_hard_negatives(coco_mini, val_json, tmp_path, capsys):
    out = tmp_path / "deep" / "neg.jsonl"
    argv = ["negatives", "--captions", str(val_json), "--concept", "object", "--num-negatives", "3",
            "--seed", "7", "--output", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ds = load_coco_captions(val_json, coco_mini / "images" / "val2017").remove_columns("image")
    expected = add_hard_negatives(ds, "object", num_negatives=3, seed=7)
    assert len(rows) == len(expected) > 0
    for row, exp in zip(rows, expected):
        assert {k: row[k] for k in ("caption", "caption_id", "image_id")} == {
            k: exp[k] for k in ("caption", "caption_id", "image_id")}
        for col in ("negative_1", "negative_2", "negative_3", "hard_negative_concept", "hard_negative_keyword"):
            assert row[col] == exp[col]
    assert f"795 captions read; {len(rows)} with a keyword of object" in err
    assert not (tmp_path / "deep" / "neg.jsonl.tmp").exists()


def test_negatives_all_mode_keep_all_and_user_concepts(tmp_path, capsys):
    captions = tmp_path / "c.txt"
    captions.write_text("a man in a red shirt\na plain wall\nA Dress and a shirt\n", encoding="utf-8")
    concepts = tmp_path / "fashion.yaml"
    concepts.write_text("- name: garment\n  words: [shirt, dress, jacket]\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert main(["negatives", "--captions", str(captions), "--concept-file", str(concepts), "-k", "all",
                 "--keep-all", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["negatives"] == ["a man in a red dress", "a man in a red jacket"]
    assert rows[1]["negatives"] is None and rows[1]["hard_negative_keyword"] is None
    assert rows[2]["negatives"] == ["A Shirt and a shirt", "A Jacket and a shirt"]
    assert rows[2]["hard_negative_concept"] == "garment"


def test_negatives_invalid_captions(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"annotations": [{"id": 1, "image_id": 1, "caption": "a red cat"},
                                                {"id": 2, "image_id": 1, "caption": 17},
                                                {"id": 3, "image_id": 1, "caption": "a blue bus"}]}), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert main(["negatives", "--captions", str(path), "--concept", "color", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "annotations[1] (id 2): caption is 17" in err and "--skip-invalid" in err
    assert not out.exists()
    assert main(["negatives", "--captions", str(path), "--concept", "color", "-o", str(out), "--skip-invalid"]) == 0
    assert "1 invalid skipped; 2 rows written" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["caption_id"] for r in rows] == [1, 3]


def test_negatives_usage_errors(val_json, tmp_path, capsys):
    assert main(["negatives", "--captions", str(val_json), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "give at least one --concept" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["negatives", "--captions", str(val_json), "--concept", "color", "-k", "0", "-o", "x.jsonl"])
    assert "positive integer or 'all'" in capsys.readouterr().err
