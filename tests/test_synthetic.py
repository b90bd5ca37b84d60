"""The synthetic world: deterministic, and every caption is true of its picture.

The checks here do not reuse the generator's own geometry helpers: captions are
parsed with an independent grammar, claims are checked against the object boxes
and against the rendered pixels, and every hard negative the substitution
engine derives from a caption must come out false.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from hf_hardneg.concepts import COLOR, LOCATION, OBJECT, SIZE
from hf_hardneg.substitution import enumerate_negatives, find_keywords
from hf_hardneg.synthetic import (
    BACKGROUNDS,
    COLOR_RGB,
    DEFAULT_OBJECTS,
    SIZE_WORDS,
    WorldConfig,
    iter_scenes,
    make_synthetic_dataset,
    render_scene,
)

WORLDS = {
    "free": WorldConfig(),
    "grid": WorldConfig(layout="grid"),
    "large-free": WorldConfig(image_size=48, p_overlap=0.6),
}

_NOUN = "|".join(sorted((re.escape(n) for n in OBJECT.keywords), key=len, reverse=True))
_SIZE = "|".join(w for words in SIZE_WORDS.values() for w in words)
_COLOR = "|".join(COLOR.keywords)
_NP = rf"the (?:(?P<{{p}}size>{_SIZE}) )?(?:(?P<{{p}}color>{_COLOR}) )?(?P<{{p}}noun>{_NOUN})"
NP = re.compile(_NP.format(p=""))
RELATIONS = ("to the left of", "to the right of", "above", "below", "over", "under", "in front of", "behind")
RELATION = re.compile(_NP.format(p="a_") + r" (?P<rel>" + "|".join(RELATIONS) + r") " + _NP.format(p="b_"))
SIDE = re.compile(_NP.format(p="") + r" on the (?P<side>left|right)\b")
SIZE_CLASS = {w: cls for cls, words in SIZE_WORDS.items() for w in words}


def _objects(row) -> dict[str, dict]:
    return {o["noun"]: o for o in row["objects"]}


def _center(o) -> tuple[float, float]:
    return (o["x0"] + o["x1"]) / 2, (o["y0"] + o["y1"]) / 2


def _overlap(a, b) -> bool:
    return min(a["x1"], b["x1"]) > max(a["x0"], b["x0"]) and min(a["y1"], b["y1"]) > max(a["y0"], b["y0"])


def _relation_true(rel: str, a, b) -> bool:
    (ax, ay), (bx, by) = _center(a), _center(b)
    return {
        "to the left of": ax < bx,
        "to the right of": ax > bx,
        "above": ay < by,
        "over": ay < by,
        "below": ay > by,
        "under": ay > by,
        "in front of": _overlap(a, b) and a["depth"] > b["depth"],
        "behind": _overlap(a, b) and a["depth"] < b["depth"],
    }[rel]


def caption_problems(caption: str, row) -> list[str]:
    """Everything in ``caption`` that is false of the scene ``row`` (empty list = true caption)."""
    objs = _objects(row)
    problems = []
    size = row["image"].size[0] if hasattr(row["image"], "size") else None
    mentioned = [m["noun"] for m in NP.finditer(caption)]
    if sorted(mentioned) != sorted(objs):
        problems.append(f"mentions {sorted(mentioned)} but the scene holds {sorted(objs)}")
    for m in NP.finditer(caption):
        o = objs.get(m["noun"])
        if o is None:
            continue
        if m["color"] and m["color"] != o["color"]:
            problems.append(f"{m['noun']} is {o['color']}, not {m['color']}")
        if m["size"] and SIZE_CLASS[m["size"]] != o["size"]:
            problems.append(f"{m['noun']} is {o['size']}, not {m['size']}")
    for m in RELATION.finditer(caption):
        a, b = objs.get(m["a_noun"]), objs.get(m["b_noun"])
        if a is not None and b is not None and not _relation_true(m["rel"], a, b):
            problems.append(f"{m['a_noun']} is not {m['rel']} {m['b_noun']}")
    for m in SIDE.finditer(caption):
        o = objs.get(m["noun"])
        if o is not None and size is not None:
            cx = _center(o)[0]
            if (m["side"] == "left") != (cx < size / 2):
                problems.append(f"{m['noun']} is not on the {m['side']}")
    for name, (phrase, _, _) in BACKGROUNDS.items():
        if phrase in caption and name != row["background"]:
            problems.append(f"background is {row['background']}, not {name}")
    return problems


def _accounted_keywords(caption: str) -> dict[str, list[str]]:
    """Keywords the caption grammar puts there on purpose, per concept."""
    out = {"color": [], "size": [], "object": [], "location": []}
    for m in NP.finditer(caption):
        out["object"].append(m["noun"])
        if m["color"]:
            out["color"].append(m["color"])
            if m["color"] == "orange":  # a keyword of both concepts, matched by spelling (see concepts.py)
                out["object"].append("orange")
        if m["size"]:
            out["size"].append(m["size"])
    for m in RELATION.finditer(caption):
        rel = m["rel"]
        out["location"].append({"to the left of": "left", "to the right of": "right"}.get(rel, rel))
    for m in SIDE.finditer(caption):
        out["location"].append(m["side"])
    return out


@pytest.fixture(scope="module")
def worlds():
    return {name: make_synthetic_dataset(120, seed=7, config=cfg) for name, cfg in WORLDS.items()}


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_dataset_and_different_seed_differs():
    a = make_synthetic_dataset(12, seed=3)
    b = make_synthetic_dataset(12, seed=3)
    c = make_synthetic_dataset(12, seed=4)
    assert a["caption"] == b["caption"] and a["coarse_caption"] == b["coarse_caption"]
    assert a["objects"] == b["objects"]
    raw = lambda ds: [r["bytes"] for r in ds.cast_column("image", ds.features["image"].__class__(decode=False))["image"]]  # noqa: E731
    assert raw(a) == raw(b)
    assert a["caption"] != c["caption"]
    assert raw(a) != raw(c)


def test_scene_depends_only_on_seed_and_index():
    """A larger world extends a smaller one, and `start` continues the numbering."""
    small = list(iter_scenes(6, seed=11))
    large = list(iter_scenes(12, seed=11))
    assert small == large[:6]
    tail = list(iter_scenes(6, seed=11, start=6))
    assert tail == large[6:]
    assert [s[0] for s in tail] == list(range(6, 12))


def test_rendering_is_pixel_identical_across_calls():
    _, scene, _, _ = next(iter_scenes(1, seed=5))
    assert np.array_equal(np.asarray(render_scene(scene)), np.asarray(render_scene(scene)))


# --------------------------------------------------------------------------- captions vs scenes


@pytest.mark.parametrize("world", list(WORLDS))
def test_every_caption_is_true_of_its_scene(worlds, world):
    ds = worlds[world]
    for i, row in enumerate(ds):
        assert caption_problems(row["caption"], row) == [], (i, row["caption"])
        assert caption_problems(row["coarse_caption"], row) == [], (i, row["coarse_caption"])


@pytest.mark.parametrize("world", list(WORLDS))
def test_substitution_engine_finds_exactly_the_intended_keywords(worlds, world):
    """No stray keyword ("back", "short", "background" ...) sneaks into a caption."""
    for row in worlds[world]:
        caption = row["caption"]
        expected = _accounted_keywords(caption)
        for concept in (COLOR, SIZE, OBJECT, LOCATION):
            found = [m.keyword for m in find_keywords(caption, concept)]
            assert sorted(found) == sorted(expected[concept.name]), (concept.name, caption)


def test_coarse_captions_have_no_concept_words(worlds):
    """Stage-1 ("alt-text") captions never need colour, size or location."""
    for ds in worlds.values():
        for caption in ds["coarse_caption"]:
            for concept in (COLOR, SIZE, LOCATION):
                assert find_keywords(caption, concept) == [], caption


@pytest.mark.parametrize("world", list(WORLDS))
def test_every_color_size_location_negative_is_false(worlds, world):
    """What makes them *hard negatives*: the substituted caption no longer fits the picture."""
    counts = {"color": 0, "size": 0, "location": 0, "object": 0}
    for row in worlds[world]:
        nouns = set(_objects(row))
        for concept in (COLOR, SIZE, LOCATION, OBJECT):
            for neg in enumerate_negatives(row["caption"], concept, occurrence=None):
                if concept is OBJECT and neg.replacement in nouns:
                    continue  # swapping two present nouns is a different test (binding), see below
                counts[concept.name] += 1
                assert caption_problems(neg.text, row), (concept.name, row["caption"], "->", neg.text)
    assert min(counts.values()) > 0, counts


def test_concepts_are_frequent_enough_to_train_on(worlds):
    ds = worlds["grid"]
    n = len(ds)
    share = {c.name: sum(bool(find_keywords(t, c)) for t in ds["caption"]) / n for c in (COLOR, SIZE, LOCATION)}
    assert share["color"] > 0.9 and share["size"] > 0.5 and share["location"] > 0.4, share


# --------------------------------------------------------------------------- pictures


@pytest.mark.parametrize("world", list(WORLDS))
def test_objects_are_painted_in_their_colour_inside_their_box(worlds, world):
    """Read the colour claim off the pixels: each object's paint shows inside its box."""
    for row in worlds[world]:
        img = np.asarray(row["image"].convert("RGB")).astype(int)
        for o in row["objects"]:
            x0, y0 = int(np.floor(o["x0"])), int(np.floor(o["y0"]))
            x1, y1 = int(np.ceil(o["x1"])), int(np.ceil(o["y1"]))
            patch = img[y0:y1, x0:x1]
            paint = np.asarray(COLOR_RGB[o["color"]])
            painted = np.abs(patch - paint).max(axis=-1) <= 6  # no background comes this close to a paint
            # thin glyphs at the smallest size, half hidden behind another object, keep ~5% of their box
            assert painted.sum() >= 3 and painted.mean() >= 0.05, (row["caption"], o["noun"], o["color"])


def test_sizes_match_their_class_and_images_have_the_configured_size(worlds):
    for name, ds in worlds.items():
        side = WORLDS[name].image_size
        for row in ds:
            assert row["image"].size == (side, side) and row["image"].mode == "RGB"
            sides = {o["size"]: o["x1"] - o["x0"] for o in row["objects"]}
            if "small" in sides and "large" in sides:
                assert sides["small"] < sides["large"] * 0.7


def test_grid_layout_aligns_objects_with_quadrants(worlds):
    for row in worlds["grid"]:
        for o in row["objects"]:
            cx, cy = _center(o)
            assert min(abs(cx - x) + abs(cy - y) for x in (8, 24) for y in (8, 24)) < 1e-4, (cx, cy)


def test_random_pairs_rarely_share_their_objects():
    """Random in-batch negatives are easy: two scenes almost never hold the same set of objects."""
    sets = [frozenset(o.noun for o in scene.objects) for _, scene, _, _ in iter_scenes(400, seed=1)]
    same = sum(a == b for a, b in itertools.combinations(sets, 2))
    pairs = len(sets) * (len(sets) - 1) // 2
    assert same / pairs < 0.005


def test_scenes_hold_the_configured_number_of_distinct_objects():
    cfg = WorldConfig(min_objects=3, max_objects=4)
    for _, scene, _, _ in iter_scenes(100, seed=2, config=cfg):
        nouns = [o.noun for o in scene.objects]
        assert 3 <= len(nouns) <= 4 and len(set(nouns)) == len(nouns)


# --------------------------------------------------------------------------- configuration


def test_default_objects_are_coco_nouns_and_never_colour_words():
    assert set(DEFAULT_OBJECTS) <= set(OBJECT.keywords)
    assert not set(DEFAULT_OBJECTS) & set(COLOR.keywords)
    assert set(COLOR_RGB) == set(COLOR.keywords)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objects": ("clock", "unicorn")}, "no glyph for \\['unicorn'\\]"),
        ({"colors": ("red", "purple")}, "unknown colours \\['purple'\\]"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"max_objects": 5}, "at most 4"),
        ({"p_color": 1.5}, "p_color must be a probability"),
        ({"layout": "spiral"}, "layout must be"),
        ({"image_size": 8}, "too small"),
        ({"size_probs": (0.5, 0.5, 0.5)}, "size_probs"),
    ],
)
def test_bad_world_config_is_rejected_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)


def test_dataset_schema_and_bad_size():
    ds = make_synthetic_dataset(3, seed=0)
    assert ds.column_names == ["image", "caption", "coarse_caption", "scene_id", "background", "objects"]
    assert ds["scene_id"] == [0, 1, 2]
    assert set(ds[0]["objects"][0]) == {"noun", "color", "size", "x0", "y0", "x1", "y1", "depth"}
    with pytest.raises(ValueError, match="num_scenes"):
        make_synthetic_dataset(0)
