"""Keyword matching and negatives on real COCO captions, with outputs written by hand."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from hf_hardneg.concepts import OBJECT, OBJECT_COCO, Concept, get_concept
from hf_hardneg.substitution import (
    HardNegative,
    KeywordMatch,
    RowRandom,
    enumerate_negatives,
    find_keywords,
    sample_negatives,
)


@pytest.fixture(scope="module")
def coco_captions(coco_mini) -> dict[int, str]:
    """caption id -> caption exactly as in the files (trailing spaces included)."""
    out = {}
    for split in ("val", "train"):
        data = json.loads((coco_mini / "annotations" / f"captions_{split}2017.json").read_text(encoding="utf-8"))
        out.update({a["id"]: a["caption"] for a in data["annotations"]})
    return out


def _concept(name: str):
    """``"size"``: the built-in (case-sensitive, as the paper counted); ``"size/ci"``: its case-insensitive variant."""
    if name.endswith("/ci"):
        return get_concept(name[:-3], case_sensitive=False)
    return name


# (caption id, concept, matched texts) -- read off the captions by hand
MATCHES = [
    (11734, "object", ["orange", "vase"]),  # "An orange reddish rose": the colour word matches as a fruit
    (11734, "color", ["orange"]),
    (248886, "object/ci", ["BOAT"]),  # "A BIPLANE AND A SMALL BOAT": upper case; "BIPLANE" is no "plane" keyword
    (248886, "size/ci", ["SMALL"]),
    (248886, "size", []),  # the paper's concepts match case-sensitively: upper case is not matched
    (275533, "object/ci", ["CELL PHONE"]),  # "TABLE WITH ...": "table" alone is not "dining table"
    (357347, "object/ci", ["Fire hydrant"]),
    (357347, "object", []),  # sentence-initial capital: not matched by default
    (150585, "object", ["dog"]),  # "A cats sits ... with a dog": plurals are not matched
    (195168, "object", ["cat"]),  # "in a coat and cat": "coat" does not contain a whole "cat"
    (306430, "object", []),  # "a back pack" is not "backpack" ...
    (306430, "location", ["back"]),  # ... but its "back" is a location word
    (370584, "location", ["front"]),  # "on front of" is not the phrase "in front of"
    (520781, "location", ["over", "back", "in front of"]),
    (99964, "color", ["red", "red"]),  # "back part is grey": British "grey" is not Table 3's "gray"
    (46860, "color", []),
    (46860, "object", ["fire hydrant"]),
    (297627, "object", ["traffic light"]),  # the phrase, not "light"
    (297627, "size", ["little"]),
    (415663, "size", ["large", "long"]),
    (759340, "object", []),  # "motorcycle" is COCO's word, not Table 3's "motorbike" ...
    (759340, "object_coco", ["motorcycle"]),  # ... the opt-in alias set matches it
    (253566, "object_coco", ["boat", "airplane"]),
    (764570, "object", ["dog", "sheep"]),
    (291354, "color", ["orange", "red"]),
    (37161, "color", []),  # "A dark  colored poodle"
]


@pytest.mark.parametrize(("caption_id", "concept", "expected"), MATCHES)
def test_find_keywords_on_real_captions(coco_captions, caption_id, concept, expected):
    caption = coco_captions[caption_id]
    matches = find_keywords(caption, _concept(concept))
    assert [m.text for m in matches] == expected
    for m in matches:
        assert caption[m.start : m.end] == m.text
        assert m.keyword == " ".join(m.text.lower().split())


# (caption id, concept, occurrence, expected negatives in order) -- complete lists, by hand
ALL_NEGATIVES = [
    (20431, "size", 0, ["Two orange roses in a large vase with water. "]),
    (248886, "size/ci", 0, ["A BIPLANE AND A LARGE BOAT OUT ON THE WATER"]),
    (714629, "size/ci", 0, ["A CONTEMPORARY BATHROOM THAT HAS A VERY SMALL MIRROR"]),
    (714629, "size", 0, []),
    (97894, "size", 0, ["A red extra short bus driving down a stone covered walkway."]),  # long -> short
    (105211, "size", 0, ["A bus driving down a road by some short trees and buildings."]),  # tall -> short
    (784058, "size", 0, ["A little, white seagull flies over a beach."]),  # punctuation kept
    (297627, "size", 0, ["A traffic light with big faces to help people know what to do."]),
    (415663, "size", None, ["A small long train on a steel track.", "A large short train on a steel track."]),
    (530770, "location", 0, ["A red stop sign behind a blue truck."]),
    (714160, "location", 0, ["A cat has its back paws on a toilet seat."]),
    (370584, "location", 0, ["Man in apron standing on back of oven with pans and bakeware"]),
    (303, "location", 0, ["A gold colored pair of scissors cutting into a piece of bejeweled fabric with "
                          "other bejeweled items in the foreground."]),
    (189695, "location", 0, ["A bunch of people skiing at a lodge left in the mountains."]),  # adverb: still swapped
    (520781, "location", None, [
        "a man leaning under the back of a truck in front of buildings",
        "a man leaning over the front of a truck in front of buildings",
        "a man leaning over the back of a truck behind buildings",
    ]),
    (99964, "color", -1, [  # the last "red" only
        f"Articulated bus, first part is red, back part is grey, on dull {c} street."
        for c in ("blue", "green", "yellow", "black", "white", "brown", "gray", "orange")
    ]),
    (11734, "color", 0, [
        f"An {c} reddish rose in a vase filled with water on top of a table."  # articles are not adjusted
        for c in ("blue", "red", "green", "yellow", "black", "white", "brown", "gray")
    ]),
]


@pytest.mark.parametrize(("caption_id", "concept", "occurrence", "expected"), ALL_NEGATIVES)
def test_enumerate_negatives_on_real_captions(coco_captions, caption_id, concept, occurrence, expected):
    negatives = enumerate_negatives(coco_captions[caption_id], _concept(concept), occurrence=occurrence)
    assert [n.text for n in negatives] == expected


def test_object_negatives_record_what_changed(coco_captions):
    caption = coco_captions[357347]  # "Fire hydrant location in the middle of a flower field"
    assert enumerate_negatives(caption, "object") == []  # sentence-initial: the paper's matching skips it
    negatives = enumerate_negatives(caption, _concept("object/ci"))
    assert len(negatives) == 79
    assert negatives[0] == HardNegative(
        text="Person location in the middle of a flower field",
        concept="object", keyword="fire hydrant", replacement="person", start=0, end=12,
    )
    by_replacement = {n.replacement: n.text for n in negatives}
    assert by_replacement["stop sign"] == "Stop sign location in the middle of a flower field"
    assert "fire hydrant" not in by_replacement

    shouting = enumerate_negatives(coco_captions[275533], _concept("object/ci"))  # "... A DRINK, CELL PHONE AND ..."
    assert shouting[9].text == "TABLE WITH A PLATE OF FOOD A DRINK, TRAFFIC LIGHT AND A COMPUTER"


def test_coco_alias_negatives_never_use_the_synonym(coco_captions):
    negatives = enumerate_negatives(coco_captions[759340], "object_coco")  # "A man riding a motorcycle ..."
    assert len(negatives) == 79
    assert "A man riding a motorbike through the rain." not in [n.text for n in negatives]
    assert negatives[0].text == "A man riding a person through the rain."
    assert negatives[0].keyword == "motorcycle"


def test_occurrence_out_of_range_gives_nothing(coco_captions):
    caption = coco_captions[530770]
    assert enumerate_negatives(caption, "location", occurrence=1) == []
    assert enumerate_negatives("a plain wall", "object") == []
    assert len(enumerate_negatives(caption, "object", occurrence=None)) == 2 * 79


# -- tricky cases beyond the real captions ---------------------------------------------------
@pytest.mark.parametrize(
    ("caption", "concept", "expected_texts"),
    [
        ("the scatter plot", "object", []),
        ("a hotdog and a hot dog", "object", ["hot dog"]),
        ("Hot  Dog stand", "object/ci", ["Hot  Dog"]),  # whitespace runs inside a phrase
        ("hot  dog stand", "object", ["hot  dog"]),
        ("a teddy bear and a bear", "object", ["teddy bear", "bear"]),
        ("the cat's toy", "object", ["cat"]),
        ("a red-haired man", "color", ["red"]),
        ("a redhead; Reddish", "color", []),
        ("a car2 and car_park", "object", []),
        ("in front of the front door, behind", "location", ["in front of", "front", "behind"]),
        ("ORANGE orange Orange", "color/ci", ["ORANGE", "orange", "Orange"]),
        ("ORANGE orange Orange", "color", ["orange"]),
        ("", "object", []),
    ],
)
def test_whole_word_longest_first_matching(caption, concept, expected_texts):
    assert [m.text for m in find_keywords(caption, _concept(concept))] == expected_texts


def test_case_is_preserved_by_case_insensitive_concepts():
    hot_dog = {n.replacement: n.text for n in enumerate_negatives("Hot Dog stand", _concept("object/ci"))}
    assert hot_dog["fire hydrant"] == "Fire Hydrant stand"  # Title Case phrase
    assert hot_dog["cat"] == "Cat stand"
    upper = {n.replacement: n.text for n in enumerate_negatives("A RED BUS", _concept("color/ci"))}
    assert upper["blue"] == "A BLUE BUS"
    cap = {n.replacement: n.text for n in enumerate_negatives("Red bus.", _concept("color/ci"))}
    assert cap["blue"] == "Blue bus."
    assert enumerate_negatives("Red bus.", "color") == []  # the built-in matches "red" as written
    phones = Concept("phones", {"phone": ("iPhone", "pager")})
    assert [n.text for n in enumerate_negatives("my phone", phones)] == ["my iPhone", "my pager"]


def test_long_caption_is_handled(coco_captions):
    caption = ("a plain wall " * 800)[:9_993] + " a cat."
    assert len(caption) >= 10_000
    matches = find_keywords(caption, "object")
    assert [m.text for m in matches] == ["cat"]
    (negative,) = sample_negatives(caption, "object", 1, 0)
    assert negative.text == caption[: negative.start] + negative.replacement + "."


def test_non_string_caption_is_a_clear_error():
    with pytest.raises(TypeError, match="caption must be a string, got NoneType"):
        find_keywords(None, "object")
    with pytest.raises(TypeError, match="got int"):
        enumerate_negatives(3, "color")
    with pytest.raises(ValueError, match="unknown concept 'colours'"):
        find_keywords("a red bus", "colours")


def test_keyword_match_fields():
    (m,) = find_keywords("Two Teddy Bears and a Teddy Bear.", _concept("object/ci"))
    assert m == KeywordMatch(start=22, end=32, keyword="teddy bear", text="Teddy Bear")


# -- sampling ---------------------------------------------------------------------------------
def test_sampling_is_deterministic_and_distinct(coco_captions):
    caption = coco_captions[764570]  # "Many people watch a man and dog herd sheep."
    first = sample_negatives(caption, "object", 3, 7)
    assert first == sample_negatives(caption, "object", 3, 7)
    assert first == sample_negatives(caption, "object", 3, RowRandom(7, 0))
    assert len({n.text for n in first}) == 3
    assert len({n.keyword for n in first}) == 1  # one occurrence per call
    assert all(n.text != caption for n in first)
    # different seeds explore both occurrences
    keywords = {sample_negatives(caption, "object", 1, s)[0].keyword for s in range(40)}
    assert keywords == {"dog", "sheep"}


def test_sampling_repeats_only_when_alternatives_run_out():
    negatives = sample_negatives("a dog on the left", "location", 3, 0)
    assert [n.text for n in negatives] == ["a dog on the right"] * 3
    colors = sample_negatives("a red bus", "color", 20, 1)
    texts = [n.text for n in colors]
    assert len(set(texts[:8])) == 8  # all 8 alternatives before any repeat
    assert len(set(texts[8:16])) == 8 and len(texts) == 20


def test_sampling_accepts_python_and_numpy_generators():
    caption = "a cat on a bed"
    a = sample_negatives(caption, "object", 2, random.Random(3))
    b = sample_negatives(caption, "object", 2, random.Random(3))
    assert a == b and len(a) == 2
    c = sample_negatives(caption, "object", 2, np.random.default_rng(3))
    assert len(c) == 2
    assert sample_negatives(caption, "object", 2, np.int64(5)) == sample_negatives(caption, "object", 2, 5)
    assert sample_negatives("no keyword here", "object", 2, 0) == []
    with pytest.raises(ValueError, match="positive int"):
        sample_negatives(caption, "object", 0, 0)
    with pytest.raises(TypeError, match="seed_or_rng"):
        sample_negatives(caption, "object", 1, "seed")


def test_row_random_is_a_pure_function_of_seed_and_index():
    draws = [RowRandom(5, 9).randbelow(1000) for _ in range(3)]
    assert len(set(draws)) == 1
    rng = RowRandom(5, 9)
    stream = [rng.randbelow(1 << 30) for _ in range(4)]
    assert len(set(stream)) == 4
    assert RowRandom(5, 10).randbelow(1 << 30) != stream[0]
    assert RowRandom(6, 9).randbelow(1 << 30) != stream[0]
    counts = np.bincount([RowRandom(0, i).randbelow(4) for i in range(4000)], minlength=4)
    assert counts.min() > 850  # roughly uniform (expected 1000 each)


def test_object_alias_concept_works_with_sampling():
    (neg,) = sample_negatives("A couch by the TV", OBJECT_COCO, 1, 0)
    assert neg.keyword in ("couch", "tv")
    assert neg.replacement not in ("sofa", "tv monitor", "couch", "tv")
    assert OBJECT.keywords == OBJECT_COCO.keywords[:80]


def test_docstring_examples_run():
    import doctest

    import hf_hardneg.concepts
    import hf_hardneg.substitution

    for module in (hf_hardneg.concepts, hf_hardneg.substitution):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
