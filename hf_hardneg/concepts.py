"""Concepts: which keywords may be swapped for which, to turn a caption into a hard negative.

A :class:`Concept` is a named table ``keyword -> allowed replacements``. Two shapes cover
the paper's Table 3 and most user needs:

* a *list* concept (:meth:`Concept.from_list`): any member may become any other member
  (``object``: 80 COCO class names, ``color``: 9 colour names);
* a *relation* concept (:meth:`Concept.from_relations`): explicit pairs, each one- or
  two-directional (``location``: ``left <-> right``; ``size``: ``long -> short`` only, so a
  "short" thing is never called "long" -- "short" only becomes "tall", through ``tall <-> short``).

**Case.** The paper's four concepts (and ``object_coco``) match **case-sensitively**: their
lower-case keywords match "a red bus" but not the sentence-initial "Red bus". That is how
the paper's Table 5 was counted: on the COCO val2017 captions, case-insensitive matching
finds 13,274 / 4,004 / 2,557 / 2,748 captions with an object / color / location / size
keyword, against the table's 12,907 / 3,907 / 2,527 / 2,601 (size +5.7%), while
case-sensitive matching finds 12,979 / 3,924 / 2,539 / 2,622, all within 0.9% (counts
reported in this project's issue 18; the excess is sentence-initial "Small", "Large",
"Black", "White", ...). ``get_concept("color", case_sensitive=False)`` (or
``resolve_concepts(..., case_sensitive=False)``, ``--case-insensitive`` on the command line)
gives the case-insensitive variant. A user concept chooses with ``case_sensitive=`` (default
``False``: case-insensitive and case-preserving, "Red bus" -> "Blue bus"); a case-sensitive
concept keeps its keywords' spelling ("iPhone"). Keywords of a case-insensitive concept
are stored lower-case with single spaces (see :mod:`hf_hardneg.substitution`). Replacements
keep the spelling they were given, so a user concept may replace with a proper noun.

Choices worth knowing (the paper leaves them open):

* **Table 3 word for word.** ``object`` uses the paper's spellings ``motorbike``, ``aeroplane``,
  ``sofa`` and ``tv monitor``. COCO captions mostly say *motorcycle*, *airplane*, *couch* and
  *tv*; :data:`OBJECT_COCO` (``get_concept("object_coco")``) adds those as extra keywords
  that are replaced like their Table 3 twin (and never by it: "couch" -> "sofa" is no negative).
  It is opt-in so that results stay comparable with the paper.
* **Plurals are not matched.** Keywords are whole words, so "two cats" has no ``object``
  keyword. Matching "cats" with the singular table would write "two dog", a negative that a
  text encoder can reject by grammar alone, without looking at the image; inflecting the
  replacements needs a list of irregular forms ("knives", "people", "sheep", "skis").
  Where plurals matter, define them as a concept of their own (``Concept.from_list("objects",
  ["cats", "dogs", ...])``) and combine it. (Articles are not adjusted either: "an apple" ->
  "an bus"; only the keyword itself ever changes.)
* **A word in two concepts** ("orange" is both an object and a colour) is matched by
  spelling, not by meaning: with ``object`` alone, "an orange cat" may become "an apple cat";
  with ``color`` alone, "an orange on a plate" may become "an blue on a plate". Both are still
  false captions, only less hard. :func:`combine_concepts` merges the replacement lists of a
  shared keyword (object alternatives first, then colour ones, in the order given).
* The caption of Table 3 counts 11 size keywords, but its relations name 12 distinct
  words (large, small, little, big, tall, short, long, thin, fat, huge, tiny, giant); all 12 are
  used here, each with exactly the directions the table gives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any, Union

__all__ = [
    "Concept",
    "OBJECT",
    "COLOR",
    "LOCATION",
    "SIZE",
    "CONCEPTS",
    "COCO_OBJECT_ALIASES",
    "OBJECT_COCO",
    "get_concept",
    "load_concepts",
    "combine_concepts",
    "with_aliases",
    "normalize_keyword",
    "resolve_concepts",
    "with_case_sensitivity",
]

ConceptLike = Union[str, "Concept"]

_WS = re.compile(r"\s+")
# "a <-> b", "a ↔ b", "a -> b", "a → b" in relation strings of YAML/JSON files
_RELATION = re.compile(r"^\s*(?P<a>.+?)\s*(?P<arrow><->|↔|->|→)\s*(?P<b>.+?)\s*$")


def normalize_keyword(word: str, keep_case: bool = False) -> str:
    """Canonical form of a keyword: lower-case (unless ``keep_case``), inner whitespace collapsed to one space."""
    if not isinstance(word, str):
        raise TypeError(f"keywords must be strings, got {type(word).__name__}: {word!r}")
    key = _WS.sub(" ", word.strip())
    key = key if keep_case else key.lower()
    if not key:
        raise ValueError("keywords must not be empty or whitespace only")
    return key


def _clean_replacement(word: str) -> str:
    # replacements keep their case (a user concept may want "iPhone"); only whitespace is tidied
    if not isinstance(word, str):
        raise TypeError(f"replacements must be strings, got {type(word).__name__}: {word!r}")
    text = _WS.sub(" ", word.strip())
    if not text:
        raise ValueError("replacements must not be empty or whitespace only")
    return text


@dataclass(frozen=True, eq=False)
class Concept:
    """A named substitution table: ``substitutions[keyword]`` lists what ``keyword`` may become.

    Args:
        name: identifier used in dataset columns, results and the CLI (e.g. ``"color"``).
        substitutions: keyword or phrase -> ordered, non-empty tuple of replacements.
            Keys are normalised (single spaces; lower-case unless ``case_sensitive``); a
            keyword may not be its own replacement, so every substitution really changes
            the caption.
        case_sensitive: match the keywords exactly as spelt ("red" matches "a red bus", not
            "Red bus"). The paper's concepts set it; default ``False`` (case-insensitive,
            case-preserving).

    Example:
        >>> garment = Concept.from_list("garment", ["shirt", "dress", "jacket"])
        >>> garment.substitutions["dress"]
        ('shirt', 'jacket')
        >>> Concept.from_relations("size", [("long", "short", False)]).keywords
        ('long',)
    """

    name: str
    substitutions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    case_sensitive: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.case_sensitive, bool):
            raise TypeError(f"concept {self.name!r}: case_sensitive must be true or false, got {self.case_sensitive!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a concept needs a non-empty string name, got {self.name!r}")
        if not isinstance(self.substitutions, Mapping):
            raise TypeError(
                f"concept {self.name!r}: substitutions must be a mapping keyword -> replacements, "
                f"got {type(self.substitutions).__name__}"
            )
        table: dict[str, tuple[str, ...]] = {}
        for raw_key, raw_values in self.substitutions.items():
            key = normalize_keyword(raw_key, keep_case=self.case_sensitive)
            if key in table:
                raise ValueError(f"concept {self.name!r}: keyword {key!r} is listed twice")
            if isinstance(raw_values, str):
                raw_values = (raw_values,)
            values: list[str] = []
            for value in raw_values:
                value = _clean_replacement(value)
                if value.lower() == key.lower():
                    raise ValueError(
                        f"concept {self.name!r}: keyword {key!r} lists itself as a replacement; "
                        "a hard negative must change the caption"
                    )
                if value not in values:
                    values.append(value)
            if not values:
                raise ValueError(f"concept {self.name!r}: keyword {key!r} has no replacement")
            table[key] = tuple(values)
        if not table:
            raise ValueError(f"concept {self.name!r} has no keywords")
        # a plain dict (not MappingProxyType) so the concept pickles for num_proc and hashes
        # stably for the `datasets` cache; treat it as read-only.
        object.__setattr__(self, "substitutions", table)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_list(cls, name: str, words: Iterable[str], case_sensitive: bool = False) -> "Concept":
        """A concept where every word may replace every other word (order kept)."""
        if isinstance(words, str):
            raise TypeError(f"concept {name!r}: pass a list of words, not one string {words!r}")
        members: list[str] = []
        for word in words:
            key = normalize_keyword(word, keep_case=case_sensitive)
            if key in members:
                raise ValueError(f"concept {name!r}: word {key!r} is listed twice")
            members.append(key)
        if len(members) < 2:
            raise ValueError(f"concept {name!r}: a list concept needs at least two words, got {members}")
        return cls(name, {w: tuple(o for o in members if o != w) for w in members}, case_sensitive)

    @classmethod
    def from_relations(cls, name: str, relations: Iterable[Any], case_sensitive: bool = False) -> "Concept":
        """A concept from ``(a, b, bidirectional)`` triples: ``a -> b``, and ``b -> a`` too if bidirectional.

        Strings ``"a <-> b"`` / ``"a -> b"`` (or with the arrows ``↔`` / ``→``) and pairs
        ``(a, b)`` (read as bidirectional) are accepted too, which is what config files use.
        A keyword with several relations keeps its replacements in the order given.
        """
        table: dict[str, list[str]] = {}
        for i, rel in enumerate(relations):
            a, b, both = _parse_relation(rel, where=f"concept {name!r}, relation {i}", keep_case=case_sensitive)
            for src, dst in ((a, b), (b, a)) if both else ((a, b),):
                targets = table.setdefault(normalize_keyword(src, keep_case=case_sensitive), [])
                if dst not in targets:
                    targets.append(dst)
        if not table:
            raise ValueError(f"concept {name!r}: no relations given")
        return cls(name, {k: tuple(v) for k, v in table.items()}, case_sensitive)

    # -- views --------------------------------------------------------------------------
    @property
    def keywords(self) -> tuple[str, ...]:
        """Every keyword that can be replaced, in definition order."""
        return tuple(self.substitutions)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """One compiled regex matching any keyword as a whole word, longest phrase first.

        Built as a prefix tree so the engine does not try 80 alternatives at each
        character; see :func:`hf_hardneg.substitution.find_keywords` for the matching rules.
        """
        return re.compile(
            r"(?<!\w)(?:" + _trie_regex(self.keywords) + r")(?!\w)",
            0 if self.case_sensitive else re.IGNORECASE,
        )

    def with_case_sensitivity(self, case_sensitive: bool) -> "Concept":
        """The same table matched case-sensitively or not (``self`` when it already is)."""
        if case_sensitive == self.case_sensitive:
            return self
        return Concept(self.name, dict(self.substitutions), case_sensitive)

    def __getstate__(self) -> dict[str, Any]:
        # drop the compiled-regex cache: pickles (and so `datasets` fingerprints) must not
        # depend on whether the pattern was used before
        return {"name": self.name, "substitutions": self.substitutions, "case_sensitive": self.case_sensitive}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "name", state["name"])
        object.__setattr__(self, "substitutions", dict(state["substitutions"]))
        object.__setattr__(self, "case_sensitive", bool(state.get("case_sensitive", False)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Concept):
            return NotImplemented
        return (self.name == other.name and self.case_sensitive == other.case_sensitive
                and list(self.substitutions.items()) == list(other.substitutions.items()))

    def __hash__(self) -> int:
        return hash((self.name, self.case_sensitive, tuple(self.substitutions.items())))

    def __repr__(self) -> str:
        shown = ", ".join(self.keywords[:6]) + (", ..." if len(self.keywords) > 6 else "")
        case = ", case_sensitive=True" if self.case_sensitive else ""
        return f"Concept(name={self.name!r}, keywords=[{shown}] ({len(self.keywords)}){case})"

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready form that :func:`load_concepts` reads back."""
        out: dict[str, Any] = {"name": self.name,
                               "substitutions": {k: list(v) for k, v in self.substitutions.items()}}
        if self.case_sensitive:
            out["case_sensitive"] = True
        return out


def with_case_sensitivity(concept: ConceptLike, case_sensitive: bool) -> Concept:
    """``concept`` (a name or :class:`Concept`) matched case-sensitively or not."""
    return get_concept(concept).with_case_sensitivity(case_sensitive)


def _parse_relation(rel: Any, where: str, keep_case: bool = False) -> tuple[str, str, bool]:
    if isinstance(rel, str):
        m = _RELATION.match(rel)
        if not m:
            raise ValueError(f"{where}: cannot read {rel!r}; write 'a <-> b' (both ways) or 'a -> b' (one way)")
        a, b, both = m["a"], m["b"], m["arrow"] in ("<->", "↔")
    elif isinstance(rel, Mapping):
        try:
            a, b = rel["from"], rel["to"]
        except KeyError:
            raise ValueError(f"{where}: a relation mapping needs 'from' and 'to' keys, got {dict(rel)}") from None
        both = rel.get("bidirectional", True)
    elif isinstance(rel, (list, tuple)) and len(rel) in (2, 3):
        a, b = rel[0], rel[1]
        both = rel[2] if len(rel) == 3 else True
    else:
        raise ValueError(f"{where}: expected (a, b, bidirectional), 'a <-> b' or 'a -> b', got {rel!r}")
    if not isinstance(both, bool):
        raise ValueError(f"{where}: 'bidirectional' must be true or false, got {both!r}")
    a, b = normalize_keyword(a, keep_case), normalize_keyword(b, keep_case)
    if a.lower() == b.lower():
        raise ValueError(f"{where}: {a!r} cannot be replaced by itself")
    return a, b, both


def _trie_regex(words: Iterable[str]) -> str:
    """Regex source matching exactly `words`, factored as a prefix tree.

    Continuations are tried before stopping (greedy), so the longest keyword at a position
    wins ("hot dog" over "hot"); the caller's ``(?!\\w)`` makes the engine back off to a
    shorter keyword when the long one ends inside a word. Spaces in phrases match any run
    of whitespace.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [
            (r"\s+" if ch == " " else re.escape(ch)) + emit(child)
            for ch, child in sorted(node.items(), key=lambda kv: kv[0])
            if ch != ""
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:
            if len(branches) == 1 and len(body) > 1:
                body = "(?:" + body + ")"
            body += "?"
        return body

    return emit(trie)


# -- Table 3 of the paper, word for word --------------------------------------------------
_OBJECT_WORDS = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "potted plant", "bed", "dining table", "toilet", "tv monitor", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
_COLOR_WORDS = ("blue", "red", "green", "yellow", "black", "white", "brown", "gray", "orange")
_LOCATION_RELATIONS = (
    ("left", "right", True),
    ("above", "below", True),
    ("under", "over", True),
    ("foreground", "background", True),
    ("in front of", "behind", True),
    ("back", "front", True),
)
_SIZE_RELATIONS = (
    ("large", "small", True),
    ("little", "big", True),
    ("tall", "short", True),
    ("long", "short", False),
    ("thin", "fat", True),
    ("huge", "tiny", True),
    ("giant", "tiny", False),
)

# case-sensitive, as the paper counted (Table 5): "Small dog" at the start of a caption is not matched
OBJECT = Concept.from_list("object", _OBJECT_WORDS, case_sensitive=True)
COLOR = Concept.from_list("color", _COLOR_WORDS, case_sensitive=True)
LOCATION = Concept.from_relations("location", _LOCATION_RELATIONS, case_sensitive=True)
SIZE = Concept.from_relations("size", _SIZE_RELATIONS, case_sensitive=True)

#: The paper's four concepts by name. Only these: extra variants live in :func:`get_concept`.
CONCEPTS: dict[str, Concept] = {c.name: c for c in (OBJECT, COLOR, LOCATION, SIZE)}

#: COCO category names (and their usual caption spelling) where Table 3 says otherwise.
COCO_OBJECT_ALIASES: dict[str, tuple[str, ...]] = {
    "motorbike": ("motorcycle",),
    "aeroplane": ("airplane",),
    "sofa": ("couch",),
    "tv monitor": ("tv",),
}


def with_aliases(concept: ConceptLike, aliases: Mapping[str, Iterable[str]], name: str | None = None) -> Concept:
    """Add synonym keywords that are replaced exactly like their canonical keyword.

    ``aliases`` maps an existing keyword to extra spellings. An alias gets the canonical
    keyword's replacements (never the canonical keyword itself or another alias of it,
    since swapping synonyms yields no negative); replacements stay the canonical words.
    """
    base = get_concept(concept)
    table = {k: list(v) for k, v in base.substitutions.items()}
    keep = base.case_sensitive
    for canonical, extra in aliases.items():
        key = normalize_keyword(canonical, keep)
        if key not in table:
            raise ValueError(f"alias target {key!r} is not a keyword of concept {base.name!r}")
        if isinstance(extra, str):
            extra = (extra,)
        synonyms = {key, *(normalize_keyword(e, keep) for e in extra)}
        folded = {w.lower() for w in synonyms}
        for alias in synonyms - {key}:
            if alias in table:
                raise ValueError(f"alias {alias!r} is already a keyword of concept {base.name!r}")
            table[alias] = [r for r in base.substitutions[key] if r.lower() not in folded]
    return Concept(name or f"{base.name}_aliased", {k: tuple(v) for k, v in table.items()}, base.case_sensitive)


def get_concept(name_or_concept: ConceptLike, case_sensitive: bool | None = None) -> Concept:
    """Resolve a built-in concept name (``object``, ``color``, ``location``, ``size``,
    ``object_coco``; the name itself is read case-insensitively, ``colour`` accepted) or pass a
    :class:`Concept` through.

    ``"object+color"`` names the :func:`combine_concepts` of the parts (one keyword pool).
    ``case_sensitive``: ``None`` keeps the concept's own matching (case-sensitive for the
    built-ins); ``True``/``False`` returns the variant that matches so.
    """
    if case_sensitive is not None:
        return get_concept(name_or_concept).with_case_sensitivity(case_sensitive)
    if isinstance(name_or_concept, Concept):
        return name_or_concept
    if not isinstance(name_or_concept, str):
        raise TypeError(f"expected a concept name or Concept, got {type(name_or_concept).__name__}")
    if "+" in name_or_concept:
        return combine_concepts(name_or_concept.split("+"))
    key = name_or_concept.strip().lower()
    key = {"colour": "color", "objects": "object", "colors": "color"}.get(key, key)
    found = CONCEPTS.get(key) or _EXTRA_CONCEPTS.get(key)
    if found is None:
        known = ", ".join([*CONCEPTS, *_EXTRA_CONCEPTS])
        raise ValueError(
            f"unknown concept {name_or_concept!r}; known concepts: {known}. "
            "Define your own with Concept.from_list / Concept.from_relations or load_concepts(path)."
        )
    return found


#: ``object`` plus COCO's own spellings (motorcycle, airplane, couch, tv); opt-in.
OBJECT_COCO = with_aliases(OBJECT, COCO_OBJECT_ALIASES, name="object_coco")

_EXTRA_CONCEPTS: dict[str, Concept] = {OBJECT_COCO.name: OBJECT_COCO}


_CONCEPT_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def is_concept_file(item: Any) -> bool:
    """True for a path (str or PathLike) ending in .yaml, .yml or .json: a file of user concepts."""
    return isinstance(item, (str, PathLike)) and Path(item).suffix.lower() in _CONCEPT_FILE_SUFFIXES


def resolve_concepts(concepts: ConceptLike | Iterable[ConceptLike],
                     definitions: Iterable[ConceptLike] | None = None,
                     case_sensitive: bool | None = None) -> list[Concept]:
    """The one way concepts are named, in Python, in configs and on every command line.

    Each item is a :class:`Concept`, a built-in name (``color``; ``colour`` and other
    aliases accepted; ``object+color`` combines), the path of a YAML/JSON concept file
    (all its concepts, see :func:`load_concepts`), or a comma-separated list of these
    (``"color,size"``). ``definitions`` are concepts or concept files whose concepts may
    then be named (``--concept-file fashion.yaml --concepts garment``). The same concept
    named twice is kept once; two different concepts sharing a name are an error.
    ``case_sensitive`` (``True``/``False``) makes every resolved concept match so; ``None``
    keeps each concept's own setting (the built-ins: case-sensitive).
    """
    known: dict[str, Concept] = {}
    for item in [definitions] if isinstance(definitions, (str, PathLike, Concept)) else (definitions or []):
        for concept in (load_concepts(item) if is_concept_file(item) else [get_concept(item)]):
            known[concept.name] = concept
    if isinstance(concepts, (str, PathLike, Concept)):
        concepts = [concepts]
    resolved: list[Concept] = []
    for item in concepts:
        if isinstance(item, str) and "," in item and not is_concept_file(item):
            parts: list[Any] = [part.strip() for part in item.split(",") if part.strip()]
        else:
            parts = [item]
        for part in parts:
            if is_concept_file(part):
                found = load_concepts(part)
            elif isinstance(part, str) and part.strip() in known:
                found = [known[part.strip()]]
            else:
                found = [get_concept(part)]
            for concept in found:
                if case_sensitive is not None:
                    concept = concept.with_case_sensitivity(case_sensitive)
                same_name = next((c for c in resolved if c.name == concept.name), None)
                if same_name is None:
                    resolved.append(concept)
                elif same_name != concept:
                    raise ValueError(f"concept names must be unique: two different concepts are named "
                                     f"{concept.name!r}")
    if not resolved:
        raise ValueError("no concept given; pass e.g. 'object' or a Concept")
    return resolved


def combine_concepts(concepts: Iterable[ConceptLike], name: str | None = None) -> Concept:
    """Merge several concepts into one; a keyword in several keeps all their replacements, in order.

    Use it to draw hard negatives from any of several concepts at once; the name defaults
    to the parts joined by ``+`` (e.g. ``"object+color"``).
    """
    parts = [get_concept(c) for c in concepts]
    names = [c.name for c in parts]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"concept names must be unique, got {repeated} more than once")
    if not parts:
        raise ValueError("no concept given; pass e.g. 'object' or a Concept")
    modes = {c.case_sensitive for c in parts}
    if len(modes) > 1:
        sensitive = [c.name for c in parts if c.case_sensitive]
        raise ValueError(f"cannot combine case-sensitive concepts ({', '.join(sensitive)}) with case-insensitive "
                         "ones into one keyword pool; make them agree, e.g. with_case_sensitivity(concept, False)")
    table: dict[str, list[str]] = {}
    for concept in parts:
        for key, values in concept.substitutions.items():
            merged = table.setdefault(key, [])
            merged.extend(v for v in values if v not in merged)
    return Concept(name or "+".join(c.name for c in parts), {k: tuple(v) for k, v in table.items()}, modes.pop())


def load_concepts(path: str | PathLike[str]) -> list[Concept]:
    """Read user concepts from a YAML (``.yaml``/``.yml``) or JSON file.

    The file holds a list of concepts, or ``{"concepts": [...]}``; each concept has a
    ``name`` and exactly one of ``words`` (a list concept), ``relations`` (strings
    ``"a <-> b"`` / ``"a -> b"``, pairs, or ``{from, to, bidirectional}``) or
    ``substitutions`` (``keyword: [replacements]``), and optionally ``case_sensitive: true``
    (match the keywords exactly as spelt; default false, case-insensitive)::

        concepts:
          - name: garment
            words: [shirt, dress, jacket, coat]
          - name: fit
            relations: ["tight <-> loose", "long -> short"]
            case_sensitive: true
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    if isinstance(data, Mapping) and "concepts" in data:
        data = data["concepts"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of concepts (or {{'concepts': [...]}}), got {type(data).__name__}")
    concepts = []
    for i, spec in enumerate(data):
        where = f"{path}: concept {i}"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ValueError(f"{where}: each concept needs a 'name' string and one of 'words', 'relations', 'substitutions'")
        kinds = [k for k in ("words", "relations", "substitutions") if k in spec]
        if len(kinds) != 1:
            raise ValueError(f"{where} ({spec['name']!r}): give exactly one of 'words', 'relations', 'substitutions', got {kinds or 'none'}")
        unknown = set(spec) - {"name", "description", "case_sensitive", *kinds}
        if unknown:
            raise ValueError(f"{where} ({spec['name']!r}): unknown keys {sorted(unknown)}")
        case = spec.get("case_sensitive", False)
        if not isinstance(case, bool):
            raise ValueError(f"{where} ({spec['name']!r}): case_sensitive must be true or false, got {case!r}")
        try:
            if kinds[0] == "words":
                concept = Concept.from_list(spec["name"], spec["words"], case_sensitive=case)
            elif kinds[0] == "relations":
                concept = Concept.from_relations(spec["name"], spec["relations"], case_sensitive=case)
            else:
                concept = Concept(spec["name"], spec["substitutions"], case_sensitive=case)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where} ({spec['name']!r}): {err}") from None
        concepts.append(concept)
    names = [c.name for c in concepts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: concept names must be unique, got {dupes} more than once")
    return concepts
