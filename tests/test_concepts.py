"""Concepts: Table 3 word for word, user-defined concepts, files, combination."""

from __future__ import annotations

import json
import pickle

import pytest

from hf_hardneg.concepts import (
    COCO_OBJECT_ALIASES,
    COLOR,
    CONCEPTS,
    LOCATION,
    OBJECT,
    OBJECT_COCO,
    SIZE,
    Concept,
    combine_concepts,
    get_concept,
    load_concepts,
    resolve_concepts,
    with_aliases,
    with_case_sensitivity,
)
from hf_hardneg.substitution import enumerate_negatives, find_keywords


def test_table3_object_is_80_names_in_paper_order():
    assert len(OBJECT.keywords) == 80
    assert OBJECT.keywords[:5] == ("person", "bicycle", "car", "motorbike", "aeroplane")
    assert OBJECT.keywords[-3:] == ("teddy bear", "hair drier", "toothbrush")
    for phrase in ("traffic light", "hot dog", "teddy bear", "tv monitor", "sofa", "sports ball"):
        assert phrase in OBJECT.keywords
    # COCO's spellings are not in the paper's list
    for coco in ("motorcycle", "airplane", "couch", "tv"):
        assert coco not in OBJECT.keywords
    # a list concept: any member -> every other member, in list order
    assert OBJECT.substitutions["cat"] == tuple(w for w in OBJECT.keywords if w != "cat")


def test_table3_color_is_9_names():
    assert COLOR.keywords == ("blue", "red", "green", "yellow", "black", "white", "brown", "gray", "orange")
    assert COLOR.substitutions["gray"] == ("blue", "red", "green", "yellow", "black", "white", "brown", "orange")


def test_table3_location_relations_both_ways():
    assert dict(LOCATION.substitutions) == {
        "left": ("right",), "right": ("left",), "above": ("below",), "below": ("above",),
        "under": ("over",), "over": ("under",), "foreground": ("background",), "background": ("foreground",),
        "in front of": ("behind",), "behind": ("in front of",), "back": ("front",), "front": ("back",),
    }


def test_table3_size_relations_keep_direction():
    assert dict(SIZE.substitutions) == {
        "large": ("small",), "small": ("large",), "little": ("big",), "big": ("little",),
        "tall": ("short",), "short": ("tall",),  # short only becomes tall: "long -> short" is one way
        "long": ("short",), "thin": ("fat",), "fat": ("thin",), "huge": ("tiny",), "tiny": ("huge",),
        "giant": ("tiny",),
    }
    assert "long" not in SIZE.substitutions["short"]
    assert "giant" not in SIZE.substitutions["tiny"]


def test_concepts_registry_and_get_concept():
    assert list(CONCEPTS) == ["object", "color", "location", "size"]
    assert get_concept("object") is OBJECT
    assert get_concept(" Colour ") is COLOR
    assert get_concept(SIZE) is SIZE
    assert get_concept("object_coco") is OBJECT_COCO
    with pytest.raises(ValueError, match=r"unknown concept 'texture'.*object, color, location, size"):
        get_concept("texture")
    with pytest.raises(TypeError):
        get_concept(3)


def test_coco_aliases_never_replace_by_their_synonym():
    for canonical, aliases in COCO_OBJECT_ALIASES.items():
        for alias in aliases:
            alts = OBJECT_COCO.substitutions[alias]
            assert canonical not in alts and alias not in alts
            assert len(alts) == 79
    # the Table 3 keywords keep their own replacements, which name no alias
    assert OBJECT_COCO.substitutions["sofa"] == OBJECT.substitutions["sofa"]
    assert "couch" not in OBJECT_COCO.substitutions["cat"]


def test_with_aliases_rejects_unknown_targets_and_clashes():
    with pytest.raises(ValueError, match="not a keyword"):
        with_aliases(OBJECT, {"spaceship": ["ufo"]})
    with pytest.raises(ValueError, match="already a keyword"):
        with_aliases(OBJECT, {"cat": ["dog"]})


def test_from_list_and_from_relations_validate():
    garment = Concept.from_list("garment", ["Shirt", " Dress ", "leather  jacket"])
    assert garment.keywords == ("shirt", "dress", "leather jacket")
    assert garment.substitutions["dress"] == ("shirt", "leather jacket")
    with pytest.raises(ValueError, match="twice"):
        Concept.from_list("g", ["shirt", "SHIRT"])
    with pytest.raises(ValueError, match="at least two"):
        Concept.from_list("g", ["shirt"])
    with pytest.raises(TypeError, match="not one string"):
        Concept.from_list("g", "shirt dress")
    with pytest.raises(ValueError, match="empty"):
        Concept.from_list("g", ["shirt", "  "])
    rel = Concept.from_relations("fit", ["tight <-> loose", "long → short", ("wide", "narrow"),
                                         {"from": "new", "to": "old", "bidirectional": False}])
    assert dict(rel.substitutions) == {"tight": ("loose",), "loose": ("tight",), "long": ("short",),
                                       "wide": ("narrow",), "narrow": ("wide",), "new": ("old",)}
    with pytest.raises(ValueError, match="relation 0.*itself"):
        Concept.from_relations("x", [("big", "Big", True)])
    with pytest.raises(ValueError, match="cannot read"):
        Concept.from_relations("x", ["big = small"])


def test_concept_rejects_self_replacement_and_empty():
    with pytest.raises(ValueError, match="itself"):
        Concept("c", {"red": ("Red", "blue")})
    with pytest.raises(ValueError, match="no replacement"):
        Concept("c", {"red": ()})
    with pytest.raises(ValueError, match="no keywords"):
        Concept("c", {})
    with pytest.raises(ValueError, match="name"):
        Concept("", {"a": ("b",)})
    # replacements keep their spelling (a brand name), keywords are normalised
    c = Concept("phones", {"Phone": ("iPhone",)})
    assert c.substitutions == {"phone": ("iPhone",)}


def test_concept_pickles_equal_and_without_regex_cache():
    OBJECT.pattern  # noqa: B018 - fill the cache
    clone = pickle.loads(pickle.dumps(OBJECT))
    assert clone == OBJECT and hash(clone) == hash(OBJECT)
    assert pickle.dumps(clone) == pickle.dumps(Concept.from_list("object", OBJECT.keywords, case_sensitive=True))
    assert clone.pattern.pattern == OBJECT.pattern.pattern


def test_combine_concepts_merges_shared_keywords_in_order():
    both = combine_concepts(["object", COLOR])
    assert both.name == "object+color"
    assert len(both.keywords) == 80 + 8  # "orange" is in both
    orange = both.substitutions["orange"]
    assert orange[:79] == OBJECT.substitutions["orange"]
    assert orange[79:] == COLOR.substitutions["orange"]
    assert combine_concepts(["size", "location"], name="spatial").name == "spatial"
    assert get_concept("object+color") == both
    with pytest.raises(ValueError, match="unknown concept 'shape'"):
        get_concept("object+shape")
    with pytest.raises(ValueError, match="unique"):
        combine_concepts(["size", "size"])


def test_load_concepts_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "fashion.yaml"
    yaml_file.write_text(
        "concepts:\n"
        "  - name: garment\n"
        "    words: [shirt, dress, jacket]\n"
        "  - name: fit\n"
        "    relations: ['tight <-> loose', 'long -> short']\n"
        "  - name: shade\n"
        "    substitutions: {navy: [teal, olive]}\n",
        encoding="utf-8",
    )
    garment, fit, shade = load_concepts(yaml_file)
    assert garment == Concept.from_list("garment", ["shirt", "dress", "jacket"])
    assert fit.substitutions == {"tight": ("loose",), "loose": ("tight",), "long": ("short",)}
    assert shade.substitutions == {"navy": ("teal", "olive")}

    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps([c.to_dict() for c in (garment, fit)]), encoding="utf-8")
    assert load_concepts(json_file) == [garment, fit]


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"concepts": [', ".json", r"c\.json: not valid JSON \(line 1, column"),
        ("concepts: [a: b: c", ".yaml", "not valid YAML"),
        ('[{"name": "x"}]', ".json", "concept 0 .*exactly one of"),
        ('[{"name": "x", "words": ["a", "b"], "colour": 1}]', ".json", "unknown keys"),
        ('[{"name": "x", "words": ["a"]}]', ".json", r"concept 0 \('x'\): .*at least two"),
        ('[{"name": "x", "words": ["a", "b"]}, {"name": "x", "words": ["c", "d"]}]', ".json", "unique"),
        ("{}", ".json", "non-empty list"),
    ],
)
def test_load_concepts_errors_name_file_and_concept(tmp_path, text, suffix, message):
    path = tmp_path / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_concepts(path)


def test_load_concepts_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_concepts(tmp_path / "nope.yaml")


# -- case sensitivity ------------------------------------------------------------------------
def _val_captions(coco_mini) -> dict[int, str]:
    data = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text(encoding="utf-8"))
    return {a["id"]: a["caption"] for a in data["annotations"]}


@pytest.mark.parametrize(("caption_id", "concept", "insensitive_match"), [
    (53163, "size", "Small"),      # "Small boy holding a kite over his head waiting."
    (476515, "size", "Little"),    # "Little boys playing on a baseball field ..."
    (412552, "color", "Black"),    # "Black bear outside with large birds and fallen trees."
    (518154, "color", "Red"),      # "Red laptop on a table showing you can learn anywhere!"
])
def test_paper_concepts_skip_sentence_initial_keywords(coco_mini, caption_id, concept, insensitive_match):
    caption = _val_captions(coco_mini)[caption_id]
    assert caption.startswith(insensitive_match)
    assert find_keywords(caption, concept) == []  # the default, as the paper counted
    (match,) = [m for m in find_keywords(caption, get_concept(concept, case_sensitive=False)) if m.start == 0]
    assert match.text == insensitive_match
    negatives = enumerate_negatives(caption, with_case_sensitivity(concept, False))
    assert negatives and all(n.text[0].isupper() for n in negatives)  # case preserved


def test_built_in_concepts_are_case_sensitive_and_user_concepts_choose(tmp_path):
    assert all(c.case_sensitive for c in (OBJECT, COLOR, LOCATION, SIZE, OBJECT_COCO))
    assert get_concept("color", case_sensitive=False).case_sensitive is False
    assert get_concept("color", case_sensitive=True) is COLOR
    assert not Concept.from_list("garment", ["shirt", "dress"]).case_sensitive
    brands = Concept.from_list("brand", ["iPhone", "Galaxy"], case_sensitive=True)
    assert brands.keywords == ("iPhone", "Galaxy")  # spelling kept
    assert [m.text for m in find_keywords("an iPhone, not an iphone", brands)] == ["iPhone"]
    assert [n.text for n in enumerate_negatives("my iPhone", brands)] == ["my Galaxy"]
    path = tmp_path / "c.yaml"
    path.write_text("concepts:\n  - name: fit\n    words: [Tight, loose]\n    case_sensitive: true\n"
                    "  - name: garment\n    words: [shirt, dress]\n", encoding="utf-8")
    fit, garment = load_concepts(path)
    assert fit.case_sensitive and fit.keywords == ("Tight", "loose") and not garment.case_sensitive
    assert load_concepts(path) == [Concept(fit.name, fit.substitutions, True), garment]
    path.write_text("- name: fit\n  words: [a, b]\n  case_sensitive: 'yes'\n", encoding="utf-8")
    with pytest.raises(ValueError, match="case_sensitive must be true or false"):
        load_concepts(path)


def test_case_sensitivity_round_trips_and_is_part_of_identity():
    insensitive = COLOR.with_case_sensitivity(False)
    assert insensitive != COLOR and insensitive.substitutions == COLOR.substitutions
    assert pickle.loads(pickle.dumps(insensitive)) == insensitive
    assert Concept(**{k: v for k, v in COLOR.to_dict().items()}) == COLOR
    assert "case_sensitive" not in insensitive.to_dict()
    resolved = resolve_concepts(["color", "size"], case_sensitive=False)
    assert [c.case_sensitive for c in resolved] == [False, False]
    assert [c.case_sensitive for c in resolve_concepts("color,size")] == [True, True]
    assert combine_concepts(["object", "color"]).case_sensitive
    with pytest.raises(ValueError, match="cannot combine case-sensitive concepts"):
        combine_concepts([COLOR, Concept.from_list("garment", ["shirt", "dress"])])
