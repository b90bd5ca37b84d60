"""Metrics on similarity scores, with ties counted against the correct answer.

Every metric here reduces to one question: does the correct candidate score
*strictly* higher than a competitor, by more than ``tie_tolerance``? A model
that cannot tell two candidates apart (identical or numerically
indistinguishable scores) therefore gets no credit. Two consequences that the
tests pin down:

* a constant model (all scores equal) scores 0, i.e. at or below chance;
* the order in which candidates are listed never matters (``argmax`` would
  silently reward whichever candidate is listed first -- usually the true one).

NaN scores also count against the correct candidate. Scores may be cosine
similarities or logits; ``tie_tolerance`` is in the same units, so keep the
default only for cosine similarities (which is what the encoders here produce).

All functions accept ``torch.Tensor`` or anything ``torch.as_tensor`` accepts and
return plain Python floats/ints or boolean tensors, so they work inside a
Trainer callback, a notebook or an ``evaluate`` wrapper alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch

# Cosine similarities computed in float32 differ by ~1e-7 between runs of the
# same input with different padding or batch composition; 1e-5 is far above that
# noise and far below any difference a model means.
DEFAULT_TIE_TOLERANCE = 1e-5

# Half-precision encoders (autocast) carry more noise in their embeddings.
_TIE_TOLERANCE_BY_DTYPE = {
    torch.float64: 1e-5,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}


def default_tie_tolerance(compute_dtype: torch.dtype | None = None) -> float:
    """Tolerance below which two cosine similarities are treated as a tie.

    Depends on the precision the embeddings were computed in: fp16/bf16
    autocast embeddings are only good to ~3 significant digits.
    """
    if compute_dtype is None:
        return DEFAULT_TIE_TOLERANCE
    return _TIE_TOLERANCE_BY_DTYPE.get(compute_dtype, DEFAULT_TIE_TOLERANCE)


def _as_float(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.float() if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16) else t


def beats(true_scores, other_scores, tie_tolerance: float = DEFAULT_TIE_TOLERANCE) -> torch.Tensor:
    """Elementwise ``true > other + tie_tolerance``; NaN on either side gives False.

    Broadcasts like ``torch.gt``. This is the only comparison every other metric
    in this module is built on.
    """
    true_scores, other_scores = _as_float(true_scores), _as_float(other_scores)
    return (true_scores - tie_tolerance) > other_scores


# ---------------------------------------------------------------------------
# Ranking among candidates (concept accuracy, SugarCrepe, ARO, zero-shot)
# ---------------------------------------------------------------------------


def candidate_ranks(
    scores,
    labels=None,
    mask=None,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
) -> torch.Tensor:
    """Pessimistic rank (0 = best) of the correct candidate in each row.

    Args:
        scores: ``(n, m)`` scores of ``m`` candidates for ``n`` queries.
        labels: ``(n,)`` column of the correct candidate; default 0 for every row.
        mask: optional ``(n, m)`` bool, False for padding columns (rows with
            different numbers of candidates, e.g. 79 object substitutions for one
            caption and 8 colour substitutions for another).
        tie_tolerance: competitors within this margin of the correct score count
            as ranked above it.

    Returns:
        ``(n,)`` long tensor: how many valid competitors score at least as high
        as the correct candidate (minus tolerance).
    """
    scores = _as_float(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D (queries, candidates); got shape {tuple(scores.shape)}")
    n, m = scores.shape
    if labels is None:
        labels = torch.zeros(n, dtype=torch.long, device=scores.device)
    labels = torch.as_tensor(labels, dtype=torch.long, device=scores.device)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= m):
        raise ValueError(f"labels must lie in [0, {m}); got min {int(labels.min())}, max {int(labels.max())}")
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool, device=scores.device)
    if valid.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(valid.shape)} differs from scores shape {tuple(scores.shape)}")
    rows = torch.arange(n, device=scores.device)
    if n and not bool(valid[rows, labels].all()):
        bad = int((~valid[rows, labels]).nonzero()[0])
        raise ValueError(f"row {bad}: the correct candidate (column {int(labels[bad])}) is masked out")
    true = scores[rows, labels].unsqueeze(1)
    competitor = valid.clone()
    competitor[rows, labels] = False
    return (~beats(true, scores, tie_tolerance) & competitor).sum(dim=1)


def candidate_accuracy(scores, labels=None, mask=None, tie_tolerance: float = DEFAULT_TIE_TOLERANCE) -> torch.Tensor:
    """Per-row bool: the correct candidate beats every valid competitor (top-1, ties lose)."""
    return candidate_ranks(scores, labels, mask, tie_tolerance) == 0


def pad_candidate_scores(rows: Sequence[Sequence[float]] | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged per-query score lists into ``(scores, mask)`` for `candidate_ranks`."""
    if not rows:
        return torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.bool)
    tensors = [_as_float(r).reshape(-1) for r in rows]
    width = max(t.numel() for t in tensors)
    scores = torch.zeros(len(tensors), width)
    mask = torch.zeros(len(tensors), width, dtype=torch.bool)
    for i, t in enumerate(tensors):
        scores[i, : t.numel()] = t
        mask[i, : t.numel()] = True
    return scores, mask


# ---------------------------------------------------------------------------
# Paired images and captions (InpaintCOCO, Winoground)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedScores:
    """Per-example booleans for 2 images x 2 captions, Winoground's convention.

    ``text``: each image prefers its own caption. ``image``: each caption
    prefers its own image -- this is InpaintCOCO's Equation (1) when image/caption 0
    is the COCO original and 1 the inpainted one. ``group``: both.
    """

    text: torch.Tensor
    image: torch.Tensor
    group: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        n = int(self.text.numel())
        if n == 0:
            return {"text_score": float("nan"), "image_score": float("nan"), "group_score": float("nan"), "count": 0}
        return {
            "text_score": self.text.float().mean().item(),
            "image_score": self.image.float().mean().item(),
            "group_score": self.group.float().mean().item(),
            "count": n,
        }


def paired_scores(sims, tie_tolerance: float = DEFAULT_TIE_TOLERANCE) -> PairedScores:
    """Winoground text/image/group correctness from ``sims[k, i, c] = sim(image_i, caption_c)`` of example k.

    Image ``i`` belongs with caption ``i``.
    """
    s = _as_float(sims)
    if s.dim() != 3 or s.shape[1:] != (2, 2):
        raise ValueError(f"sims must have shape (n, 2, 2) indexed [example, image, caption]; got {tuple(s.shape)}")
    s00, s01, s10, s11 = s[:, 0, 0], s[:, 0, 1], s[:, 1, 0], s[:, 1, 1]
    text = beats(s00, s01, tie_tolerance) & beats(s11, s10, tie_tolerance)
    image = beats(s00, s10, tie_tolerance) & beats(s11, s01, tie_tolerance)
    return PairedScores(text=text, image=image, group=text & image)


def inpaintcoco_correct(sims, tie_tolerance: float = DEFAULT_TIE_TOLERANCE) -> torch.Tensor:
    """Equation (1) of the paper: both captions retrieve their own image.

    ``sims[k, i, c]`` with index 0 = original COCO image/caption, 1 = inpainted
    image/new caption. Same as Winoground's image score.
    """
    return paired_scores(sims, tie_tolerance).image


# ---------------------------------------------------------------------------
# Retrieval with several captions per image
# ---------------------------------------------------------------------------


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


@torch.inference_mode()
def retrieval_ranks(
    image_embeds,
    text_embeds,
    text_to_image,
    chunk_size: int = 1024,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pessimistic ranks for text-to-image and image-to-text retrieval.

    Memory stays at ``chunk_size x max(n_images, n_texts)`` scores: queries are
    processed in chunks and ranks are *counted* (how many wrong items score at
    least as high as the right one) rather than found by sorting, which is exact
    under ties and needs no top-k buffer.

    Args:
        image_embeds: ``(n_images, d)``.
        text_embeds: ``(n_texts, d)``.
        text_to_image: ``(n_texts,)`` index of each caption's image.
        normalize: L2-normalise first (cosine similarity).

    Returns:
        ``(t2i_ranks (n_texts,), i2t_ranks (n_images,))``. An image's i2t rank is
        that of its best-scoring own caption; its other captions never count
        against it. Images without captions get rank ``n_texts`` (never retrieved).
    """
    images = torch.as_tensor(image_embeds)
    texts = torch.as_tensor(text_embeds)
    if images.dim() != 2 or texts.dim() != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(f"need (n_images, d) and (n_texts, d) embeddings; got {tuple(images.shape)} and {tuple(texts.shape)}")
    n_img, n_txt = images.shape[0], texts.shape[0]
    owner = torch.as_tensor(text_to_image, dtype=torch.long).to(images.device)
    if owner.shape != (n_txt,):
        raise ValueError(f"text_to_image must have shape ({n_txt},); got {tuple(owner.shape)}")
    if n_txt and (owner.min() < 0 or owner.max() >= n_img):
        raise ValueError(f"text_to_image values must lie in [0, {n_img})")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if normalize:
        images, texts = _normalise(images), _normalise(texts)
    else:
        images, texts = images.float(), texts.float()
    texts = texts.to(images.device)

    t2i = torch.empty(n_txt, dtype=torch.long)
    for start in range(0, n_txt, chunk_size):
        q = texts[start : start + chunk_size]
        own = owner[start : start + chunk_size]
        sims = q @ images.T  # (c, n_img)
        rows = torch.arange(q.shape[0], device=sims.device)
        true = sims[rows, own].unsqueeze(1)
        ahead = ~beats(true, sims, tie_tolerance)
        ahead[rows, own] = False
        t2i[start : start + q.shape[0]] = ahead.sum(1).cpu()

    i2t = torch.empty(n_img, dtype=torch.long)
    for start in range(0, n_img, chunk_size):
        q = images[start : start + chunk_size]
        ids = torch.arange(start, start + q.shape[0], device=images.device)
        sims = q @ texts.T  # (c, n_txt)
        is_own = owner.unsqueeze(0) == ids.unsqueeze(1)
        # max() propagates NaN, so a NaN own caption makes the image count as missed
        best_own = sims.masked_fill(~is_own, float("-inf")).max(dim=1).values
        ahead = ~beats(best_own.unsqueeze(1), sims, tie_tolerance) & ~is_own
        ranks = ahead.sum(1)
        ranks[~is_own.any(dim=1)] = n_txt
        i2t[start : start + q.shape[0]] = ranks.cpu()
    return t2i, i2t


def recall_at_k(ranks, ks: Iterable[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose (pessimistic) rank is below ``k``, for each k."""
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        return {int(k): float("nan") for k in ks}
    return {int(k): (ranks < k).float().mean().item() for k in ks}


def retrieval_metrics(
    image_embeds,
    text_embeds,
    text_to_image,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    normalize: bool = True,
) -> dict[str, float]:
    """Text-to-image and image-to-text Recall@k plus median/mean rank (1-based).

    Keys: ``t2i_R@1``, ``i2t_R@5``, ..., ``t2i_median_rank``, ``t2i_mean_rank``,
    ``i2t_...``, ``num_images``, ``num_texts``. The paper's general-retrieval
    figure is ``t2i_R@5`` on COCO val2017.
    """
    t2i, i2t = retrieval_ranks(image_embeds, text_embeds, text_to_image, chunk_size, tie_tolerance, normalize)
    out: dict[str, float] = {}
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k, v in recall_at_k(ranks, ks).items():
            out[f"{name}_R@{k}"] = v
        if ranks.numel():
            one_based = ranks.float() + 1
            out[f"{name}_median_rank"] = one_based.median().item()
            out[f"{name}_mean_rank"] = one_based.mean().item()
    out["num_images"] = int(torch.as_tensor(image_embeds).shape[0])
    out["num_texts"] = int(torch.as_tensor(text_embeds).shape[0])
    return out


# ---------------------------------------------------------------------------
# Zero-shot classification
# ---------------------------------------------------------------------------


@torch.inference_mode()
def zero_shot_accuracy(
    image_embeds,
    class_embeds,
    labels,
    ks: Sequence[int] = (1, 5),
    chunk_size: int = 4096,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    normalize: bool = True,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Top-k accuracy of classifying images by their nearest class-name embedding.

    ``class_embeds`` is ``(num_classes, d)`` (one embedding per class, e.g. the
    mean of several prompt embeddings). Ties count against the true class.
    Keys ``top1``, ``top5`` (only for k < num_classes) and ``count``. With
    ``class_names``, also ``per_class`` (each class with images: its top-k and
    count) and ``mean_per_class_top1`` (the mean over those classes, which an
    unbalanced set's ``top1`` is not).
    """
    images = torch.as_tensor(image_embeds)
    classes = torch.as_tensor(class_embeds)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if classes.dim() != 2 or images.dim() != 2 or classes.shape[1] != images.shape[1]:
        raise ValueError(f"need (n, d) image and (C, d) class embeddings; got {tuple(images.shape)} and {tuple(classes.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}")
    if normalize:
        images, classes = _normalise(images), _normalise(classes)
    ranks = torch.empty(images.shape[0], dtype=torch.long)
    for start in range(0, images.shape[0], chunk_size):
        sims = images[start : start + chunk_size].float() @ classes.float().T
        ranks[start : start + sims.shape[0]] = candidate_ranks(sims, labels[start : start + sims.shape[0]], tie_tolerance=tie_tolerance)
    used_ks = [k for k in ks if k < classes.shape[0] or k == 1]
    out: dict[str, Any] = {f"top{k}": v for k, v in recall_at_k(ranks, used_ks).items()}
    out["count"] = int(images.shape[0])
    out["num_classes"] = int(classes.shape[0])
    if class_names is not None:
        if len(class_names) != classes.shape[0]:
            raise ValueError(f"{len(class_names)} class names for {classes.shape[0]} class embeddings")
        per_class: dict[str, dict[str, float]] = {}
        for c in sorted(set(labels.tolist())):
            mine = ranks[labels == c]
            name = class_names[c] if class_names[c] not in per_class else f"{class_names[c]} (#{c})"
            per_class[name] = {**{f"top{k}": v for k, v in recall_at_k(mine, used_ks).items()},
                               "count": int(mine.numel())}
        out["per_class"] = per_class
        out["mean_per_class_top1"] = sum(v["top1"] for v in per_class.values()) / len(per_class) if per_class else 0.0
    return out


# ---------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------


def grouped_accuracy(correct, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Accuracy and count per group label (subset, concept, relation, ...), sorted by name."""
    correct = torch.as_tensor(correct, dtype=torch.bool).reshape(-1)
    if len(groups) != correct.numel():
        raise ValueError(f"{len(groups)} group labels for {correct.numel()} results")
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(groups)):
        idx = torch.tensor([g == name for g in groups])
        out[name] = {"accuracy": correct[idx].float().mean().item(), "count": int(idx.sum())}
    return out


def add_averages(per_group: Mapping[str, Mapping[str, float]], keys: Sequence[str] = ("accuracy",)) -> dict:
    """Return ``per_group`` plus ``micro_average`` (pooled over examples) and ``macro_average`` (mean of groups).

    Each group needs a ``count`` and the metric ``keys``; groups with zero
    examples are left out of both averages.
    """
    out = {k: dict(v) for k, v in per_group.items()}
    counted = [v for v in per_group.values() if v.get("count", 0) > 0]
    if counted:
        total = sum(v["count"] for v in counted)
        out["micro_average"] = {k: sum(v[k] * v["count"] for v in counted) / total for k in keys}
        out["micro_average"]["count"] = total
        out["macro_average"] = {k: sum(v[k] for v in counted) / len(counted) for k in keys}
        out["macro_average"]["num_groups"] = len(counted)
    return out
