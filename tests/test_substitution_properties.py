"""Property-based tests of the substitution invariants (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_hardneg.concepts import CONCEPTS, OBJECT_COCO, SIZE, combine_concepts
from hf_hardneg.substitution import (
    HardNegativeTransform,
    RowRandom,
    enumerate_negatives,
    find_keywords,
    sample_negatives,
)

ALL_CONCEPTS = [*CONCEPTS.values(), OBJECT_COCO, combine_concepts(["object", "color", "location", "size"])]
KEYWORDS = sorted({k for c in ALL_CONCEPTS for k in c.keywords})
FILLERS = ["a", "the", "on", "with", "scatter", "hotdog", "cats", "redhead", "in", "of", "teddy", "hot",
           "fronts", "backpack", "Ünïcode", "x_cat", "2cat", "bear"]
PUNCT = [",", ".", "!", "'s", "-", "(", ")", ";", "  ", "\n"]


def _spells(keyword: str, text: str) -> bool:
    """``text`` is ``keyword`` up to case (Unicode folding included) and whitespace runs."""
    return re.fullmatch(r"\s+".join(map(re.escape, keyword.split(" "))), text, re.IGNORECASE) is not None


def _cased(word: str, style: int) -> str:
    return [word, word.upper(), word.capitalize(), word.title()][style]


token = st.one_of(
    st.tuples(st.sampled_from(KEYWORDS), st.integers(0, 3)).map(lambda t: _cased(*t)),
    st.sampled_from(FILLERS),
    st.sampled_from(PUNCT),
    st.sampled_from(["cAt", "rED", "iN fRONT of", "Teddy bear", "bu\u017f", "\u212aite"]),  # long s, Kelvin sign
)
caption_strategy = st.one_of(
    st.lists(token, max_size=14).flatmap(
        lambda toks: st.lists(st.sampled_from([" ", " ", " ", "", "  ", "-"]), min_size=len(toks), max_size=len(toks))
        .map(lambda seps: "".join(t + s for t, s in zip(toks, seps)))
    ),
    st.text(max_size=60),
)
concept_strategy = st.sampled_from(ALL_CONCEPTS)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(caption=caption_strategy, concept=concept_strategy)
def test_matches_are_whole_words_in_order_and_canonical(caption, concept):
    matches = find_keywords(caption, concept)
    last_end = 0
    for m in matches:
        assert last_end <= m.start < m.end  # sorted, non-overlapping
        last_end = m.end
        assert caption[m.start : m.end] == m.text
        assert _spells(m.keyword, m.text) and m.keyword in concept.substitutions
        before = caption[m.start - 1] if m.start else " "
        after = caption[m.end] if m.end < len(caption) else " "
        assert not re.match(r"\w", before) and not re.match(r"\w", after)


@SETTINGS
@given(caption=caption_strategy, concept=concept_strategy)
def test_every_negative_changes_exactly_one_occurrence(caption, concept):
    matches = find_keywords(caption, concept)
    negatives = enumerate_negatives(caption, concept, occurrence=None)
    assert len(negatives) == sum(len(concept.substitutions[m.keyword]) for m in matches)
    spans = {(m.start, m.end) for m in matches}
    for n in negatives:
        assert n.text != caption
        assert n.concept == concept.name
        assert (n.start, n.end) in spans
        assert _spells(n.keyword, caption[n.start : n.end])
        assert n.replacement in concept.substitutions[n.keyword]
        # the caption outside the one span is untouched, the span holds the (cased) replacement
        tail = len(caption) - n.end
        assert n.text[: n.start] == caption[: n.start]
        assert n.text[len(n.text) - tail :] == caption[n.end :]
        inserted = n.text[n.start : len(n.text) - tail]
        assert inserted.lower() == n.replacement.lower()
        original = caption[n.start : n.end]
        if original.islower():
            assert inserted == n.replacement
        elif original.isupper():
            assert inserted == n.replacement.upper()
        elif original[0].isupper():
            assert inserted[0].isupper()
        else:  # "cAt": no clear pattern, the replacement is inserted as listed
            assert inserted == n.replacement


@SETTINGS
@given(caption=caption_strategy)
def test_size_relations_keep_their_direction(caption):
    for n in enumerate_negatives(caption, SIZE, occurrence=None):
        assert (n.keyword, n.replacement) not in {("short", "long"), ("tiny", "giant")}
        if n.keyword == "short":
            assert n.replacement == "tall"
        if n.keyword == "long":
            assert n.replacement == "short"


@SETTINGS
@given(word=st.sampled_from(KEYWORDS), concept=concept_strategy)
def test_keyword_inside_a_longer_word_never_matches(word, concept):
    glued = "q" + word.replace(" ", "") + "q"
    assert find_keywords(f"a {glued} here", concept) == []
    # plurals are not matched (see hf_hardneg.concepts): "cats" is no "cat", "teddy bears" no "teddy bear"
    assert all(m.keyword != word for m in find_keywords(f"a {word}s here", concept))


@SETTINGS
@given(caption=caption_strategy, concept=concept_strategy, k=st.integers(1, 6), seed=st.integers(0, 2**40))
def test_sampling_draws_k_valid_negatives_deterministically(caption, concept, k, seed):
    drawn = sample_negatives(caption, concept, k, seed)
    assert drawn == sample_negatives(caption, concept, k, seed)
    if not find_keywords(caption, concept):
        assert drawn == []
        return
    assert len(drawn) == k
    pool = {n.text for n in enumerate_negatives(caption, concept, occurrence=None)}
    assert all(n.text in pool for n in drawn)
    (keyword,) = {n.keyword for n in drawn}
    alternatives = len(concept.substitutions[keyword])
    assert len({n.text for n in drawn}) == min(k, alternatives)  # distinct until they run out


@SETTINGS
@given(captions=st.lists(caption_strategy, min_size=1, max_size=8), concept=concept_strategy,
       k=st.integers(1, 4), seed=st.integers(0, 1000), offset=st.integers(0, 10**6))
def test_transform_rows_equal_sample_negatives_with_row_random(captions, concept, k, seed, offset):
    captions = [c if c.strip() else c + "x" for c in captions]
    indices = list(range(offset, offset + len(captions)))
    out = HardNegativeTransform(concept, k, seed=seed)({"caption": captions}, indices)
    every = HardNegativeTransform(concept, "all", seed=seed)({"caption": captions}, indices)
    for row, (caption, index) in enumerate(zip(captions, indices)):
        expected = sample_negatives(caption, concept, k, RowRandom(seed, index))
        assert [out[f"negative_{j + 1}"][row] for j in range(k)] == ([n.text for n in expected] or [None] * k)
        assert out["hard_negative_keyword"][row] == (expected[0].keyword if expected else None)
        assert out["hard_negative_concept"][row] == (concept.name if expected else None)
        assert every["negatives"][row] == ([n.text for n in enumerate_negatives(caption, concept)] or None)
