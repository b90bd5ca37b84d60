"""Evaluation sets in four shapes, and how to score a model on each.

Every benchmark adapter in :mod:`hf_hardneg.evaluation.adapters` produces one
of these plain containers, so a new benchmark needs only a loader, never new
scoring code:

* :class:`MultipleChoiceSet` -- one image, several captions, one correct
  (concept accuracy, SugarCrepe, ARO, VALSE, What'sUp);
* :class:`PairedSet` -- two images x two captions (InpaintCOCO, Winoground, MMVP-VLM, ColorSwap);
* :class:`TripletSet` -- one image, two true captions and one false one (SugarCrepe++);
* :class:`RetrievalSet` -- a gallery of images, several captions each (COCO);
* :class:`ClassificationSet` -- images with class labels (zero-shot).

Images are held as a sequence that decodes on access (see
:class:`~hf_hardneg.evaluation.encoding.LazyImages`); each distinct image is
encoded once even when many examples share it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Iterable, Sequence

import torch

from .encoding import Embedder
from .metrics import (
    PairedScores,
    add_averages,
    candidate_ranks,
    grouped_accuracy,
    pad_candidate_scores,
    paired_scores,
    retrieval_metrics,
    zero_shot_accuracy,
)

__all__ = [
    "ClassificationSet",
    "MultipleChoiceSet",
    "PairedSet",
    "RetrievalSet",
    "TripletSet",
    "IndexedView",
    "build_concept_set",
    "build_retrieval_set",
    "score_classification",
    "score_multiple_choice",
    "score_paired",
    "score_retrieval",
    "score_triplets",
    "DEFAULT_PROMPT_TEMPLATES",
]


class IndexedView(Sequence):
    """``view[i] == base[indices[i]]`` without touching (decoding) any other item of ``base``."""

    def __init__(self, base: Sequence, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.base[self.indices[i]]


def _subsample(n: int, max_examples: int | None, seed: int) -> list[int]:
    """All indices, or a seeded random subset of ``max_examples`` kept in original order."""
    if max_examples is None or max_examples >= n:
        return list(range(n))
    if max_examples < 1:
        raise ValueError("max_examples must be >= 1")
    return sorted(random.Random(seed).sample(range(n), max_examples))


def _compact_images(images: Sequence, *index_lists: list[int]) -> tuple[Sequence, list[list[int]]]:
    """Keep only the images some example uses; remap the example indices to the kept ones."""
    used = sorted(set(i for lst in index_lists for i in lst))
    slot = {old: new for new, old in enumerate(used)}
    return IndexedView(images, used), [[slot[i] for i in lst] for lst in index_lists]


@dataclass
class _ExampleColumns:
    """What the example sets share: the images, columns of one entry per example, ``skipped`` and ``notes``.

    ``_columns`` names the per-example columns, checked and subsampled together; the first gives the
    number of examples, and an optional one may be None. ``images`` is indexed by the examples and
    stays whole in a subset. ``skipped`` counts examples left out and why; ``notes`` says how the
    data was read; both go into the results.
    """

    images: Sequence
    skipped: dict[str, int] = field(default_factory=dict, kw_only=True)
    notes: dict[str, Any] = field(default_factory=dict, kw_only=True)

    _columns: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        self._check_lengths()

    def _check_lengths(self) -> None:
        n = len(self)
        for name in self._columns[1:]:
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"{name} has {len(column)} entries for {n} examples")

    def __len__(self) -> int:
        return len(getattr(self, self._columns[0]))

    def subset(self, max_examples: int | None, seed: int = 0):
        """A seeded random subset of at most ``max_examples`` examples (all when None)."""
        keep = _subsample(len(self), max_examples, seed)
        if len(keep) == len(self):
            return self
        picked = {name: None if (column := getattr(self, name)) is None else [column[i] for i in keep]
                  for name in self._columns}
        return replace(self, **picked, skipped=dict(self.skipped), notes=dict(self.notes))


# ---------------------------------------------------------------------------
# Multiple choice: image -> which caption?
# ---------------------------------------------------------------------------


@dataclass
class MultipleChoiceSet(_ExampleColumns):
    """Examples of one image and candidate captions, exactly one of them correct.

    ``groups`` name what the averages are taken over (a concept, a benchmark
    subset); optional ``categories`` give a finer breakdown inside a group (ARO's
    relations). The position of the correct caption (``labels``) does not
    affect the score: ties count against it wherever it is. ``skipped`` counts
    examples left out and why; ``notes`` says how the data was read (e.g. whether
    ARO's images were cropped to their boxes) and goes into the results.
    """

    image_index: list[int]
    candidates: list[list[str]]
    labels: list[int]
    groups: list[str]
    categories: list[str] | None = None

    _columns = ("image_index", "candidates", "labels", "groups", "categories")

    def __post_init__(self):
        super().__post_init__()
        for i, (cands, label) in enumerate(zip(self.candidates, self.labels)):
            if len(cands) < 2:
                raise ValueError(f"example {i} has {len(cands)} candidate caption(s); at least 2 are needed")
            if not 0 <= label < len(cands):
                raise ValueError(f"example {i}: label {label} is not an index into its {len(cands)} candidates")

    @property
    def chance(self) -> float:
        """Expected accuracy of random guessing, averaged over examples."""
        return sum(1.0 / len(c) for c in self.candidates) / max(1, len(self))


def multiple_choice_correct(image_embeds: torch.Tensor, text_embeds: torch.Tensor, mc: MultipleChoiceSet,
                            tie_tolerance: float) -> torch.Tensor:
    """Per-example correctness from normalised embeddings.

    ``image_embeds`` are indexed by ``mc.image_index``; ``text_embeds`` hold the
    candidates of all examples flattened in order.
    """
    rows, offset = [], 0
    for ex, cands in enumerate(mc.candidates):
        rows.append(text_embeds[offset : offset + len(cands)] @ image_embeds[mc.image_index[ex]])
        offset += len(cands)
    if offset != text_embeds.shape[0]:
        raise ValueError(f"{text_embeds.shape[0]} text embeddings for {offset} candidates")
    scores, mask = pad_candidate_scores(rows)
    return candidate_ranks(scores, mc.labels, mask, tie_tolerance) == 0


def score_multiple_choice(embedder: Embedder, mc: MultipleChoiceSet, tie_tolerance: float | None = None,
                          desc: str = "multiple choice", image_embeds: torch.Tensor | None = None) -> dict:
    """Accuracy per group with ``micro_average`` and ``macro_average``; per category when given.

    ``image_embeds`` may hold ready embeddings of all of ``mc.images`` (e.g.
    shared with a retrieval task on the same gallery); otherwise only the images
    some example uses are encoded.
    """
    if len(mc) == 0:
        return {"count": 0, **({"skipped": mc.skipped} if mc.skipped else {})}
    tol = embedder.tie_tolerance if tie_tolerance is None else tie_tolerance
    if image_embeds is None:
        images, (index,) = _compact_images(mc.images, mc.image_index)
        mc_used = MultipleChoiceSet(images, index, mc.candidates, mc.labels, mc.groups, mc.categories)
        image_embeds = embedder.embed_images(images, desc=f"{desc} images")
    else:
        if image_embeds.shape[0] != len(mc.images):
            raise ValueError(f"{image_embeds.shape[0]} image embeddings for {len(mc.images)} images")
        mc_used = mc
    text_embeds = embedder.embed_texts([t for c in mc.candidates for t in c], desc=f"{desc} captions")
    correct = multiple_choice_correct(image_embeds, text_embeds, mc_used, tol)
    result: dict[str, Any] = grouped_accuracy(correct, mc.groups)
    for g in result:
        members = [i for i, x in enumerate(mc.groups) if x == g]
        result[g]["chance"] = sum(1.0 / len(mc.candidates[i]) for i in members) / len(members)
        if mc.categories is not None:
            cats = [mc.categories[i] for i in members]
            per_cat = grouped_accuracy(correct[members], cats)
            result[g]["per_category"] = per_cat
            result[g]["category_macro_average"] = sum(v["accuracy"] for v in per_cat.values()) / len(per_cat)
    result = add_averages(result)
    if mc.skipped:
        result["skipped"] = dict(mc.skipped)
    return result


# ---------------------------------------------------------------------------
# Paired: 2 images x 2 captions
# ---------------------------------------------------------------------------


@dataclass
class PairedSet(_ExampleColumns):
    """Examples of two images and two captions; image ``k`` belongs with caption ``k``.

    For InpaintCOCO, index 0 is the original COCO image/caption and 1 the
    inpainted image with its new caption.
    """

    image0: list[int]
    image1: list[int]
    caption0: list[str]
    caption1: list[str]
    groups: list[str]

    _columns = ("image0", "image1", "caption0", "caption1", "groups")


def score_paired(embedder: Embedder, ps: PairedSet, tie_tolerance: float | None = None, desc: str = "pairs") -> dict:
    """Text/image/group scores per group plus micro and macro averages.

    ``image_score`` is InpaintCOCO's Equation (1) accuracy.
    """
    if len(ps) == 0:
        return {"count": 0}
    tol = embedder.tie_tolerance if tie_tolerance is None else tie_tolerance
    images, (i0, i1) = _compact_images(ps.images, ps.image0, ps.image1)
    img = embedder.embed_images(images, desc=f"{desc} images")
    txt = embedder.embed_texts(list(ps.caption0) + list(ps.caption1), desc=f"{desc} captions")
    n = len(ps)
    c0, c1 = txt[:n], txt[n:]
    a, b = img[i0], img[i1]
    sims = torch.stack([
        torch.stack([(a * c0).sum(-1), (a * c1).sum(-1)], dim=-1),
        torch.stack([(b * c0).sum(-1), (b * c1).sum(-1)], dim=-1),
    ], dim=1)  # (n, image, caption)
    scores = paired_scores(sims, tol)
    return paired_result(scores, ps)


def paired_result(scores: PairedScores, ps: PairedSet) -> dict:
    """Per-group text/image/group scores with micro and macro averages (and ``skipped`` when any)."""
    result: dict[str, Any] = {}
    for g in sorted(set(ps.groups)):
        idx = torch.tensor([x == g for x in ps.groups])
        result[g] = PairedScores(scores.text[idx], scores.image[idx], scores.group[idx]).as_dict()
    result = add_averages(result, keys=("text_score", "image_score", "group_score"))
    if ps.skipped:
        result["skipped"] = dict(ps.skipped)
    return result


# ---------------------------------------------------------------------------
# Triplets: one image, two true captions, one false (SugarCrepe++)
# ---------------------------------------------------------------------------


@dataclass
class TripletSet(_ExampleColumns):
    """Examples of one image, two captions true of it (``positive1``, ``positive2``) and one false (``negative``).

    Scored as SugarCrepe++ defines it: the image-to-text score (ITT) needs both
    positives above the negative for the image; the text-only score (TOT) needs the
    two positives closer to each other than either is to the negative, with the
    image never looked at.
    """

    image_index: list[int]
    positive1: list[str]
    positive2: list[str]
    negative: list[str]
    groups: list[str]

    _columns = ("image_index", "positive1", "positive2", "negative", "groups")


def triplet_correct(image_sims: torch.Tensor, text_sims: torch.Tensor,
                    tie_tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(itt, tot)`` booleans from ``image_sims[k] = (s(I,P1), s(I,P2), s(I,N))`` and
    ``text_sims[k] = (s(P1,P2), s(P1,N), s(P2,N))``; ties count as wrong."""
    from .metrics import beats

    itt = beats(image_sims[:, 0], image_sims[:, 2], tie_tolerance) & beats(image_sims[:, 1], image_sims[:, 2],
                                                                          tie_tolerance)
    tot = beats(text_sims[:, 0], text_sims[:, 1], tie_tolerance) & beats(text_sims[:, 0], text_sims[:, 2],
                                                                        tie_tolerance)
    return itt, tot


def triplet_result(itt: torch.Tensor, tot: torch.Tensor | None, ts: TripletSet) -> dict:
    """Per-group ``itt_score`` (and ``tot_score`` when given) with micro and macro averages."""
    keys = ("itt_score", "tot_score") if tot is not None else ("itt_score",)
    result: dict[str, Any] = {}
    for g in sorted(set(ts.groups)):
        idx = torch.tensor([x == g for x in ts.groups])
        entry = {"itt_score": itt[idx].float().mean().item(), "count": int(idx.sum())}
        if tot is not None:
            entry["tot_score"] = tot[idx].float().mean().item()
        result[g] = entry
    result = add_averages(result, keys=keys)
    if ts.skipped:
        result["skipped"] = dict(ts.skipped)
    return result


def score_triplets(embedder: Embedder, ts: TripletSet, tie_tolerance: float | None = None,
                   desc: str = "triplets") -> dict:
    """SugarCrepe++'s image-to-text (``itt_score``) and text-only (``tot_score``) accuracies per group."""
    if len(ts) == 0:
        return {"count": 0}
    tol = embedder.tie_tolerance if tie_tolerance is None else tie_tolerance
    images, (index,) = _compact_images(ts.images, ts.image_index)
    img = embedder.embed_images(images, desc=f"{desc} images")[index]
    n = len(ts)
    txt = embedder.embed_texts(list(ts.positive1) + list(ts.positive2) + list(ts.negative), desc=f"{desc} captions")
    p1, p2, neg = txt[:n], txt[n:2 * n], txt[2 * n:]
    image_sims = torch.stack([(img * p1).sum(-1), (img * p2).sum(-1), (img * neg).sum(-1)], dim=1)
    text_sims = torch.stack([(p1 * p2).sum(-1), (p1 * neg).sum(-1), (p2 * neg).sum(-1)], dim=1)
    itt, tot = triplet_correct(image_sims, text_sims, tol)
    return triplet_result(itt, tot, ts)


# ---------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------


@dataclass
class RetrievalSet:
    """A gallery of distinct images and their captions (``text_to_image[j]`` = image of caption j)."""

    images: Sequence
    texts: list[str]
    text_to_image: list[int]

    def __post_init__(self):
        if len(self.texts) != len(self.text_to_image):
            raise ValueError(f"{len(self.texts)} texts but {len(self.text_to_image)} text_to_image entries")


def score_retrieval(embedder: Embedder, rs: RetrievalSet, ks: Sequence[int] = (1, 5, 10),
                    tie_tolerance: float | None = None, chunk_size: int = 1024,
                    image_embeds: torch.Tensor | None = None) -> dict:
    """Text-to-image and image-to-text Recall@k over the whole gallery (see :func:`retrieval_metrics`)."""
    tol = embedder.tie_tolerance if tie_tolerance is None else tie_tolerance
    if image_embeds is None:
        image_embeds = embedder.embed_images(rs.images, desc="retrieval images")
    text_embeds = embedder.embed_texts(rs.texts, desc="retrieval captions")
    device = embedder.device if torch.device(embedder.device).type == "cuda" else "cpu"
    return retrieval_metrics(image_embeds.to(device), text_embeds.to(device), rs.text_to_image, ks=ks,
                             chunk_size=chunk_size, tie_tolerance=tol, normalize=False)


# ---------------------------------------------------------------------------
# Zero-shot classification
# ---------------------------------------------------------------------------

#: A few generic prompts; averaging over several is the usual CLIP zero-shot recipe.
DEFAULT_PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a good photo of a {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
)


@dataclass
class ClassificationSet:
    """Images with integer labels into ``class_names``; ``notes`` (how the data was read) go into the results."""

    images: Sequence
    labels: list[int]
    class_names: list[str]
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        bad = [y for y in self.labels if not 0 <= y < len(self.class_names)]
        if bad:
            raise ValueError(f"label {bad[0]} is outside the {len(self.class_names)} class names")

    def subset(self, max_examples: int | None, seed: int = 0) -> "ClassificationSet":
        keep = _subsample(len(self.labels), max_examples, seed)
        if len(keep) == len(self.labels):
            return self
        return ClassificationSet(IndexedView(self.images, keep), [self.labels[i] for i in keep], self.class_names,
                                 dict(self.notes))


def score_classification(embedder: Embedder, cs: ClassificationSet,
                         templates: Sequence[str] = DEFAULT_PROMPT_TEMPLATES,
                         tie_tolerance: float | None = None) -> dict:
    """Zero-shot top-1/top-5 accuracy with class-name prompts, overall and per class (see
    :func:`~hf_hardneg.evaluation.metrics.zero_shot_accuracy`); ``chance`` = 1 / number of classes."""
    tol = embedder.tie_tolerance if tie_tolerance is None else tie_tolerance
    classes = embedder.embed_class_names([c.replace("_", " ") for c in cs.class_names], templates)
    images = embedder.embed_images(cs.images, desc="classification images")
    out = zero_shot_accuracy(images, classes, cs.labels, tie_tolerance=tol, normalize=False,
                             class_names=cs.class_names)
    out["chance"] = 1.0 / len(cs.class_names)
    out["num_templates"] = len(templates)
    return out


# ---------------------------------------------------------------------------
# Builders from captioned datasets
# ---------------------------------------------------------------------------


def _caption_lists(values: Iterable) -> list[list[str]]:
    """Each row's captions as a list (Flickr30k stores 5 per row, COCO one per row)."""
    out = []
    for row, v in enumerate(values):
        if v is None:
            out.append([])
        elif isinstance(v, str):
            out.append([v])
        elif isinstance(v, (list, tuple)):
            out.append([c for c in v if isinstance(c, str) and c.strip()])
        else:
            raise TypeError(f"row {row}: caption is a {type(v).__name__}; expected a string or a list of strings")
    return out


def _image_slots(dataset, image_key_column: str | None) -> tuple[list[int], list[int]]:
    """``(row_to_image, image_rows)``: rows sharing a key (COCO's image_id) share one image slot."""
    n = len(dataset)
    if image_key_column is None:
        return list(range(n)), list(range(n))
    if image_key_column not in dataset.column_names:
        raise KeyError(f"image key column {image_key_column!r} not found; the dataset has {dataset.column_names}")
    slot: dict[Any, int] = {}
    image_rows: list[int] = []
    row_to_image = []
    for row, key in enumerate(dataset[image_key_column]):
        if key not in slot:
            slot[key] = len(image_rows)
            image_rows.append(row)
        row_to_image.append(slot[key])
    return row_to_image, image_rows


def _check_columns(dataset, *columns: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise KeyError(f"column(s) {missing} not found; the dataset has {dataset.column_names}. "
                       "Pass image_column= / caption_column= to name yours.")


def build_concept_set(
    dataset,
    concepts: Sequence,
    caption_column: str = "caption",
    image_column: str = "image",
    image_key_column: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> MultipleChoiceSet:
    """The paper's fine-grained concept task (Table 4) on any captioned image dataset.

    For each caption containing a keyword of a concept, the candidates are the
    caption itself and *every* substitution of its first keyword occurrence
    (``enumerate_negatives(caption, concept, occurrence=0)``): n-1 negatives.
    A caption with keywords of several concepts yields one example per concept.
    ``max_examples`` caps the examples *per concept* (seeded random subset).
    Rows whose caption has no keyword are counted under ``skipped``.
    """
    from hf_hardneg.concepts import get_concept
    from hf_hardneg.substitution import enumerate_negatives

    from .encoding import LazyImages

    _check_columns(dataset, caption_column, image_column)
    concept_objs = [get_concept(c) for c in concepts]
    if not concept_objs:
        raise ValueError("no concepts given")
    captions = _caption_lists(dataset[caption_column])
    row_to_image, image_rows = _image_slots(dataset, image_key_column)
    images = LazyImages(dataset, image_column, image_rows)
    image_index: list[int] = []
    candidates: list[list[str]] = []
    groups: list[str] = []
    skipped: dict[str, int] = {}
    for k, concept in enumerate(concept_objs):
        found: list[tuple[int, list[str]]] = []
        without = 0
        for row, caps in enumerate(captions):
            for caption in caps:
                negatives = [n.text for n in enumerate_negatives(caption, concept, occurrence=0)]
                negatives = list(dict.fromkeys(t for t in negatives if t != caption))
                if negatives:
                    found.append((row_to_image[row], [caption, *negatives]))
                else:
                    without += 1
        keep = _subsample(len(found), max_examples, seed + k)
        for i in keep:
            image_index.append(found[i][0])
            candidates.append(found[i][1])
            groups.append(concept.name)
        skipped[f"{concept.name}: captions without keyword"] = without
    return MultipleChoiceSet(images, image_index, candidates, [0] * len(candidates), groups, skipped=skipped)


def build_retrieval_set(
    dataset,
    image_column: str = "image",
    caption_column: str = "caption",
    image_key_column: str | None = None,
    max_images: int | None = None,
    seed: int = 0,
) -> RetrievalSet:
    """Gallery of distinct images with all their captions.

    Several captions per image either as several rows sharing ``image_key_column``
    (COCO: one row per caption, ``image_id``) or as a list per row (Flickr30k).
    ``max_images`` keeps a seeded random subset of images with all their captions.
    """
    from .encoding import LazyImages

    _check_columns(dataset, caption_column, image_column)
    captions = _caption_lists(dataset[caption_column])
    row_to_image, image_rows = _image_slots(dataset, image_key_column)
    keep_images = _subsample(len(image_rows), max_images, seed)
    new_slot = {old: new for new, old in enumerate(keep_images)}
    texts: list[str] = []
    owner: list[int] = []
    for row, caps in enumerate(captions):
        slot = new_slot.get(row_to_image[row])
        if slot is None:
            continue
        for c in caps:
            texts.append(c)
            owner.append(slot)
    images = LazyImages(dataset, image_column, [image_rows[i] for i in keep_images])
    return RetrievalSet(images, texts, owner)
