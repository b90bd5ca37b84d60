"""The substitution engine as a `datasets` transform: map, num_proc, cache, streaming, filters."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest
from datasets import Dataset, Features, IterableDataset, Value, load_from_disk

from hf_hardneg.concepts import COLOR, OBJECT
from hf_hardneg.substitution import (
    HardNegativeTransform,
    add_hard_negatives,
    find_keywords,
    keep_rows_with_keywords,
    negative_column_names,
)


@pytest.fixture(scope="module")
def captions(coco_mini) -> list[str]:
    out = []
    for split in ("val", "train"):
        data = json.loads((coco_mini / "annotations" / f"captions_{split}2017.json").read_text(encoding="utf-8"))
        out += [a["caption"] for a in data["annotations"]]
    return out


@pytest.fixture(scope="module")
def caption_ds(captions) -> Dataset:
    return Dataset.from_dict({"caption": captions, "row": list(range(len(captions)))})


def test_columns_and_types(caption_ds):
    out = add_hard_negatives(caption_ds, "color", num_negatives=3, keep_only_matching=False)
    assert out.column_names == ["caption", "row", *negative_column_names(3), "hard_negative_concept",
                                "hard_negative_keyword"]
    assert all(out.features[c] == Value("string") for c in out.column_names[2:])
    assert len(out) == len(caption_ds)
    for row in out:
        has_keyword = bool(find_keywords(row["caption"], "color"))
        assert (row["negative_1"] is not None) == has_keyword
        if has_keyword:  # every column filled for a matching row
            assert all(row[c] for c in negative_column_names(3))
            assert row["hard_negative_concept"] == "color"
            assert row["hard_negative_keyword"] in COLOR.keywords
        else:
            assert row["negative_3"] is None and row["hard_negative_keyword"] is None


def test_keep_only_matching_is_the_paper_subset(caption_ds, captions):
    out = add_hard_negatives(caption_ds, "object", num_negatives=2)
    expected_rows = [i for i, c in enumerate(captions) if find_keywords(c, OBJECT)]
    assert out["row"] == expected_rows
    filtered = keep_rows_with_keywords(caption_ds, "object")
    assert filtered["row"] == expected_rows


def test_num_proc_2_equals_num_proc_1(caption_ds):
    one = add_hard_negatives(caption_ds, ["object", "color"], num_negatives=3, seed=11, load_from_cache_file=False)
    two = add_hard_negatives(caption_ds, ["object", "color"], num_negatives=3, seed=11, num_proc=2,
                             load_from_cache_file=False)
    assert one.to_list() == two.to_list()
    assert set(one["hard_negative_concept"]) == {"object", "color"}


def test_batch_size_and_seed(caption_ds):
    a = add_hard_negatives(caption_ds, "object", 2, seed=1, batch_size=7)
    b = add_hard_negatives(caption_ds, "object", 2, seed=1, batch_size=1000)
    c = add_hard_negatives(caption_ds, "object", 2, seed=2)
    assert a.to_list() == b.to_list()
    assert a["negative_1"] != c["negative_1"]


def test_streaming_gives_the_same_rows(caption_ds):
    expected = add_hard_negatives(caption_ds, "object", num_negatives=2, seed=3).to_list()
    streamed = add_hard_negatives(caption_ds.to_iterable_dataset(num_shards=1), "object", num_negatives=2, seed=3)
    assert isinstance(streamed, IterableDataset)
    assert list(streamed) == expected
    # also without the features being known up front
    gen = IterableDataset.from_generator(lambda: ({"caption": r["caption"], "row": r["row"]} for r in caption_ds))
    assert list(add_hard_negatives(gen, "object", num_negatives=2, seed=3)) == expected


def test_resumed_stream_continues_with_the_same_negatives(caption_ds):
    stream = add_hard_negatives(caption_ds.to_iterable_dataset(num_shards=1), "color", 1, seed=5,
                                keep_only_matching=False)
    full = list(stream)
    it = iter(stream)
    for _ in range(300):
        next(it)
    state = stream.state_dict()
    stream.load_state_dict(state)
    assert list(stream)[0] == full[300]


def test_second_run_hits_the_cache_also_in_a_new_process(caption_ds, tmp_path):
    path = tmp_path / "captions"
    caption_ds.save_to_disk(path)
    first = add_hard_negatives(load_from_disk(path), "object", num_negatives=3, seed=4)
    again = add_hard_negatives(load_from_disk(path), "object", num_negatives=3, seed=4)
    assert again.cache_files == first.cache_files
    assert again._fingerprint == first._fingerprint
    script = textwrap.dedent(
        f"""
        from datasets import load_from_disk
        from hf_hardneg.substitution import add_hard_negatives
        out = add_hard_negatives(load_from_disk({str(path)!r}), "object", num_negatives=3, seed=4)
        print(out._fingerprint)
        """
    )
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip().splitlines()[-1] == first._fingerprint
    other = add_hard_negatives(load_from_disk(path), "object", num_negatives=3, seed=5)
    assert other._fingerprint != first._fingerprint


def test_all_mode_lists_every_alternative(caption_ds, captions):
    out = add_hard_negatives(caption_ds.select(range(60)), "color", num_negatives="all")
    assert out.features["negatives"].feature == Value("string")
    for row in out:
        assert len(row["negatives"]) == 8
        assert row["caption"] not in row["negatives"]


def test_all_none_first_batch_keeps_string_types():
    ds = Dataset.from_dict({"caption": ["a plain wall"] * 5 + ["a red bus"] * 3})
    out = add_hard_negatives(ds, "color", 2, batch_size=2, keep_only_matching=False, num_proc=2)
    assert out.features["negative_1"] == Value("string")
    assert out["negative_1"][:5] == [None] * 5 and all(out["negative_1"][5:])


def test_invalid_captions_raise_with_the_row(caplog):
    ds = Dataset.from_dict({"caption": ["a red bus", "a cat", None, "   "]})
    with pytest.raises(ValueError, match=r"row 2: caption column 'caption' is None"):
        add_hard_negatives(ds, "object")
    with pytest.raises(ValueError, match=r"row 3: .*whitespace only.*on_invalid='skip'"):
        HardNegativeTransform("object")({"caption": ["a cat", "   "]}, [2, 3])
    with pytest.raises(ValueError, match="row 7: .* a int"):
        HardNegativeTransform("object")([7], [7])
    with pytest.raises(ValueError, match=r"row 2: "):
        keep_rows_with_keywords(ds, "object")


def test_invalid_captions_skipped_are_counted_and_reported(caplog):
    ds = Dataset.from_dict({"caption": ["a red bus", "a cat", None, "   ", ""]})
    with caplog.at_level(logging.INFO, logger="hf_hardneg.substitution"):
        out = add_hard_negatives(ds, ["object", "color"], on_invalid="skip", load_from_cache_file=False)
    assert out["caption"] == ["a red bus", "a cat"]
    assert "3 invalid caption(s) skipped" in caplog.text
    assert "5 rows: 2 with hard negatives, 0 without a keyword, 3 invalid captions skipped" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_hardneg.substitution"):
        kept = keep_rows_with_keywords(ds, "color", on_invalid="skip")
    assert kept["caption"] == ["a red bus"]
    assert "dropped 3 invalid caption(s)" in caplog.text and "rows [2, 3, 4]" in caplog.text


def test_clear_errors_for_wrong_columns_and_arguments(caption_ds):
    with pytest.raises(ValueError, match=r"caption column 'text' not found; the dataset has columns \['caption', 'row'\]"):
        add_hard_negatives(caption_ds, "object", caption_column="text")
    with pytest.raises(TypeError, match="caption column 'row' has type"):
        add_hard_negatives(caption_ds, "object", caption_column="row")
    with_neg = add_hard_negatives(caption_ds.select(range(20)), "object", 1)
    with pytest.raises(ValueError, match="already has hard-negative columns"):
        add_hard_negatives(with_neg, "color", 1)
    with pytest.raises(ValueError, match="unknown concept 'shape'"):
        add_hard_negatives(caption_ds, "shape")
    with pytest.raises(ValueError, match="num_negatives"):
        HardNegativeTransform("object", num_negatives=0)
    with pytest.raises(ValueError, match="with_indices=True"):
        HardNegativeTransform("object")({"caption": ["a cat"]})


def test_transform_works_non_batched_and_with_plain_map(caption_ds):
    transform = HardNegativeTransform("object", 2, seed=9)
    plain = caption_ds.select(range(40)).map(transform, with_indices=True)
    batched = caption_ds.select(range(40)).map(transform, batched=True, with_indices=True,
                                               features=Features({**caption_ds.features, **transform.features}))
    assert plain.to_list() == batched.to_list()
