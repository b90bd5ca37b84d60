"""Keyword substitution: turn a true caption into hard-negative captions.

Matching rules (one precompiled regex per concept, :attr:`Concept.pattern`):

* **whole words and phrases only**: a keyword must not touch a letter, digit or ``_`` on
  either side, so "scatter" never yields "cat"; hyphens and apostrophes are boundaries
  ("cat's" -> "dog's", "red-haired" -> "blue-haired");
* **longest phrase first**: at each position the longest keyword wins, so "hot dog" is one
  object (never "hot cat") and "in front of" one location; a space inside a phrase matches
  any run of whitespace;
* **case**: the paper's concepts match case-sensitively (their lower-case keywords do not
  match a sentence-initial "Red bus"; see :mod:`hf_hardneg.concepts` for why); a
  case-insensitive concept (``case_sensitive=False``, the default for user concepts) is
  case preserving: "Red bus" -> "Blue bus", "RED" -> "BLUE", "Hot Dog" -> "Fire Hydrant".
  Everything outside the keyword (punctuation, spacing) is kept byte for byte;
* plurals and words in two concepts: see :mod:`hf_hardneg.concepts`. Articles are not
  adjusted ("an orange" -> "an apple" / "an blue"), as in the paper.

Every negative changes exactly one keyword occurrence, so it is never equal to the caption,
and records the keyword, its replacement and the span it replaced.

Two modes:

* ``all`` (:func:`enumerate_negatives`): every alternative for one occurrence -- the
  ``n - 1`` candidate texts of the paper's concept-accuracy evaluation;
* sampling (:func:`sample_negatives`, :class:`HardNegativeTransform`): ``k`` draws for
  training. A row's draws come from a counter-based generator keyed by ``(seed, row index)``
  (:class:`RowRandom`), so results do not depend on ``num_proc``, batch size, streaming or
  resuming, nor on the Python version's ``random`` module.

Sampling rule: one occurrence is chosen uniformly among the matches, then ``k``
replacements for it are drawn *without* repetition while possible; when a keyword has fewer
than ``k`` alternatives (a relation concept has one), the draws go through all of them in a
random order and then start over, so ``negative_1 ... negative_k`` are always filled for a
matching row and repeat only when they must.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hf_hardneg.concepts import Concept, ConceptLike, get_concept, normalize_keyword, resolve_concepts

if TYPE_CHECKING:  # datasets is imported lazily: the engine itself does not need it
    import datasets

__all__ = [
    "KeywordMatch",
    "HardNegative",
    "RowRandom",
    "find_keywords",
    "enumerate_negatives",
    "sample_negatives",
    "HardNegativeTransform",
    "add_hard_negatives",
    "keep_rows_with_keywords",
    "negative_column_names",
    "is_valid_caption",
    "CONCEPT_COLUMN",
    "KEYWORD_COLUMN",
    "ALL_NEGATIVES_COLUMN",
]

logger = logging.getLogger(__name__)

CONCEPT_COLUMN = "hard_negative_concept"
KEYWORD_COLUMN = "hard_negative_keyword"
#: list column written when ``num_negatives="all"``
ALL_NEGATIVES_COLUMN = "negatives"
_NEGATIVE_COLUMN = re.compile(r"^negative_\d+$")

OnInvalid = Literal["raise", "skip"]


@dataclass(frozen=True)
class KeywordMatch:
    """One keyword occurrence: ``caption[start:end] == text``; ``keyword`` is its canonical form."""

    start: int
    end: int
    keyword: str
    text: str


@dataclass(frozen=True)
class HardNegative:
    """A hard-negative caption and what changed.

    ``caption[start:end]`` held ``keyword`` (canonical, lower-case); ``text`` is the caption
    with that span replaced by ``replacement`` (as listed in the concept), cased like the
    original occurrence.
    """

    text: str
    concept: str
    keyword: str
    replacement: str
    start: int
    end: int


# -- random numbers -----------------------------------------------------------------------
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    # SplitMix64 finaliser: a bijective scramble of 64-bit integers
    z = (z + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class RowRandom:
    """Counter-based random numbers: draw ``j`` of row ``index`` under ``seed`` is a pure function.

    Why not ``random.Random(seed + index)``: seeding a Mersenne Twister per row costs
    several times as much as one hash (benchmarks/substitution.py measures the transform),
    and ``random``'s sampling algorithms are not promised to stay the same across Python versions. A SplitMix64 hash of
    ``(seed, index, draw number)`` needs no state carried between rows, so any split of the
    rows over processes, batches or a resumed stream draws the same numbers.
    """

    __slots__ = ("_key", "_count")

    def __init__(self, seed: int = 0, index: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self._key = _mix64(_mix64(seed & _MASK64) ^ (index & _MASK64))
        self._count = 0

    def randbelow(self, n: int) -> int:
        """Uniform integer in ``[0, n)`` (bias below ``n / 2**64``)."""
        self._count += 1
        return _mix64((self._key + self._count * _GOLDEN) & _MASK64) % n


class _LazyRowRandom:
    """A :class:`RowRandom` made on the first draw: rows without a keyword never pay for one."""

    __slots__ = ("_args", "_rng")

    def __init__(self, seed: int, index: int) -> None:
        self._args, self._rng = (seed, index), None

    def randbelow(self, n: int) -> int:
        if self._rng is None:
            self._rng = RowRandom(*self._args)
        return self._rng.randbelow(n)


def _randbelow_for(seed_or_rng: Any):
    """Accept an int seed, a :class:`RowRandom`, a ``random.Random`` or a NumPy ``Generator``."""
    if isinstance(seed_or_rng, RowRandom):
        return seed_or_rng.randbelow
    if isinstance(seed_or_rng, int) and not isinstance(seed_or_rng, bool):
        return RowRandom(seed_or_rng, 0).randbelow
    if isinstance(seed_or_rng, random.Random):
        return seed_or_rng.randrange
    if hasattr(seed_or_rng, "integers"):  # numpy.random.Generator
        return lambda n: int(seed_or_rng.integers(n))
    try:  # numpy integer scalars
        import numpy as np

        if isinstance(seed_or_rng, np.integer):
            return RowRandom(int(seed_or_rng), 0).randbelow
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(
        "seed_or_rng must be an int seed, RowRandom, random.Random or numpy.random.Generator, "
        f"got {type(seed_or_rng).__name__}"
    )


def _draw(n: int, k: int, randbelow) -> list[int]:
    """``k`` indices into ``range(n)``: a random permutation, restarted when ``k > n``."""
    out: list[int] = []
    while len(out) < k:
        take = min(n, k - len(out))
        swapped: dict[int, int] = {}  # sparse Fisher-Yates: O(take), not O(n)
        for i in range(take):
            j = i + randbelow(n - i)
            out.append(swapped.get(j, j))
            swapped[j] = swapped.get(i, i)
    return out


# -- matching -------------------------------------------------------------------------------
def _match_case(matched: str, replacement: str) -> str:
    """Give ``replacement`` the casing pattern of ``matched`` (lower, Capitalised, Title Case, UPPER)."""
    if matched.islower():
        return replacement
    if matched.isupper() and len(matched) > 1:
        return replacement.upper()
    if matched[:1].isupper():
        if " " in replacement and matched.istitle() and any(c.isspace() for c in matched):
            return " ".join(w[:1].upper() + w[1:] for w in replacement.split(" "))
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _canonical(concept: Concept, text: str) -> str:
    keep = concept.case_sensitive
    key = text if keep else text.lower()
    if key in concept.substitutions:
        return key
    key = normalize_keyword(text, keep_case=keep)  # whitespace runs inside a phrase
    if key in concept.substitutions:
        return key
    for keyword in concept.keywords:  # Unicode case folding that lower() does not mirror
        pattern = r"\s+".join(re.escape(w) for w in keyword.split(" "))
        if re.fullmatch(pattern, text, 0 if keep else re.IGNORECASE):
            return keyword
    raise AssertionError(f"matched {text!r} is not a keyword of {concept.name!r}")  # pragma: no cover


def _check_caption(caption: Any) -> str:
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a string, got {type(caption).__name__}: {caption!r:.80}")
    return caption


def is_valid_caption(caption: Any) -> bool:
    """A caption worth substituting in: a string with at least one non-space character."""
    return isinstance(caption, str) and bool(caption) and not caption.isspace()


def find_keywords(caption: str, concept: ConceptLike) -> list[KeywordMatch]:
    """Every keyword occurrence of ``concept`` in ``caption``, left to right, non-overlapping.

    >>> [m.text for m in find_keywords("A hot dog, not a scatter-brained cat.", "object")]
    ['hot dog', 'cat']
    >>> [m.text for m in find_keywords("Cat and dog.", "object")]  # the paper's concepts: case-sensitive
    ['dog']
    """
    concept = get_concept(concept)
    caption = _check_caption(caption)
    return [
        KeywordMatch(m.start(), m.end(), _canonical(concept, m.group()), m.group())
        for m in concept.pattern.finditer(caption)
    ]


def _negative(caption: str, concept: Concept, match: KeywordMatch, replacement: str) -> HardNegative:
    text = caption[: match.start] + _match_case(match.text, replacement) + caption[match.end :]
    return HardNegative(text, concept.name, match.keyword, replacement, match.start, match.end)


def enumerate_negatives(caption: str, concept: ConceptLike, occurrence: int | None = 0) -> list[HardNegative]:
    """Every single-substitution negative of ``caption`` (the ``all`` mode).

    Args:
        occurrence: which match to vary: ``0`` the first (what concept accuracy uses: one
            true caption against ``n - 1`` negatives), ``-1`` the last, ``None`` every match
            (negatives of the first match first). An index past the matches gives ``[]``.

    >>> [n.text for n in enumerate_negatives("a man on the left", "location")]
    ['a man on the right']
    """
    concept = get_concept(concept)
    matches = find_keywords(caption, concept)
    if occurrence is not None:
        if isinstance(occurrence, bool) or not isinstance(occurrence, int):
            raise TypeError(f"occurrence must be an int or None, got {occurrence!r}")
        if not -len(matches) <= occurrence < len(matches):
            return []
        matches = [matches[occurrence]]
    return [
        _negative(caption, concept, m, replacement)
        for m in matches
        for replacement in concept.substitutions[m.keyword]
    ]


def sample_negatives(caption: str, concept: ConceptLike, k: int, seed_or_rng: Any) -> list[HardNegative]:
    """``k`` random negatives of ``caption`` (``[]`` when no keyword matches).

    One occurrence is drawn among the matches; its replacements are drawn without
    repetition, starting over only when ``k`` exceeds them (see the module docstring).
    ``seed_or_rng``: an int seed (same as ``RowRandom(seed, 0)``), a :class:`RowRandom`,
    a ``random.Random`` or a NumPy ``Generator``. :class:`HardNegativeTransform` gives row
    ``i`` exactly ``sample_negatives(caption, concept, k, RowRandom(seed, i))``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    concept = get_concept(concept)
    caption = _check_caption(caption)
    matches = list(concept.pattern.finditer(caption))
    if not matches:
        return []
    match, replacements = _draw_negatives(concept, matches, k, _randbelow_for(seed_or_rng))
    return [_negative(caption, concept, match, replacement) for replacement in replacements]


def _draw_negatives(concept: Concept, matches: list[re.Match], k: int | Literal["all"],
                    randbelow) -> tuple[KeywordMatch, list[str]]:
    """The draw itself, shared by :func:`sample_negatives` and :class:`HardNegativeTransform`:
    ``(the occurrence to replace, its replacements)``.

    ``k`` replacements of one occurrence drawn among ``matches`` (non-empty), or with
    ``k="all"`` every alternative of the first occurrence (no draw). Only the chosen
    occurrence is put in canonical form, and no text is built here: the transform writes
    plain strings, the API wraps them as :class:`HardNegative`.
    """
    found = matches[0] if k == "all" else matches[randbelow(len(matches))]
    match = KeywordMatch(found.start(), found.end(), _canonical(concept, found.group()), found.group())
    alternatives = concept.substitutions[match.keyword]
    if k == "all":
        return match, list(alternatives)
    return match, [alternatives[i] for i in _draw(len(alternatives), k, randbelow)]


def negative_column_names(k: int) -> list[str]:
    """``["negative_1", ..., "negative_k"]``: the sentence-transformers column convention."""
    return [f"negative_{i}" for i in range(1, k + 1)]


def _describe_invalid(caption: Any) -> str:
    if caption is None:
        return "None (missing)"
    if isinstance(caption, str):
        return "empty" if not caption else "whitespace only"
    return f"a {type(caption).__name__} ({caption!r:.60}), not a string"


def _invalid_error(index: int, caption: Any, column: str) -> ValueError:
    return ValueError(
        f"row {index}: caption column {column!r} is {_describe_invalid(caption)}. Clean the data, or pass "
        "on_invalid='skip' to leave such rows without negatives (they are counted and reported)."
    )


# -- datasets integration --------------------------------------------------------------------
class HardNegativeTransform:
    """Batched ``datasets`` transform adding hard-negative columns.

    Use with ``Dataset.map`` / ``IterableDataset.map`` and ``batched=True, with_indices=True``
    (the row index seeds the row's draws)::

        ds = ds.map(HardNegativeTransform("color", num_negatives=3), batched=True, with_indices=True)

    Adds ``negative_1 ... negative_k`` (str), ``hard_negative_concept`` (concept name) and
    ``hard_negative_keyword`` (the canonical keyword that was replaced); with
    ``num_negatives="all"`` a list column ``negatives`` holds every alternative of the first
    occurrence instead. Rows without a keyword get ``None`` in every new column.

    With several concepts each matching row uses one of them, drawn among those that match
    (so the two metadata columns stay single values); use
    :func:`~hf_hardneg.concepts.combine_concepts` to pool their keywords instead.

    Args:
        on_invalid: a caption that is ``None``, empty, whitespace or not a string either
            raises an error naming the row (``"raise"``) or leaves that row without
            negatives (``"skip"``, logged per batch with the row indices).
    """

    def __init__(
        self,
        concepts: ConceptLike | Iterable[ConceptLike],
        num_negatives: int | Literal["all"] = 1,
        caption_column: str = "caption",
        seed: int = 0,
        *,
        on_invalid: OnInvalid = "raise",
    ) -> None:
        self.concepts = resolve_concepts(concepts)
        if num_negatives != "all" and (
            isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1
        ):
            raise ValueError(f"num_negatives must be a positive int or 'all', got {num_negatives!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        self.num_negatives = num_negatives
        self.caption_column = caption_column
        self.seed = seed
        self.on_invalid = on_invalid

    def __repr__(self) -> str:
        names = [c.name for c in self.concepts]
        return (f"HardNegativeTransform(concepts={names}, num_negatives={self.num_negatives!r}, "
                f"caption_column={self.caption_column!r}, seed={self.seed}, on_invalid={self.on_invalid!r})")

    @property
    def output_columns(self) -> list[str]:
        """Names of the columns this transform adds, in order."""
        head = [ALL_NEGATIVES_COLUMN] if self.num_negatives == "all" else negative_column_names(self.num_negatives)
        return [*head, CONCEPT_COLUMN, KEYWORD_COLUMN]

    @property
    def features(self) -> "datasets.Features":
        """``datasets.Features`` of the added columns (pass them to ``map`` so an all-``None``
        first batch cannot fix a column's type to ``null``)."""
        from datasets import Features, List, Value

        string = Value("string")
        return Features({c: List(string) if c == ALL_NEGATIVES_COLUMN else string for c in self.output_columns})

    def __call__(self, batch: Any, indices: Any = None) -> dict[str, list]:
        if indices is None:
            raise ValueError(
                "HardNegativeTransform needs the row indices (they seed each row's draws): "
                "call map(..., batched=True, with_indices=True)"
            )
        captions = batch[self.caption_column] if isinstance(batch, Mapping) else batch
        if isinstance(indices, int):  # map(batched=False): one row
            return {k: v[0] for k, v in self._process([captions], [indices]).items()}
        return self._process(captions, indices)

    def _process(self, captions: Sequence[Any], indices: Sequence[int]) -> dict[str, list]:
        if len(captions) != len(indices):
            raise ValueError(f"got {len(captions)} captions but {len(indices)} indices")
        all_mode = self.num_negatives == "all"
        k = 1 if all_mode else self.num_negatives
        negatives: list[list] = [[] for _ in range(k)]
        concept_col: list[str | None] = []
        keyword_col: list[str | None] = []
        skipped: list[int] = []
        single = self.concepts[0] if len(self.concepts) == 1 else None
        seed = self.seed

        def no_negatives() -> None:
            for col in negatives:
                col.append(None)
            concept_col.append(None)
            keyword_col.append(None)

        for caption, index in zip(captions, indices):
            if not is_valid_caption(caption):
                if self.on_invalid == "raise":
                    raise _invalid_error(index, caption, self.caption_column)
                skipped.append(index)
                no_negatives()
                continue
            rng = _LazyRowRandom(seed, index)
            if single is not None:
                found = [(single, list(single.pattern.finditer(caption)))]
            else:  # one concept per row, drawn among those that match (no draw when only one does)
                found = [(c, ms) for c in self.concepts if (ms := list(c.pattern.finditer(caption)))]
            concept, matches = (found[0] if len(found) == 1 else found[rng.randbelow(len(found))]) if found \
                else (None, [])
            if not matches:
                no_negatives()
                continue
            match, replacements = _draw_negatives(concept, matches, self.num_negatives, rng.randbelow)
            head, tail = caption[: match.start], caption[match.end:]
            texts = [head + _match_case(match.text, r) + tail for r in replacements]
            if all_mode:
                negatives[0].append(texts)
            else:
                for col, text in zip(negatives, texts):
                    col.append(text)
            concept_col.append(concept.name)
            keyword_col.append(match.keyword)

        if skipped:
            logger.warning(
                "skipped %d invalid caption(s) (None, empty, whitespace or not a string) in column %r, rows %s%s",
                len(skipped), self.caption_column, skipped[:10], " ..." if len(skipped) > 10 else "",
            )
        names = self.output_columns
        return {**dict(zip(names[:-2], negatives)), CONCEPT_COLUMN: concept_col, KEYWORD_COLUMN: keyword_col}


def _keeps_row(values: list[Any]) -> list[bool]:
    # module-level (not a lambda) so `datasets` can hash it for the cache
    return [v is not None for v in values]


def _check_caption_column(dataset: Any, caption_column: str) -> None:
    names = getattr(dataset, "column_names", None)
    if names is not None and caption_column not in names:
        raise ValueError(f"caption column {caption_column!r} not found; the dataset has columns {names}")
    features = getattr(dataset, "features", None)
    if features is not None and caption_column in features:
        feature = features[caption_column]
        dtype = getattr(feature, "dtype", None)
        if dtype not in ("string", "large_string", "null"):
            raise CaptionColumnError(
                f"caption column {caption_column!r} has type {feature}, expected strings{_first_non_string(dataset, caption_column)}; "
                "pass the right caption_column, or make every caption a string (e.g. cast the column)"
            )


class CaptionColumnError(ValueError, TypeError):
    """The caption column does not hold text: bad data (a ValueError) of the wrong type (a TypeError)."""


def _first_non_string(dataset: Any, caption_column: str) -> str:
    """", e.g. row 7 holds 5 (int)" for a map-style dataset whose column mixes types (read as Json); else ""."""
    if not hasattr(dataset, "__len__"):
        return ""
    for start in range(0, len(dataset), 10_000):
        values = dataset[start: start + 10_000][caption_column]
        for offset, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                return f", e.g. row {start + offset} holds {value!r} ({type(value).__name__})"
    return ""


@dataclass
class SubstitutionSummary:
    """What :func:`add_hard_negatives` did to a (map-style) dataset; logged at INFO/WARNING."""

    rows: int
    with_negatives: int
    without_keyword: int
    invalid_skipped: int

    def __str__(self) -> str:
        return (f"{self.rows} rows: {self.with_negatives} with hard negatives, {self.without_keyword} "
                f"without a keyword, {self.invalid_skipped} invalid captions skipped")


def _summarize(dataset: "datasets.Dataset", caption_column: str) -> SubstitutionSummary:
    import pyarrow.compute as pc

    # only the two columns, as Arrow: no image decoding, no Python objects per row
    table = dataset.select_columns([caption_column, CONCEPT_COLUMN]).with_format("arrow")[:]
    captions = table.column(caption_column)
    invalid = captions.null_count
    if len(captions):
        blank = pc.equal(pc.utf8_trim_whitespace(captions.fill_null("x")), "")
        invalid += pc.sum(blank).as_py() or 0
    with_negatives = len(table) - table.column(CONCEPT_COLUMN).null_count
    return SubstitutionSummary(len(table), with_negatives, len(table) - with_negatives - invalid, invalid)


def add_hard_negatives(
    dataset: "datasets.Dataset | datasets.IterableDataset",
    concepts: ConceptLike | Iterable[ConceptLike],
    num_negatives: int | Literal["all"] = 1,
    caption_column: str = "caption",
    seed: int = 0,
    keep_only_matching: bool = True,
    num_proc: int | None = None,
    *,
    on_invalid: OnInvalid = "raise",
    batch_size: int = 1000,
    load_from_cache_file: bool | None = None,
) -> "datasets.Dataset | datasets.IterableDataset":
    """Add hard-negative columns to a ``Dataset`` or ``IterableDataset`` (see :class:`HardNegativeTransform`).

    ``keep_only_matching`` then keeps only rows with at least one keyword -- the paper's
    per-concept training subsets. Row ``i`` of the input always gets the same negatives
    (any ``num_proc``, batch size or streaming), and a repeated call on a cached
    ``Dataset`` reuses the cache files. For a ``Dataset`` a :class:`SubstitutionSummary`
    is logged; skipped invalid captions are reported as a warning.

    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"caption": ["a red bus", "a plain wall"]})
    >>> add_hard_negatives(ds, "color", num_negatives=2)[0]["negative_1"] != "a red bus"
    True
    """
    from datasets import Features, IterableDataset

    transform = HardNegativeTransform(concepts, num_negatives, caption_column, seed, on_invalid=on_invalid)
    _check_caption_column(dataset, caption_column)
    existing = [c for c in (dataset.column_names or []) if _NEGATIVE_COLUMN.match(c) or c in transform.output_columns]
    if existing:
        raise ValueError(
            f"the dataset already has hard-negative columns {existing}; remove them first "
            "(dataset.remove_columns(...)) so the negative_* columns match num_negatives"
        )
    features = None
    if dataset.features is not None:
        features = Features({**dataset.features, **transform.features})
    map_kwargs: dict[str, Any] = dict(
        batched=True, with_indices=True, input_columns=[caption_column], batch_size=batch_size, features=features
    )
    if isinstance(dataset, IterableDataset):
        out = dataset.map(transform, **map_kwargs)
        if keep_only_matching:
            out = out.filter(_keeps_row, batched=True, input_columns=[CONCEPT_COLUMN], batch_size=batch_size)
        return out

    names = ",".join(c.name for c in transform.concepts)
    out = dataset.map(
        transform, num_proc=num_proc, load_from_cache_file=load_from_cache_file,
        desc=f"hard negatives ({names}, k={num_negatives})", **map_kwargs,
    )
    summary = _summarize(out, caption_column)
    logger.info("hard negatives (%s): %s", names, summary)
    if summary.invalid_skipped:
        logger.warning("hard negatives (%s): %d invalid caption(s) skipped", names, summary.invalid_skipped)
    if keep_only_matching:
        out = out.filter(
            _keeps_row, batched=True, input_columns=[CONCEPT_COLUMN], batch_size=batch_size, num_proc=num_proc,
            load_from_cache_file=load_from_cache_file, desc=f"keep rows with a {names} keyword",
        )
        _report_kept(len(out), summary.rows, names, caption_column)
    return out


def _report_kept(kept: int, rows: int, names: str, caption_column: str) -> None:
    """Say how many rows the keyword filter kept, at the default log level when it dropped any: never silently."""
    level = logging.WARNING if kept < rows else logging.INFO
    logger.log(level, "kept %d of %d rows whose %r has a keyword of %s (%d without one left out)",
               kept, rows, caption_column, names, rows - kept)


class _HasKeyword:
    """Picklable, hashable filter predicate for :func:`keep_rows_with_keywords`."""

    def __init__(self, concepts: list[Concept], caption_column: str, on_invalid: OnInvalid) -> None:
        self.concepts = concepts
        self.caption_column = caption_column
        self.on_invalid = on_invalid

    def __call__(self, captions: list[Any], indices: list[int]) -> list[bool]:
        keep = []
        skipped = []
        for caption, index in zip(captions, indices):
            if not is_valid_caption(caption):
                if self.on_invalid == "raise":
                    raise _invalid_error(index, caption, self.caption_column)
                skipped.append(index)
                keep.append(False)
                continue
            keep.append(any(c.pattern.search(caption) for c in self.concepts))
        if skipped:
            logger.warning(
                "dropped %d invalid caption(s) (None, empty, whitespace or not a string) in column %r, rows %s%s",
                len(skipped), self.caption_column, skipped[:10], " ..." if len(skipped) > 10 else "",
            )
        return keep


def keep_rows_with_keywords(
    dataset: "datasets.Dataset | datasets.IterableDataset",
    concepts: ConceptLike | Iterable[ConceptLike],
    caption_column: str = "caption",
    *,
    on_invalid: OnInvalid = "raise",
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> "datasets.Dataset | datasets.IterableDataset":
    """Keep the rows whose caption has at least one keyword of any of ``concepts``.

    This is the paper's per-concept subset (COCO rows where a substitution is possible).
    Invalid captions raise an error naming the row, or are dropped with ``on_invalid="skip"``.
    """
    from datasets import IterableDataset

    _check_caption_column(dataset, caption_column)
    predicate = _HasKeyword(resolve_concepts(concepts), caption_column, on_invalid)
    kwargs: dict[str, Any] = dict(batched=True, with_indices=True, input_columns=[caption_column], batch_size=batch_size)
    if isinstance(dataset, IterableDataset):
        return dataset.filter(predicate, **kwargs)
    before = len(dataset)
    out = dataset.filter(predicate, num_proc=num_proc, **kwargs)
    _report_kept(len(out), before, ",".join(c.name for c in predicate.concepts), caption_column)
    return out
